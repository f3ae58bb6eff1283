"""The forwarding path under a stateful fuzz (issue 21): hypothesis drives client
connections and a scripted upstream through the real proxy, with legal and illegal
sequences, and checks at every step that nothing of one exchange reaches another, that
every request is answered, refused or cut within the configured timeouts, and at the end
of each run that no descriptor, task or memory is left behind.

The rules: queue a request (a method, a body by length or chunked with trailers, a
reply the upstream will give: interim 103s, a body by length, chunks or the close, an
early answer, a fault), queue malformed bytes or a /_proxy request; write some or all of
what is queued (pipelining, and reads cut anywhere); settle a connection (write the rest
and wait for every answer); stall mid-request until the proxy's timeout; stop reading;
abort a connection (FIN or RST); have the upstream drop its idle connections; let time
pass. The model of what each request may get is in fuzz_verdict.py.

Run longer locally: FUZZ_PROFILE=long (or FUZZ_EXAMPLES / FUZZ_STEPS).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.fuzz_peers import settled_rss
from tests.fuzz_shapes import SLOW_FAULTS, Ask, Fault, Junk, asks, junks
from tests.fuzz_world import World
from tests.harness import StartProxy

STEP_LIMIT = 60.0
# Runs that wait for a timeout to fire are few per example, so the file stays short.
SLOW_BUDGET = 2
SLOTS = st.integers(0, 2)

# rss_mib: what resident memory may grow by after the first run (hypothesis's own
# records grow with the number of runs too).
PROFILES = {
    "ci": {"max_examples": 30, "stateful_step_count": 20, "rss_mib": 64},
    "long": {"max_examples": 400, "stateful_step_count": 50, "rss_mib": 192},
}


def _profile() -> dict[str, int]:
    return PROFILES[os.environ.get("FUZZ_PROFILE", "ci")]


def _settings() -> settings:
    name = os.environ.get("FUZZ_PROFILE", "ci")
    profile = _profile()
    examples = int(os.environ.get("FUZZ_EXAMPLES", profile["max_examples"]))
    steps = int(os.environ.get("FUZZ_STEPS", profile["stateful_step_count"]))
    ci = name == "ci"
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        # CI: the same runs on every machine, and no example database between runs; a
        # failure is reported as found (shrinking a run that waits for timeouts takes
        # minutes; each failure says what its connection saw and what reached the
        # upstream). Longer runs locally draw new runs each time, and shrink.
        derandomize=ci,
        database=None,
        phases=[Phase.explicit, Phase.generate] if ci else list(Phase),
        suppress_health_check=[HealthCheck.too_slow],
    )


# --- The machine.


@dataclass
class Env:
    """The test's loop (where the proxy runs) as seen from hypothesis's thread."""

    loop: asyncio.AbstractEventLoop
    start_proxy: StartProxy
    rss_limit: int
    failed: bool = False
    runs: int = 0
    # Resident memory after the first run: later runs may add at most `rss_limit`.
    rss_base: int | None = None

    def memory_bounded(self) -> None:
        now = settled_rss()
        if self.rss_base is None:
            self.rss_base = now
        grown = now - self.rss_base
        assert grown < self.rss_limit, f"RSS grew by {grown / 2**20:.0f} MiB since the first run"

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(STEP_LIMIT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.failed = True
            raise AssertionError(f"a step took more than {STEP_LIMIT} s") from None
        except BaseException:
            self.failed = True
            raise

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            return function(*args, **kwargs)

        return self.run(call())


class Fuzz(RuleBasedStateMachine):
    env: ClassVar[Env]

    def __init__(self) -> None:
        super().__init__()
        self.env.failed = False
        self.env.runs += 1
        # Rules that wait for a timeout to fire, left in this run (few, so the file is short).
        self.budget = SLOW_BUDGET
        world = self.world = self.env.run(_open(self.env.start_proxy, self.env.runs))
        assert isinstance(world, World)

    @rule(slot=SLOTS, ask=asks())
    def request(self, slot: int, ask: Ask) -> None:
        if ask.reply.fault in SLOW_FAULTS:
            if self.budget > 0:
                self.budget -= 1
            else:
                ask = dataclasses.replace(
                    ask, reply=dataclasses.replace(ask.reply, fault=Fault.NONE)
                )
        self.env.call(self.world.queue_ask, slot, ask)

    @rule(slot=SLOTS, junk=junks)
    def malformed(self, slot: int, junk: Junk) -> None:
        self.env.call(self.world.queue_junk, slot, junk)

    @rule(slot=SLOTS)
    def control(self, slot: int) -> None:
        self.env.call(self.world.queue_control, slot)

    @rule(slot=SLOTS, amount=st.one_of(st.integers(1, 40), st.integers(41, 4000)))
    def write_some(self, slot: int, amount: int) -> None:
        self.env.run(self.world.write(slot, amount))

    @rule(slot=SLOTS)
    def write_all(self, slot: int) -> None:
        self.env.run(self.world.write(slot, None))

    @rule(slot=SLOTS)
    def settle(self, slot: int) -> None:
        self.env.run(self.world.settle(slot))

    @precondition(lambda self: self.budget > 0)
    @rule(slot=SLOTS)
    def stall(self, slot: int) -> None:
        self.budget -= 1
        self.env.run(self.world.stall(slot))

    @rule(slot=SLOTS)
    def stop_reading(self, slot: int) -> None:
        self.env.call(self.world.pause, slot)

    @rule(slot=SLOTS, reset=st.booleans())
    def abort(self, slot: int, reset: bool) -> None:
        self.env.run(self.world.abort(slot, reset=reset))

    @rule(reset=st.booleans())
    def upstream_drops_idle(self, reset: bool) -> None:
        self.env.run(self.world.drop_idle(reset=reset))

    @precondition(lambda self: self.budget > 0)
    @rule(seconds=st.sampled_from([0.3, 0.7, 1.2]))
    def time_passes(self, seconds: float) -> None:
        self.budget -= 1
        self.env.run(self.world.wait(seconds))

    @invariant()
    def nothing_crossed(self) -> None:
        self.env.call(self.world.check)

    def teardown(self) -> None:
        self.env.run(self.world.close(judge=not self.env.failed))
        del self.world  # what the model kept (bodies of up to 2 MB) is not the proxy's
        if not self.env.failed:
            self.env.call(self.env.memory_bounded)


async def _open(start_proxy: StartProxy, run: int) -> World:
    world = World(start_proxy, run)
    await world.open()
    return world


async def test_stateful_fuzz_of_the_forwarding_path(start_proxy: StartProxy) -> None:
    profile = _profile()

    class Run(Fuzz):
        env = Env(asyncio.get_running_loop(), start_proxy, rss_limit=profile["rss_mib"] << 20)

    await asyncio.to_thread(run_state_machine_as_test, Run, settings=_settings())
