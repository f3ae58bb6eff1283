"""The process edge: arguments in, settings out, one exit code.

codex-path-proxy [serve] [--config FILE] [--host HOST] [--port PORT] [--upstream URL]
                 [--log-level LEVEL] [--log-format FORMAT]
codex-path-proxy check-config [--config FILE] [...]
codex-path-proxy rewrite PATH [--config FILE]
codex-path-proxy doctor [--json] [--fix] [--config FILE] [...]
codex-path-proxy usage [--json] [--config FILE] [...]
codex-path-proxy service install [--print] | uninstall | status [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from proxy import __version__
from proxy.config import ConfigError, Sourced, load_settings
from proxy.log import configure_logging
from proxy.rules import Rule, rewrite
from proxy.server import StartupError, check_inspector, serve
from proxy.settings import CONFIG_ENV, FLAGS, Settings, key_type, keys, redact_url

PROG = "codex-path-proxy"
_METAVARS = {"--capture-dir": "DIR"}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument said in one line and a --help hint (not the usage
    block), and an unknown option named with the nearest known one."""

    given: Sequence[str] = ()  # the arguments (of the whole command line, on its parser)
    known: frozenset[str] = frozenset()  # every option of every command

    def error(self, message: str) -> NoReturn:
        given = self.given[: self.given.index("--")] if "--" in self.given else self.given
        unknown = [
            name
            for name in (argument.split("=", 1)[0] for argument in given)
            # argparse takes a unique start of an option for the option.
            if name.startswith("--") and not any(known.startswith(name) for known in self.known)
        ]
        if unknown:
            close = difflib.get_close_matches(unknown[0], self.known, n=1)
            message = f"unknown option {unknown[0]}" + (
                f" (did you mean {close[0]}?)" if close else ""
            )
        self.exit(2, f"{self.prog}: error: {message}\nRun '{self.prog} --help' for the options.\n")


