"""Redaction for anything logged: secrets never reach a log line.

The first line of defence is what callers choose to log; these functions are the second.
"""

from __future__ import annotations

import re

MASK = "[redacted]"

# Query parameter names that may carry credentials.
_SECRET_NAME = re.compile(r"token|key|secret|passw|auth|code|sig|session|cookie|jwt|bearer", re.I)
# Credentials recognisable by shape wherever they appear in a logged string.
_SECRET_SHAPES = re.compile(
    r"(?i:(bearer|basic)\s+)[^\s\"',;]+"  # an Authorization value
    r"|eyJ[\w-]{6,}\.[\w-]{6,}\.?[\w-]*"  # a JWT
    r"|sk-[\w-]{12,}"  # an OpenAI API key
)


def redact_target(target: str) -> str:
    """The request target with the values of credential-like query parameters masked."""
    path, mark, query = target.partition("?")
    if not query:
        return target
    params = []
    for param in query.split("&"):
        name, equals, value = param.partition("=")
        params.append(f"{name}={MASK}" if equals and value and _SECRET_NAME.search(name) else param)
    return path + mark + "&".join(params)


def redact_text(text: str) -> str:
    """Mask bearer tokens, JWTs and API keys anywhere in a string."""
    return _SECRET_SHAPES.sub(lambda m: (m.group(1) + " " if m.group(1) else "") + MASK, text)
