"""This proxy: whether it answers /_proxy/healthz where the settings (and the clients'
configs) say it listens, and whether its rule table rewrites the retired path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from proxy import __version__
from proxy.config import Sourced
from proxy.doctor.baseurl import Origin
from proxy.doctor.findings import Finding, Status
from proxy.doctor.wire import Answer, NoAnswerError, exchange, reason, request
from proxy.rules import rewrite
from proxy.settings import Settings

AREA = "This proxy"
HEALTHZ = "/_proxy/healthz"
TIMEOUT = 5.0
RETIRED = "/backend-api/responses"
_LAYERS = ("file", "environment", "flag")  # how proxy.config names a value's source
START = (
    "start it: `codex-path-proxy service install` (then it runs at every login), "
    "or `codex-path-proxy` in a terminal"
)


async def healthz(origin: Origin) -> Answer | str:
    """The answer to GET /_proxy/healthz, or why there was none."""
    _, host, port = origin
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return reason(exc)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return await exchange(reader, writer, request("GET", HEALTHZ, authority), timeout=TIMEOUT)
    except NoAnswerError as exc:
        return str(exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe(origins: Iterable[Origin]) -> dict[Origin, Answer | str]:
    targets = sorted(set(origins))
    answers = await asyncio.gather(*(healthz(origin) for origin in targets))
    return dict(zip(targets, answers, strict=True))


def is_proxy(answer: Answer | str) -> bool:
    return (
        isinstance(answer, Answer)
        and answer.status == 200
        and answer.media_type == "application/json"
        and answer.body.replace(b" ", b"") == b'{"status":"ok"}'
    )


def url(origin: Origin) -> str:
    scheme, host, port = origin
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def check(
    settings: Settings,
    sources: Sourced,
    own: Origin,
    answers: dict[Origin, Answer | str],
) -> list[Finding]:
    given = dict.fromkeys(value.source for value in sources.values() if value.source != "default")
    layers = sorted(given, key=lambda source: _LAYERS.index(source.split(" ", 1)[0]))
    where = f"settings: {', '.join(layers) or 'built-in defaults'}"
    findings = [
        Finding(
            area=AREA, status=Status.INFO, where="codex-path-proxy", says=f"{__version__}, {where}"
        ),
        _listening(settings, sources, own, answers[own]),
    ]
    for origin, answer in answers.items():
        if origin != own and is_proxy(answer):
            says = f"another codex-path-proxy answers {HEALTHZ} (a client config points here)"
            findings.append(Finding(area=AREA, status=Status.OK, where=url(origin), says=says))
    findings.append(_rules(settings, sources))
    return findings


def _listening(settings: Settings, sources: Sourced, own: Origin, answer: Answer | str) -> Finding:
    where = url(own)
    if settings.listen.port == 0:
        says = "listen.port = 0: a new free port at every start, so no client can be pointed at it"
        fix = f"set listen.port (8780 is the default) in {sources['listen', 'port'].source}"
        return Finding(area=AREA, status=Status.PROBLEM, where="listen.port", says=says, fix=fix)
    if is_proxy(answer):
        return Finding(area=AREA, status=Status.OK, where=where, says=f"answers {HEALTHZ}")
    if isinstance(answer, str):
        says = f"nothing answers there ({answer})"
        return Finding(area=AREA, status=Status.PROBLEM, where=where, says=says, fix=START)
    says = f"answers {HEALTHZ} with {answer.summary}: another program holds that port"
    fix = (
        "stop that program, or set listen.port to a free port and run "
        "`codex-path-proxy doctor --fix` to point the clients there"
    )
    return Finding(area=AREA, status=Status.PROBLEM, where=where, says=says, fix=fix)


def _rules(settings: Settings, sources: Sourced) -> Finding:
    active = settings.rewrite.active
    names = ", ".join(rule.name for rule in active) or "none"
    result = rewrite(active, RETIRED)
    where = "rewrite.rules"
    if result.rule is not None:
        says = f"{len(active)} active ({names}): {RETIRED} → {result.target}"
        return Finding(area=AREA, status=Status.OK, where=where, says=says)
    disabled = sources["rewrite", "disabled"]
    if settings.rewrite.disabled:
        fix = f"remove the rule from rewrite.disabled ({disabled.source})"
    else:
        fix = (
            f"restore a rule for {RETIRED} in rewrite.rules ({sources['rewrite', 'rules'].source})"
        )
    says = f"active: {names}; {RETIRED} would reach the upstream unrewritten (403)"
    return Finding(area=AREA, status=Status.PROBLEM, where=where, says=says, fix=fix)
