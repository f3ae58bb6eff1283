"""Header filtering for one hop, on the raw bytes: what is end-to-end passes, what is
per-connection stays.

Headers are (name, value) byte pairs in wire order; names keep their case, repeats stay
repeats, values their bytes. Nothing here adds a header the sender did not send, except
the one `Host` a request needs.
"""

from __future__ import annotations

from collections.abc import Iterable

Pairs = list[tuple[str, str]]
RawPairs = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1, plus Proxy-Authorization (meant for a proxy, never the origin).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Expect is answered by this hop (100 Continue) and never repeated upstream.
REQUEST_ONLY = frozenset({b"expect"})
# A WebSocket upgrade passes end to end: these hop-by-hop names carry it to the next hop.
UPGRADE = frozenset({b"connection", b"upgrade"})


def connection_listed(pairs: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Names the sender declared hop-by-hop in its Connection header(s), lower-cased."""
    return frozenset(
        token.strip().lower()
        for name, value in pairs
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    )


def end_to_end(
    pairs: RawPairs, *, request: bool, listed: frozenset[bytes] = frozenset()
) -> RawPairs:
    """The pairs that travel to the next hop, in order, with case and repeats kept.

    `listed`: the names the sender's Connection header declared hop-by-hop.
    """
    drop = HOP_BY_HOP | listed | REQUEST_ONLY if request else HOP_BY_HOP | listed
    return [(name, value) for name, value in pairs if name.lower() not in drop]


def first_invalid_utf8(pairs: RawPairs) -> bytes | None:
    """The name of the first header whose value is not valid UTF-8, if any: such a value
    is refused rather than relayed, as the proxy promised before it moved bytes itself."""
    for name, value in pairs:
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return name
    return None


def decode_lossy(raw: Iterable[tuple[bytes, bytes]]) -> Pairs:
    """Wire bytes to text for showing (never for forwarding): bad bytes become U+FFFD."""
    return [(name.decode("latin-1"), value.decode("utf-8", "replace")) for name, value in raw]
