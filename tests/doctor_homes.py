"""Fake homes for the doctor: each client's config in the shape the real one writes
(OpenClaw's from the end-to-end suite's own builder), and a fake chatgpt.com that answers
an unauthenticated request the way the real one does."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.config import load_settings
from proxy.doctor.findings import Finding, Status
from proxy.doctor.inputs import Inputs
from proxy.doctor.run import examine
from tests.e2e import openclaw
from tests.fake_upstream import CLOUDFLARE_403, RETIRED, FakeUpstream

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
CHATGPT = "https://chatgpt.com/backend-api"
ACCOUNT = "acct-5f1d0c2e-0000-4444-8888-123456789abc"
LIVE = "/backend-api/codex/responses"


def jwt(exp: float) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"exp": int(exp), "https://api.openai.com/auth": {"chatgpt_account_id": ACCOUNT}}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLXNlY3JldA"


TOKEN = jwt(NOW + 9 * 86400)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def openclaw_config(
    claw: openclaw.OpenClaw, base_url: str | None, *, private_network: bool = True
) -> dict[str, Any]:
    """The end-to-end suite's config for this version; base_url None: no provider entry."""
    config = openclaw.config(claw, base_url or "", private_network=private_network)
    if base_url is None:
        del config["models"]
    return config


def openclaw_home(home: Path, config: Mapping[str, Any] | str) -> Path:
    text = config if isinstance(config, str) else json.dumps(config, indent=2) + "\n"
    return write(home / ".openclaw" / "openclaw.json", text)


def codex_home(
    home: Path, config: str | None, *, token: str | None = TOKEN, mode: str = "chatgpt"
) -> Path:
    folder = home / ".codex"
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        write(folder / "config.toml", config)
    if token is not None:
        tokens = {
            "id_token": token,
            "access_token": token,
            "refresh_token": "r",
            "account_id": ACCOUNT,
        }
        auth = {"auth_mode": mode, "OPENAI_API_KEY": None, "tokens": tokens}
        write(folder / "auth.json", json.dumps(auth))
    return folder


def inputs(home: Path, environ: Mapping[str, str] | None = None) -> Inputs:
    return Inputs.from_environ(
        {"HOME": str(home), "PATH": "", **(environ or {})}, home=home, now=NOW
    )


async def run_doctor(
    home: Path,
    upstream: str,
    port: int,
    *,
    environ: Mapping[str, str] | None = None,
    settings_environ: Mapping[str, str] | None = None,
) -> list[Finding]:
    settings, sources = load_settings(
        config_file=None,
        environ=settings_environ or {},
        flags={"--upstream": upstream, "--port": port},
    )
    return await examine(settings, sources, inputs(home, environ))


def line(findings: list[Finding], where: str) -> Finding:
    """The one finding whose `where` ends with this text."""
    found = [f for f in findings if f.where.endswith(where)]
    assert len(found) == 1, (where, [f.where for f in findings])
    return found[0]


def problems(findings: list[Finding]) -> list[str]:
    return [f"{f.where}: {f.says}" for f in findings if f.status is Status.PROBLEM]


def answer_like_chatgpt(fake: FakeUpstream, live: tuple[int, str, bytes] | None = None) -> None:
    """Without credentials: the live path 401 with JSON (or `live`: status, type, body), the
    retired ones the Cloudflare 403 page, anything else 404."""

    async def handler(request: web.Request) -> web.StreamResponse:
        seen = await fake.record(request)
        path = seen.target.partition("?")[0]
        if path == LIVE:
            status, content_type, body = live or (
                401,
                "application/json",
                b'{"detail": "Unauthorized"}',
            )
            return web.Response(status=status, body=body, headers={"Content-Type": content_type})
        if path in RETIRED:
            headers = {"Content-Type": "text/html; charset=UTF-8", "cf-ray": "8f00fake0000-AMS"}
            return web.Response(status=403, body=CLOUDFLARE_403, headers=headers)
        return web.json_response({"detail": "Not Found"}, status=404)

    fake.handler = handler


def doctor_environ(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment (coverage follows subprocesses through it) without what
    would steer the doctor: a fake HOME, no client or proxy variables, a plain PATH."""
    steering = ("OPENCLAW_", "CODEX_", "OPENAI_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith(steering)}
    return environ | {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"} | extra
