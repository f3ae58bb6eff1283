"""The upstream's addresses: resolved once, then refreshed in the background.

A connection opened for a request never waits for DNS once the name has been resolved:
an answer older than `REFRESH` seconds is still used while a fresh one is asked for
beside it. A refresh that fails keeps the last good addresses for at most `KEEP_STALE`
seconds (logged), so a resolver that hiccups costs nothing, and one that is gone for good
ends in the DNS error a request can act on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import structlog

# How old an answer may grow before it is asked again (in the background).
REFRESH = 60.0
# How long the last good answer outlives a resolver that stopped answering.
KEEP_STALE = 600.0

Address = tuple[int, tuple[str, int]]  # family, (host, port) as create_connection wants


class Resolver:
    def __init__(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop,
        *,
        refresh: float = REFRESH,
        keep_stale: float = KEEP_STALE,
    ) -> None:
        self.host = host
        self.port = port
        self.loop = loop
        self.refresh = refresh
        self.keep_stale = keep_stale
        self.addresses: list[Address] = []
        self.resolved_at = 0.0  # time.monotonic() of the last good answer
        self._refreshing: asyncio.Task[None] | None = None
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return
        # An address needs no resolver.
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        self.addresses = [(family, (host, port))]
        self.resolved_at = float("inf")

    async def resolve(self) -> list[Address]:
        """The addresses to try, in order; socket.gaierror when there are none."""
        age = time.monotonic() - self.resolved_at
        if self.addresses and age < self.refresh:
            return self.addresses
        if self.addresses and age < self.refresh + self.keep_stale:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = self.loop.create_task(self._refresh())
            return self.addresses
        self.addresses = await self._lookup()
        self.resolved_at = time.monotonic()
        return self.addresses

    async def _lookup(self) -> list[Address]:
        infos = await self.loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        found: list[Address] = []
        for family, _, _, _, sockaddr in infos:
            address = (family, (str(sockaddr[0]), int(sockaddr[1])))
            if address not in found:
                found.append(address)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        return found

    async def _refresh(self) -> None:
        try:
            self.addresses = await self._lookup()
            self.resolved_at = time.monotonic()
        except OSError as exc:
            structlog.get_logger("proxy.upstream").warning(
                "DNS refresh failed: using the last good addresses",
                host=self.host,
                detail=str(exc),
                kept_s=round(time.monotonic() - self.resolved_at),
            )

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
