"""What the inspector shows of one exchange: the log line's fields plus redacted headers.

Built only from `proxy.canonical.fields` and `proxy.redact.headers`, so the page sees
exactly what the log would; the fields' strings and the event types are run through the
shape check once more on the way out (a request id, a close reason or an event type is
client- or upstream-chosen text the log line shows as it came), and the exchange's own
secrets are masked by value in all of it (an account id in a path or a request id).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy import redact
from proxy.canonical import fields
from proxy.capture import file_name
from proxy.exchange import Exchange
from proxy.settings import CONTROL_PREFIX

TIMELINE_SIZE = 200
# The capture's own file name pattern, and the request ids simple enough to serve by name.
_SERVABLE = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}-[A-Za-z0-9._-]{1,32}\.har")


@dataclass(slots=True)
class Timeline:
    """The last events of one stream (type, ms after the request began) and how many there were.

    Positions are absolute (the first event is 0), so a page that already holds some of
    them can tell which of a later batch are new.
    """

    events: deque[tuple[str, float]] = field(default_factory=lambda: deque(maxlen=TIMELINE_SIZE))
    total: int = 0

    def add(self, kind: str, at_ms: float, *, count: int) -> None:
        """Record the event that brought the stream's count to `count`."""
        self.events.append((kind, at_ms))
        self.total = count

    def since(self, position: int) -> tuple[int, list[tuple[str, float]]]:
        """The kept events from `position` on, and the position of the first returned."""
        first = self.total - len(self.events)
        start = max(position, first)
        return start, list(self.events)[start - first :]


def har_name(exchange: Exchange) -> str:
    """The name proxy.capture gives this exchange's HAR file."""
    return file_name(exchange)


def servable(name: str) -> bool:
    """A capture name safe to serve: one path component, of the expected shape."""
    return _SERVABLE.fullmatch(name) is not None


def record(
    exchange: Exchange,
    *,
    seq: int,
    timeline: Timeline,
    since: int,
    live: bool,
    har: str | None,
    har_path: str | None,
    secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """One exchange as the page receives it; `since` limits the timeline to newer events."""
    # The names are the log line's own; its values are checked (and nested names, as in
    # the upstream's `usage`).
    data: dict[str, Any] = {name: scrub(value, secrets) for name, value in fields(exchange).items()}
    start, events = timeline.since(since)
    # A stream repeats a few event types: each is checked once.
    kinds = {kind: redact.redact_text(kind) for kind in {kind for kind, _ in events}}
    data.update(
        seq=seq,
        live=live,
        started_at=exchange.started_at,
        elapsed_ms=exchange.elapsed_ms() if live else exchange.duration_ms,
        request_headers=redact.headers(exchange.request_headers, secrets),
        response_headers=redact.headers(exchange.response_headers, secrets),
        timeline=[[kinds[kind], at] for kind, at in events],
        timeline_at=start,
        timeline_total=timeline.total,
        har=None if har is None else _capture(har, har_path),
    )
    return data


def _capture(name: str, path: str | None) -> dict[str, Any]:
    """The HAR file's name and path, and its URL when the name is safe to serve as it is."""
    shown = redact.redact_text(name)
    return {
        "name": shown,
        "path": redact.redact_text(path) if path else None,
        "url": f"{CONTROL_PREFIX}captures/{name}" if servable(name) and shown == name else None,
    }


def scrub(value: Any, secrets: Sequence[str] = ()) -> Any:
    """The value with every string shape-checked for credentials and the `secrets` masked
    (markers pass unchanged)."""
    if isinstance(value, str):
        return redact.mask_known(redact.redact_text(value), secrets)
    if isinstance(value, dict):
        return {
            redact.mask_known(redact.redact_text(str(key)), secrets): scrub(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item, secrets) for item in value]
    return value
