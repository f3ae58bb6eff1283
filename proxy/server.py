"""The running process: bind, serve until SIGTERM or SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import structlog
from aiohttp import http_parser, web

from proxy.app import create_app
from proxy.lifecycle import LIFECYCLE
from proxy.protocol import ConnectionGate, ProxyRunner
from proxy.settings import Settings, is_loopback
from proxy.startup import startup_fields


class StartupError(Exception):
    """The proxy cannot start; the message says why and what to do."""


def check_parser() -> None:
    """Refuse the pure-Python HTTP parser: it has a history of request-smuggling bugs."""
    if http_parser.HttpRequestParser.__module__ != "aiohttp._http_parser":
        raise StartupError(
            "aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS is set, or the "
            "aiohttp wheel for this platform lacks it); the pure-Python parser has a history "
            "of request-smuggling bugs. Unset AIOHTTP_NO_EXTENSIONS or reinstall aiohttp "
            "from a binary wheel."
        )


def handler_options(settings: Settings) -> dict[str, Any]:
    """aiohttp's per-connection options, shared by the real server and the tests' servers."""
    return {
        # The canonical request line replaces aiohttp's access log.
        "access_log": None,
        # A zstd or gzip body is forwarded as bytes, never inflated (or refused) here.
        "auto_decompress": False,
        # A client that leaves cancels its upstream request at once.
        "handler_cancellation": True,
        "max_line_size": settings.limits.max_header_size,
        "max_field_size": settings.limits.max_header_size,
        # aiohttp's default keeps an idle client connection an hour.
        "keepalive_timeout": settings.limits.keepalive_timeout,
        "gate": ConnectionGate(
            max_connections=settings.limits.max_connections,
            header_timeout=settings.limits.header_timeout,
        ),
    }


def check_inspector(settings: Settings) -> None:
    """The inspector shows paths and metadata: loopback only, unless explicitly allowed."""
    inspector = settings.inspector
    if (
        inspector.enabled
        and not is_loopback(settings.listen.host)
        and not inspector.allow_non_loopback
    ):
        raise StartupError(
            f"the inspector would be reachable beyond this machine on {settings.listen.host}: "
            "request paths and metadata are sensitive even with tokens redacted. Bind "
            "127.0.0.1, or set inspector.allow_non_loopback = true if you mean it."
        )


async def serve(settings: Settings) -> None:
    check_parser()
    check_inspector(settings)
    log = structlog.get_logger("proxy")
    app = create_app(settings)
    lifecycle = app[LIFECYCLE]
    runner = ProxyRunner(
        app,
        handle_signals=False,
        # serve() drains in-flight exchanges itself first; what is left is cancelled, and
        # gets this long to unwind (0 would mean no limit to aiohttp).
        shutdown_timeout=1.0,
        **handler_options(settings),
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.listen.host, settings.listen.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {settings.listen.host}:{settings.listen.port}: {exc.strerror}"
            ) from None
        addresses = [_address(sockname) for sockname in runner.addresses]
        log.info(
            "listening",
            **startup_fields(
                settings,
                addresses,
                loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            ),
        )
        if not is_loopback(settings.listen.host):
            log.warning(
                "listening beyond this machine: bearer tokens and conversations cross this "
                "port; anyone who can reach it can use the tokens sent through it",
                host=settings.listen.host,
            )
        stop = asyncio.Event()

        def begin_shutdown() -> None:
            # Not ready from this moment: an orchestrator stops routing new work here.
            lifecycle.ready = False
            stop.set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, begin_shutdown)
        await stop.wait()
        for running in list(runner.sites):
            await running.stop()
        in_flight = lifecycle.in_flight
        log.info("shutting down", in_flight=in_flight, grace_s=settings.shutdown.grace)
        cut = await lifecycle.drain(settings.shutdown.grace)
    finally:
        await runner.cleanup()
    log.info("stopped", drained=in_flight - cut, cut=cut)


def _address(sockname: object) -> str:
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
