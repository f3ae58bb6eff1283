"""Text a peer chose, made safe to print and bounded: the one place log lines get it.

A path, a request id, an upstream's event type or error message, a WebSocket close
reason: any of them may hold terminal escapes (`ESC [2J` clears a screen), C1 controls,
line and paragraph separators or bidirectional overrides, and any may be 60 KB long.
Every string of a log line passes here before either format renders it, so the console
and the JSON line show the same thing: each character that is not printable written as
its escape (`\\x1b`, `\\u2028`), each string cut at `LIMIT` characters and each list or
mapping at `ITEMS` entries, saying so (`… [61,440 characters]`).
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from proxy.redact import redact_text

# A path with its query, an upstream's error message: two thousand characters say
# enough (and a whole canonical line is shorter).
LIMIT = 2048
# A mapping's keys (header names, JSON names) are short where they are honest.
KEY_LIMIT = 128
ITEMS = 32


def text(value: str, limit: int = LIMIT) -> str:
    """The string as it may be printed: escaped where not printable, cut past `limit`."""
    if len(value) <= limit and value.isprintable():
        return value
    if len(value) > limit:
        # Masked before it is cut: a credential cut in half is no longer recognisable.
        whole = redact_text(value)
        value = f"{whole[:limit]}… [{len(whole):,} characters]"
    if value.isprintable():
        return value
    return "".join(char if char.isprintable() else _escape(char) for char in value)


def value(item: Any) -> Any:
    """A log line's value with every string in it as `text` makes it, at any depth."""
    if isinstance(item, str):
        # The common case, inline: a short printable string is returned as it is.
        return item if len(item) <= LIMIT and item.isprintable() else text(item)
    if isinstance(item, dict):
        shown = {
            text(str(key), KEY_LIMIT): value(entry) for key, entry in islice(item.items(), ITEMS)
        }
        if len(item) > ITEMS:
            shown["…"] = f"{len(item) - ITEMS:,} more"
        return shown
    if isinstance(item, list | tuple):
        listed = [value(entry) for entry in islice(item, ITEMS)]
        if len(item) > ITEMS:
            listed.append(f"… {len(item) - ITEMS:,} more")
        return listed
    return item


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
