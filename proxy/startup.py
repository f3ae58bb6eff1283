"""The start-up line's fields: where to point clients, and what is on.

A person reads this line once, at start: it names the base URL to give clients, the
inspector's page and the capture folder when they are on, the metrics path, the upstream
(and the outbound proxy, its credentials masked) and how many rules are active.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from yarl import URL

from proxy import __version__
from proxy.settings import CONTROL_PREFIX as PREFIX
from proxy.settings import Settings, redact_url

BASE_PATH = "/backend-api"
# A wildcard bind is reached from this machine through its loopback. (S104: these names
# are looked up here, never bound.)
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}  # noqa: S104


def startup_fields(settings: Settings, addresses: list[str], *, loop: str) -> dict[str, Any]:
    """The "listening" line's fields for a proxy bound at `addresses` (http://host:port)."""
    origin = client_origin(settings.listen.host, addresses[0])
    fields: dict[str, Any] = {
        "version": __version__,
        "loop": loop,
        "address": addresses[0] if len(addresses) == 1 else addresses,
        "base_url": origin + BASE_PATH,
    }
    if settings.inspector.enabled:
        fields["inspector"] = origin + PREFIX
    if settings.capture.dir:
        fields["capture_dir"] = settings.capture.dir
    if settings.metrics.enabled:
        fields["metrics_path"] = PREFIX + "metrics"
    fields["upstream"] = settings.upstream.url
    if settings.upstream.proxy:
        fields["upstream_proxy"] = redact_url(settings.upstream.proxy)
    active = settings.rewrite.active
    fields["rules"] = len(active)
    if settings.rewrite.disabled:
        fields["rules_disabled"] = list(settings.rewrite.disabled)
    return fields


def client_origin(host: str, address: str) -> str:
    """http://host:port as a client on this machine writes it: the configured name
    (localhost stays localhost), a wildcard bind's loopback, the bound port (port 0)."""
    port = URL(address).port
    if host in _WILDCARDS:
        return f"http://{_WILDCARDS[host]}:{port}"
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    return f"http://[{literal}]:{port}" if literal.version == 6 else f"http://{literal}:{port}"
