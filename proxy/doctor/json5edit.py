"""OpenClaw's config is JSON5 (comments, trailing commas, unquoted keys, single quotes):
`parse` reads it and keeps where each value sits; `set_key` changes one key and leaves
every other byte as it was, then parses its own result to prove that only that key
changed. Pure: text in, text out.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from proxy.doctor.findings import dotted


class UnsafeEditError(Exception):
    """The file cannot be edited safely; the message says why."""


class ParseError(UnsafeEditError):
    """Not JSON5. The message gives the line and column, never the file's text."""


@dataclass(slots=True)
class Member:
    key: str
    key_start: int
    node: Node


@dataclass(slots=True)
class Node:
    start: int
    end: int
    value: Any
    members: list[Member] | None = field(default=None)  # objects only


_NUMBER = re.compile(
    r"[+-]?(?:Infinity|NaN|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
)
_IDENTIFIER = re.compile(r"[^\W\d][\w$]*|\$[\w$]*")
_LINE_ENDS = "\n\r\u2028\u2029"
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "0": "\0"}
_LITERALS = {"true": True, "false": False, "null": None}


def parse(text: str) -> Node:
    return _Parser(text).document()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str) -> ParseError:
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - self.text.rfind("\n", 0, self.pos)
        return ParseError(f"not valid JSON5 at line {line}, column {column}: {reason}")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def document(self) -> Node:
        self.skip()
        root = self.value()
        self.skip()
        if self.pos < len(self.text):
            raise self.fail("more text after the end")
        return root

    def skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() or char == "\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                while self.pos < len(text) and text[self.pos] not in _LINE_ENDS:
                    self.pos += 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("a comment is not closed")
                self.pos = end + 2
            else:
                return

    def value(self) -> Node:
        char = self.peek()
        if char == "{":
            return self.object()
        if char == "[":
            return self.array()
        start = self.pos
        if char in ("'", '"'):
            text = self.string()
            return Node(start, self.pos, text)
        found = _NUMBER.match(self.text, self.pos)
        if found:
            self.pos = found.end()
            return Node(start, self.pos, _number(found.group()))
        word = _IDENTIFIER.match(self.text, self.pos)
        if word and word.group() in _LITERALS:
            self.pos = word.end()
            return Node(start, self.pos, _LITERALS[word.group()])
        raise self.fail("expected a value" if char else "the text ends too early")

    def object(self) -> Node:
        start = self.pos
        self.pos += 1
        members: list[Member] = []
        self.skip()
        while self.peek() != "}":
            key_start = self.pos
            if self.peek() in ("'", '"'):
                key = self.string()
            elif word := _IDENTIFIER.match(self.text, self.pos):
                key = word.group()
                self.pos = word.end()
            else:
                raise self.fail("expected a key or '}'")
            self.skip()
            if self.peek() != ":":
                raise self.fail("expected ':'")
            self.pos += 1
            self.skip()
            members.append(Member(key, key_start, self.value()))
            if not self.comma("}"):
                break
        self.pos += 1
        value = {member.key: member.node.value for member in members}
        return Node(start, self.pos, value, members)

    def array(self) -> Node:
        start = self.pos
        self.pos += 1
        items: list[Any] = []
        self.skip()
        while self.peek() != "]":
            items.append(self.value().value)
            if not self.comma("]"):
                break
        self.pos += 1
        return Node(start, self.pos, items)

    def comma(self, close: str) -> bool:
        """After an item: True if another may follow; at the closing bracket, False."""
        self.skip()
        if self.peek() == ",":
            self.pos += 1
            self.skip()
            return True
        if self.peek() != close:
            raise self.fail(f"expected ',' or '{close}'")
        return False

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        chars: list[str] = []
        while True:
            char = self.peek()
            if not char or char in "\n\r":
                raise self.fail("a string is not closed")
            self.pos += 1
            if char == quote:
                break
            if char == "\\":
                chars.append(self.escape())
            else:
                chars.append(char)
        return "".join(chars).encode("utf-16", "surrogatepass").decode("utf-16")

    def escape(self) -> str:
        char = self.peek()
        self.pos += 1
        if char == "0" and not self.peek().isdigit():
            return "\0"
        if char in _ESCAPES and char != "0":
            return _ESCAPES[char]
        if char in "xu":
            size = 2 if char == "x" else 4
            digits = self.text[self.pos : self.pos + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"a \\{char} escape needs {size} hex digits")
            self.pos += size
            return chr(int(digits, 16))
        if char == "\r" and self.peek() == "\n":
            self.pos += 1
            return ""
        if char and char in _LINE_ENDS:
            return ""
        if not char or char.isdigit():
            raise self.fail("a string has an invalid escape")
        return char


def _number(literal: str) -> int | float:
    sign = -1 if literal.startswith("-") else 1
    body = literal.lstrip("+-")
    if body == "Infinity":
        return sign * math.inf
    if body == "NaN":
        return math.nan
    if body[:2] in ("0x", "0X"):
        return sign * int(body, 16)
    if any(c in body for c in ".eE"):
        return sign * float(body)
    return sign * int(body)


def set_key(text: str, key: tuple[str, ...], value: Any) -> str:
    """The text with `key` set to `value` (missing objects on the way created), every
    other byte unchanged; UnsafeEditError if that cannot be done with certainty."""
    root = parse(text)
    if root.members is None:
        raise UnsafeEditError("the file's top level is not an object")
    edited = _Editor(text).set(root, key, value)
    expected = copy.deepcopy(root.value)
    _assign(expected, key, value)
    if parse(edited).value != expected:
        raise UnsafeEditError(f"setting {dotted(key)} would change more than that key")
    return edited


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
