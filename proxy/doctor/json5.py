"""OpenClaw's config is JSON5 (comments, trailing commas, unquoted keys, single quotes,
hex numbers, Infinity): read it into plain values, and keep where each value sits so that
json5edit can change one without touching the rest. Pure: text in, nodes out."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any


class ParseError(ValueError):
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
