"""An outbound proxy set in upstream.proxy: its credential is never shown, and a URL that
cannot be used stops the proxy with one line and exit 2 (issue 26, items 3 and 10).

A token as the proxy's user name (sent as Basic, with no password) is a common way to
authenticate to a corporate proxy: it is as secret as a password.
"""

from __future__ import annotations

import json
import os
import signal
import socket

import aiohttp
import pytest

from proxy.config import ConfigError, load_settings
from proxy.settings import redact_url
from tests.fake_upstream import FakeUpstream
from tests.proc import run_cli, start_proxy_process

PROXY_TOKEN = "ghp-outbound-proxy-token-5b1e"


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def environ(**values: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")}
    return {**clean, **values}


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        ("http://127.0.0.1:notaport", "not a URL: Invalid URL: port can't be converted to integer"),
        ("http://127.0.0.1:99999", "not a URL: Port out of range 0-65535"),
        ("http://[::1:3128", "not a URL: Invalid IPv6 URL"),
        (f"http://{PROXY_TOKEN}@[::1:3128", "not a URL: Invalid IPv6 URL"),
        (f"http://{PROXY_TOKEN}@127.0.0.1:0", "must name a port of 1..65535, got 0"),
    ],
)
@pytest.mark.parametrize("command", [(), ("check-config",)])
async def test_a_bad_proxy_url_is_one_line_and_exit_2(
    proxy: str, reason: str, command: tuple[str, ...]
) -> None:
    code, out, err = await run_cli(
        *command, environ=environ(CODEX_PATH_PROXY_UPSTREAM_PROXY=proxy), timeout=30
    )
    assert (code, out) == (2, "")
    assert err == (
        "codex-path-proxy: config error: environment CODEX_PATH_PROXY_UPSTREAM_PROXY: "
        f"upstream.proxy: {reason}\n"
    )


async def test_a_token_as_the_proxy_user_is_never_shown(fake: FakeUpstream) -> None:
    """The listening line, each warm-connection warning, a request's own line and
    check-config mask it; the proxy still sends it (as Basic) to the proxy."""
    proxy_url = f"http://{PROXY_TOKEN}@127.0.0.1:{closed_port()}"
    env = {"CODEX_PATH_PROXY_UPSTREAM_PROXY": proxy_url}
    running = await start_proxy_process("--upstream", fake.url, env=env)
    try:
        listening = running.lines[-1]
        warning = await running.next_line()
        while not warning["event"].startswith("a warm upstream connection could not be opened"):
            warning = await running.next_line()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{running.port}/backend-api/models") as response,
        ):
            assert response.status == 502
            body = await response.text()
        request = await running.wait_for("request")
        running.process.send_signal(signal.SIGTERM)
        lines = await running.rest()
    finally:
        running.stop()
    masked = proxy_url.replace(PROXY_TOKEN, "[redacted]")
    assert listening["upstream_proxy"] == masked
    assert warning["detail"].startswith(f"the outbound proxy {masked} is unreachable: ")
    assert request["cause"] == "upstream_proxy_error"
    code, out, err = await run_cli("check-config", environ=environ(**env))
    assert code == 0
    assert f'upstream.proxy = "{masked}"' in out
    for shown in (json.dumps(lines), body, out, err):
        assert PROXY_TOKEN not in shown


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        ("http://127.0.0.1:notaport", "not a URL: Invalid URL: port can't be converted to integer"),
        (f"http://{PROXY_TOKEN}@127.0.0.1:0", "must name a port of 1..65535, got 0"),
    ],
)
def test_a_bad_proxy_url_is_a_config_error(proxy: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            config_file=None, environ={"CODEX_PATH_PROXY_UPSTREAM_PROXY": proxy}, flags={}
        )
    assert str(caught.value) == (
        f"environment CODEX_PATH_PROXY_UPSTREAM_PROXY: upstream.proxy: {reason}"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://{PROXY_TOKEN}@proxy:3128", "http://[redacted]@proxy:3128"),
        (f"http://:{PROXY_TOKEN}@proxy:3128", "http://:[redacted]@proxy:3128"),
        (f"http://user:{PROXY_TOKEN}@proxy:3128", "http://user:[redacted]@proxy:3128"),
        (f"http://{PROXY_TOKEN}@[::1:3128", "http://[redacted]"),
        (f"{PROXY_TOKEN}@[::1", "[redacted]"),
        (f"{PROXY_TOKEN}@proxy:3128", "[redacted]"),
    ],
)
def test_redact_url_masks_a_user_name_alone_and_what_it_cannot_parse(url: str, shown: str) -> None:
    assert redact_url(url) == shown
