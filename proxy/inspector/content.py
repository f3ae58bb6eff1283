"""Bodies made readable for the page: decoded, parsed, redacted and folded, never rendered.

Pure functions over bytes. JSON becomes a tree whose strings are shape-checked for
credentials and masked where they repeat a header's secret; a long string is folded to
its start and length, and a run of base64 (an image, a file) to its size and sha256. An
HTML page (Cloudflare's 403) becomes its title and text: the page shows words, never
markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import orjson

from proxy import blobs, redact
from proxy.capture import decode
from proxy.exchange import Body

# A request's strings are shown up to this many characters (Codex's instructions run to
# tens of thousands); an event's, which repeat in every delta, shorter.
REQUEST_STRING = 4096
EVENT_STRING = 300
TEXT_LIMIT = 64 * 1024
# The fields a reader of a Responses request looks for first, in this order.
FIRST = ("model", "tools", "tool_choice", "stream", "input", "instructions")


def fold(value: Any, *, limit: int, secrets: Sequence[str] = ()) -> Any:
    """The JSON value as it may be shown: strings redacted, blobs summarised, long ones cut."""
    if isinstance(value, str):
        return _fold_text(value, limit, secrets)
    if isinstance(value, dict):
        return {
            redact.mask_known(redact.redact_text(str(key)), secrets): fold(
                item, limit=limit, secrets=secrets
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [fold(item, limit=limit, secrets=secrets) for item in value]
    if secrets and isinstance(value, int | float) and not isinstance(value, bool):
        # An account id sent as a number is as secret as the header that carried it.
        written = str(value)
        return redact.marker(written) if written in secrets else value
    return value


def _fold_text(value: str, limit: int, secrets: Sequence[str]) -> str:
    summary = blobs.summary(value)
    if summary is not None:
        return summary
    shown = redact.mask_known(redact.redact_text(value), secrets)
    if len(shown) > limit:
        return f"{shown[:limit]}… [{len(shown):,} characters]"
    return shown


def dumps(value: Any) -> bytes:
    """JSON to keep: orjson's own result holds on to its working buffer (4 KiB at least,
    a mebibyte for a long string), so what is kept is copied to its exact size."""
    return bytes(memoryview(orjson.dumps(value)))


def parse_json(data: bytes | bytearray) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(data)
    except orjson.JSONDecodeError:
        return False, None


def request_summary(tree: Any) -> dict[str, Any] | None:
    """What matters first in a Responses request: model, tools, tool choice, stream, input."""
    if not isinstance(tree, dict) or not any(key in tree for key in FIRST):
        return None
    summary: dict[str, Any] = {}
    if "model" in tree:
        summary["model"] = tree["model"]
    tools = tree.get("tools")
    if isinstance(tools, list):
        summary["tools"] = [_tool_name(tool) for tool in tools]
    if "tool_choice" in tree:
        summary["tool_choice"] = tree["tool_choice"]
    if "stream" in tree:
        summary["stream"] = tree["stream"]
    given = tree.get("input")
    if given is not None:
        items = len(given) if isinstance(given, list) else 1
        size = len(orjson.dumps(given))
        summary["input"] = f"{items} item{'s' if items != 1 else ''}, {size:,} bytes"
    return summary


def _tool_name(tool: Any) -> str:
    if not isinstance(tool, dict):
        return str(tool)
    kind = str(tool.get("type", "tool"))
    name = tool.get("name") or (tool.get("function") or {}).get("name")
    return f"{kind}: {name}" if name else kind


def first_fields(tree: Any) -> Any:
    """A request object with the fields a reader looks for first, the rest as they came."""
    if not isinstance(tree, dict):
        return tree
    ordered = {key: tree[key] for key in FIRST if key in tree}
    ordered.update((key, item) for key, item in tree.items() if key not in ordered)
    return ordered


class _Text(HTMLParser):
    """The title and visible text of an HTML page; scripts and styles are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template") and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.text.append(data)


def html_text(markup: str) -> dict[str, str]:
    reader = _Text()
    reader.feed(markup)
    reader.close()
    title = " ".join(" ".join(reader.title).split())
    lines = (" ".join(line.split()) for line in "\n".join(reader.text).splitlines())
    text = "\n".join(line for line in lines if line)
    return {"title": title, "text": text[:TEXT_LIMIT]}


def body_view(
    body: Body | None,
    *,
    encoding: str | None,
    content_type: str | None,
    secrets: Sequence[str],
    request: bool,
) -> dict[str, Any] | None:
    """One kept body as the page shows it: a JSON tree, an HTML page's words, or text."""
    if body is None or body.size == 0:
        return None
    view: dict[str, Any] = {"size": body.size, "kept": len(body.data)}
    if body.truncated:
        view["truncated"] = True
    data: bytes | bytearray = body.data
    if (encoding or "identity").strip().lower() != "identity":
        data, problem = decode(body, encoding)
        view["encoding"] = encoding
        view["decoded"] = len(data)
        if problem:
            view["note"] = problem
    kind = (content_type or "").split(";")[0].strip().lower()
    # A body cut at the limit is no whole JSON document: not parsed (nor copied) in vain.
    parsed, tree = parse_json(data) if not body.truncated else (False, None)
    if parsed:
        if request:
            view["summary"] = fold(request_summary(tree), limit=EVENT_STRING, secrets=secrets)
            tree = first_fields(tree)
        view["json"] = fold(tree, limit=REQUEST_STRING, secrets=secrets)
        return view
    text = bytes(data[: TEXT_LIMIT * 4]).decode("utf-8", "replace")[:TEXT_LIMIT]
    opening = text.lstrip()[:15].lower()
    if kind == "text/html" or (not kind and opening.startswith(("<!doctype html", "<html"))):
        page = html_text(text)
        view["html"] = {key: _shown(value, secrets) for key, value in page.items()}
        return view
    if "\ufffd" in text[:1024] and kind not in ("", "text/plain"):
        view["note"] = "; ".join(filter(None, (view.get("note"), f"binary ({kind or 'no type'})")))
        return view
    view["text"] = blobs.fold(_shown(text, secrets))
    return view


def _shown(text: str, secrets: Sequence[str]) -> str:
    return redact.mask_known(redact.redact_text(text), secrets)
