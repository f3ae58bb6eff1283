"""Properties of the rewrite table, checked on generated request targets and rule tables.

An independent model of matching (segment lists, not string prefixes) is the oracle: a
rule fires exactly when the model says so, first match wins, and everything the rule did
not match is carried over byte for byte.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.rules import CANONICAL, DEFAULT_RULES, Kind, Rule, rewrite

# Bounded and repeatable: the same examples on every run and in CI, no example database.
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)

VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
TOKENS = (
    "/",
    "//",
    "\\",
    "?",
    "&",
    "=",
    "#",
    ".",
    "..",
    "%2F",
    "%2f",
    "%2e",
    "%2E%2E",
    "%5C",
    "%3F",
    "%00",
    "backend-api",
    "responses",
    "codex",
    "v1",
    "compact",
    "/backend-api/responses",
    CANONICAL,
)
STARTS = (
    "/",
    "//",
    "/\\",
    "/backend-api/",
    "/backend-api/responses",
    "/backend-api/responses/",
    "/backend-api/v1/responses",
    "/backend-api/codex/v1/responses",
    "/backend-api/v1/codex/responses",
    CANONICAL,
)
PIECES = st.one_of(
    st.sampled_from(TOKENS),
    st.text(VISIBLE, min_size=1, max_size=6),
    st.integers(0, 255).map("%{:02X}".format),
)
# Origin-form targets as a client could send them: visible ASCII, biased towards the
# legacy prefixes and towards what confuses matchers (escapes, dot segments, '//', '\').
TARGETS = st.builds(
    lambda start, rest: start + "".join(rest), st.sampled_from(STARTS), st.lists(PIECES, max_size=8)
)

SEGMENTS = st.sampled_from(["a", "b", "ab", "backend-api", "responses", "%2F", "..", ""])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
# Rule targets with at least one character after the leading '/'.
RULE_TARGETS = st.lists(st.sampled_from(["n", "new", "codex", "v2"]), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)


@st.composite
def rules(draw: st.DrawFn, name: str) -> Rule:
    kind = draw(st.sampled_from(list(Kind)))
    match = draw(PATHS)
    target = draw(RULE_TARGETS)
    if kind is Kind.PREFIX:
        match += draw(st.sampled_from(["", "/"]))
    if kind is Kind.REGEX:
        match = re.escape(match) + draw(st.sampled_from(["", "(?P<rest>/.*)?", "(?P<rest>.*)"]))
        if "rest" in match:
            target += r"\g<rest>"
    return Rule.build(name=name, kind=kind.value, match=match, target=target)


TABLES = st.lists(st.integers(0, 1000), min_size=1, max_size=4, unique=True).flatmap(
    lambda ids: st.tuples(*(rules(f"r{n}") for n in ids))
)
TABLE_TARGETS = st.builds(
    lambda path, rest: path + "".join(rest), PATHS, st.lists(PIECES, max_size=4)
)


def fires(rule: Rule, path: str) -> bool:
    """The model: exact is equality, prefix compares whole segments, regex must match fully."""
    if rule.kind is Kind.EXACT:
        return path == rule.match
    if rule.kind is Kind.PREFIX:
        wanted = rule.match.rstrip("/").split("/")
        return path.split("/")[: len(wanted)] == wanted
    return re.fullmatch(rule.match, path) is not None


def first_firing(table: tuple[Rule, ...], path: str) -> Rule | None:
    return next((rule for rule in table if fires(rule, path)), None)


def path_of(target: str) -> str:
    return target.partition("?")[0]


def query_of(target: str) -> tuple[str, str]:
    _, mark, query = target.partition("?")
    return mark, query


def is_clean(text: str) -> bool:
    return not any(char.isspace() or ord(char) < 0x20 or char == "\x7f" for char in text)


@PROPERTY
@given(TARGETS)
def test_default_rules_fire_exactly_on_whole_segment_prefixes(target: str) -> None:
    assert rewrite(DEFAULT_RULES, target).rule is first_firing(DEFAULT_RULES, path_of(target))


@PROPERTY
@given(TARGETS)
def test_unmatched_target_is_returned_byte_for_byte(target: str) -> None:
    result = rewrite(DEFAULT_RULES, target)
    if result.rule is None:
        assert result.target == target
        assert result.path == path_of(target)


@PROPERTY
@given(TARGETS)
def test_a_match_changes_only_the_matched_prefix(target: str) -> None:
    result = rewrite(DEFAULT_RULES, target)
    if result.rule is not None:
        prefix = result.rule.match
        assert target.startswith(prefix)
        assert result.target == CANONICAL + target[len(prefix) :]
        assert query_of(result.target) == query_of(target)


@PROPERTY
@given(TARGETS)
def test_result_is_an_origin_form_target(target: str) -> None:
    result = rewrite(DEFAULT_RULES, target).target
    assert result.startswith("/")
    if not target.startswith("//"):
        assert not result.startswith("//")
    assert is_clean(result)


@PROPERTY
@given(TARGETS)
def test_rewriting_is_idempotent_and_canonical_is_a_fixpoint(target: str) -> None:
    once = rewrite(DEFAULT_RULES, target)
    twice = rewrite(DEFAULT_RULES, once.target)
    assert twice.target == once.target
    assert twice.rule is None


@PROPERTY
@given(TARGETS)
def test_canonical_path_is_never_rewritten(target: str) -> None:
    path = path_of(target)
    if path == CANONICAL or path.startswith(CANONICAL + "/"):
        assert rewrite(DEFAULT_RULES, target).rule is None


@PROPERTY
@given(TABLES, TABLE_TARGETS)
def test_any_table_first_firing_rule_wins(table: tuple[Rule, ...], target: str) -> None:
    assert rewrite(table, target).rule is first_firing(table, path_of(target))


@PROPERTY
@given(TABLES, TABLE_TARGETS)
def test_any_table_keeps_what_the_rule_did_not_match(table: tuple[Rule, ...], target: str) -> None:
    result = rewrite(table, target)
    rule = result.rule
    path = path_of(target)
    if rule is None:
        assert result.target == target
        return
    assert query_of(result.target) == query_of(target)
    if rule.kind is Kind.EXACT:
        assert result.path == rule.target
    elif rule.kind is Kind.PREFIX:
        prefix = rule.match.rstrip("/")
        assert result.path == rule.target.rstrip("/") + path[len(prefix) :]
    else:
        found = re.fullmatch(rule.match, path)
        assert found is not None
        assert result.path == found.expand(rule.target)
    assert result.target.startswith("/")
    assert is_clean(result.target)


@PROPERTY
@given(PATHS, TABLE_TARGETS)
def test_prefix_rule_matches_only_on_segment_boundaries(match: str, target: str) -> None:
    rule = Rule.build(name="p", kind="prefix", match=match, target="/new")
    path = path_of(target)
    prefix = match.rstrip("/")
    fired = rewrite((rule,), target).rule is rule
    assert fired == (path == prefix or path.startswith(prefix + "/"))
    if path.startswith(prefix) and not fired:
        assert path[len(prefix)] != "/"


@PROPERTY
@given(PATHS, TABLE_TARGETS)
def test_literal_regex_rule_matches_the_whole_path_only(match: str, target: str) -> None:
    rule = Rule.build(name="r", kind="regex", match=re.escape(match), target="/new")
    fired = rewrite((rule,), target).rule is rule
    assert fired == (path_of(target) == match)


@PROPERTY
@given(st.text(VISIBLE, max_size=12), st.sampled_from(list(Kind)))
def test_build_accepts_only_targets_with_one_leading_slash(target: str, kind: Kind) -> None:
    plain = "#" not in target and (kind is Kind.REGEX or "?" not in target)
    if target.startswith("/") and not target.startswith("//") and plain:
        assert Rule.build(name="t", kind=kind.value, match="/m", target=target).target == target
    else:
        with pytest.raises(ValueError, match="target"):
            Rule.build(name="t", kind=kind.value, match="/m", target=target)
