"""Where a client's base URL sends its requests: through this proxy, straight to the
upstream on the retired or the live path, or somewhere else. Pure: no I/O.

Clients build `{base}/responses` (OpenClaw's image path, the SDKs, Codex with the legacy
form), so a base is retired when that path is one the rewrite rules exist for.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from yarl import URL

from proxy.rules import DEFAULT_RULES, rewrite
from proxy.settings import ListenSection, is_loopback

CHATGPT = "https://chatgpt.com"
LIVE_PATH = "/backend-api/codex"
PROXY_PATH = "/backend-api"

Address = tuple[str, str, int]


class Route(StrEnum):
    PROXY = "through this proxy"
    PROXY_SUFFIX = "this proxy, with the wrong path"
    LOOPBACK = "a loopback address where this proxy does not listen"
    RETIRED = "the upstream's retired alias"
    LIVE = "the upstream's live path, bypassing this proxy"
    UPSTREAM_SUFFIX = "the upstream, with the wrong path"
    ELSEWHERE = "another host"
    INVALID = "not an http(s) URL"


@dataclass(frozen=True, slots=True, kw_only=True)
class Places:
    """The origins that matter when judging a base URL."""

    proxy_base: str  # what clients should use: http://127.0.0.1:8780/backend-api
    proxies: frozenset[Address]  # where this proxy listens or was found answering
    upstreams: frozenset[Address]  # upstream.url's origin and chatgpt.com's

    @classmethod
    def build(cls, listen: ListenSection, upstream_url: str, found: frozenset[Address]) -> Places:
        base = proxy_base(listen)
        upstreams = {origin_of(URL(CHATGPT)), origin_of(URL(upstream_url))}
        return cls(
            proxy_base=base,
            proxies=frozenset({origin_of(URL(base)), *found}),
            upstreams=frozenset(upstreams),
        )


def proxy_base(listen: ListenSection) -> str:
    """The base URL a client on this machine should use to reach the proxy."""
    host = listen.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard bind is reached on loopback
        host = "127.0.0.1"
    elif _is_ipv6(host):
        host = f"[{host}]"
    return f"http://{host}:{listen.port}{PROXY_PATH}"


def origin_of(url: URL) -> Address:
    assert url.host is not None
    assert url.port is not None
    return (url.scheme, url.host.lower(), url.port)


def parse(base: str) -> URL | None:
    try:
        url = URL(base)
    except (TypeError, ValueError):
        return None
    if url.scheme not in ("http", "https") or not url.host or url.port is None:
        return None
    return url


def classify(base: str, places: Places) -> Route:  # noqa: PLR0911 - one return per route
    url = parse(base)
    if url is None:
        return Route.INVALID
    origin = origin_of(url)
    path = url.path.rstrip("/")
    if origin in places.upstreams:
        if path == LIVE_PATH:
            return Route.LIVE
        if rewrite(DEFAULT_RULES, path + "/responses").rule is not None:
            return Route.RETIRED
        return Route.UPSTREAM_SUFFIX
    if origin in places.proxies:
        return Route.PROXY if path == PROXY_PATH else Route.PROXY_SUFFIX
    if is_loopback(url.host or ""):
        return Route.LOOPBACK
    return Route.ELSEWHERE


def is_chatgpt(base: str) -> bool:
    url = parse(base)
    return url is not None and (url.host or "").lower() == "chatgpt.com"


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
