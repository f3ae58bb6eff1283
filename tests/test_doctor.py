"""`doctor` on fake homes: OpenClaw 2026.4.23 and 2026.9.6, Codex CLI, nothing set up,
broken and unreadable files, the environment, and a proxy listening or not. The fake
chatgpt.com on 127.0.0.1 is the upstream; this proxy runs in the test's own loop."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy import __version__
from proxy.config import load_settings
from proxy.doctor import environment, render
from proxy.doctor.baseurl import Places
from proxy.doctor.findings import Finding, Status
from proxy.doctor.listener import url
from proxy.doctor.run import examine
from proxy.redact import marker
from proxy.settings import ListenSection, UpstreamSection
from tests.doctor_homes import (
    ACCOUNT,
    CHATGPT,
    NOW,
    TOKEN,
    answer_like_chatgpt,
    codex_home,
    inputs,
    jwt,
    line,
    openclaw_config,
    openclaw_home,
    problems,
    run_doctor,
    write,
)
from tests.e2e import openclaw
from tests.fake_upstream import FakeUpstream
from tests.harness import StartProxy

OLD, LATEST = openclaw.OLD, openclaw.LATEST
PROVIDER_OLD = "models.providers.openai-codex"


@dataclass
class World:
    """A fake home, the fake chatgpt.com and this proxy in front of it."""

    home: Path
    fake: FakeUpstream
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"{self.origin}/backend-api"

    async def doctor(self, **options: Any) -> list[Finding]:
        return await run_doctor(self.home, self.fake.url, options.pop("port", self.port), **options)


@pytest.fixture
async def world(tmp_path: Path, start_proxy: StartProxy, fake: FakeUpstream) -> World:
    answer_like_chatgpt(fake)
    proxy = await start_proxy()
    assert proxy.port is not None
    return World(tmp_path / "home", fake, proxy.port)


async def test_openclaw_2026_4_23_pointed_at_chatgpt_names_both_fixes(world: World) -> None:
    path = openclaw_home(world.home, openclaw_config(OLD, CHATGPT, private_network=False))
    found = await world.doctor()
    url = line(found, f"{PROVIDER_OLD}.baseUrl")
    assert url.status is Status.PROBLEM
    assert url.where == f"{path} {PROVIDER_OLD}.baseUrl"
    assert url.says == (
        f'= "{CHATGPT}": the upstream\'s retired alias; OpenClaw before 2026.4.25 posts '
        f"images to {CHATGPT}/responses, which answers 403"
    )
    assert url.fix == f'set it to "{world.base}"'
    assert [(e.key, e.value) for e in url.edits] == [
        (("models", "providers", "openai-codex", "baseUrl"), world.base)
    ]
    private = line(found, f"{PROVIDER_OLD}.request.allowPrivateNetwork")
    assert private.status is Status.PROBLEM
    assert private.says.startswith("not set: OpenClaw's SSRF guard refuses a loopback base URL")
    assert [(e.key, e.value) for e in private.edits] == [
        (("models", "providers", "openai-codex", "request", "allowPrivateNetwork"), True)
    ]
    assert line(found, "image generation").status is Status.OK
    assert len(problems(found)) == 2, problems(found)


async def test_openclaw_2026_4_23_through_the_proxy_has_nothing_wrong(world: World) -> None:
    openclaw_home(world.home, openclaw_config(OLD, world.base))
    found = await world.doctor()
    assert problems(found) == []
    assert line(found, f"{PROVIDER_OLD}.baseUrl").says == f'= "{world.base}": through this proxy'
    assert line(found, "allowPrivateNetwork").status is Status.OK
    assert line(found, "image generation").says == (
        "no silent fallback: a failed image shows as an error"
    )


async def test_openclaw_2026_4_without_a_provider_entry_gets_one(world: World) -> None:
    """Signed in (auth profile) but no models.providers entry: the built-in base."""
    openclaw_home(world.home, openclaw_config(OLD, None))
    found = await world.doctor()
    url = line(found, f"{PROVIDER_OLD}.baseUrl")
    assert url.says.startswith(f"not set: OpenClaw's built-in {CHATGPT}: the upstream's retired")
    entry = {"baseUrl": world.base, "models": [], "request": {"allowPrivateNetwork": True}}
    assert url.fix == f"add {PROVIDER_OLD} = {json.dumps(entry)}"
    assert [(e.key, e.value) for e in url.edits] == [
        (("models", "providers", "openai-codex"), entry)
    ]
    assert problems(found) == [f"{url.where}: {url.says}"]


@pytest.mark.parametrize(
    ("config_base", "status", "says"),
    [
        # 2026.9 finds the live path itself for a chatgpt.com base.
        (
            CHATGPT,
            Status.OK,
            "OpenClaw turns it into the live path itself (not through this proxy)",
        ),
        # ...but not for any other host: the fake chatgpt.com (upstream.url) here.
        ("{fake}/backend-api", Status.PROBLEM, "the upstream's retired alias; OpenClaw before"),
        ("{proxy}/backend-api", Status.OK, "through this proxy"),
        ("{proxy}/v1", Status.PROBLEM, "this proxy, with the wrong path"),
        (
            "https://chatgpt.com/backend-api/codex",
            Status.PROBLEM,
            "the upstream's live path, bypassing",
        ),
        ("http://127.0.0.1:1/backend-api", Status.PROBLEM, "a loopback address where this proxy"),
        (
            "https://gateway.example/backend-api",
            Status.INFO,
            "another host, not this proxy; not checked",
        ),
        ("${OPENAI_GATEWAY}", Status.INFO, "taken from an environment variable; not checked"),
        ("not a url", Status.PROBLEM, "not an http(s) URL"),
    ],
)
async def test_openclaw_2026_9_6_base_urls(
    world: World, config_base: str, status: Status, says: str
) -> None:
    value = config_base.replace("{fake}", world.fake.url)
    value = value.replace("{proxy}", world.origin)
    openclaw_home(world.home, openclaw_config(LATEST, value))
    found = await world.doctor()
    url = line(found, "models.providers.openai.baseUrl")
    assert url.status is status
    assert url.says.startswith(f"= {json.dumps(value)}: {says}")
    fallback = line(found, "image generation")
    assert fallback.status is Status.INFO
    assert fallback.says.startswith(
        "OpenClaw 2026.9 always tries other providers you have keys for"
    )


async def test_openclaw_version_on_path_decides_whether_chatgpt_needs_the_proxy(
    world: World, tmp_path: Path
) -> None:
    """The openclaw on PATH is found by the package.json beside the script it links to."""
    for version, status in (("2026.4.23", Status.PROBLEM), ("2026.4.25", Status.OK)):
        package = tmp_path / version / "node_modules" / "openclaw"
        write(package / "package.json", json.dumps({"name": "openclaw", "version": version}))
        write(package / "openclaw.mjs", "#!/usr/bin/env node\n").chmod(0o755)
        bin_dir = tmp_path / version / "node_modules" / ".bin"
        bin_dir.mkdir()
        (bin_dir / "openclaw").symlink_to(package / "openclaw.mjs")
        openclaw_home(world.home, openclaw_config(OLD, CHATGPT))
        found = await world.doctor(environ={"PATH": str(bin_dir)})
        assert line(found, f"{PROVIDER_OLD}.baseUrl").status is status
        assert line(found, "openclaw").says.startswith(f"{version} ({package}): ")


async def test_openclaw_version_from_the_config_when_not_on_path(world: World) -> None:
    config = openclaw_config(OLD, CHATGPT) | {"meta": {"lastTouchedVersion": "2026.4.23"}}
    openclaw_home(world.home, config)
    found = await world.doctor()
    assert line(found, "openclaw").says.startswith(
        "2026.4.23 (last written by it, meta.lastTouchedVersion): builds the retired"
    )
    assert "OpenClaw 2026.4.23 posts images to" in line(found, "baseUrl").says


async def test_openclaw_config_location_follows_its_variables(world: World, tmp_path: Path) -> None:
    elsewhere = openclaw_home(tmp_path / "state", openclaw_config(OLD, CHATGPT))
    for environ in (
        {"OPENCLAW_CONFIG_PATH": str(elsewhere)},
        {"OPENCLAW_STATE_DIR": str(elsewhere.parent)},
    ):
        found = await world.doctor(environ=environ)
        assert line(found, "baseUrl").where.startswith(f"{elsewhere} ")
    moved = openclaw_home(world.home / "x", openclaw_config(OLD, CHATGPT))
    found = await world.doctor(environ={"OPENCLAW_CONFIG_PATH": "~/x/.openclaw/openclaw.json"})
    assert line(found, "baseUrl").where.startswith(f"{moved} ")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '{\n  "models": {\n    "providers" {}\n  }\n}\n',
            "not valid JSON5 at line 3, column 17: expected ':'",
        ),
        ("[]", "the top level is not an object"),
    ],
)
async def test_openclaw_broken_config_is_named_with_where_to_look(
    world: World, text: str, says: str
) -> None:
    path = openclaw_home(world.home, text)
    found = await world.doctor()
    broken = line(found, str(path))
    assert (broken.status, broken.says, broken.edits) == (Status.PROBLEM, says, ())
    assert broken.fix.startswith("correct it there")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.mkdir(parents=True), "cannot be read: it is a directory"),
        (
            lambda p: write(p, "").write_bytes(b'{"a": "\xff"}'),
            "cannot be read: not UTF-8 text (byte 7)",
        ),
    ],
)
async def test_openclaw_unreadable_config(world: World, make: object, says: str) -> None:
    path = world.home / ".openclaw" / "openclaw.json"
    make(path)  # type: ignore[operator]
    found = await world.doctor()
    unreadable = line(found, str(path))
    assert (unreadable.status, unreadable.says) == (Status.PROBLEM, says)
    assert unreadable.fix == f"make {path} a readable UTF-8 file (OpenClaw cannot read it either)"


async def test_openclaw_config_without_a_chatgpt_sign_in_has_nothing_to_check(world: World) -> None:
    path = openclaw_home(
        world.home,
        '{"models": {"providers": {"openai": {"baseUrl": "https://api.openai.com/v1"}}}}',
    )
    found = await world.doctor()
    assert line(found, str(path)).status is Status.INFO
    assert problems(found) == []


async def test_openclaw_provider_that_is_not_an_object(world: World) -> None:
    openclaw_home(world.home, '{"models": {"providers": {"openai-codex": "chatgpt"}}}')
    found = await world.doctor()
    assert line(found, "baseUrl").fix == f"make {PROVIDER_OLD} an object by hand"


async def test_nothing_set_up_is_nothing_wrong(world: World) -> None:
    found = await world.doctor()
    assert problems(found) == []
    assert line(found, "openclaw.json").says == "no config"
    assert line(found, ".codex").says == "not set up here (no config.toml, no auth.json)"
    assert line(found, "openclaw").says == "no npm-installed openclaw on PATH"


@pytest.mark.parametrize(
    ("config", "status", "says"),
    [
        (
            None,
            Status.OK,
            "not set: Codex uses its built-in https://chatgpt.com/backend-api/codex, the live path",
        ),
        (
            'openai_base_url = "https://chatgpt.com/backend-api"\n',
            Status.PROBLEM,
            "the upstream's retired alias; Codex posts to its /responses, which answers 403",
        ),
        (
            'openai_base_url = "https://chatgpt.com/backend-api/codex"\n',
            Status.OK,
            "the upstream's live path, bypassing this proxy",
        ),
        ('openai_base_url = "{proxy}/backend-api"\n', Status.OK, "through this proxy"),
        (
            'openai_base_url = "{proxy}/backend-api/codex"\n',
            Status.PROBLEM,
            "(with the /codex form Codex insists on HTTPS for the workspace origin)",
        ),
        (
            'openai_base_url = "https://api.openai.com/v1"\n',
            Status.INFO,
            "another host, not this proxy; not checked",
        ),
        ("openai_base_url = 8780\n", Status.PROBLEM, "not an http(s) URL"),
    ],
)
async def test_codex_openai_base_url(
    world: World, config: str | None, status: Status, says: str
) -> None:
    text = None if config is None else config.replace("{proxy}", world.origin)
    folder = codex_home(world.home, "" if text is None else text)
    found = await world.doctor()
    url = line(found, "openai_base_url")
    assert url.where == f"{folder / 'config.toml'} openai_base_url"
    assert url.status is status
    assert url.says.endswith(says)
    if status is Status.PROBLEM:
        assert url.fix == f'set it to "{world.base}"'
        assert [(e.file, e.key, e.value) for e in url.edits] == [
            (str(folder / "config.toml"), ("openai_base_url",), world.base)
        ]


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("https://chatgpt.com/backend-api/", Status.OK),
        ("{proxy}/backend-api/", Status.OK),
        ("https://chatgpt.com/", Status.PROBLEM),
        ("http://127.0.0.1:1/backend-api/", Status.PROBLEM),
        ("https://chatgpt.example/backend-api/", Status.INFO),
    ],
)
async def test_codex_chatgpt_base_url(world: World, value: str, status: Status) -> None:
    value = value.replace("{proxy}", world.origin)
    codex_home(world.home, f'chatgpt_base_url = "{value}"\n')
    found = await world.doctor()
    assert line(found, "chatgpt_base_url").status is status
    if status is Status.PROBLEM:
        assert line(found, "chatgpt_base_url").edits[0].value == world.base + "/"


async def test_codex_profiles_chatgpt_base_url_is_checked_and_openai_base_url_named_ignored(
    world: World,
) -> None:
    """Codex's profiles (codex-rs/config/src/profile_toml.rs) override chatgpt_base_url
    but have no openai_base_url: the doctor checks the one and says the other is ignored."""
    folder = codex_home(
        world.home,
        f'openai_base_url = "{world.base}"\nprofile = "work"\n\n'
        "[profiles.work]\n"
        'openai_base_url = "https://chatgpt.com/backend-api"\n'
        'chatgpt_base_url = "https://chatgpt.com/"\n\n'
        "[profiles.'my home']\n"
        f'chatgpt_base_url = "{world.origin}/backend-api/"\n',
    )
    config = str(folder / "config.toml")
    found = await world.doctor()
    ignored = line(found, "profiles.work.openai_base_url")
    assert (ignored.where, ignored.status, ignored.edits) == (
        f"{config} profiles.work.openai_base_url",
        Status.INFO,
        (),
    )
    assert ignored.says == (
        '= "https://chatgpt.com/backend-api": ignored: Codex reads openai_base_url only at the '
        "top level (a profile may set chatgpt_base_url); to use it, set the top-level "
        "openai_base_url"
    )
    wrong = line(found, "profiles.work.chatgpt_base_url")
    assert wrong.status is Status.PROBLEM
    assert [(e.file, e.key, e.value) for e in wrong.edits] == [
        (config, ("profiles", "work", "chatgpt_base_url"), world.base + "/")
    ]
    mine = line(found, 'profiles."my home".chatgpt_base_url')
    assert (mine.status, mine.says) == (
        Status.OK,
        f'= "{world.origin}/backend-api/": the ChatGPT backend through this proxy',
    )
    assert line(found, f"{config} openai_base_url").status is Status.OK


async def test_codex_sign_in_never_shows_the_token_or_the_account(world: World) -> None:
    folder = codex_home(world.home, None)
    found = await world.doctor()
    auth = line(found, "auth.json")
    assert auth.where == str(folder / "auth.json")
    assert (auth.status, auth.says) == (
        Status.OK,
        f"ChatGPT sign-in: access token {marker(TOKEN)}, account {marker(ACCOUNT)}, "
        "valid until 2027-01-24 08:00 UTC",
    )
    text = repr(found)
    assert TOKEN not in text
    assert ACCOUNT not in text
    assert TOKEN.split(".")[1] not in text


def auth_json(token: str) -> str:
    return json.dumps({"auth_mode": "chatgpt", "tokens": {"access_token": token}})


@pytest.mark.parametrize(
    ("auth", "status", "says"),
    [
        (auth_json(jwt(NOW - 3600)), Status.PROBLEM, "expired 2027-01-15 07:00 UTC"),
        (auth_json("not-a-jwt"), Status.PROBLEM, "the access token is missing or not a JWT"),
        (auth_json("a.!!!.c"), Status.PROBLEM, "the access token is missing or not a JWT"),
        ('{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x"}', Status.INFO, "API-key sign-in"),
        ('{"tokens": ', Status.PROBLEM, "not valid JSON at line 1"),
        (None, Status.INFO, "no auth.json: Codex is signed in elsewhere (keyring) or not at all"),
    ],
)
async def test_codex_auth_states(world: World, auth: str | None, status: Status, says: str) -> None:
    folder = codex_home(world.home, "", token=None)
    if auth is not None:
        write(folder / "auth.json", auth)
    found = await world.doctor()
    line_ = line(found, "auth.json")
    assert line_.status is status
    assert says in line_.says
    if status is Status.PROBLEM:
        assert line_.fix.startswith("run `codex login`")


async def test_codex_broken_and_unreadable_files(world: World) -> None:
    folder = codex_home(world.home, "openai_base_url = \n")
    (folder / "auth.json").unlink()
    (folder / "auth.json").mkdir()
    found = await world.doctor()
    assert line(found, "config.toml").says == "not valid TOML: Invalid value (at line 1, column 19)"
    assert line(found, "auth.json").says == "cannot be read: it is a directory"
    write(folder / "config.toml", "").write_bytes(b"x = '\xfe'\n")
    found = await world.doctor(environ={"CODEX_HOME": str(folder)})
    assert line(found, "config.toml").says == "cannot be read: not UTF-8 text (byte 5)"


@pytest.mark.parametrize(
    ("value", "status", "says"),
    [
        (
            "https://chatgpt.com/backend-api",
            Status.PROBLEM,
            "the OpenAI SDKs post to its /responses, which answers 403",
        ),
        ("{proxy}/backend-api", Status.OK, "through this proxy"),
        ("https://api.openai.com/v1", Status.INFO, "not this proxy; not checked"),
        ("{proxy}/v1", Status.PROBLEM, "this proxy, with the wrong path"),
    ],
)
async def test_openai_base_url_variable(
    world: World, value: str, status: Status, says: str
) -> None:
    value = value.replace("{proxy}", world.origin)
    found = await world.doctor(environ={"OPENAI_BASE_URL": value})
    variable = line(found, "OPENAI_BASE_URL")
    assert (variable.status, variable.says.endswith(says)) == (status, True)
    if status is Status.PROBLEM:
        assert variable.fix == f"export OPENAI_BASE_URL={world.base} where your shell sets it"


async def test_http_proxy_variable_without_no_proxy_sends_clients_around(world: World) -> None:
    corporate = {"HTTP_PROXY": "http://user:pa55word@proxy.corp:3128"}
    found = await world.doctor(environ=corporate)
    variable = found[[f.where for f in found].index("HTTP_PROXY")]
    assert variable.status is Status.PROBLEM
    assert variable.says.startswith('= "http://user:[redacted]@proxy.corp:3128": clients that')
    assert "pa55word" not in repr(found)
    assert (
        variable.fix
        == "add 127.0.0.1,localhost to NO_PROXY (and no_proxy) where your shell sets them"
    )
    found = await world.doctor(environ=corporate | {"NO_PROXY": "localhost,127.0.0.1"})
    assert line(found, "HTTP_PROXY, NO_PROXY").says == (
        f"the clients reach http://127.0.0.1:{world.port} directly (NO_PROXY covers it)"
    )


@pytest.mark.parametrize(
    ("upstream", "environ", "wheres"),
    [
        (
            UpstreamSection(),
            {"HTTPS_PROXY": "http://proxy.corp:3128"},
            ["OPENAI_BASE_URL", "HTTP_PROXY, NO_PROXY", "HTTPS_PROXY"],
        ),
        (
            UpstreamSection(proxy="http://proxy.corp:3128"),
            {"HTTPS_PROXY": "http://proxy.corp:3128"},
            ["OPENAI_BASE_URL", "HTTP_PROXY, NO_PROXY"],
        ),
        (
            UpstreamSection(),
            {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": ".chatgpt.com"},
            ["OPENAI_BASE_URL", "HTTP_PROXY, NO_PROXY"],
        ),
    ],
)
def test_an_https_proxy_variable_the_proxy_does_not_use_is_mentioned(
    tmp_path: Path, upstream: UpstreamSection, environ: dict[str, str], wheres: list[str]
) -> None:
    places = Places.build(ListenSection(), upstream.url, frozenset())
    found = environment.check(inputs(tmp_path, environ), places, upstream)
    assert [f.where for f in found] == wheres
    assert [f.status for f in found] == [Status.OK, Status.OK, Status.INFO][: len(wheres)]
    if len(found) == 3:
        # The variable holds the URL; upstream.proxy_from_env is named as the boolean it is.
        assert render.checklist(found)[-1] == (
            '  \u2013 HTTPS_PROXY = "http://proxy.corp:3128" is set, and upstream.proxy_from_env '
            "is false, so this proxy goes to https://chatgpt.com directly: if only that proxy "
            "can reach it, set upstream.proxy_from_env = true"
        )


async def test_proxy_listening_and_not(world: World, unused_tcp_port: int) -> None:
    found = await world.doctor()
    listening = line(found, world.origin)
    assert (listening.status, listening.says) == (Status.OK, "answers /_proxy/healthz")
    found = await world.doctor(port=unused_tcp_port)
    closed = line(found, f"http://127.0.0.1:{unused_tcp_port}")
    assert (closed.status, closed.says) == (
        Status.PROBLEM,
        "nothing answers there (connection refused)",
    )
    assert closed.fix.startswith("start it: `codex-path-proxy service install`")


async def test_another_program_on_the_proxy_port(world: World) -> None:
    fake = world.fake
    found = await world.doctor(port=fake.port)
    held = line(found, f"http://127.0.0.1:{fake.port}")
    assert (
        held.says
        == "answers /_proxy/healthz with 404 application/json: another program holds that port"
    )


async def test_a_config_pointing_at_another_running_proxy(
    world: World, start_proxy: StartProxy
) -> None:
    second = await start_proxy()
    openclaw_home(world.home, openclaw_config(OLD, f"http://127.0.0.1:{second.port}/backend-api"))
    found = await world.doctor()
    assert line(found, f"http://127.0.0.1:{second.port}").says == (
        "another codex-path-proxy answers /_proxy/healthz (a client config points here)"
    )
    assert line(found, "baseUrl").status is Status.OK


async def test_listen_port_zero_cannot_be_pointed_at(world: World) -> None:
    found = await world.doctor(port=0)
    assert line(found, "listen.port").fix == "set listen.port (8780 is the default) in flag --port"


async def test_a_rule_table_that_leaves_the_retired_path_alone(world: World) -> None:
    environ = {"CODEX_PATH_PROXY_REWRITE_DISABLED": "legacy-responses"}
    found = await world.doctor(settings_environ=environ)
    rules = line(found, "rewrite.rules")
    assert rules.status is Status.PROBLEM
    assert rules.says.startswith("active: legacy-v1-responses, legacy-codex-v1-responses")
    assert rules.fix == (
        "remove the rule from rewrite.disabled (environment CODEX_PATH_PROXY_REWRITE_DISABLED)"
    )
    found = await world.doctor()
    assert line(found, "rewrite.rules").says == (
        "4 active (legacy-responses, legacy-v1-responses, legacy-codex-v1-responses, "
        "legacy-v1-codex-responses): /backend-api/responses → /backend-api/codex/responses"
    )


async def test_an_empty_rule_table_names_where_it_was_emptied(world: World, tmp_path: Path) -> None:
    config = write(tmp_path / "proxy.toml", "[rewrite]\nrules = []\n")
    settings, sources = load_settings(
        config_file=str(config),
        environ={},
        flags={"--upstream": world.fake.url, "--port": world.port},
    )
    found = await examine(settings, sources, inputs(world.home))
    assert line(found, "codex-path-proxy").says == (
        f"{__version__}, settings: file {config}, flag --port, flag --upstream"
    )
    rules = line(found, "rewrite.rules")
    assert (
        rules.says
        == "active: none; /backend-api/responses would reach the upstream unrewritten (403)"
    )
    assert (
        rules.fix == f"restore a rule for /backend-api/responses in rewrite.rules (file {config})"
    )


def test_an_ipv6_listener_is_named_with_brackets() -> None:
    assert url(("http", "::1", 8780)) == "http://[::1]:8780"


async def test_an_openclaw_on_path_that_is_no_npm_package(world: World, tmp_path: Path) -> None:
    """A wrapper script, or a package.json that is not OpenClaw's or not JSON: no version."""
    bin_dir = tmp_path / "wrapper" / "bin"
    write(bin_dir / "openclaw", "#!/bin/sh\n").chmod(0o755)
    write(tmp_path / "wrapper" / "package.json", "{not json")
    write(tmp_path / "package.json", '{"name": "something-else"}')
    found = await world.doctor(environ={"PATH": str(bin_dir)})
    assert line(found, "openclaw").says == "no npm-installed openclaw on PATH"


