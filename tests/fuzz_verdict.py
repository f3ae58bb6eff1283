"""What the client may see for each request of the stateful fuzz (test_fuzz.py), and
the judgement of what it saw.

A request whose reply is healthy, written whole, on a connection nothing ended, must
get exactly the upstream's answer: its status, interim answers, body and trailers, byte
for byte. Each fault allows only what that fault explains: the proxy's JSON error with
the statuses it may cause, a cut (the connection closed before the answer's framing
ended, never a clean end), or nothing (the connection ended first). Whatever the case,
an answer carries no marker but its own request's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tests.fuzz_peers import Arrival, Book, Client, Seen
from tests.fuzz_shapes import (
    IDEMPOTENT,
    Ask,
    Fault,
    Framing,
    Junk,
    Reply,
    Wire,
    reply_wire,
)

# A request up to this size is kept whole by the proxy to send again (request_writer's
# KEEP_LIMIT is 256 KiB of head and body); between this and the limit, either may happen.
REPLAYABLE = 250_000
KEEP_LIMIT = 256 * 1024


@dataclass(eq=False)
class Item:
    """One request on a client connection, and how it was written."""

    marker: bytes
    method: bytes
    data: bytes
    ask: Ask | None = None
    junk: Junk | None = None
    control: bool = False
    written: int = 0
    first_write: float = 0.0
    last_write: float = 0.0
    # The proxy may have timed it out (a gap in its writing as long as a timeout), or
    # closed the idle connection as it was written (it waited with the client paused).
    may_time_out: bool = False
    may_drop: bool = False
    # On its way to the upstream over a connection the upstream was closing.
    may_fail: bool = False

    @property
    def whole(self) -> bool:
        return self.written == len(self.data)

    @property
    def head_size(self) -> int:
        end = self.data.find(b"\r\n\r\n")
        return len(self.data) if end < 0 else end + 4


@dataclass
class Allowed:
    """The outcomes a request may have."""

    answer: Wire | None = None  # the upstream's answer, exactly
    content: bytes | None = None  # its body, when that is not the wire's whole content
    statuses: set[int] = field(default_factory=set)  # the proxy's JSON errors
    cut: Wire | None = None  # a cut of this answer
    nothing: bool = False
    control: bool = False
    interims: int = 0  # complete 103s delivered before a JSON error (at most, if not exact)
    exact_interims: bool = True
    why: list[str] = field(default_factory=list)


def allowed(item: Item, book: Book, max_body: int) -> Allowed:
    can = Allowed()
    if item.may_drop:
        can.nothing = True
        can.why.append("written as the proxy may have closed the idle connection")
    if item.junk is not None:
        # Refused as soon as the proxy reads what is wrong, even mid-head.
        can.statuses |= item.junk.statuses
    if item.may_time_out or not item.whole or item.may_fail:
        # Which failure comes first decides how many interim answers precede it.
        can.exact_interims = False
    if item.may_time_out or not item.whole:
        can.statuses.add(408)
        can.nothing = True
        can.why.append("its writing stopped for as long as a timeout, or for good")
        if item.written < item.head_size:
            return can
    if item.control:
        can.control = True
        return can
    if item.junk is not None:
        return can
    ask = item.ask
    assert ask is not None
    size = ask.size if ask.framing is not Framing.NONE else 0
    if size > max_body:
        can.exact_interims = False
        can.statuses.add(413)
        can.why.append("its body is over limits.max_body_size")
        if ask.framing is Framing.LENGTH:
            return can  # refused before anything goes upstream
    if item.may_fail:
        can.statuses.add(502)
        can.why.append("it was on its way over a connection the upstream closed")
    arrivals = book.arrivals.get(item.marker, [])
    if not arrivals:
        can.why.append("it never reached the upstream")
        return can
    _reply_side(can, item, ask, arrivals)
    return can


def _reply_side(can: Allowed, item: Item, ask: Ask, arrivals: list[Arrival]) -> None:
    method = ask.method
    reply = ask.reply.effective(method)
    wire = reply_wire(item.marker, reply, method)
    fault = reply.fault
    if fault in (Fault.NONE, Fault.JUNK_AFTER, Fault.STALL_413):
        can.answer = wire
        if size_over_limit(can):
            can.cut = wire  # an early answer, then the body went over the limit
    elif fault is Fault.BAD_HEAD:
        can.statuses.add(502)
        can.why.append("the upstream's head is malformed")
    elif fault is Fault.SILENT:
        can.statuses.add(504)
        can.why.append("the upstream never answered")
    else:
        _cut_short(can, item, reply, wire, arrivals[0])


def _cut_short(can: Allowed, item: Item, reply: Reply, wire: Wire, first: Arrival) -> None:
    """The upstream closed, reset or went silent partway (or before a byte)."""
    fault = reply.fault
    healthy = reply_wire(item.marker, reply.without_fault(), item.method)
    sent = (
        0
        if fault in (Fault.CLOSE_BEFORE, Fault.RESET_BEFORE)
        else len(wire.data) * reply.cut // 1000
    )
    delivered = _complete_interims(wire, sent)
    # Sent again on a fresh connection: a request that may be, held whole, whose reused
    # connection closed before any answer reached the client.
    again = first.reused and item.method in IDEMPOTENT and not delivered
    if sent < wire.head_end and fault is Fault.SILENT_MID:
        can.statuses.add(504)
        can.interims = delivered
        can.why.append("the upstream went silent before its head was through")
    elif sent < wire.head_end:
        if again and len(item.data) <= REPLAYABLE:
            can.answer = healthy
            can.why.append("sent again on a fresh connection")
            return
        can.statuses.add(502)
        can.interims = delivered
        can.why.append("the upstream closed before answering")
        if again and len(item.data) <= KEEP_LIMIT:
            can.answer = healthy
    elif sent >= len(wire.data) and not (fault is Fault.RESET and reply.framing is Framing.CLOSE):
        can.answer = wire
        if reply.early and reply.framing is Framing.CLOSE:
            can.cut = wire  # closed before the request's body was read: a reset
    elif reply.framing is Framing.CLOSE and fault is Fault.CUT:
        # A body delimited by the close: the proxy cannot tell it was cut.
        can.answer = wire
        can.content = wire.data[wire.head_end : sent]
        if reply.early:
            # Closed before the request's body was read, the FIN is a reset.
            can.cut = wire
    else:
        can.cut = wire
        can.why.append(f"the upstream's answer was cut ({fault.value}) after {sent} bytes")


def size_over_limit(can: Allowed) -> bool:
    return 413 in can.statuses


def _complete_interims(wire: Wire, sent: int) -> int:
    at, count = 0, 0
    for _ in range(wire.interims):
        end = wire.data.find(b"\r\n\r\n", at) + 4
        if end > sent:
            break
        count, at = count + 1, end
    return count


# --- Judging.


def judge(item: Item, seen: Seen | None, ended: bool, can: Allowed, *, max_body: int) -> None:
    """Raise AssertionError unless what the client saw is allowed."""
    name = _name(item)
    hygiene(item, seen)
    if seen is None:
        assert ended, f"{name}: no answer and the connection is still open"
        assert can.nothing, f"{name}: the connection closed without answering it ({can.why})"
        return
    from_upstream = bool(seen.header(b"x-marker"))
    if not seen.complete:
        message = (
            f"{name}: cut after {len(seen.body)} body bytes (status {seen.status}); "
            f"allowed: {_summary(can)}"
        )
        assert can.cut is not None, message
        assert from_upstream or seen.status is None, message
        if from_upstream:
            _check_answer(name, item, seen, can.cut, None, partial=True)
        return
    if can.control:
        assert seen.status == 200, f"{name}: /_proxy/healthz answered {seen.status}"
        assert json.loads(seen.body) == {"status": "ok"}, f"{name}: healthz said {seen.body!r}"
        return
    if from_upstream:
        assert can.answer is not None, (
            f"{name}: the upstream's {seen.status} reached the client; allowed: {_summary(can)}"
        )
        _check_answer(name, item, seen, can.answer, can.content, partial=False)
        return
    assert seen.status in can.statuses, (
        f"{name}: the proxy answered {seen.status} {bytes(seen.body[:300])!r}; "
        f"allowed: {_summary(can)}"
    )
    _check_error(name, seen, item.method)
    ask = item.ask
    if ask is not None and ask.version == "1.1":
        # The proxy's own 100 Continue goes out before the request is forwarded, so
        # before some refusals and not others.
        counts = range(can.interims + 1) if not can.exact_interims else [can.interims]
        allowed_interims = [
            [100] * continued + [103] * count
            for continued in {0, _continued(item)}
            for count in counts
        ]
        got = [status for status, _ in seen.interims]
        assert got in allowed_interims, f"{name}: interim answers {got} before the proxy's error"


def _continued(item: Item) -> int:
    ask = item.ask
    assert ask is not None
    return int(ask.expect and ask.framing is not Framing.NONE)


def _check_answer(
    name: str, item: Item, seen: Seen, wire: Wire, content: bytes | None, *, partial: bool
) -> None:
    ask = item.ask
    assert ask is not None
    reply = ask.reply.effective(ask.method)
    expected_body = wire.content if content is None else content
    if ask.method == b"HEAD" or reply.bodiless:
        expected_body = b""
    body = bytes(seen.body)
    if partial:
        assert expected_body.startswith(body), (
            f"{name}: a cut answer's body is not a prefix of the upstream's: "
            f"{len(body)} bytes, {_diff(body, expected_body)}"
        )
    else:
        assert body == expected_body, (
            f"{name}: the body is not the upstream's: {len(body)} bytes, "
            f"expected {len(expected_body)}; {_diff(body, expected_body)}"
        )
    if seen.status is not None:
        assert seen.status == (413 if reply.fault is Fault.STALL_413 else reply.status), (
            f"{name}: status {seen.status}, the upstream sent {reply.status}"
        )
        version = b"1.0" if ask.version == "1.0" else b"1.1"
        assert seen.version == version, (
            f"{name}: HTTP/{seen.version.decode()} to an HTTP/{ask.version} client"
        )
    if ask.version == "1.1":
        expected = [100] * _continued(item) + [103] * wire.interims
        got = [status for status, _ in seen.interims]
        assert got == expected or partial, f"{name}: interim answers {got}, expected {expected}"
    else:
        assert not seen.interims, f"{name}: interim answers to an HTTP/1.0 client"
    if not partial:
        chunked = (
            reply.framing is Framing.CHUNKED
            and ask.version == "1.1"
            and ask.method != b"HEAD"
            and not reply.bodiless
        )
        trailers = list(wire.trailers) if chunked else []
        assert seen.trailers == trailers, f"{name}: trailers {seen.trailers}, sent {trailers}"


def _check_error(name: str, seen: Seen, method: bytes) -> None:
    assert seen.header(b"content-type") == [b"application/json"], (
        f"{name}: the proxy's error is not JSON: {seen.headers}"
    )
    if method == b"HEAD":
        return  # no body (what follows the head is the next answer's)
    error = json.loads(seen.body)["error"]
    assert error["type"] == "proxy_error", f"{name}: error body {error}"
    assert error["code"], f"{name}: error body {error}"
    assert error["message"], f"{name}: error body {error}"


def hygiene(item: Item, seen: Seen | None) -> None:
    """No byte of another exchange in this one's answer."""
    if seen is None:
        return
    foreign = seen.markers() - {item.marker}
    assert not foreign, (
        f"{_name(item)}: its answer carries another exchange's marker {sorted(foreign)}: "
        f"status {seen.status}, headers {seen.headers}, body {bytes(seen.body[:200])!r}"
    )


