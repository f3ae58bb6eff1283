"""The answer as the client received it, assembled from the Responses events as they pass.

Fed each event's parsed JSON, from an event stream or a WebSocket session alike (its
upstream messages are the same events): output text deltas joined per item, reasoning
summaries, tool calls with their arguments, images (the last partial one while it is
generated, then the result), the usage and the error that ended it. Items are shown in
the order they were announced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy import blobs, redact
from proxy.inspector.content import EVENT_STRING, fold


@dataclass(slots=True)
class Image:
    """A generated image: kept decoded (until the inspector's budget needs the room)."""

    data: bytes | None
    size: int
    sha256: str
    mime: str | None
    width: int | None
    height: int | None
    partial: bool

    @classmethod
    def read(cls, encoded: str, *, partial: bool) -> Image | None:
        try:
            data = base64.b64decode(encoded)
        except (binascii.Error, ValueError):
            return None
        found = blobs.picture(data)
        return cls(
            data=data,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            mime=found.mime if found else None,
            width=found.width if found else None,
            height=found.height if found else None,
            partial=partial,
        )


@dataclass(slots=True)
class Item:
    """One output item: a message, a reasoning step, a tool call, an image generation."""

    key: str
    kind: str = "unknown"
    status: str | None = None
    text: dict[int, list[str]] = field(default_factory=dict)
    done_text: dict[int, str] = field(default_factory=dict)
    refusal: list[str] = field(default_factory=list)
    summary: dict[int, list[str]] = field(default_factory=dict)
    reasoning: list[str] = field(default_factory=list)
    name: str | None = None
    call_id: str | None = None
    arguments: list[str] = field(default_factory=list)
    done_arguments: str | None = None
    image: Image | None = None
    revised_prompt: str | None = None


class Answer:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self._by_index: dict[int, str] = {}
        self.model: str | None = None
        self.response_id: str | None = None
        self.status: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.text_bytes = 0
        self.unreadable = 0  # events whose shape surprised the reader

    @property
    def weight(self) -> int:
        """Bytes held: the text assembled and the images kept."""
        images = sum(i.image.size for i in self.items.values() if i.image and i.image.data)
        return self.text_bytes + images

    def drop_images(self) -> None:
        for item in self.items.values():
            if item.image is not None:
                item.image.data = None

    def read(self, event: dict[str, Any]) -> None:
        """One event, parsed."""
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, event)
        elif kind.startswith("response.") and isinstance(event.get("response"), dict):
            self._response(event["response"])

    # The response itself: created, in progress, completed, failed, incomplete.

    def _response(self, response: dict[str, Any]) -> None:
        self.model = _text(response.get("model")) or self.model
        self.response_id = _text(response.get("id")) or self.response_id
        self.status = _text(response.get("status")) or self.status
        if isinstance(response.get("usage"), dict):
            self.usage = response["usage"]
        if isinstance(response.get("error"), dict):
            self.error = response["error"]
        details = response.get("incomplete_details")
        if isinstance(details, dict) and self.error is None:
            self.error = {"code": details.get("reason"), "message": "the response is incomplete"}
        output = response.get("output")
        if isinstance(output, list):
            # The closing event repeats every item: it fills in what the deltas did not.
            for index, item in enumerate(output):
                if isinstance(item, dict):
                    self._item_done(item, index, fallback=True)

    def _final(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("response"), dict):
            self._response(event["response"])

    def _error(self, event: dict[str, Any]) -> None:
        error = event.get("error")
        self.error = error if isinstance(error, dict) else event

    # Items.

    def _item(self, event: dict[str, Any]) -> Item:
        item_id = _text(event.get("item_id"))
        index = event.get("output_index")
        if item_id is not None and item_id in self.items:
            return self.items[item_id]
        if isinstance(index, int) and index in self._by_index:
            return self.items[self._by_index[index]]
        key = item_id or f"#{index}"
        if key in self.items:
            return self.items[key]  # an event that names neither (not the API's own)
        found = self.items[key] = Item(key)
        if isinstance(index, int):
            self._by_index[index] = key
        return found

    def _added(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if isinstance(item, dict):
            self._describe(self._item({**event, "item_id": item.get("id")}), item)

    def _done(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if isinstance(item, dict):
            self._item_done(item, event.get("output_index"), fallback=False)

    def _item_done(self, item: dict[str, Any], index: Any, *, fallback: bool) -> None:
        found = self._item({"item_id": item.get("id"), "output_index": index})
        self._describe(found, item)
        kind = found.kind
        if kind == "message":
            for position, part in enumerate(item.get("content") or []):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    found.done_text.setdefault(position, part["text"])
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments", item.get("input"))
            if isinstance(arguments, str):
                found.done_arguments = arguments
        elif kind == "image_generation_call":
            result = item.get("result")
            if isinstance(result, str) and (found.image is None or found.image.partial):
                self._image(found, result, partial=False)
        elif kind == "reasoning" and not found.summary:
            for position, part in enumerate(item.get("summary") or []):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    found.summary[position] = [part["text"]]
        if fallback and found.status is None:
            found.status = _text(item.get("status"))

    def _describe(self, found: Item, item: dict[str, Any]) -> None:
        found.kind = _text(item.get("type")) or found.kind
        found.status = _text(item.get("status")) or found.status
        found.name = _text(item.get("name")) or found.name
        found.call_id = _text(item.get("call_id")) or found.call_id
        found.revised_prompt = _text(item.get("revised_prompt")) or found.revised_prompt

    def _image(self, item: Item, encoded: str, *, partial: bool) -> None:
        image = Image.read(encoded, partial=partial)
        if image is not None:
            item.image = image

    # Deltas.

    def _add(self, pieces: list[str], delta: Any) -> None:
        if isinstance(delta, str):
            pieces.append(delta)
            self.text_bytes += len(delta)

    def _text_delta(self, event: dict[str, Any]) -> None:
        item = self._item(event)
        item.kind = "message" if item.kind == "unknown" else item.kind
        self._add(item.text.setdefault(_index(event, "content_index"), []), event.get("delta"))

    def _text_done(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("text"), str):
            self._item(event).done_text[_index(event, "content_index")] = event["text"]

    def _refusal(self, event: dict[str, Any]) -> None:
        self._add(self._item(event).refusal, event.get("delta"))

    def _summary_delta(self, event: dict[str, Any]) -> None:
        item = self._item(event)
        self._add(item.summary.setdefault(_index(event, "summary_index"), []), event.get("delta"))

    def _reasoning_delta(self, event: dict[str, Any]) -> None:
        self._add(self._item(event).reasoning, event.get("delta"))

    def _arguments_delta(self, event: dict[str, Any]) -> None:
        self._add(self._item(event).arguments, event.get("delta"))

    def _partial_image(self, event: dict[str, Any]) -> None:
        item = self._item(event)
        item.kind = "image_generation_call"
        encoded = event.get("partial_image_b64")
        if isinstance(encoded, str) and (item.image is None or item.image.partial):
            self._image(item, encoded, partial=True)

    # What the page gets.

    def view(self, secrets: Sequence[str], image_url: Callable[[str], str]) -> dict[str, Any]:
        def shown(text: str) -> str:
            return redact.mask_known(redact.redact_text(text), secrets)

        view: dict[str, Any] = {
            "items": [_item_view(item, shown, image_url) for item in self.items.values()]
        }
        for name in ("model", "response_id", "status"):
            if getattr(self, name):
                view[name] = shown(getattr(self, name))
        if self.usage is not None:
            view["usage"] = fold(self.usage, limit=EVENT_STRING, secrets=secrets)
        if self.error is not None:
            view["error"] = fold(self.error, limit=EVENT_STRING * 4, secrets=secrets)
        return view

    def image(self, key: str) -> Image | None:
        item = self.items.get(key)
        return item.image if item is not None else None


def _item_view(
    item: Item, shown: Callable[[str], str], image_url: Callable[[str], str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": shown(item.key), "type": shown(item.kind)}
    if item.status:
        entry["status"] = shown(item.status)
    positions = sorted(set(item.text) | set(item.done_text))
    if positions:
        # What the client received: the deltas joined, or the closing text without them.
        parts = ("".join(item.text[p]) if p in item.text else item.done_text[p] for p in positions)
        entry["text"] = shown("".join(parts))
    if item.refusal:
        entry["refusal"] = shown("".join(item.refusal))
    if item.summary:
        entry["summary"] = [shown("".join(item.summary[p])) for p in sorted(item.summary)]
    if item.reasoning:
        entry["reasoning"] = shown("".join(item.reasoning))
    for name in ("name", "call_id", "revised_prompt"):
        if getattr(item, name):
            entry[name] = shown(getattr(item, name))
    arguments = "".join(item.arguments) if item.arguments else item.done_arguments
    if arguments is not None:
        entry["arguments"] = shown(arguments)
    if item.image is not None:
        entry["image"] = _image_view(item.image, image_url(item.key))
    return entry


def _image_view(image: Image, url: str) -> dict[str, Any]:
    view: dict[str, Any] = {
        "size": image.size,
        "sha256": image.sha256,
        "mime": image.mime,
        "width": image.width,
        "height": image.height,
        "partial": image.partial,
        # What HAR files and logs show for the same bytes (blobs.fingerprint).
        "fingerprint": blobs.describe(
            image.size, image.sha256, image.mime, image.width, image.height
        ),
    }
    if image.data is not None and image.mime is not None:
        view["url"] = url
    elif image.data is None:
        view["dropped"] = True
    return view


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _index(event: dict[str, Any], name: str) -> int:
    value = event.get(name)
    return value if isinstance(value, int) else 0


_HANDLERS: dict[str, Callable[[Answer, dict[str, Any]], None]] = {
    "response.output_item.added": Answer._added,
    "response.output_item.done": Answer._done,
    "response.output_text.delta": Answer._text_delta,
    "response.output_text.done": Answer._text_done,
    "response.refusal.delta": Answer._refusal,
    "response.reasoning_summary_text.delta": Answer._summary_delta,
    "response.reasoning_text.delta": Answer._reasoning_delta,
    "response.function_call_arguments.delta": Answer._arguments_delta,
    "response.custom_tool_call_input.delta": Answer._arguments_delta,
    "response.image_generation_call.partial_image": Answer._partial_image,
    "response.completed": Answer._final,
    "response.failed": Answer._final,
    "response.incomplete": Answer._final,
    "error": Answer._error,
}
