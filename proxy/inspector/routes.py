"""The inspector's endpoints: the page and its assets, the event stream, each exchange's
content (its bodies, answer, events and images), search, capture files.

Everything is served from the package; the page loads nothing from any other origin,
and its Content-Security-Policy forbids it to (and forbids HTML built from strings).
A loopback listener answers only requests addressed to a loopback name, so a web page
that rebinds its own host name to 127.0.0.1 cannot read the inspector.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Protocol

from aiohttp import web

from proxy.endpoints import error_response
from proxy.inspector.feed import Feed, Subscriber
from proxy.settings import CONTROL_PREFIX, is_loopback

PREFIX = CONTROL_PREFIX
_ASSETS = {
    "": ("index.html", "text/html; charset=utf-8"),
    "inspector.js": ("inspector.js", "text/javascript; charset=utf-8"),
    "inspector.css": ("inspector.css", "text/css; charset=utf-8"),
}
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}


SEARCH_LIMIT = 200


class Contents(Protocol):
    """What the ring holds of each exchange's content."""

    async def content(self, seq: int, origin: str) -> bytes | None: ...

    def event(self, seq: int, position: int) -> bytes | None: ...

    def image(self, seq: int, key: str) -> tuple[bytes, str] | None: ...

    async def search(self, text: str) -> list[int]: ...


