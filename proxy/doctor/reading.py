"""Reading a client's file without ever failing the doctor: missing, unreadable, text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Unreadable:
    reason: str


def read_text(path: Path) -> str | Unreadable | None:
    """The file's text; None if there is no such file; Unreadable saying why not."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return Unreadable("it is a directory")
    except OSError as exc:
        return Unreadable(exc.strerror or type(exc).__name__)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Unreadable(f"not UTF-8 text (byte {exc.start})")
