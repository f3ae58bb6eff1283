"""The README is a user's guide whose quick start and settings table describe what the
code does; what is for other readers lives in docs/, linked from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.settings import ENV_PREFIX, FLAGS, SECTIONS, keys

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"


def test_settings_table_lists_every_key_with_its_default_variable_and_flag() -> None:
    flags = {place: flag for flag, place in FLAGS.items()}
    for section in SECTIONS:
        for key, spec in keys(section).items():
            if key == "rules":
                continue
            default = spec.default
            shown = (
                ("true" if default else "false")
                if isinstance(default, bool)
                else f'"{default}"'
                if isinstance(default, str)
                else "[]"
                if isinstance(default, tuple)
                else str(default)
            )
            flag = f"`{flags[section, key]}`" if (section, key) in flags else ""
            row = f"| `{section}.{key}` | `{shown}` | `{ENV_PREFIX}{section.upper()}_{key.upper()}` | {flag} |"
            assert row in README, row


def test_readme_opens_with_the_two_commands() -> None:
    opening = README.split("```", 2)[1]
    assert ".venv/bin/pip install . && .venv/bin/codex-path-proxy" in opening
    assert "./scripts/check" in opening


def test_readme_is_a_user_s_guide_of_about_200_lines() -> None:
    # "At most about 200": the forwarding path's module map and the doctor came since.
    assert len(README.splitlines()) <= 220
    # Benchmark verdicts and development notes are for other readers (docs/).
    for other in ("INVALID", "Targets (issue 7)", "callgrind", "scripts/e2e` installs"):
        assert other not in README, other
    for guide in ("performance.md", "reliability.md", "development.md"):
        assert f"](docs/{guide})" in README, guide


@pytest.mark.parametrize(
    "document",
    [
        "README.md",
        "docs/performance.md",
        "docs/reliability.md",
        "docs/development.md",
        "examples/README.md",
    ],
)
def test_every_relative_link_resolves(document: str) -> None:
    path = ROOT / document
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    assert links, document
    for link in links:
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = (path.parent / link.split("#")[0]).resolve()
        assert target.exists(), f"{document}: {link}"


def test_the_reliability_table_names_tests_that_exist() -> None:
    text = (DOCS / "reliability.md").read_text()
    header = "| fault or input | behaviour | tests |"
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == header
    assert len(rows) > 15
    for row in (row for row in rows if row != header):
        named = re.findall(r"`(test_\w+\.py)`", row.rsplit("|", 2)[1])
        assert named, row
        for name in named:
            assert (ROOT / "tests" / name).is_file(), name


def test_the_performance_table_is_whole() -> None:
    text = (DOCS / "performance.md").read_text()
    header = "| metric | direct | nginx | mitmproxy | proxy | base | capture | inspector |"
    assert header + " proxy ÷ nginx |" in text
    for workload in (
        "W1 c=16 req/s",
        "W2a c=16 events/s",
        "W3 body50 fast MB/s",
        "W4 RSS/stream",
        "W5 serving",
    ):
        assert f"| {workload}" in text, workload
