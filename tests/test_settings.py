"""Settings: layering, config/default.toml, and every configuration error message."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_settings
from proxy.rules import DEFAULT_RULES, Rule
from proxy.settings import Settings

ROOT = Path(__file__).parent.parent


def load(
    toml: str | None = None,
    *,
    tmp_path: Path | None = None,
    environ: dict[str, str] | None = None,
    flags: dict[str, object] | None = None,
) -> Settings:
    config_file = None
    if toml is not None:
        assert tmp_path is not None
        config = tmp_path / "proxy.toml"
        config.write_text(toml)
        config_file = str(config)
    settings, _ = load_settings(config_file=config_file, environ=environ or {}, flags=flags or {})
    return settings


def test_default_toml_equals_the_built_in_defaults() -> None:
    settings, sources = load_settings(
        config_file=str(ROOT / "config" / "default.toml"), environ={}, flags={}
    )
    assert settings == Settings()
    assert [rule.pattern for rule in settings.rewrite.rules] == [None] * len(DEFAULT_RULES)
    # Every key is written out in the file, none left to the built-in default.
    assert {value.source for value in sources.values()} == {
        f"file {ROOT / 'config' / 'default.toml'}"
    }


def test_default_toml_documents_every_key_with_a_comment() -> None:
    text = (ROOT / "config" / "default.toml").read_text()
    lines = text.splitlines()
    data = tomllib.loads(text)
    for section, table in data.items():
        for key in table:
            if key == "rules":
                continue
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
            assert lines[index - 1].startswith("#"), f"{section}.{key} has no comment above it"


def test_precedence_defaults_file_environment_flags(tmp_path: Path) -> None:
    toml = '[listen]\nport = 1001\nhost = "127.0.0.2"\n[upstream]\nurl = "http://127.0.0.1:9"\n'
    environ = {
        "CODEX_PATH_PROXY_LISTEN_PORT": "1002",
        "CODEX_PATH_PROXY_UPSTREAM_IDLE_TIMEOUT": "5",
    }
    settings = load(toml, tmp_path=tmp_path, environ=environ, flags={"--port": 1003})
    assert settings.listen.port == 1003
    assert settings.listen.host == "127.0.0.2"
    assert settings.upstream.url == "http://127.0.0.1:9"
    assert settings.upstream.idle_timeout == 5.0
    assert settings.upstream.connect_timeout == 10.0


def test_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "env.toml"
    config.write_text("[log]\nlevel = 'debug'\n")
    settings, sources = load_settings(
        config_file=None, environ={"CODEX_PATH_PROXY_CONFIG": str(config)}, flags={}
    )
    assert settings.log.level == "debug"
    assert sources["log", "level"].source == f"file {config}"


def test_environment_values_are_typed() -> None:
    settings = load(
        environ={
            "CODEX_PATH_PROXY_UPSTREAM_POOL_SIZE": "7",
            "CODEX_PATH_PROXY_SHUTDOWN_GRACE": "2.5",
            "CODEX_PATH_PROXY_REWRITE_DISABLED": "legacy-v1-responses, legacy-responses",
            "UNRELATED": "ignored",
        }
    )
    assert settings.upstream.pool_size == 7
    assert settings.shutdown.grace == 2.5
    assert settings.rewrite.disabled == ("legacy-v1-responses", "legacy-responses")
    assert [rule.name for rule in settings.rewrite.active] == [
        "legacy-codex-v1-responses",
        "legacy-v1-codex-responses",
    ]


def test_rule_table_can_be_replaced_or_emptied(tmp_path: Path) -> None:
    toml = """
