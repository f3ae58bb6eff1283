"""Run in a mount namespace whose /etc/hosts is a file of the test's: the resolver
answers from it, keeps its answer when the name disappears, then lets it go. Prints
what each step saw, as JSON."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

from structlog.testing import capture_logs

from proxy.resolver import Resolver

HOSTS = Path("/etc/hosts")


async def main() -> None:
    loop = asyncio.get_running_loop()
    resolver = Resolver("upstream.test", 443, loop, refresh=0.1, keep_stale=0.5)
    seen: dict[str, object] = {"first": await resolver.resolve()}
    # The name is gone from DNS.
    await asyncio.to_thread(HOSTS.write_text, "127.0.0.1 localhost\n")
    await asyncio.sleep(0.2)
    with capture_logs() as logs:
        seen["stale"] = await resolver.resolve()  # still the last good, refreshing beside
        await asyncio.sleep(0.1)
    seen["logged"] = [line["event"] for line in logs]
    await asyncio.sleep(0.6)
    try:
        seen["after"] = await resolver.resolve()
    except socket.gaierror as exc:
        seen["after"] = f"gaierror {exc.errno}"
    resolver.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
