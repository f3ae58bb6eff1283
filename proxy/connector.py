"""The way out: one connector opens every connection to the upstream, for the pool and
for `doctor` alike.

TCP to the upstream's addresses with Happy Eyeballs (RFC 8305, `aiohappyeyeballs`, the
library aiohttp uses), or to the outbound proxy of `upstream.proxy` and then its CONNECT
tunnel (over TLS for an https:// proxy); then TLS to the upstream, verified against the
system store plus `upstream.ca_bundle`, resuming an earlier session where it can. Every
failure becomes a `ConnectError` through one table: the failure (its status and code),
the message for the client's JSON error, the reason in words for the log, and the step
that failed (DNS, TCP, TLS to the proxy, CONNECT, TLS) for `doctor`.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohappyeyeballs
from yarl import URL

from proxy.certificate import describe
from proxy.failures import Failure
from proxy.resolver import Resolver
from proxy.settings import UpstreamSection, redact_url

P = TypeVar("P", bound=asyncio.Protocol)

# How long the first address gets before the next is tried beside it (RFC 8305 §5).
HAPPY_EYEBALLS_DELAY = 0.25
# A CONNECT answer's head longer than this is not a proxy's answer.
MAX_TUNNEL_ANSWER = 65536


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

    @property
    def target(self) -> str:
        """host:port as a CONNECT request names it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class ConnectError(Exception):
    """A connection could not be opened: which failure, the message for the client's JSON
    error, the reason in words for the log, and the step that failed."""

    def __init__(
        self,
        failure: Failure,
        message: str,
        detail: str,
        step: str = "TCP",
        *,
        cause: BaseException | None = None,
        said: str = "",
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.detail = detail
        self.step = step
        # What went wrong underneath, and an outbound proxy's answer (its status line).
        self.cause = cause
        self.said = said


@dataclass(frozen=True, slots=True)
class Step:
    """One step of opening a connection done, in words (what `doctor` shows)."""

    name: str
    says: str


@dataclass(slots=True)
class Opened:
    """How opening a connection went: TCP (and any tunnel), then TLS, in ms."""

    connect_ms: float = 0.0
    tls_ms: float | None = None
    resumed: bool = False


class ResumingContext(ssl.SSLContext):
    """The verified client context, with TLS session resumption: a new connection offers
    the session (the ticket) of an earlier one, so its handshake takes one round trip less
    and no certificate exchange. The loop's start_tls takes no session, but it opens TLS
    through this context's public `wrap_bio`, which takes one. Verification is unchanged:
    the context is the default one, and a session is only ever offered to the host it came
    from (the one upstream)."""

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
            incoming, outgoing, server_side, server_hostname, session=session or self.offered()
        )


