"""One client program run as a subprocess: bounded in time, reaped with all it spawned.

OpenClaw re-executes itself and may start npm: each run gets its own session (process
group), and once the main process has exited, or the time is up, the whole group is
killed, so no grandchild outlives the run or holds its pipes open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TAIL = 3000


@dataclass(slots=True, repr=False)
class ClientRun:
    name: str
    argv: list[str]
    returncode: int | None  # None: killed when its time was up
    stdout: str
    stderr: str
    seconds: float
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __repr__(self) -> str:
        return f"<{self.name}: {self.ended()}>"

    def ended(self) -> str:
        return "killed at its timeout" if self.returncode is None else f"exit {self.returncode}"

    def output(self) -> str:
        return self.stdout + self.stderr

    def report(self) -> str:
        return (
            f"--- {self.name}: {self.ended()} after {self.seconds:.1f} s: {shown(self.argv)}\n"
            f"--- stdout (last {TAIL} chars)\n{self.stdout[-TAIL:]}\n"
            f"--- stderr (last {TAIL} chars)\n{self.stderr[-TAIL:]}"
        )


def shown(argv: list[str]) -> str:
    """The command line, short: file names without their folder, scripts and tokens elided."""
    words = (Path(a).name if a.startswith("/") else a for a in argv)
    return " ".join(w if len(w) <= 60 and "\n" not in w else "…" for w in words)


async def collect(
    stream: asyncio.StreamReader, data: bytearray, on_line: Callable[[str], None] | None
) -> None:
    """Append everything the stream gives to `data`, handing each complete line to
    `on_line` as it comes."""
    while chunk := await stream.read(65536):
        start = len(data)
        data += chunk
        if on_line is not None:
            begin = data.rfind(b"\n", 0, start) + 1
            *lines, _ = data[begin:].split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace"))


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_client(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    outputs: dict[str, Path] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> ClientRun:
    """Run argv with stdin closed; `outputs` are files read back after it ended."""
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = bytearray(), bytearray()
    readers = [
        asyncio.create_task(collect(process.stdout, out, on_line)),
        asyncio.create_task(collect(process.stderr, err, None)),
    ]
    returncode: int | None = None
    try:
        async with asyncio.timeout(timeout):
            returncode = await process.wait()
    except TimeoutError:
        pass
    finally:
        kill_group(process.pid)
        await process.wait()
        # A grandchild that left the group could still hold a pipe: read for a moment only.
        await asyncio.wait(readers, timeout=5)
        for reader in readers:
            reader.cancel()
    files = {key: path.read_bytes() for key, path in (outputs or {}).items() if path.exists()}
    return ClientRun(
        name,
        argv,
        returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.monotonic() - began,
        files,
    )
