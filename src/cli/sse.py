"""Server-Sent Events, read line by line (the parsing part of the WHATWG `EventSource`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    type: str
    data: str
    id: str | None


class EventReader:
    """Turns a stream's lines into events; remembers the last event id and the server's latest
    `retry:` hint (milliseconds) for the reconnect."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None

    def events(self, lines: Iterable[str]) -> Iterator[Event]:
        data: list[str] = []
        kind = ""
        event_id = self.last_event_id
        for line in lines:
            if not line:
                # A blank line ends an event; one without data is not dispatched.
                self.last_event_id = event_id
                if data:
                    yield Event(type=kind or "message", data="\n".join(data), id=event_id)
                data, kind = [], ""
                continue
            if line.startswith(":"):
                continue  # a comment (keep-alive)
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value
            elif name == "id" and "\0" not in value:
                event_id = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)
        # A stream that ends mid-event drops that event (as EventSource does).
