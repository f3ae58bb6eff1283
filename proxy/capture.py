"""Opt-in body capture: each exchange as a redacted HAR 1.2 file, for reading, not replay.

Bodies are copied as they pass (up to a cap) and decoded later on the copy; the files
are written off the event loop when the exchange ends, mode 0600, and the oldest are
removed once all captures exceed their total budget.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import re
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

import brotli
import orjson
import structlog
import zstandard
from yarl import URL

from proxy import __version__, accounting, blobs, redact
from proxy.exchange import Bodies, Body, Exchange, Observer
from proxy.forward import Head, forwarded_pairs
from proxy.headers import decode_lossy

EXCERPT = 512


def _decoders() -> dict[str, Callable[[bytes], bytes]]:
    # Streaming decoders: a body cut at the capture limit decodes as far as it goes.
    return {
        "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
        "gzip": lambda data: zlib.decompressobj(wbits=zlib.MAX_WBITS | 16).decompress(data),
        "x-gzip": lambda data: zlib.decompressobj(wbits=zlib.MAX_WBITS | 16).decompress(data),
        "deflate": lambda data: zlib.decompressobj().decompress(data),
        "br": lambda data: bytes(brotli.Decompressor().process(data)),
        "identity": bytes,
    }


def decode(body: Body, encoding: str | None) -> tuple[bytes, str | None]:
    """The body decoded by its Content-Encoding, and a note when it could not be."""
    data = bytes(body.data)
    name = (encoding or "identity").strip().lower()
    decoder = _decoders().get(name)
    if decoder is None:
        return data, f"not decoded: unknown content-encoding {name}"
    try:
        return decoder(data), None
    except (zstandard.ZstdError, zlib.error, brotli.error) as exc:
        return data, f"not decoded ({name}: {exc})"


def readable(data: bytes, secrets: Sequence[str] = ()) -> tuple[str, str | None]:
    """Text for a reader: base64 runs (images) replaced by their fingerprint, secrets
    masked; a body that is not UTF-8 as base64."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"
    return redact.mask_known(redact.redact_text(blobs.fold(text)), secrets), None


def excerpt(body: Body, encoding: str | None, secrets: Sequence[str]) -> str:
    """The body's start, cut after its blobs are folded and its secrets masked (a cut
    through either would show part of it)."""
    data, _ = decode(body, encoding)
    text, how = readable(data, secrets)
    return f"[{how}] {text[:EXCERPT]}" if how else text[:EXCERPT]


def _content(body: Body, encoding: str | None, mime: str, secrets: Sequence[str]) -> dict[str, Any]:
    data, problem = decode(body, encoding)
    text, how = readable(data, secrets)
    notes = [note for note in (problem,) if note]
    if body.truncated:
        notes.append(f"truncated: {len(body.data)} of {body.size} bytes kept")
    content: dict[str, Any] = {"size": len(data), "mimeType": mime, "text": text}
    if how:
        content["encoding"] = how
    if notes:
        content["comment"] = "; ".join(notes)
    return content


def _head(exchange: Exchange) -> Head:
    return Head.read(
        exchange.method.encode(),
        exchange.target.encode("latin-1"),
        "1.1",
        exchange.raw_request_headers,
        keep_alive=True,
        upgrade=exchange.websocket is not None,
    )


