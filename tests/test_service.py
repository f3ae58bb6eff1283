"""`service install | uninstall | status`: the systemd unit checked by systemd-analyze, the
launchd plist parsed back, and each action run by the real command. There is no user
service manager to talk to here, so `systemctl` and `launchctl` are small scripts on PATH
that record how they were called and answer as told."""

from __future__ import annotations

import dataclasses
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.service import Host, manager, run
from proxy.service_files import systemd_unit
from proxy.settings import Settings
from tests.doctor_homes import doctor_environ, write
from tests.harness import StartProxy
from tests.proc import run_cli

UNIT = "codex-path-proxy.service"
LABEL = "local.codex-path-proxy"


def fake_tool(folder: Path, name: str, *, fail: str = "", answer: str = "") -> Path:
    """A stand-in for systemctl or launchctl: logs its arguments; with `fail`, says it on
    stderr and exits 1 for everything; `answer` is what is-active/print print."""
    log = folder / f"{name}.log"
    status = "exit 1" if fail else "exit 0"
    inactive = "exit 3" if answer != "active" else "exit 0"
    script = f"""#!/bin/sh
echo "$*" >> '{log}'
case "$*" in
  *is-active*) printf '%s\\n' '{answer}'; {inactive} ;;
  print*) printf '%s\\n' '{answer}'; exit 0 ;;
esac
{f"echo '{fail}' >&2" if fail else ""}
{status}
"""
    write(folder / name, script).chmod(0o755)
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def host(tmp_path: Path, **changes: object) -> Host:
    base = Host(
        platform="linux",
        home=tmp_path / "home",
        config_home=tmp_path / "home" / ".config",
        uid=501,
        path=str(tmp_path / "bin"),
        command=(sys.executable, "-m", "proxy"),
        config_file=None,
        unsaved=(),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """systemd's own check of a user unit, offline (a private runtime folder)."""
    unit = write(tmp_path / "verify" / UNIT, unit_text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=False,
    )


def test_print_shows_a_unit_systemd_accepts_for_the_running_executable(tmp_path: Path) -> None:
    settings = write(tmp_path / "my $ettings" / "100% proxy.toml", "[shutdown]\ngrace = 5\n")
    console_script = Path(sys.executable).parent / "codex-path-proxy"
    for argv, first in (
        ([sys.executable, "-m", "proxy"], f"{sys.executable} -m proxy"),
        ([str(console_script)], str(console_script)),
    ):
        result = subprocess.run(
            [*argv, "service", "install", "--print", "--config", str(settings)],
            capture_output=True,
            text=True,
            timeout=60,
            env=doctor_environ(tmp_path),
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, "")
        unit = result.stdout
        config = f'"{tmp_path}/my $$ettings/100%% proxy.toml"'
        assert f"ExecStart={first} serve --config {config}\n" in unit
        assert "TimeoutStopSec=15\n" in unit
        assert "Restart=on-failure\n" in unit
        assert "WantedBy=default.target\n" in unit
        checked = verify(unit, tmp_path)
        assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    assert not (tmp_path / ".config").exists()  # --print installs nothing


def test_systemd_refuses_what_the_quoting_protects_against(tmp_path: Path) -> None:
    """An executable in a folder named with a space, a '$' and a specifier: quoted and
    escaped, it verifies; unescaped, systemd would expand %h (the check can fail)."""
    folder = tmp_path / "odd $HOME %h bin"
    folder.mkdir()
    executable = folder / "codex-path-proxy"
    shutil.copy(Path(sys.executable).parent / "codex-path-proxy", executable)
    unit = systemd_unit(host(tmp_path, command=(str(executable),)).argv, grace=30)
    assert f'ExecStart="{tmp_path}/odd $HOME %%h bin/codex-path-proxy" serve\n' in unit
    checked = verify(unit, tmp_path)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")
    bare = unit.replace("%%h", "%h")
    assert "is not executable" in verify(bare, tmp_path).stderr


def test_launchd_plist_parses_back_with_its_keys(tmp_path: Path) -> None:
    mac = host(tmp_path, platform="darwin", config_file="/Users/me/proxy.toml")
    found = manager(mac, Settings())
    assert found is not None
    assert found.file == tmp_path / "home/Library/LaunchAgents/local.codex-path-proxy.plist"
    agent = plistlib.loads(found.text)
    log = str(tmp_path / "home/Library/Logs/codex-path-proxy.log")
    assert agent == {
        "Label": LABEL,
        "ProgramArguments": [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            "/Users/me/proxy.toml",
        ],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "ExitTimeOut": 40,
    }


def test_launchd_install_status_uninstall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    mac = host(tmp_path, platform="darwin")
    settings = dataclasses.replace(
        Settings(), listen=dataclasses.replace(Settings().listen, port=unused_tcp_port)
    )
    log = fake_tool(tmp_path / "bin", "launchctl", answer="state = running")
    plist = tmp_path / "home/Library/LaunchAgents/local.codex-path-proxy.plist"
    assert run("install", settings, mac) == 0
    assert plist.is_file()
    assert calls(log) == [f"bootout gui/501/{LABEL}", f"bootstrap gui/501 {plist}"]
    assert run("status", settings, mac) == 1  # nothing answers on the port
    assert capsys.readouterr().out.endswith(
        "✔ installed: " + str(plist) + "\n✔ running (launchctl)\n"
        f"✘ healthy: http://127.0.0.1:{unused_tcp_port}/_proxy/healthz: connection refused\n"
    )
    fake_tool(tmp_path / "bin", "launchctl", answer="state = not running")
    assert run("status", settings, mac) == 1
    assert (
        "✘ running: loaded, not running → logs: tail -f ~/Library/Logs/codex-path-proxy.log"
        in capsys.readouterr().out
    )
    assert run("uninstall", settings, mac) == 0
    assert not plist.exists()
    assert calls(log)[-1] == f"bootout gui/501/{LABEL}"


def test_elsewhere_the_manual_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    windows = host(tmp_path, platform="win32", command=(r"C:\Tools\codex-path-proxy.exe",))
    for action in ("install", "status", "uninstall"):
        assert run(action, Settings(), windows, print_only=action == "install") == 1
        out = capsys.readouterr().out
        assert out.startswith("codex-path-proxy service: no service manager support on win32")
        assert "Task Scheduler" in out
        assert out.endswith(r"  C:\Tools\codex-path-proxy.exe serve" + "\n")


def test_host_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "PATH": "/usr/bin",
        "CODEX_PATH_PROXY_LISTEN_PORT": "9000",
        "CODEX_PATH_PROXY_CONFIG": "p.toml",
    }
    found = Host.from_environ(
        environ,
        platform="linux",
        home=Path("/nowhere"),
        uid=1000,
        argv0="/opt/venv/bin/codex-path-proxy",
        executable="/opt/venv/bin/python3",
        config_file="p.toml",
    )
    assert found.command == ("/opt/venv/bin/codex-path-proxy",)
    assert found.config_file == str(Path.cwd() / "p.toml")
    assert found.config_home == tmp_path / "xdg"
    assert found.unsaved == ("CODEX_PATH_PROXY_LISTEN_PORT",)
    module = Host.from_environ(
        {},
        platform="linux",
        home=tmp_path,
        uid=0,
        argv0="/src/proxy/__main__.py",
        executable="/usr/bin/python3",
        config_file=None,
    )
    assert module.command == ("/usr/bin/python3", "-m", "proxy")
    assert module.config_home == tmp_path / ".config"
    assert module.argv == ("/usr/bin/python3", "-m", "proxy", "serve")


