"""The image built from the repository's Dockerfile, run for real with podman as the README
says: health and readiness, a stream rewritten through it, its user, its HEALTHCHECK, its
drain on `podman stop`, a mounted config file, a bad setting, a read-only root filesystem.

scripts/container builds the image with the README's own `podman build` line, then runs
this module in a network namespace with no route off the machine: the fake chatgpt.com
listens there, and the containers reach it at host.containers.internal.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from proxy.endpoints import PREFIX
from tests.container.engine import (
    Attached,
    attached,
    checked,
    http_get,
    inspect,
    podman,
    published_port,
    readme_command,
    readme_lines,
    unique_name,
    upstream_url,
)
from tests.fake_upstream import CANONICAL, FakeUpstream, sse_event
from tests.harness import read_until_closed
from tests.test_docker import ROOT, read_image
from tests.test_process import gated_stream

pytestmark = pytest.mark.container

IMAGE = "codex-path-proxy"
STREAM_REQUEST = (
    b"POST /backend-api/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer fake-token\r\nContent-Length: 15\r\n\r\n"
    b'{"stream":true}'
)


# What the README's Docker section says podman takes: `docker run` as it is, and `docker
# build` with --format docker (the OCI format, podman's default, drops the HEALTHCHECK).
def podman_run() -> list[str]:
    return ["podman", *readme_command("run")[1:]]


def podman_build() -> list[str]:
    return ["podman", "build", "--format", "docker", *readme_command("build")[2:]]


def port() -> int:
    """The host port the README publishes the proxy on."""
    return published_port(podman_run())


def readme_run(name: str, *options: str) -> list[str]:
    """The README's `podman run` with a name and `options` before the image."""
    run = podman_run()
    assert run[-1] == IMAGE, run
    return [*run[:-1], "--name", name, *options, IMAGE]


@asynccontextmanager
async def serving(*options: str) -> AsyncIterator[Attached]:
    """The README's run line with `options`, once the proxy in it has logged "listening"."""
    name = unique_name()
    async with attached(readme_run(name, *options), name) as container:
        await container.wait_for("listening")
        yield container


@asynccontextmanager
async def open_stream() -> AsyncIterator[asyncio.StreamReader]:
    """A streamed request to the retired path on the published port, read up to its first
    event (which the fake sent before waiting: so it came through unbuffered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port())
    try:
        writer.write(STREAM_REQUEST)
        async with asyncio.timeout(30):
            head = await reader.readuntil(sse_event("response.created", {}))
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
        yield reader
    finally:
        writer.close()


async def rest_of_stream(reader: asyncio.StreamReader) -> bytes:
    """Up to the last chunk's end (the connection itself is kept alive)."""
    async with asyncio.timeout(30):
        return await reader.readuntil(b"\r\n0\r\n\r\n")


def test_the_readme_docker_section_is_what_this_suite_builds_and_runs() -> None:
    assert readme_lines() == [
        "docker build -t codex-path-proxy .   # podman: podman build --format docker (OCI drops HEALTHCHECK)",
        "docker run --rm -p 127.0.0.1:8780:8780 codex-path-proxy",
    ]
    assert podman_build() == ["podman", "build", "--format", "docker", "-t", IMAGE, "."]
    assert podman_run() == ["podman", "run", "--rm", "-p", "127.0.0.1:8780:8780", IMAGE]
    script = (ROOT / "scripts" / "container").read_text(encoding="utf-8").splitlines()
    assert shlex.join(podman_build()) in [line.strip() for line in script]


async def test_the_built_image_keeps_the_dockerfile_healthcheck_user_and_stop_signal(
    tmp_path: Path,
) -> None:
    declared = read_image(tmp_path)
    assert declared.healthcheck is not None
    built = await inspect("image", IMAGE)
    # The OCI format, podman's default, would drop the health check.
    assert built["Healthcheck"]["Test"] == ["CMD", *declared.healthcheck.command.argv]
    assert built["Config"]["User"] == declared.user == "10001:10001"
    assert built["Config"]["StopSignal"] == "SIGTERM"
    assert built["Config"]["Entrypoint"] == ["codex-path-proxy"]
    assert built["Config"]["Cmd"] == ["serve"]
    assert built["Labels"]["org.opencontainers.image.title"] == IMAGE


