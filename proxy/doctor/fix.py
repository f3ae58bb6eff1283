"""`doctor --fix`: apply the proposed edits, one file at a time, each after a timestamped
backup next to it. A file is written only when every edit for it can be made with
certainty; otherwise it is left as it was and its edits are printed for a human."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.doctor import json5edit, tomledit
from proxy.doctor.findings import Edit, Format, UnsafeEditError


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    file: str
    edits: tuple[Edit, ...]
    backup: str = ""
    refused: str = ""  # why the file was left as it was


def apply_all(edits: Sequence[Edit], *, stamp: str) -> list[Applied]:
    files: dict[str, list[Edit]] = {}
    for edit in edits:
        files.setdefault(edit.file, []).append(edit)
    return [apply(file, tuple(group), stamp=stamp) for file, group in files.items()]


def apply(file: str, edits: tuple[Edit, ...], *, stamp: str) -> Applied:
    path = Path(file).resolve()  # a symlinked config is edited where it lives
    try:
        original = path.read_bytes()
        text = original.decode("utf-8")
        for edit in edits:
            text = _edit(text, edit)
    except (OSError, UnicodeDecodeError) as exc:
        return Applied(file=file, edits=edits, refused=_reason(exc))
    except UnsafeEditError as exc:
        return Applied(file=file, edits=edits, refused=str(exc))
    backup = _backup_name(path, stamp)
    try:
        shutil.copy2(path, backup)
        _keep_owner(path.stat(), backup)
        _replace(path, text.encode("utf-8"))
    except OSError as exc:
        return Applied(file=file, edits=edits, refused=_reason(exc))
    return Applied(file=file, edits=edits, backup=str(backup))


def _edit(text: str, edit: Edit) -> str:
    if edit.format is Format.JSON5:
        return json5edit.set_key(text, edit.key, edit.value)
    return tomledit.set_string(text, edit.key, edit.value)


def _backup_name(path: Path, stamp: str) -> Path:
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    count = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.bak-{stamp}-{count}")
        count += 1
    return backup


def _replace(path: Path, data: bytes) -> None:
    """Write beside the file, keep its mode and owner, then rename over it: never a
    half-written file."""
    status = path.stat()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, status.st_mode)
        _keep_owner(status, Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _keep_owner(status: os.stat_result, path: Path) -> None:
    """Run with sudo on a user's file, the edited file and its backup stay theirs."""
    owner = (status.st_uid, status.st_gid)
    if hasattr(os, "getuid") and owner != (os.getuid(), os.getgid()):
        os.chown(path, *owner)


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or type(exc).__name__
