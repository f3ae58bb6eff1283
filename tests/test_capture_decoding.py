"""Capture decodes bodies on a copy, whatever their encoding, and says when it cannot."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import struct
import zlib

import brotli
import pytest
import zstandard

from proxy.capture import decode, excerpt, readable
from proxy.exchange import Body

TEXT = b'{"input":"hello capture"}'


def body(data: bytes, limit: int = 1 << 20) -> Body:
    captured = Body(limit)
    captured.add(data)
    return captured


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        (None, TEXT),
        ("identity", TEXT),
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),
        ("br", brotli.compress(TEXT)),
        ("zstd", zstandard.ZstdCompressor().compress(TEXT)),
        (" ZSTD ", zstandard.ZstdCompressor().compress(TEXT)),
    ],
)
def test_every_encoding_decodes(encoding: str | None, encoded: bytes) -> None:
    assert decode(body(encoded), encoding) == (TEXT, None)


def test_a_cut_body_decodes_as_far_as_it_goes() -> None:
    big = os.urandom(100).hex().encode() * 100
    captured = body(gzip.compress(big), limit=200)
    data, note = decode(captured, "gzip")
    assert note is None
    assert big.startswith(data)
    assert captured.truncated


def test_undecodable_and_unknown_encodings_say_so() -> None:
    assert decode(body(b"not gzip"), "gzip")[1] is not None
    assert decode(body(b"not gzip"), "gzip")[0] == b"not gzip"
    assert decode(body(b"x"), "compress") == (
        b"x",
        "not decoded: unknown content-encoding compress",
    )


def test_binary_bodies_are_shown_as_base64() -> None:
    assert readable(b"\xff\xfe\x00") == ("//4A", "base64")
    assert excerpt(body(b"\xff\xfe\x00"), None, ()) == "[base64] //4A"


def test_known_secrets_and_images_are_masked_in_text() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 192, 96) + os.urandom(4000)
    image = base64.b64encode(png)
    text, how = readable(b'{"a":"tok-12345678","img":"' + image + b'"}', ["tok-12345678"])
    assert how is None
    assert "tok-12345678" not in text
    digest = hashlib.sha256(png).hexdigest()
    assert f'"[base64: image/png 192x96, {len(png):,} bytes, sha256 {digest}]"' in text


def test_an_excerpt_shows_a_blob_at_its_start_by_its_fingerprint() -> None:
    data = os.urandom(3000)
    shown = excerpt(body(b'{"result":"' + base64.b64encode(data) + b'"}'), None, ())
    assert (
        shown == f'{{"result":"[base64: 3,000 bytes, sha256 {hashlib.sha256(data).hexdigest()}]"}}'
    )
