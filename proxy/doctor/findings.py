"""What the doctor found: one `Finding` per line of the checklist, and the edits that fix it.

A finding is ✔ (fine), ✘ (wrong: it names the fix) or an en dash (nothing to check, or
advice only). Everything shown passes through `shown()`, so no token, password or account id is
ever printed: at most its fingerprint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from proxy.redact import redact_text
from proxy.settings import redact_url


class Status(StrEnum):
    OK = "ok"
    PROBLEM = "problem"
    INFO = "info"

    @property
    def mark(self) -> str:
        return {"ok": "✔", "problem": "✘", "info": "\u2013"}[self.value]  # an en dash


class Format(StrEnum):
    JSON5 = "json5"
    TOML = "toml"


class UnsafeEditError(Exception):
    """An edit that cannot be made with certainty; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """Set `key` (a path of names) in `file` to `value`, creating missing objects."""

    file: str
    format: Format
    key: tuple[str, ...]
    value: Any

    @property
    def dotted(self) -> str:
        return dotted(self.key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    area: str
    status: Status
    where: str  # the file and key, the variable or the address
    says: str
    fix: str = ""
    edits: tuple[Edit, ...] = ()

    def __post_init__(self) -> None:
        assert (self.status is Status.PROBLEM) == bool(self.fix), self


def dotted(key: tuple[str, ...]) -> str:
    """A key path as OpenClaw's docs write it: names joined by dots, odd ones quoted."""
    return ".".join(part if _PLAIN.fullmatch(part) else json.dumps(part) for part in key)


_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


def shown(text: str) -> str:
    """Text safe to print: proxy passwords, bearer tokens, JWTs and keys masked."""
    if "://" in text and "@" in text:
        try:
            text = redact_url(text)
        except ValueError:
            text = text.split("://", 1)[0] + "://[redacted]"
    return redact_text(text)


def shown_value(value: Any) -> str:
    """A config value as JSON, masked as `shown` masks text."""
    return shown(json.dumps(value, ensure_ascii=False))
