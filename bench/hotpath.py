"""The forwarding path's own cost per small request, without sockets or a second process.

One client connection and one upstream connection of the real proxy (its listener,
relay, pool, observers, logging) are driven by hand with the bytes W1 puts on the
wire: a request head and body in, the upstream's answer in; their transports only
record what is written. What remains is the Python the proxy runs per request: steady
enough to compare changes on a noisy machine, and small enough for callgrind:

    python bench/hotpath.py                      # µs per request, best of 5 runs
    valgrind --tool=callgrind python bench/hotpath.py --requests 2000 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.app import create_proxy
from proxy.cli import loop_factory
from proxy.connection import ClientConnection
from proxy.log import configure_logging
from proxy.pool import UpstreamConnection
from proxy.settings import Settings

BODY = b'{"model":"gpt-5","input":"' + b"x" * 2000 + b'"}'
REQUEST = (
    b"POST /backend-api/responses?w=small HTTP/1.1\r\nHost: 127.0.0.1:8780\r\n"
    b"Content-Type: application/json\r\nAccept: application/json\r\n"
    b"Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.YmVuY2gtc2lnbmF0dXJl\r\n"
    b"chatgpt-account-id: 00000000-0000-4000-8000-000000000000\r\n"
    b"session_id: 0199a000-0000-7000-8000-000000000000\r\noriginator: codex_exec\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY
ANSWER_BODY = b'{"id":"resp_1","object":"response","status":"completed","output":[]}' * 4
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncf-ray: 8f00-AMS\r\n"
    b"x-request-id: req_1\r\nContent-Length: %d\r\n\r\n" % len(ANSWER_BODY)
) + ANSWER_BODY


class Transport(asyncio.Transport):
    """Records writes; reading and closing do nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: Any) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


async def measure(requests: int) -> float:
    settings = dataclasses.replace(
        Settings(), upstream=dataclasses.replace(Settings().upstream, url="http://127.0.0.1:9")
    )
    listener, _ = create_proxy(settings)
    client = ClientConnection(listener.route, listener.control, listener)
    client.connection_made(Transport())
    pool = listener.route.pool
    upstream = UpstreamConnection(pool)
    upstream.connection_made(Transport())
    upstream.counted = True
    pool.open += 1
    pool.release(upstream)  # idle in the pool: every request takes it
    started = time.perf_counter()
    for n in range(requests):
        client.data_received(REQUEST)
        upstream.data_received(ANSWER)
        if n % 16 == 0:
            await asyncio.sleep(0)  # a loop turn: the log lines are written
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sink = io.StringIO()
    configure_logging("info", "json", sink)
    runs = []
    for _ in range(args.runs):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runs.append(runner.run(measure(args.requests)))
    best = min(runs)
    lines = sink.getvalue().count("\n")
    print(f"{best:.2f} us per request ({lines} log lines written)")


if __name__ == "__main__":
    main()
