"""`codex-path-proxy doctor` as the real command: exit codes, the printed checklist, --json,
and --fix round trips that change the named keys and leave every other byte as it was."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.doctor.findings import Edit, Format
from proxy.doctor.fix import apply_all
from tests.doctor_homes import (
    ACCOUNT,
    CHATGPT,
    TOKEN,
    answer_like_chatgpt,
    codex_home,
    doctor_environ,
    openclaw_config,
    openclaw_home,
    write,
)
from tests.e2e import openclaw
from tests.fake_upstream import FakeUpstream
from tests.harness import RunningProxy, StartProxy
from tests.proc import run_cli

# OpenClaw's config as a person keeps it: JSON5 with comments, unquoted keys, single quotes.
HAND_WRITTEN = """\
// ~/.openclaw/openclaw.json
{
  update: { checkOnStart: false },   // quiet
  models: {
    providers: {
      /* ChatGPT sign-in */
      'openai-codex': {
        baseUrl: 'https://chatgpt.com/backend-api',
        models: [],
      },
    },
  },
  auth: { profiles: { 'openai-codex:me@example.com': { provider: 'openai-codex', mode: 'oauth' } } },
  agents: { defaults: { mediaGenerationAutoProviderFallback: false } },
}
"""

CODEX = """\
# ~/.codex/config.toml
model = "gpt-5.4"
openai_base_url = "https://chatgpt.com/backend-api"  # legacy form

