"""The connection the proxy would open to the upstream, step by step: DNS, TCP, the
CONNECT tunnel of upstream.proxy (itself over TLS for an https:// proxy), then TLS with
the system store and upstream.ca_bundle. Each step done is recorded; the one that fails
raises StepError naming itself, what happened and the fix.

`open_upstream` is the doctor's only way out, written on asyncio and ssl alone so that
it can be swapped for the forwarding path's own connector.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from dataclasses import dataclass

from yarl import URL

from proxy.doctor.wire import reason
from proxy.settings import UpstreamSection, redact_url


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    url: URL
    proxy: URL | None
    ca_bundle: str
    timeout: float

    @classmethod
    def from_settings(cls, upstream: UpstreamSection) -> Target:
        return cls(
            url=URL(upstream.url),
            proxy=URL(upstream.proxy) if upstream.proxy else None,
            ca_bundle=upstream.ca_bundle,
            timeout=upstream.connect_timeout,
        )

    @property
    def host(self) -> str:
        assert self.url.host is not None
        return self.url.host

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.url.port}"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    says: str


class StepError(Exception):
    """A step failed: which one, what happened, the fix, and the steps done before it."""

    def __init__(self, step: str, says: str, fix: str, done: list[Step] | None = None) -> None:
        super().__init__(says)
        self.step, self.says, self.fix = step, says, fix
        self.done = done or []


async def open_upstream(
    target: Target,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[Step]]:
    """Connect as the proxy would, step by step; StepError names the step that failed."""
    steps: list[Step] = []
    hop = target.proxy or target.url
    host, port = hop.host or "", hop.port or 0
    try:
        async with asyncio.timeout(target.timeout):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError) as exc:
        raise StepError(
            "DNS", f"cannot resolve {host}: {reason(exc)}", _fix_route(target)
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    more = f" (and {len(addresses) - 1} more)" if len(addresses) > 1 else ""
    steps.append(Step("DNS", f"{host} → {addresses[0]}{more}"))
    began = time.perf_counter()
    reader, writer = await _connect(addresses, port, target, steps)
    ms = round((time.perf_counter() - began) * 1000)
    steps.append(Step("TCP", f"connected to {host}:{port} in {ms} ms"))
    try:
        if target.proxy is not None:
            if target.proxy.scheme == "https":
                await _tls(writer, target, host, steps, "TLS to the proxy")
            await _tunnel(reader, writer, target, steps)
        if target.url.scheme == "https":
            await _tls(writer, target, target.host, steps, "TLS")
    except StepError as failed:
        writer.close()
        failed.done = steps
        raise
    return reader, writer, steps


async def _connect(
    addresses: list[str], port: int, target: Target, steps: list[Step]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    errors = []
    for address in addresses:
        try:
            async with asyncio.timeout(target.timeout):
                return await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{address}: {reason(exc)}")
    raise StepError("TCP", f"cannot connect to {'; '.join(errors)}", _fix_route(target), steps)


async def _tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target, steps: list[Step]
) -> None:
    assert target.proxy is not None
    proxy = redact_url(str(target.proxy))
    head = [f"CONNECT {target.authority} HTTP/1.1", f"Host: {target.authority}"]
    if target.proxy.user is not None:
        pair = f"{target.proxy.user}:{target.proxy.password or ''}".encode()
        head.append(f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    try:
        async with asyncio.timeout(target.timeout):
            await writer.drain()
            answer = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0].decode("latin-1")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise StepError("CONNECT", f"{proxy} gave no answer: {reason(exc)}", _FIX_PROXY) from None
    status = answer.split(" ", 2)[1] if answer.count(" ") else ""
    if status != "200":
        fix = (
            _FIX_AUTH
            if status == "407"
            else f"ask whoever runs {proxy} to allow {target.authority}"
        )
        raise StepError("CONNECT", f"{proxy} refused the tunnel: {answer}", fix)
    steps.append(Step("CONNECT", f"{proxy} opened a tunnel to {target.authority}"))


async def _tls(
    writer: asyncio.StreamWriter, target: Target, host: str, steps: list[Step], name: str
) -> None:
    context = ssl.create_default_context()
    if target.ca_bundle:
        context.load_verify_locations(cafile=target.ca_bundle)
    try:
        await writer.start_tls(context, server_hostname=host, ssl_handshake_timeout=target.timeout)
    except ssl.SSLCertVerificationError as exc:
        says = f"the certificate of {host} is not trusted: {exc.verify_message}"
        raise StepError(name, says, _FIX_CA) from None
    except (OSError, TimeoutError) as exc:
        raise StepError(name, f"the handshake with {host} failed: {reason(exc)}", _FIX_CA) from None
    tls = writer.get_extra_info("ssl_object")
    issuer = dict(pair[0] for pair in tls.getpeercert().get("issuer", ()))
    by = issuer.get("organizationName") or issuer.get("commonName") or "an unnamed issuer"
    extra = " (system store and upstream.ca_bundle)" if target.ca_bundle else ""
    steps.append(Step(name, f"{tls.version()}, certificate of {host} from {by} trusted{extra}"))


_FIX_CA = (
    "on a TLS-intercepting network, put its CA certificate (PEM) in upstream.ca_bundle; "
    "otherwise check the date and time of this machine"
)
_FIX_PROXY = "check upstream.proxy: host, port, and that it is running"
_FIX_AUTH = "put the user and password in upstream.proxy (http://user:password@host:port)"


def _fix_route(target: Target) -> str:
    if target.proxy is not None:
        return _FIX_PROXY
    return (
        "check this machine's network and DNS; if only an HTTP proxy reaches out, "
        "set upstream.proxy (or upstream.proxy_from_env = true)"
    )
