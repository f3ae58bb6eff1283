"""A recording TCP relay on 127.0.0.1 between a client and the proxy.

It copies bytes both ways unchanged and keeps them, so a test can read back exactly what
the client sent (names, case, order, repeats, body bytes) and compare it with what the
fake chatgpt.com received from the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from tests.e2e.http1 import Message, read_requests


@dataclass(eq=False)
class Connection:
    sent: bytearray = field(default_factory=bytearray)  # client -> proxy
    received: bytearray = field(default_factory=bytearray)  # proxy -> client
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def requests(self) -> list[Message]:
        return read_requests(bytes(self.sent), bytes(self.received))


async def pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray
) -> None:
    """Copy until end of stream, then pass the half-close on."""
    while data := await reader.read(65536):
        record += data
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = Connection()
        self.connections.append(connection)
        proxy_out: asyncio.StreamWriter | None = None
        try:
            proxy_in, proxy_out = await asyncio.open_connection("127.0.0.1", self.target_port)
            async with asyncio.TaskGroup() as group:
                group.create_task(pump(client_in, proxy_out, connection.sent))
                group.create_task(pump(proxy_in, client_out, connection.received))
        except* OSError:
            pass  # a side reset: the other is closed below, as a real hop would
        finally:
            for writer in (client_out, proxy_out):
                if writer is not None:
                    writer.close()
            connection.closed.set()
            self._tasks.discard(task)

    async def quiet(self, timeout: float = 10) -> None:
        """Wait (bounded) until every connection so far has closed: the client is gone."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for connection in list(self.connections):
                    await connection.closed.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
