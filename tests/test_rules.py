from __future__ import annotations

import re

import pytest

from proxy.rules import DEFAULT_RULES, Rule, rewrite

CODEX = "/backend-api/codex/responses"


@pytest.mark.parametrize(
    ("target", "expected", "rule"),
    [
        ("/backend-api/responses", CODEX, "legacy-responses"),
        ("/backend-api/responses?x=1", CODEX + "?x=1", "legacy-responses"),
        ("/backend-api/responses/compact?x=1", CODEX + "/compact?x=1", "legacy-responses"),
        ("/backend-api/responses/", CODEX + "/", "legacy-responses"),
        ("/backend-api/v1/responses", CODEX, "legacy-v1-responses"),
        (
            "/backend-api/v1/responses/resp_1?a=%2F&b",
            CODEX + "/resp_1?a=%2F&b",
            "legacy-v1-responses",
        ),
        ("/backend-api/codex/v1/responses", CODEX, "legacy-codex-v1-responses"),
        (
            "/backend-api/v1/codex/responses?stream=true",
            CODEX + "?stream=true",
            "legacy-v1-codex-responses",
        ),
        # The query is never matched or touched, even when it looks like a path.
        (
            "/backend-api/responses?next=/backend-api/responses",
            CODEX + "?next=/backend-api/responses",
            "legacy-responses",
        ),
    ],
)
def test_default_rules_rewrite_every_legacy_form(target: str, expected: str, rule: str) -> None:
    result = rewrite(DEFAULT_RULES, target)
    assert result.target == expected
    assert result.rule is not None
    assert result.rule.name == rule


@pytest.mark.parametrize(
    "target",
    [
        CODEX,
        CODEX + "/compact?x=1",
        "/backend-api/responsesX",
        "/backend-api/responses-beta",
        "/backend-api/responses.json",
        "/Backend-api/responses",
        "/backend-api/RESPONSES",
        "/backend-api/%72esponses",
        "/backend-api%2Fresponses",
        "//backend-api/responses",
        "/x/backend-api/responses",
        "/backend-api/models?client_version=0.169.0",
        "/",
    ],
)
def test_canonical_and_look_alike_paths_pass_unchanged(target: str) -> None:
    result = rewrite(DEFAULT_RULES, target)
    assert result.target == target
    assert result.rule is None


def test_first_match_wins() -> None:
    rules = (
        Rule.build(name="a", kind="exact", match="/x", target="/first"),
        Rule.build(name="b", kind="prefix", match="/x", target="/second"),
    )
    assert rewrite(rules, "/x").target == "/first"
    assert rewrite(rules, "/x/y").target == "/second/y"


@pytest.mark.parametrize(
    ("kind", "match", "target", "path", "expected"),
    [
        ("exact", "/a/b", "/c", "/a/b", "/c"),
        ("exact", "/a/b", "/c", "/a/b/", None),
        ("exact", "/a/b", "/c", "/a/b/c", None),
        ("prefix", "/a/b", "/c", "/a/b", "/c"),
        ("prefix", "/a/b", "/c", "/a/b/c", "/c/c"),
        ("prefix", "/a/b", "/c", "/a/bc", None),
        ("prefix", "/a/b/", "/c/", "/a/b/d", "/c/d"),
        ("prefix", "/a/b/", "/c/", "/a/b", "/c"),
        ("regex", r"/v(\d+)/(?P<rest>.*)", r"/api/\g<rest>/v\1", "/v2/x/y", "/api/x/y/v2"),
        ("regex", r"/v\d+", "/api", "/v2/more", None),
        ("regex", r"/v\d+", "/api", "/xv2", None),
    ],
)
def test_rule_kinds(kind: str, match: str, target: str, path: str, expected: str | None) -> None:
    rule = Rule.build(name="r", kind=kind, match=match, target=target)
    assert rule.apply(path) == expected


def test_empty_table_passes_everything() -> None:
    assert rewrite((), "/backend-api/responses?x").target == "/backend-api/responses?x"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "glob"}, "kind must be one of exact, prefix, regex, got 'glob'"),
        ({"name": ""}, "name must not be empty"),
        ({"target": "relative"}, "target must be a path starting with one '/', got 'relative'"),
        ({"target": "//evil/x"}, "target must be a path starting with one '/', got '//evil/x'"),
        ({"match": "no-slash"}, "match must be a path starting with '/', got 'no-slash'"),
        (
            {"kind": "regex", "match": "/(unclosed"},
            "invalid regex '/(unclosed': missing ), unterminated subpattern at position 1",
        ),
    ],
)
def test_invalid_rules_say_what_is_wrong(fields: dict[str, str], message: str) -> None:
    spec = {"name": "r", "kind": "prefix", "match": "/a", "target": "/b", **fields}
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        Rule.build(**spec)


def test_rewrite_exposes_the_new_path_without_query() -> None:
    assert rewrite(DEFAULT_RULES, "/backend-api/responses/x?y=1").path == CODEX + "/x"
