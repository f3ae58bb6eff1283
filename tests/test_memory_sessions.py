"""RSS over 2,000 WebSocket sessions through an HTTPS upstream (issue 21): flat, with the
allocator's free pages handed back after many connections closed (proxy/heap.py; without
it glibc's heap grew about 7 MB here, all of it free)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.outside import fd_count, no_client_connections, proxy_process, rss_kib
from tests.test_memory import CLIENTS, FLAT_KIB, TlsUpstream, ca, tls_upstream
from tests.ws_wire import CLOSE, TEXT, close_payload, connect, frame, read_frame

__all__ = ["ca", "tls_upstream"]


async def websocket_session(port: int, number: int) -> None:
    """A short session as a client has it: a message echoed, then the close handshake."""
    reader, writer = await connect(port)
    try:
        message = b"message %d" % number
        writer.write(frame(TEXT, message))
        assert await read_frame(reader) == (TEXT, message)
        writer.write(frame(CLOSE, close_payload(1000)))
        assert (await read_frame(reader))[0] == CLOSE
        assert await reader.read() == b""
    finally:
        writer.close()


async def sessions(port: int, count: int) -> None:
    async def one_after_another(first: int) -> None:
        for number in range(first, count, CLIENTS):
            await websocket_session(port, number)

    async with asyncio.timeout(60):
        await asyncio.gather(*(one_after_another(first) for first in range(CLIENTS)))


async def test_rss_is_flat_over_2000_websocket_sessions(tls_upstream: TlsUpstream) -> None:
    warm_up, measured = 200, 2_000

    def failed(line: dict[str, Any]) -> bool:
        return bool(line.get("outcome", "completed") != "completed")

    async with proxy_process("--upstream", tls_upstream.url, env=tls_upstream.env, keep=failed) as (
        proxy,
        log,
    ):
        pid = proxy.process.pid
        await sessions(proxy.port, warm_up)
        await log.wait("websocket", warm_up)
        await no_client_connections(proxy)
        before, fds_before = rss_kib(pid), fd_count(pid)
        await sessions(proxy.port, measured)
        await log.wait("websocket", warm_up + measured)
        await no_client_connections(proxy)
        after, fds_after = rss_kib(pid), fd_count(pid)
    assert log.kept == []
    assert after - before <= FLAT_KIB, f"RSS {before} → {after} KiB"
    assert fds_after <= fds_before, f"descriptors {fds_before} → {fds_after}"
