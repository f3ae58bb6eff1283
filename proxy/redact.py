"""Redaction for anything logged, captured or shown: secrets never leave in clear.

The first line of defence is an allow-list of headers whose values may be shown; every
other value, and every credential-shaped string in any text, becomes a marker with a
short non-reversible fingerprint (`Bearer [redacted #3f9a1c]`), so two tokens can be
told apart without either being seen.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote

# Header values safe to show: they identify clients and exchanges, never a person or a
# credential. Anything not listed is redacted.
SHOWN = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "cf-cache-status",
        "cf-mitigated",
        "cf-ray",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "date",
        "etag",
        "expect",
        "host",
        "location",
        "openai-beta",
        "openai-processing-ms",
        "openai-version",
        "originator",
        "retry-after",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-version",
        "server",
        "session-id",
        "session_id",
        "thread-id",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "version",
        "x-client-request-id",
        "x-request-id",
    }
)
SHOWN_PREFIXES = ("x-codex-", "x-stainless-", "x-ratelimit-", "x-openai-")
# Always redacted, even under a shown prefix.
_SECRET_NAME = re.compile(
    r"authorization|cookie|account-id|token|key|secret|passw|session-token|jwt|credential|"
    r"^sec-websocket-key$|^sec-websocket-accept$",
    re.I,
)
# Query parameter names that may carry credentials.
_SECRET_PARAM = re.compile(r"token|key|secret|passw|auth|code|sig|session|cookie|jwt|bearer", re.I)
# A query parameter's value anywhere in a text, not already masked: found by its `=` (a
# literal the pattern engine finds fast), its name then read back to the `?` or `&`.
_PARAM_VALUE = re.compile(r"=(?!\[redacted #)[^&\s\"'#;\\=]+")
_PARAM_NAME = re.compile(r"[\w.~%-]{1,64}")
# Credentials recognisable by shape wherever they appear. After "Bearer" or "Basic", a
# credential has a digit, a capital or one of -_~+/= in it, or is long: an English word
# ("bearer tokens cross this port") is not one.
_SECRET_SHAPES = re.compile(
    r"(?P<scheme>(?i:bearer|basic)\s+)(?!\[redacted #)"
    r"(?P<cred>(?=[^\s\"',;]*[A-Z0-9_~+/=-])[^\s\"',;]+|[^\s\"',;]{16,})"
    r"|(?P<jwt>eyJ[\w-]{6,}\.[\w-]{6,}\.?[\w-]*)"
    r"|(?P<key>sk-[\w-]{12,})"
)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][\w-]*\s+)(?=\S)")
# Shorter header values ("1", "yes") would mask ordinary words in bodies.
_SHORTEST_SECRET = 6


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:6]


def marker(secret: str) -> str:
    return f"[redacted #{fingerprint(secret)}]"


@functools.lru_cache(maxsize=1024)
def shown(lowered: str) -> bool:
    """Whether a header's value may be shown (still shape-checked): on the allow-list and
    not named like a secret. Header names repeat; each is judged once."""
    return (lowered in SHOWN or lowered.startswith(SHOWN_PREFIXES)) and not _SECRET_NAME.search(
        lowered
    )


def header_value(name: str, value: str) -> str:
    """The value as it may be shown: allow-listed ones in clear (still shape-checked)."""
    lowered = name.lower()
    if shown(lowered):
        return redact_text(value)
    if not value:
        return value
    scheme = _SCHEME.match(value) if lowered in ("authorization", "proxy-authorization") else None
    if scheme:
        return scheme.group("scheme") + marker(value[scheme.end() :])
    return marker(value)


def headers(pairs: Iterable[tuple[str, str]], secrets: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Each header as it may be shown; a shown value holding one of the exchange's
    `secrets` (the account id in a request id) has it masked too."""
    return [(name, mask_known(header_value(name, value), secrets)) for name, value in pairs]


def secret_values(pairs: Iterable[tuple[str, str]], target: str = "") -> list[str]:
    """The secrets an exchange carries, to mask by value wherever else they turn up (a
    body, an event, a curl command): its headers' and its target's query parameters'."""
    found: set[str] = set()
    if "?" in target:
        for _, value in query_secrets(target):
            found.update((value, unquote(value)))
    for name, value in pairs:
        # What header_value would mask, without making the markers.
        lowered = name.lower()
        if not value or (shown(lowered) and redact_text(value) == value):
            continue
        found.add(value)
        scheme = _SCHEME.match(value)
        if scheme:
            found.add(value[scheme.end() :])
        if lowered in ("cookie", "set-cookie"):
            for crumb in value.split(";"):
                found.add(crumb.partition("=")[2].strip())
    return sorted(
        (secret for secret in found if len(secret) >= _SHORTEST_SECRET), key=len, reverse=True
    )


def mask_known(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, marker(secret))
    return text


def query_secrets(target: str) -> list[tuple[str, str]]:
    """The query parameters of a target named like credentials, with a value: name, value."""
    query = target.partition("?")[2]
    found = []
    for param in query.split("&") if query else ():
        name, equals, value = param.partition("=")
        if _secret_param(name, equals, value):
            found.append((name, value))
    return found


def redact_target(target: str) -> str:
    """The request target with credential-like query values masked."""
    path, mark, query = target.partition("?")
    if not query:
        return redact_text(target)
    params = []
    for param in query.split("&"):
        name, equals, value = param.partition("=")
        params.append(f"{name}={marker(value)}" if _secret_param(name, equals, value) else param)
    return redact_text(path + mark + "&".join(params))


def _secret_param(name: str, equals: str, value: str) -> bool:
    return bool(equals and value and _SECRET_PARAM.search(name))


def redact_text(text: str) -> str:
    """Mask bearer credentials, JWTs and API keys anywhere in a string."""
    if not text:
        return text
    # Every string logged passes here: a plain substring check first (~0.4 us) spares
    # the case-insensitive pattern (~3 us) for strings that cannot hold a secret.
    lowered = text.lower()
    if not ("bearer" in lowered or "basic" in lowered or "eyj" in lowered or "sk-" in lowered):
        return text
    return _SECRET_SHAPES.sub(_mask, text)


def redact_line(text: str) -> str:
    """A finished log line: credentials masked by shape (redact_text) and every query
    parameter named like a credential masked wherever it stands (a target an error
    repeats in its message), as redact_target masks it."""
    text = redact_text(text)
    if "=" not in text or ("?" not in text and "&" not in text):
        return text
    pieces: list[str] = []
    start = 0
    for found in _PARAM_VALUE.finditer(text):
        at = found.start()
        before = text[max(start, at - 65) : at]
        name = before[max(before.rfind("?"), before.rfind("&")) + 1 :]
        if len(name) < len(before) and _SECRET_PARAM.search(name) and _PARAM_NAME.fullmatch(name):
            pieces += (text[start : at + 1], marker(found.group(0)[1:]))
            start = found.end()
    return "".join((*pieces, text[start:])) if pieces else text


def _mask(found: re.Match[str]) -> str:
    if found.group("scheme"):
        return found.group("scheme") + marker(found.group("cred"))
    return marker(found.group(0))
