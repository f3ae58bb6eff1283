"""The way out: DNS, TCP, the CONNECT tunnel (with upstream.proxy) and TLS (with
upstream.ca_bundle) to the upstream, then one request without credentials to the live and
to the retired path, with the answers classified.

`open_upstream` is the only code that opens the connection: one function of the standard
library's asyncio and ssl, to be swapped for the forwarding path's own connector later.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass

from yarl import URL

from proxy.doctor.findings import Finding, Status, shown
from proxy.doctor.wire import Answer, NoAnswerError, exchange, reason, request
from proxy.settings import Upstream, redact_url

AREA = "The way out"
LIVE = "/backend-api/codex/responses"
RETIRED = "/backend-api/responses"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    url: URL
    proxy: URL | None
    ca_bundle: str
    timeout: float

    @classmethod
    def from_settings(cls, upstream: Upstream) -> Target:
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


async def check(target: Target) -> list[Finding]:
    try:
        _, writer, steps = await open_upstream(target)
    except StepError as failed:
        done = [_step(step) for step in failed.done]
        where = failed.step
        return [
            *done,
            Finding(
                area=AREA, status=Status.PROBLEM, where=where, says=failed.says, fix=failed.fix
            ),
        ]
    await _close(writer)
    findings = [_step(step) for step in steps]
    if target.url.scheme == "http":
        says = "plain http:// upstream: no TLS"
        findings.append(Finding(area=AREA, status=Status.INFO, where="TLS", says=says))
    for path, judge in ((LIVE, judge_live), (RETIRED, judge_retired)):
        where = f"POST {target.url.origin()}{path}"
        try:
            answer = await ask(target, path)
        except (StepError, NoAnswerError) as exc:
            says = exc.says if isinstance(exc, StepError) else str(exc)
            fix = "run the doctor again; if it persists, the upstream or the network drops requests"
            findings.append(
                Finding(area=AREA, status=Status.PROBLEM, where=where, says=says, fix=fix)
            )
            continue
        status, says, fix = judge(answer)
        findings.append(Finding(area=AREA, status=status, where=where, says=says, fix=fix))
    return findings


async def ask(target: Target, path: str) -> Answer:
    """One POST of `{}` without credentials, on a connection of its own."""
    reader, writer, _ = await open_upstream(target)
    try:
        host = target.url.host_port_subcomponent or target.host
        data = request("POST", path, host, body=b"{}")
        return await exchange(reader, writer, data, timeout=target.timeout)
    finally:
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1):
            await writer.wait_closed()


def _step(step: Step) -> Finding:
    return Finding(area=AREA, status=Status.OK, where=step.name, says=step.says)


def _is_json(answer: Answer) -> bool:
    return answer.media_type == "application/json" or answer.media_type.endswith("+json")


def _is_cloudflare_page(answer: Answer) -> bool:
    return answer.status == 403 and answer.media_type == "text/html"


def _ray(answer: Answer) -> str:
    ray = answer.header("cf-ray")
    return f", cf-ray {shown(ray)}" if ray else ""


def judge_live(answer: Answer) -> tuple[Status, str, str]:
    if answer.status in (401, 403) and _is_json(answer):
        return Status.OK, f"{answer.summary} without credentials: reachable and alive", ""
    if _is_cloudflare_page(answer):
        says = f"{answer.summary}{_ray(answer)}: the Cloudflare page on the live path"
        fix = "this network (or its exit address) is blocked: try another; no setting changes that"
        return Status.PROBLEM, says, fix
    shown_answer = f"{answer.summary}: {answer.excerpt()}"
    if answer.status >= 500:
        return Status.PROBLEM, shown_answer, "the upstream is failing: try again later"
    return Status.INFO, f"{shown_answer} (not the usual 401; shown as it came)", ""


def judge_retired(answer: Answer) -> tuple[Status, str, str]:
    if _is_cloudflare_page(answer):
        says = f"{answer.summary}{_ray(answer)}: retired, as expected; the rules rewrite it"
        return Status.OK, says, ""
    if answer.status in (401, 403) and _is_json(answer):
        return Status.INFO, f"{answer.summary}: still answers like the live path from here", ""
    return Status.INFO, f"{answer.summary}: {answer.excerpt()} (shown as it came)", ""
