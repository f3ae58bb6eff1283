"""OpenClaw: its config (JSON5) in both shapes, and the installed version.

2026.4.x signs in to ChatGPT through the provider `openai-codex`; 2026.9.x through the
provider `openai` with `api: "openai-chatgpt-responses"`. Each builds `{baseUrl}/responses`
for image generation; before 2026.4.25 it did so for chatgpt.com too, which is the retired
path. A loopback base URL needs `request.allowPrivateNetwork`, or OpenClaw's SSRF guard
refuses it before sending anything.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.doctor.baseurl import Places, Route, classify, is_chatgpt
from proxy.doctor.findings import Edit, Finding, Format, Status, dotted, shown, shown_value
from proxy.doctor.inputs import Inputs
from proxy.doctor.json5 import ParseError, parse
from proxy.doctor.reading import Unreadable, read_text

AREA = "OpenClaw"
OLD_PROVIDER = "openai-codex"
NEW_PROVIDER = "openai"
CHATGPT_API = "openai-chatgpt-responses"
DEFAULT_BASE = "https://chatgpt.com/backend-api"
FIRST_FIXED = (2026, 4, 25)  # the first release that canonicalises a chatgpt.com base URL
TOUCHED = ("meta", "lastTouchedVersion")  # the version of OpenClaw that last wrote the config


@dataclass(frozen=True, slots=True, kw_only=True)
class Install:
    version: str
    where: str

    @property
    def builds_retired_path(self) -> bool:
        numbers = tuple(int(n) for n in re.findall(r"\d+", self.version)[:3])
        return numbers < FIRST_FIXED


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    name: str
    entry: Any  # models.providers[name]: normally an object, None when absent

    @property
    def base(self) -> Any:
        return self.entry.get("baseUrl") if isinstance(self.entry, dict) else None

    def key(self, *names: str) -> tuple[str, ...]:
        return ("models", "providers", self.name, *names)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenClawState:
    path: Path
    text: str | Unreadable | None
    config: dict[str, Any] | None = None
    error: str = ""
    install: Install | None = None
    providers: tuple[Provider, ...] = ()


def config_path(inputs: Inputs) -> Path:
    """Where OpenClaw reads its config: $OPENCLAW_CONFIG_PATH, the state folder's, or ~'s."""
    if inputs.openclaw_config_path:
        return inputs.expand(inputs.openclaw_config_path)
    if inputs.openclaw_state_dir:
        return inputs.expand(inputs.openclaw_state_dir) / "openclaw.json"
    return inputs.home / ".openclaw" / "openclaw.json"


def find_install(search_path: str) -> Install | None:
    """The `openclaw` on PATH, by the package.json beside the script it links to."""
    found = shutil.which("openclaw", path=search_path)
    if found is None:
        return None
    for folder in Path(found).resolve().parents[:3]:
        manifest = read_text(folder / "package.json")
        if not isinstance(manifest, str):
            continue
        try:
            package = json.loads(manifest)
        except ValueError:
            continue
        if isinstance(package, dict) and package.get("name") == "openclaw":
            return Install(version=str(package.get("version")), where=str(folder))
    return None


def read(inputs: Inputs) -> OpenClawState:
    path = config_path(inputs)
    text = read_text(path)
    install = find_install(inputs.path)
    if not isinstance(text, str):
        return OpenClawState(path=path, text=text, install=install)
    try:
        config = parse(text).value
    except ParseError as exc:
        return OpenClawState(path=path, text=text, error=str(exc), install=install)
    if not isinstance(config, dict):
        return OpenClawState(
            path=path, text=text, error="the top level is not an object", install=install
        )
    if install is None and isinstance(touched := _get(config, *TOUCHED), str):
        install = Install(version=touched, where=f"last written by it, {dotted(TOUCHED)}")
    return OpenClawState(
        path=path, text=text, config=config, install=install, providers=_providers(config)
    )


def _get(data: Any, *names: str) -> Any:
    for name in names:
        data = data.get(name) if isinstance(data, dict) else None
    return data


def _providers(config: dict[str, Any]) -> tuple[Provider, ...]:
    entries = _get(config, "models", "providers")
    entries = entries if isinstance(entries, dict) else {}
    profiles = _get(config, "auth", "profiles")
    signed_in = {
        (profile.get("provider"), profile.get("mode"))
        for profile in (profiles.values() if isinstance(profiles, dict) else ())
        if isinstance(profile, dict)
    }
    found = []
    if OLD_PROVIDER in entries or any(name == OLD_PROVIDER for name, _ in signed_in):
        found.append(Provider(name=OLD_PROVIDER, entry=entries.get(OLD_PROVIDER)))
    new = entries.get(NEW_PROVIDER)
    if _get(new, "api") == CHATGPT_API or (new is None and (NEW_PROVIDER, "oauth") in signed_in):
        found.append(Provider(name=NEW_PROVIDER, entry=new))
    return tuple(found)


def bases(state: OpenClawState) -> list[str]:
    return [p.base for p in state.providers if isinstance(p.base, str)]


def check(state: OpenClawState, places: Places) -> list[Finding]:
    findings = [_version(state.install)]
    where = str(state.path)
    if state.text is None:
        findings.append(Finding(area=AREA, status=Status.INFO, where=where, says="no config"))
        return findings
    if isinstance(state.text, Unreadable):
        reason = state.text.reason
        fix = f"make {where} a readable UTF-8 file (OpenClaw cannot read it either)"
        findings.append(_problem(where, f"cannot be read: {reason}", fix))
        return findings
    if state.config is None:
        fix = "correct it there (OpenClaw refuses the file too; `openclaw doctor` shows more)"
        findings.append(_problem(where, state.error, fix))
        return findings
    if not state.providers:
        says = (
            f"no ChatGPT sign-in (provider {OLD_PROVIDER}, or {NEW_PROVIDER} with api "
            f"{CHATGPT_API}): nothing to check"
        )
        findings.append(Finding(area=AREA, status=Status.INFO, where=where, says=says))
        return findings
    for provider in state.providers:
        findings.extend(_provider(state, provider, places))
    findings.append(_fallback(state))
    return findings


def _version(install: Install | None) -> Finding:
    if install is None:
        return Finding(
            area=AREA,
            status=Status.INFO,
            where="openclaw",
            says="no npm-installed openclaw on PATH",
        )
    if install.builds_retired_path:
        says = (
            f"{install.version} ({install.where}): builds the retired /backend-api/responses "
            "from a chatgpt.com base URL (fixed in 2026.4.25); it needs this proxy"
        )
    else:
        says = (
            f"{install.version} ({install.where}): finds the live path for a chatgpt.com base "
            "URL itself; any other base URL, this proxy's included, gets /responses appended"
        )
    return Finding(area=AREA, status=Status.INFO, where="openclaw", says=says)


def _provider(  # noqa: PLR0911 - one return per verdict
    state: OpenClawState, provider: Provider, places: Places
) -> list[Finding]:
    where = f"{state.path} {dotted(provider.key('baseUrl'))}"
    if provider.entry is not None and not isinstance(provider.entry, dict):
        says = f"{dotted(provider.key())} is not an object"
        return [_problem(where, says, f"make {dotted(provider.key())} an object by hand")]
    base = provider.base
    if base is None:
        base, showing = DEFAULT_BASE, f"not set: OpenClaw's built-in {DEFAULT_BASE}"
    else:
        showing = f"= {shown_value(base)}"
    if isinstance(base, str) and "${" in base:
        says = f"{showing}: taken from an environment variable; not checked"
        return [Finding(area=AREA, status=Status.INFO, where=where, says=says)]
    route = classify(base, places) if isinstance(base, str) else Route.INVALID
    if route is Route.PROXY:
        return [_ok(where, f"{showing}: {route}"), _private_network(state, provider)]
    if route is Route.ELSEWHERE:
        says = f"{showing}: {route}, not this proxy; not checked"
        return [Finding(area=AREA, status=Status.INFO, where=where, says=says)]
    install = state.install
    canonicalised = provider.name == NEW_PROVIDER or (
        install is not None and not install.builds_retired_path
    )
    if route is Route.RETIRED and is_chatgpt(base) and canonicalised:
        says = f"{showing}: OpenClaw turns it into the live path itself (not through this proxy)"
        return [_ok(where, says)]
    says = f"{showing}: {route}"
    if route is Route.RETIRED:
        who = f"OpenClaw {install.version}" if install else "OpenClaw before 2026.4.25"
        says += (
            f"; {who} posts images to {shown(str(base).rstrip('/'))}/responses, which answers 403"
        )
    fix = f"set it to {json.dumps(places.proxy_base)}"
    if provider.entry is None:
        entry = {
            "baseUrl": places.proxy_base,
            "models": [],
            "request": {"allowPrivateNetwork": True},
        }
        edit = _edit(state, provider.key(), entry)
        fix = f"add {dotted(provider.key())} = {json.dumps(entry)}"
        return [_problem(where, says, fix, edit)]
    edit = _edit(state, provider.key("baseUrl"), places.proxy_base)
    return [_problem(where, says, fix, edit), _private_network(state, provider)]


def _private_network(state: OpenClawState, provider: Provider) -> Finding:
    key = provider.key("request", "allowPrivateNetwork")
    where = f"{state.path} {dotted(key)}"
    value = _get(provider.entry, "request", "allowPrivateNetwork")
    if value is True:
        return _ok(where, "= true: OpenClaw's SSRF guard lets it reach the loopback base URL")
    showing = "not set" if value is None else f"= {shown_value(value)}"
    says = f"{showing}: OpenClaw's SSRF guard refuses a loopback base URL before sending"
    return _problem(where, says, "set it to true", _edit(state, key, True))


def _fallback(state: OpenClawState) -> Finding:
    """Whether a failed image silently becomes one from another provider."""
    defaults = _get(state.config, "agents", "defaults")
    if any(p.name == NEW_PROVIDER for p in state.providers):
        model_key: tuple[str, ...] = ("agents", "defaults", "mediaModels", "image")
        auto = "OpenClaw 2026.9 always tries other providers you have keys for"
    else:
        model_key = ("agents", "defaults", "imageGenerationModel")
        switch = ("agents", "defaults", "mediaGenerationAutoProviderFallback")
        off = _get(defaults, "mediaGenerationAutoProviderFallback") is False
        auto = "" if off else f"{dotted(switch)} is not false"
    fallbacks = _get(state.config, *model_key, "fallbacks")
    reasons = [auto] if auto else []
    if isinstance(fallbacks, list) and fallbacks:
        reasons.append(f"{dotted((*model_key, 'fallbacks'))} = {shown_value(fallbacks)}")
    where = f"{state.path} image generation"
    if not reasons:
        return _ok(where, "no silent fallback: a failed image shows as an error")
    says = (
        f"{'; '.join(reasons)}: a failed image may silently come from another provider "
        "(your choice; the doctor changes nothing here)"
    )
    return Finding(area=AREA, status=Status.INFO, where=where, says=says)


def _edit(state: OpenClawState, key: tuple[str, ...], value: Any) -> Edit:
    return Edit(file=str(state.path), format=Format.JSON5, key=key, value=value)


def _ok(where: str, says: str) -> Finding:
    return Finding(area=AREA, status=Status.OK, where=where, says=says)


def _problem(where: str, says: str, fix: str, *edits: Edit) -> Finding:
    return Finding(area=AREA, status=Status.PROBLEM, where=where, says=says, fix=fix, edits=edits)
