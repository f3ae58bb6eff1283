"""The doctor's editors: JSON5 (OpenClaw) and TOML strings (Codex CLI). Each edit must
change the named key and leave every other byte of the file as it was. Our JSON5 parser
does not vouch for itself: the `json5` package reads every text and every edit too."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from typing import Any

import json5
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
    assert joined(json5.loads(text)) == value  # an independent reader agrees


def joined(value: Any) -> Any:
    """The json5 package keeps a \\ud83d\\ude00 escape as two surrogates, as JavaScript's
    UTF-16 strings hold it; ours joins them into the one character they make."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16")
    if isinstance(value, list):
        return [joined(item) for item in value]
    if isinstance(value, dict):
        return {joined(key): joined(item) for key, item in value.items()}
    return value


def with_key(value: Any, key: tuple[str, ...], new: Any) -> Any:
    """`value` with `key` set, the objects on the way created: what an edit should give."""
    result = json.loads(json.dumps(value))
    holder = result
    for name in key[:-1]:
        holder = holder.setdefault(name, {})
    holder[key[-1]] = new
    return result


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
    edited = set_key(before, key, value)
    assert edited == after
    assert json5.loads(edited) == with_key(json5.loads(before), key, value)


def test_set_key_twice_keeps_the_rest_of_the_real_openclaw_shape() -> None:
    """The 2026.4.23 config the end-to-end suite builds, as OpenClaw writes it (indent 2)."""
    from tests.e2e import openclaw  # noqa: PLC0415 - the e2e builders, only for their shape

    config = openclaw.config(openclaw.OLD, "https://chatgpt.com/backend-api", private_network=False)
    original = json.dumps(config, indent=2) + "\n"
    provider = ("models", "providers", "openai-codex")
    edited = set_key(original, (*provider, "baseUrl"), PROXY)
    edited = set_key(edited, (*provider, "request", "allowPrivateNetwork"), True)
    assert json5.loads(edited) == with_key(
        with_key(json5.loads(original), (*provider, "baseUrl"), PROXY),
        (*provider, "request", "allowPrivateNetwork"),
        True,
    )
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
        # A value replaced where it stands, in its own quoting, its comment kept.
        (
            CODEX,
            ("openai_base_url",),
            CODEX.replace("'https://chatgpt.com/backend-api'", f"'{PROXY}'"),
        ),
        # A missing top-level key goes after the last one, before the first table.
        (
            CODEX,
            ("chatgpt_base_url",),
            CODEX.replace(
                "# the legacy form\n", f'# the legacy form\nchatgpt_base_url = "{PROXY}"\n'
            ),
        ),
        # A key in a profile's table, and one added at the end of it.
        (
            CODEX,
            ("profiles", "work", "openai_base_url"),
            CODEX.replace('"https://elsewhere.example/v1"', f'"{PROXY}"'),
        ),
        (
            CODEX,
            ("profiles", "work", "chatgpt_base_url"),
            CODEX + f'chatgpt_base_url = "{PROXY}"\n',
        ),
        ("# nothing yet\n", ("openai_base_url",), f'# nothing yet\nopenai_base_url = "{PROXY}"\n'),
        ("", ("openai_base_url",), f'openai_base_url = "{PROXY}"\n'),
        ('model = "x"', ("openai_base_url",), f'model = "x"\nopenai_base_url = "{PROXY}"\n'),
        # Quoted, literal and multi-line forms the regular expressions refused.
        (
            '"openai_base_url" = "a"\r\nmodel = "x"\r\n',
            ("openai_base_url",),
            f'"openai_base_url" = "{PROXY}"\r\nmodel = "x"\r\n',
        ),
        (
            'openai_base_url = """\nhttps://chatgpt.com/backend-api"""\n',
            ("openai_base_url",),
            f'openai_base_url = "{PROXY}"\n',
        ),
        ("openai_base_url = 3\n", ("openai_base_url",), f'openai_base_url = "{PROXY}"\n'),
        (
            "[profiles.'my work']\nmodel = 'x' # mine\n",
            ("profiles", "my work", "chatgpt_base_url"),
            f"[profiles.'my work']\nmodel = 'x' # mine\nchatgpt_base_url = \"{PROXY}\"\n",
        ),
        # CRLF line ends stay CRLF on the added line too.
        ("a = 1\r\n", ("openai_base_url",), f'a = 1\r\nopenai_base_url = "{PROXY}"\r\n'),
        (
            '[tui]\nopenai_base_url = "a"\n',
            ("openai_base_url",),
            f'openai_base_url = "{PROXY}"\n\n[tui]\nopenai_base_url = "a"\n',
        ),
    ],
)
def test_set_string_changes_only_that_key(before: str, key: tuple[str, ...], after: str) -> None:
    edited = set_string(before, key, PROXY)
    assert edited == after
    expected = tomllib.loads(before)
    holder = expected
    for name in key[:-1]:
        holder = holder[name]
    holder[key[-1]] = PROXY
    assert tomllib.loads(edited) == expected


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (
            "openai_base_url = \n",
            ("openai_base_url",),
            "not valid TOML: Invalid value (at line 1, column 19)",
        ),
        (
            "profiles = 1\n",
            ("profiles", "work", "chatgpt_base_url"),
            "profiles is not a table in the file",
        ),
        ("[[profiles]]\nx = 1\n", ("profiles", "x"), "profiles is not a table in the file"),
        (
            "[profiles]\n",
            ("profiles", "work", "chatgpt_base_url"),
            "profiles.work is not a table in the file",
        ),
    ],
)
def test_set_string_refuses_what_it_cannot_do_with_certainty(
    text: str, key: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(UnsafeEditError) as raised:
        set_string(text, key, PROXY)
    assert str(raised.value) == reason


def test_tomlkit_is_loaded_only_to_edit() -> None:
    """`doctor` without --fix (and serving) never imports the editor's library."""
    code = (
        "import sys; import proxy.cli, proxy.doctor.run; "
        "assert 'tomlkit' not in sys.modules; "
        "from proxy.doctor.tomledit import set_string; set_string('', ('a',), 'b'); "
        "assert 'tomlkit' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
