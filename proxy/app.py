"""Wiring: settings in, a listener out, with its pool, observers and control plane."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from proxy import __version__
from proxy.canonical import CanonicalLog, DebugLog
from proxy.connector import Connector, Origin
from proxy.control import Control
from proxy.exchange import Observer, Observers
from proxy.lifecycle import Lifecycle
from proxy.listener import Listener
from proxy.metrics import Metrics
from proxy.pool import Pool
from proxy.rules import rewrite
from proxy.settings import Settings, redact_url

# What `/_proxy/version` says the retired alias becomes under the running rule table.
RETIRED = "/backend-api/responses"

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.inspector import Inspector
    from proxy.tunnel import Tunnel


def create_proxy(
    settings: Settings, *, extra: tuple[Observer, ...] = ()
) -> tuple[Listener, Lifecycle]:
    """The proxy for these settings, not yet listening; `extra` observers come last."""
    origin = Origin.parse(settings.upstream.url)
    lifecycle = Lifecycle()
    log = settings.log
    observers: list[Observer] = [
        lifecycle,
        DebugLog(bodies=log.bodies) if log.level == "debug" else CanonicalLog(level=log.level),
    ]
    if settings.capture.dir:
        # Opt-in features are imported only when on: start-up stays short (sidecars restart).
        from proxy.capture import Capture  # noqa: PLC0415

        capture = Capture(
            settings.capture.dir, total_limit=settings.capture.total_limit, upstream=origin.url
        )
        capture.prepare()
        observers.append(capture)
    tunnels: set[Tunnel] = set()
    metrics = None
    if settings.metrics.enabled:
        metrics = Metrics(
            in_flight=lambda: lifecycle.in_flight,
            sessions=lambda: len(tunnels),
            account_label=settings.metrics.account_label,
        )
        observers.append(metrics)
    inspector = None
    if settings.inspector.enabled:
        from proxy.inspector import Inspector  # noqa: PLC0415

        inspector = Inspector(
            ring_size=settings.inspector.ring_size,
            body_limit=settings.inspector.body_limit,
            total_limit=settings.inspector.total_limit,
            event_limit=settings.inspector.event_limit,
            capture_dir=Path(settings.capture.dir) if settings.capture.dir else None,
        )
        observers.append(inspector)
    observers += extra
    rules = settings.rewrite.active
    about: dict[str, object] = {
        "version": __version__,
        "upstream": redact_url(settings.upstream.url),
        "rules": [rule.name for rule in rules],
        "rewrites": {RETIRED: rewrite(rules, RETIRED).target},
    }
    control = Control(
        partial(
            _control_app, lifecycle=lifecycle, metrics=metrics, inspector=inspector, about=about
        ),
        keepalive_timeout=settings.limits.keepalive_timeout,
        max_header_size=settings.limits.max_header_size,
    )
    connector = Connector(settings.upstream, origin=origin)
    listener = Listener(
        settings,
        origin=origin,
        pool=Pool(settings.upstream, connector=connector),
        observers=Observers(observers),
        control=control,
        sessions=tunnels,
    )
    return listener, lifecycle


def _control_app(
    *,
    lifecycle: Lifecycle,
    metrics: Metrics | None,
    inspector: Inspector | None,
    about: dict[str, object],
) -> web.Application:
    from proxy.endpoints import create_app  # noqa: PLC0415 - aiohttp loads only when asked

    return create_app(lifecycle=lifecycle, metrics=metrics, inspector=inspector, about=about)
