"""What the fake must have received for what a client sent: the proxy's contract (README,
"What it changes, and what it never does"), restated here independently of its code.

The path is rewritten by the rule table; Host names the upstream, in the client's place;
the hop-by-hop headers are dropped; everything else arrives as sent (names, case, order,
values, repeats) with the same body bytes. A WebSocket handshake keeps its per-hop
headers in place, with the values the proxy negotiated for its own hop.
"""

from __future__ import annotations

import difflib

from tests.e2e.fake_chatgpt import Received
from tests.e2e.http1 import Message, Pairs
from tests.fake_upstream import CANONICAL, RETIRED

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "expect",
    }
)
HANDSHAKE_PER_HOP = frozenset(
    {
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
    }
)
NEGOTIATED = "<negotiated on each hop>"


def rewritten(target: str) -> str:
    path, question, query = target.partition("?")
    for prefix in RETIRED:
        if path == prefix or path.startswith(prefix + "/"):
            return CANONICAL + path[len(prefix) :] + question + query
    return target


def is_handshake(message: Message) -> bool:
    return (message.header("upgrade") or "").lower() == "websocket"


def forwarded(sent: Message, *, host: str) -> Pairs:
    """The header list the next hop must receive for `sent`."""
    listed = {
        token.strip().lower()
        for name, value in sent.headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    handshake = is_handshake(sent)
    drop = (HOP_BY_HOP | listed) - (HANDSHAKE_PER_HOP if handshake else frozenset())
    pairs: Pairs = []
    for name, value in sent.headers:
        lowered = name.lower()
        if lowered == "host":
            pairs.append((name, host))
        elif lowered not in drop:
            pairs.append((name, masked(name, value, handshake)))
    return pairs


def masked(name: str, value: str, handshake: bool) -> str:
    return NEGOTIATED if handshake and name.lower() in HANDSHAKE_PER_HOP else value


def differences(sent: Message, received: Received, *, host: str) -> list[str]:
    """Empty when the fake got exactly what the proxy owed it for `sent`; else each way
    it differs, readable in a failure message."""
    found: list[str] = []
    if (received.method, received.target) != (sent.method, rewritten(sent.target)):
        found.append(
            f"request line: sent {sent.method} {sent.target}, expected "
            f"{sent.method} {rewritten(sent.target)}, fake got {received.method} {received.target}"
        )
    expected = forwarded(sent, host=host)
    handshake = is_handshake(sent)
    got = [(name, masked(name, value, handshake)) for name, value in received.headers]
    if got != expected:
        diff = difflib.unified_diff(
            [shown(pair) for pair in expected],
            [shown(pair) for pair in got],
            "owed",
            "received",
            lineterm="",
            n=2,
        )
        found.append("headers differ:\n" + "\n".join(diff))
    if received.body != sent.body:
        at = next(
            (i for i, (a, b) in enumerate(zip(sent.body, received.body, strict=False)) if a != b),
            None,
        )
        found.append(
            f"body differs: sent {len(sent.body)} B, fake got {len(received.body)} B"
            + (f", first difference at byte {at}" if at is not None else "")
        )
    return found


def shown(pair: tuple[str, str]) -> str:
    name, value = pair
    return f"{name}: {value if len(value) <= 100 else value[:100] + '…'}"


def unfaithful(sent: list[Message], received: list[Received], *, host: str) -> list[str]:
    """Every way the fake's requests differ from what the client sent (empty: none).

    Each sent request is paired with one the fake received with the same method and the
    rewritten target: one that matches exactly if there is one (clients send the same
    request on several connections at once, so arrival order proves nothing), else the
    first, whose differences are then reported."""
    unused = list(received)
    problems: list[str] = []
    for message in sent:
        key = (message.method, rewritten(message.target))
        candidates = [r for r in unused if (r.method, r.target) == key]
        if not candidates:
            problems.append(f"{message.start_line}: never reached the fake")
            continue
        found = [(differences(message, r, host=host), r) for r in candidates]
        found_differences, match = next((f for f in found if not f[0]), found[0])
        unused.remove(match)
        problems += [f"{message.start_line}: {d}" for d in found_differences]
    return problems
