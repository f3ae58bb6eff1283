from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from pytest_aiohttp import AiohttpServer

from proxy.app import create_app
from proxy.protocol import ProxyRunner
from proxy.server import handler_options
from proxy.track import OBSERVERS
from tests.fake_upstream import FakeUpstream
from tests.harness import RECORDER, Recorder, StartProxy, settings_for


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


class ProxyTestServer(TestServer):
    """A TestServer running the app the way serve() does, with the proxy's runner."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ProxyRunner(self.app, **kwargs)


@pytest.fixture
async def start_proxy(fake: FakeUpstream) -> AsyncIterator[StartProxy]:
    servers: list[TestServer] = []

    async def start(upstream_url: str | None = None, **sections: dict[str, Any]) -> TestServer:
        settings = settings_for(upstream_url or fake.url, **sections)
        options = handler_options(settings)
        # TestServer always passes handler_cancellation=True itself.
        assert options.pop("handler_cancellation") is True
        app = create_app(settings)
        app[RECORDER] = watcher = Recorder()
        app[OBSERVERS] = (*app[OBSERVERS], watcher)
        server = ProxyTestServer(app, port=None)
        servers.append(server)
        await server.start_server(**options)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def proxy(start_proxy: StartProxy) -> TestServer:
    return await start_proxy()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
