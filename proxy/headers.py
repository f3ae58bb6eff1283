"""Header filtering for one hop: what is end-to-end passes, what is per-connection stays.

Headers are (name, value) pairs in wire order; names keep their case, repeats stay
repeats. Nothing here adds a header.
"""

from __future__ import annotations

from collections.abc import Iterable

Pairs = list[tuple[str, str]]

# RFC 9110 §7.6.1, plus Proxy-Authorization (meant for a proxy, never the origin).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Expect is answered by this hop (100 Continue) and never repeated upstream.
REQUEST_ONLY = frozenset({"expect"})


def connection_listed(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Names the sender declared hop-by-hop in its Connection header(s)."""
    return frozenset(
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    )


def end_to_end(
    pairs: Iterable[tuple[str, str]], *, request: bool, keep: frozenset[str] = frozenset()
) -> Pairs:
    """The pairs that travel to the next hop, in order, with case and repeats kept.

    Names in `keep` stay even when hop-by-hop (a WebSocket handshake's, renegotiated).
    """
    pairs = list(pairs)
    drop = HOP_BY_HOP | connection_listed(pairs)
    if request:
        drop |= REQUEST_ONLY
    drop -= keep
    return [(name, value) for name, value in pairs if name.lower() not in drop]


class HeaderNotUTF8Error(ValueError):
    """A header aiohttp's writer cannot reproduce byte for byte (it drops invalid UTF-8)."""

    def __init__(self, name: bytes) -> None:
        super().__init__(f"header {name.decode('ascii', 'replace')!r} is not valid UTF-8")


def decode(raw: Iterable[tuple[bytes, bytes]]) -> Pairs:
    """Wire bytes to text; raise HeaderNotUTF8Error rather than forward an altered header."""
    pairs: Pairs = []
    for name, value in raw:
        try:
            pairs.append((name.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise HeaderNotUTF8Error(name) from None
    return pairs


def decode_lossy(raw: Iterable[tuple[bytes, bytes]]) -> Pairs:
    """Wire bytes to text for showing (never for forwarding): bad bytes become U+FFFD."""
    return [(name.decode("latin-1"), value.decode("utf-8", "replace")) for name, value in raw]


def with_host(pairs: Pairs, host: str) -> Pairs:
    """One Host naming the upstream, where the client's first Host stood (else first)."""
    out: Pairs = []
    seen = False
    for name, value in pairs:
        if name.lower() != "host":
            out.append((name, value))
        elif not seen:
            out.append((name, host))
            seen = True
    if not seen:
        out.insert(0, ("Host", host))
    return out


def forwarded_request(pairs: Pairs, host: str) -> Pairs:
    """A request's headers as the upstream gets them: the end-to-end ones with Host set
    to the upstream's, and a chunked body still announced as chunked (last, where the
    client library puts its framing header). For showing what was sent (a capture)."""
    sent = with_host(end_to_end(pairs, request=True), host)
    codings = [value for name, value in pairs if name.lower() == "transfer-encoding"]
    if codings and codings[-1].strip().lower().endswith("chunked"):
        sent.append(("Transfer-Encoding", "chunked"))
    return sent