[[rewrite.rules]]
name = "v"
kind = "regex"
match = '/api/v(\\d+)/(.*)'
target = '/backend-api/\\2?v=\\1'
"""
    settings = load(toml, tmp_path=tmp_path)
    [rule] = settings.rewrite.rules
    assert rule == Rule.build(
        name="v", kind="regex", match=r"/api/v(\d+)/(.*)", target=r"/backend-api/\2?v=\1"
    )
    assert rule.pattern is not None
    assert load("[rewrite]\nrules = []\n", tmp_path=tmp_path).rewrite.rules == ()


def test_integers_are_accepted_for_seconds(tmp_path: Path) -> None:
    assert load("[shutdown]\ngrace = 3\n", tmp_path=tmp_path).shutdown.grace == 3.0


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().listen.port = 1  # type: ignore[misc]


FILE_ERRORS = [
    (
        "[listen\n",
        "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 8)",
    ),
    ("[nope]\nx = 1\n", "[nope]: unknown section"),
    ("listen = 5\n", "listen: must be a table"),
    ("[listen]\nprot = 1\n", "listen.prot: unknown key; did you mean listen.port?"),
    ("[lisen]\nport = 1\n", "[lisen]: unknown section; did you mean listen?"),
    (
        "[upstream]\ntimeout = 1\n",
        "upstream.timeout: unknown key; did you mean upstream.idle_timeout?",
    ),
    ("[listen]\nport = '8780'\n", "listen.port: expected an integer, got '8780'"),
    ("[listen]\nport = true\n", "listen.port: expected an integer, got True"),
    ("[listen]\nport = 1.5\n", "listen.port: expected an integer, got 1.5"),
    ("[listen]\nhost = 1\n", "listen.host: expected a string, got 1"),
    ("[upstream]\nidle_timeout = 'long'\n", "upstream.idle_timeout: expected a number, got 'long'"),
    (
        "[log]\nlevel = 'loud'\n",
        "log.level: must be one of debug, info, warning, error, got 'loud'",
    ),
    ("[log]\nformat = 'xml'\n", "log.format: must be one of auto, json, console, got 'xml'"),
    ("[rewrite]\ndisabled = 'x'\n", "rewrite.disabled: expected a list of strings, got 'x'"),
    ("[rewrite]\ndisabled = ['nope']\n", "rewrite.disabled: no rule is named 'nope'"),
    (
        "[upstream]\nurl = 'ftp://chatgpt.com'\n",
        "upstream.url: must be an http:// or https:// URL, got 'ftp://chatgpt.com'",
    ),
    (
        "[upstream]\nurl = 'chatgpt.com'\n",
        "upstream.url: must be an http:// or https:// URL, got 'chatgpt.com'",
    ),
    (
        "[upstream]\nurl = 'https://chatgpt.com/backend-api'\n",
        "upstream.url: must be an origin only (scheme://host[:port]), got 'https://chatgpt.com/backend-api'",
    ),
    (
        "[upstream]\nurl = 'https://u:p@chatgpt.com'\n",
        "upstream.url: must be an origin only (scheme://host[:port]), got 'https://u:[redacted]@chatgpt.com'",
    ),
    ("[upstream]\nurl = 'http://[::1'\n", "upstream.url: not a URL: Invalid IPv6 URL"),
    ("[listen]\nport = 65536\n", "listen.port: must be 0..65535, got 65536"),
    ("[upstream]\nconnect_timeout = 0\n", "upstream.connect_timeout: must be greater than 0"),
    ("[upstream]\nidle_timeout = -1\n", "upstream.idle_timeout: must be greater than 0"),
    ("[upstream]\npool_size = 0\n", "upstream.pool_size: must be at least 1"),
    ("[limits]\nmax_body_size = -1\n", "limits.max_body_size: must not be negative"),
    (
        "[limits]\nmax_header_size = 100\n",
        "limits.max_header_size: must be at least 8190 (HTTP's usual line limit)",
    ),
    ("[shutdown]\ngrace = -1\n", "shutdown.grace: must not be negative"),
    ("[rewrite]\nrules = 'x'\n", "rewrite.rules: expected an array of tables ([[rewrite.rules]])"),
    (
        "[rewrite]\nrules = [1]\n",
        "rewrite.rules[0]: expected a table with name, kind, match, target",
    ),
    (
        "[[rewrite.rules]]\nname = 'a'\nkind = 'prefix'\nmatch = '/a'\ntarget = '/b'\nextra = 1\n",
        "rewrite.rules[0].extra: unknown key",
    ),
    (
        "[[rewrite.rules]]\nname = 'a'\nkind = 'prefix'\nmatch = '/a'\ntaget = '/b'\n",
        "rewrite.rules[0].taget: unknown key; did you mean target?",
    ),
    (
        "[[rewrite.rules]]\nname = 'a'\nkind = 'prefix'\nmatch = '/a'\n",
        "rewrite.rules[0].target: expected a string, got None",
    ),
    (
        "[[rewrite.rules]]\nname = 'a'\nkind = 'glob'\nmatch = '/a'\ntarget = '/b'\n",
        "rewrite.rules[0]: kind must be one of exact, prefix, regex, got 'glob'",
    ),
    (
        "[[rewrite.rules]]\nname = 'a'\nkind = 'regex'\nmatch = '/(a'\ntarget = '/b'\n",
        "rewrite.rules[0]: invalid regex '/(a': missing ), unterminated subpattern at position 1",
    ),
    (
        "[[rewrite.rules]]\nname = 'a'\nkind = 'exact'\nmatch = '/a'\ntarget = '/b'\n[[rewrite.rules]]\nname = 'a'\nkind = 'exact'\nmatch = '/c'\ntarget = '/d'\n",
        "rewrite.rules[1].name: duplicate rule name 'a'",
    ),
]


@pytest.mark.parametrize(("toml", "message"), FILE_ERRORS)
def test_file_errors_name_the_file_key_and_reason(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(toml, tmp_path=tmp_path)
    assert str(caught.value) == f"file {tmp_path / 'proxy.toml'}: {message}"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=str(missing), environ={}, flags={})
    assert str(caught.value) == (
        f"flag --config: cannot read the config file {missing}: No such file or directory"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CODEX_PATH_PROXY_LISTEN_PROT": "1"},
            "environment CODEX_PATH_PROXY_LISTEN_PROT: unknown setting; "
            "did you mean CODEX_PATH_PROXY_LISTEN_PORT (listen.port)?",
        ),
        (
            {"CODEX_PATH_PROXY_XYZ": "1"},
            "environment CODEX_PATH_PROXY_XYZ: unknown setting",
        ),
        (
            {"CODEX_PATH_PROXY_LISTEN_PORT": "eighty"},
            "environment CODEX_PATH_PROXY_LISTEN_PORT: listen.port: expected an integer, got 'eighty'",
        ),
        (
            {"CODEX_PATH_PROXY_SHUTDOWN_GRACE": "soon"},
            "environment CODEX_PATH_PROXY_SHUTDOWN_GRACE: shutdown.grace: expected a number, got 'soon'",
        ),
        (
            {"CODEX_PATH_PROXY_REWRITE_RULES": "[]"},
            "environment CODEX_PATH_PROXY_REWRITE_RULES: rewrite.rules: can only be set in a TOML file",
        ),
        (
            {"CODEX_PATH_PROXY_UPSTREAM_URL": "file:///etc/passwd"},
            "environment CODEX_PATH_PROXY_UPSTREAM_URL: upstream.url: must be an http:// or https:// URL, got 'file:///etc/passwd'",
        ),
        (
            {"CODEX_PATH_PROXY_LOG_LEVEL": "trace"},
            "environment CODEX_PATH_PROXY_LOG_LEVEL: log.level: must be one of debug, info, warning, error, got 'trace'",
        ),
    ],
)
def test_environment_errors_name_the_variable_and_reason(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ=environ)
    assert str(caught.value) == message


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        load(flags={"--port": 70000})
    assert str(caught.value) == "flag --port: listen.port: must be 0..65535, got 70000"
