"""Named webhook payloads: `job_finished`, `parse_finished`, `ping`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from src.webhooks.exceptions import InvalidTemplateContext, UnknownTemplate


def _require(name: str, context: Mapping[str, Any], *keys: str) -> None:
    missing = [key for key in keys if context.get(key) is None]
    if missing:
        raise InvalidTemplateContext(
            f"template {name!r} needs {', '.join(missing)}", missing=missing
        )


def _timestamp(value: Any) -> str:
    """An ISO 8601 UTC time from a datetime, epoch seconds or a string; now when absent."""
    if value is None:
        value = datetime.now(UTC)
    elif isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _job_finished(context: Mapping[str, Any]) -> dict[str, Any]:
    _require("job_finished", context, "job_id", "function", "status")
    payload: dict[str, Any] = {
        "event": "job.finished",
        "job_id": str(context["job_id"]),
        "function": str(context["function"]),
        "status": str(context["status"]),
    }
    if context.get("error") is not None:
        payload["error"] = context["error"]
    else:
        payload["result"] = context.get("result")
    payload["finished_at"] = _timestamp(context.get("finished_at"))
    return payload


def _parse_finished(context: Mapping[str, Any]) -> dict[str, Any]:
    # Either {"job_id": ..., "result": <parse job result>} or the result's fields themselves.
    result = context.get("result")
    report: Mapping[str, Any] = result if isinstance(result, Mapping) else context
    _require("parse_finished", report, "group_id")
    skipped = report.get("posts_skipped") or []
    return {
        "event": "parse.finished",
        "job_id": context.get("job_id"),
        "group_id": report["group_id"],
        "screen_name": report.get("screen_name"),
        "posts": {
            "total": report.get("posts_total", 0),
            "done": report.get("posts_done", 0),
            "resumed": report.get("posts_resumed", 0),
            "skipped": len(skipped) if isinstance(skipped, list) else skipped,
        },
        "comments": {
            "parsed": report.get("comments_parsed", 0),
            "saved": report.get("comments_saved", 0),
            "inserted": report.get("comments_inserted", 0),
            "updated": report.get("comments_updated", 0),
            "unchanged": report.get("comments_unchanged", 0),
        },
        "finished_at": _timestamp(context.get("finished_at")),
    }


def _ping(context: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event": "webhook.ping",
        "message": str(context.get("message", "test notification")),
        "sent_at": _timestamp(context.get("sent_at")),
    }


TEMPLATES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "job_finished": _job_finished,
    "parse_finished": _parse_finished,
    "ping": _ping,
}


def render_template(name: str, context: dict[str, Any]) -> dict[str, Any]:
    """The payload of the named template (`job_finished`, `parse_finished`, `ping`)."""
    template = TEMPLATES.get(name)
    if template is None:
        raise UnknownTemplate(name, sorted(TEMPLATES))
    return template(context)
