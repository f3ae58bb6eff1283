"""The SSE tap: exact at every chunk border, bounded on huge lines, never failing."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from proxy.sse import HEAD_LIMIT, TAIL_LIMIT, SSETap

FIXTURES = Path(__file__).parent / "fixtures"


def event(kind: str, **payload: object) -> bytes:
    data = json.dumps({"type": kind, **payload}, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


STREAM = (
    event("response.created", response={"id": "r1"})
    + event("response.output_text.delta", delta="hé")
    + event(
        "response.completed",
        response={
            "id": "r1",
            "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18},
        },
    )
)


def tap_all(*chunks: bytes) -> SSETap:
    tap = SSETap()
    for chunk in chunks:
        tap.feed(chunk)
    tap.close()
    return tap


def test_summary_of_a_completed_stream() -> None:
    summary = tap_all(STREAM).summary
    assert summary.events == 3
    assert summary.first_event == "response.created"
    assert summary.last_event == "response.completed"
    assert summary.completed
    assert summary.usage == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert summary.error_code is None


def test_every_split_position_gives_the_same_summary() -> None:
    whole = tap_all(STREAM).summary
    for split in range(len(STREAM) + 1):
        assert tap_all(STREAM[:split], STREAM[split:]).summary == whole, split


def test_byte_by_byte_gives_the_same_summary() -> None:
    assert (
        tap_all(*(STREAM[i : i + 1] for i in range(len(STREAM)))).summary == tap_all(STREAM).summary
    )


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    whole = tap_all(stream).summary
    assert whole == tap_all(STREAM).summary
    for split in range(len(stream) + 1):
        assert tap_all(stream[:split], stream[split:]).summary == whole, split


def test_an_eight_mebibyte_image_line_is_summarised_with_bounded_memory() -> None:
    image = base64.b64encode(os.urandom(6 * 1024 * 1024)).decode()
    stream = event(
        "response.output_item.done", item={"type": "image_generation_call", "result": image}
    ) + event(
        "response.completed",
        response={"output": [{"result": image}], "usage": {"input_tokens": 5, "output_tokens": 1}},
    )
    tap = SSETap()
    largest = 0
    for start in range(0, len(stream), 65536):
        tap.feed(stream[start : start + 65536])
        for view in (tap._partial, tap._data):
            if isinstance(view, memoryview):  # a whole short line, held as a view
                largest = max(largest, len(view))
            elif view is not None:
                largest = max(largest, len(view.head) + len(view.tail))
    tap.close()
    assert 0 < largest <= HEAD_LIMIT + TAIL_LIMIT
    summary = tap.summary
    assert summary.events == 2
    assert summary.first_event == "response.output_item.done"
    assert summary.completed
    assert summary.usage == {"input_tokens": 5, "output_tokens": 1}


@pytest.mark.parametrize(
    ("closing", "terminal", "code", "message"),
    [
        (
            event(
                "response.failed",
                response={"error": {"code": "server_is_overloaded", "message": "try later"}},
            ),
            "response.failed",
            "server_is_overloaded",
            "try later",
        ),
        (
            event("error", code="rate_limit_exceeded", message="slow down"),
            "error",
            "rate_limit_exceeded",
            "slow down",
        ),
        (
            event("error", error={"type": "invalid_request_error", "message": "bad"}),
            "error",
            "invalid_request_error",
            "bad",
        ),
        (
            event(
                "response.incomplete",
                response={"incomplete_details": {"reason": "max_output_tokens"}},
            ),
            "response.incomplete",
            "max_output_tokens",
            None,
        ),
    ],
)
def test_failures_inside_a_200_stream(
    closing: bytes, terminal: str, code: str, message: str | None
) -> None:
    summary = tap_all(event("response.created"), closing).summary
    assert summary.terminal == terminal
    assert not summary.completed
    assert summary.error_code == code
    assert summary.error_message == message


def test_type_comes_from_json_not_the_event_line_and_falls_back_to_it() -> None:
    assert (
        tap_all(b'event: misleading\ndata: {"type":"response.created"}\n\n').summary.first_event
        == "response.created"
    )
    assert tap_all(b"event: ping\ndata: not json\n\n").summary.first_event == "ping"
    assert tap_all(b"data: [DONE]\n\n").summary.first_event == "message"


def test_multi_line_data_and_comments() -> None:
    summary = tap_all(b': keep-alive\n\ndata: {"type":\ndata: "response.completed"}\n\n').summary
    assert summary.events == 1
    assert summary.completed


def test_unterminated_last_event_is_not_counted() -> None:
    summary = tap_all(event("response.created") + b'data: {"type":"response.completed"}\n').summary
    assert summary.events == 1
    assert not summary.completed


def test_captured_streams_from_real_clients() -> None:
    for name, events in [
        ("sse_minimal_accepted_by_codex.txt", 3),
        ("sse_full_with_image_generation.txt", None),
    ]:
        summary = tap_all((FIXTURES / name).read_bytes()).summary
        assert summary.completed
        if events is not None:
            assert summary.events == events


def test_on_event_sees_each_event_as_it_is_parsed() -> None:
    seen: list[tuple[str, int]] = []
    tap = SSETap(lambda kind, summary: seen.append((kind, summary.events)))
    tap.feed(STREAM)
    assert seen == [
        ("response.created", 1),
        ("response.output_text.delta", 2),
        ("response.completed", 3),
    ]
