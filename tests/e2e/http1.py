"""HTTP/1.1 messages read back from the bytes a relay recorded on one connection.

Requests are framed by Content-Length or chunked coding (de-chunked here); responses also
by the end of the connection. Interim 1xx responses are skipped; after a request answered
101 the connection carries WebSocket frames, so reading stops there.
"""

from __future__ import annotations

from dataclasses import dataclass

Pairs = list[tuple[str, str]]


class IncompleteError(Exception):
    """The recorded bytes end inside a message."""


@dataclass(slots=True, frozen=True)
class Message:
    start_line: str
    headers: Pairs
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        return self.start_line.split(" ", 2)[1]

    @property
    def status(self) -> int:
        return int(self.start_line.split(" ", 2)[1])


def read_head(data: bytes, pos: int) -> tuple[str, Pairs, int]:
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        raise IncompleteError
    start_line, *lines = data[pos:end].decode("latin-1").split("\r\n")
    headers = [(name, value.strip(" \t")) for name, _, value in (ln.partition(":") for ln in lines)]
    return start_line, headers, end + 4


def read_chunked(data: bytes, pos: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise IncompleteError
        size = int(data[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            break
        if len(data) < pos + size + 2:
            raise IncompleteError
        body += data[pos : pos + size]
        pos += size + 2
    while True:  # trailer fields, up to an empty line
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise IncompleteError
        empty, pos = eol == pos, eol + 2
        if empty:
            return bytes(body), pos


def read_body(data: bytes, pos: int, message: Message, *, until_close: bool) -> tuple[bytes, int]:
    if "chunked" in (message.header("transfer-encoding") or "").lower():
        return read_chunked(data, pos)
    length = message.header("content-length")
    if length is not None:
        end = pos + int(length)
        if len(data) < end:
            raise IncompleteError
        return data[pos:end], end
    if until_close:
        return data[pos:], len(data)
    return b"", pos


def read_responses(data: bytes) -> list[Message]:
    """The final responses in order, up to and including a 101."""
    responses: list[Message] = []
    pos = 0
    while pos < len(data):
        try:
            start_line, headers, pos = read_head(data, pos)
            head = Message(start_line, headers, b"")
            if head.status == 101:
                return [*responses, head]
            if head.status < 200:
                continue
            body = b""
            if head.status not in (204, 304):
                body, pos = read_body(data, pos, head, until_close=True)
        except IncompleteError:
            break
        responses.append(Message(start_line, headers, body))
    return responses


def read_requests(sent: bytes, received: bytes) -> list[Message]:
    """The requests a client sent on one connection, in order (none after an upgrade)."""
    answers = read_responses(received)
    requests: list[Message] = []
    pos = 0
    while pos < len(sent):
        try:
            start_line, headers, pos = read_head(sent, pos)
            head = Message(start_line, headers, b"")
            body, pos = read_body(sent, pos, head, until_close=False)
        except IncompleteError:
            break
        requests.append(Message(start_line, headers, body))
        if len(requests) <= len(answers) and answers[len(requests) - 1].status == 101:
            break
    return requests
