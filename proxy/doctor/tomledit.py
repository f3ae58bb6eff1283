"""Codex CLI's config.toml: set one string key, every other key, comment and line kept.

tomlkit (python-poetry's style-preserving TOML editor) makes the edit: a value replaced
where it stands, in its own quoting, its comment kept; a missing key added at the end of
its table (a top-level one before the first table). The result is read back with tomllib
and must differ from the original in that key only; otherwise the edit is refused.
"""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

from proxy.doctor.findings import UnsafeEditError, dotted


def set_string(text: str, key: tuple[str, ...], value: str) -> str:
    """`text` with `key` (a path of table names, then the key) set to `value`."""
    # Imported here: only `doctor --fix` edits a file.
    import tomlkit  # noqa: PLC0415
    from tomlkit.exceptions import TOMLKitError  # noqa: PLC0415

    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UnsafeEditError(f"not valid TOML: {exc}") from None
    expected = copy.deepcopy(before)
    table: Any = expected
    for depth, name in enumerate(key[:-1], 1):
        table = table.get(name)
        if not isinstance(table, dict):
            raise UnsafeEditError(f"{dotted(key[:depth])} is not a table in the file")
    table[key[-1]] = value
    try:
        document: Any = tomlkit.parse(text)
        holder = document
        for name in key[:-1]:
            holder = holder[name]
        holder[key[-1]] = value
        edited = _line_ends(text, tomlkit.dumps(document))
        unchanged = tomllib.loads(edited) == expected
    except (TOMLKitError, tomllib.TOMLDecodeError, KeyError, TypeError):
        unchanged = False
    if not unchanged:
        raise UnsafeEditError(f"setting {dotted(key)} would change more than that key")
    return edited


def _line_ends(original: str, edited: str) -> str:
    """A file whose lines all end in CRLF keeps doing so (tomlkit ends a new line in LF)."""
    if "\r\n" in original and "\n" not in original.replace("\r\n", ""):
        return re.sub(r"(?<!\r)\n", "\r\n", edited)
    return edited
