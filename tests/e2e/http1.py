"""HTTP/1.1 messages read back from the bytes a relay recorded on one connection.

Requests are framed by Content-Length or chunked coding (de-chunked here); responses also
by the end of the connection. Interim 1xx responses are skipped; after a request answered
101 the connection carries WebSocket frames, so reading stops there.
"""

from __future__ import annotations

from dataclasses import dataclass

Pairs = list[tuple[str, str]]


def header_value(pairs: Pairs, name: str) -> str | None:
    """The first value of a header, its name matched case-insensitively."""
    return next((v for k, v in pairs if k.lower() == name.lower()), None)


class IncompleteError(Exception):
    """The recorded bytes end inside a message."""


@dataclass(slots=True, frozen=True)
class Message:
    start_line: str
    headers: Pairs
    body: bytes

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

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


def read_message(data: bytes, pos: int, *, response: bool) -> tuple[Message, int]:
    start_line, headers, pos = read_head(data, pos)
    head = Message(start_line, headers, b"")
    if response and (head.status < 200 or head.status in (204, 304)):
        return head, pos  # these carry no body (and after a 101 come WebSocket frames)
    body, pos = read_body(data, pos, head, until_close=response)
    return Message(start_line, headers, body), pos


def read_responses(data: bytes) -> list[Message]:
    """The final responses in order (interim ones skipped), up to and including a 101."""
    responses: list[Message] = []
    pos = 0
    while pos < len(data):
        try:
            message, pos = read_message(data, pos, response=True)
        except IncompleteError:
            break
        if message.status == 101:
            return [*responses, message]
        if message.status >= 200:
            responses.append(message)
    return responses


def read_requests(sent: bytes, received: bytes) -> list[Message]:
    """The requests a client sent on one connection, in order (none after an upgrade)."""
    answers = read_responses(received)
    requests: list[Message] = []
    pos = 0
    while pos < len(sent):
        try:
            message, pos = read_message(sent, pos, response=False)
        except IncompleteError:
            break
        requests.append(message)
        if len(requests) <= len(answers) and answers[len(requests) - 1].status == 101:
            break
    return requests
