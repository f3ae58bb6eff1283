"""The running process: bind, serve until SIGTERM or SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog

from proxy.app import create_proxy
from proxy.settings import Settings, is_loopback
from proxy.startup import startup_fields


class StartupError(Exception):
    """The proxy cannot start; the message says why and what to do."""


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
    check_inspector(settings)
    log = structlog.get_logger("proxy")
    try:
        listener, lifecycle = create_proxy(settings)
    except OSError as exc:
        raise StartupError(f"cannot prepare {exc.filename}: {exc.strerror}") from None
    try:
        try:
            addresses = await listener.start(settings.listen.host, settings.listen.port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {settings.listen.host}:{settings.listen.port}: {exc.strerror}"
            ) from None
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
        # What start-up made (modules, classes, settings) lives as long as the process: the
        # collector need not walk it again at each full collection (tens of milliseconds
        # during which no byte moves).
        gc.freeze()
        stop = asyncio.Event()
        stop_now = asyncio.Event()

        def on_signal(signum: signal.Signals) -> None:
            if stop.is_set():
                if signum == signal.SIGINT:
                    # A second Ctrl-C: the person at the terminal does not want to wait.
                    stop_now.set()
                return
            # Not ready from this moment: an orchestrator stops routing new work here.
            lifecycle.ready = False
            stop.set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await stop.wait()
        # No new exchange starts from here; the port stays open so that a probe reads
        # readyz's 503, and a forwarded request a clear 503, until the drain is over.
        listener.begin_shutdown()
        in_flight = lifecycle.in_flight
        grace = settings.shutdown.grace
        log.info(
            "shutting down",
            in_flight=in_flight,
            grace_s=grace,
            waiting=_waiting(in_flight, grace),
        )
        cut = await lifecycle.drain(grace, stop_now=stop_now)
        listener.stop_accepting()
        if cut:
            listener.cut()
            # What was cut ends on the loop's next turns: let its log lines be written.
            await lifecycle.drain(1.0)
    finally:
        await listener.close()
    log.info("stopped", drained=in_flight - cut, cut=cut)


def _waiting(in_flight: int, grace: float) -> str:
    """What shutdown waits for, in words, and how to stop waiting."""
    if not in_flight:
        return "nothing in flight"
    noun = "exchange" if in_flight == 1 else "exchanges"
    return (
        f"waiting up to {grace:g} s for {in_flight} {noun} in flight to finish; "
        "press Ctrl-C again to stop now"
    )
