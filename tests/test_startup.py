"""The start-up line tells a person where to point clients and what is on."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy import __version__
from proxy.startup import startup_fields
from tests.fake_upstream import FakeUpstream
from tests.harness import settings_for
from tests.proc import start_proxy_process

UPSTREAM = "https://chatgpt.com"


@pytest.mark.parametrize(
    ("host", "addresses", "base_url"),
    [
        ("127.0.0.1", ["http://127.0.0.1:8780"], "http://127.0.0.1:8780/backend-api"),
        (
            "localhost",
            ["http://127.0.0.1:8780", "http://[::1]:8780"],
            "http://localhost:8780/backend-api",
        ),
        ("0.0.0.0", ["http://0.0.0.0:8780"], "http://127.0.0.1:8780/backend-api"),
        ("::", ["http://[::]:8780"], "http://[::1]:8780/backend-api"),
        ("::1", ["http://[::1]:41234"], "http://[::1]:41234/backend-api"),
        ("192.0.2.7", ["http://192.0.2.7:8780"], "http://192.0.2.7:8780/backend-api"),
    ],
)
def test_the_base_url_is_what_a_client_on_this_machine_sets(
    host: str, addresses: list[str], base_url: str
) -> None:
    fields = startup_fields(settings_for(UPSTREAM, listen={"host": host}), addresses, loop="uvloop")
    assert fields["base_url"] == base_url
    assert fields["address"] == (addresses[0] if len(addresses) == 1 else addresses)


def test_defaults_name_the_metrics_path_and_the_rule_count_and_nothing_that_is_off() -> None:
    fields = startup_fields(settings_for(UPSTREAM), ["http://127.0.0.1:8780"], loop="asyncio")
    assert fields == {
        "version": __version__,
        "loop": "asyncio",
        "address": "http://127.0.0.1:8780",
        "base_url": "http://127.0.0.1:8780/backend-api",
        "metrics_path": "/_proxy/metrics",
        "upstream": UPSTREAM,
        "rules": 4,
    }


def test_what_is_on_is_named() -> None:
    settings = settings_for(
        UPSTREAM,
        inspector={"enabled": True},
        capture={"dir": "/var/captures"},
        metrics={"enabled": False},
        upstream={"url": UPSTREAM, "proxy": "http://user:hunter2@proxy.corp:3128"},
        rewrite={"disabled": ("legacy-responses",)},
    )
    fields: dict[str, Any] = startup_fields(settings, ["http://127.0.0.1:9"], loop="uvloop")
    assert fields["inspector"] == "http://127.0.0.1:9/_proxy/"
    assert fields["capture_dir"] == "/var/captures"
    assert "metrics_path" not in fields
    assert fields["upstream_proxy"] == "http://user:[redacted]@proxy.corp:3128"
    assert "hunter2" not in repr(fields)
    assert (fields["rules"], fields["rules_disabled"]) == (3, ["legacy-responses"])


async def test_the_real_listening_line_gives_a_base_url_that_works(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    captures = tmp_path / "captures"
    proxy = await start_proxy_process(
        "--upstream",
        fake.url,
        "--inspector",
        "--capture-dir",
        str(captures),
        env={"CODEX_PATH_PROXY_UPSTREAM_PROXY": "http://u:secret-pw@127.0.0.1:9"},
    )
    try:
        listening = proxy.lines[-1]
    finally:
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.rest()
        proxy.stop()
    base_url = f"http://127.0.0.1:{proxy.port}/backend-api"
    assert listening["base_url"] == base_url
    assert listening["inspector"] == f"http://127.0.0.1:{proxy.port}/_proxy/"
    assert listening["capture_dir"] == str(captures)
    assert listening["metrics_path"] == "/_proxy/metrics"
    assert listening["rules"] == 4
    assert listening["upstream_proxy"] == "http://u:[redacted]@127.0.0.1:9"
    assert "proxy" not in listening


async def test_a_client_given_the_base_url_reaches_the_upstream(fake: FakeUpstream) -> None:
    proxy = await start_proxy_process("--upstream", fake.url)
    try:
        base_url = proxy.lines[-1]["base_url"]
        async with (
            aiohttp.ClientSession() as session,
            session.post(base_url + "/responses", json={}) as response,
        ):
            assert response.status == 200
            assert response.content_type == "text/event-stream"
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.rest()
    finally:
        proxy.stop()
    assert fake.last.target == "/backend-api/codex/responses"