async def test_systemd_install_status_uninstall_by_the_real_command(
    tmp_path: Path, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy()
    bin_dir = tmp_path / "bin"
    log = fake_tool(bin_dir, "systemctl", answer="active")
    environ = doctor_environ(
        tmp_path, PATH=f"{bin_dir}:/usr/bin:/bin", CODEX_PATH_PROXY_LISTEN_PORT=str(proxy.port)
    )
    unit = tmp_path / ".config/systemd/user" / UNIT

    code, out, err = await run_cli("service", "install", environ=environ)
    assert (code, err) == (0, "")
    assert out == (
        f"Wrote {unit}\n"
        "Not carried into the service: CODEX_PATH_PROXY_LISTEN_PORT (put them in the settings "
        "file, then install again)\n"
        "Started, and it starts at every login. Logs: journalctl --user -u codex-path-proxy\n"
        "Check it: codex-path-proxy service status\n"
    )
    assert f"ExecStart={sys.executable} -m proxy serve\n" in unit.read_text()
    assert calls(log) == ["--user daemon-reload", f"--user enable --now {UNIT}"]

    code, out, _ = await run_cli("service", "status", environ=environ)
    assert (code, out) == (
        0,
        f"✔ installed: {unit}\n✔ running (systemctl)\n"
        f"✔ healthy: http://127.0.0.1:{proxy.port}/_proxy/healthz answers\n",
    )
    unit.write_text(unit.read_text().replace("RestartSec=2", "RestartSec=9"))
    fake_tool(bin_dir, "systemctl", answer="inactive")
    code, out, _ = await run_cli("service", "status", environ=environ)
    assert code == 1
    assert out.splitlines()[:2] == [
        f"✘ installed: {unit} differs from what `codex-path-proxy service install` writes now "
        "(another executable or settings file) → run it again",
        "✘ running: inactive → logs: journalctl --user -u codex-path-proxy",
    ]

    code, out, _ = await run_cli("service", "uninstall", environ=environ)
    assert (code, out) == (0, f"Removed {unit}\nStopped; it no longer starts at login.\n")
    assert calls(log)[-2:] == [f"--user disable --now {UNIT}", "--user daemon-reload"]
    assert not unit.exists()
    code, out, _ = await run_cli("service", "uninstall", environ=environ)
    assert (code, out) == (0, f"Not installed (no {unit})\n")
    code, out, _ = await run_cli("service", "status", environ=environ)
    assert code == 1
    assert out.startswith(f"✘ installed: no {unit} → codex-path-proxy service install\n")


async def test_systemd_without_a_user_session(tmp_path: Path) -> None:
    """No user bus (an ssh session as root, a container): the unit is written, the failure
    is named, and the command to run once logged in is printed."""
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "systemctl", fail="Failed to connect to bus: No medium found")
    environ = doctor_environ(tmp_path, PATH=f"{bin_dir}:/usr/bin:/bin")
    code, out, _ = await run_cli("service", "install", environ=environ)
    unit = tmp_path / ".config/systemd/user" / UNIT
    assert code == 1
    assert out == (
        f"Wrote {unit}\n"
        "Could not start it: `systemctl --user daemon-reload` exited 1: Failed to connect to "
        "bus: No medium found\n"
        "Once you are logged in (a user session is running): systemctl --user daemon-reload && "
        f"systemctl --user enable --now {UNIT}\n"
    )
    code, out, _ = await run_cli("service", "uninstall", environ=environ)
    assert code == 1
    assert out == (
        f"Removed {unit}\nCould not stop it: `systemctl --user disable --now {UNIT}` exited 1: "
        "Failed to connect to bus: No medium found\n"
    )
    code, out, _ = await run_cli(
        "service", "install", environ={**environ, "PATH": str(tmp_path / "empty")}
    )
    assert code == 1
    assert "Could not start it: systemctl is not on PATH\n" in out


