"""`codex-path-proxy doctor`: read every area, probe the listeners and the way out at
once, print the checklist; with --fix, apply the edits and check again."""

from __future__ import annotations

import asyncio
import time

from yarl import URL

from proxy.config import Sourced
from proxy.doctor import codex, environment, listener, openclaw, render, wayout
from proxy.doctor.baseurl import Places, origin_of, parse, proxy_base
from proxy.doctor.connect import Target
from proxy.doctor.findings import Finding, Status
from proxy.doctor.fix import Applied, apply_all
from proxy.doctor.inputs import Inputs
from proxy.settings import Settings, is_loopback


async def examine(settings: Settings, sources: Sourced, inputs: Inputs) -> list[Finding]:
    claw = openclaw.read(inputs)
    codex_state = codex.read(inputs)
    own = origin_of(URL(proxy_base(settings.listen)))
    upstreams = Places.build(settings.listen, settings.upstream.url, frozenset()).upstreams
    referenced = [
        origin_of(url)
        for base in (*openclaw.bases(claw), *codex.bases(codex_state), *environment.bases(inputs))
        if (url := parse(base)) is not None and is_loopback(url.host or "")
    ]
    listening = {own} | {origin for origin in referenced if origin not in upstreams}
    answers, way_out = await asyncio.gather(
        listener.probe(listening), wayout.check(Target.from_settings(settings.upstream))
    )
    found = frozenset(origin for origin, answer in answers.items() if listener.is_proxy(answer))
    about, plan = (
        await asyncio.gather(listener.running(own), listener.plan_usage(own))
        if own in found
        else (None, None)
    )
    places = Places.build(settings.listen, settings.upstream.url, found)
    return [
        *listener.check(settings, sources, own, answers, about, plan=plan),
        *openclaw.check(claw, places),
        *codex.check(codex_state, places, now=inputs.now),
        *environment.check(inputs, places, settings.upstream),
        *way_out,
    ]


def doctor(
    settings: Settings,
    sources: Sourced,
    inputs: Inputs,
    *,
    fix: bool,
    as_json: bool,
) -> int:
    """Print the checklist (after the fixes, with --fix); 0 when nothing is wrong."""
    findings = asyncio.run(examine(settings, sources, inputs))
    done: list[Applied] | None = None
    if fix:
        edits = [edit for finding in findings for edit in finding.edits]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(inputs.now))
        done = apply_all(edits, stamp=stamp)
        if done:
            findings = asyncio.run(examine(settings, sources, inputs))
    if as_json:
        print(render.as_json(findings, done))
    else:
        lines = render.outcomes(done or [])
        if lines:
            lines += ["", "After the edits:"]
        lines += render.checklist(findings)
        lines += ["", render.summary(findings, fixed=fix)]
        print("\n".join(lines))
    return 1 if any(f.status is Status.PROBLEM for f in findings) else 0
