"""The proxy with its inspector on and a page open, as one target for the benchmark.

    bench/run --add-proxy inspector \
        "{python} bench/inspector_page.py --port {port} --upstream {upstream}"

Runs `python -m proxy --inspector` with the given arguments and, once it listens, reads
`/_proxy/events` the way the page does, for as long as the proxy runs, with the newest
exchange selected: each update of it fetches `/_proxy/exchanges/{seq}` (its request body,
answer so far and events), one fetch at a time, as the page does. SIGTERM goes on to the
proxy. The reader runs on the other CPUs, as a browser would, but its CPU time is in
the target's process tree: compare the streaming delays (W2b) with the plain proxy's,
not its CPU per event.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

SEQ = re.compile(rb'"seq":\s*(\d+)')


class Selection:
    """The exchange the page shows: the newest one seen, fetched again when it changes."""

    def __init__(self) -> None:
        self.seq: int | None = None
        self.changed = asyncio.Event()

    def saw(self, chunk: bytes) -> None:
        found = [int(match) for match in SEQ.findall(chunk)]
        if found and (self.seq is None or max(found) >= self.seq):
            self.seq = max(found)
            self.changed.set()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the proxy, once it listens."""
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)


async def read_events(port: int, selection: Selection) -> None:
    while True:
        reader, writer = await connect(port)
        writer.write(
            b"GET /_proxy/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        while chunk := await reader.read(65536):
            selection.saw(chunk)
        writer.close()
        await asyncio.sleep(0.1)


async def follow(port: int, selection: Selection) -> None:
    """Fetch the selected exchange's content after each change, one request at a time, on
    one kept-alive connection (the page's `fetchContent`)."""
    while True:
        reader, writer = await connect(port)
        try:
            while True:
                await selection.changed.wait()
                selection.changed.clear()
                writer.write(
                    b"GET /_proxy/exchanges/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % selection.seq
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if length is None:
                    break
                await reader.readexactly(int(length.group(1)))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        writer.close()
        await asyncio.sleep(0.1)


async def main(arguments: list[str]) -> int:
    # --no-select: the page open with no exchange selected (only the event stream read).
    select = "--no-select" not in arguments
    arguments = [argument for argument in arguments if argument != "--no-select"]
    port = int(arguments[arguments.index("--port") + 1])
    proxy = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--inspector", *arguments
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, proxy.send_signal, signum)
    # The proxy keeps the CPU it was pinned to; the page moves to the others, where a
    # browser would run (beside the load generator), so it does not compete with the proxy.
    pinned = os.sched_getaffinity(0)
    elsewhere = set(range(os.cpu_count() or 1)) - pinned
    if elsewhere:
        os.sched_setaffinity(0, elsewhere)
    selection = Selection()
    page = [asyncio.create_task(read_events(port, selection))]
    if select:
        page.append(asyncio.create_task(follow(port, selection)))
    code = await proxy.wait()
    for task in page:
        task.cancel()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