def _headers(pairs: list[tuple[str, str]], secrets: Sequence[str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in redact.headers(pairs, secrets)]


def har(exchange: Exchange, bodies: Bodies, *, upstream: str) -> dict[str, Any]:
    """One exchange as a HAR 1.2 log, the request as forwarded: the upstream's URL after
    rewriting, the headers it got (its Host); the client's own target is in the comment."""
    target = exchange.upstream_target or exchange.target
    query = target.partition("?")[2]
    request_type = exchange.request_header("Content-Type") or ""
    response_type = exchange.response_header("Content-Type") or ""
    wait = exchange.headers_ms or 0.0
    secrets = redact.secret_values(
        [*exchange.request_headers, *exchange.response_headers], exchange.target
    )
    total = exchange.duration_ms or 0.0
    host = (URL(upstream).host_port_subcomponent or upstream).encode()
    entry: dict[str, Any] = {
        "startedDateTime": datetime.datetime.fromtimestamp(
            exchange.started_at, datetime.UTC
        ).isoformat(),
        "time": total,
        "request": {
            "method": exchange.method,
            "url": upstream + redact.mask_known(redact.redact_target(target), secrets),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _headers(decode_lossy(forwarded_pairs(_head(exchange), host=host)), secrets),
            "queryString": [
                {"name": name, "value": redact.mask_known(value, secrets)}
                for name, _, value in (
                    part.partition("=")
                    for part in redact.redact_target("/?" + query)[2:].split("&")
                )
                if name
            ],
            "headersSize": -1,
            "bodySize": bodies.request.size,
        },
        "response": {
            "status": exchange.status or 0,
            "statusText": exchange.reason or _reason(exchange.status),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _headers(exchange.response_headers, secrets),
            "content": _content(
                bodies.response,
                exchange.response_header("Content-Encoding"),
                response_type,
                secrets,
            ),
            "redirectURL": exchange.response_header("Location") or "",
            "headersSize": -1,
            "bodySize": bodies.response.size,
        },
        "cache": {},
        "timings": {
            "blocked": -1,
            "dns": -1,
            "connect": exchange.connect_ms if exchange.connect_ms is not None else -1,
            "ssl": -1,
            "send": 0,
            "wait": wait,
            "receive": max(total - wait, 0.0),
        },
        "comment": redact.mask_known(
            f"request_id {exchange.request_id}; rule {exchange.rule or 'none'}; "
            f"path sent by the client {redact.redact_target(exchange.target)}; "
            f"outcome {exchange.outcome}"
            + (f"; {exchange.diagnosis}" if exchange.diagnosis else ""),
            secrets,
        ),
    }
    spent = accounting.described(exchange)
    if spent:
        # What it used and the plan usage its answer said, as its log line has them.
        entry["_usage"] = spent
    if bodies.request.size or exchange.method in ("POST", "PUT", "PATCH"):
        content = _content(
            bodies.request, exchange.request_header("Content-Encoding"), request_type, secrets
        )
        notes = [note for note in (content.get("comment"), content.get("encoding")) if note]
        post: dict[str, Any] = {"mimeType": request_type, "text": content["text"]}
        if notes:
            post["comment"] = "; ".join(notes)
        entry["request"]["postData"] = post
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "codex-path-proxy", "version": __version__},
            "entries": [entry],
        }
    }


def _reason(status: int | None) -> str:
    """The standard reason phrase, where the upstream sent none."""
    try:
        return HTTPStatus(status or 0).phrase
    except ValueError:
        return ""


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


def file_name(exchange: Exchange) -> str:
    """One path component: the start time, then the request id with anything but
    [A-Za-z0-9._-] replaced (a client chooses the id; '/' must not make it a path)."""
    stamp = datetime.datetime.fromtimestamp(exchange.started_at, datetime.UTC)
    safe_id = _UNSAFE_IN_NAME.sub("_", exchange.request_id[:32]).lstrip(".") or "request"
    return f"{stamp:%Y%m%dT%H%M%S.%f}-{safe_id}.har"


class Capture(Observer):
    """The observer that writes one HAR file per exchange that recorded bodies."""

    def __init__(self, directory: str, *, total_limit: int, upstream: str) -> None:
        self.directory = Path(directory)
        self.total_limit = total_limit
        self.upstream = upstream
        self._pending: set[asyncio.Future[None]] = set()
        # One writer thread: files are written in the order exchanges end, and the
        # bookkeeping below needs no lock.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture")
        self._kept: deque[tuple[Path, int]] = deque()  # oldest first, with sizes
        self._total = 0

    def prepare(self) -> None:
        """Create the directory and take stock of the captures already in it (once: each
        write then updates the tally instead of listing the directory again)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.har")):
            self._keep(path, path.stat().st_size)

    def ended(self, exchange: Exchange) -> None:
        if exchange.bodies is None:
            return
        document = har(exchange, exchange.bodies, upstream=self.upstream)
        name = file_name(exchange)
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._writer, self._write, name, document)
        except RuntimeError:  # closed: an exchange that ended as the process stopped
            self._write(name, document)
            return
        self._pending.add(future)
        future.add_done_callback(self._written)

    async def aclose(self) -> None:
        await self.drain()
        self.close()

    async def drain(self) -> None:
        """Wait for files still being written (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def close(self) -> None:
        """Let the writer thread go; a capture that ends later is written in place."""
        self._writer.shutdown(wait=False)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and (error := future.exception()) is not None:
            structlog.get_logger("proxy.capture").error("capture not written", error=str(error))

    def _write(self, name: str, document: dict[str, Any]) -> None:
        path = self.directory / name
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        self._keep(path, len(data))

    def _keep(self, path: Path, size: int) -> None:
        """Count a capture in, then remove the oldest while all exceed the budget."""
        self._kept.append((path, size))
        self._total += size
        while self._total > self.total_limit and self._kept:
            oldest, oldest_size = self._kept.popleft()
            self._total -= oldest_size
            oldest.unlink(missing_ok=True)
