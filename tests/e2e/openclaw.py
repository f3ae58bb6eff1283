"""OpenClaw: its state (config and OAuth profile) in a temporary HOME, and its commands.

2026.4.x and 2026.9.x differ: the old one has the `openai-codex` provider and
`imageGenerationModel`; the new one the `openai` provider with the
`openai-chatgpt-responses` API, `mediaModels.image`, and an auth store that
`doctor --fix` must migrate first. `plugins.allow = ["openai"]` keeps the bundled plugins
it loads small; `allowPrivateNetwork` lets its SSRF guard accept a loopback base URL.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.clients import (
    ACCOUNT_ID,
    CACHE,
    EMAIL,
    FAR_FUTURE,
    NODE22,
    NODE24,
    SYSTEM_PATH,
    VERSIONS,
    Command,
    Install,
    client_env,
    fake_jwt,
    node_bin,
    write_private,
)


@dataclass(frozen=True, slots=True)
class OpenClaw:
    install: Install
    node: Install
    provider: str  # "openai-codex" (2026.4.x) or "openai" (2026.9.x)

    @property
    def version(self) -> str:
        return self.install.version

    @property
    def tmp(self) -> Path:
        """Plugins are TypeScript compiled at run time (jiti, under TMPDIR) and Node keeps
        a compile cache: a fresh one per run costs about a minute of CPU, so runs share."""
        return CACHE / f"openclaw-{self.version}.cache"

    @property
    def plugin_stage(self) -> Path:
        """Where 2026.4.x npm-installs bundled-plugin dependencies on first use, filled by
        install_clients.sh. Beside, not inside, the install: npm walks up to the nearest
        node_modules and would install into the install's own."""
        return CACHE / f"openclaw-{self.version}.plugin-stage"


OLD = OpenClaw(Install("openclaw", VERSIONS["OPENCLAW_OLD_VERSION"]), NODE22, "openai-codex")
LATEST = OpenClaw(Install("openclaw", VERSIONS["OPENCLAW_LATEST_VERSION"]), NODE24, "openai")


def config(claw: OpenClaw, base_url: str, *, private_network: bool = True) -> dict[str, Any]:
    """`private_network=False`: as a user pointed at chatgpt.com has it (no loopback base,
    so no `allowPrivateNetwork`)."""
    profile = f"{claw.provider}:{EMAIL}"
    provider: dict[str, Any] = {"baseUrl": base_url, "models": []}
    if private_network:
        provider["request"] = {"allowPrivateNetwork": True}
    image = {"primary": "openai/gpt-image-2", "fallbacks": []}
    defaults: dict[str, Any] = {"model": {"primary": f"{claw.provider}/gpt-5.4", "fallbacks": []}}
    if claw.provider == "openai-codex":
        defaults |= {"imageGenerationModel": image, "mediaGenerationAutoProviderFallback": False}
    else:  # 2026.9's doctor removes mediaGenerationAutoProviderFallback as legacy
        provider["api"] = "openai-chatgpt-responses"
        defaults["mediaModels"] = {"image": image}
    return {
        "update": {"checkOnStart": False},
        "models": {"providers": {claw.provider: provider}},
        "auth": {
            "profiles": {profile: {"provider": claw.provider, "mode": "oauth", "email": EMAIL}},
            "order": {claw.provider: [profile]},
        },
        "agents": {"defaults": defaults},
        "plugins": {"allow": ["openai"]},
    }


def set_up(claw: OpenClaw, home: Path, base_url: str, *, private_network: bool = True) -> None:
    """Config and OAuth profile (a fake token valid for years) in HOME's state folder."""
    state = home / ".openclaw"
    text = json.dumps(config(claw, base_url, private_network=private_network), indent=2)
    write_private(state / "openclaw.json", text)
    token = {
        "type": "oauth",
        "provider": claw.provider,
        "access": fake_jwt(),
        "refresh": "fake-refresh-token",
        "expires": FAR_FUTURE * 1000,
        "accountId": ACCOUNT_ID,
        "email": EMAIL,
    }
    store = {"version": 1, "profiles": {f"{claw.provider}:{EMAIL}": token}}
    write_private(state / "agents/main/agent/auth-profiles.json", json.dumps(store))


def command(
    claw: OpenClaw, home: Path, name: str, args: list[str], *, timeout: float, network: bool = False
) -> Command:
    state = home / ".openclaw"
    env = client_env(
        home,
        network=network,
        PATH=f"{node_bin(claw.node)}:{SYSTEM_PATH}",
        TMPDIR=str(claw.tmp),
        NODE_COMPILE_CACHE=str(claw.tmp / "node-compile-cache"),
        OPENCLAW_STATE_DIR=str(state),
        OPENCLAW_CONFIG_PATH=str(state / "openclaw.json"),
        OPENCLAW_PLUGIN_STAGE_DIR=str(claw.plugin_stage),
        # Offline in tests: a missing dependency fails at once instead of hanging on npm.
        npm_config_offline="false" if network else "true",
        npm_config_cache=str(CACHE / ".npm-cache"),
        # That npm runs under OpenClaw's Node, whose prefix has no npmrc (no CA file).
        npm_config_cafile="/etc/ssl/certs/ca-certificates.crt",
    )
    claw.tmp.mkdir(parents=True, exist_ok=True)
    argv = [
        str(node_bin(claw.node) / "node"),
        str(claw.install.folder / "node_modules/openclaw/openclaw.mjs"),
        *args,
    ]
    return Command(f"openclaw {claw.version} {name}", argv, env, home, timeout)


def image(claw: OpenClaw, home: Path, *, timeout: float = 240, network: bool = False) -> Command:
    out = home / "out.png"
    args = ["capability", "image", "generate", "--model", "openai/gpt-image-2", "--prompt", "test"]
    args += ["--output", str(out), "--json"]
    run = command(claw, home, "image", args, timeout=timeout, network=network)
    run.outputs["image"] = out
    return run


def model_run(
    claw: OpenClaw, home: Path, *, timeout: float = 300, network: bool = False
) -> Command:
    args = ["capability", "model", "run", "--local", "--model", f"{claw.provider}/gpt-5.4"]
    args += ["--prompt", "say hi", "--json"]
    return command(claw, home, "chat", args, timeout=timeout, network=network)


def agent(claw: OpenClaw, home: Path, *, timeout: float = 240) -> Command:
    args = [
        "agent",
        "--local",
        "--agent",
        "main",
        "--message",
        "say hi",
        "--json",
        "--timeout",
        "120",
    ]
    return command(claw, home, "agent", args, timeout=timeout)


def doctor(claw: OpenClaw, home: Path, *, timeout: float = 240) -> Command:
    """2026.9.x: migrates the JSON auth store written by set_up (into its SQLite state)."""
    args = ["doctor", "--fix", "--non-interactive"]
    return command(claw, home, "doctor", args, timeout=timeout)


def proxy_doctor(claw: OpenClaw, home: Path, *args: str, timeout: float = 60) -> Command:
    """`codex-path-proxy doctor` in the environment OpenClaw runs in: its state variables,
    and this OpenClaw's `openclaw` first on PATH (the doctor reads its version there)."""
    env = command(claw, home, "env", [], timeout=timeout).env
    env["PATH"] = f"{claw.install.folder / 'node_modules/.bin'}:{env['PATH']}"
    argv = [sys.executable, "-m", "proxy", "doctor", *args]
    outputs = {"config": home / ".openclaw" / "openclaw.json"}
    return Command(f"codex-path-proxy {' '.join(argv[3:])}", argv, env, home, timeout, outputs)
