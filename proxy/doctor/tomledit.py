"""Codex CLI's config.toml: set one top-level string key, every other byte unchanged.

Only the one line that holds the key is rewritten (its value; a comment after it stays),
or one line is added after the last top-level key. The result is read back with tomllib
and must differ from the original in that key only; otherwise the edit is refused.
"""

from __future__ import annotations

import json
import re
import tomllib

from proxy.doctor.findings import UnsafeEditError

_HEADER = re.compile(r"^[ \t]*\[", re.M)
_KEY_LINE = re.compile(r"^[ \t]*[A-Za-z0-9_\-\"'.]+[ \t]*=", re.M)


def set_string(text: str, key: str, value: str) -> str:
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UnsafeEditError(f"not valid TOML: {exc}") from None
    expected = before | {key: value}
    quoted = json.dumps(value)
    line = re.compile(
        rf"^(?P<lead>[ \t]*(?:{re.escape(key)}|\"{re.escape(key)}\")[ \t]*=[ \t]*)"
        r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*')",
        re.M,
    )
    candidates = [
        text[: found.start("value")] + quoted + text[found.end("value") :]
        for found in line.finditer(text)
    ]
    if key not in before:
        candidates = [_insert(text, f"{key} = {quoted}")]
    for edited in candidates:
        try:
            if tomllib.loads(edited) == expected:
                return edited
        except tomllib.TOMLDecodeError:
            continue
    raise UnsafeEditError(f"{key} is not a plain top-level string the doctor can rewrite")


def _insert(text: str, line: str) -> str:
    """Add the line after the last top-level key (before the first table), or first."""
    header = _HEADER.search(text)
    root = text[: header.start()] if header else text
    keys = list(_KEY_LINE.finditer(root))
    newline = "\r\n" if "\r\n" in text else "\n"
    if not keys:
        return line + newline + text
    end = text.find("\n", keys[-1].start())
    if end < 0:
        return text + newline + line + newline
    return text[: end + 1] + line + newline + text[end + 1 :]
