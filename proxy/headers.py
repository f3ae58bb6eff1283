"""Header filtering for one hop, on the raw bytes: what is end-to-end passes, what is
per-connection stays. The one place that decides it, for request, interim, final and
101 heads alike.

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
# A chunked request body goes up as the client framed it: its own header says so.
TRANSFER_ENCODING = frozenset({b"transfer-encoding"})


def tokens(value: bytes) -> frozenset[bytes]:
    """The comma-separated tokens of a field value, lower-cased."""
    return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())


def hop_by_hop(
    listed: frozenset[bytes] = frozenset(), *, keep: frozenset[bytes] = frozenset()
) -> frozenset[bytes]:
    """The names that stay at this hop: the fixed set and every name the sender's
    Connection header listed (`listed`), less those this hop carries on (`keep`)."""
    drop = HOP_BY_HOP | listed if listed else HOP_BY_HOP
    return drop - keep if keep else drop


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
