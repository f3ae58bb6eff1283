from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from proxy.app import create_proxy
from tests.fake_upstream import FakeUpstream
from tests.harness import Recorder, RunningProxy, StartProxy, settings_for


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeUpstream:
    upstream = FakeUpstream()
    # auto_decompress=False: the fake records request bodies exactly as they arrived.
    server = await aiohttp_server(
        upstream.app(), auto_decompress=False, max_field_size=1 << 20, max_line_size=1 << 20
    )
    assert server.port is not None
    upstream.port = server.port
    return upstream


@pytest.fixture
async def start_proxy(fake: FakeUpstream) -> AsyncIterator[StartProxy]:
    proxies: list[RunningProxy] = []

    async def start(upstream_url: str | None = None, **sections: dict[str, Any]) -> RunningProxy:
        settings = settings_for(upstream_url or fake.url, **sections)
        watcher = Recorder()
        listener, lifecycle = create_proxy(settings, extra=(watcher,))
        [address] = await listener.start("127.0.0.1", 0)
        running = RunningProxy(listener, lifecycle, watcher, int(address.rsplit(":", 1)[1]))
        proxies.append(running)
        return running

    yield start
    for running in proxies:
        await running.close()


@pytest.fixture
async def proxy(start_proxy: StartProxy) -> RunningProxy:
    return await start_proxy()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
