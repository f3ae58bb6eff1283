"""The Responses stream the fake chatgpt.com answers with, and the real PNG it serves.

Event shapes follow the captured stream (`tests/fixtures/sse_full_with_image_generation.txt`):
`event:` plus one-line JSON `data:` carrying `type` and an increasing `sequence_number`,
ending with `response.completed`. An image is one `data:` line holding the whole base64
PNG, in the partial-image event and again in `item.result`.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import zlib
from typing import Any

Event = dict[str, Any]


def make_png(side: int = 1024, seed: int = 1) -> bytes:
    """A real RGB PNG of seeded noise (it does not compress: 1024 gives about 3 MB)."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    stride = side * 3
    raw = b"".join(b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )


def wants_image(request: dict[str, Any]) -> bool:
    tools = request.get("tools") or []
    return any(isinstance(tool, dict) and tool.get("type") == "image_generation" for tool in tools)


def response_events(
    request: dict[str, Any], *, answer: str, png: bytes, error_code: str | None = None
) -> list[Event]:
    """One whole stream: an image call when the request asks for one, then a text answer;
    with `error_code`, an `error` event and `response.failed` right after the start."""
    base: Event = {
        "id": "resp_e2e_0001",
        "object": "response",
        "created_at": 1795677839,
        "status": "in_progress",
        "model": request.get("model") or "gpt-5",
        "output": [],
    }
    events: list[Event] = [
        {"type": "response.created", "response": dict(base)},
        {"type": "response.in_progress", "response": dict(base)},
    ]
    if error_code is not None:
        message = "Our servers are currently overloaded. Please try again later."
        events += [
            {"type": "error", "code": error_code, "message": message, "param": None},
            {
                "type": "response.failed",
                "response": dict(
                    base, status="failed", error={"code": error_code, "message": message}
                ),
            },
        ]
        return numbered(events)
    output: list[Event] = []
    if wants_image(request):
        output.append(image_call(events, png, index=len(output)))
    output.append(text_message(events, answer, index=len(output)))
    usage = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
    events.append(
        {
            "type": "response.completed",
            "response": dict(base, status="completed", output=output, usage=usage),
        }
    )
    return numbered(events)


def image_call(events: list[Event], png: bytes, *, index: int) -> Event:
    b64 = base64.b64encode(png).decode()
    item_id = "ig_e2e_0001"
    item = {
        "id": item_id,
        "type": "image_generation_call",
        "status": "completed",
        "revised_prompt": "a test image",
        "result": b64,
        "output_format": "png",
        "size": "1024x1024",
    }
    at = {"output_index": index, "item_id": item_id}
    events += [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {"id": item_id, "type": "image_generation_call", "status": "in_progress"},
        },
        {"type": "response.image_generation_call.in_progress", **at},
        {"type": "response.image_generation_call.generating", **at},
        {
            "type": "response.image_generation_call.partial_image",
            **at,
            "partial_image_index": 0,
            "partial_image_b64": b64,
        },
        {"type": "response.image_generation_call.completed", **at},
        {"type": "response.output_item.done", "output_index": index, "item": item},
    ]
    return item


def text_message(events: list[Event], answer: str, *, index: int) -> Event:
    item_id = "msg_e2e_0001"
    part = {"type": "output_text", "annotations": [], "text": answer}
    message = {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    at = {"item_id": item_id, "output_index": index, "content_index": 0}
    events += [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": dict(message, status="in_progress", content=[]),
        },
        {"type": "response.content_part.added", **at, "part": dict(part, text="")},
        {"type": "response.output_text.delta", **at, "delta": answer},
        {"type": "response.output_text.done", **at, "text": answer},
        {"type": "response.content_part.done", **at, "part": part},
        {"type": "response.output_item.done", "output_index": index, "item": message},
    ]
    return message


def numbered(events: list[Event]) -> list[Event]:
    return [dict(event, sequence_number=number) for number, event in enumerate(events)]


def sse(event: Event) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()
