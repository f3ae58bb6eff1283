"""The doctor's editors: JSON5 (OpenClaw) and top-level TOML strings (Codex CLI). Each
edit must change the named key and leave every other byte of the file as it was."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from proxy.doctor.findings import UnsafeEditError
from proxy.doctor.json5 import ParseError, parse
from proxy.doctor.json5edit import set_key
from proxy.doctor.tomledit import set_string

PROXY = "http://127.0.0.1:8780/backend-api"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ("{a: 1, 'b': 'x', $c: null, _d: true,}", {"a": 1, "b": "x", "$c": None, "_d": True}),
        ("// lead\n{/* in */ a: [1, 2,], } // tail\n", {"a": [1, 2]}),
        ("\ufeff{}", {}),
        (
            "[0x1F, -0x10, +.5, 5., 1e3, -Infinity, 'it\\'s', \"\\u00e9\\x41\\0\"]",
            [31, -16, 0.5, 5.0, 1000.0, -math.inf, "it's", "éA\0"],
        ),
        ('"a\\\nb\\\r\nc\\\u2028d"', "abcd"),
        ('"\\ud83d\\ude00 \\q"', "😀 q"),
        ('"\\b\\f\\n\\r\\t\\v\\/"', "\b\f\n\r\t\v/"),
        ('{"a": 1, "a": 2}', {"a": 2}),
        ("false", False),
    ],
)
def test_parse_reads_json5(text: str, value: Any) -> None:
    assert parse(text).value == value


def test_parse_reads_nan() -> None:
    assert math.isnan(parse("NaN").value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1,, }', "line 1, column 9: expected a key or '}'"),
        ('{\n  "a" 1\n}', "line 2, column 7: expected ':'"),
        ('{"a": 1 "b": 2}', "line 1, column 9: expected ',' or '}'"),
        ("[1 2]", "line 1, column 4: expected ',' or ']'"),
        ('{"a": }', "line 1, column 7: expected a value"),
        ('{"a": ', "line 1, column 7: the text ends too early"),
        ('{"a": "x\n"}', "line 1, column 9: a string is not closed"),
        ("/* open", "line 1, column 1: a comment is not closed"),
        ('"\\x4"', "line 1, column 4: a \\x escape needs 2 hex digits"),
        ('"\\1"', "line 1, column 4: a string has an invalid escape"),
        ("{} {}", "line 1, column 4: more text after the end"),
        ("", "line 1, column 1: the text ends too early"),
    ],
)
def test_parse_errors_name_line_and_column_never_the_text(text: str, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse(text)
    assert str(raised.value) == f"not valid JSON5 at {message}"


OPENCLAW = """\
// OpenClaw, edited by hand
{
  update: { checkOnStart: false },
  models: {
    providers: {
      /* the ChatGPT sign-in */
      'openai-codex': {
        baseUrl: 'https://chatgpt.com/backend-api', // retired
        models: [],
      },
    },
  },
}
"""


@pytest.mark.parametrize(
    ("before", "key", "value", "after"),
    [
        # A value replaced where it stands; its comment, quotes style elsewhere, kept.
        (
            OPENCLAW,
            ("models", "providers", "openai-codex", "baseUrl"),
            PROXY,
            OPENCLAW.replace("'https://chatgpt.com/backend-api'", json.dumps(PROXY)),
        ),
        # A missing key goes first in its object, indented like its siblings.
        (
            OPENCLAW,
            ("models", "providers", "openai-codex", "request", "allowPrivateNetwork"),
            True,
            OPENCLAW.replace(
                "'openai-codex': {\n",
                "'openai-codex': {\n"
                '        "request": {\n          "allowPrivateNetwork": true\n        },\n',
            ),
        ),
        # An object written on one line stays on one line.
        (
            OPENCLAW,
            ("update", "channel"),
            "stable",
            OPENCLAW.replace("{ checkOnStart", '{ "channel": "stable", checkOnStart'),
        ),
        # Missing objects on the way are created, at the top level too.
        (
            OPENCLAW,
            ("agents", "defaults", "mediaGenerationAutoProviderFallback"),
            False,
            OPENCLAW.replace(
                "{\n  update",
                '{\n  "agents": {\n    "defaults": {\n      "mediaGenerationAutoProviderFallback": false\n'
                "    }\n  },\n  update",
            ),
        ),
        ("{}", ("a", "b"), 1, '{"a": {"b": 1}}'),
        ("{ }", ("a",), [1, 2], '{"a": [1, 2] }'),
        ('{\n  "x": {\n  }\n}', ("x", "y"), 1, '{\n  "x": {\n    "y": 1\n  }\n}'),
        ('{"a": {"b": 1}}', ("a", "b"), {"c": 2}, '{"a": {"b": {"c": 2}}}'),
        # Tabs and CRLF line ends are the file's, not ours.
        (
            '{\r\n\t"a": {\r\n\t\t"b": 1\r\n\t}\r\n}\r\n',
            ("a", "c", "d"),
            True,
            '{\r\n\t"a": {\r\n\t\t"c": {\r\n\t\t\t"d": true\r\n\t\t},\r\n\t\t"b": 1\r\n\t}\r\n}\r\n',
        ),
    ],
)
def test_set_key_changes_only_that_key(
    before: str, key: tuple[str, ...], value: Any, after: str
) -> None:
    assert set_key(before, key, value) == after


def test_set_key_twice_keeps_the_rest_of_the_real_openclaw_shape() -> None:
    """The 2026.4.23 config the end-to-end suite builds, as OpenClaw writes it (indent 2)."""
    from tests.e2e import openclaw  # noqa: PLC0415 - the e2e builders, only for their shape

    config = openclaw.config(openclaw.OLD, "https://chatgpt.com/backend-api", private_network=False)
    original = json.dumps(config, indent=2) + "\n"
    provider = ("models", "providers", "openai-codex")
    edited = set_key(original, (*provider, "baseUrl"), PROXY)
    edited = set_key(edited, (*provider, "request", "allowPrivateNetwork"), True)
    expected = json.loads(original)
    expected["models"]["providers"]["openai-codex"] |= {
        "baseUrl": PROXY,
        "request": {"allowPrivateNetwork": True},
    }
    assert json.loads(edited) == expected
    removed = [line for line in original.splitlines() if line not in edited.splitlines()]
    added = [line for line in edited.splitlines() if line not in original.splitlines()]
    assert removed == ['        "baseUrl": "https://chatgpt.com/backend-api",']
    assert added == [
        '        "request": {',
        '          "allowPrivateNetwork": true',
        "        },",
        f'        "baseUrl": "{PROXY}",',
    ]


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('{"a": 1, "a": 2}', ("a",), "a appears more than once"),
        ('{"a": {"$include": "./x.json5"}}', ("a", "b"), "a.b may come from an $include file"),
        ('{"a": "text"}', ("a", "b"), "a is not an object"),
        ("[1]", ("a",), "the file's top level is not an object"),
        ('{"a": 1,, }', ("a",), "not valid JSON5 at line 1, column 9: expected a key or '}'"),
        ('{"models": {"x": 1, "x": 2}}', ("models", "x", "y"), "models.x appears more than once"),
        # Inserting after the brace's line would land inside this comment: refused.
        (
            '{ /* spans\n  lines */\n  "a": 1\n}',
            ("b",),
            "setting b would change more than that key",
        ),
    ],
)
def test_set_key_refuses_what_it_cannot_do_with_certainty(
    text: str, key: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(UnsafeEditError) as raised:
        set_key(text, key, True)
    assert str(raised.value) == reason


CODEX = """\
# Codex CLI
model = "gpt-5.4"
openai_base_url = 'https://chatgpt.com/backend-api'   # the legacy form

