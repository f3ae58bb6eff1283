"""The upstream pool: kept-alive connections to the one configured origin, opened on demand.

A connection is opened with TCP, then TLS through the loop with the verified context
(the system store plus `upstream.ca_bundle`), through an HTTP CONNECT tunnel when
`upstream.proxy` is set. A released connection waits, idle, for the next request for
at most `upstream.keepalive_timeout`; one that the far side closed, that sent bytes
nobody asked for, or whose response was not read to its end is never used again. At
most `upstream.pool_size` connections exist at once; a request beyond that waits for
one to come free, and says so.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast

import structlog
from yarl import URL

from proxy.certificate import describe
from proxy.failures import Failure
from proxy.resolver import Resolver
from proxy.settings import Settings, redact_url


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Where every forwarded request goes, fixed at start-up."""

    url: str  # scheme://host[:port], as shown in messages
    host: str
    port: int
    tls: bool
    # The Host header every upstream request carries.
    authority: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        parsed = URL(url)
        assert parsed.host is not None
        assert parsed.port is not None
        authority = parsed.origin().host_port_subcomponent
        assert authority is not None
        return cls(
            url=str(parsed.origin()),
            host=parsed.host,
            port=parsed.port,
            tls=parsed.scheme in ("https", "wss"),
            authority=authority.encode("idna" if not authority.isascii() else "ascii"),
        )


