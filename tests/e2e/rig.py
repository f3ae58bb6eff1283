"""One scenario's world: a fake chatgpt.com, the proxy in front of it (the real command,
as a subprocess), and a recording relay in front of the proxy, all on 127.0.0.1.

A client pointed at `via_proxy` goes client -> relay -> proxy -> fake; at `direct`, it
reaches the fake with no proxy at all (the control runs). Each client run is a `Step`
that knows what the fake received, what the client sent and what the proxy logged
meanwhile, and can explain itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.e2e.clients import Command
from tests.e2e.fake_chatgpt import FakeChatGPT, Received
from tests.e2e.http1 import Message
from tests.e2e.process import ClientRun
from tests.e2e.relay import Relay
from tests.proc import ProxyProcess, start_proxy_process

EXCHANGE_EVENTS = ("request", "websocket")


@dataclass(slots=True, repr=False)
class Step:
    name: str
    run: ClientRun
    received: list[Received]  # by the fake, during this run
    sent: list[Message]  # by the client to the relay (none for a direct run)
    proxy_lines: list[dict[str, Any]]  # the proxy's canonical lines for those exchanges

    def __repr__(self) -> str:
        return f"<step {self.name}: {self.run!r}>"

    def report(self) -> str:
        fake = "\n".join(f"  {r.summary()}" for r in self.received) or "  (nothing)"
        sent = (
            "\n".join(f"  {m.start_line} ({len(m.body)} B body)" for m in self.sent)
            or "  (nothing)"
        )
        proxy = "\n".join(f"  {proxy_summary(line)}" for line in self.proxy_lines) or "  (nothing)"
        return (
            f"=== step {self.name}\n{self.run.report()}\n"
            f"--- the client sent (at the relay)\n{sent}\n"
            f"--- the fake received\n{fake}\n--- the proxy logged\n{proxy}"
        )


def proxy_summary(line: dict[str, Any]) -> str:
    keys = ("method", "path", "upstream_path", "rule", "status", "outcome", "cause", "diagnosis")
    return " ".join(f"{k}={line[k]}" for k in keys if line.get(k) not in (None, ""))


class Rig:
    def __init__(self, fake: FakeChatGPT, proxy_args: tuple[str, ...] = ()) -> None:
        self.fake = fake
        self.proxy_args = proxy_args
        self.relay: Relay | None = None
        self.proxy: ProxyProcess | None = None
        self.proxy_exit: int | None = None
        self.steps: dict[str, Step] = {}
        self._drain: asyncio.Task[None] | None = None
        self._logged = asyncio.Event()

    @property
    def via_proxy(self) -> str:
        assert self.relay is not None
        return f"http://127.0.0.1:{self.relay.port}/backend-api"

    @property
    def direct(self) -> str:
        return f"{self.fake.origin}/backend-api"

    async def __aenter__(self) -> Rig:
        await self.fake.start()
        # A short shutdown grace: the clients are gone by the time the rig stops.
        self.proxy = await start_proxy_process(
            "--upstream",
            self.fake.origin,
            *self.proxy_args,
            env={"CODEX_PATH_PROXY_SHUTDOWN_GRACE": "2"},
        )
        self._drain = asyncio.create_task(self._read_log(self.proxy))
        self.relay = Relay(self.proxy.port)
        await self.relay.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.relay is not None:
            await self.relay.close()
        if self.proxy is not None:
            await self._stop_proxy(self.proxy)
        await self.fake.stop()

    async def _read_log(self, proxy: ProxyProcess) -> None:
        """Keep reading the proxy's stderr (a full pipe would stall it)."""
        assert proxy.process.stderr is not None
        while raw := await proxy.process.stderr.readline():
            try:
                proxy.lines.append(json.loads(raw))
            except ValueError:
                proxy.lines.append({"event": "not JSON", "text": raw.decode(errors="replace")})
            self._logged.set()

    async def _stop_proxy(self, proxy: ProxyProcess) -> None:
        if proxy.process.returncode is None:
            proxy.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                self.proxy_exit = await proxy.process.wait()
                if self._drain is not None:
                    await self._drain
        except TimeoutError:
            proxy.stop()
            self.proxy_exit = await proxy.process.wait()

    def exchanges_logged(self) -> list[dict[str, Any]]:
        lines = self.proxy.lines if self.proxy is not None else []
        return [line for line in lines if line.get("event") in EXCHANGE_EVENTS]

    async def step(
        self, name: str, command: Command, on_line: Callable[[str], None] | None = None
    ) -> Step:
        """Run one client and gather what it caused (after its connections have closed and
        the proxy has logged each exchange, within a few seconds)."""
        assert self.relay is not None
        marks = (len(self.fake.received), len(self.relay.connections), len(self.exchanges_logged()))
        run = await command.run(on_line)
        await self.relay.quiet()
        sent = [m for c in self.relay.connections[marks[1] :] for m in c.requests()]
        # The proxy's own endpoints (/_proxy/healthz, asked by its doctor) log no line.
        forwarded = [m for m in sent if not m.target.startswith("/_proxy/")]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while len(self.exchanges_logged()) - marks[2] < len(forwarded):
                    self._logged.clear()
                    await self._logged.wait()
        step = Step(
            name, run, self.fake.received[marks[0] :], sent, self.exchanges_logged()[marks[2] :]
        )
        self.steps[name] = step
        return step

    async def plan_usage(self) -> bytes:
        """What the proxy says of the plan's usage (`/_proxy/usage`), asked of it directly."""
        assert self.proxy is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.proxy.port}/_proxy/usage") as response,
        ):
            return await response.read()

    async def inspected(self) -> dict[str, bytes]:
        """What the inspector (`--inspector`) serves of each exchange still in its ring, as
        the page fetches it: `inspector N` is exchange N's content, `inspector N image K`
        each image its answer holds. Asked of the proxy directly, not through the relay."""
        assert self.proxy is not None
        origin = f"http://127.0.0.1:{self.proxy.port}"
        found: dict[str, bytes] = {}
        async with aiohttp.ClientSession() as session:
            for seq in range(1, 100):
                async with session.get(f"{origin}/_proxy/exchanges/{seq}") as response:
                    if response.status == 404:
                        break
                    raw = await response.read()
                found[f"inspector {seq}"] = raw
                for item in json.loads(raw).get("answer", {}).get("items", []):
                    if "url" in item.get("image", {}):
                        async with session.get(origin + item["image"]["url"]) as response:
                            found[f"inspector {seq} image {item['id']}"] = await response.read()
        return found

    def report(self) -> str:
        steps = "\n".join(step.report() for step in self.steps.values())
        return f"{steps}\n=== proxy exit code after SIGTERM: {self.proxy_exit}"