def ends(seen: Seen | None, item: Item) -> bool:
    """Whether the connection ends with this outcome (a cut, nothing, or an answer that
    says so, or one whose body only the close delimits)."""
    if seen is None or not seen.complete:
        return True
    if seen.ends_connection:
        return True
    no_body = item.method == b"HEAD" or seen.status in (204, 304)
    framed = seen.header(b"content-length") or seen.header(b"transfer-encoding")
    return not no_body and not framed


def verdicts(
    items: list[Item], client: Client, book: Book, *, max_body: int, aborted: bool
) -> None:
    """Judge every request written on one connection, in order."""
    ended_before = False
    for index, item in enumerate(items):
        seen = client.seen[index] if index < len(client.seen) else None
        hygiene(item, seen)
        if aborted:
            continue
        if ended_before:
            assert seen is None, (
                f"{_name(item)}: bytes came after the answer that ended the connection: {seen}"
            )
            continue
        judge(item, seen, client.ended, allowed(item, book, max_body), max_body=max_body)
        ended_before = ends(seen, item)


def _name(item: Item) -> str:
    if item.junk is not None:
        kind = f"malformed request ({item.junk.name})"
    elif item.control:
        kind = "/_proxy/healthz"
    else:
        kind = repr(item.ask)
    return f"{item.marker.decode()} {kind}"


def _summary(can: Allowed) -> str:
    kinds = []
    if can.answer is not None:
        kinds.append("the upstream's answer")
    if can.statuses:
        kinds.append(f"JSON {sorted(can.statuses)}")
    if can.cut is not None:
        kinds.append("a cut")
    if can.nothing:
        kinds.append("nothing")
    if can.control:
        kinds.append("the proxy's own answer")
    return " or ".join(kinds) + (f" ({'; '.join(can.why)})" if can.why else "")


def _diff(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if at is None:
        at = min(len(got), len(want))
    return f"first difference at {at}: got {got[at : at + 40]!r}, expected {want[at : at + 40]!r}"
