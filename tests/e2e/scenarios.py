"""The scenarios: which clients run, in which order, against the fake directly (the
control runs, which reproduce the bug) or through the proxy. Each runs on its own rig;
scenarios in the same lane share an installed OpenClaw (and its compile cache) and run
one after another, lanes run at once.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tests.e2e import openclaw
from tests.e2e.clients import CODEX, NODE22, OPENAI_JS, OPENAI_PY, Install, codex_exec, openai_sdk
from tests.e2e.rig import Rig


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    lane: str
    needs: tuple[Install, ...]
    steps: Callable[[Rig], Awaitable[None]]
    proxy_args: tuple[str, ...] = ()  # beyond --upstream


@contextlib.contextmanager
def temporary_home(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"e2e-{name}-") as folder:
        yield Path(folder)


async def openclaw_old_image(rig: Rig) -> None:
    """The proxy runs with `--inspector`: after the image arrives, the step also holds what
    the inspector shows of each exchange (`inspector N` files) and the image it serves."""
    for name, base_url in (("control", rig.direct), ("proxy", rig.via_proxy)):
        with temporary_home("openclaw-image") as home:
            openclaw.set_up(openclaw.OLD, home, base_url)
            step = await rig.step(name, openclaw.image(openclaw.OLD, home))
    step.run.files.update(await rig.inspected())


async def openclaw_old_chat(rig: Rig) -> None:
    with temporary_home("openclaw-chat") as home:
        openclaw.set_up(openclaw.OLD, home, rig.via_proxy)
        await rig.step("proxy", openclaw.model_run(openclaw.OLD, home))


async def openclaw_old_doctor(rig: Rig) -> None:
    """The machine of issue 15: OpenClaw 2026.4.23 pointed straight at chatgpt.com (the
    fake here), as a user has it. `doctor` names what is wrong, `doctor --fix` edits the
    config, and image generation then works through the proxy with no other edit."""
    claw = openclaw.OLD
    # The doctor points clients at the relay, which is where the proxy is reached here.
    assert rig.relay is not None
    where = ["--upstream", rig.fake.origin, "--port", str(rig.relay.port)]
    with temporary_home("openclaw-doctor") as home:
        openclaw.set_up(claw, home, rig.direct, private_network=False)
        await rig.step("doctor", openclaw.proxy_doctor(claw, home, *where))
        fix = await rig.step("doctor --fix", openclaw.proxy_doctor(claw, home, "--fix", *where))
        for backup in (home / ".openclaw").glob("openclaw.json.bak-*"):
            fix.run.files[backup.name] = backup.read_bytes()
        await rig.step("image", openclaw.image(claw, home))


async def openclaw_latest(rig: Rig) -> None:
    """One state for all: doctor migrates it once (about 20 s of CPU)."""
    claw = openclaw.LATEST
    with temporary_home("openclaw-latest") as home:
        openclaw.set_up(claw, home, rig.via_proxy)
        await rig.step("doctor", openclaw.doctor(claw, home))
        await rig.step("image", openclaw.image(claw, home))
        await rig.step("agent websocket", openclaw.agent(claw, home))
        rig.fake.refuse_websocket = True
        await rig.step("agent http", openclaw.agent(claw, home))


async def codex(rig: Rig) -> None:
    with temporary_home("codex") as home:
        await rig.step("control", codex_exec(home, rig.direct))
    with temporary_home("codex") as home:
        await rig.step("websocket", codex_exec(home, rig.via_proxy))
    rig.fake.refuse_websocket = True
    with temporary_home("codex") as home:
        await rig.step("http", codex_exec(home, rig.via_proxy))


async def codex_usage(rig: Rig) -> None:
    """The fake says how much of the plan is used (headers on every answer, a
    codex.rate_limits message in each WebSocket response, then a 429): each step keeps
    what Codex wrote of it (its rollout file: the rate limits it shows in /status) and
    what the proxy says (`/_proxy/usage`)."""
    now = int(time.time())
    primary, secondary = now + 2 * 3600 + 11 * 60 + 30, now + 4 * 86400
    rig.fake.usage_headers = {
        "x-codex-primary-used-percent": "42",
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": str(primary),
        "x-codex-secondary-used-percent": "12",
        "x-codex-secondary-window-minutes": "10080",
        "x-codex-secondary-reset-at": str(secondary),
        "x-codex-plan-type": "plus",
        "x-codex-credits-has-credits": "true",
        "x-codex-credits-unlimited": "false",
        "x-codex-credits-balance": "38",
    }
    rig.fake.rate_limits = {
        "plan_type": "plus",
        "rate_limits": {
            "primary": {"used_percent": 64, "window_minutes": 300, "reset_at": primary},
            "secondary": {"used_percent": 21, "window_minutes": 10080, "reset_at": secondary},
        },
        "credits": {"has_credits": True, "unlimited": False, "balance": "37"},
    }
    for name, refuse in (("websocket", False), ("http", True), ("limit", True)):
        rig.fake.refuse_websocket = refuse
        if name == "limit":
            rig.fake.usage_headers["x-codex-primary-used-percent"] = "100"
            rig.fake.usage_headers["x-codex-active-limit"] = "codex"
            rig.fake.usage_limit = {"type": "usage_limit_reached", "resets_at": primary}
        with temporary_home("codex-usage") as home:
            step = await rig.step(name, codex_exec(home, rig.via_proxy, json_events=True))
            rollouts = sorted((home / ".codex" / "sessions").glob("**/rollout-*.jsonl"))
            step.run.files["rollout"] = b"".join(path.read_bytes() for path in rollouts)
        step.run.files["proxy usage"] = await rig.plan_usage()


def acknowledge(rig: Rig, line: str) -> None:
    """An `EVENT <seq> …` line from the SDK program: the fake may send the next event."""
    kind, _, rest = line.partition("\t")
    if kind == "EVENT":
        rig.fake.ack(int(rest.split("\t", 1)[0]))


async def sdk(language: str, rig: Rig) -> None:
    with temporary_home(f"sdk-{language}") as home:
        await rig.step("control", openai_sdk(language, home, rig.direct, "stream"))
    rig.fake.lockstep = True
    with temporary_home(f"sdk-{language}") as home:
        command = openai_sdk(language, home, rig.via_proxy, "stream")
        await rig.step("stream", command, partial(acknowledge, rig))
    rig.fake.lockstep = False
    with temporary_home(f"sdk-{language}") as home:
        await rig.step("once", openai_sdk(language, home, rig.via_proxy, "once"))
    rig.fake.stream_error = "server_is_overloaded"
    with temporary_home(f"sdk-{language}") as home:
        await rig.step("error in stream", openai_sdk(language, home, rig.via_proxy, "stream"))


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "openclaw_old_image",
            "openclaw-old",
            (openclaw.OLD.install, NODE22),
            openclaw_old_image,
            ("--inspector",),
        ),
        Scenario(
            "openclaw_old_chat", "openclaw-old", (openclaw.OLD.install, NODE22), openclaw_old_chat
        ),
        Scenario(
            "openclaw_old_doctor",
            "openclaw-old",
            (openclaw.OLD.install, NODE22),
            openclaw_old_doctor,
        ),
        Scenario(
            "openclaw_latest",
            "openclaw-latest",
            (openclaw.LATEST.install, openclaw.LATEST.node),
            openclaw_latest,
        ),
        Scenario("codex", "codex", (CODEX,), codex),
        Scenario("codex_usage", "codex", (CODEX,), codex_usage),
        Scenario("openai_python", "openai-python", (OPENAI_PY,), partial(sdk, "python")),
        Scenario("openai_js", "openai-js", (OPENAI_JS, NODE22), partial(sdk, "js")),
    )
}
