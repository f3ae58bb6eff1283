"""Run inside a network namespace with only loopback: the proxy, an upstream name that
cannot resolve, one request. Prints what the client got and what the proxy logged."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.harness import parse_response, raw_request
from tests.proc import start_proxy_process


async def main() -> None:
    proxy = await start_proxy_process("--upstream", "https://upstream.invalid")
    try:
        response = parse_response(
            await raw_request(
                proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
        )
        line = await proxy.wait_for("request")
    finally:
        proxy.stop()
    print(json.dumps({"status": response.status, "body": response.body.decode(), "line": line}))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
