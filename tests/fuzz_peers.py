"""The two peers of the stateful fuzz (test_fuzz.py), and the count of what is open.

`Upstream` is a raw asyncio server that reads each request the proxy forwards with h11
(python-hyper's HTTP/1.1 state machine, an independent reading of the bytes) and answers
as the request's marker says in the `Book`. `Client` is one client connection whose
answers are read, one h11 client connection per answer, so pipelined answers are
told apart by an independent model too. `census` counts the process's sockets by the
kernel's own tables (/proc/self/fd and /proc/net/tcp), not by the proxy's objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from proxy.flow import reset_connection
from tests.fuzz_shapes import (
    IDEMPOTENT,
    MARKER_PATTERN,
    Fault,
    Junk,
    Reply,
    Wire,
    reply_wire,
)

MARKERS = re.compile(MARKER_PATTERN)
_TARGET = re.compile(rb"/fz/(" + MARKER_PATTERN + rb")")


@dataclass(slots=True)
class Entry:
    """What the upstream must receive for one marker, and how it answers."""

    method: bytes
    content: bytes = b""
    trailers: tuple[tuple[bytes, bytes], ...] = ()
    chunked: bool = False
    reply: Reply = field(default_factory=Reply)
    junk: Junk | None = None


@dataclass(slots=True)
class Arrival:
    """One request as it reached the upstream."""

    link: int
    reused: bool  # not the first request on its connection
    faulted: bool  # the reply's fault was played on it
    complete: bool = False  # its whole body arrived
    sent: int = 0  # bytes of the reply written


class Book:
    """Every marker handed out, and what each arrival of one was."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.arrivals: defaultdict[bytes, list[Arrival]] = defaultdict(list)


# --- The upstream.


