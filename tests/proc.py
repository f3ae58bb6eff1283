"""The real command as a subprocess: start it, find where it listens, read its log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProxyProcess:
    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    address: str = ""

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    async def next_line(self, timeout: float = 20) -> dict[str, Any]:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            raw = await self.process.stderr.readline()
        if not raw:
            raise EOFError("the proxy closed its stderr")
        try:
            line: dict[str, Any] = json.loads(raw)
        except ValueError:
            # Not a log line: the proxy said why it could not start (a config error).
            raise AssertionError(
                f"the proxy wrote: {raw.decode(errors='replace').strip()}"
            ) from None
        self.lines.append(line)
        return line

    async def wait_for(self, event: str, timeout: float = 20) -> dict[str, Any]:
        while True:
            line = await self.next_line(timeout)
            if line["event"] == event:
                return line

    async def rest(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Every remaining log line, once the process has exited."""
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            tail = await self.process.stderr.read()
            await self.process.wait()
        self.lines.extend(json.loads(raw) for raw in tail.splitlines() if raw.strip())
        return self.lines

    def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def start_proxy_process(*args: str, env: dict[str, str] | None = None) -> ProxyProcess:
    """Run `python -m proxy` with JSON logs on port 0 and wait for its listening line."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")}
    environ.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "--port",
        "0",
        "--log-format",
        "json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    proxy = ProxyProcess(process)
    try:
        listening = await proxy.wait_for("listening")
    except BaseException:
        proxy.stop()
        raise
    proxy.address = listening["address"]
    return proxy


async def run_cli(
    *args: str, environ: Mapping[str, str], timeout: float = 60
) -> tuple[int, str, str]:
    """The real command run to its end, without blocking the loop the fakes answer from:
    its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(environ),
    )
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class WritingProcess:
    """The real command in either log format, its output (stderr and stdout, one pipe)
    read as it comes (a debug log must never fill the pipe): all it wrote."""

    process: asyncio.subprocess.Process
    port: int
    written: bytearray
    reading: asyncio.Task[None] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def read(self) -> None:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self.written += chunk

    async def stop(self, timeout: float = 30) -> bytes:
        """SIGTERM; once it exited (0), everything it wrote."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            assert await self.process.wait() == 0
            assert self.reading is not None
            await self.reading
        return bytes(self.written)


@contextlib.asynccontextmanager
async def writing_process(
    *args: str, environ: Mapping[str, str] | None = None
) -> AsyncIterator[WritingProcess]:
    """Run `python -m proxy --port 0 ARGS` (any --log-format): the port is read from its
    first line (the start-up line, in either format). Killed on the way out if still up."""
    if environ is None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(environ),
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            first = await process.stdout.readline()
        found = re.search(rb"http://127\.0\.0\.1:(\d+)", first)
        assert found is not None, first
        running = WritingProcess(process, int(found.group(1)), bytearray(first))
        running.reading = asyncio.ensure_future(running.read())
        yield running
    finally:
        if process.returncode is None:
            process.kill()
