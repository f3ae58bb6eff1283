"""The proxy with its inspector on and a page open, as one target for the benchmark.

    bench/run --add-proxy inspector \
        "{python} bench/inspector_page.py --port {port} --upstream {upstream}"

Runs `python -m proxy --inspector` with the given arguments and, once it listens, reads
`/_proxy/events` the way the page does, for as long as the proxy runs. SIGTERM goes on to
the proxy. The reader runs on the other CPUs, as a browser would, but its CPU time is in
the target's process tree: compare the streaming delays (W2b) with the plain proxy's,
not its CPU per event.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys


async def read_events(port: int) -> None:
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.write(
            b"GET /_proxy/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        while await reader.read(65536):
            pass
        writer.close()
        await asyncio.sleep(0.1)


async def main(arguments: list[str]) -> int:
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
    page = asyncio.create_task(read_events(port))
    code = await proxy.wait()
    page.cancel()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
