"""The command line: check-config, rewrite, --help, --version and configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import __version__
from proxy.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_check_config_prints_every_value_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[upstream]\nconnect_timeout = 3\n")
    monkeypatch.setenv("CODEX_PATH_PROXY_LOG_LEVEL", "debug")
    assert main(["check-config", "--config", str(config), "--port", "9999"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert 'listen.host = "127.0.0.1"  # default' in out
    assert "listen.port = 9999  # flag --port" in out
    assert f"upstream.connect_timeout = 3.0  # file {config}" in out
    assert 'log.level = "debug"  # environment CODEX_PATH_PROXY_LOG_LEVEL' in out
    assert "rewrite.disabled = []  # default" in out
    assert "rewrite.rules = [  # default" in out
    assert (
        '  { name = "legacy-responses", kind = "prefix", match = "/backend-api/responses", '
        'target = "/backend-api/codex/responses" },'
    ) in out


def test_check_config_shows_an_emptied_rule_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[rewrite]\nrules = []\n")
    assert main(["check-config", "--config", str(config)]) == 0
    assert f"rewrite.rules = []  # file {config}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/backend-api/responses/compact?x=1",
            "/backend-api/codex/responses/compact?x=1\n"
            'rule { name = "legacy-responses", kind = "prefix", match = "/backend-api/responses", '
            'target = "/backend-api/codex/responses" }\n',
        ),
        (
            "/backend-api/codex/responses?x=1",
            "/backend-api/codex/responses?x=1\nunchanged: no rule matches\n",
        ),
    ],
)
def test_rewrite_prints_the_result_and_the_rule(
    path: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rewrite", path]) == 0
    assert capsys.readouterr().out == expected


def test_rewrite_uses_the_configured_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[rewrite]\ndisabled = ['legacy-responses']\n")
    assert main(["rewrite", "--config", str(config), "/backend-api/responses"]) == 0
    assert capsys.readouterr().out.endswith("unchanged: no rule matches\n")


def test_config_error_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[upstream]\nurl = 'ftp://x'\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"codex-path-proxy: config error: file {config}: upstream.url: "
        "must be an http:// or https:// URL, got 'ftp://x'\n"
    )


def test_check_config_reports_errors_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--upstream", "gopher://x"]) == 2
    assert capsys.readouterr().err.startswith("codex-path-proxy: config error: flag --upstream:")


def test_config_error_from_the_real_command_has_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        "[rewrite]\nrules = [{ name = 'r', kind = 'regex', match = '(', target = '/x' }]\n"
    )
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "rewrite.rules[0]: invalid regex '('" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flag_value_is_exit_2() -> None:
    result = run("--port", "eighty")
    assert result.returncode == 2
    assert "invalid int value: 'eighty'" in result.stderr


def test_a_misspelt_setting_names_the_nearest_from_the_real_command(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[listen]\nprot = 1\n")
    result = run("--config", str(config))
    assert (result.returncode, result.stderr) == (
        2,
        f"codex-path-proxy: config error: file {config}: listen.prot: unknown key; "
        "did you mean listen.port?\n",
    )
    result = run("check-config", env={**os.environ, "CODEX_PATH_PROXY_LISTEN_PROT": "1"})
    assert (result.returncode, result.stderr) == (
        2,
        "codex-path-proxy: config error: environment CODEX_PATH_PROXY_LISTEN_PROT: unknown "
        "setting; did you mean CODEX_PATH_PROXY_LISTEN_PORT (listen.port)?\n",
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--prot", "1"), "codex-path-proxy: error: unknown option --prot (did you mean --port?)"),
        (
            ("doctor", "--fxi"),
            "codex-path-proxy: error: unknown option --fxi (did you mean --fix?)",
        ),
        (("--frobnicate",), "codex-path-proxy: error: unknown option --frobnicate"),
        (
            ("--port", "eighty"),
            "codex-path-proxy: error: argument --port: invalid int value: 'eighty'",
        ),
        (
            ("rewrite",),
            "codex-path-proxy rewrite: error: the following arguments are required: PATH",
        ),
    ],
)
def test_a_bad_argument_is_one_line_and_a_help_hint(args: tuple[str, ...], said: str) -> None:
    """No usage block: the error, then where the options are listed."""
    result = run(*args)
    assert (result.returncode, result.stdout) == (2, "")
    command = said.split(": error:", maxsplit=1)[0]
    assert result.stderr == f"{said}\nRun '{command} --help' for the options.\n"


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"codex-path-proxy {__version__}\n"


def test_help_lists_every_option_with_its_default() -> None:
    result = run("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, default in [
        ("--host HOST", "(default: 127.0.0.1)"),
        ("--port PORT", "(default: 8780)"),
        ("--upstream URL", "(default: https://chatgpt.com)"),
        ("--log-level {debug,info,warning,error}", "(default: info)"),
        ("--log-format {auto,json,console}", "(default: auto)"),
        ("--config FILE", "(default: $CODEX_PATH_PROXY_CONFIG, else none)"),
    ]:
        assert option in text
        assert default in text.split(option, 2)[-1]
    for command in ("serve", "check-config", "rewrite"):
        assert command in text


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://chatgpt.com/backend-api/responses", "/backend-api/responses"),
        ("HTTPS://chatgpt.com:443/backend-api/responses/x?y=1#top", "/backend-api/responses/x?y=1"),
        ("http://127.0.0.1:8780/backend-api/responses?x=%2F", "/backend-api/responses?x=%2F"),
    ],
)
def test_rewrite_takes_a_url_for_its_path_and_says_so(
    url: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rewrite", url]) == 0
    out, err = capsys.readouterr()
    rest = path.removeprefix("/backend-api/responses")
    assert out.splitlines()[0] == f"/backend-api/codex/responses{rest}"
    assert out.splitlines()[1].startswith('rule { name = "legacy-responses"')
    assert err == (
        f"codex-path-proxy rewrite: taking the path of the URL {url}: {path} "
        "(the proxy always sends to upstream.url)\n"
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("", "an empty string is not a path: give a request path such as /backend-api/responses"),
        (" ", "an empty string is not a path: give a request path such as /backend-api/responses"),
        (
            "backend-api/responses",
            "'backend-api/responses' is not a path: a request path starts with '/'; did you mean /backend-api/responses?",
        ),
        (
            "chatgpt.com/backend-api/responses",
            "'chatgpt.com/backend-api/responses' is not a path: a request path starts with '/'; a URL needs its scheme (https://chatgpt.com/backend-api/responses), or give its path alone",
        ),
        (
            "ftp://chatgpt.com/backend-api/responses",
            "'ftp://chatgpt.com/backend-api/responses': ftp:// is not HTTP: give a request path such as /backend-api/responses, or an http(s) URL",
        ),
        (
            "/backend-api/responses x",
            "'/backend-api/responses x' holds whitespace or control characters, which no request target does: percent-encode them (a space is %20)",
        ),
        (
            "/backend-api/responses#x",
            "'/backend-api/responses#x': a request target has no '#' fragment (clients never send it)",
        ),
    ],
)
def test_rewrite_refuses_what_is_not_a_path_with_a_hint_and_exit_2(
    argument: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rewrite", argument])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"codex-path-proxy rewrite: error: argument PATH: {message}\n"
        "Run 'codex-path-proxy rewrite --help' for the options.\n"
    )


def test_rewrite_of_an_empty_argument_is_exit_2_from_the_real_command() -> None:
    result = run("rewrite", "")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "an empty string is not a path" in result.stderr
    assert "Traceback" not in result.stderr