@pytest.mark.parametrize(
    ("runtime", "said"),
    [
        pytest.param(None, "Failed to connect to bus: No medium found", id="no-runtime-dir"),
        pytest.param("empty", "Failed to connect to bus: No such file or directory", id="no-bus"),
    ],
)
async def test_status_without_a_user_session_says_what_is_missing(
    tmp_path: Path, runtime: str | None, said: str
) -> None:
    """The real systemctl with no user manager to reach (no XDG_RUNTIME_DIR, or one with no
    bus in it): status names the missing session and how to get one, not the journal."""
    environ = doctor_environ(tmp_path, PATH="/usr/bin:/bin")
    for name in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS"):
        environ.pop(name, None)
    if runtime is not None:
        (tmp_path / runtime).mkdir(mode=0o700)
        environ["XDG_RUNTIME_DIR"] = str(tmp_path / runtime)
    code, out, _ = await run_cli("service", "status", environ=environ)
    assert code == 1
    assert out.splitlines()[1] == (
        f"✘ running: no systemd user session ({said}) → log in as this user (a desktop or ssh "
        "login starts the session), or `loginctl enable-linger` to keep one from boot"
    )


def test_a_service_manager_that_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A systemctl on PATH that is no program at all (no #! line): named, not a traceback."""
    write(tmp_path / "bin" / "systemctl", "not a program\n").chmod(0o755)
    linux = host(tmp_path)
    assert run("install", Settings(), linux) == 1
    out = capsys.readouterr().out
    assert "Could not start it: systemctl --user daemon-reload: [Errno 8] Exec format error" in out
    (tmp_path / "bin" / "systemctl").unlink()
    assert run("status", Settings(), linux) == 1
    assert "✘ running: systemctl is not on PATH → logs: journalctl --user -u codex-path-proxy" in (
        capsys.readouterr().out
    )
