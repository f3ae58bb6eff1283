"""Fixtures for the container tests (marker `container`, run by scripts/container)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpServer

from tests.fake_upstream import FakeUpstream


@pytest.fixture(scope="session", autouse=True)
def no_way_out() -> None:
    """These tests start a fake chatgpt.com on every address of the machine and containers
    on a bridge: only in a network namespace of their own, with no route off the machine
    (scripts/container makes one), where whatever a container sends stays here."""
    routes = Path("/proc/net/route").read_text(encoding="ascii").splitlines()[1:]
    assert not [r for r in routes if r.split()[1] == "00000000"], (
        "a default route: run these through scripts/container"
    )
    interfaces = [name for _, name in socket.if_nameindex()]
    assert all(re.fullmatch(r"lo|podman\d+|veth\d+", name) for name in interfaces), (
        f"interfaces {interfaces}: run these through scripts/container"
    )


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """The fake chatgpt.com, reachable from the containers at `engine.upstream_url(upstream)`."""
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app(), host="0.0.0.0", auto_decompress=False)
    assert server.port is not None
    fake.port = server.port
    return fake
