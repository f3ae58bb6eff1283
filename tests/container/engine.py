"""Podman as these tests drive it: commands run to their end, containers run in the
foreground as the README runs them (their log lines read as they come), and the README's
own Docker commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fake_upstream import FakeUpstream
from tests.harness import RawResponse, parse_response, raw_request
from tests.test_docker import ROOT

# Every container, pod and network a test makes is named with this prefix: scripts/container
# removes whatever a failed run left behind under it.
PREFIX = "cpp-test-"
# Where a container reaches the machine it runs on (podman's name for the bridge's gateway).
HOST = "host.containers.internal"
# podman's own messages on stderr (logrus), as opposed to the container's output.
_PODMAN_NOTE = re.compile(r'^time="[^"]*" level=')


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def output(self) -> str:
        """The container's own stderr lines, without podman's notes."""
        return "\n".join(line for line in self.stderr.splitlines() if not _PODMAN_NOTE.match(line))


def upstream_url(fake: FakeUpstream) -> str:
    """The fake chatgpt.com's URL as a container reaches it."""
    return f"http://{HOST}:{fake.port}"


def unique_name() -> str:
    return PREFIX + secrets.token_hex(4)


def compose_command() -> str:
    """podman-compose, as scripts/container installed it."""
    return os.environ.get("CONTAINER_COMPOSE", "podman-compose")


async def run(argv: Sequence[str], timeout: float = 120) -> Result:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def podman(*args: str, timeout: float = 120) -> Result:
    return await run(["podman", *args], timeout)


async def checked(*args: str, timeout: float = 120) -> str:
    """`podman ARGS` that must succeed: its stdout, stripped."""
    result = await podman(*args, timeout=timeout)
    assert result.returncode == 0, f"podman {shlex.join(args)}: {result}"
    return result.stdout.strip()


async def inspect(kind: str, name: str) -> dict[str, Any]:
    """What `podman {kind} inspect` says of one image or container."""
    (found,) = json.loads(await checked(kind, "inspect", name))
    assert isinstance(found, dict)
    return found


def readme_lines() -> list[str]:
    """The lines of the README's Docker section's sh block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.partition("\n## Docker\n")[2].partition("\n## ")[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's Docker section has no sh block"
    return block[1].splitlines()


def readme_command(verb: str) -> list[str]:
    """The README's `docker VERB` line as the shell splits it (comments dropped)."""
    (found,) = [
        argv
        for argv in (shlex.split(line, comments=True) for line in readme_lines())
        if argv[:2] == ["docker", verb]
    ]
    return found


def published_port(argv: Sequence[str]) -> int:
    """The host port of `-p 127.0.0.1:PORT:PORT` in a run command."""
    (spec,) = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-p"]
    address, host_port, _ = spec.split(":")
    assert address == "127.0.0.1", spec
    return int(host_port)


async def http_get(port: int, path: str) -> RawResponse:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    return parse_response(await raw_request(port, request.encode()))


@dataclass(slots=True)
class Attached:
    """`podman run` in the foreground: the container's JSON log lines (its stderr) as they
    come, and podman's own notes (such as a missing systemd for health-check timers) apart."""

    process: asyncio.subprocess.Process
    name: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    async def next_line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stderr is not None
        while True:
            async with asyncio.timeout(timeout):
                raw = await self.process.stderr.readline()
            if not raw:
                raise EOFError(f"the container's output ended; podman said {self.other}")
            text = raw.decode(errors="replace").rstrip("\n")
            if text.startswith("{"):
                line: dict[str, Any] = json.loads(text)
                self.lines.append(line)
                return line
            self.other.append(text)

    async def wait_for(self, event: str, timeout: float = 60) -> dict[str, Any]:
        while True:
            line = await self.next_line(timeout)
            if line["event"] == event:
                return line

    async def exit(self, timeout: float = 60) -> int:
        """Read the rest of the output; the exit code of `podman run`, the container's."""
        with contextlib.suppress(EOFError):
            while True:
                await self.next_line(timeout)
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    @property
    def events(self) -> list[str]:
        return [line["event"] for line in self.lines]


@contextlib.asynccontextmanager
async def attached(argv: Sequence[str], name: str) -> AsyncIterator[Attached]:
    """Run `argv` (a `podman run` naming the container `name`) until the block ends; a
    container still running then is removed."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    container = Attached(process, name)
    try:
        yield container
    finally:
        if process.returncode is None:
            await podman("rm", "--force", "--time", "0", name)
        async with asyncio.timeout(30):
            await process.communicate()
