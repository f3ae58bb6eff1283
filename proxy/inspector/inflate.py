"""WebSocket messages' permessage-deflate (RFC 7692), undone for the inspector within bounds.

A message is inflated only when the upstream's 101 agreed on permessage-deflate (a peer
may set RSV1 on any frame), and never to more than the inspector's `event_limit`, nor to
more than `RATIO` times its own size (JSON deflates about 5 to 30 times; a deflate bomb
a thousand), nor past what every inspected session together may inflate this second:
a flood of compressed messages costs the event loop a bounded slice of each second
(inflating runs at about 2 ms a MiB), and what is past it is noted, not read.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable
from typing import Any

RATIO = 64
# Bytes inflated a second, all sessions together: about 35 ms of the loop's time.
RATE = 16 * 1024 * 1024
SLACK = 64 * 1024  # a short message may inflate further: a repeat of the one before it
# The tail each message's compressed payload lost (RFC 7692 §7.2.1).
_TAIL = b"\x00\x00\xff\xff"


def agreed(headers: Iterable[tuple[str, str]]) -> frozenset[str] | None:
    """The permessage-deflate parameters a 101's headers agreed on (lower-cased names:
    `server_no_context_takeover`…), or None when it agreed on no permessage-deflate."""
    for name, value in headers:
        if name.lower() != "sec-websocket-extensions":
            continue
        for extension in value.split(","):
            kind, *params = (part.strip().lower() for part in extension.split(";"))
            if kind == "permessage-deflate":
                return frozenset(param.partition("=")[0].strip() for param in params)
    return None


class Budget:
    """Bytes all inspected sessions may inflate: `RATE` a second (or the `largest` message
    if that is more, so that it can be read), at most as much at once."""

    def __init__(self, largest: int) -> None:
        rate = self.rate = max(RATE, largest)
        self._level = float(rate)
        self._at = time.monotonic()

    def available(self) -> int:
        now = time.monotonic()
        self._level = min(float(self.rate), self._level + (now - self._at) * self.rate)
        self._at = now
        return int(self._level)

    def spend(self, size: int) -> None:
        self._level -= size


class Inflater:
    """One side's messages: the context carried from one to the next (unless that side
    agreed to none), lost for good once a message could not be read."""

    def __init__(self, *, takeover: bool, limit: int, budget: Budget) -> None:
        self.takeover = takeover
        self.limit = limit
        self.budget = budget
        self.lost = False
        self._context: Any = None  # a zlib decompressor

    def lose(self) -> None:
        """A message went unread: a context carried across messages is gone with it."""
        self.lost = self.takeover

    def inflate(self, payload: bytes) -> tuple[bytes | None, str | None]:
        """The message inflated, or None and why not."""
        if self.lost:
            return None, "compressed, unreadable after a message that could not be read"
        bound = min(self.limit, SLACK + RATIO * len(payload))
        room = self.budget.available()
        if room < min(bound, SLACK):
            self.lose()
            return None, "compressed, not inflated: the inspector's inflating budget is spent"
        context = self._context
        if context is None or not self.takeover or context.eof:
            context = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
            self._context = context if self.takeover else None
        try:
            data = context.decompress(payload + _TAIL, min(bound, room))
        except zlib.error as exc:
            self.lose()
            return None, f"compressed, not inflated ({exc})"
        self.budget.spend(len(data))
        if context.unconsumed_tail:
            self.lose()
            if room < bound:
                return None, "compressed, not inflated: the inspector's inflating budget is spent"
            return None, f"compressed, inflates past {bound:,} bytes"
        return data, None