class _Incoming:
    """Requests read off one connection with h11, one h11 connection per request (the
    bytes after one request's end start the next)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.parser = h11.Connection(h11.SERVER)
        self.eof = False

    def next_request(self) -> None:
        rest, _ = self.parser.trailing_data
        self.parser = h11.Connection(h11.SERVER)
        if rest:
            self.parser.receive_data(rest)

    @property
    def idle(self) -> bool:
        return self.parser.their_state is h11.IDLE and not self.parser.trailing_data[0]

    async def event(self) -> object:
        while True:
            event = self.parser.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(1 << 16)
            self.eof = not data
            self.parser.receive_data(data)


class _GoneError(Exception):
    """The proxy closed the connection (or reset it) mid-request: nothing to answer."""


@dataclass(eq=False)
class _Link:
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    incoming: _Incoming
    served: int = 0
    waiting: bool = False  # idle, waiting for the next request's first byte
    junked: bool = False  # its last reply had bytes after it
    task: asyncio.Task[Any] | None = None


class Upstream:
    """The scripted origin on 127.0.0.1."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.server: asyncio.Server | None = None
        self.links: set[_Link] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.errors: list[str] = []
        self.stop = asyncio.Event()
        self._ids = itertools.count()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def drop_idle(self, *, reset: bool) -> set[int]:
        """Close every connection waiting for its next request, as an upstream that
        forgets idle connections does; the ports of the proxy's ends of them."""
        dropped = [link for link in self.links if link.waiting and link.incoming.idle]
        ports = {link.writer.get_extra_info("peername")[1] for link in dropped}
        for link in dropped:
            _hang_up(link.writer, reset=reset)
        # Their handlers end once the sockets are closed: the close is out by then.
        tasks = [link.task for link in dropped if link.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        return ports

    async def close(self) -> None:
        self.stop.set()
        for link in list(self.links):
            link.writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.tasks:
            async with asyncio.timeout(5):
                await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        link = _Link(next(self._ids), reader, writer, _Incoming(reader), task=task)
        self.links.add(link)
        try:
            while await self._exchange(link):
                link.incoming.next_request()
        except (_GoneError, ConnectionError):
            pass
        except h11.RemoteProtocolError as exc:
            if not link.incoming.eof:
                self.errors.append(f"the proxy sent the upstream bytes h11 refuses: {exc}")
        finally:
            self.links.discard(link)
            writer.close()
            self.tasks.discard(task)

    async def _exchange(self, link: _Link) -> bool:
        """One request and its reply; False when the connection is done."""
        arrived = await self._arrive(link)
        if arrived is None:
            return False
        marker, entry, arrival = arrived
        if entry.junk is not None:
            if not entry.junk.reaches:
                self.errors.append(f"refusable bytes ({entry.junk.name}) reached the upstream")
            await self._read_body(link, marker, entry, arrival)
            return False
        reply = entry.reply.effective(entry.method)
        fault = reply.fault if arrival.faulted else Fault.NONE
        if fault in (Fault.CLOSE_BEFORE, Fault.RESET_BEFORE):
            _hang_up(link.writer, reset=fault is Fault.RESET_BEFORE)
            return False
        wire = reply_wire(marker, reply if arrival.faulted else reply.without_fault(), entry.method)
        if fault is Fault.STALL_413:
            await self._send(link, wire.data, reply.splits, arrival)
            await self.stop.wait()  # the body is never read; the proxy must let go
            return False
        if reply.early:
            await self._reply(link, wire, reply, fault, arrival)
            await self._read_body(link, marker, entry, arrival)
        else:
            await self._read_body(link, marker, entry, arrival)
            await self._reply(link, wire, reply, fault, arrival)
        link.junked = fault is Fault.JUNK_AFTER
        if fault not in (Fault.NONE, Fault.JUNK_AFTER) or reply.close:
            link.writer.close()
            return False
        return True

    async def _arrive(self, link: _Link) -> tuple[bytes, Entry, Arrival] | None:
        """The next request's head, checked and recorded; None once the connection ends."""
        link.waiting = True
        event = await link.incoming.event()
        link.waiting = False
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        if link.junked:
            self.errors.append("a connection whose last answer had junk after it was used again")
        found = _TARGET.fullmatch(event.target)
        entry = self.book.entries.get(found.group(1)) if found else None
        if found is None or entry is None:
            self.errors.append(f"a request nobody sent reached the upstream: {event!r}")
            return None
        marker = found.group(1)
        arrivals = self.book.arrivals[marker]
        if arrivals and not self._may_repeat(entry, arrivals):
            self.errors.append(f"{marker.decode()} reached the upstream twice: {arrivals}")
        arrival = Arrival(link.index, reused=link.served > 0, faulted=not arrivals)
        arrivals.append(arrival)
        link.served += 1
        self._check_head(marker, entry, event)
        return marker, entry, arrival

    def _may_repeat(self, entry: Entry, arrivals: list[Arrival]) -> bool:
        """A request may come twice: sent again on a fresh connection after a reused one
        closed before any byte of an answer (and only then)."""
        if len(arrivals) != 1 or entry.method not in IDEMPOTENT:
            return False
        return arrivals[0].reused and arrivals[0].faulted and entry.reply.fault in _BEFORE

    def _check_head(self, marker: bytes, entry: Entry, request: h11.Request) -> None:
        names = [name for name, _ in request.headers]
        if request.method != entry.method:
            self.errors.append(f"{marker.decode()}: method {request.method!r} upstream")
        if [v for n, v in request.headers if n == b"x-marker"] != [marker] and entry.junk is None:
            self.errors.append(f"{marker.decode()}: X-Marker upstream is not its own")
        for banned in (b"expect", b"connection", b"keep-alive"):
            if banned in names:
                self.errors.append(f"{marker.decode()}: {banned.decode()} went upstream")
        chunked = (b"transfer-encoding", b"chunked") in request.headers
        if chunked != entry.chunked and entry.junk is None:
            self.errors.append(f"{marker.decode()}: the body's framing changed upstream")

    async def _read_body(self, link: _Link, marker: bytes, entry: Entry, arrival: Arrival) -> None:
        body = bytearray()
        while True:
            try:
                event = await link.incoming.event()
            except h11.RemoteProtocolError:
                if link.incoming.eof:
                    raise _GoneError from None
                raise
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise _GoneError
        arrival.complete = True
        if entry.junk is not None:
            self.errors.append(f"a malformed body ({entry.junk.name}) reached the upstream whole")
            return
        if bytes(body) != entry.content:
            self.errors.append(
                f"{marker.decode()}: the upstream got a body of {len(body)} bytes, not the "
                f"{len(entry.content)} sent: {bytes(body[:80])!r}..."
            )
        trailers = tuple((n, v) for n, v in event.headers)
        if trailers != entry.trailers:
            self.errors.append(
                f"{marker.decode()}: trailers {trailers} upstream, sent {entry.trailers}"
            )

    async def _reply(
        self, link: _Link, wire: Wire, reply: Reply, fault: Fault, arrival: Arrival
    ) -> None:
        if fault is Fault.SILENT:
            await _until_closed(link)
            return
        data = wire.data
        if fault in (Fault.CUT, Fault.RESET, Fault.SILENT_MID):
            data = data[: len(data) * reply.cut // 1000]
        elif fault is Fault.JUNK_AFTER:
            data += b"HTTP/1.1 200 OK\r\nX-Marker: MK99999999\r\nContent-Length: 0\r\n\r\n"
        await self._send(link, data, reply.splits, arrival)
        if fault in (Fault.CUT, Fault.RESET):
            _hang_up(link.writer, reset=fault is Fault.RESET)
            raise _GoneError
        if fault is Fault.SILENT_MID:
            await _until_closed(link)

    async def _send(
        self, link: _Link, data: bytes, splits: tuple[int, ...], arrival: Arrival
    ) -> None:
        """Write in pieces, each let out before the next (so reads fall apart)."""
        cuts = [0, *(len(data) * s // 1000 for s in splits), len(data)]
        for start, stop in itertools.pairwise(cuts):
            if start >= stop:
                continue
            link.writer.write(data[start:stop])
            arrival.sent += stop - start
            await link.writer.drain()
            await asyncio.sleep(0)


_BEFORE = frozenset({Fault.CLOSE_BEFORE, Fault.RESET_BEFORE, Fault.CUT, Fault.RESET})


async def _until_closed(link: _Link) -> None:
    """Say nothing until the proxy lets the connection go."""
    with contextlib.suppress(ConnectionError):
        while await link.reader.read(1 << 16):
            pass
    raise _GoneError


def _hang_up(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    if reset:
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        reset_connection(transport)
    else:
        writer.close()


# --- The client.


@dataclass(slots=True)
class Seen:
    """What the client read of one answer."""

    interims: list[tuple[int, list[tuple[bytes, bytes]]]] = field(default_factory=list)
    status: int | None = None
    version: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    complete: bool = False

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    def markers(self) -> set[bytes]:
        """Every marker anywhere in the answer."""
        found: set[bytes] = set()
        for _, headers in self.interims:
            for _, value in headers:
                found.update(MARKERS.findall(value))
        for _, value in [*self.headers, *self.trailers]:
            found.update(MARKERS.findall(value))
        found.update(MARKERS.findall(self.body))
        return found

    @property
    def ends_connection(self) -> bool:
        """The answer says the connection ends with it."""
        tokens = b",".join(self.header(b"connection")).lower()
        if b"close" in tokens:
            return True
        return self.version == b"1.0" and b"keep-alive" not in tokens


class Client(asyncio.Protocol):
    """One client connection; its answers are read as they come."""

    def __init__(self, methods: list[bytes], note: Callable[[str], None]) -> None:
        # The method of each request on the connection, in order (HEAD has no body).
        self.methods = methods
        self.note = note
        self.port = 0
        self.transport: asyncio.Transport | None = None
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        self.ended = False  # the proxy closed (or reset) the connection
        self.reset = False
        # When the last answer was complete, by the loop's clock.
        self.answered_at = 0.0
        self.changed = asyncio.Event()
        self._parser: h11.Connection | None = None
        self._rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def data_received(self, data: bytes) -> None:
        self.note(f"read {len(data)} bytes: {data[:60]!r}")
        self._rest += data
        self._pump()
        self.changed.set()

    def eof_received(self) -> bool:
        self._end(reset=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended:
            self._end(reset=exc is not None)

    def _end(self, *, reset: bool) -> None:
        self.note("the proxy reset the connection" if reset else "the proxy closed the connection")
        self.ended = True
        self.reset = reset
        self._pump(eof=True)
        self.changed.set()

    def _pump(self, *, eof: bool = False) -> None:
        while True:
            if self._parser is None:
                if not self._rest:
                    return
                start = self._rest[:5]
                if not b"HTTP/".startswith(start):
                    # An answer's end was misplaced: the bytes after it are not an answer.
                    after = (
                        f"after the answer to a {self.methods[len(self.seen) - 1].decode()}"
                        if self.seen
                        else "opening the connection"
                    )
                    self.errors.append(f"bytes {after} begin no answer: {self._rest[:200]!r}")
                    self._rest = b""
                    return
                if len(self.seen) >= len(self.methods):
                    self.errors.append(f"bytes no request asked for: {self._rest[:200]!r}")
                    self._rest = b""
                    return
                method = self.methods[len(self.seen)]
                self._parser = _expecting(b"HEAD" if method == b"HEAD" else b"GET")
                self.seen.append(Seen())
            parser, seen = self._parser, self.seen[-1]
            if self._rest:
                parser.receive_data(self._rest)
                self._rest = b""
            if eof:
                parser.receive_data(b"")
            if not self._events(parser, seen, eof=eof):
                return
            self._rest = parser.trailing_data[0]
            self._parser = None

    def _events(self, parser: h11.Connection, seen: Seen, *, eof: bool) -> bool:
        """Read what h11 can of one answer; True once it is complete."""
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                if not eof:
                    self.errors.append(f"the client got bytes h11 refuses: {exc}")
                self._parser = None
                self._rest = b""
                return False
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.InformationalResponse):
                seen.interims.append((event.status_code, list(event.headers)))
            elif isinstance(event, h11.Response):
                seen.status, seen.version = event.status_code, event.http_version
                seen.headers = list(event.headers)
                if seen.header(b"content-length") and seen.header(b"transfer-encoding"):
                    self.errors.append("an answer with both Content-Length and Transfer-Encoding")
            elif isinstance(event, h11.Data):
                seen.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                seen.trailers = list(event.headers)
                # A body delimited by the close is whole only if the close was clean.
                seen.complete = not (eof and self.reset)
                self.answered_at = asyncio.get_running_loop().time()
                return True
            else:
                return False


def _expecting(method: bytes) -> h11.Connection:
    """An h11 client connection that has sent a request with this method (h11 needs
    only to know whether it was HEAD, and writes only HTTP/1.1)."""
    parser = h11.Connection(h11.CLIENT)
    parser.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    parser.send(h11.EndOfMessage())
    return parser


# --- What is open.


@dataclass(frozen=True, slots=True)
class Census:
    fds: int
    # Sockets by role, as (local port, remote port): the proxy's side of client
    # connections, the proxy's connections to the upstream, and the clients' ends.
    accepted: tuple[tuple[int, int], ...]
    outgoing: tuple[tuple[int, int], ...]
    clients: tuple[tuple[int, int], ...]


def census(proxy_port: int, upstream_port: int) -> Census:
    """The process's open descriptors, and its TCP sockets by role (by inode, from the
    kernel's table)."""
    inodes: list[int] = []
    fds = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            fds += 1
            if target.startswith("socket:["):
                inodes.append(int(target[8:-1]))
    table: dict[int, tuple[int, int, int]] = {}
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines()[1:]:
                cols = line.split()
                table[int(cols[9])] = (_port(cols[1]), _port(cols[2]), int(cols[3], 16))
    listen = 0x0A
    accepted, outgoing, clients = [], [], []
    for inode in inodes:
        if inode not in table:
            continue
        local, remote, state = table[inode]
        if state == listen:
            continue
        if local == proxy_port:
            accepted.append((local, remote))
        elif remote == upstream_port:
            outgoing.append((local, remote))
        elif remote == proxy_port:
            clients.append((local, remote))
    return Census(fds, tuple(sorted(accepted)), tuple(sorted(outgoing)), tuple(sorted(clients)))


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def settled_rss() -> int:
    """Resident memory, in bytes, once garbage is collected and the C allocator has given
    back the free memory it keeps (glibc's malloc_trim): what is still in use, not what
    fragmentation has left behind."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")
