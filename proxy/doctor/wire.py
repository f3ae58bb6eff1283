"""The doctor's own HTTP/1.1 over an open connection: one request, `Connection: close`,
the answer read within a time and a size bound. It never sends a credential."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy import __version__
from proxy.redact import redact_text

LIMIT = 64 * 1024  # bytes of an answer kept: enough for its head and a readable excerpt
USER_AGENT = f"codex-path-proxy-doctor/{__version__}"


class NoAnswerError(Exception):
    """The far side closed or went silent before sending a status line and headers."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    @property
    def media_type(self) -> str:
        return self.header("Content-Type").split(";")[0].strip().lower()

    @property
    def summary(self) -> str:
        return f"{self.status} {self.media_type or 'without a Content-Type'}"

    def excerpt(self, size: int = 100) -> str:
        text = " ".join(self.body[: size * 4].decode("utf-8", "replace").split())
        text = redact_text(text)
        return text if len(text) <= size else text[: size - 1] + "…"


def reason(exc: BaseException) -> str:
    """A network error in a few words."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def request(method: str, target: str, host: str, *, body: bytes = b"") -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host}",
        f"User-Agent: {USER_AGENT}",
        "Accept: application/json",
        "Connection: close",
    ]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


async def exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data: bytes,
    *,
    timeout: float,  # noqa: ASYNC109 - a stream still open at the bound counts with what came
) -> Answer:
    """Send one request; read its answer until the far side closes, the body is complete
    or LIMIT bytes have come; a stream still open at `timeout` counts with what came."""
    writer.write(data)
    await writer.drain()
    received = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while len(received) < LIMIT and not _complete(received):
                chunk = await reader.read(LIMIT - len(received))
                if not chunk:
                    break
                received += chunk
    except TimeoutError:
        if b"\r\n\r\n" not in received:
            raise NoAnswerError(f"no answer within {timeout:g} s") from None
    except ConnectionError as exc:
        raise NoAnswerError(f"the connection broke: {exc.strerror or type(exc).__name__}") from None
    return parse(bytes(received))


def _complete(received: bytearray) -> bool:
    head, found, body = bytes(received).partition(b"\r\n\r\n")
    if not found:
        return False
    length = next(
        (
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    if length is not None and length.isdigit():
        return len(body) >= int(length)
    return body.endswith(b"0\r\n\r\n")


def parse(raw: bytes) -> Answer:
    head, found, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if not found or len(status_line) < 2 or not status_line[1].isdigit():
        raise NoAnswerError(
            "the answer is not HTTP" if raw else "the connection closed without an answer"
        )
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    answer = Answer(
        int(status_line[1]), status_line[2] if len(status_line) > 2 else "", headers, body
    )
    if answer.header("Transfer-Encoding").lower() == "chunked":
        return Answer(answer.status, answer.reason, headers, _dechunk(body))
    return answer


def _dechunk(body: bytes) -> bytes:
    """As much of a chunked body as arrived (the excerpt needs only its start)."""
    out = bytearray()
    while body:
        size_line, found, body = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if not found or size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
    return bytes(out)
