"""A tap on a server-sent event stream: what the log needs, read without touching the bytes.

It is fed each chunk after the proxy has forwarded it and never fails: chunk borders may
fall anywhere, a line may be megabytes long (an image), and only a bounded head and tail
of each line is kept, enough for the event type, the small closing events, and the
`usage` object that ends `response.completed`. Cheap per event: the type is read from
the start of the JSON (`{"type":"…"`); only closing events (and `codex.rate_limits`,
handed to `on_limits`) are parsed whole.

The inspector asks for more: with `keep`, each event's data up to that many bytes is
kept whole and handed to `on_data` (a longer one as None, with its length).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HEAD_LIMIT = 64 * 1024
TAIL_LIMIT = 8 * 1024

_LEADING_TYPE = re.compile(rb'\{\s*"type"\s*:\s*"([^"\\]{1,200})"')
_ANY_TYPE = re.compile(rb'"type"\s*:\s*"([^"\\]{1,200})"')
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,100})"')
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
RATE_LIMITS = "codex.rate_limits"
_PARSED = _TERMINAL | {RATE_LIMITS}


@dataclass(slots=True)
class StreamSummary:
    """What the tap learnt about one stream."""

    events: int = 0
    first_event: str | None = None
    last_event: str | None = None
    terminal: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    # The closing event's response.model.
    model: str | None = None

    @property
    def completed(self) -> bool:
        return self.terminal == "response.completed"


class Bounded:
    """A bounded view of a byte string that arrives in pieces: its head, tail and length."""

    __slots__ = ("head", "length", "limit", "tail")

    def __init__(self, limit: int = HEAD_LIMIT) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.length = 0
        self.limit = limit

    def add(self, piece: bytes | memoryview) -> None:
        self.length += len(piece)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += piece[:room]
            piece = piece[room:]
        if piece:
            self.tail += piece[-TAIL_LIMIT:]
            if len(self.tail) > TAIL_LIMIT:
                del self.tail[: len(self.tail) - TAIL_LIMIT]

    @property
    def whole(self) -> bytes | None:
        return bytes(self.head) if self.length == len(self.head) else None


class SSETap:
    """Incremental SSE parser; `feed` each forwarded chunk, read `summary` at any time."""

    def __init__(
        self,
        on_event: Callable[[str, StreamSummary], None] | None = None,
        *,
        keep: int = 0,
        on_data: Callable[[str, bytes | None, int], None] | None = None,
        on_limits: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.summary = StreamSummary()
        self._on_limits = on_limits
        self._limit = max(keep, HEAD_LIMIT) if on_data is not None else HEAD_LIMIT
        self._on_data = on_data
        self._partial: Bounded | None = None  # a line cut by a chunk border
        # The current event's data: one line seen whole (the common case), or a bounded view.
        self._data: memoryview | Bounded | None = None
        self._event_field: bytes | None = None
        self._after_cr = False
        self._on_event = on_event

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        start, end = 0, len(chunk)
        if self._after_cr and end and chunk[0] == 0x0A:  # the LF of a CRLF split across chunks
            start = 1
        self._after_cr = False
        has_cr = b"\r" in chunk
        while start < end:
            newline = _find_eol(chunk, start, end) if has_cr else chunk.find(b"\n", start)
            if newline < 0:
                if self._partial is None:
                    self._partial = Bounded(self._limit)
                self._partial.add(view[start:])
                return
            if self._partial is None:
                self._line(chunk, view, start, newline)
            else:
                self._partial.add(view[start:newline])
                self._long_line(self._partial)
                self._partial = None
            if has_cr and chunk[newline] == 0x0D:
                if newline + 1 < end and chunk[newline + 1] == 0x0A:
                    newline += 1
                elif newline + 1 == end:
                    self._after_cr = True
            start = newline + 1

    def close(self) -> None:
        """The stream ended; an unterminated last event is not dispatched (per the SSE spec)."""
        self._partial = None
        self._data = None

    def _line(self, chunk: bytes, view: memoryview, start: int, stop: int) -> None:
        """A line that arrived whole within one chunk: chunk[start:stop]."""
        if start == stop:
            self._dispatch()
        elif chunk.startswith(b"data:", start, stop):
            skip = 6 if chunk.startswith(b"data: ", start, stop) else 5
            self._add_data(view[start + skip : stop])
        elif chunk.startswith(b"event:", start, stop):
            self._event_field = chunk[start + 6 : min(stop, start + 206)]

    def _long_line(self, line: Bounded) -> None:
        """A line that spanned chunks, seen through its bounded view."""
        if line.length == 0:
            self._dispatch()
            return
        head = line.head
        if head[:5] == b"data:":
            skip = 6 if head[5:6] == b" " else 5
            data = self._bounded_data()
            data.add(memoryview(head)[skip:])
            data.length += line.length - len(head)
            if line.tail:
                data.tail = line.tail
        elif head[:6] == b"event:":
            self._event_field = bytes(head[6:206])

    def _add_data(self, piece: memoryview) -> None:
        if self._data is None and len(piece) <= self._limit:
            self._data = piece
        else:
            self._bounded_data().add(piece)

    def _bounded_data(self) -> Bounded:
        """The event's data as a bounded view, ready for one more data line."""
        data = self._data
        if isinstance(data, Bounded):
            data.add(b"\n")  # several data lines join with "\n"
            return data
        bounded = self._data = Bounded(self._limit)
        if data is not None:
            bounded.add(data)
            bounded.add(b"\n")
        return bounded

    def _dispatch(self) -> None:
        found_data, self._data = self._data, None
        event_field, self._event_field = self._event_field, None
        if found_data is None:
            return
        data = found_data if isinstance(found_data, Bounded) else _Whole(found_data)
        found = _LEADING_TYPE.match(data.head)
        kind = found.group(1).decode("utf-8", "replace") if found else None
        payload: dict[str, Any] = {}
        if kind is None or kind in _PARSED:
            payload = _parse(data)
            if kind is None:
                named = event_field.strip().decode("utf-8", "replace") if event_field else None
                kind = _type_of(payload, data) or named or "message"
            if kind == RATE_LIMITS and payload and self._on_limits is not None:
                self._on_limits(payload)
        summary = self.summary
        summary.events += 1
        if summary.first_event is None:
            summary.first_event = kind
        summary.last_event = kind
        if kind in _TERMINAL:
            summary.terminal = kind
            _read_terminal(summary, kind, payload, data)
        if self._on_data is not None:
            self._on_data(kind, data.whole, data.length)
        if self._on_event is not None:
            self._on_event(kind, summary)


