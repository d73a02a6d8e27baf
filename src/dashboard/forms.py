"""Enqueue forms built from a task's argument schema (the JSON schema the API validates with).

Each property becomes one field: a text box, a number (whole or not), a checkbox, a choice of
the allowed values, or, for lists, objects and anything richer, a JSON text area. What the form
posts is read back into keyword arguments by the same description; the job service then
validates them exactly as it does for REST (its 422 names the field, shown next to it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["text", "integer", "number", "checkbox", "select", "json"]


@dataclass(frozen=True, slots=True)
class FormField:
    """One argument of a task as a form field."""

    name: str
    label: str
    kind: Kind
    required: bool = False
    description: str = ""
    default: str = ""  # the value shown at first, as text
    choices: list[str] = field(default_factory=list)
    minimum: str | None = None
    maximum: str | None = None


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    """The fields of a task's argument schema, in its order."""
    required = set(schema.get("required", []))
    definitions = schema.get("$defs", {})
    return [
        _field(name, spec, name in required, definitions)
        for name, spec in schema.get("properties", {}).items()
        if isinstance(spec, dict)
    ]


def _field(name: str, spec: dict[str, Any], required: bool, defs: dict[str, Any]) -> FormField:
    base = _resolve(spec, defs)
    options = [
        alternative for alternative in base.get("anyOf", []) if isinstance(alternative, dict)
    ]
    concrete = [_resolve(alt, defs) for alt in options if alt.get("type") != "null"]
    if len(concrete) == 1:
        base = {**concrete[0], **{k: v for k, v in base.items() if k != "anyOf"}}
    kind = _kind(base)
    default = spec.get("default")
    return FormField(
        name=name,
        label=str(spec.get("title") or name),
        kind=kind,
        required=required,
        description=str(spec.get("description") or ""),
        default=_as_text(default, kind),
        choices=[str(value) for value in base.get("enum", [])],
        minimum=_bound(base, "minimum", "exclusiveMinimum"),
        maximum=_bound(base, "maximum", "exclusiveMaximum"),
    )


def _resolve(spec: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = spec.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.removeprefix("#/$defs/"))
        if isinstance(target, dict):
            return {**target, **{k: v for k, v in spec.items() if k != "$ref"}}
    return spec


def _kind(spec: dict[str, Any]) -> Kind:
    if isinstance(spec.get("enum"), list) and all(isinstance(v, str) for v in spec["enum"]):
        return "select"
    kinds: dict[Any, Kind] = {
        "string": "text",
        "integer": "integer",
        "number": "number",
        "boolean": "checkbox",
    }
    return kinds.get(spec.get("type"), "json")


def _bound(spec: dict[str, Any], inclusive: str, exclusive: str) -> str | None:
    value = spec.get(inclusive, spec.get(exclusive))
    return str(value) if isinstance(value, int | float) and abs(value) < 2**53 else None


def _as_text(value: Any, kind: Kind) -> str:
    if value is None:
        return ""
    if kind == "checkbox":
        return "true" if value else ""
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def read_arguments(
    fields: list[FormField], form: dict[str, list[str]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The keyword arguments a posted form gives (a left-empty field: the task's default), and
    the fields that could not be read, with why."""
    kwargs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for item in fields:
        raw = (form.get(f"arg.{item.name}") or [""])[0]
        if item.kind == "checkbox":
            kwargs[item.name] = raw == "true"
            continue
        if raw.strip() == "" and item.kind != "text":
            continue
        if raw == "" and not item.required:
            continue
        try:
            kwargs[item.name] = _parse(raw, item.kind)
        except ValueError as exc:
            errors[item.name] = str(exc)
    return kwargs, errors


def _parse(raw: str, kind: Kind) -> Any:
    if kind == "integer":
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind == "number":
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError("must be a number") from None
    if kind == "json":
        try:
            return json.loads(raw)
        except ValueError:
            raise ValueError('must be JSON, e.g. ["a", "b"] or {"key": 1}') from None
    return raw


def errors_by_field(errors: list[dict[str, Any]]) -> dict[str, str]:
    """The job service's validation errors (`InvalidJobArguments.extra["errors"]`) by field;
    those of no one field (a rule across fields) under ""."""
    found: dict[str, str] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", [])]
        # [..., "kwargs", field, ...] (the REST body's place comes first)
        at = loc.index("kwargs") + 1 if "kwargs" in loc else len(loc)
        name = loc[at] if at < len(loc) else ""
        message = str(error.get("msg", "invalid"))
        found[name] = f"{found[name]}; {message}" if name in found else message
    return found