class Connector:
    """Opens connections to the one origin, as settings say; see the module's docstring."""

    def __init__(self, upstream: UpstreamSection, *, origin: Origin | None = None) -> None:
        self.origin = origin or Origin.parse(upstream.url)
        self.timeout = upstream.connect_timeout
        self.ca_bundle = upstream.ca_bundle
        self.proxy = URL(upstream.proxy) if upstream.proxy else None
        self._resolver: Resolver | None = None
        self._context: ResumingContext | None = None

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            origin = self.origin
            self._resolver = Resolver(origin.host, origin.port, asyncio.get_running_loop())
        return self._resolver

    def tls_context(self) -> ResumingContext:
        """The system trust store (with SNI and hostname checks), plus upstream.ca_bundle;
        built on the first TLS connection, not at start-up."""
        if self._context is None:
            self._context = ResumingContext.verified(self.ca_bundle)
        return self._context

    def remember(self, transport: asyncio.BaseTransport) -> None:
        """Keep a connection's TLS session (its ticket arrives after the handshake) for the
        next connection to resume; read once per connection, never per request."""
        if self._context is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self._context.remember(ssl_object.session)

    def close(self) -> None:
        if self._resolver is not None:
            self._resolver.close()

    async def open(
        self, factory: Callable[[], P], *, steps: list[Step] | None = None
    ) -> tuple[asyncio.Transport, P, Opened]:
        """A new connection to the origin, ready for a request; ConnectError if not.
        `steps`, when given, collects each step done, in words."""
        loop = asyncio.get_running_loop()
        opened = Opened()
        protocol = factory()
        transport: asyncio.Transport | None = None
        step = "DNS"
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                if self.proxy is None:
                    infos = await self._addresses(steps)
                    step = "TCP"
                    transport = await self._tcp(loop, protocol, infos, steps)
                else:
                    transport, step = await self._through_proxy(loop, protocol, steps)
                connected = time.perf_counter()
                opened.connect_ms = round((connected - began) * 1000, 3)
                if self.origin.tls:
                    step = "TLS"
                    transport = await self._tls(loop, transport, protocol, self.tls_context())
                    opened.tls_ms = round((time.perf_counter() - connected) * 1000, 3)
                    ssl_object = transport.get_extra_info("ssl_object")
                    opened.resumed = bool(ssl_object and ssl_object.session_reused)
                    if steps is not None:
                        says = _tls_says(transport, self.origin.host, self.ca_bundle)
                        steps.append(Step("TLS", says))
        except BaseException as exc:
            if transport is not None:
                transport.abort()
            if isinstance(exc, ConnectError) or not isinstance(exc, Exception):
                raise
            error = self.error(exc, step)
            error.cause = exc
            if isinstance(exc, ssl.SSLCertVerificationError):
                error.detail += f" ({await self._presented_certificate()})"
            raise error from None
        return transport, protocol, opened

    async def _addresses(
        self, steps: list[Step] | None
    ) -> list[tuple[int, int, int, str, tuple[str, int]]]:
        found = await self.resolver.resolve()
        if steps is not None:
            shown = [address for _, (address, _) in found]
            more = f" (and {len(shown) - 1} more)" if len(shown) > 1 else ""
            steps.append(Step("DNS", f"{self.origin.host} → {shown[0]}{more}"))
        return [
            (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)
            for family, address in found
        ]

    async def _tcp(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: asyncio.Protocol,
        infos: Sequence[aiohappyeyeballs.AddrInfoType],
        steps: list[Step] | None,
    ) -> asyncio.Transport:
        began = time.perf_counter()
        sock = await aiohappyeyeballs.start_connection(
            infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1, loop=loop
        )
        try:
            transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
        except BaseException:
            sock.close()
            raise
        if steps is not None:
            peer = sock.getpeername() if sock.fileno() >= 0 else infos[0][4]
            ms = round((time.perf_counter() - began) * 1000)
            steps.append(Step("TCP", f"connected to {peer[0]}:{peer[1]} in {ms} ms"))
        return transport

    async def _tls(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        protocol: asyncio.Protocol,
        context: ssl.SSLContext,
        host: str | None = None,
    ) -> asyncio.Transport:
        # TLS after TCP, not in one call: each is timed on its own.
        tls = await loop.start_tls(
            transport, protocol, context, server_hostname=host or self.origin.host
        )
        if tls is None:
            raise ConnectionResetError("the connection closed during the TLS handshake")
        return tls

    async def _through_proxy(
        self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, steps: list[Step] | None
    ) -> tuple[asyncio.Transport, str]:
        proxy = self.proxy
        assert proxy is not None
        assert proxy.host is not None
        assert proxy.port is not None
        shown = redact_url(str(proxy))
        step = "DNS"
        try:
            infos = await loop.getaddrinfo(
                proxy.host, proxy.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
            addresses = [(f, t, p, "", (str(a[0]), int(a[1]))) for f, t, p, _, a in infos]
            if steps is not None:
                more = f" (and {len(addresses) - 1} more)" if len(addresses) > 1 else ""
                steps.append(Step("DNS", f"{proxy.host} → {addresses[0][4][0]}{more}"))
            step = "TCP"
            transport = await self._tcp(loop, protocol, addresses, steps)
        except OSError as exc:
            reason = _reason(exc)
            raise ConnectError(
                Failure.OUTBOUND_PROXY,
                f"cannot connect to the proxy upstream.proxy: {reason}",
                f"the outbound proxy {shown} is unreachable: {reason}",
                step,
                cause=exc,
            ) from None
        if proxy.scheme == "https":
            try:
                context = ssl.create_default_context()
                if self.ca_bundle:
                    context.load_verify_locations(cafile=self.ca_bundle)
                transport = await self._tls(loop, transport, protocol, context, proxy.host)
            except (OSError, ssl.SSLError) as exc:
                transport.abort()
                raise ConnectError(
                    Failure.OUTBOUND_PROXY,
                    f"TLS with the proxy upstream.proxy failed: {_reason(exc)}",
                    f"TLS with the outbound proxy {shown} failed: {_reason(exc)}",
                    "TLS to the proxy",
                    cause=exc,
                ) from None
            if steps is not None:
                says = _tls_says(transport, proxy.host, self.ca_bundle)
                steps.append(Step("TLS to the proxy", says))
        try:
            await self._tunnel(transport, protocol, shown)
        except BaseException:
            transport.abort()
            raise
        if steps is not None:
            steps.append(Step("CONNECT", f"{shown} opened a tunnel to {self.origin.target}"))
        return transport, "TLS"

    async def _tunnel(
        self, transport: asyncio.Transport, protocol: asyncio.Protocol, shown: str
    ) -> None:
        """Ask the outbound proxy for a CONNECT tunnel; ConnectError unless it says 2xx."""
        proxy = self.proxy
        assert proxy is not None
        target = self.origin.target
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if proxy.user is not None:
            secret = f"{proxy.user}:{proxy.password or ''}".encode()
            head += f"Proxy-Authorization: Basic {base64.b64encode(secret).decode('ascii')}\r\n"
        try:
            answer = await _TunnelAnswer.read(
                transport, protocol, (head + "\r\n").encode("latin-1")
            )
        except OSError as exc:
            raise ConnectError(
                Failure.OUTBOUND_PROXY,
                f"the proxy upstream.proxy gave no answer: {_reason(exc)}",
                f"the outbound proxy {shown} gave no answer: {_reason(exc)}",
                "CONNECT",
                cause=exc,
            ) from None
        status_line = answer.partition(b"\r\n")[0].decode("latin-1")
        _, _, rest = status_line.partition(" ")
        status, _, reason = rest.partition(" ")
        if not (status.isdigit() and len(status) == 3 and status.startswith("2")):
            said = f"{status} {reason}".strip() or "no answer"
            raise ConnectError(
                Failure.OUTBOUND_PROXY,
                f"the proxy upstream.proxy refused the tunnel to {self.origin.url}: {said}",
                f"the outbound proxy answered {said}",
                "CONNECT",
                said=status_line,
            )

    def error(self, exc: Exception, step: str) -> ConnectError:
        """The failure table: what went wrong opening a connection, for the client and the
        log."""
        origin, where = self.origin.url, f"{self.origin.host}:{self.origin.port}"
        if isinstance(exc, TimeoutError):
            return ConnectError(
                Failure.CONNECT_TIMEOUT,
                f"connecting to {origin} took longer than {self.timeout:g} s",
                f"no connection to {where} within upstream.connect_timeout",
                step,
            )
        if isinstance(exc, socket.gaierror):
            return ConnectError(
                Failure.UNREACHABLE,
                f"cannot resolve the upstream host of {origin}",
                f"DNS name not found: {self.origin.host} ({exc.strerror})",
                "DNS",
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ConnectError(
                Failure.TLS,
                f"TLS with {origin} failed: the certificate is not trusted "
                f"({exc.verify_message}); see upstream.ca_bundle",
                f"TLS verification failed: {exc.verify_message}",
                "TLS",
            )
        if isinstance(exc, ssl.SSLError):
            return ConnectError(
                Failure.TLS,
                f"TLS with {origin} failed: {exc.reason or exc}",
                f"TLS failed: {exc.reason or exc}",
                "TLS",
            )
        if isinstance(exc, ConnectionRefusedError):
            return ConnectError(
                Failure.UNREACHABLE,
                f"cannot connect to {origin}: connection refused",
                f"connection refused by {where}",
                step,
            )
        reason = _reason(exc)
        return ConnectError(
            Failure.UNREACHABLE,
            f"cannot connect to {origin}: {reason}",
            f"cannot connect to {where}: {reason}",
            step,
        )

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
            async with asyncio.timeout(self.timeout):
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


class _TunnelAnswer(asyncio.Protocol):
    """Stands in for the connection's protocol while the CONNECT answer arrives."""

    def __init__(self, waiter: asyncio.Future[bytes]) -> None:
        self.answer = bytearray()
        self.waiter = waiter

    @classmethod
    async def read(
        cls, transport: asyncio.Transport, protocol: asyncio.Protocol, request: bytes
    ) -> bytes:
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        reader = cls(waiter)
        transport.set_protocol(reader)
        try:
            transport.write(request)
            return await waiter
        finally:
            transport.set_protocol(protocol)

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        answer += data
        end = answer.find(b"\r\n\r\n")
        if self.waiter.done():
            return
        if end >= 0:
            if end + 4 < len(answer):
                # A proxy that speaks before the tunnel is ours to use: not a tunnel.
                self.waiter.set_result(b"bytes after its answer")
                return
            self.waiter.set_result(bytes(answer[:end]))
        elif len(answer) > MAX_TUNNEL_ANSWER:
            self.waiter.set_result(b"an answer too long to be a tunnel's")

    def eof_received(self) -> bool:
        if not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("it closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("the proxy closed"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _tls_says(transport: asyncio.BaseTransport, host: str, ca_bundle: str) -> str:
    tls = transport.get_extra_info("ssl_object")
    version = tls.version() if tls is not None else "TLS"
    certificate = tls.getpeercert() if tls is not None else None
    issuer = dict(pair[0] for pair in (certificate or {}).get("issuer", ()))
    by = issuer.get("organizationName") or issuer.get("commonName") or "an unnamed issuer"
    extra = " (system store and upstream.ca_bundle)" if ca_bundle else ""
    return f"{version}, certificate of {host} from {by} trusted{extra}"
