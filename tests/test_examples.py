"""The deployment examples agree with the settings, the Dockerfile and the running proxy."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import load_settings
from proxy.endpoints import PREFIX
from proxy.settings import ENV_PREFIX, Settings
from tests.test_docker import ROOT, Image, read_image, run_command, serving

EXAMPLES = ROOT / "examples"
PORT = Settings().listen.port
GRACE = Settings().shutdown.grace


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / "compose.yaml").read_text())
    return document


def kubernetes() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "sidecar.yaml").read_text()))


def compose_proxy() -> tuple[str, dict[str, Any]]:
    """The service built from this repository's Dockerfile: its name and definition."""
    services: dict[str, dict[str, Any]] = compose()["services"]
    (name,) = [name for name, service in services.items() if "build" in service]
    return name, services[name]


def compose_client() -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    (client,) = [service for service in services.values() if "build" not in service]
    return client


def pod() -> dict[str, Any]:
    (deployment,) = [d for d in kubernetes() if d["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def pod_proxy() -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod().get("initContainers", []) + pod()["containers"]
    (proxy,) = [c for c in containers if c["name"] == "codex-path-proxy"]
    return proxy


def pod_client() -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod()["containers"]
    (client,) = [c for c in containers if c["name"] != "codex-path-proxy"]
    return client


def pod_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def seconds(duration: str) -> float:
    """A compose duration such as "40s" or "1m30s"."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def configured(image: Image, environment: dict[str, str]) -> dict[str, str]:
    """The CODEX_PATH_PROXY_* variables a container gets: the image's, then its own."""
    merged = {**image.env, **environment}
    return {name: value for name, value in merged.items() if name.startswith(ENV_PREFIX)}


def base_url(openclaw_json: str) -> str:
    provider = json.loads(openclaw_json)["models"]["providers"]["openai-codex"]
    # OpenClaw's SSRF guard refuses a private or loopback base URL without this.
    assert provider["request"]["allowPrivateNetwork"] is True
    url: str = provider["baseUrl"]
    return url


def test_compose_builds_the_image_from_the_dockerfile(tmp_path: Path) -> None:
    _, proxy = compose_proxy()
    context = (EXAMPLES / proxy["build"]["context"]).resolve()
    assert context == ROOT.resolve()
    assert (context / proxy["build"].get("dockerfile", "Dockerfile")).is_file()
    image = read_image(tmp_path)
    assert image.healthcheck is not None
    assert proxy["healthcheck"]["test"] == ["CMD", *image.healthcheck.command.argv]
    assert seconds(proxy["stop_grace_period"]) > GRACE


def test_compose_publishes_the_port_on_the_host_s_loopback_only(tmp_path: Path) -> None:
    _, proxy = compose_proxy()
    assert proxy["ports"], "the example shows how to publish it safely"
    for mapping in proxy["ports"]:
        host, host_port, container_port = mapping.split(":")
        assert host == "127.0.0.1", "a bare HOST:CONTAINER publishes on every interface"
        assert int(container_port) == PORT
        assert read_image(tmp_path).expose == [container_port]
        assert int(host_port) == PORT


def test_compose_client_waits_for_the_proxy_and_uses_it_by_service_name() -> None:
    name, _ = compose_proxy()
    client = compose_client()
    assert client["depends_on"][name]["condition"] == "service_healthy"
    config = client["environment"]["OPENCLAW_CONFIG_PATH"]
    (source,) = [v.split(":")[0] for v in client["volumes"] if v.split(":")[1] == config]
    assert base_url((EXAMPLES / source).read_text()) == f"http://{name}:{PORT}/backend-api"


def test_kubernetes_proxy_is_a_loopback_sidecar_that_drains_on_shutdown(tmp_path: Path) -> None:
    proxy = pod_proxy()
    if proxy in pod().get("initContainers", []):
        assert proxy["restartPolicy"] == "Always", "an init container that stays: a sidecar"
    assert pod_env(proxy)["CODEX_PATH_PROXY_LISTEN_HOST"] == "127.0.0.1"
    assert "ports" not in proxy, "a loopback listener has no port to declare on the Pod"
    assert pod()["terminationGracePeriodSeconds"] > GRACE
    assert set(proxy["resources"]) == {"requests", "limits"}
    assert set(proxy["resources"]["requests"]) == {"cpu", "memory"}
    assert set(proxy["resources"]["limits"]) >= {"memory"}
    security = proxy["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == read_image(tmp_path).user


def test_kubernetes_client_reaches_the_proxy_on_the_pod_s_loopback() -> None:
    client = pod_client()
    config = Path(pod_env(client)["OPENCLAW_CONFIG_PATH"])
    (mount,) = [m for m in client["volumeMounts"] if m["mountPath"] == str(config.parent)]
    (volume,) = [v for v in pod()["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [
        d
        for d in kubernetes()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    assert base_url(config_map["data"][config.name]) == f"http://127.0.0.1:{PORT}/backend-api"


@pytest.mark.parametrize(
    "environment",
    [
        pytest.param(lambda: compose_proxy()[1].get("environment", {}), id="compose"),
        pytest.param(lambda: pod_env(pod_proxy()), id="kubernetes"),
    ],
)
def test_every_setting_in_the_examples_is_valid(
    tmp_path: Path, environment: Callable[[], dict[str, str]]
) -> None:
    variables = configured(read_image(tmp_path), environment())
    assert set(environment()) <= set(variables), "only settings in the proxy's environment"
    load_settings(config_file=None, environ=variables, flags={})  # no ConfigError


PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def test_kubernetes_probes_ask_the_proxy_s_own_endpoints() -> None:
    proxy = pod_proxy()
    for probe in PROBES:
        assert "httpGet" not in proxy[probe], "the kubelet would call the Pod IP"
    liveness = proxy["livenessProbe"]["exec"]["command"]
    readiness = proxy["readinessProbe"]["exec"]["command"]
    assert f"{PREFIX}healthz'" in liveness[-1]
    assert f"{PREFIX}readyz'" in readiness[-1]


def test_kubernetes_client_starts_only_once_the_sidecar_answers() -> None:
    # A native sidecar counts as started when its startupProbe passes; without one, as
    # soon as its process runs, before the proxy listens.
    proxy = pod_proxy()
    assert proxy in pod()["initContainers"]
    startup = proxy["startupProbe"]
    assert f"{PREFIX}readyz'" in startup["exec"]["command"][-1]
    assert startup["periodSeconds"] <= 1, "the client waits at most this long for nothing"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30, "a slow node's start"


def capture_snippets() -> list[dict[str, Any]]:
    """The YAML blocks of examples/README.md's "Capturing exchanges" section."""
    section = (EXAMPLES / "README.md").read_text().split("## Capturing exchanges", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return [yaml.safe_load(block) for block in blocks]


def test_read_only_examples_say_where_a_capture_folder_is_mounted(tmp_path: Path) -> None:
    name, proxy = compose_proxy()
    assert proxy["read_only"] is True
    assert pod_proxy()["securityContext"]["readOnlyRootFilesystem"] is True
    for text in (
        (EXAMPLES / "compose.yaml").read_text(),
        (EXAMPLES / "kubernetes" / "sidecar.yaml").read_text(),
    ):
        assert "capture folder (capture.dir) must be a mounted" in text
    compose_snippet, pod_snippet = capture_snippets()
    service = compose_snippet["services"][name]
    folder = service["environment"]["CODEX_PATH_PROXY_CAPTURE_DIR"]
    assert [v for v in service["volumes"] if v.split(":")[1] == folder], "mounted where it points"
    (sidecar,) = pod_snippet["initContainers"]
    assert sidecar["name"] == pod_proxy()["name"]
    folder = pod_env(sidecar)["CODEX_PATH_PROXY_CAPTURE_DIR"]
    (mount,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == folder]
    (volume,) = [v for v in pod_snippet["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume, "writable by the proxy's user"
    assert not {v["name"] for v in pod()["volumes"]} & {volume["name"]}, "a new volume"
    # The snippets' settings are valid for the image (the folder itself is the mount's).
    env = configured(read_image(tmp_path), {**service["environment"], **pod_env(sidecar)})
    env["CODEX_PATH_PROXY_CAPTURE_DIR"] = str(tmp_path)
    load_settings(config_file=None, environ=env, flags={})


async def test_the_probes_pass_against_the_proxy_run_as_the_pod_runs_it(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    image = read_image(tmp_path)
    proxy = pod_proxy()
    # The image's environment, the pod's on top, and the one override: a free port, which
    # the probes read as the proxy does.
    env = {**image.env, **pod_env(proxy), "CODEX_PATH_PROXY_LISTEN_PORT": str(unused_tcp_port)}
    async with serving(image.argv, env) as running:
        assert running.address == f"http://127.0.0.1:{unused_tcp_port}"
        for probe in PROBES:
            status, output = await run_command(proxy[probe]["exec"]["command"], env)
            assert status == 0, f"{probe}: {output}"
        running.process.send_signal(signal.SIGTERM)
        await running.rest()
    assert running.process.returncode == 0
