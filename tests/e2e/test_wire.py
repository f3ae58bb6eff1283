"""The end-to-end suite's own yardsticks, checked without any client (part of the unit
suite): reading requests back from relayed bytes, and what counts as passed unchanged."""

from __future__ import annotations

import pytest

from tests.e2e.fake_chatgpt import Received
from tests.e2e.http1 import Message, read_requests
from tests.e2e.transparency import rewritten, unfaithful


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/backend-api/responses", "/backend-api/codex/responses"),
        ("/backend-api/responses/compact?x=1", "/backend-api/codex/responses/compact?x=1"),
        ("/backend-api/v1/codex/responses", "/backend-api/codex/responses"),
        ("/backend-api/responsesX", "/backend-api/responsesX"),
        ("/backend-api/codex/responses", "/backend-api/codex/responses"),
    ],
)
def test_rewritten_follows_the_default_rules(target: str, expected: str) -> None:
    assert rewritten(target) == expected


def test_requests_are_read_back_de_chunked_until_an_upgrade_is_accepted() -> None:
    sent = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x85masked frame bytes"
    )
    received = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 101 Switching\r\n\r\n\x81\x02hi"
    )
    requests = read_requests(sent, received)
    assert [(m.start_line, m.body) for m in requests] == [
        ("POST /a HTTP/1.1", b"abcde"),
        ("GET /b HTTP/1.1", b""),
    ]


def test_a_refused_upgrade_leaves_the_connection_to_the_next_request() -> None:
    sent = b"GET /b HTTP/1.1\r\nUpgrade: websocket\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 1\r\n\r\nz"
    received = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"
    )
    assert [m.target for m in read_requests(sent, received)] == ["/b", "/c"]


SENT = Message(
    "POST /backend-api/responses HTTP/1.1",
    [
        ("Host", "proxy:1"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("b", "2"),
        ("A", "1"),
        ("A", "3"),
    ],
    b"body",
)
UPSTREAM = "fake:2"


def received(headers: list[tuple[str, str]], body: bytes = b"body") -> Received:
    return Received("POST", "/backend-api/codex/responses", headers, body)


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ([("Host", "fake:2"), ("b", "2"), ("A", "1"), ("A", "3")], b"body", None),
        ([("Host", "fake:2"), ("A", "1"), ("b", "2"), ("A", "3")], b"body", "headers differ"),
        ([("Host", "fake:2"), ("B", "2"), ("A", "1"), ("A", "3")], b"body", "headers differ"),
        ([("Host", "fake:2"), ("b", "2"), ("A", "1")], b"body", "headers differ"),
        (
            [("Host", "fake:2"), ("b", "2"), ("A", "1"), ("A", "3"), ("Via", "x")],
            b"body",
            "headers differ",
        ),
        ([("Host", "proxy:1"), ("b", "2"), ("A", "1"), ("A", "3")], b"body", "headers differ"),
        (
            [("Host", "fake:2"), ("b", "2"), ("A", "1"), ("A", "3")],
            b"bodY",
            "first difference at byte 3",
        ),
    ],
)
def test_unfaithful_names_every_change_beyond_host_and_hop_by_hop_headers(
    headers: list[tuple[str, str]], body: bytes, problem: str | None
) -> None:
    found = unfaithful([SENT], [received(headers, body)], host=UPSTREAM)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1
        assert problem in found[0]


def test_a_handshake_keeps_its_per_hop_headers_in_place_with_any_value() -> None:
    handshake = Message(
        "GET /backend-api/responses HTTP/1.1",
        [
            ("Host", "proxy:1"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "a"),
            ("x", "1"),
        ],
        b"",
    )
    renegotiated = [
        ("Host", "fake:2"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "b"),
        ("x", "1"),
    ]
    moved = [
        ("Host", "fake:2"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("x", "1"),
        ("Sec-WebSocket-Key", "b"),
    ]
    get = "GET", "/backend-api/codex/responses"
    assert unfaithful([handshake], [Received(*get, renegotiated, b"")], host=UPSTREAM) == []
    assert unfaithful([handshake], [Received(*get, moved, b"")], host=UPSTREAM) != []


def test_a_request_the_fake_never_got_is_named() -> None:
    assert unfaithful([SENT], [], host=UPSTREAM) == [f"{SENT.start_line}: never reached the fake"]