[profiles.work]
openai_base_url = "https://elsewhere.example/v1"
"""


@pytest.mark.parametrize(
    ("before", "key", "after"),
    [
        (
            CODEX,
            "openai_base_url",
            CODEX.replace("'https://chatgpt.com/backend-api'", f'"{PROXY}"'),
        ),
        (
            CODEX,
            "chatgpt_base_url",
            CODEX.replace(
                "# the legacy form\n", f'# the legacy form\nchatgpt_base_url = "{PROXY}"\n'
            ),
        ),
        ("# nothing yet\n", "openai_base_url", f'openai_base_url = "{PROXY}"\n# nothing yet\n'),
        ("", "openai_base_url", f'openai_base_url = "{PROXY}"\n'),
        ('model = "x"', "openai_base_url", f'model = "x"\nopenai_base_url = "{PROXY}"\n'),
        (
            '"openai_base_url" = "a"\r\nmodel = "x"\r\n',
            "openai_base_url",
            f'"openai_base_url" = "{PROXY}"\r\nmodel = "x"\r\n',
        ),
        (
            '[tui]\nopenai_base_url = "a"\n',
            "openai_base_url",
            f'openai_base_url = "{PROXY}"\n[tui]\nopenai_base_url = "a"\n',
        ),
    ],
)
def test_set_string_changes_only_that_line(before: str, key: str, after: str) -> None:
    assert set_string(before, key, PROXY) == after


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "openai_base_url = 3\n",
            "openai_base_url is not a plain top-level string the doctor can rewrite",
        ),
        (
            'openai_base_url = """\nhttps://chatgpt.com/backend-api"""\n',
            "openai_base_url is not a plain top-level string the doctor can rewrite",
        ),
        (
            'x = [\n  "a",\n]\n',
            "openai_base_url is not a plain top-level string the doctor can rewrite",
        ),
        ("openai_base_url = \n", "not valid TOML: Invalid value (at line 1, column 19)"),
    ],
)
def test_set_string_refuses_what_it_cannot_do_with_certainty(text: str, reason: str) -> None:
    with pytest.raises(UnsafeEditError) as raised:
        set_string(text, "openai_base_url", PROXY)
    assert str(raised.value) == reason
