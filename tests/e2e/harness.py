"""Runs the selected scenarios on a background event loop, all lanes at once, and hands
each test the outcome it asserts on as soon as that scenario has finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import traceback
from dataclasses import dataclass, field

from tests.e2e.fake_chatgpt import FakeChatGPT
from tests.e2e.rig import Rig, Step
from tests.e2e.scenarios import Scenario

SCENARIO_TIMEOUT = 600.0  # a bound for a hang; the slowest scenario takes about 2 min


@dataclass(eq=False, repr=False)
class Outcome:
    name: str
    rig: Rig | None = None
    seconds: float = 0.0
    error: BaseException | None = None
    steps: dict[str, Step] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<scenario {self.name}: {', '.join(self.steps)}>"

    def step(self, name: str) -> Step:
        if name not in self.steps:
            raise AssertionError(f"scenario {self.name} has no step {name!r}: it ended early")
        return self.steps[name]

    def report(self) -> str:
        lines = [f"##### scenario {self.name}, {self.seconds:.1f} s"]
        if self.rig is not None:
            lines.append(self.rig.report())
        if self.error is not None:
            lines.append("".join(traceback.format_exception(self.error)))
        return "\n".join(lines)


async def run_scenario(scenario: Scenario, outcome: Outcome) -> None:
    began = time.monotonic()
    try:
        async with (
            asyncio.timeout(SCENARIO_TIMEOUT),
            Rig(FakeChatGPT(), scenario.proxy_args) as rig,
        ):
            outcome.rig = rig
            outcome.steps = rig.steps
            await scenario.steps(rig)
    finally:
        outcome.seconds = time.monotonic() - began


class Harness:
    def __init__(self, scenarios: list[Scenario]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="e2e", daemon=True)
        self._thread.start()
        self._results = {s.name: concurrent.futures.Future[Outcome]() for s in scenarios}
        lanes: dict[str, list[Scenario]] = {}
        for scenario in scenarios:
            lanes.setdefault(scenario.lane, []).append(scenario)
        for lane in lanes.values():
            asyncio.run_coroutine_threadsafe(self._run_lane(lane), self._loop)

    async def _run_lane(self, scenarios: list[Scenario]) -> None:
        for scenario in scenarios:
            outcome = Outcome(scenario.name)
            task = asyncio.create_task(run_scenario(scenario, outcome))
            await asyncio.wait([task])
            if not task.cancelled():
                outcome.error = task.exception()
            self._results[scenario.name].set_result(outcome)

    def finished(self) -> list[Outcome]:
        return [f.result() for f in self._results.values() if f.done()]

    def outcome(self, name: str) -> Outcome:
        return self._results[name].result(timeout=len(self._results) * SCENARIO_TIMEOUT)

    def close(self) -> None:
        """Stop what still runs (clients killed, rigs torn down), then the loop."""
        asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(timeout=120)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    @staticmethod
    async def _cancel_all() -> None:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()
