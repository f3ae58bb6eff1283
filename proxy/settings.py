"""Settings: every key a field of a frozen section dataclass, with its default and the
one-line "why" that `--help`, `check-config`, the README and `config/default.toml` show.

proxy.config builds them from defaults < TOML file < environment < flags.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import typing
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from proxy.rules import DEFAULT_RULES, Rule

ENV_PREFIX = "CODEX_PATH_PROXY_"
# Reserved for the proxy's own endpoints (`/_proxy` itself too): never forwarded.
CONTROL_PREFIX = "/_proxy/"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")


def setting(default: Any, why: str, *, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"why": why, "choices": choices})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenSection:
    host: str = setting("127.0.0.1", "loopback only: requests carry bearer tokens")
    port: int = setting(8780, "where clients point their base URL; 0 takes a free port")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSection:
    url: str = setting("https://chatgpt.com", "the only origin ever contacted")
    connect_timeout: float = setting(10.0, "seconds to open a connection (incl. TLS) → 504")
    idle_timeout: float = setting(
        300.0, "seconds of upstream silence before giving up; no total limit: streams run long"
    )
    pool_size: int = setting(1024, "most concurrent upstream connections; more wait (logged)")
    keepalive_timeout: float = setting(
        300.0,
        "seconds an idle upstream connection is kept, under the edge's 400 s; a sleep counts",
    )
    warm_connections: int = setting(
        1, "idle upstream connections kept ready, opened ahead of requests; 0: none"
    )
    proxy: str = setting("", "HTTP CONNECT proxy to reach the upstream through; empty: direct")
    proxy_from_env: bool = setting(
        False, "take the proxy from HTTPS_PROXY/HTTP_PROXY and NO_PROXY (~/.netrc never)"
    )
    ca_bundle: str = setting("", "PEM file of extra CAs to trust beside the system store")


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSection:
    max_body_size: int = setting(128 * 1024 * 1024, "request bytes accepted; more → 413")
    max_header_size: int = setting(
        64 * 1024, "bytes of one header line or target; JWTs and cookies outgrow the usual 8 KiB"
    )
    max_connections: int = setting(1024, "client connections at once; more are closed, logged")
    header_timeout: float = setting(30.0, "seconds a client has to send a request's headers")
    keepalive_timeout: float = setting(75.0, "seconds an idle client connection is kept open")
    body_timeout: float = setting(
        60.0, "seconds a request body may stall (no byte arrives) before a 408"
    )
    websocket_idle_timeout: float = setting(
        600.0, "seconds a WebSocket session may pass no frame either way before it is closed"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownSection:
    grace: float = setting(30.0, "seconds in-flight streams get to finish after SIGTERM")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSection:
    level: str = setting("info", "least severe level written", choices=LOG_LEVELS)
    format: str = setting(
        "auto", "auto: console on a terminal, JSON otherwise", choices=LOG_FORMATS
    )
    bodies: bool = setting(False, "short redacted body excerpts in debug lines")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureSection:
    dir: str = setting("", "write each exchange as a redacted HAR file here; empty: off")
    body_limit: int = setting(1024 * 1024, "bytes of each body kept in a capture")
    total_limit: int = setting(
        256 * 1024 * 1024, "bytes all captures may use; the oldest files go first"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSection:
    enabled: bool = setting(
        True, "serve Prometheus metrics at /_proxy/metrics and plan usage at /_proxy/usage"
    )
    account_label: bool = setting(
        False, "label the plan gauges with the account's fingerprint: a series per account"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectorSection:
    enabled: bool = setting(False, "serve the live inspector page at /_proxy/")
    allow_non_loopback: bool = setting(
        False, "allow the inspector on a non-loopback bind: paths and metadata are sensitive"
    )
    ring_size: int = setting(500, "recent exchanges the inspector keeps in memory")
    body_limit: int = setting(
        1024 * 1024, "bytes of each request and response body the inspector keeps to show"
    )
    total_limit: int = setting(
        64 * 1024 * 1024, "bytes of bodies, events and images all kept exchanges may hold"
    )
    event_limit: int = setting(
        16 * 1024 * 1024, "largest event or message read whole (a generated image comes in one)"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteSection:
    rules: tuple[Rule, ...] = setting(DEFAULT_RULES, "ordered, first match wins")
    disabled: tuple[str, ...] = setting((), "names of rules to turn off")

    @property
    def active(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.name not in self.disabled)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    listen: ListenSection = field(default_factory=ListenSection)
    upstream: UpstreamSection = field(default_factory=UpstreamSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    shutdown: ShutdownSection = field(default_factory=ShutdownSection)
    log: LogSection = field(default_factory=LogSection)
    capture: CaptureSection = field(default_factory=CaptureSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    inspector: InspectorSection = field(default_factory=InspectorSection)
    rewrite: RewriteSection = field(default_factory=RewriteSection)


SECTIONS: dict[str, type[Any]] = typing.get_type_hints(Settings)

# Command-line flags that set a key: flag → (section, key).
FLAGS: dict[str, tuple[str, str]] = {
    "--host": ("listen", "host"),
    "--port": ("listen", "port"),
    "--upstream": ("upstream", "url"),
    "--log-level": ("log", "level"),
    "--log-format": ("log", "format"),
    "--log-bodies": ("log", "bodies"),
    "--capture-dir": ("capture", "dir"),
    "--inspector": ("inspector", "enabled"),
}


def keys(section: str) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


@functools.cache
def key_type(section: str, key: str) -> Any:
    return typing.get_type_hints(SECTIONS[section])[key]


def redact_url(url: str) -> str:
    """A URL with its credentials masked: the password, or a user name that stands alone
    (a token sent as the user of Basic). One that cannot be parsed keeps only its scheme."""
    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    if parsed is None or (not parsed.absolute and "@" in url):
        scheme, separator, _ = url.partition("://")
        return f"{scheme}://[redacted]" if separator else "[redacted]"
    if parsed.raw_user is None and parsed.raw_password is None:
        return url
    scheme, rest = str(parsed.with_user(None)).split("://", 1)
    if parsed.raw_password is None:
        return f"{scheme}://[redacted]@{rest}"
    return f"{scheme}://{parsed.raw_user or ''}:[redacted]@{rest}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
