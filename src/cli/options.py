"""A task's command-line options, built from the JSON schema of its arguments (`GET /tasks`).

Each property becomes `--name-with-dashes` (the underscore spelling works too), typed from the
schema: integer, number, boolean (`--flag`, `--flag false`, `--no-flag`), string, array (values
after the option, or comma-separated) and anything else as JSON. The API validates the values
(ranges, patterns, "give either … or …"), as it does for REST; here they are only typed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Options of `vkp enqueue` itself: a task argument of one of these names is `--arg-<name>`.
RESERVED = frozenset({"priority", "defer_by", "defer_until", "job_id", "follow", "help"})
TRUE = frozenset({"true", "yes", "on", "1"})
FALSE = frozenset({"false", "no", "off", "0"})
KINDS = {"integer": "int", "number": "float", "boolean": "bool", "string": "str", "array": "list"}
METAVARS = {"int": "INT", "float": "NUMBER", "bool": "BOOL", "str": "TEXT", "json": "JSON"}


@dataclass(frozen=True)
class TaskOption:
    """One argument of a task, as a command-line option."""

    name: str  # the argument's name in the schema
    flag: str  # --name-with-dashes
    kind: str  # int | float | bool | str | list | json
    item_kind: str  # for lists: the items' kind
    choices: tuple[Any, ...]
    required: bool
    help: str
    metavar: str

    @property
    def dest(self) -> str:
        return f"task__{self.name}"


def task_options(schema: dict[str, Any]) -> list[TaskOption]:
    """The options of a task whose arguments have this JSON schema."""
    defs: dict[str, Any] = schema.get("$defs") or {}
    required = set(schema.get("required") or [])
    options = []
    for name, raw in (schema.get("properties") or {}).items():
        prop = _resolve(raw, defs)
        kind, item_kind, choices = _kind(prop, defs)
        flag_name = f"arg_{name}" if name in RESERVED else name
        options.append(
            TaskOption(
                name=name,
                flag="--" + flag_name.replace("_", "-"),
                kind=kind,
                item_kind=item_kind,
                choices=choices,
                required=name in required,
                help=_help(prop, required=name in required),
                metavar="ISO_TIME" if _is_datetime(prop) else METAVARS.get(kind, "VALUE"),
            )
        )
    return options


def add_options(parser: argparse.ArgumentParser, options: Sequence[TaskOption]) -> None:
    """Add the task's options to `parser` (absent ones stay out of the namespace)."""
    for option in options:
        flags = [option.flag]
        underscored = option.flag.replace("-", "_").replace("__", "--", 1)
        if underscored != option.flag:
            flags.append(underscored)
        common: dict[str, Any] = {"dest": option.dest, "default": argparse.SUPPRESS}
        if option.kind == "bool":
            parser.add_argument(
                *flags,
                nargs="?",
                const=True,
                type=_boolean,
                metavar="BOOL",
                help=option.help,
                **common,
            )
            parser.add_argument(
                "--no-" + option.flag.removeprefix("--"),
                action="store_const",
                const=False,
                help=argparse.SUPPRESS,
                **common,
            )
        elif option.kind == "list":
            parser.add_argument(
                *flags,
                nargs="+",
                action=_Extend,
                type=_list_items(option),
                metavar=_choices_metavar(option) or METAVARS.get(option.item_kind, "VALUE"),
                help=option.help,
                **common,
            )
        else:
            parser.add_argument(
                *flags,
                type=_scalar(option.kind, option.choices),
                metavar=_choices_metavar(option) or option.metavar,
                help=option.help,
                **common,
            )


def task_kwargs(namespace: argparse.Namespace, options: Sequence[TaskOption]) -> dict[str, Any]:
    """The task's keyword arguments given on the command line."""
    return {
        option.name: getattr(namespace, option.dest)
        for option in options
        if hasattr(namespace, option.dest)
    }


# -- schema reading ---------------------------------------------------------------------------


