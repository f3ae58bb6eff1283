"""The way out: the connection to the upstream step by step (connect.py), then one
request without credentials to the live and to the retired path, its answer classified:
JSON 401 is alive, an HTML 403 is the Cloudflare page, anything else is shown."""

from __future__ import annotations

import asyncio
import contextlib

from proxy.doctor.connect import Step, StepError, Target, open_upstream
from proxy.doctor.findings import Finding, Status, shown
from proxy.doctor.wire import Answer, NoAnswerError, exchange, request

AREA = "The way out"
LIVE = "/backend-api/codex/responses"
RETIRED = "/backend-api/responses"


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
