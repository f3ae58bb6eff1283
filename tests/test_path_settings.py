"""Path settings (capture.dir, upstream.ca_bundle, the config file) fail like every other
bad value: one line naming the source, the key and the reason, exit 2, in serve and
check-config alike, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from proxy.config import ConfigError, load_settings


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def error(environ: dict[str, str], flags: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=None, environ=environ, flags=flags or {})
    return str(caught.value)


def test_capture_dir_problems_name_the_source_key_and_reason(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = {
        "/proc/nope": "cannot create the folder /proc/nope: No such file or directory",
        str(a_file): f"{a_file} is a file, not a folder",
        str(a_file / "sub"): f"cannot create the folder {a_file / 'sub'}: {a_file} is a file",
    }
    for path, reason in cases.items():
        assert error({}, {"--capture-dir": path}) == f"flag --capture-dir: capture.dir: {reason}"
        assert error({"CODEX_PATH_PROXY_CAPTURE_DIR": path}) == (
            f"environment CODEX_PATH_PROXY_CAPTURE_DIR: capture.dir: {reason}"
        )
    # An existing folder nothing can be written in (procfs refuses even root).
    assert error({}, {"--capture-dir": "/proc/self"}).startswith(
        "flag --capture-dir: capture.dir: cannot write in the folder /proc/self: "
    )


def test_a_usable_capture_dir_is_accepted_and_not_created_by_loading(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    for folder in (existing, tmp_path / "new" / "deeper"):
        settings, _ = load_settings(
            config_file=None, environ={}, flags={"--capture-dir": str(folder)}
        )
        assert settings.capture.dir == str(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert list(existing.iterdir()) == []


def test_ca_bundle_problems_name_the_source_key_and_reason(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases = {
        str(tmp_path / "missing.pem"): f"no such file: {tmp_path / 'missing.pem'}",
        str(tmp_path): f"{tmp_path} is a folder, not a PEM file",
        str(not_pem): f"{not_pem} holds no usable PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
    }
    for path, reason in cases.items():
        assert error({"CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE": path}) == (
            f"environment CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE: upstream.ca_bundle: {reason}"
        )
    good = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(good))
    settings, _ = load_settings(
        config_file=None, environ={"CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE": str(good)}, flags={}
    )
    assert settings.upstream.ca_bundle == str(good)


def test_config_file_problems_name_the_flag_or_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=str(tmp_path), environ={}, flags={})
    assert (
        str(caught.value)
        == f"flag --config: cannot read the config file {tmp_path}: Is a directory"
    )
    missing = tmp_path / "missing.toml"
    assert error({"CODEX_PATH_PROXY_CONFIG": str(missing)}) == (
        "environment CODEX_PATH_PROXY_CONFIG: cannot read the config file "
        f"{missing}: No such file or directory"
    )


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--capture-dir", "/proc/nope"],
            "flag --capture-dir: capture.dir: cannot create the folder /proc/nope: No such file or directory",
        ),
        (
            ["--capture-dir", "{file}"],
            "flag --capture-dir: capture.dir: {file} is a file, not a folder",
        ),
        (
            ["--config", "{folder}"],
            "flag --config: cannot read the config file {folder}: Is a directory",
        ),
    ],
)
def test_the_real_command_refuses_an_unusable_path_in_one_line(
    tmp_path: Path, command: str, args: list[str], expected: str
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    names = {"file": str(a_file), "folder": str(tmp_path)}
    args = [arg.format(**names) for arg in args]
    result = run(command, "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr == f"codex-path-proxy: config error: {expected.format(**names)}\n"
    assert result.stdout == ""


def test_the_real_command_refuses_a_ca_bundle_that_is_not_pem(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")}
    env["CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE"] = str(not_pem)
    for command in ("serve", "check-config"):
        result = run(command, "--port", "0", env=env)
        assert result.returncode == 2
        assert result.stderr == (
            "codex-path-proxy: config error: environment CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE: "
            f"upstream.ca_bundle: {not_pem} holds no usable PEM certificate "
            "(NO_CERTIFICATE_OR_CRL_FOUND)\n"
        )