async def test_it_serves_health_and_readiness_as_uid_10001_warns_of_0_0_0_0_and_is_healthy(
    upstream: FakeUpstream,
) -> None:
    env = f"CODEX_PATH_PROXY_UPSTREAM_URL={upstream_url(upstream)}"
    async with serving("-e", env) as container:
        listening = container.lines[-1]
        assert listening["address"] == "http://0.0.0.0:8780"
        assert listening["upstream"] == upstream_url(upstream)
        warning = await container.wait_for(
            "listening beyond this machine: bearer tokens and conversations cross this port;"
            " anyone who can reach it can use the tokens sent through it"
        )
        assert (warning["level"], warning["host"]) == ("warning", "0.0.0.0")
        healthz = await http_get(port(), f"{PREFIX}healthz")
        readyz = await http_get(port(), f"{PREFIX}readyz")
        assert (healthz.status, json.loads(healthz.body)) == (200, {"status": "ok"})
        assert readyz.status == 200
        # PID 1 is the proxy itself, and it is not root.
        status = await checked("exec", container.name, "cat", "/proc/1/status")
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        gids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Gid:"))
        assert (uids, gids) == (["10001"] * 4, ["10001"] * 4)
        command = await checked("exec", container.name, "cat", "/proc/1/cmdline")
        argv = command.rstrip("\0").split("\0")
        assert argv[1:] == ["/opt/codex-path-proxy/bin/codex-path-proxy", "serve"]
        assert await checked("exec", container.name, "id", "-un") == "codexproxy"
        # The image's HEALTHCHECK, as the engine runs it; and the same command fails where
        # nothing listens, so its success means something.
        health = await podman("healthcheck", "run", container.name)
        assert health.returncode == 0, health
        test = json.loads(
            await checked(
                "inspect", "--format", "{{json .Config.Healthcheck.Test}}", container.name
            )
        )
        assert test[0] == "CMD"
        assert (await podman("exec", container.name, *test[1:])).returncode == 0
        elsewhere = await podman(
            "exec", "-e", "CODEX_PATH_PROXY_LISTEN_PORT=1", container.name, *test[1:]
        )
        assert elsewhere.returncode == 1
        assert "Connection refused" in elsewhere.stderr


async def test_a_stream_through_the_container_is_rewritten_and_arrives_event_by_event(
    upstream: FakeUpstream,
) -> None:
    release = gated_stream(upstream)
    env = f"CODEX_PATH_PROXY_UPSTREAM_URL={upstream_url(upstream)}"
    async with serving("-e", env) as container, open_stream() as reader:
        release.set()
        rest = await rest_of_stream(reader)
        line = await container.wait_for("request")
    assert sse_event("response.completed", {}) in rest
    assert rest.endswith(b"0\r\n\r\n")
    seen = upstream.last
    assert (seen.method, seen.target, seen.body) == ("POST", CANONICAL, b'{"stream":true}')
    assert ("Host", f"host.containers.internal:{upstream.port}") in seen.headers
    assert ("Authorization", "Bearer fake-token") in seen.headers
    assert (line["path"], line["upstream_path"]) == ("/backend-api/responses", CANONICAL)
    assert (line["rule"], line["status"], line["outcome"]) == ("legacy-responses", 200, "completed")
    assert "fake-token" not in json.dumps(container.lines)


async def test_podman_stop_drains_an_in_flight_stream_and_the_container_exits_0(
    upstream: FakeUpstream,
) -> None:
    release = gated_stream(upstream)
    env = f"CODEX_PATH_PROXY_UPSTREAM_URL={upstream_url(upstream)}"
    async with serving("-e", env) as container:
        async with open_stream() as reader:
            # As `docker stop -t` should be: longer than shutdown.grace (30 s).
            stop = asyncio.create_task(podman("stop", "--time", "40", container.name))
            draining = await container.wait_for("shutting down")
            assert draining["in_flight"] == 1
            assert not stop.done()
            release.set()
            rest = await rest_of_stream(reader)
            # And the proxy closes the connection once the stream has ended.
            assert await read_until_closed(reader, timeout=30) == b""
        stopped = await stop
        exit_code = await container.exit()
    assert stopped.returncode == 0, stopped
    assert sse_event("response.completed", {}) in rest
    assert rest.endswith(b"0\r\n\r\n")
    assert exit_code == 0
    assert container.events[-1] == "stopped"
    assert (container.lines[-1]["drained"], container.lines[-1]["cut"]) == (1, 0)