def build_parser() -> Parser:
    known = {"-h", "--help"}

    def note(action: argparse.Action) -> None:
        known.update(action.option_strings)

    config = Parser(add_help=False)
    note(
        config.add_argument(
            "--config",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help=f"TOML settings file (default: ${CONFIG_ENV}, else none)",
        )
    )
    options = Parser(add_help=False, parents=[config])
    for flag, (section, key) in FLAGS.items():
        known.add(flag)
        spec = keys(section)[key]
        kind = key_type(section, key)
        why = f"{section}.{key}: {spec.metadata['why']}"
        if kind is bool:
            options.add_argument(
                flag, dest=flag, action="store_true", default=argparse.SUPPRESS, help=why
            )
            continue
        options.add_argument(
            flag,
            dest=flag,
            type=kind,
            choices=spec.metadata["choices"] or None,
            metavar=None if spec.metadata["choices"] else _METAVARS.get(flag, key.upper()),
            default=argparse.SUPPRESS,
            help=f"{why} (default: {spec.default or 'none'})",
        )

    parser = Parser(
        prog=PROG,
        parents=[options],
        description="Local reverse proxy that rewrites retired chatgpt.com /backend-api/responses "
        "paths to /backend-api/codex/responses and forwards everything else unchanged.",
        epilog="Settings: defaults < TOML file < CODEX_PATH_PROXY_<SECTION>_<KEY> < flags. "
        "Run 'check-config' to see the effective values and where each came from.",
    )
    note(parser.add_argument("--version", action="version", version=f"{PROG} {__version__}"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", parents=[options], help="run the proxy (the default)")
    commands.add_parser(
        "check-config",
        parents=[options],
        help="print the effective settings and where each came from",
    )
    rewrite_parser = commands.add_parser(
        "rewrite", parents=[config], help="show what a path (with its query) is rewritten to"
    )
    rewrite_parser.add_argument(
        "path",
        metavar="PATH",
        type=request_target,
        help="a raw request path, e.g. /backend-api/responses?x=1 (of a URL, its path is taken)",
    )
    doctor_parser = commands.add_parser(
        "doctor",
        parents=[options],
        help="check the clients' configs, this proxy and the way out; exit 1 if anything is wrong",
    )
    note(
        doctor_parser.add_argument(
            "--json", action="store_true", help="one JSON report for scripts"
        )
    )
    note(
        doctor_parser.add_argument(
            "--fix",
            action="store_true",
            help="make the config edits it proposes (a backup of each file first), "
            "then check again",
        )
    )
    usage_parser = commands.add_parser(
        "usage",
        parents=[options],
        help="the plan usage the running proxy has seen (windows, resets, credits), as bars",
    )
    usage_parser.add_argument(
        "--json", action="store_true", help="what /_proxy/usage answered, for scripts"
    )
    service = commands.add_parser(
        "service", help="run the proxy at every login (systemd user unit, launchd agent)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    install = service.add_parser(
        "install", parents=[config], help="install and start it with this executable and settings"
    )
    note(
        install.add_argument(
            "--print", dest="print_only", action="store_true", help="show the file, install nothing"
        )
    )
    service.add_parser("uninstall", help="stop it and remove the file")
    service.add_parser("status", parents=[config], help="installed, running, healthy?")
    parser.known = frozenset(known)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    given = vars(args)
    flags = {flag: given[flag] for flag in FLAGS if flag in given}
    try:
        settings, sources = load_settings(
            config_file=given.get("config"), environ=os.environ, flags=flags
        )
        if args.command in (None, "serve"):
            # Settings refused as they stand: exit 2, as every setting refusal.
            check_inspector(settings)
    except (ConfigError, StartupError) as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(describe(sources))
        return 0
    if args.command == "rewrite":
        target: PathArgument = args.path
        if target.url is not None:
            print(
                f"{PROG} rewrite: taking the path of the URL {target.url}: {target.path} "
                "(the proxy always sends to upstream.url)",
                file=sys.stderr,
            )
        print(explain(settings, target.path))
        return 0
    if args.command in ("doctor", "service", "usage"):
        return look_after(args, settings, sources)
    configure_logging(settings.log.level, settings.log.format)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(settings))
    except StartupError as exc:
        print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def look_after(args: argparse.Namespace, settings: Settings, sources: Sourced) -> int:
    """doctor, service and usage: this machine's side, its inputs read here, once."""
    if args.command == "usage":
        from proxy.usage_command import run as show_usage  # noqa: PLC0415

        return show_usage(settings, as_json=args.json)
    # Imported here: serving, the common case, starts without them (sidecars restart).
    from proxy.doctor.inputs import Inputs  # noqa: PLC0415
    from proxy.doctor.run import doctor  # noqa: PLC0415
    from proxy.service import Host  # noqa: PLC0415
    from proxy.service import run as run_service  # noqa: PLC0415

    given = vars(args)
    if args.command == "doctor":
        inputs = Inputs.from_environ(os.environ, home=Path.home(), now=time.time())
        return doctor(settings, sources, inputs, fix=args.fix, as_json=args.json)
    host = Host.from_environ(
        os.environ,
        platform=sys.platform,
        home=Path.home(),
        uid=os.getuid() if hasattr(os, "getuid") else 0,
        argv0=sys.argv[0],
        executable=sys.executable,
        config_file=given.get("config") or os.environ.get(CONFIG_ENV),
    )
    return run_service(args.action, settings, host, print_only=given.get("print_only", False))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (its socket I/O is much cheaper), else asyncio's own."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def run() -> None:
    raise SystemExit(main())


def describe(sources: Sourced) -> str:
    """Every effective setting, TOML-style, with the source it came from."""
    lines = []
    for (section, key), value in sources.items():
        if isinstance(value.value, tuple) and value.value and isinstance(value.value[0], Rule):
            lines.append(f"{section}.{key} = [  # {value.source}")
            lines.extend(f"  {_rule(rule)}," for rule in value.value)
            lines.append("]")
        else:
            shown = (
                redact_url(value.value) if (section, key) == ("upstream", "proxy") else value.value
            )
            lines.append(f"{section}.{key} = {_toml(shown)}  # {value.source}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class PathArgument:
    """What `rewrite` rewrites: a raw path and query, and the URL it came from, if any."""

    path: str
    url: str | None = None


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_EXAMPLE = "/backend-api/responses"


def request_target(argument: str) -> PathArgument:
    """The argument of `rewrite` as a request target, or ArgumentTypeError with a hint."""
    if not argument.strip():
        raise argparse.ArgumentTypeError(
            f"an empty string is not a path: give a request path such as {_EXAMPLE}"
        )
    if any(char.isspace() or not char.isprintable() for char in argument):
        raise argparse.ArgumentTypeError(
            f"{argument!r} holds whitespace or control characters, which no request target "
            "does: percent-encode them (a space is %20)"
        )
    if argument.startswith("/"):
        if "#" in argument:
            raise argparse.ArgumentTypeError(
                f"{argument!r}: a request target has no '#' fragment (clients never send it)"
            )
        return PathArgument(argument)
    if _SCHEME.match(argument):
        scheme, _, rest = argument.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise argparse.ArgumentTypeError(
                f"{argument!r}: {scheme}:// is not HTTP: give a request path such as "
                f"{_EXAMPLE}, or an http(s) URL"
            )
        # The path starts where the authority ends; the fragment never leaves a client.
        start = min((rest.find(c) for c in "/?#" if c in rest), default=len(rest))
        path = rest[start:].partition("#")[0]
        return PathArgument(path if path.startswith("/") else "/" + path, url=argument)
    first = argument.split("/", 1)[0]
    hint = (
        f"a URL needs its scheme (https://{argument}), or give its path alone"
        if "." in first or ":" in first
        else f"did you mean /{argument}?"
    )
    raise argparse.ArgumentTypeError(
        f"{argument!r} is not a path: a request path starts with '/'; {hint}"
    )


def explain(settings: Settings, target: str) -> str:
    result = rewrite(settings.rewrite.active, target)
    if result.rule is None:
        return f"{target}\nunchanged: no rule matches"
    return f"{result.target}\nrule {_rule(result.rule)}"


def _rule(rule: Rule) -> str:
    fields = {"name": rule.name, "kind": str(rule.kind), "match": rule.match, "target": rule.target}
    return "{ " + ", ".join(f"{key} = {_toml(value)}" for key, value in fields.items()) + " }"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)
