"""What a hostile peer can put in a log line: terminal escapes come out escaped and long
values come out cut, in the console format and in JSON alike, from the real command
(issue 26, items 8 and 9).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import struct
from typing import Any

import pytest
import structlog
from aiohttp import web

from proxy import printable
from proxy.log import JSONLines, configure_logging
from proxy.redact import marker, redact_line
from tests.fake_upstream import FakeUpstream
from tests.harness import raw_request
from tests.proc import writing_process

# Clears the screen and turns the rest red; a C1 CSI (U+009B) does the same in one
# character on some terminals; U+2028 ends a line for some readers; U+202E reverses text.
ESCAPES = "\x1b[2J\x1b[1;31mowned\u2028\u009b31m\u202etxt.exe"
SHOWN = "\\x1b[2J\\x1b[1;31mowned\\u2028\\x9b31m\\u202etxt.exe"
RAW = [b"\x1b", "\u2028".encode(), "\u009b".encode(), "\u202e".encode()]
LONG = 60 * 1024
ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + ACCEPT_GUID).encode()).digest()).decode()


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_terminal_escapes_from_peers_are_written_escaped(
    fake: FakeUpstream, log_format: str
) -> None:
    """An event type, a request id (U+009B is a valid header byte pair) and a stream
    that ends without response.completed, naming that event type in its diagnosis."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        assert request.transport is not None
        event = f"event: {ESCAPES}\ndata: {{}}\n\n".encode()
        request.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"x-request-id: req\xc2\x9b31m\r\n"
            + f"Content-Length: {len(event)}\r\n\r\n".encode()
            + event
        )
        await request.content.read()
        return web.Response()  # never sent: the answer above is the whole response

    fake.handler = answer
    async with writing_process("--upstream", fake.url, "--log-format", log_format) as running:
        answered = await raw_request(
            running.port,
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n",
        )
        assert answered.startswith(b"HTTP/1.1 200 ")
        written = await running.stop()
    for raw in RAW:
        assert raw not in written
    text = written.decode()
    if log_format == "json":
        [line] = [json.loads(row) for row in text.splitlines() if '"event":"request"' in row]
        assert line["last_event"] == SHOWN
        assert line["upstream_request_id"] == "req\\x9b31m"
        assert line["diagnosis"].endswith(f"(last: {SHOWN})")
    else:
        assert f"without response.completed (last: {SHOWN})" in text


async def test_long_peer_values_are_cut_and_say_so(fake: FakeUpstream) -> None:
    """60 KB upstream ids and quota values, and a 60 KB
    WebSocket close reason (RFC 6455 allows 123 bytes) each make a bounded line."""
    stream = b"event: response.created\ndata: {}\n\n"
    key = base64.b64encode(os.urandom(16)).decode()
    reason = b"r" * LONG
    close = b"\x88\x7f" + struct.pack("!Q", 2 + len(reason)) + struct.pack("!H", 1000) + reason

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        assert request.transport is not None
        if request.headers.get("Upgrade"):
            request.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n"
                + f"Sec-WebSocket-Accept: {accept(key)}\r\n\r\n".encode()
                + close
            )
            request.transport.close()
            return web.Response()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "x-request-id": "i" * LONG,
                "x-codex-primary-used-percent": "q" * LONG,
            }
        )
        await response.prepare(request)
        await response.write(stream)
        return response

    fake.handler = answer
    async with writing_process("--upstream", fake.url, "--log-format", "json") as running:
        await raw_request(
            running.port,
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n",
        )
        upgrade = (
            "GET /backend-api/responses HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        )
        await raw_request(running.port, upgrade.encode())
        written = await running.stop()
    rows = written.decode().splitlines()
    lines = {line["event"]: line for line in map(json.loads, rows)}
    assert max(map(len, rows)) < 16 * 1024
    cut = f"… [{LONG:,} characters]"
    request, websocket = lines["request"], lines["websocket"]
    assert request["upstream_request_id"] == "i" * printable.LIMIT + cut
    assert request["quota"]["x-codex-primary-used-percent"] == "q" * printable.LIMIT + cut
    # Cut to what RFC 6455 allows where it is read (the frame tap), or here.
    assert websocket["close_reason"].startswith("r" * 100)
    assert len(websocket["close_reason"]) <= printable.LIMIT + len(cut)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("tab\there", "tab\\x09here"),
        ("\x7f\x85\u200f", "\\x7f\\x85\\u200f"),
        ("\U000e0041", "\\U000e0041"),
        ("héllo wörld 日本", "héllo wörld 日本"),
    ],
)
def test_printable_text(value: str, shown: str) -> None:
    assert printable.text(value) == shown


