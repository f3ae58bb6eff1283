"""An exchange's request as a curl command against the proxy, credentials as placeholders.

Every header the page would show redacted, or whose value holds one of the exchange's
secrets, becomes a shell variable (`$TOKEN` for the bearer credential, `$ACCOUNT_ID` for
the account, `$NAME` for any other), and so does every query parameter the log masks
(`?access_token=$ACCESS_TOKEN`), so the command can be shared as it is and run with
`TOKEN=… ACCOUNT_ID=…` set. The rest of the URL is masked as the log's `path` is. The
body goes as it was
sent, byte for byte (a compressed one through `base64 -d`), unless it holds a credential:
then it is left out and the command says why.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from proxy import redact
from proxy.capture import decode
from proxy.exchange import Body

_NAMED = {"authorization": "TOKEN", "chatgpt-account-id": "ACCOUNT_ID"}
# Framing and connection headers: curl writes its own for the command's own connection.
_OWN = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9]+")
_PLAIN = re.compile(r"[A-Za-z0-9_.,:/@%+=-]+")
_PRINTABLE = re.compile(r"[^\x00-\x08\x0b-\x1f\x7f]*")


def placeholder(name: str) -> str:
    return _NAMED.get(name.lower()) or _UNSAFE_NAME.sub("_", name).strip("_").upper() or "VALUE"


def quote(text: str) -> str:
    """One shell word, taken literally."""
    if _PLAIN.fullmatch(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


def _header(name: str, value: str, secrets: Sequence[str]) -> str:
    if redact.header_value(name, value) == value and redact.mask_known(value, secrets) == value:
        return f"-H {quote(f'{name}: {value}')}"
    variable = placeholder(name)
    scheme = ""
    if name.lower() == "authorization" and " " in value:
        scheme = value.split(" ", 1)[0] + " "
    # Double quotes let the shell put the variable in; nothing else in them is special.
    return f'-H "{_double(name)}: {_double(scheme)}${variable}"'


def _double(text: str) -> str:
    return re.sub(r'(["$`\\])', r"\\\1", text)


def _url(url: str, secrets: Sequence[str], taken: set[str]) -> str:
    """The URL as one shell word: each credential in its query a variable (one not
    `taken` by a header's), anything else shaped like one, or a known secret, masked."""

    def shown(text: str) -> str:
        return redact.mask_known(redact.redact_text(text), secrets)

    hidden = redact.query_secrets(url)
    if not hidden:
        return quote(shown(url))
    base, _, query = url.partition("?")
    params = []
    for param in query.split("&"):
        name, _, value = param.partition("=")
        if (name, value) not in hidden:
            params.append(_double(shown(param)))
            continue
        variable = placeholder(name)
        if variable in taken:
            variable += "_QUERY"
        params.append(f"{_double(shown(name))}=${variable}")
    return f'"{_double(shown(base))}?{"&".join(params)}"'


def command(
    *,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]],
    body: Body | None,
    encoding: str | None,
    secrets: Sequence[str],
) -> str:
    note = None
    pipe = ""
    data: list[str] = []
    if body is not None and body.size:
        if body.truncated:
            note = f"# the body ({body.size:,} bytes) was kept only in part: it is left out"
        else:
            decoded, problem = decode(body, encoding)
            text = decoded.decode("utf-8", "replace")
            if problem is not None or redact.mask_known(redact.redact_text(text), secrets) != text:
                note = "# the body held a credential (or could not be read): it is left out"
            elif not encoding and _PRINTABLE.fullmatch(text) and "\ufffd" not in text:
                data = ["--data-raw", quote(text)]
            else:
                encoded = base64.b64encode(bytes(body.data)).decode("ascii")
                pipe = f"printf %s {quote(encoded)} | base64 -d | "
                data = ["--data-binary", "@-"]
    first = ["curl", "-sS", "-N"]
    if method != "POST" or not data:
        first += ["-X", quote(method)]
    sent = [(name, value) for name, value in headers if name.lower() not in _OWN]
    first.append(_url(url, secrets, {placeholder(name) for name, _ in sent}))
    lines = [" ".join(first)]
    lines += [_header(name, value, secrets) for name, value in sent]
    if data:
        lines.append(" ".join(data))
    joined = pipe + " \\\n  ".join(lines)
    return f"{note}\n{joined}" if note else joined
