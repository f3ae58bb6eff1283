"""A tap on a server-sent event stream: what the log needs, read without touching the bytes.

It is fed each chunk as the proxy forwards it and never fails or delays: chunk borders
may fall anywhere, a line may be megabytes long (an image), and only a bounded head and
tail of each line is kept, enough for the event type, the small closing events, and the
`usage` object that ends `response.completed`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HEAD_LIMIT = 64 * 1024
TAIL_LIMIT = 8 * 1024

_TYPE = re.compile(rb'"type"\s*:\s*"([^"\\]{1,200})"')
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


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

    @property
    def completed(self) -> bool:
        return self.terminal == "response.completed"


@dataclass(slots=True)
class _Line:
    """A bounded view of one line: its head, its tail, and whether it was cut."""

    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    length: int = 0

    def add(self, piece: bytes | bytearray | memoryview) -> None:
        self.length += len(piece)
        room = HEAD_LIMIT - len(self.head)
        if room > 0:
            self.head += piece[:room]
            piece = piece[room:]
        if piece:
            self.tail += piece
            if len(self.tail) > TAIL_LIMIT:
                del self.tail[: len(self.tail) - TAIL_LIMIT]

    @property
    def whole(self) -> bytes | None:
        return bytes(self.head) if self.length == len(self.head) else None

    def clear(self) -> None:
        self.head.clear()
        self.tail.clear()
        self.length = 0


class SSETap:
    """Incremental SSE parser; `feed` each forwarded chunk, read `summary` at any time."""

    def __init__(self, on_event: Callable[[str, StreamSummary], None] | None = None) -> None:
        self.summary = StreamSummary()
        self._line = _Line()
        self._event_field: str | None = None
        self._data: _Line | None = None
        self._after_cr = False
        self._on_event = on_event

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        start = 0
        end = len(chunk)
        if self._after_cr and end and chunk[0] == 0x0A:  # the LF of a CRLF split across chunks
            start = 1
        self._after_cr = False
        while start < end:
            newline = _find_eol(chunk, start)
            if newline < 0:
                self._line.add(view[start:])
                return
            self._line.add(view[start:newline])
            self._end_line()
            if chunk[newline] == 0x0D:
                if newline + 1 < end and chunk[newline + 1] == 0x0A:
                    newline += 1
                elif newline + 1 == end:
                    self._after_cr = True
            start = newline + 1

    def close(self) -> None:
        """The stream ended; an unterminated last event is not dispatched (per the SSE spec)."""
        self._line.clear()
        self._data = None

    def _end_line(self) -> None:
        line = self._line
        if line.length == 0:
            self._dispatch()
            return
        head = bytes(line.head[:6])
        if head.startswith(b"data:"):
            skip = 6 if head.startswith(b"data: ") else 5
            if self._data is None:
                self._data = _Line(line.head[skip:], bytearray(line.tail), line.length - skip)
            else:
                # Further data lines join with "\n"; the view stays exact while it is whole.
                data = self._data
                data.add(b"\n")
                data.add(line.head[skip:])
                data.length += line.length - len(line.head)
                if line.tail:
                    data.tail = bytearray(line.tail)
        elif head.startswith(b"event:"):
            whole = line.whole
            if whole is not None:
                self._event_field = whole[6:].strip().decode("utf-8", "replace")
        line.clear()

    def _dispatch(self) -> None:
        data, self._data = self._data, None
        event_field, self._event_field = self._event_field, None
        if data is None:
            return
        payload = _parse(data)
        kind = payload.get("type") if isinstance(payload.get("type"), str) else None
        if kind is None:
            found = _TYPE.search(data.head)
            kind = found.group(1).decode("utf-8", "replace") if found else event_field
        summary = self.summary
        summary.events += 1
        kind = kind or "message"
        if summary.first_event is None:
            summary.first_event = kind
        summary.last_event = kind
        if kind in _TERMINAL:
            summary.terminal = kind
            _read_terminal(summary, kind, payload, data)
        if self._on_event is not None:
            self._on_event(kind, summary)


def _find_eol(chunk: bytes, start: int) -> int:
    lf = chunk.find(b"\n", start)
    cr = chunk.find(b"\r", start, lf if lf >= 0 else len(chunk))
    return cr if cr >= 0 else lf


def _parse(data: _Line) -> dict[str, Any]:
    whole = data.whole
    if whole is None:
        return {}
    try:
        parsed = json.loads(whole)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _read_terminal(summary: StreamSummary, kind: str, payload: dict[str, Any], data: _Line) -> None:
    response: dict[str, Any] = payload.get("response") or {}
    if not isinstance(response, dict):
        response = {}
    usage = response.get("usage") if payload else _usage_from_tail(bytes(data.tail))
    if isinstance(usage, dict):
        summary.usage = usage
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


def _usage_from_tail(tail: bytes) -> dict[str, Any] | None:
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
