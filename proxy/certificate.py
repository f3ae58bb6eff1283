"""Who a certificate says it is: its subject and issuer, read from DER, for a log line that
tells a person which certificate their network put in the way.

The standard library hands over a certificate it did not verify only as DER bytes;
this reads just enough of X.509 (RFC 5280 §4.1) to name the subject and the issuer.
"""

from __future__ import annotations

_SEQUENCE = 0x30
_SET = 0x31
_OID = 0x06
_NAMES = {
    bytes((0x55, 0x04, 0x03)): "CN",
    bytes((0x55, 0x04, 0x0A)): "O",
    bytes((0x55, 0x04, 0x0B)): "OU",
}


def _read(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`."""
    tag = data[at]
    length = data[at + 1]
    at += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[at : at + size], "big")
        at += size
    if at + length > len(data):
        raise ValueError("truncated")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _read(data, start)
        found.append(element)
        start = element[2]
    return found


def _name(data: bytes, start: int, end: int) -> str:
    parts = []
    for tag, set_start, set_end in _children(data, start, end):
        if tag != _SET:
            continue
        for _, pair_start, pair_end in _children(data, set_start, set_end):
            pair = _children(data, pair_start, pair_end)
            if len(pair) != 2 or pair[0][0] != _OID:
                continue
            label = _NAMES.get(data[pair[0][1] : pair[0][2]])
            if label is not None:
                text = data[pair[1][1] : pair[1][2]].decode("utf-8", "replace")
                parts.append(f"{label}={text}")
    return ", ".join(parts) or "no name"


def describe(der: bytes) -> str:
    """`subject CN=…, O=…; issuer CN=…`, or what could not be read."""
    try:
        tag, start, end = _read(der, 0)
        if tag != _SEQUENCE:
            return "a certificate that could not be read"
        tag, start, end = _read(der, start)  # tbsCertificate
        fields = _children(der, start, end)
        if fields and fields[0][0] == 0xA0:  # an explicit version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        issuer, subject = fields[2], fields[4]
        return (
            f"subject {_name(der, subject[1], subject[2])}; "
            f"issuer {_name(der, issuer[1], issuer[2])}"
        )
    except (IndexError, ValueError):
        return "a certificate that could not be read"
