"""Logging: structlog, one line per event, JSON off a terminal, console on one."""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import sys
import time
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from proxy import printable, usage_text
from proxy.redact import redact_line, redact_text

# Values structlog or the standard library put in a line for the processors after them.
_OWN_KEYS = frozenset({"exc_info", "stack_info"})


def printable_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """First, for both formats: every string a peer may have chosen (any, in any value)
    escaped where not printable and capped (proxy.printable)."""
    # Every line passes here (the canonical line too): the common values, short printable
    # strings and numbers, cost a type check each.
    limit = printable.LIMIT
    for key, item in event_dict.items():
        kind = type(item)
        if kind is str:
            if len(item) > limit or not item.isprintable():
                event_dict[key] = printable.text(item)
        elif (kind is dict or kind is list or kind is tuple) and key not in _OWN_KEYS:
            event_dict[key] = printable.value(item)
        elif isinstance(item, str):
            event_dict[key] = printable.text(str(item))
    return event_dict


def redact_rendered(_: WrappedLogger, __: str, line: Any) -> str:
    """Second line of defence, after rendering: mask anything shaped like a credential, and
    any query parameter named like one, anywhere in the finished line (keys, nested
    values, tracebacks included)."""
    assert isinstance(line, str), "runs after a renderer"
    return redact_line(line)


class ExchangeLine:
    """For a person at a terminal: each exchange as one aligned line, failures in red.

    POST   /backend-api/responses → /backend-api/codex/responses  200  text/event-stream
           41 events  response.completed  3.2 s
    POST   /backend-api/responses → /backend-api/codex/responses  502  upstream_unreachable
           connection refused by 127.0.0.1:1  2 ms
    """

    RED = "\x1b[31m"
    RESET = "\x1b[0m"

    def __init__(self, *, colors: bool) -> None:
        self.colors = colors

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("event") not in ("request", "websocket") or "method" not in event_dict:
            return event_dict
        line = self.render(event_dict)
        if self.colors and event_dict.get("level") in ("warning", "error"):
            line = self.RED + line + self.RESET
        kept = {key: event_dict[key] for key in ("timestamp", "level") if key in event_dict}
        return {**kept, "event": line}

    @staticmethod
    def render(fields: EventDict) -> str:
        path = str(fields.get("path"))
        if fields.get("rule"):
            path += f" → {fields.get('upstream_path')}"
        parts = [f"{fields['method']:<6} {path}", str(fields.get("status") or "---")]
        if fields.get("content_type"):
            parts.append(str(fields["content_type"]).split(";")[0])
        if "events" in fields:
            parts.append(f"{fields['events']} events")
            parts.append(str(fields.get("stream_end") or "no response.completed"))
        if fields.get("websocket"):
            parts.append(f"{fields.get('frames_in')}↑ {fields.get('frames_out')}↓ frames")
            parts.append(f"close {fields.get('close_code')} by {fields.get('closed_by')}")
        if fields.get("outcome") != "completed":
            outcome, cause = str(fields.get("outcome")), fields.get("cause")
            parts.append(outcome + (f" ({cause})" if cause and cause != outcome else ""))
        if fields.get("detail"):
            parts.append(str(fields["detail"]))
        parts.append(_duration(fields.get("duration_ms")))
        spent = _spent(fields)
        if spent:
            parts.append(spent)
        line = "  ".join(parts)
        if fields.get("diagnosis"):
            line += f"\n       {fields['diagnosis']}"
        return line


def _spent(fields: EventDict) -> str:
    """`12.3k in / 845 out · 42% of 5h`: the tokens, and the first window's use."""
    parts = []
    tokens = fields.get("tokens")
    if isinstance(tokens, dict):
        given, made = tokens.get("input"), tokens.get("output")
        if isinstance(given, int) and isinstance(made, int):
            parts.append(f"{usage_text.count(given)} in / {usage_text.count(made)} out")
    limits = fields.get("limits")
    if isinstance(limits, list) and limits and isinstance(limits[0], dict):
        first = limits[0]
        used = first.get("used_percent")
        if isinstance(used, int | float):
            parts.append(f"{used:.0f}% of {first.get('window')}")
    return " · ".join(parts)


def _duration(ms: object) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _dumps(value: Any, **_: Any) -> str:
    # orjson: about 5% of the proxy's instructions per request against the standard json.
    return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


class LineWriter:
    """structlog's logger, and the standard library's stream: each finished line is
    gathered, and the lines of one turn of the event loop go out in one write (a busy
    proxy writes one line per request; a write each was a syscall each). Off the loop
    (at start-up, at exit), a line is written at once."""

    def __init__(self, stream: TextIO, *, json: bool) -> None:
        self.stream = stream
        # Lines are JSON: the canonical line may take the short way (see JSONLines).
        self.json = json
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def msg(self, message: str) -> None:
        pending = self._pending
        pending.append(message)
        if len(pending) > 1:
            return  # a flush is already due
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
        loop.call_soon(self.flush)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg

    def write(self, text: str) -> None:
        """The standard library's handler writes here (its lines end in a newline)."""
        self.msg(text.rstrip("\n"))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self.stream.write("\n".join(pending) + "\n")
            self.stream.flush()


class JSONLines:
    """The short way for the one line every exchange writes: the same JSON the configured
    processors would render (fields made printable, event, level, timestamp; credentials
    masked after rendering), without structlog's per-call machinery, which cost about
    seven times the rendering itself. Taken only while the processors are the ones
    configure_logging set (capture_logs swaps them in place: then structlog's way)."""

    def __init__(self) -> None:
        config = structlog.get_config()
        self.processors: list[Processor] = config["processors"]
        self.count = len(self.processors)
        logger = config["logger_factory"]()
        self.writer = logger if isinstance(logger, LineWriter) and logger.json else None
        self._second = -1
        self._stamp = ""

    def write(self, level: str, event: str, fields: dict[str, Any]) -> bool:
        """Write the line; False when structlog's way must be taken instead."""
        writer = self.writer
        processors = self.processors
        if writer is None or len(processors) != self.count or processors[-1] is not redact_rendered:
            return False
        fields["event"] = event
        fields["level"] = level
        fields["timestamp"] = self._now()
        line = _dumps(fields)
        # What printable_values would change shows in the rendered line: a line within
        # the limit, in ASCII, with no escape and no DEL, has nothing to escape or cut.
        if len(line) > printable.LIMIT or not line.isascii() or "\\" in line or "\x7f" in line:
            line = _dumps(printable_values(None, level, fields))
        # The targets' queries are masked already (redact_target): a query parameter
        # elsewhere in the line (an error's text) is looked for only when it has an `=`
        # beyond theirs. Equal to redact_line, without its scan on every line with a query.
        targets = f"{fields.get('path')}{fields.get('upstream_path')}".count("=")
        writer.msg(redact_line(line) if line.count("=") > targets else redact_text(line))
        return True

    def _now(self) -> str:
        """As structlog's TimeStamper(fmt="iso", utc=True) writes it, formatted once a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%S"
            )
        return f"{self._stamp}.{int((now - second) * 1e6):06d}Z"


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Set up structlog, and route the standard library's records (aiohttp's) through it."""
    stream = stream or sys.stderr
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    writer = LineWriter(stream, json=not console)
    atexit.register(writer.flush)
    colors = console and stream.isatty()
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=colors)
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    shared: list[Processor] = [
        printable_values,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    exchange_lines: list[Processor] = [ExchangeLine(colors=colors)] if console else []
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            *exchange_lines,
            renderer,
            redact_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_: writer,
        # Left off: cached loggers escape structlog.testing.capture_logs.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                redact_rendered,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
