"""`codex-path-proxy service install | uninstall | status`: run the proxy at login as this
user, restarted if it dies, its logs where the platform keeps them: a systemd user unit on
Linux, a launchd agent on macOS, elsewhere the steps to do it by hand.

The service runs the executable that installed it (absolute path) with the settings file
in effect then (`--config`, else $CODEX_PATH_PROXY_CONFIG), so it listens where `doctor
--fix` pointed the clients.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from proxy.doctor.baseurl import origin_of, proxy_base
from proxy.doctor.listener import HEALTHZ, healthz, is_proxy
from proxy.service_files import LABEL, NAME, launchd_plist, systemd_unit
from proxy.settings import ENV_PREFIX, Settings

UNIT = f"{NAME}.service"


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """This machine as the service needs it, read once at the edge (proxy.cli)."""

    platform: str  # sys.platform
    home: Path
    config_home: Path  # $XDG_CONFIG_HOME, else ~/.config
    uid: int
    path: str  # where to look for systemctl and launchctl
    command: tuple[str, ...]  # this proxy, by absolute path
    config_file: str | None
    unsaved: tuple[str, ...]  # CODEX_PATH_PROXY_* variables the service will not see

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        *,
        platform: str,
        home: Path,
        uid: int,
        argv0: str,
        executable: str,
        config_file: str | None,
    ) -> Host:
        home = Path(environ.get("HOME") or home)
        if Path(argv0).name == "__main__.py":  # python -m proxy
            command: tuple[str, ...] = (str(Path(executable).absolute()), "-m", "proxy")
        else:
            command = (str(Path(shutil.which(argv0) or argv0).absolute()),)
        return cls(
            platform=platform,
            home=home,
            config_home=Path(environ.get("XDG_CONFIG_HOME") or home / ".config"),
            uid=uid,
            path=environ.get("PATH", ""),
            command=command,
            config_file=str(Path(config_file).absolute()) if config_file else None,
            unsaved=tuple(
                sorted(
                    name
                    for name in environ
                    if name.startswith(ENV_PREFIX) and name != f"{ENV_PREFIX}CONFIG"
                )
            ),
        )

    @property
    def argv(self) -> tuple[str, ...]:
        settings = ("--config", self.config_file) if self.config_file else ()
        return (*self.command, "serve", *settings)


@dataclass(frozen=True, slots=True)
class Manager:
    """One platform's service manager: where its file goes, and the commands for it."""

    file: Path
    text: bytes
    tool: str
    start: tuple[tuple[str, ...], ...]
    stop: tuple[tuple[str, ...], ...]
    running: tuple[str, ...]
    logs: str


def manager(host: Host, settings: Settings) -> Manager | None:
    if host.platform.startswith("linux"):
        return Manager(
            file=host.config_home / "systemd" / "user" / UNIT,
            text=systemd_unit(host.argv, settings.shutdown.grace).encode(),
            tool="systemctl",
            start=(("--user", "daemon-reload"), ("--user", "enable", "--now", UNIT)),
            stop=(("--user", "disable", "--now", UNIT), ("--user", "daemon-reload")),
            running=("--user", "is-active", UNIT),
            logs=f"journalctl --user -u {NAME}",
        )
    if host.platform == "darwin":
        domain = f"gui/{host.uid}"
        file = host.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        return Manager(
            file=file,
            text=launchd_plist(host.argv, host.home, settings.shutdown.grace),
            tool="launchctl",
            start=(("bootstrap", domain, str(file)),),
            stop=(("bootout", f"{domain}/{LABEL}"),),
            running=("print", f"{domain}/{LABEL}"),
            logs=f"tail -f ~/Library/Logs/{NAME}.log",
        )
    return None


def run(action: str, settings: Settings, host: Host, *, print_only: bool = False) -> int:
    found = manager(host, settings)
    if found is None:
        print(_by_hand(host))
        return 1
    if print_only:
        print(found.text.decode(), end="")
        return 0
    if action == "install":
        return _install(found, host)
    if action == "uninstall":
        return _uninstall(found, host)
    return _status(found, host, settings)


def _by_hand(host: Host) -> str:
    line = subprocess.list2cmdline(host.argv)
    return (
        f"{NAME} service: no service manager support on {host.platform} (systemd on Linux, "
        f"launchd on macOS). To run it at every login, start this command from your system's "
        f"own tools (on Windows: Task Scheduler, a task triggered 'At log on', restarted on "
        f"failure):\n  {line}"
    )


