"""The Compose example (examples/compose.yaml) brought up with podman-compose: an
OpenClaw-like client container reads the example's own openclaw.json and streams a
request through the proxy, which it reaches by its service name.

The example's `openclaw` service names a placeholder image; an override file (written per
test) puts the client (tests/container/client.py) in it, on the Dockerfile's base image,
and points the proxy at the fake chatgpt.com. Nothing else of the example is changed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from proxy.endpoints import PREFIX
from tests.container.engine import (
    Attached,
    Result,
    checked,
    compose_command,
    http_get,
    inspect,
    podman,
    run,
    unique_name,
    upstream_url,
)
from tests.fake_upstream import CANONICAL, FakeUpstream
from tests.test_docker import DOCKERFILE, ROOT, stages

pytestmark = pytest.mark.container

EXAMPLE = ROOT / "examples" / "compose.yaml"
CLIENT = Path(__file__).parent / "client.py"
PROXY, OPENCLAW = "codex-path-proxy", "openclaw"


def base_image() -> str:
    base = stages(DOCKERFILE.read_text(encoding="utf-8"))[0].base
    return base if "/" in base else f"docker.io/library/{base}"


def override(fake: FakeUpstream) -> str:
    """JSON is YAML: the proxy pointed at the fake, the client in the placeholder's place."""
    return json.dumps(
        {
            "services": {
                PROXY: {"environment": {"CODEX_PATH_PROXY_UPSTREAM_URL": upstream_url(fake)}},
                OPENCLAW: {
                    "image": base_image(),
                    "command": ["python", "/client/client.py"],
                    "volumes": [f"{CLIENT}:/client/client.py:ro"],
                },
            }
        },
        indent=2,
    )


@asynccontextmanager
async def project(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[list[str]]:
    """podman-compose's command line for the example plus the override, under a project
    name of its own; taken down (volumes too) when the block ends."""
    extra = tmp_path / "override.yaml"
    extra.write_text(override(fake), encoding="utf-8")
    command = [compose_command(), "-p", unique_name(), "-f", str(EXAMPLE), "-f", str(extra)]
    try:
        yield command
    finally:
        await run([*command, "down", "--volumes", "--timeout", "0"])


async def container_of(command: list[str], service: str) -> str:
    name = await checked(
        "ps", "--all", "--format", "{{.Names}}",
        "--filter", f"label=io.podman.compose.project={command[2]}",
        "--filter", f"label=io.podman.compose.service={service}",
    )  # fmt: skip
    (only,) = name.splitlines()
    return only


@asynccontextmanager
async def following(name: str) -> AsyncIterator[Attached]:
    """The container's log lines as they come (`podman logs --follow`)."""
    process = await asyncio.create_subprocess_exec(
        "podman", "logs", "--follow", name,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield Attached(process, name)
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


def ok(result: Result) -> Result:
    assert result.returncode == 0, result
    return result


async def test_the_compose_example_serves_a_client_that_reaches_the_proxy_by_service_name(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with project(upstream, tmp_path) as command:
        # podman before 4.6 cannot wait for a health check, so podman-compose starts
        # `openclaw` without waiting for `condition: service_healthy`: start the proxy,
        # wait for it as Docker Compose would, then the client.
        ok(await run([*command, "up", "-d", PROXY]))
        proxy = await container_of(command, PROXY)
        async with following(proxy) as logs:
            listening = await logs.wait_for("listening")
            health = await podman("healthcheck", "run", proxy)
            published = await http_get(8780, f"{PREFIX}readyz")
            client = ok(await run([*command, "run", "--rm", "--no-deps", OPENCLAW], timeout=120))
            line = await logs.wait_for("request")
            settings = await inspect("container", proxy)
            ok(await run([*command, "stop", PROXY], timeout=60))
            exit_code = await checked("inspect", "--format", "{{.State.ExitCode}}", proxy)
            await asyncio.wait_for(logs.exit(), 30)
    assert listening["address"] == "http://0.0.0.0:8780"
    assert health.returncode == 0, health
    assert published.status == 200
    # The client took the base URL from the example's openclaw.json: the service name.
    assert client.stdout.splitlines() == [
        "base_url http://codex-path-proxy:8780/backend-api",
        "status 200 text/event-stream; charset=utf-8",
        "event response.created",
        "event response.output_item.done",
        "event response.completed",
    ]
    seen = upstream.last
    assert (seen.method, seen.target) == ("POST", CANONICAL)
    assert ("Host", f"host.containers.internal:{upstream.port}") in seen.headers
    assert ("Chatgpt-Account-Id", "fake-account") in seen.headers
    assert (line["path"], line["upstream_path"], line["rule"]) == (
        "/backend-api/responses",
        CANONICAL,
        "legacy-responses",
    )
    # What the example asks of the engine, as podman-compose passed it on.
    assert settings["HostConfig"]["ReadonlyRootfs"] is True
    assert "CAP_NET_BIND_SERVICE" in settings["HostConfig"]["CapDrop"]
    assert settings["Config"]["User"] == "10001:10001"
    assert exit_code == "0"
    assert logs.events[-1] == "stopped"
