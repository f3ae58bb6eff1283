"""A blob's fingerprint: what HAR files, logs and the inspector show in place of base64.

One function names a run of base64 (an image, a file) everywhere by its decoded bytes:
`image/png 192x192, 38,912 bytes, sha256 …`, the image type and pixel size read from the
bytes themselves where they are an image. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

# Base64 this long or longer is a blob (an image, a file), summarised, never shown.
BLOB_MIN = 256
BASE64 = re.compile(rf"(?:data:[\w.+-]+/[\w.+-]+;base64,)?[A-Za-z0-9+/_-]{{{BLOB_MIN},}}={{0,2}}")
_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True, slots=True)
class Picture:
    mime: str
    width: int | None
    height: int | None


def picture(data: bytes) -> Picture | None:
    """An image's kind and size in pixels, read from its first bytes; None if not one."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return Picture("image/png", width, height)
    if data.startswith(b"\xff\xd8"):
        return Picture("image/jpeg", *_jpeg_size(data))
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return Picture("image/webp", *_webp_size(data))
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return Picture("image/gif", width, height)
    return None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    at = 2
    while at + 9 < len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None, None


def _webp_size(data: bytes) -> tuple[int | None, int | None]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None, None


def fingerprint(data: bytes, *, declared: str | None = None) -> str:
    """Decoded bytes named for a reader: `image/png 192x192, 38,912 bytes, sha256 …`.

    The type is the one the bytes show (`declared`, a data URL's, only where they show
    none); the pixel size where the image's header gives it."""
    found = picture(data)
    sha256 = hashlib.sha256(data).hexdigest()
    if found is None:
        return describe(len(data), sha256, declared)
    return describe(len(data), sha256, found.mime, found.width, found.height)


def describe(
    size: int,
    sha256: str,
    mime: str | None,
    width: int | None = None,
    height: int | None = None,
) -> str:
    """The fingerprint from its parts (for bytes no longer kept)."""
    kind = f"{mime} {width}x{height}" if mime and width and height else mime
    return (
        f"{kind}, {size:,} bytes, sha256 {sha256}" if kind else f"{size:,} bytes, sha256 {sha256}"
    )


def summary(text: str) -> str | None:
    """A base64 string (or a data URL) as `[base64: <fingerprint>]`; None if it is not one."""
    if len(text) < BLOB_MIN or BASE64.fullmatch(text) is None or not _mixed(text):
        return None
    head, comma, data = text.partition(",") if text.startswith("data:") else ("", "", text)
    data = data.rstrip("=").translate(_URLSAFE)
    try:
        raw = base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None
    declared = head.removeprefix("data:").removesuffix(";base64") if comma else None
    return f"[base64: {fingerprint(raw, declared=declared)}]"


def fold(text: str) -> str:
    """The text with every run of base64 replaced by its summary."""
    return BASE64.sub(lambda found: summary(found.group(0)) or found.group(0), text)


def _mixed(text: str) -> bool:
    """Encoded bytes mix capitals, small letters and digits; a run of one letter does not."""
    sample = text[-BLOB_MIN:]
    return (
        any(c.isupper() for c in sample)
        and any(c.islower() for c in sample)
        and any(c.isdigit() for c in sample)
    )
