"""Path rewrite rules: an ordered table, first match wins, no match passes unchanged.

Rules see the raw path exactly as the client sent it (no decoding, no normalising) and
rewrite only the path; the raw query string is carried over byte for byte.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

_NOT_IN_TARGET = re.compile(r"[\s\x00-\x1f\x7f#]")


class Kind(enum.StrEnum):
    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    name: str
    kind: Kind
    match: str
    target: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, *, name: str, kind: str, match: str, target: str) -> Rule:
        """Validate one rule and compile its regex; ValueError names what is wrong."""
        try:
            rule_kind = Kind(kind)
        except ValueError:
            choices = ", ".join(k.value for k in Kind)
            raise ValueError(f"kind must be one of {choices}, got {kind!r}") from None
        if not name:
            raise ValueError("name must not be empty")
        if not target.startswith("/") or target.startswith("//"):
            raise ValueError(f"target must be a path starting with one '/', got {target!r}")
        if _NOT_IN_TARGET.search(target) or (rule_kind is not Kind.REGEX and "?" in target):
            raise ValueError(
                f"target must be a plain path (no whitespace, control characters or '#'; "
                f"'?' only in a regex target), got {target!r}"
            )
        pattern = None
        if rule_kind is Kind.REGEX:
            try:
                pattern = re.compile(match)
            except re.error as exc:
                raise ValueError(f"invalid regex {match!r}: {exc}") from None
        elif not match.startswith("/"):
            raise ValueError(f"match must be a path starting with '/', got {match!r}")
        return cls(name=name, kind=rule_kind, match=match, target=target, pattern=pattern)

    def apply(self, path: str) -> str | None:
        """The rewritten path, or None when this rule does not match."""
        if self.kind is Kind.EXACT:
            return self.target if path == self.match else None
        if self.kind is Kind.PREFIX:
            prefix = self.match.rstrip("/")
            if path == prefix or path.startswith(prefix + "/"):
                return (self.target.rstrip("/") + path[len(prefix) :]) or "/"
            return None
        assert self.pattern is not None
        found = self.pattern.fullmatch(path)
        return found.expand(self.target) if found else None


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The outcome of matching one request target against the table."""

    target: str
    rule: Rule | None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def rewrite(rules: tuple[Rule, ...], target: str) -> Rewrite:
    """Rewrite the path of a raw request target (path plus optional query)."""
    path, mark, query = target.partition("?")
    for rule in rules:
        new_path = rule.apply(path)
        if new_path is not None:
            if not path.startswith("//"):
                # A regex group may begin with '/': never turn a path into '//host/...'.
                new_path = "/" + new_path.lstrip("/")
            if "?" in new_path:  # a regex target with its own query: the client's follows
                return Rewrite(new_path + ("&" + query if query else ""), rule)
            return Rewrite(new_path + mark + query, rule)
    return Rewrite(target, None)


CANONICAL = "/backend-api/codex/responses"

DEFAULT_RULES: tuple[Rule, ...] = tuple(
    Rule.build(name=name, kind="prefix", match=match, target=CANONICAL)
    for name, match in (
        ("legacy-responses", "/backend-api/responses"),
        ("legacy-v1-responses", "/backend-api/v1/responses"),
        ("legacy-codex-v1-responses", "/backend-api/codex/v1/responses"),
        ("legacy-v1-codex-responses", "/backend-api/v1/codex/responses"),
    )
)
