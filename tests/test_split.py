"""Split invariance: whatever the reads, the same bytes out, the same outcome, the same
log line. Every scripted exchange (tests/wire_cases.py) is replayed with the client's
bytes cut into reads at every position, each answer likewise, every pair of positions for
the short ones, and random sets of cuts in both directions at once; each replay must be
identical to the one with no cut at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import RunningProxy, StartProxy
from tests.wire_cases import LIMITS, SCRIPTS
from tests.wire_script import Script, ScriptedUpstream, Seen, replay

# Where the client's bytes are cut, and each answer's.
Cuts = tuple[tuple[int, ...], dict[int, tuple[int, ...]]]
# Cases short enough for every pair of cuts in the client's bytes.
PAIRS_UP_TO = 64


@dataclass
class Rig:
    proxy: RunningProxy
    upstream: ScriptedUpstream

    async def run(
        self,
        script: Script,
        client_cuts: tuple[int, ...] = (),
        answer_cuts: dict[int, tuple[int, ...]] | None = None,
    ) -> Seen:
        return await replay(
            self.proxy.port,
            self.upstream,
            script,
            client_cuts=client_cuts,
            answer_cuts=answer_cuts,
        )


@pytest.fixture
async def rig(start_proxy: StartProxy) -> AsyncIterator[Rig]:
    upstream = ScriptedUpstream()
    await upstream.start()
    proxy = await start_proxy(upstream.url, limits=LIMITS, upstream={"warm_connections": 0})
    yield Rig(proxy, upstream)
    await upstream.close()


def messages(data: bytes) -> list[tuple[object, ...]]:
    """What a client reads as messages (h11, an independent reader): heads, body bytes
    joined, trailers and the end; where the bytes stop."""
    reader = h11.Connection(h11.CLIENT)
    reader.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    reader.send(h11.EndOfMessage())
    reader.receive_data(data)
    reader.receive_data(b"")
    out: list[tuple[object, ...]] = []
    body = b""
    while True:
        try:
            event = reader.next_event()
        except h11.RemoteProtocolError as exc:
            return [*out, ("error", str(exc))]
        if isinstance(event, h11.Data):
            body += event.data
            continue
        if isinstance(event, h11.InformationalResponse | h11.Response):
            headers = [(k, v) for k, v in event.headers if k != b"transfer-encoding"]
            out.append(("head", event.status_code, event.reason, headers))
        elif isinstance(event, h11.EndOfMessage):
            out.append(("end", body, list(event.headers)))
            body = b""
        else:
            return [*out, ("stop", body, type(event).__name__)]


def same(script: Script, seen: Seen, reference: Seen) -> bool:
    if not script.rechunked:
        return seen.key() == reference.key()
    return (messages(seen.client), seen.requests, seen.lines, seen.closed) == (
        messages(reference.client),
        reference.requests,
        reference.lines,
        reference.closed,
    )


def ids(script: Script) -> str:
    return script.name


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
async def test_every_single_cut_in_either_direction_changes_nothing(
    rig: Rig, script: Script
) -> None:
    reference = await rig.run(script)
    assert reference.closed, f"{script.name}: the proxy never closed the client's connection"
    assert reference.lines, f"{script.name}: no log line"
    differ = [
        cut
        for cut in range(1, len(script.client))
        if not same(script, await rig.run(script, (cut,)), reference)
    ]
    assert differ == [], f"{script.name}: client bytes cut at {differ[:10]} change the outcome"
    for index, answer in enumerate(script.answers):
        differ = [
            cut
            for cut in range(1, len(answer))
            if not same(script, await rig.run(script, answer_cuts={index: (cut,)}), reference)
        ]
        assert differ == [], f"{script.name}: answer {index} cut at {differ[:10]} differs"


SHORT = [s for s in SCRIPTS if len(s.client) <= PAIRS_UP_TO]


@pytest.mark.parametrize("script", SHORT, ids=ids)
async def test_every_pair_of_cuts_of_a_short_request_changes_nothing(
    rig: Rig, script: Script
) -> None:
    reference = await rig.run(script)
    size = len(script.client)
    differ = [
        (first, second)
        for first in range(1, size)
        for second in range(first + 1, size)
        if not same(script, await rig.run(script, (first, second)), reference)
    ]
    assert differ == [], f"{script.name}: cut pairs {differ[:10]} change the outcome"


@st.composite
def cut_sets(draw: st.DrawFn, script: Script) -> tuple[tuple[int, ...], dict[int, tuple[int, ...]]]:
    def cuts(size: int) -> tuple[int, ...]:
        if size < 2:
            return ()
        return tuple(draw(st.lists(st.integers(1, size - 1), max_size=8, unique=True)))

    return cuts(len(script.client)), {i: cuts(len(a)) for i, a in enumerate(script.answers)}


@pytest.mark.parametrize("script", SCRIPTS, ids=ids)
async def test_random_cuts_in_both_directions_at_once_change_nothing(
    rig: Rig, script: Script
) -> None:
    reference = await rig.run(script)
    found: list[Cuts] = []

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        found.append(data.draw(cut_sets(script)))

    check()
    for client_cuts, answer_cuts in found:
        seen = await rig.run(script, client_cuts, answer_cuts)
        assert same(script, seen, reference), (script.name, client_cuts, answer_cuts)
