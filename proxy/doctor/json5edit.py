"""Change one key of a JSON5 file and leave every other byte as it was: the new value
goes where the old one stood, a new key first in its object, indented like its siblings,
with the file's own indent unit and line ends. The result is parsed again and must differ
from the original in that key only; otherwise the edit is refused. Pure: text in, text out.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from proxy.doctor.findings import UnsafeEditError, dotted
from proxy.doctor.json5 import Node, ParseError, parse


def set_key(text: str, key: tuple[str, ...], value: Any) -> str:
    """The text with `key` set to `value` (missing objects on the way created), every
    other byte unchanged; UnsafeEditError if that cannot be done with certainty."""
    root = _parse(text)
    if root.members is None:
        raise UnsafeEditError("the file's top level is not an object")
    edited = _Editor(text).set(root, key, value)
    expected = copy.deepcopy(root.value)
    _assign(expected, key, value)
    if _parse(edited).value != expected:
        raise UnsafeEditError(f"setting {dotted(key)} would change more than that key")
    return edited


def _parse(text: str) -> Node:
    try:
        return parse(text)
    except ParseError as exc:
        raise UnsafeEditError(str(exc)) from None


def _assign(data: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    for name in key[:-1]:
        data = data.setdefault(name, {})
    data[key[-1]] = value


class _Editor:
    def __init__(self, text: str) -> None:
        self.text = text
        self.newline = "\r\n" if "\r\n" in text else "\n"
        indented = re.search(r"^([ \t]+)\S", text, re.M)
        self.unit = indented.group(1) if indented else "  "

    def set(self, node: Node, key: tuple[str, ...], value: Any, depth: int = 0) -> str:
        here = dotted(key[: depth + 1])
        if node.members is None:
            raise UnsafeEditError(f"{dotted(key[:depth])} is not an object")
        if any(member.key == "$include" for member in node.members):
            raise UnsafeEditError(f"{here} may come from an $include file")
        found = [member for member in node.members if member.key == key[depth]]
        if len(found) > 1:
            raise UnsafeEditError(f"{here} appears more than once")
        if not found:
            nested = value
            for outer in reversed(key[depth + 1 :]):
                nested = {outer: nested}
            return self.insert(node, key[depth], nested)
        if depth < len(key) - 1:
            return self.set(found[0].node, key, value, depth + 1)
        target = found[0].node
        one_line = "\n" not in self.text[node.start : node.end]
        indent = "" if one_line else self.indent(found[0].key_start)
        return self.splice(target.start, target.end, self.render(value, indent))

    def insert(self, parent: Node, name: str, value: Any) -> str:
        assert parent.members is not None
        text = self.text
        after_brace = parent.start + 1
        line_end = _line_end(text, parent.start)
        if parent.members:
            first = parent.members[0].key_start
            if first <= line_end:  # the members start on the brace's line: keep one line
                return self.splice(first, first, f"{self.member(name, value, '')}, ")
            indent = self.indent(first)
            member = self.member(name, value, indent)
            return self.splice(line_end, line_end, f"{self.newline}{indent}{member},")
        inside = text[after_brace : parent.end - 1]
        if "\n" not in inside:
            return self.splice(after_brace, after_brace, self.member(name, value, ""))
        indent = self.indent(parent.start) + self.unit
        member = self.member(name, value, indent)
        return self.splice(after_brace, after_brace, f"{self.newline}{indent}{member}")

    def member(self, name: str, value: Any, indent: str) -> str:
        return f"{json.dumps(name, ensure_ascii=False)}: {self.render(value, indent)}"

    def render(self, value: Any, indent: str) -> str:
        if not indent or not isinstance(value, dict | list) or not value:
            return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
        pretty = json.dumps(value, ensure_ascii=False, indent=self.unit)
        return pretty.replace("\n", self.newline + indent)

    def indent(self, position: int) -> str:
        start = self.text.rfind("\n", 0, position) + 1
        line = self.text[start:position]
        return line[: len(line) - len(line.lstrip(" \t"))]

    def splice(self, start: int, end: int, new: str) -> str:
        return self.text[:start] + new + self.text[end:]


def _line_end(text: str, position: int) -> int:
    """Where the line holding `position` ends (before its CR LF or LF)."""
    end = text.find("\n", position)
    if end < 0:
        return len(text)
    return end - 1 if text[end - 1 : end] == "\r" else end