def _resolve(prop: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(prop, dict):
        return {}
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = defs.get(ref.removeprefix("#/$defs/"), {})
        return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _kind(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[str, str, tuple[Any, ...]]:
    """(kind, item kind, choices) of a property; `X | None` counts as X."""
    variants = [prop]
    for key in ("anyOf", "oneOf"):
        if key in prop:
            variants = [
                _resolve(v, defs)
                for v in prop[key]
                if not (isinstance(v, dict) and v.get("type") == "null")
            ]
    if len(variants) != 1:
        return "json", "json", ()
    variant = variants[0]
    enum = prop.get("enum", variant.get("enum"))
    choices = tuple(v for v in enum or () if v is not None)
    if "const" in variant:
        choices = (variant["const"],)
    kind = KINDS.get(str(variant.get("type")), "json")
    if kind == "list":
        items = _resolve(variant.get("items"), defs)
        item_kind = KINDS.get(str(items.get("type")), "json")
        if item_kind == "list":
            item_kind = "json"
        item_choices = tuple(v for v in items.get("enum") or () if v is not None)
        return "list", item_kind, item_choices
    return kind, kind, choices


def _is_datetime(prop: dict[str, Any]) -> bool:
    variants = [prop, *(v for v in prop.get("anyOf") or [] if isinstance(v, dict))]
    return any(v.get("format") == "date-time" for v in variants)


def _help(prop: dict[str, Any], *, required: bool) -> str:
    parts = []
    description = prop.get("description")
    if description:
        parts.append(str(description).replace("%", "%%"))
    facts = ["required"] if required else []
    bounded = next(
        (v for v in prop.get("anyOf") or [] if isinstance(v, dict) and v.get("type") != "null"),
        prop,
    )
    facts.extend(_bounds(bounded))
    if "default" in prop and prop["default"] is not None:
        facts.append(f"default {json.dumps(prop['default'], ensure_ascii=False)}")
    if facts:
        parts.append(f"({'; '.join(facts)})".replace("%", "%%"))
    return " ".join(parts)


def _bounds(prop: dict[str, Any]) -> list[str]:
    low, high = prop.get("minimum"), prop.get("maximum")
    if isinstance(high, int) and high >= 2**53:
        high = None  # a storage limit (BIGINT), not advice
    if low is not None and high is not None:
        return [f"{low} to {high}"]
    words = []
    if low is not None:
        words.append(f"at least {low}")
    if prop.get("exclusiveMinimum") is not None:
        words.append(f"above {prop['exclusiveMinimum']}")
    if high is not None:
        words.append(f"at most {high}")
    return words


def _choices_metavar(option: TaskOption) -> str | None:
    if not option.choices:
        return None
    return "{" + ",".join(str(c) for c in option.choices) + "}"


# -- value conversion -------------------------------------------------------------------------


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not valid JSON: {value!r}") from None


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": _boolean,
    "str": str,
    "json": _json,
}


def _scalar(kind: str, choices: tuple[Any, ...]) -> Callable[[str], Any]:
    convert = CONVERTERS[kind]

    def parse(value: str) -> Any:
        try:
            parsed = convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {METAVARS[kind]}, not {value!r}") from None
        if choices and parsed not in choices:
            listed = ", ".join(str(c) for c in choices)
            raise argparse.ArgumentTypeError(f"{value!r} is not one of: {listed}")
        return parsed

    return parse


def _list_items(option: TaskOption) -> Callable[[str], list[Any]]:
    item = _scalar(option.item_kind, option.choices)

    def parse(value: str) -> list[Any]:
        if value.lstrip().startswith("["):  # a JSON array (items that hold commas)
            parsed = _json(value)
            if not isinstance(parsed, list):
                raise argparse.ArgumentTypeError(f"not a JSON array: {value!r}")
            return parsed
        return [item(part.strip()) for part in value.split(",") if part.strip()]

    return parse


class _Extend(argparse.Action):
    """Each value is a list (one token may hold several, comma-separated): flatten them all."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        items = list(current) if isinstance(current, list) else []
        for value in values:
            items.extend(value)
        setattr(namespace, self.dest, items)
