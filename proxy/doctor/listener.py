"""This proxy: whether it answers /_proxy/healthz where the settings (and the clients'
configs) say it listens, which version runs there with which rule table
(/_proxy/version), whether that table rewrites the retired path, and the plan usage it
last saw (/_proxy/usage)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from typing import Any

from proxy import __version__, usage_text
from proxy.config import Sourced
from proxy.doctor.baseurl import Address
from proxy.doctor.findings import Finding, Status
from proxy.doctor.wire import Answer, NoAnswerError, exchange, reason, request
from proxy.rules import rewrite
from proxy.settings import Settings

AREA = "This proxy"
HEALTHZ = "/_proxy/healthz"
VERSION = "/_proxy/version"
USAGE = "/_proxy/usage"
TIMEOUT = 5.0
RETIRED = "/backend-api/responses"
_LAYERS = ("file", "environment", "flag")  # how proxy.config names a value's source
START = (
    "start it: `codex-path-proxy service install` (then it runs at every login), "
    "or `codex-path-proxy` in a terminal"
)


async def healthz(origin: Address) -> Answer | str:
    """The answer to GET /_proxy/healthz, or why there was none."""
    return await ask(origin, HEALTHZ)


async def running(origin: Address) -> dict[str, object] | None:
    """What the proxy there says of itself (GET /_proxy/version); None from a proxy too
    old to say, or from something else."""
    return await _object(origin, VERSION, "version")


async def plan_usage(origin: Address) -> dict[str, Any] | None:
    """What the proxy there has seen of the plan's usage (GET /_proxy/usage); None from
    a proxy that does not say (too old, or metrics off)."""
    return await _object(origin, USAGE, "accounts")


async def _object(origin: Address, path: str, key: str) -> dict[str, Any] | None:
    """A 200 JSON object with `key` in it, at `path` there; else None."""
    answer = await ask(origin, path)
    if not isinstance(answer, Answer) or answer.status != 200:
        return None
    try:
        found = json.loads(answer.body)
    except ValueError:
        return None
    return found if isinstance(found, dict) and key in found else None


async def ask(origin: Address, path: str) -> Answer | str:
    """The answer to a GET of `path` there, or why there was none."""
    _, host, port = origin
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return reason(exc)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return await exchange(reader, writer, request("GET", path, authority), timeout=TIMEOUT)
    except NoAnswerError as exc:
        return str(exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe(origins: Iterable[Address]) -> dict[Address, Answer | str]:
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


def url(origin: Address) -> str:
    scheme, host, port = origin
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def check(
    settings: Settings,
    sources: Sourced,
    own: Address,
    answers: dict[Address, Answer | str],
    about: dict[str, object] | None = None,
    *,
    plan: dict[str, Any] | None = None,
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
    if about is not None:
        findings.append(_running(own, about))
    if plan is not None:
        findings.append(_usage(own, plan))
    for origin, answer in answers.items():
        if origin != own and is_proxy(answer):
            says = f"another codex-path-proxy answers {HEALTHZ} (a client config points here)"
            findings.append(Finding(area=AREA, status=Status.OK, where=url(origin), says=says))
    findings.append(_rules(settings, sources))
    return findings


def _listening(settings: Settings, sources: Sourced, own: Address, answer: Answer | str) -> Finding:
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


def _running(own: Address, about: dict[str, object]) -> Finding:
    """The proxy that answers: its version and rule table, and whether it fixes the path."""
    rules = about.get("rules")
    names = ", ".join(str(name) for name in rules) if isinstance(rules, list) else "?"
    rewrites = about.get("rewrites")
    becomes = rewrites.get(RETIRED) if isinstance(rewrites, dict) else None
    says = f"runs {about.get('version')}, rules: {names or 'none'}"
    if becomes is not None and becomes != RETIRED:
        return Finding(
            area=AREA,
            status=Status.OK,
            where=url(own) + VERSION,
            says=f"{says}; {RETIRED} → {becomes}",
        )
    fix = (
        "restart it with a rule for the retired path (check `rewrite.disabled`): "
        "`codex-path-proxy service install` again, or restart it in its terminal"
    )
    says = f"{says}; it sends {RETIRED} upstream unrewritten (403)"
    return Finding(area=AREA, status=Status.PROBLEM, where=url(own) + VERSION, says=says, fix=fix)


def _usage(own: Address, plan: dict[str, Any]) -> Finding:
    """The plan usage the running proxy last saw: the newest account's windows."""
    where = url(own) + USAGE
    accounts = plan.get("accounts") or []
    if not accounts:
        says = "no answer through it has carried plan usage yet"
        return Finding(area=AREA, status=Status.INFO, where=where, says=says)
    now = float(plan.get("now") or 0)
    newest = accounts[0]
    parts = []
    for limit in newest.get("limits") or []:
        family = limit.get("family")
        named = "" if family == "codex" else f" ({limit.get('name') or family})"
        for window in limit.get("windows") or []:
            when = usage_text.resets(window.get("resets_at"), now)
            parts.append(
                f"{window.get('label')}{named} {float(window.get('used_percent') or 0):.0f}% used"
                + (f", resets {when}" if when else "")
            )
        reached = limit.get("reached")
        if reached is not None:
            when = usage_text.resets(reached.get("resets_at"), now)
            parts.append(f"limit{named} reached" + (f", lifts {when}" if when else ""))
    plan_type = f" ({newest['plan_type']})" if newest.get("plan_type") else ""
    seen = usage_text.ago(now - float(newest.get("seen_at") or now))
    others = len(accounts) - 1
    says = f"last usage seen {seen}, account {newest.get('account')}{plan_type}: " + (
        "; ".join(parts) or "no window"
    )
    if others:
        plural = "s" if others > 1 else ""
        says += f"; and {others} other account{plural} (`codex-path-proxy usage`)"
    return Finding(area=AREA, status=Status.INFO, where=where, says=says)


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
