"""The files a service manager runs the proxy from: a systemd user unit and a launchd
agent's property list. Pure: the command line and the drain time in, the file's text out."""

from __future__ import annotations

import plistlib
import re
from pathlib import Path

NAME = "codex-path-proxy"
LABEL = f"local.{NAME}"
STOP_MARGIN = 10  # seconds beyond shutdown.grace before the service manager kills it


def systemd_unit(argv: tuple[str, ...], grace: float) -> str:
    """A systemd user unit that runs argv at login, restarted if it dies."""
    return (
        f"# Written by `{NAME} service install`; `{NAME} service uninstall` removes it.\n"
        "[Unit]\n"
        f"Description={NAME}: rewrites chatgpt.com's retired /backend-api/responses paths\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        f"ExecStart={_exec_start(argv)}\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "# shutdown.grace for in-flight streams to finish, then a margin\n"
        f"TimeoutStopSec={round(grace) + STOP_MARGIN}\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _exec_start(argv: tuple[str, ...]) -> str:
    """systemd's ExecStart: % starts a specifier everywhere, $ a variable in the arguments
    only (never in the program's path); a word with a space or a quote is quoted."""
    program, *args = argv
    return " ".join([_quote(program), *(_quote(arg.replace("$", "$$")) for arg in args)])


def _quote(word: str) -> str:
    word = word.replace("%", "%%")
    if re.fullmatch(r"[\w@%+=:,./$-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def launchd_plist(argv: tuple[str, ...], home: Path, grace: float) -> bytes:
    """A launchd agent that runs argv at login, restarted if it dies, logging to a file."""
    log = str(home / "Library" / "Logs" / f"{NAME}.log")
    agent = {
        "Label": LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        # Restarted when it dies, not after a clean exit (SIGTERM drains and exits 0).
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": log,
        "StandardErrorPath": log,
        # launchd's default of 20 s would cut streams still draining.
        "ExitTimeOut": round(grace) + STOP_MARGIN,
    }
    return plistlib.dumps(agent)