[profiles.fast]
model = "gpt-5.4-mini"
"""


@pytest.fixture
async def proxy(start_proxy: StartProxy, fake: FakeUpstream) -> RunningProxy:
    answer_like_chatgpt(fake)
    return await start_proxy()


def flags(proxy: RunningProxy, fake: FakeUpstream) -> list[str]:
    return ["--port", str(proxy.port), "--upstream", fake.url]


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    old, new = before.splitlines(), after.splitlines()
    return [line for line in old if line not in new], [line for line in new if line not in old]


@pytest.mark.parametrize("shape", ["e2e", "hand-written"])
async def test_fix_round_trip_changes_the_named_keys_and_nothing_else(
    tmp_path: Path, proxy: RunningProxy, fake: FakeUpstream, shape: str
) -> None:
    home = tmp_path / "home"
    base = f"http://127.0.0.1:{proxy.port}/backend-api"
    if shape == "e2e":
        config = openclaw_config(openclaw.OLD, CHATGPT, private_network=False)
        claw = openclaw_home(home, config)
    else:
        claw = openclaw_home(home, HAND_WRITTEN)
    claw.chmod(0o600)
    codex = codex_home(home, CODEX) / "config.toml"
    originals = {claw: claw.read_bytes(), codex: codex.read_bytes()}
    environ = doctor_environ(home)

    code, out, err = await run_cli("doctor", *flags(proxy, fake), environ=environ)
    assert (code, err) == (1, "")
    assert out.endswith(
        "3 problems. `codex-path-proxy doctor --fix` makes the 3 config edits named above, "
        "after a backup of each file.\n"
    )
    assert f'models.providers.openai-codex.baseUrl = "{CHATGPT}": ' in out
    assert {path: path.read_bytes() for path in originals} == originals  # read-only

    code, out, err = await run_cli("doctor", "--fix", *flags(proxy, fake), environ=environ)
    assert (code, err) == (0, ""), out
    backups = {path: next(path.parent.glob(f"{path.name}.bak-*")) for path in originals}
    assert out.startswith(
        f"Edited {claw} (backup: {backups[claw]}):\n"
        f'  set models.providers.openai-codex.baseUrl = "{base}"\n'
        "  set models.providers.openai-codex.request.allowPrivateNetwork = true\n"
        f"Edited {codex} (backup: {backups[codex]}):\n"
        f'  set openai_base_url = "{base}"\n\nAfter the edits:\n'
    )
    assert out.endswith("\nNothing is wrong.\n")
    for path, original in originals.items():
        assert backups[path].read_bytes() == original
        assert stat.S_IMODE(backups[path].stat().st_mode) == stat.S_IMODE(path.stat().st_mode)
    assert stat.S_IMODE(claw.stat().st_mode) == 0o600

    removed, added = changed_lines(originals[claw].decode(), claw.read_text())
    assert [line.strip() for line in removed] == [
        line.strip() for line in originals[claw].decode().splitlines() if "baseUrl" in line
    ]
    assert [line.strip() for line in added] == [
        '"request": {',
        '"allowPrivateNetwork": true',
        "},",
        f'{"baseUrl" if shape == "hand-written" else json.dumps("baseUrl")}: "{base}",',
    ]
    assert codex.read_text() == CODEX.replace(f'"{CHATGPT}"', f'"{base}"')

    code, out, _ = await run_cli("doctor", *flags(proxy, fake), environ=environ)
    assert code == 0
    assert out.endswith("\nNothing is wrong.\n")


async def test_fix_sets_a_key_inside_a_codex_profile_and_nothing_else(
    tmp_path: Path, proxy: RunningProxy, fake: FakeUpstream
) -> None:
    home = tmp_path / "home"
    base = f"http://127.0.0.1:{proxy.port}/backend-api"
    text = (
        f'openai_base_url = "{base}"\n\n'
        "[profiles.'my work']  # the one at the office\n"
        "chatgpt_base_url = 'https://chatgpt.com/'  # wrong\n"
        'model = "gpt-5.4"\n'
    )
    codex = codex_home(home, text) / "config.toml"
    code, out, err = await run_cli(
        "doctor", "--fix", *flags(proxy, fake), environ=doctor_environ(home)
    )
    assert (code, err) == (0, ""), out
    assert f'  set profiles."my work".chatgpt_base_url = "{base}/"\n' in out
    assert codex.read_text() == text.replace("'https://chatgpt.com/'", f"'{base}/'")


async def test_fix_leaves_a_file_it_cannot_edit_safely_and_prints_the_edit(
    tmp_path: Path, proxy: RunningProxy, fake: FakeUpstream
) -> None:
    home = tmp_path / "home"
    text = HAND_WRITTEN.replace(
        "      'openai-codex': {", "      'openai-codex': {},\n      'openai-codex': {"
    )
    claw = openclaw_home(home, text)
    code, out, _ = await run_cli(
        "doctor", "--fix", *flags(proxy, fake), environ=doctor_environ(home)
    )
    assert code == 1
    assert out.startswith(
        f"Left {claw} as it was (models.providers.openai-codex appears more than once); "
        "edit it yourself:\n"
        f'  set models.providers.openai-codex.baseUrl = "http://127.0.0.1:{proxy.port}/backend-api"\n'
    )
    assert claw.read_text() == text
    assert list(claw.parent.glob("*.bak-*")) == []


async def test_fix_edits_a_symlinked_config_where_it_lives(
    tmp_path: Path, proxy: RunningProxy, fake: FakeUpstream
) -> None:
    home = tmp_path / "home"
    real = write(tmp_path / "dotfiles" / "openclaw.json", HAND_WRITTEN)
    (home / ".openclaw").mkdir(parents=True)
    (home / ".openclaw" / "openclaw.json").symlink_to(real)
    code, _, _ = await run_cli("doctor", "--fix", *flags(proxy, fake), environ=doctor_environ(home))
    assert code == 0
    assert (home / ".openclaw" / "openclaw.json").is_symlink()
    assert "allowPrivateNetwork: true" not in HAND_WRITTEN
    assert '"allowPrivateNetwork": true' in real.read_text()
    assert len(list(real.parent.glob("openclaw.json.bak-*"))) == 1


async def test_json_report_and_no_secret_in_any_output(
    tmp_path: Path, proxy: RunningProxy, fake: FakeUpstream
) -> None:
    home = tmp_path / "home"
    openclaw_home(home, openclaw_config(openclaw.OLD, CHATGPT))
    codex_home(home, CODEX)
    environ = doctor_environ(home, HTTP_PROXY="http://me:pr0xy-pa55@proxy.corp:3128")
    outputs = []
    for extra in ([], ["--json"], ["--json", "--fix"]):
        code, out, err = await run_cli("doctor", *extra, *flags(proxy, fake), environ=environ)
        assert code == 1
        outputs.append(out + err)
    report = json.loads(outputs[1])
    assert report["ok"] is False
    assert {check["area"] for check in report["checks"]} == {
        "This proxy",
        "OpenClaw",
        "Codex CLI",
        "Environment",
        "The way out",
    }
    url = next(c for c in report["checks"] if c["where"].endswith("openai-codex.baseUrl"))
    assert url["status"] == "problem"
    assert url["edits"] == [
        {
            "file": str(home / ".openclaw" / "openclaw.json"),
            "key": ["models", "providers", "openai-codex", "baseUrl"],
            "value": f"http://127.0.0.1:{proxy.port}/backend-api",
        }
    ]
    fixed = json.loads(outputs[2])
    assert [bool(f["backup"]) for f in fixed["fixes"]] == [True, True]
    assert [c["where"] for c in fixed["checks"] if c["status"] == "problem"] == ["HTTP_PROXY"]
    for output in outputs:
        for secret in (TOKEN, TOKEN.split(".")[1], ACCOUNT, "pr0xy-pa55"):
            assert secret not in output


async def test_a_settings_error_is_exit_2(tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "doctor", "--upstream", "ftp://x", environ=doctor_environ(tmp_path)
    )
    assert (code, out) == (2, "")
    assert err == (
        "codex-path-proxy: config error: flag --upstream: upstream.url: "
        "must be an http:// or https:// URL, got 'ftp://x'\n"
    )


def test_fix_on_a_read_only_file_system_leaves_the_file_and_prints_the_edit(
    tmp_path: Path,
) -> None:
    """The config on a read-only mount (a mount namespace of the test's own): no backup can
    be written, so nothing is, and the edit is printed for a human."""
    home = tmp_path / "home"
    claw = openclaw_home(home, HAND_WRITTEN)
    folder = claw.parent
    command = (
        f"mount --bind -o ro '{folder}' '{folder}' && exec {sys.executable} -m proxy doctor "
        "--fix --upstream http://127.0.0.1:9 --port 9"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        env=doctor_environ(home),
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(
        f"Left {claw} as it was (Read-only file system); edit it yourself:\n"
        '  set models.providers.openai-codex.baseUrl = "http://127.0.0.1:9/backend-api"\n'
        "  set models.providers.openai-codex.request.allowPrivateNetwork = true\n"
    )
    assert claw.read_text() == HAND_WRITTEN
    assert sorted(p.name for p in folder.iterdir()) == ["openclaw.json"]


@pytest.mark.parametrize(
    ("make", "refused"),
    [
        (lambda path: path.mkdir(), "Is a directory"),
        (lambda path: path.write_bytes(b'{"a": "\xff"}'), "not UTF-8 text"),
        (lambda path: None, "No such file or directory"),
    ],
)
def test_fix_refuses_a_file_it_cannot_read(
    tmp_path: Path, make: Callable[[Path], object], refused: str
) -> None:
    path = tmp_path / "openclaw.json"
    make(path)
    edit = Edit(file=str(path), format=Format.JSON5, key=("a",), value=1)
    (outcome,) = apply_all([edit], stamp="20270115T080000Z")
    assert (outcome.refused, outcome.backup) == (refused, "")


def test_fix_twice_in_one_second_keeps_both_backups(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "# mine\n")
    stamp = "20270115T080000Z"
    for value in ("http://127.0.0.1:1/backend-api", "http://127.0.0.1:2/backend-api"):
        edit = Edit(file=str(path), format=Format.TOML, key=("openai_base_url",), value=value)
        apply_all([edit], stamp=stamp)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.toml",
        f"config.toml.bak-{stamp}",
        f"config.toml.bak-{stamp}-1",
    ]
    assert (tmp_path / f"config.toml.bak-{stamp}").read_text() == "# mine\n"
    assert path.read_text() == '# mine\nopenai_base_url = "http://127.0.0.1:2/backend-api"\n'


async def test_fix_with_nothing_to_edit_only_checks(
    tmp_path: Path, proxy: RunningProxy, fake: FakeUpstream
) -> None:
    code, out, _ = await run_cli(
        "doctor", "--fix", *flags(proxy, fake), environ=doctor_environ(tmp_path)
    )
    assert code == 0
    assert out.startswith("This proxy\n")
    assert out.endswith("\nNothing is wrong.\n")


def test_fix_keeps_the_owner_of_a_file_edited_as_root(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.fail(
            "this test needs root (as scripts/check and CI have), to own a file as another user"
        )
    path = write(tmp_path / "openclaw.json", HAND_WRITTEN)
    os.chown(path, 65534, 65534)
    path.chmod(0o640)
    edit = Edit(file=str(path), format=Format.JSON5, key=("update", "checkOnStart"), value=True)
    (outcome,) = apply_all([edit], stamp="20270115T080000Z")
    assert outcome.refused == ""
    status = path.stat()
    assert (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) == (65534, 65534, 0o640)
    backup = Path(outcome.backup).stat()
    assert (backup.st_uid, backup.st_gid, stat.S_IMODE(backup.st_mode)) == (65534, 65534, 0o640)
    assert "checkOnStart: true" in path.read_text()
