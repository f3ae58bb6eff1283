"""The connection the proxy would open to the upstream, step by step, opened by the
proxy's own connector (proxy/connector.py): DNS, TCP, the CONNECT tunnel of
upstream.proxy (itself over TLS for an https:// proxy), then TLS with the system store
and upstream.ca_bundle, within upstream.connect_timeout in all. Each step done is
recorded; the one that fails raises StepError naming itself, what happened and the fix.
So what `doctor` reports is the way out the proxy takes, not a second opinion."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from yarl import URL

from proxy.connector import ConnectError, Connector, Step
from proxy.doctor.wire import reason
from proxy.settings import UpstreamSection, redact_url

__all__ = ["Step", "StepError", "Target", "open_upstream"]


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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.url.port}"

    def section(self) -> UpstreamSection:
        return UpstreamSection(
            url=str(self.url.origin()),
            proxy=str(self.proxy) if self.proxy is not None else "",
            ca_bundle=self.ca_bundle,
            connect_timeout=self.timeout,
            warm_connections=0,
        )


class StepError(Exception):
    """A step failed: which one, what happened, the fix, and the steps done before it."""

    def __init__(self, step: str, says: str, fix: str, done: list[Step] | None = None) -> None:
        super().__init__(says)
        self.step, self.says, self.fix = step, says, fix
        self.done = done or []


async def open_upstream(
    target: Target,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[Step]]:
    """Connect as the proxy does, step by step; StepError names the step that failed."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    steps: list[Step] = []
    connector = Connector(target.section())
    try:
        transport, protocol, _ = await connector.open(
            lambda: asyncio.StreamReaderProtocol(reader), steps=steps
        )
    except ConnectError as failed:
        raise _step_error(failed, target, steps) from None
    finally:
        connector.close()
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop), steps


def _step_error(failed: ConnectError, target: Target, steps: list[Step]) -> StepError:
    """The connector's failure in the doctor's words, with its fix."""
    step, cause = failed.step, failed.cause
    why = reason(cause) if cause is not None else failed.detail
    hop = target.proxy or target.url
    host = hop.host or ""
    proxy = redact_url(str(target.proxy)) if target.proxy is not None else ""
    if step == "DNS":
        return StepError(step, f"cannot resolve {host}: {why}", _fix_route(target), steps)
    if step == "TCP":
        return StepError(step, f"cannot connect to {host}: {why}", _fix_route(target), steps)
    if step == "CONNECT":
        if failed.said:
            status = failed.said.split(" ", 2)[1] if failed.said.count(" ") else ""
            fix = (
                _FIX_AUTH
                if status == "407"
                else f"ask whoever runs {proxy} to allow {target.authority}"
            )
            return StepError(step, f"{proxy} refused the tunnel: {failed.said}", fix, steps)
        return StepError(step, f"{proxy} gave no answer: {why}", _FIX_PROXY, steps)
    tls_host = host if step == "TLS to the proxy" else target.host
    if isinstance(cause, ssl.SSLCertVerificationError):
        says = f"the certificate of {tls_host} is not trusted: {cause.verify_message}"
        return StepError(step, says, _FIX_CA, steps)
    return StepError(step, f"the handshake with {tls_host} failed: {why}", _FIX_CA, steps)


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
