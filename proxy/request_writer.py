"""The request writer: one request on its way up, as the client framed it.

Phases: WAITING (no upstream connection yet: the head and what came of the body are
held), BODY (the head is out, the body goes on as it comes, one write per client read),
SENT (all of it is out). While what was sent stays small, a copy is kept, so that a
request whose kept-alive connection turns out closed before any byte of an answer can
be sent again on a fresh one.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.exchange import Body

# Bytes of a request kept to send again (its head and body): past this, no second try.
KEEP_LIMIT = 256 * 1024


class Sending(enum.Enum):
    WAITING = "waiting"
    BODY = "body"
    SENT = "sent"


# Enum members read through their class pay for a metaclass hook at every use; the hot
# path reads them from these module constants.
S_WAITING, S_BODY, S_SENT = (
    Sending.WAITING,
    Sending.BODY,
    Sending.SENT,
)


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def writelines(self, parts: list[bytes]) -> None: ...


class RequestWriter:
    __slots__ = (
        "_limit",
        "_pending",
        "_record",
        "_sent",
        "_sent_size",
        "complete",
        "held",
        "phase",
        "size",
    )

    def __init__(self, limit: int, record: Body | None = None) -> None:
        self.phase = S_WAITING
        # The body's content bytes so far, at most `limit`; a copy of them in `record`.
        self.size = 0
        self._limit = limit
        self._record = record
        # What is yet to be written, and its size.
        self._pending: list[bytes] = []
        self.held = 0
        # What was written, while it is small: to send again (None: too much to keep).
        self._sent: list[bytes] | None = []
        self._sent_size = 0
        # The client has sent the whole body.
        self.complete = False

    def begin(self, head: bytes) -> None:
        """The head goes first, before whatever of the body came while it waited its turn."""
        self._pending.insert(0, head)
        self.held += len(head)

    def add(self, raw: bytes, pieces: list[bytes]) -> bool:
        """Body bytes as the client framed them, and their content; False (and nothing
        more ever sent) once the content passes the limit."""
        size = self.size = self.size + (
            len(pieces[0]) if len(pieces) == 1 else sum(map(len, pieces))
        )
        if size > self._limit:
            self.drop()
            return False
        self._pending.append(raw)
        self.held += len(raw)
        record = self._record
        if record is not None:
            for piece in pieces:
                record.add(piece)
        return True

    def finish(self) -> None:
        self.complete = True

    def drop(self) -> None:
        """Nothing more goes up (the request was refused, or is too large)."""
        self._pending = []
        self._sent = None

    def send(self, sink: Sink) -> bool:
        """Write what is pending; True when that sent the last of the request."""
        pending = self._pending
        if pending:
            if len(pending) == 1:
                sink.write(pending[0])
            else:
                # One write of several buffers (the loop gathers them into one send).
                sink.writelines(pending)
            sent = self._sent
            if sent is not None:
                self._sent_size += self.held
                if self._sent_size <= KEEP_LIMIT:
                    sent += pending
                else:
                    self._sent = None
            self._pending = []
            self.held = 0
        phase = self.phase
        if self.complete and phase is not S_SENT:
            self.phase = S_SENT
            return True
        if phase is S_WAITING:
            self.phase = S_BODY
        return False

    @property
    def replayable(self) -> bool:
        """Everything sent so far is kept: it can all be sent again."""
        return self._sent is not None

    def rewind(self) -> None:
        """Send it all again, on a fresh connection."""
        assert self._sent is not None
        self._pending = [*self._sent, *self._pending]
        self.held = self._sent_size + self.held
        self._sent = []
        self._sent_size = 0
        self.phase = S_WAITING
