"""The model the stateful fuzz (test_fuzz.py) runs: one run's proxy (the in-process one of
conftest's `start_proxy`, with small limits and timeouts), its scripted upstream and up
to three client connections, and what each rule does to them, in the test's event loop.

A request is written in pieces as the rules say; its outcome is read by the client and
judged by fuzz_verdict.py once it has one. Waiting is on events (what a client reads);
where only the kernel can say (a socket closed), its tables are polled, boundedly.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from proxy.connection import ClientConnection
from proxy.control import ControlRequest
from proxy.deadlines import interval_for
from proxy.flow import reset_connection
from proxy.framing import Message
from proxy.relay import Relay
from proxy.request_writer import RequestWriter
from proxy.response_reader import ResponseReader
from proxy.upstream import UpstreamConnection
from tests.fuzz_peers import Book, Census, Client, Entry, Upstream, census
from tests.fuzz_shapes import Ask, Framing, Junk, request_bytes
from tests.fuzz_verdict import Item, ends, hygiene, verdicts
from tests.harness import RunningProxy, StartProxy

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
KEEPALIVE_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
MAX_BODY = 300_000
MAX_HEADER = 2048
LIMITS: dict[str, Any] = {
    "header_timeout": HEADER_TIMEOUT,
    "body_timeout": BODY_TIMEOUT,
    "keepalive_timeout": KEEPALIVE_TIMEOUT,
    "max_body_size": MAX_BODY,
    "max_header_size": MAX_HEADER,
}
UPSTREAM: dict[str, Any] = {"idle_timeout": IDLE_TIMEOUT, "connect_timeout": 2.0}
# The proxy's deadline timer sweeps this often: a timeout fires at most this late.
SWEEP = interval_for(HEADER_TIMEOUT, BODY_TIMEOUT, KEEPALIVE_TIMEOUT, IDLE_TIMEOUT)
# Room for a loaded CI machine.
SLACK = 1.0
# Once a request is first in line, its answer, error or cut comes within this.
ANSWER_BOUND = IDLE_TIMEOUT + BODY_TIMEOUT + HEADER_TIMEOUT + 4 * SWEEP + SLACK
# A gap this close to a client timeout may have let it fire.
TIMEOUT_MARGIN = 0.15
# The objects one exchange makes on the forwarding path: none may outlive its proxy.
_PATH_TYPES = (
    ClientConnection,
    ControlRequest,
    Message,
    Relay,
    RequestWriter,
    ResponseReader,
    UpstreamConnection,
)


@dataclass(eq=False)
class Conn:
    """One client connection of the model: its requests, the first `len(started)` of
    them written (at least in part), and the socket once one is open."""

    items: list[Item] = field(default_factory=list)
    client: Client | None = None
    methods: list[bytes] = field(default_factory=list)
    aborted: bool = False
    paused: bool = False
    # The client stopped reading while an answer was on its way: the proxy may have
    # finished it (and started its keep-alive clock) long before the client read it.
    paused_in_flight: bool = False
    # What happened on it, by the loop's clock: shown when a verdict fails.
    trace: list[str] = field(default_factory=list)

    def note(self, event: str) -> None:
        self.trace.append(f"{asyncio.get_running_loop().time():.3f} {event}")

    def position(self) -> str:
        """Where writing stands: the item being written and how far."""
        for item in self.items:
            if not item.whole:
                return f"{item.marker.decode()} {item.written}/{len(item.data)}"
        return "the end"

    @property
    def started(self) -> list[Item]:
        return [item for item in self.items if item.written]

    @property
    def unwritten(self) -> int:
        return sum(len(item.data) - item.written for item in self.items)

    @property
    def ended(self) -> bool:
        return self.aborted or (self.client is not None and self.client.ended)

    def resolved(self) -> int:
        """How many of the written requests have their outcome."""
        started = self.started
        client = self.client
        if client is None or client.ended:
            return len(started)
        count = 0
        for index, item in enumerate(started):
            seen = client.seen[index] if index < len(client.seen) else None
            if seen is None or not seen.complete:
                break
            count += 1
            if ends(seen, item):
                break  # the rest get nothing: resolved only once the connection ends
        return count


class World:
    """One example: a proxy, its scripted upstream, three client slots, in the test's loop."""

    def __init__(self, start_proxy: StartProxy, run: int) -> None:
        self.start_proxy = start_proxy
        self.run = run
        self.loop = asyncio.get_running_loop()
        self.book = Book()
        self.upstream = Upstream(self.book)
        self.proxy: RunningProxy | None = None
        self.conns = [Conn(), Conn(), Conn()]
        self.retired: list[Conn] = []
        self.markers = 0
        self.fds = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        self.fds = census(0, 0).fds
        self.tasks = _tasks()
        await self.upstream.start()
        self.proxy = await self.start_proxy(
            f"http://127.0.0.1:{self.upstream.port}", limits=LIMITS, upstream=UPSTREAM
        )

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    def marker(self) -> bytes:
        self.markers += 1
        # Unique within the run (each run has its own proxy and upstream), and mostly
        # across runs too.
        return b"MK%08d" % (self.run % 100_000 * 1000 + self.markers % 1000)

    # --- Queueing.

    def queue_ask(self, slot: int, ask: Ask) -> None:
        marker = self.marker()
        sent = request_bytes(marker, ask)
        self.book.entries[marker] = Entry(
            method=ask.method,
            content=sent.content,
            trailers=sent.trailers,
            chunked=ask.framing is Framing.CHUNKED,
            reply=ask.reply,
        )
        self._queue(slot, Item(marker, ask.method, sent.data, ask=ask))

    def queue_junk(self, slot: int, junk: Junk) -> None:
        marker = self.marker()
        method = junk.template.split(b" ", 1)[0]
        self.book.entries[marker] = Entry(method=method, junk=junk)
        self._queue(slot, Item(marker, method, junk.data(marker), junk=junk))

    def queue_control(self, slot: int) -> None:
        data = b"GET /_proxy/healthz HTTP/1.1\r\nHost: fuzz.example\r\n\r\n"
        self._queue(slot, Item(self.marker(), b"GET", data, control=True))

    def _queue(self, slot: int, item: Item) -> None:
        self.conns[slot].items.append(item)

    # --- Writing.

    async def write(self, slot: int, amount: int | None) -> None:
        conn = await self._ready(slot)
        if conn is None:
            return
        client = conn.client
        assert client is not None
        assert client.transport is not None
        now = self.loop.time()
        out = bytearray()
        for item in conn.items:
            if item.whole:
                continue
            if amount is not None and len(out) >= amount:
                break
            if item.written:
                self._timed(item, now)
            else:
                item.first_write = now
                conn.methods.append(item.method)
            take = len(item.data) - item.written
            if amount is not None:
                take = min(take, amount - len(out))
            out += item.data[item.written : item.written + take]
            item.written += take
            item.last_write = now
        conn.note(f"write {len(out)} bytes, up to {conn.position()}")
        if client.transport.is_closing():
            return
        client.transport.write(bytes(out))

    def _timed(self, item: Item, now: float) -> None:
        """A request continued: if it waited as long as a client timeout, the proxy may
        have given up on it."""
        limit = min(HEADER_TIMEOUT, BODY_TIMEOUT) - TIMEOUT_MARGIN
        head_open = item.written < item.head_size and now - item.first_write >= limit
        if now - item.last_write >= limit or head_open:
            item.may_time_out = True

    async def _ready(self, slot: int) -> Conn | None:
        """The slot's connection, open and able to take a request: a connection the proxy
        closed (or the client aborted) is judged and replaced, its unwritten requests
        moved to the new one; an idle one past the keep-alive timeout must be closed."""
        conn = self.conns[slot]
        if not conn.unwritten:
            return None
        if conn.client is not None and not conn.ended and self._idle(conn):
            await self._idle_close(conn)
        if conn.ended:
            conn = self._replace(slot)
            if not conn.unwritten:
                return None
        if conn.client is None:
            _, client = await self.loop.create_connection(
                lambda: Client(conn.methods, conn.note), "127.0.0.1", self.port
            )
            conn.client = client
            conn.note(f"connected from port {client.port}")
        return conn

    def _idle(self, conn: Conn) -> bool:
        return not conn.paused and conn.resolved() == len(conn.started) and bool(conn.started)

    async def _idle_close(self, conn: Conn) -> None:
        """A kept-alive connection idle near limits.keepalive_timeout: the proxy must
        close it by then (or it may be closing it as the next request goes)."""
        client = conn.client
        assert client is not None
        quiet = self.loop.time() - client.answered_at
        if conn.paused_in_flight:
            if quiet >= KEEPALIVE_TIMEOUT / 2:
                next(item for item in conn.items if not item.written).may_drop = True
            conn.paused_in_flight = False
            return
        if quiet < KEEPALIVE_TIMEOUT - 0.25:
            return
        until = client.answered_at + KEEPALIVE_TIMEOUT + 2 * SWEEP + SLACK
        await _wait_for(client, lambda: client.ended, until - self.loop.time())
        assert client.ended, (
            f"a connection idle for {self.loop.time() - client.answered_at:.2f} s is still open "
            f"(limits.keepalive_timeout {KEEPALIVE_TIMEOUT})"
        )
        assert len(client.seen) == len(conn.started), "the proxy wrote to an idle connection"

    def _replace(self, slot: int) -> Conn:
        old = self.conns[slot]
        self._judge(old)
        fresh = Conn(items=[item for item in old.items if not item.written])
        old.items = old.started
        self.retired.append(old)
        self.conns[slot] = fresh
        return fresh

    # --- Waiting for answers.

    async def settle(self, slot: int) -> None:
        conn = self.conns[slot]
        self._resume(conn)
        if conn.unwritten:
            await self.write(slot, None)
            conn = self.conns[slot]
        await self._answers(conn)
        self._judge(conn)

    async def stall(self, slot: int) -> None:
        """Stop mid-request: the proxy must time the request out (408 or a close)."""
        conn = self.conns[slot]
        partial = [item for item in conn.started if not item.whole]
        if not partial or conn.ended:
            return
        self._resume(conn)
        for item in partial:
            item.may_time_out = True
        await self._answers(conn)
        client = conn.client
        assert client is not None
        assert client.ended, "the connection of a stalled request is still open"
        self._judge(conn)

    async def _answers(self, conn: Conn) -> None:
        """Wait for every written request's outcome: each within ANSWER_BOUND of the one
        before (a request waits its turn); one that says the connection ends, for the end."""
        client = conn.client
        if client is None:
            return
        try:
            await self._each_answer(conn, client)
        except AssertionError as exc:
            self._explain(conn, exc)
            raise

    async def _each_answer(self, conn: Conn, client: Client) -> None:
        done = conn.resolved()
        while done < len(conn.started) or self._closing(conn):
            await _wait_for(
                client, lambda n=done: conn.resolved() > n or client.ended, ANSWER_BOUND
            )
            if conn.resolved() == done and not client.ended:
                if done == len(conn.started):
                    raise AssertionError(
                        f"an answer said the connection ends, and it is still open after "
                        f"{ANSWER_BOUND:.1f} s"
                    )
                pending = conn.started[done]
                raise AssertionError(
                    f"hang: {pending.marker.decode()} has no answer, error or cut after "
                    f"{ANSWER_BOUND:.1f} s; seen {client.seen[done:]}"
                )
            done = conn.resolved()
            if client.ended:
                break

    def _closing(self, conn: Conn) -> bool:
        """The last answer said the connection ends, and it has not yet."""
        client = conn.client
        assert client is not None
        if client.ended:
            return False
        started = conn.started
        seen = client.seen
        return any(
            index < len(seen) and seen[index].complete and ends(seen[index], item)
            for index, item in enumerate(started)
        )

    def _resume(self, conn: Conn) -> None:
        if conn.paused and conn.client is not None and conn.client.transport is not None:
            conn.client.transport.resume_reading()
            conn.note("read again")
        conn.paused = False

    def _judge(self, conn: Conn) -> None:
        client = conn.client
        if client is None:
            return
        try:
            assert not client.errors, client.errors
            verdicts(conn.started, client, self.book, max_body=MAX_BODY, aborted=conn.aborted)
        except AssertionError as exc:
            self._explain(conn, exc)
            raise

    def _explain(self, conn: Conn, exc: AssertionError) -> None:
        """What a failure needs beside its message: the connection's story, and what of
        its requests reached the upstream."""
        exc.add_note("the connection's story:\n  " + "\n  ".join(conn.trace))
        arrivals = [
            f"{item.marker.decode()}: {self.book.arrivals.get(item.marker)}"
            + (" (may fail: the upstream dropped idle connections)" if item.may_fail else "")
            for item in conn.started
        ]
        exc.add_note("at the upstream:\n  " + "\n  ".join(arrivals))

    # --- Other rules.

    def pause(self, slot: int) -> None:
        conn = self.conns[slot]
        if conn.client is None or conn.ended or conn.client.transport is None:
            return
        conn.client.transport.pause_reading()
        conn.paused = conn.paused_in_flight = True
        conn.note("stop reading")

    async def abort(self, slot: int, *, reset: bool) -> None:
        conn = self.conns[slot]
        client = conn.client
        if client is None or conn.ended or client.transport is None:
            return
        conn.aborted = True
        conn.note(f"abort ({'RST' if reset else 'FIN'})")
        if reset:
            reset_connection(client.transport)
        else:
            client.transport.close()
        await _wait_for(client, lambda: client.ended, 5)

    async def drop_idle(self, *, reset: bool) -> None:
        """The upstream closes its idle connections. A request already on its way over
        one of them (the upstream had not read it yet) may then fail; any written after
        must not: the proxy sees the close before it reuses a connection."""
        for conn in self.conns:
            done = conn.resolved()
            for item in conn.started[done:]:
                item.may_fail = True
        ports = await self.upstream.drop_idle(reset=reset)
        # The proxy reads the close and lets its end go (the kernel's table says when), so
        # it never takes one of these for a live connection after this.
        for _ in range(200):  # up to 2 s
            held = {port for port, _ in census(self.port, self.upstream.port).outgoing}
            if not held & ports:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the proxy holds connections the upstream closed: {held & ports}")

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    # --- Invariants.

    def check(self) -> None:
        assert not self.upstream.errors, self.upstream.errors
        for conn in self.conns:
            if conn.client is None:
                continue
            assert not conn.client.errors, conn.client.errors
            for index, item in enumerate(conn.started):
                if index < len(conn.client.seen):
                    hygiene(item, conn.client.seen[index])

    # --- The end.

    async def close(self, *, judge: bool) -> None:
        """Settle every connection, close them, and check that the proxy let go of
        everything: no client or upstream socket but its idle pooled ones; then, once
        it and the upstream are closed, no descriptor and no task beyond those before."""
        try:
            if judge:
                for slot in range(len(self.conns)):
                    await self.settle(slot)
            await self._close_clients()
            if judge:
                await self._let_go()
        finally:
            await self._close_clients()
            assert self.proxy is not None
            await self.proxy.close()
            # The fixture keeps each proxy (and its recorder's exchanges) to the test's end.
            self.proxy.recorder.ended_exchanges.clear()
            await self.upstream.close()
        if judge:
            await self._nothing_left()

    async def _close_clients(self) -> None:
        for conn in [*self.conns, *self.retired]:
            client = conn.client
            if client is not None and client.transport is not None and not client.ended:
                client.transport.close()
                await _wait_for(client, lambda c=client: c.ended, 5)

    async def _let_go(self) -> None:
        """With every client gone, the proxy holds no client connection, and no upstream
        connection but the idle ones its pool keeps."""
        assert self.proxy is not None
        pool = self.proxy.listener.pool
        seen: Census | None = None
        for _ in range(300):  # up to 3 s: closing takes a few turns of the loop
            seen = census(self.port, self.upstream.port)
            idle = {c.transport.get_extra_info("sockname")[1] for c in pool.idle if c.transport}
            if not seen.accepted and not seen.clients and {p for p, _ in seen.outgoing} <= idle:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the proxy holds connections after every client left: {seen}")

    async def _nothing_left(self) -> None:
        """Once the proxy and the upstream are closed: the descriptors and tasks there were
        before, and none of the forwarding path's objects alive."""
        fds, tasks = 0, set[asyncio.Task[Any]]()
        for _ in range(200):  # up to 2 s
            fds, tasks = census(0, 0).fds, _tasks() - self.tasks
            if fds <= self.fds and not tasks:
                break
            await asyncio.sleep(0.01)
        assert fds <= self.fds, f"{fds} descriptors open, {self.fds} before: {_descriptors()}"
        assert not tasks, f"tasks left: {tasks}"
        alive = _alive()
        assert not alive, f"objects of the forwarding path outlive the proxy: {alive}"


def _tasks() -> set[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current and not task.done()}


def _alive() -> dict[str, int]:
    """The forwarding path's objects still alive, by type, once garbage is collected."""
    gc.collect()
    counts = Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, _PATH_TYPES))
    return dict(counts)


def _descriptors() -> list[str]:
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue
    return out


async def _wait_for(client: Client, ready: Any, seconds: float) -> None:
    """Wait until `ready()` holds, woken by what the client reads, for at most `seconds`."""
    deadline = asyncio.get_running_loop().time() + max(0.0, seconds)
    while not ready():
        client.changed.clear()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return
        try:
            async with asyncio.timeout(remaining):
                await client.changed.wait()
        except TimeoutError:
            return