class _Whole:
    """One data line seen whole, with the bounded view's interface."""

    __slots__ = ("head", "length", "tail")

    def __init__(self, line: memoryview) -> None:
        self.head = line
        self.length = len(line)
        self.tail = b""

    @property
    def whole(self) -> bytes:
        return bytes(self.head)


def _find_eol(chunk: bytes, start: int, end: int) -> int:
    lf = chunk.find(b"\n", start)
    cr = chunk.find(b"\r", start, lf if lf >= 0 else end)
    return cr if cr >= 0 else lf


def _parse(data: Bounded | _Whole) -> dict[str, Any]:
    whole = data.whole
    if whole is None:
        return {}
    try:
        parsed = json.loads(whole)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _type_of(payload: dict[str, Any], data: Bounded | _Whole) -> str | None:
    kind = payload.get("type")
    if isinstance(kind, str):
        return kind
    if payload:
        return None
    found = _ANY_TYPE.search(data.head, 0, 512)
    return found.group(1).decode("utf-8", "replace") if found else None


def _read_terminal(
    summary: StreamSummary, kind: str, payload: dict[str, Any], data: Bounded | _Whole
) -> None:
    response: dict[str, Any] = payload.get("response") or {}
    if not isinstance(response, dict):
        response = {}
    usage = response.get("usage") if payload else usage_from_tail(bytes(data.tail))
    if isinstance(usage, dict):
        summary.usage = usage
    model = response.get("model") if payload else model_from_head(bytes(data.head[:4096]))
    if isinstance(model, str) and model:
        summary.model = model[:100]
    error = payload.get("error") if isinstance(payload.get("error"), dict) else None
    if kind == "response.failed":
        error = response.get("error") if isinstance(response.get("error"), dict) else error
    elif kind == "response.incomplete":
        details = response.get("incomplete_details")
        if isinstance(details, dict):
            summary.error_code = str(details.get("reason"))
    elif kind == "error" and error is None and payload:
        error = payload
    if error:
        code = error.get("code") or error.get("type")
        summary.error_code = str(code) if code is not None else None
        message = error.get("message")
        summary.error_message = str(message)[:500] if message is not None else None


def model_from_head(head: bytes) -> str | None:
    """The model of a closing event too long to keep whole: its response's comes first."""
    found = _MODEL.search(head)
    return found.group(1).decode("utf-8", "replace") if found else None


def usage_from_tail(tail: bytes) -> dict[str, Any] | None:
    """The `usage` object of a closing event too long to keep whole (an image inside)."""
    matches = list(_USAGE.finditer(tail))
    if not matches:
        return None
    found = matches[-1]
    try:
        usage, _ = json.JSONDecoder().raw_decode(tail[found.end() - 1 :].decode("utf-8", "replace"))
    except ValueError:
        return None
    return usage if isinstance(usage, dict) else None