async def test_image_fallbacks_are_named(world: World) -> None:
    config = openclaw_config(OLD, world.base)
    defaults = config["agents"]["defaults"]
    del defaults["mediaGenerationAutoProviderFallback"]
    defaults["imageGenerationModel"]["fallbacks"] = ["google/imagen-4"]
    openclaw_home(world.home, config)
    fallback = line(await world.doctor(), "image generation")
    assert (fallback.status, fallback.says) == (
        Status.INFO,
        "agents.defaults.mediaGenerationAutoProviderFallback is not false; "
        'agents.defaults.imageGenerationModel.fallbacks = ["google/imagen-4"]: a failed image '
        "may silently come from another provider (your choice; the doctor changes nothing here)",
    )


async def test_a_config_path_under_a_file(world: World) -> None:
    write(world.home / "plain-file", "")
    found = await world.doctor(environ={"OPENCLAW_CONFIG_PATH": "~/plain-file/openclaw.json"})
    assert line(found, "openclaw.json").says == "cannot be read: Not a directory"


async def test_a_listener_that_hangs_up_without_answering(world: World) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        found = await world.doctor(port=port)
    finally:
        server.close()
    assert line(found, f"http://127.0.0.1:{port}").says == (
        "nothing answers there (the connection closed without an answer)"
    )


async def test_the_running_proxy_says_its_version_and_what_the_retired_path_becomes(
    world: World, start_proxy: StartProxy
) -> None:
    found = await world.doctor()
    running = line(found, f"{world.origin}/_proxy/version")
    assert running.status is Status.OK
    assert running.says == (
        f"runs {__version__}, rules: legacy-responses, legacy-v1-responses, "
        "legacy-codex-v1-responses, legacy-v1-codex-responses; "
        "/backend-api/responses → /backend-api/codex/responses"
    )
    # A proxy started with the rule turned off, though the settings here have it on.
    stale = await start_proxy(world.fake.url, rewrite={"disabled": ("legacy-responses",)})
    found = await world.doctor(port=stale.port)
    running = line(found, f"http://127.0.0.1:{stale.port}/_proxy/version")
    assert running.status is Status.PROBLEM
    assert running.says.endswith("it sends /backend-api/responses upstream unrewritten (403)")
    assert running.fix.startswith("restart it with a rule for the retired path")