async def test_a_mounted_config_file_takes_effect(upstream: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[upstream]\nurl = "{upstream_url(upstream)}"\n\n[log]\nlevel = "debug"\n\n'
        "[[rewrite.rules]]\n"
        'name = "mounted"\nkind = "prefix"\nmatch = "/from-the-file"\ntarget = "/backend-api/codex"\n',
        encoding="utf-8",
    )
    config.chmod(0o644)  # the image's user reads it
    async with serving(
        "-v",
        f"{config}:/etc/codex-path-proxy/proxy.toml:ro",
        "-e",
        "CODEX_PATH_PROXY_CONFIG=/etc/codex-path-proxy/proxy.toml",
    ) as container:
        assert container.lines[-1]["upstream"] == upstream_url(upstream)
        assert container.lines[-1]["rules"] == 1
        version = await http_get(port(), f"{PREFIX}version")
        answer = await http_get(port(), "/from-the-file/models?x=1")
        line = await container.wait_for("request")
    about = json.loads(version.body)
    assert (about["rules"], about["upstream"]) == (["mounted"], upstream_url(upstream))
    assert answer.status == 200
    assert upstream.last.target == "/backend-api/codex/models?x=1"
    assert (line["rule"], line["upstream_path"]) == ("mounted", "/backend-api/codex/models?x=1")
    assert "debug" in {logged["level"] for logged in container.lines}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["-e", "CODEX_PATH_PROXY_LISTEN_PORT=eighty"],
            "codex-path-proxy: config error: environment CODEX_PATH_PROXY_LISTEN_PORT:"
            " listen.port: expected an integer, got 'eighty'",
        ),
        (
            ["-e", "CODEX_PATH_PROXY_CONFIG=/etc/codex-path-proxy/missing.toml"],
            "codex-path-proxy: config error: environment CODEX_PATH_PROXY_CONFIG: cannot read"
            " the config file /etc/codex-path-proxy/missing.toml: No such file or directory",
        ),
    ],
)
async def test_a_bad_setting_exits_2_with_one_line(options: list[str], message: str) -> None:
    name = unique_name()
    result = await podman(*readme_run(name, *options)[1:], timeout=60)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.output() == message


async def test_a_read_only_root_filesystem_serves_and_captures_only_to_a_mounted_volume(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    # As Docker's --read-only and Kubernetes' readOnlyRootFilesystem: not even /tmp is
    # writable (podman would mount a tmpfs there by default).
    read_only = ["--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL"]
    read_only += ["--security-opt", "no-new-privileges"]
    env = ["-e", f"CODEX_PATH_PROXY_UPSTREAM_URL={upstream_url(upstream)}"]
    refused = await podman(
        *readme_run(
            unique_name(), *read_only, *env, "-e", "CODEX_PATH_PROXY_CAPTURE_DIR=/captures"
        )[1:]
    )
    assert refused.returncode == 2, refused
    assert refused.output() == (
        "codex-path-proxy: config error: environment CODEX_PATH_PROXY_CAPTURE_DIR: capture.dir:"
        " cannot create the folder /captures: Read-only file system"
    )
    # examples/README.md, "Capturing exchanges": a folder owned by the image's user.
    captures = tmp_path / "captures"
    captures.mkdir()
    captures.chmod(0o700)
    os.chown(captures, 10001, 10001)
    async with serving(
        *read_only,
        *env,
        "-e",
        "CODEX_PATH_PROXY_CAPTURE_DIR=/captures",
        "-v",
        f"{captures}:/captures",
    ) as container:
        health = await podman("healthcheck", "run", container.name)
        answer = await http_get(port(), "/backend-api/codex/models")
        await container.wait_for("request")
        written = await podman("exec", container.name, "touch", "/opt/codex-path-proxy/x")
        tmp = await podman("exec", container.name, "touch", "/tmp/x")
    assert health.returncode == 0, health
    assert answer.status == 200
    assert "Read-only file system" in written.stderr
    assert "Read-only file system" in tmp.stderr
    (har,) = captures.iterdir()
    assert har.suffix == ".har"
    assert (har.stat().st_uid, har.stat().st_mode & 0o777) == (10001, 0o600)
    assert json.loads(har.read_text(encoding="utf-8"))["log"]["entries"]
