"""Settings beyond the basics: booleans, outbound proxy and CA settings, and their display."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.config import ConfigError, load_settings
from proxy.settings import is_loopback, redact_url


@pytest.mark.parametrize(
    ("raw", "expected"), [("true", True), ("1", True), ("YES", True), ("off", False), ("0", False)]
)
def test_booleans_from_the_environment(raw: str, expected: bool) -> None:
    settings, _ = load_settings(
        config_file=None, environ={"CODEX_PATH_PROXY_METRICS_ENABLED": raw}, flags={}
    )
    assert settings.metrics.enabled is expected


def test_boolean_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=None, environ={"CODEX_PATH_PROXY_LOG_BODIES": "maybe"}, flags={})
    assert (
        str(caught.value)
        == "environment CODEX_PATH_PROXY_LOG_BODIES: log.bodies: expected true or false, got 'maybe'"
    )


def test_boolean_type_error_in_a_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[metrics]\nenabled = 'yes'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=str(config), environ={}, flags={})
    assert str(caught.value) == f"file {config}: metrics.enabled: expected true or false, got 'yes'"


def test_proxy_from_the_environment_is_opt_in_and_attributed() -> None:
    environ = {"HTTPS_PROXY": "http://proxy.corp:3128"}
    settings, _ = load_settings(config_file=None, environ=environ, flags={})
    assert settings.upstream.proxy == ""
    environ["CODEX_PATH_PROXY_UPSTREAM_PROXY_FROM_ENV"] = "true"
    settings, sources = load_settings(config_file=None, environ=environ, flags={})
    assert settings.upstream.proxy == "http://proxy.corp:3128"
    assert sources["upstream", "proxy"].source == "environment HTTPS_PROXY"
    # An explicit upstream.proxy wins over the environment.
    environ["CODEX_PATH_PROXY_UPSTREAM_PROXY"] = "http://explicit:8080"
    settings, _ = load_settings(config_file=None, environ=environ, flags={})
    assert settings.upstream.proxy == "http://explicit:8080"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CODEX_PATH_PROXY_UPSTREAM_PROXY": "socks5://u:pw@p:1080"},
            "upstream.proxy: must be an http:// or https:// proxy URL, got 'socks5://u:[redacted]@p:1080'",
        ),
        (
            {"CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE": "/nonexistent/ca.pem"},
            "upstream.ca_bundle: no such file: /nonexistent/ca.pem",
        ),
        (
            {"CODEX_PATH_PROXY_UPSTREAM_KEEPALIVE_TIMEOUT": "0"},
            "upstream.keepalive_timeout: must be greater than 0",
        ),
        (
            {"CODEX_PATH_PROXY_LIMITS_MAX_CONNECTIONS": "0"},
            "limits.max_connections: must be at least 1",
        ),
        (
            {"CODEX_PATH_PROXY_LIMITS_HEADER_TIMEOUT": "0"},
            "limits.header_timeout: must be greater than 0",
        ),
        ({"CODEX_PATH_PROXY_INSPECTOR_RING_SIZE": "0"}, "inspector.ring_size: must be at least 1"),
        ({"CODEX_PATH_PROXY_CAPTURE_BODY_LIMIT": "-1"}, "capture.body_limit: must not be negative"),
    ],
)
def test_outbound_and_limit_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=None, environ=environ, flags={})
    name = next(iter(environ))
    assert str(caught.value) == f"environment {name}: {message}"


def test_check_config_never_shows_the_proxy_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CODEX_PATH_PROXY_UPSTREAM_PROXY", "http://alice:hunter22@proxy:3128")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "hunter22" not in out
    assert (
        'upstream.proxy = "http://alice:[redacted]@proxy:3128"  # environment CODEX_PATH_PROXY_UPSTREAM_PROXY'
        in out
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://proxy:3128", "http://proxy:3128"),
        ("http://u:p@proxy:3128", "http://u:[redacted]@proxy:3128"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("proxy.local", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
