"""One image, one fingerprint: the HAR file, the debug log and the inspector name the same
bytes alike (their decoded size and sha256, the image type and pixel size)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from proxy import blobs
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import StartProxy, capture_of, recorder
from tests.test_logs import completed_stream, streaming


def png(width: int, height: int) -> bytes:
    """A real PNG of one colour, with a random-looking text chunk so its base64 mixes cases."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes((200, 40, 90)) * width for _ in range(height))
    note = hashlib.sha512(b"noise").digest() * 8
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Comment\x00" + note)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "declared", "shown"),
    [
        (png(192, 96), None, "image/png 192x96, "),
        (b"GIF89a\x05\x00\x07\x00rest", None, "image/gif 5x7, "),
        (b"\xff\xd8\xff\xe0", None, "image/jpeg, "),
        (b"plain bytes", None, ""),
        (b"plain bytes", "image/png", "image/png, "),
    ],
)
def test_the_fingerprint_names_the_type_and_pixels_where_the_bytes_show_them(
    data: bytes, declared: str | None, shown: str
) -> None:
    digest = hashlib.sha256(data).hexdigest()
    assert (
        blobs.fingerprint(data, declared=declared) == f"{shown}{len(data):,} bytes, sha256 {digest}"
    )


async def test_har_log_and_inspector_fingerprint_an_image_alike(
    start_proxy: StartProxy, fake: FakeUpstream, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    sent, answered = png(64, 32), png(192, 192)
    expected = {
        picture: (
            f"[base64: image/png {width}x{height}, {len(picture):,} bytes, "
            f"sha256 {hashlib.sha256(picture).hexdigest()}]"
        )
        for picture, width, height in ((sent, 64, 32), (answered, 192, 192))
    }
    encoded = base64.b64encode(answered).decode()
    streaming(
        fake,
        completed_stream(
            sse_event(
                "response.output_item.done",
                {"item": {"id": "ig_1", "type": "image_generation_call", "result": encoded}},
            )
        ),
    )
    captures = tmp_path / "captures"
    proxy = await start_proxy(
        capture={"dir": str(captures)},
        inspector={"enabled": True},
        log={"level": "debug", "bodies": True},
    )
    request = {
        "model": "gpt-5",
        "input": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64," + base64.b64encode(sent).decode(),
                    }
                ],
            }
        ],
    }
    with capture_logs() as logs:
        async with client.post(proxy.make_url("/backend-api/responses"), json=request) as response:
            await response.read()
        await recorder(proxy).wait_ended()
    await capture_of(proxy).drain()

    [path] = captures.glob("*.har")
    entry = json.loads(path.read_text())["log"]["entries"][0]
    assert expected[sent] in entry["request"]["postData"]["text"]
    assert expected[answered] in entry["response"]["content"]["text"]

    [bodies] = [line for line in logs if line["event"] == "bodies"]
    assert expected[sent] in bodies["request_body"]
    assert expected[answered] in bodies["response_body"]

    async with client.get(proxy.make_url("/_proxy/exchanges/1")) as response:
        content = await response.json()
    shown_request = content["request"]["json"]["input"][0]["content"][0]["image_url"]
    assert shown_request == expected[sent]
    [item] = [item for item in content["answer"]["items"] if item["id"] == "ig_1"]
    assert f"[base64: {item['image']['fingerprint']}]" == expected[answered]
    async with client.get(proxy.make_url("/_proxy/exchanges/1/events/2")) as response:
        event = await response.json()
    assert event["item"]["result"] == expected[answered]