def _call(host: Host, tool: str, args: tuple[str, ...]) -> subprocess.CompletedProcess[str] | str:
    """Run the service manager's tool; a string says why it could not run."""
    program = shutil.which(tool, path=host.path)
    if program is None:
        return f"{tool} is not on PATH"
    try:
        return subprocess.run(  # noqa: S603 - the platform's own tool, fixed arguments
            [program, *args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{tool} {' '.join(args)}: {exc}"


def _failure(result: subprocess.CompletedProcess[str] | str, tool: str) -> str:
    if isinstance(result, str):
        return result
    said = (result.stderr or result.stdout).strip().splitlines()
    return f"`{tool} {' '.join(result.args[1:])}` exited {result.returncode}" + (
        f": {said[0]}" if said else ""
    )


# What `systemctl --user` says when no user manager is there to ask (no login session:
# an ssh session as root, a container, a cron job): "Failed to connect to bus: No medium
# found", or "… No such file or directory" when XDG_RUNTIME_DIR names no running one.
_NO_SESSION = "Failed to connect to"
NO_SESSION_FIX = (
    "log in as this user (a desktop or ssh login starts the session), "
    "or `loginctl enable-linger` to keep one from boot"
)


def _no_session(found: Manager, said: str) -> bool:
    return found.tool == "systemctl" and _NO_SESSION in said


def _install(found: Manager, host: Host) -> int:
    found.file.parent.mkdir(parents=True, exist_ok=True)
    found.file.write_bytes(found.text)
    print(f"Wrote {found.file}")
    if host.unsaved:
        print(
            f"Not carried into the service: {', '.join(host.unsaved)} (put them in the settings "
            "file, then install again)"
        )
    if found.tool == "launchctl":  # bootstrap refuses an agent already loaded
        _call(host, found.tool, found.stop[0])
    for args in found.start:
        result = _call(host, found.tool, args)
        if isinstance(result, str) or result.returncode != 0:
            print(f"Could not start it: {_failure(result, found.tool)}")
            steps = " && ".join(f"{found.tool} {' '.join(a)}" for a in found.start)
            print(f"Once you are logged in (a user session is running): {steps}")
            return 1
    print(f"Started, and it starts at every login. Logs: {found.logs}")
    print(f"Check it: {NAME} service status")
    return 0


def _uninstall(found: Manager, host: Host) -> int:
    if not found.file.exists():
        print(f"Not installed (no {found.file})")
        return 0
    problems = []
    for args in found.stop[:1]:
        result = _call(host, found.tool, args)
        if isinstance(result, str) or result.returncode != 0:
            problems.append(_failure(result, found.tool))
    found.file.unlink()
    print(f"Removed {found.file}")
    for args in found.stop[1:]:
        _call(host, found.tool, args)
    if problems:
        print(f"Could not stop it: {problems[0]}")
        return 1
    print("Stopped; it no longer starts at login.")
    return 0


def _status(found: Manager, host: Host, settings: Settings) -> int:
    lines, ok = [], True
    if not found.file.exists():
        lines.append(f"✘ installed: no {found.file} → {NAME} service install")
        ok = False
    elif found.file.read_bytes() != found.text:
        lines.append(
            f"✘ installed: {found.file} differs from what `{NAME} service install` writes now "
            "(another executable or settings file) → run it again"
        )
        ok = False
    else:
        lines.append(f"✔ installed: {found.file}")
    result = _call(host, found.tool, found.running)
    if isinstance(result, str):
        running, said = False, result
    else:
        said = (result.stdout or result.stderr).strip()
        # launchctl print answers 0 for a loaded agent, running or not.
        running = result.returncode == 0 and (
            found.tool != "launchctl" or "state = running" in result.stdout
        )
        if result.returncode == 0 and not running:
            said = "loaded, not running"
    if running:
        lines.append(f"✔ running ({found.tool})")
    elif _no_session(found, said):
        first = said.splitlines()[0]
        lines.append(f"✘ running: no systemd user session ({first}) → {NO_SESSION_FIX}")
        ok = False
    else:
        lines.append(f"✘ running: {said.splitlines()[0] if said else 'no'} → logs: {found.logs}")
        ok = False
    origin = origin_of(URL(proxy_base(settings.listen)))
    answer = asyncio.run(healthz(origin))
    where = f"{URL(proxy_base(settings.listen)).origin()}{HEALTHZ}"
    if is_proxy(answer):
        lines.append(f"✔ healthy: {where} answers")
    else:
        said = answer if isinstance(answer, str) else answer.summary
        lines.append(f"✘ healthy: {where}: {said}")
        ok = False
    print("\n".join(lines))
    return 0 if ok else 1