class ConnectError(Exception):
    """A connection to the upstream could not be opened: which failure, the message for
    the client's JSON error, and the reason in words for the log."""

    def __init__(self, failure: Failure, message: str, detail: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.detail = detail


class User(Protocol):
    """What holds a connection while it is in use: a relayed request, or a tunnel."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_lost(self, exc: BaseException | None) -> None: ...

    def upstream_write_paused(self) -> None: ...

    def upstream_write_resumed(self) -> None: ...


class Waiter(Protocol):
    """A request that asked the pool for a connection."""

    def attach(self, connection: UpstreamConnection) -> None: ...

    def connect_failed(self, error: ConnectError) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream; its bytes go to whoever uses it, if anyone."""

    __slots__ = (
        "_tunnel",
        "closed",
        "connect_ms",
        "counted",
        "idle_since",
        "idle_since_wall",
        "pool",
        "reading_paused",
        "resumed",
        "served",
        "tls_ms",
        "transport",
        "user",
        "warm",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.user: User | None = None
        self.closed = False
        self.reading_paused = False
        # Whether it holds one of the pool's places (given back when it closes).
        self.counted = False
        # When it went idle, by the loop's clock and by the wall's (which goes on while a
        # laptop sleeps): its age is the larger of the two.
        self.idle_since = 0.0
        self.idle_since_wall = 0.0
        # How long opening it took: TCP (and the CONNECT tunnel), then TLS.
        self.connect_ms = 0.0
        self.tls_ms: float | None = None
        # Its TLS handshake resumed an earlier session (no certificate exchange).
        self.resumed = False
        # Opened ahead of the request that uses it (a warm spare), and requests served.
        self.warm = False
        self.served = 0
        # While a CONNECT tunnel is being set up: the proxy's answer so far, and its waiter.
        self._tunnel: tuple[bytearray, asyncio.Future[None]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        user = self.user
        if user is not None:
            user.upstream_data(data)
        elif self._tunnel is not None:
            self._tunnel_answer(data)
        else:
            # Bytes nobody asked for on an idle connection: it can never be trusted again.
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        if self._tunnel is not None and not self._tunnel[1].done():
            self._tunnel[1].set_exception(exc or ConnectionResetError("the proxy closed"))
        user, self.user = self.user, None
        if user is not None:
            user.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_write_resumed()

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close for good (reused never again)."""
        self.closed = True
        self.user = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.user = None
        if self.transport is not None:
            self.transport.abort()

    async def tunnel(self, target: str, authorization: str | None) -> None:
        """Ask the outbound proxy for a CONNECT tunnel to `target`; raise unless it says 2xx."""
        assert self.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        self._tunnel = (bytearray(), waiter)
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if authorization:
            head += f"Proxy-Authorization: {authorization}\r\n"
        self.transport.write((head + "\r\n").encode("latin-1"))
        try:
            await waiter
        finally:
            answer = self._tunnel[0]
            self._tunnel = None
        status_line = bytes(answer.partition(b"\r\n")[0]).decode("latin-1")
        _, _, rest = status_line.partition(" ")
        status, _, reason = rest.partition(" ")
        if not status.isdigit() or not 200 <= int(status) < 300:
            raise _TunnelRefusedError(f"{status} {reason}".strip() or "no answer")

    def _tunnel_answer(self, data: bytes) -> None:
        assert self._tunnel is not None
        answer, waiter = self._tunnel
        answer += data
        if answer.find(b"\r\n\r\n") >= 0 and not waiter.done():
            waiter.set_result(None)
        elif len(answer) > 65536 and not waiter.done():
            waiter.set_exception(_TunnelRefusedError("an answer too long to be a tunnel's"))


class _TunnelRefusedError(Exception):
    pass


class ResumingContext(ssl.SSLContext):
    """The verified client context, with TLS session resumption: a new connection to the
    upstream offers the session (the ticket) of an earlier one, so its handshake takes one
    round trip less and no certificate exchange. The event loop's start_tls takes no
    session, but it opens TLS through this context's public `wrap_bio`, which takes one.
    Verification is unchanged: the context is the default one, and a session is only
    ever offered to the host it came from (the one upstream)."""

    session: ssl.SSLSession | None = None

    @classmethod
    def verified(cls, ca_bundle: str) -> ResumingContext:
        context = cls(ssl.PROTOCOL_TLS_CLIENT)  # hostname checks and CERT_REQUIRED
        context.verify_flags = ssl.create_default_context().verify_flags
        context.load_default_certs()
        if ca_bundle:
            context.load_verify_locations(cafile=ca_bundle)
        return context

    def remember(self, session: ssl.SSLSession | None) -> None:
        if session is not None and session.has_ticket:
            self.session = session

    def offered(self) -> ssl.SSLSession | None:
        """The session to resume, unless its ticket has expired."""
        session = self.session
        if session is None or time.time() - session.time >= session.ticket_lifetime_hint:
            return None
        return session

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(
            incoming,
            outgoing,
            server_side,
            server_hostname,
            session=session or self.offered(),
        )


class Pool:
    """Connections to the origin: idle ones kept, new ones opened, at most `size` at once."""

    def __init__(self, settings: Settings, *, origin: Origin) -> None:
        upstream = settings.upstream
        self.origin = origin
        self.size = upstream.pool_size
        self.keepalive_timeout = upstream.keepalive_timeout
        self.connect_timeout = upstream.connect_timeout
        self.ca_bundle = upstream.ca_bundle
        self.proxy = URL(upstream.proxy) if upstream.proxy else None
        # The loop it runs on, held once (looking it up costs a getpid() on Python 3.11).
        self.loop = asyncio.get_running_loop()
        self.resolver = Resolver(origin.host, origin.port, self.loop)
        self.idle: list[UpstreamConnection] = []  # most recently used last
        self.open = 0  # connections open or opening
        self.waiting: deque[tuple[Waiter, float]] = deque()
        # Warm spares: how many idle ones to keep ready, how many are being opened, and
        # the requests that came while one was (each takes the next that is ready).
        self.warm = upstream.warm_connections
        self.warming = 0
        self.ahead: deque[Waiter] = deque()
        # After a spare the far side soon closed, the next waits this long (doubling).
        self._backoff = 0.0
        self._refill: asyncio.TimerHandle | None = None
        self._opening: set[asyncio.Task[None]] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._context: ResumingContext | None = None
        self._closed = False

    # Taking and giving back.

    def acquire(self, waiter: Waiter) -> None:
        """Give `waiter` a connection: an idle one now, one being opened ahead, a new one
        soon, or the next free one."""
        connection = self._take()
        if connection is not None:
            self._backoff = 0.0  # a spare that serves a request was worth keeping
            waiter.attach(connection)
            self.top_up()
        elif self.warming > len(self.ahead):
            self.ahead.append(waiter)
        elif self.open < self.size:
            self._open_for(waiter)
        else:
            structlog.get_logger("proxy.upstream").warning(
                "waiting for a free upstream connection: upstream.pool_size is reached",
                pool_size=self.size,
            )
            self.waiting.append((waiter, time.perf_counter()))

    def forget(self, waiter: Waiter) -> None:
        """A request that no longer needs the connection it waits for."""
        if waiter in self.ahead:
            self.ahead.remove(waiter)
            return
        for entry in self.waiting:
            if entry[0] is waiter:
                self.waiting.remove(entry)
                return

    def release(self, connection: UpstreamConnection) -> None:
        """A connection whose response was read to its end, ready for the next request."""
        if connection.closed or self._closed:
            connection.close()
            return
        connection.user = None
        # Its last reader may have paused it (a slow client): the next must hear it.
        connection.resume_reading()
        if self.waiting:
            waiter, since = self.waiting.popleft()
            self._log_waited(since)
            waiter.attach(connection)
            return
        self._keep(connection)

    def _keep(self, connection: UpstreamConnection, *, spare: bool = False) -> None:
        """Idle, ready for a request. The most recently used is taken first; a new spare
        waits behind them, the one kept in reserve."""
        self._remember_session(connection)
        connection.idle_since = self.loop.time()
        connection.idle_since_wall = time.time()
        if spare:
            self.idle.insert(0, connection)
        else:
            self.idle.append(connection)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.keepalive_timeout, self._expire)

    def _age(self, connection: UpstreamConnection, now: float, wall: float) -> float:
        """How long it has been idle. The loop's clock stops while a machine sleeps; the
        wall's goes on (and may jump): the larger wins, so a connection idle across a
        sleep is never taken for a fresh one."""
        return max(now - connection.idle_since, wall - connection.idle_since_wall)

    def lost(self, connection: UpstreamConnection) -> None:
        """A connection closed (by either side): it frees a place in the pool."""
        was_idle = connection in self.idle
        if was_idle:
            self.idle.remove(connection)
        if not connection.counted:
            return  # it failed while opening: its place was given back then
        connection.counted = False
        self.open -= 1
        if self._closed:
            return
        if self.waiting and self.open < self.size:
            waiter, since = self.waiting.popleft()
            self._log_waited(since)
            self._open_for(waiter)
        elif was_idle and not connection.served:
            # A spare the far side closed before any request came: the next one waits a
            # little, then longer, so an upstream that drops idle connections at once is
            # not dialled in a loop.
            self._backoff = min(max(1.0, self._backoff * 2), 60.0)
            self.top_up()
        else:
            self.top_up()

    def close(self) -> None:
        """Shut down: close idle connections, stop opening new ones."""
        self._closed = True
        self.resolver.close()
        if self._sweep is not None:
            self._sweep.cancel()
        if self._refill is not None:
            self._refill.cancel()
        for connection in list(self.idle):
            connection.close()
        for task in self._opening:
            task.cancel()

    def _take(self) -> UpstreamConnection | None:
        idle = self.idle
        if not idle:
            return None
        now, wall = self.loop.time(), time.time()
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if self._age(connection, now, wall) >= self.keepalive_timeout:
                # Idle too long: after a laptop sleeps the far side has forgotten it.
                connection.close()
                continue
            return connection
        return None

    def _expire(self) -> None:
        self._sweep = None
        now, wall = self.loop.time(), time.time()
        limit = self.keepalive_timeout
        for connection in [c for c in self.idle if self._age(c, now, wall) >= limit]:
            # Closed before the edge forgets it; top_up opens its replacement.
            connection.close()
        if self.idle:
            youngest_left = min(limit - self._age(c, now, wall) for c in self.idle)
            self._sweep = self.loop.call_later(max(0.0, youngest_left), self._expire)

    # Warm spares.

    def top_up(self) -> None:
        """Keep `upstream.warm_connections` idle connections ready (or being opened)."""
        if self._closed or self._refill is not None:
            return
        ready = len(self.idle) + self.warming - len(self.ahead)
        if ready >= self.warm or self.open >= self.size:
            return
        if self._backoff:
            self._refill = self.loop.call_later(self._backoff, self._refilled)
            return
        for _ in range(min(self.warm - ready, self.size - self.open)):
            self._open_for(None)

    def _refilled(self) -> None:
        self._refill = None
        backoff, self._backoff = self._backoff, 0.0
        self.top_up()
        self._backoff = backoff

    def ahead_of_request(self) -> None:
        """A client connected: a request is coming. Unless a connection is ready (or on its
        way), open one now, while the client is still sending its head."""
        if self.warm and not self.idle and not self.warming and self.open < self.size:
            self._open_for(None)

    def _log_waited(self, since: float) -> None:
        structlog.get_logger("proxy.upstream").info(
            "got an upstream connection",
            waited_ms=round((time.perf_counter() - since) * 1000, 3),
        )

    # Opening.

    def _open_for(self, waiter: Waiter | None) -> None:
        """Open a connection for `waiter`, or (None) a spare, kept warm for the next."""
        self.open += 1
        if waiter is None:
            self.warming += 1
        task = self.loop.create_task(self._connect_for(waiter))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _connect_for(self, waiter: Waiter | None) -> None:
        try:
            connection = await self.connect()
            if connection.closed:  # closed between its handshake and now
                raise self._connect_error(ConnectionResetError("closed at once"))
        except ConnectError as error:
            self.open -= 1
            if waiter is not None:
                waiter.connect_failed(error)
                return
            self.warming -= 1
            self._spare_failed(error)
            return
        except asyncio.CancelledError:
            self.open -= 1
            if waiter is None:
                self.warming -= 1
            raise
        connection.counted = True
        if waiter is not None:
            waiter.attach(connection)
            return
        self.warming -= 1
        connection.warm = True
        if self.ahead:
            self.ahead.popleft().attach(connection)
            return
        self._keep(connection, spare=True)

    def _spare_failed(self, error: ConnectError) -> None:
        """A spare could not be opened: the requests waiting for it get its error, and the
        next spare waits a while."""
        structlog.get_logger("proxy.upstream").warning(
            "a warm upstream connection could not be opened",
            cause=error.failure.code,
            detail=error.detail,
        )
        while self.ahead:
            self.ahead.popleft().connect_failed(error)
        self._backoff = min(max(1.0, self._backoff * 2), 60.0)
        self.top_up()

    async def connect(self) -> UpstreamConnection:
        """A new connection to the origin, ready for a request; ConnectError if not."""
        loop = asyncio.get_running_loop()
        connection = UpstreamConnection(self)
        origin = self.origin
        context = self.tls_context() if origin.tls else None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.proxy is None:
                    await self._direct(connection)
                else:
                    await self._through_proxy(connection)
                connected = time.perf_counter()
                if context is not None:
                    # TLS after TCP, not in one call: each is timed on its own.
                    assert connection.transport is not None
                    transport = await loop.start_tls(
                        connection.transport, connection, context, server_hostname=origin.host
                    )
                    connection.transport = tls = cast(asyncio.Transport, transport)
                    connection.tls_ms = round((time.perf_counter() - connected) * 1000, 3)
                    ssl_object = tls.get_extra_info("ssl_object")
                    connection.resumed = bool(ssl_object and ssl_object.session_reused)
        except BaseException as exc:
            if connection.transport is not None:
                connection.abort()
            if not isinstance(exc, Exception):
                raise
            error = self._connect_error(exc)
            if isinstance(exc, ssl.SSLCertVerificationError):
                error.detail += f" ({await self._presented_certificate()})"
            raise error from None
        connection.connect_ms = round((connected - started) * 1000, 3)
        return connection

    async def _direct(self, connection: UpstreamConnection) -> None:
        """TCP to the upstream's first address that answers (resolved ahead, see Resolver)."""
        loop = asyncio.get_running_loop()
        failed: OSError | None = None
        for family, (host, port) in await self.resolver.resolve():
            try:
                await loop.create_connection(lambda: connection, host, port, family=family)
            except OSError as exc:
                failed = failed or exc
                continue
            return
        assert failed is not None
        raise failed

    async def _through_proxy(self, connection: UpstreamConnection) -> None:
        proxy = self.proxy
        assert proxy is not None
        assert proxy.host is not None
        assert proxy.port is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(
                lambda: connection,
                proxy.host,
                proxy.port,
                ssl=ssl.create_default_context() if proxy.scheme == "https" else None,
            )
        except OSError as exc:
            raise ConnectError(
                Failure.OUTBOUND_PROXY,
                f"cannot connect to the proxy upstream.proxy: {exc.strerror or exc}",
                f"the outbound proxy {redact_url(str(proxy))} is unreachable: "
                f"{exc.strerror or exc}",
            ) from None
        authorization = None
        if proxy.user is not None:
            secret = f"{proxy.user}:{proxy.password or ''}".encode()
            authorization = "Basic " + base64.b64encode(secret).decode("ascii")
        target = f"{self.origin.host}:{self.origin.port}"
        if ":" in self.origin.host:
            target = f"[{self.origin.host}]:{self.origin.port}"
        try:
            await connection.tunnel(target, authorization)
        except _TunnelRefusedError as exc:
            raise ConnectError(
                Failure.OUTBOUND_PROXY,
                f"the proxy upstream.proxy refused the tunnel to {self.origin.url}: {exc}",
                f"the outbound proxy answered {exc}",
            ) from None

    async def _presented_certificate(self) -> str:
        """Who the certificate the upstream presented names, read on a second connection
        that does not verify it and sends nothing: which certificate the network put in
        the way is what a person can act on."""
        if self.proxy is not None:
            return "the certificate came through upstream.proxy"
        context = ssl.create_default_context()
        # Only to read the names: nothing is sent on this connection.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    asyncio.Protocol,
                    self.origin.host,
                    self.origin.port,
                    ssl=context,
                    server_hostname=self.origin.host,
                )
        except (OSError, TimeoutError):
            return "its certificate could not be fetched again"
        try:
            der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            transport.close()
        return describe(der) if der else "it presented no certificate"

    def tls_context(self) -> ResumingContext:
        """The system trust store (with SNI and hostname checks), plus upstream.ca_bundle;
        built on the first TLS connection, not at start-up."""
        if self._context is None:
            self._context = ResumingContext.verified(self.ca_bundle)
        return self._context

    def _remember_session(self, connection: UpstreamConnection) -> None:
        """Keep the connection's TLS session (its ticket arrives after the handshake) for
        the next connection to resume."""
        if self._context is not None and connection.transport is not None:
            ssl_object = connection.transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self._context.remember(ssl_object.session)

    def _connect_error(self, exc: Exception) -> ConnectError:
        if isinstance(exc, ConnectError):
            return exc
        origin, where = self.origin.url, f"{self.origin.host}:{self.origin.port}"
        if isinstance(exc, TimeoutError):
            failure = Failure.CONNECT_TIMEOUT
            message = f"connecting to {origin} took longer than {self.connect_timeout:g} s"
            detail = f"no connection to {where} within upstream.connect_timeout"
        elif isinstance(exc, socket.gaierror):
            failure = Failure.UNREACHABLE
            message = f"cannot resolve the upstream host of {origin}"
            detail = f"DNS name not found: {self.origin.host} ({exc.strerror})"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            failure = Failure.TLS
            message = (
                f"TLS with {origin} failed: the certificate is not trusted "
                f"({exc.verify_message}); see upstream.ca_bundle"
            )
            detail = f"TLS verification failed: {exc.verify_message}"
        elif isinstance(exc, ssl.SSLError):
            failure = Failure.TLS
            message = f"TLS with {origin} failed: {exc.reason or exc}"
            detail = f"TLS failed: {exc.reason or exc}"
        elif isinstance(exc, ConnectionRefusedError):
            failure = Failure.UNREACHABLE
            message = f"cannot connect to {origin}: connection refused"
            detail = f"connection refused by {where}"
        else:
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            reason = reason or type(exc).__name__
            failure = Failure.UNREACHABLE
            message = f"cannot connect to {origin}: {reason}"
            detail = f"cannot connect to {where}: {reason}"
        return ConnectError(failure, message, detail)