def test_printable_values_at_any_depth_and_bounded_in_number() -> None:
    nested = {"k\x1b": ["\x1b"] * (printable.ITEMS + 3), "n": 1, "t": ("a", None)}
    assert printable.value(nested) == {
        "k\\x1b": ["\\x1b"] * printable.ITEMS + ["… 3 more"],
        "n": 1,
        "t": ["a", None],
    }
    many = {str(n): n for n in range(printable.ITEMS + 1)}
    assert printable.value(many) == {**{str(n): n for n in range(printable.ITEMS)}, "…": "1 more"}
    # Cut after masking: half a credential is never left to be recognised.
    token = "Bearer " + "A1" * printable.LIMIT
    assert printable.text(token).startswith("Bearer [redacted #")


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"path": "/a\x1bb", "quota": {"x-codex-a": "\u2028"}},
        {"upstream_request_id": "i" * (printable.LIMIT + 1)},
        {"diagnosis": 'a "quoted" back\\slash and é'},
        {"detail": "del\x7f"},
        {"path": "/x?w=1", "detail": "GET /x?access_token=tok-123456 refused"},
        {"path": "/x?access_token=[redacted #000000]&w=1"},
    ],
)
def test_the_canonical_line_s_short_way_writes_what_the_processors_would(
    extra: dict[str, Any],
) -> None:
    """JSONLines renders the canonical line without structlog's machinery: the same line
    as the configured processors, escaped and cut alike."""
    saved, handlers = structlog.get_config(), logging.getLogger().handlers[:]
    stream = io.StringIO()
    try:
        configure_logging("info", "json", stream)
        fields = {"method": "GET", "path": "/x", "status": 200, "usage": {"n": 1}, **extra}
        assert JSONLines().write("info", "request", dict(fields))
        structlog.get_logger("proxy.request").info("request", **fields)
        for handler in logging.getLogger().handlers:
            handler.flush()
        short, processed = (json.loads(line) for line in stream.getvalue().splitlines())
    finally:
        structlog.configure(**saved)
        logging.getLogger().handlers[:] = handlers
    for line in (short, processed):
        del line["timestamp"]
    assert short == processed
    assert "\x1b" not in json.dumps(short, ensure_ascii=False)
    assert "tok-123456" not in json.dumps(short)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "b'/_proxy/search?access_token=tok-1&q=x'",
            f"b'/_proxy/search?access_token={marker('tok-1')}&q=x'",
        ),
        ("/a?w=small&api_key=K1-2", f"/a?w=small&api_key={marker('K1-2')}"),
        ("see https://h/p?code=abc#frag", f"see https://h/p?code={marker('abc')}#frag"),
        ("/x?access_token=[redacted #abcdef]&w=1", "/x?access_token=[redacted #abcdef]&w=1"),
        ("x=1 token=abc", "x=1 token=abc"),  # key=value pairs, not a query
        ("?=x&token=", "?=x&token="),
    ],
)
def test_a_log_line_s_query_credentials_are_masked_wherever_they_stand(
    text: str, shown: str
) -> None:
    assert redact_line(text) == shown


@pytest.mark.parametrize("log_format", ["console", "json"])
async def test_a_target_an_error_repeats_never_brings_its_query_credentials_to_the_log(
    fake: FakeUpstream, log_format: str
) -> None:
    """A long /_proxy target carrying credentials: aiohttp's own line limit once refused
    it with a plain-text 400 whose logged exception repeated it; the control plane now
    takes any head the connection accepted (limits.max_header_size), and the control plane's
    answer is its own JSON. Neither the log nor the answer holds the credential."""
    secret = "query-secret-5e6f7a"
    async with writing_process("--upstream", fake.url, "--log-format", log_format) as running:
        target = f"/_proxy/search?access_token={secret}&q={'x' * 60_000}"
        answered = await raw_request(
            running.port,
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
        )
        assert answered.startswith(b"HTTP/1.1 4")  # the JSON 404 of a path not served
        assert b"application/json" in answered.split(b"\r\n\r\n", 1)[0]
        assert secret.encode() not in answered
        written = await running.stop()
    assert secret.encode() not in written