class Pages:
    def __init__(
        self,
        *,
        feed: Feed,
        snapshot: Callable[[], str],
        capture_file: Callable[[str], Path | None],
        contents: Contents,
    ) -> None:
        self.feed = feed
        self.snapshot = snapshot
        self.capture_file = capture_file
        self.contents = contents
        static = resources.files("proxy.inspector") / "static"
        self.assets = {
            path: ((static / name).read_bytes(), kind) for path, (name, kind) in _ASSETS.items()
        }

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for path in self.assets:
            router.add_get(PREFIX + path, self.asset, allow_head=True)
        router.add_get(PREFIX + "events", self.events)
        router.add_get(PREFIX + "captures/{name}", self.capture)
        router.add_get(PREFIX + r"exchanges/{seq:\d{1,12}}", self.content)
        router.add_get(PREFIX + r"exchanges/{seq:\d{1,12}}/events/{position:\d{1,12}}", self.event)
        router.add_get(PREFIX + r"exchanges/{seq:\d{1,12}}/images/{key}", self.image)
        router.add_get(PREFIX + "search", self.search)

    async def content(self, request: web.Request) -> web.Response:
        """One exchange's content: bodies as JSON trees or text, the answer, messages."""
        if not addressed_to_us(request):
            return _misaddressed()
        # The curl command is for this page's reader: against the address they used.
        origin = f"{request.scheme}://{request.host}"
        found = await self.contents.content(int(request.match_info["seq"]), origin)
        if found is None:
            return _gone()
        return _json(found)

    async def event(self, request: web.Request) -> web.Response:
        """One event of a stream as JSON, its long strings folded."""
        if not addressed_to_us(request):
            return _misaddressed()
        seq, position = int(request.match_info["seq"]), int(request.match_info["position"])
        found = self.contents.event(seq, position)
        if found is None:
            return error_response(404, "not_found", "that event is not kept")
        return _json(found)

    async def image(self, request: web.Request) -> web.Response:
        """A generated image, served only as the image type its bytes show."""
        if not addressed_to_us(request):
            return _misaddressed()
        found = self.contents.image(int(request.match_info["seq"]), request.match_info["key"])
        if found is None:
            return error_response(404, "not_found", "that image is not kept")
        data, mime = found
        return web.Response(body=data, headers={**_HEADERS, "Content-Type": mime})

    async def search(self, request: web.Request) -> web.Response:
        """The exchanges whose kept content (bodies, answer, messages) holds the text."""
        if not addressed_to_us(request):
            return _misaddressed()
        text = request.query.get("q", "").strip()
        if not text or len(text) > SEARCH_LIMIT:
            return error_response(400, "bad_request", f"q: 1 to {SEARCH_LIMIT} characters")
        matches = await self.contents.search(text)
        return _json(b'{"matches":[' + ",".join(map(str, matches)).encode() + b"]}")

    async def asset(self, request: web.Request) -> web.Response:
        if not addressed_to_us(request):
            return _misaddressed()
        body, kind = self.assets[request.path.removeprefix(PREFIX)]
        return web.Response(body=body, headers={**_HEADERS, "Content-Type": kind})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a snapshot of the ring, then each update as it happens."""
        if not addressed_to_us(request):
            return _misaddressed()
        # No await between the snapshot and subscribing: no update is missed or repeated.
        snapshot = self.snapshot()
        subscriber = self.feed.subscribe(on_drop=lambda: _abort(request))
        response = web.StreamResponse(
            headers={**_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
        )
        # A page that leaves cancels this handler (or fails a write, which aiohttp takes as
        # the client leaving): either way it is unsubscribed.
        try:
            await response.prepare(request)
            # A page that was dropped (or lost the proxy) reconnects after a second.
            await response.write(f"retry: 1000\n\nevent: snapshot\ndata: {snapshot}\n\n".encode())
            while await _send_pending(response, subscriber):
                pass
        finally:
            self.feed.unsubscribe(subscriber)
        return response

    async def capture(self, request: web.Request) -> web.StreamResponse:
        """A HAR file, only if it belongs to an exchange in the ring and is a plain file."""
        if not addressed_to_us(request):
            return _misaddressed()
        name = request.match_info["name"]
        path = self.capture_file(name)
        try:
            regular = path is not None and stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            regular = False
        if path is None or not regular:
            return error_response(
                404, "not_found", "no such capture among the inspector's recent exchanges"
            )
        assert path is not None
        # Read whole (a capture is bounded by capture.body_limit): the control plane's
        # transport is a window on the client's connection, with no sendfile.
        try:
            body = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        except OSError:
            return error_response(404, "not_found", "the capture file is gone")
        return web.Response(
            body=body,
            headers={
                **_HEADERS,
                "Content-Type": "application/json",
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )


async def _send_pending(response: web.StreamResponse, subscriber: Subscriber) -> bool:
    """Write every queued message at once; False once the stream is over."""
    batch = [await subscriber.queue.get()]
    while not subscriber.queue.empty():
        batch.append(subscriber.queue.get_nowait())
    ended = None in batch
    messages = [message for message in batch if message is not None]
    if messages:
        await response.write("".join(messages).encode())
    return not ended


def addressed_to_us(request: web.Request) -> bool:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    local = str(sockname[0]) if sockname else None
    return trusted_host(local, request.headers.get("Host", ""))


def trusted_host(local: str | None, host: str) -> bool:
    """On a loopback listener, the Host must name a loopback address too.

    A listener beyond loopback exists only by explicit choice
    (inspector.allow_non_loopback): any Host is taken there.
    """
    if local is not None and not is_loopback(local):
        return True
    return loopback_host(host)


def loopback_host(value: str) -> bool:
    """Whether a Host header names a loopback address (`127.0.0.1:8780`, `[::1]`, `localhost`)."""
    if value.startswith("["):
        name, bracket, port = value[1:].partition("]")
        if not bracket:
            return False
    else:
        name, colon, digits = value.partition(":")
        port = colon + digits
    return is_loopback(name) and (not port or (port[0] == ":" and port[1:].isdigit()))


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, headers={**_HEADERS, "Content-Type": "application/json"})


def _gone() -> web.Response:
    return error_response(404, "not_found", "that exchange is no longer among the recent ones")


def _misaddressed() -> web.Response:
    return error_response(
        403, "forbidden", "the inspector answers only requests addressed to a loopback host"
    )


def _abort(request: web.Request) -> None:
    # The page stopped reading: its pending write may never finish, so drop the connection.
    if request.transport is not None:
        request.transport.abort()
