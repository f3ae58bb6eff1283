"""The README's quick start and settings table describe what the code does."""

from __future__ import annotations

from pathlib import Path

from proxy.settings import ENV_PREFIX, FLAGS, SECTIONS, keys

README = (Path(__file__).parent.parent / "README.md").read_text()


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
