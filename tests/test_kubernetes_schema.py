"""The Kubernetes example validated against the Kubernetes API's own schemas.

kubernetes-validate (PyPI) ships the JSON schemas of each Kubernetes release and checks
offline; strict, an unknown key (a typo) fails, as `kubectl apply --validate=strict` would.
kubeconform, the usual choice, is served by none of the registries these machines reach, and
it downloads its schemas at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

SIDECAR = Path(__file__).parent.parent / "examples" / "kubernetes" / "sidecar.yaml"
# Native sidecars (an init container with restartPolicy: Always) are on by default from
# 1.29; the newest release whose schemas the validator ships.
VERSIONS = ["1.29.0", "1.37.0"]


def validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("kubernetes-validate", path=f"{scripts}{os.pathsep}{os.defpath}")
    assert found, "kubernetes-validate is not installed (the test extra has it)"
    return subprocess.run(
        [found, "--strict", "--kubernetes-version", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_the_sidecar_example_is_valid_for_kubernetes(version: str) -> None:
    result = validate(SIDECAR, version)
    assert result.returncode == 0, result.stdout + result.stderr
    minor = version.rsplit(".", 1)[0]
    assert result.stdout.splitlines() == [
        f"INFO {SIDECAR} passed for resource {resource} against version {minor}"
        for resource in ("configmap/openclaw-config", "deployment/openclaw")
    ]


def test_a_misspelt_key_in_it_would_fail(tmp_path: Path) -> None:
    text = SIDECAR.read_text(encoding="utf-8")
    assert "readOnlyRootFilesystem: true" in text
    misspelt = tmp_path / "sidecar.yaml"
    misspelt.write_text(text.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    result = validate(misspelt, VERSIONS[0])
    assert result.returncode == 1
    assert (
        "did not validate for resource deployment/openclaw against version 1.29: "
        "spec.template.spec.initContainers.0.securityContext: Additional properties are not "
        "allowed ('readOnlyRootFileSystem' was unexpected)"
    ) in result.stdout
