"""Codex CLI: config.toml's base URLs and auth.json's ChatGPT sign-in.

Codex posts to `{openai_base_url}/responses`: the legacy form `…/backend-api` is the
retired path, its built-in `https://chatgpt.com/backend-api/codex` the live one. The
access token's `exp` is read without verifying the token, and neither the token nor the
account id is ever shown, only their fingerprints.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.doctor.baseurl import LIVE_PATH, PROXY_PATH, Places, Route, classify, parse
from proxy.doctor.findings import Edit, Finding, Format, Status, dotted, shown_value
from proxy.doctor.inputs import Inputs
from proxy.doctor.reading import Unreadable, read_text
from proxy.redact import marker

AREA = "Codex CLI"
BUILT_IN = "https://chatgpt.com" + LIVE_PATH
BASE_KEYS = ("openai_base_url", "chatgpt_base_url")


@dataclass(frozen=True, slots=True, kw_only=True)
class CodexState:
    folder: Path
    config_text: str | Unreadable | None
    config: dict[str, Any] | None
    config_error: str
    auth_text: str | Unreadable | None

    @property
    def config_path(self) -> Path:
        return self.folder / "config.toml"

    @property
    def auth_path(self) -> Path:
        return self.folder / "auth.json"


def read(inputs: Inputs) -> CodexState:
    folder = inputs.expand(inputs.codex_home) if inputs.codex_home else inputs.home / ".codex"
    text = read_text(folder / "config.toml")
    config, error = None, ""
    if isinstance(text, str):
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            error = f"not valid TOML: {exc}"
    return CodexState(
        folder=folder,
        config_text=text,
        config=config,
        config_error=error,
        auth_text=read_text(folder / "auth.json"),
    )


def profiles(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `[profiles.NAME]` tables (`codex --profile NAME`, or `profile = "NAME"`)."""
    found = config.get("profiles")
    if not isinstance(found, dict):
        return {}
    return {name: table for name, table in found.items() if isinstance(table, dict)}


def bases(state: CodexState) -> list[str]:
    config = state.config or {}
    found = [config.get(key) for key in BASE_KEYS]
    # A profile's openai_base_url Codex does not read (see _ignored): not probed either.
    found += [table.get("chatgpt_base_url") for table in profiles(config).values()]
    return [value for value in found if isinstance(value, str)]


def check(state: CodexState, places: Places, *, now: float) -> list[Finding]:
    if state.config_text is None and state.auth_text is None:
        says = "not set up here (no config.toml, no auth.json)"
        return [Finding(area=AREA, status=Status.INFO, where=str(state.folder), says=says)]
    return [*_config(state, places), _auth(state, now)]


def _config(state: CodexState, places: Places) -> list[Finding]:
    path = str(state.config_path)
    if isinstance(state.config_text, Unreadable):
        fix = f"make {path} a readable UTF-8 file (Codex cannot read it either)"
        return [_problem(path, f"cannot be read: {state.config_text.reason}", fix)]
    if state.config_error:
        return [_problem(path, state.config_error, "correct it there (Codex refuses it too)")]
    config = state.config or {}
    findings = [_openai_base(path, config.get("openai_base_url"), places)]
    if "chatgpt_base_url" in config:
        findings.append(_chatgpt_base(path, (), config["chatgpt_base_url"], places))
    for name, table in profiles(config).items():
        if "chatgpt_base_url" in table:
            key = ("profiles", name)
            findings.append(_chatgpt_base(path, key, table["chatgpt_base_url"], places))
        if "openai_base_url" in table:
            findings.append(_ignored(path, name, table["openai_base_url"]))
    return findings


def _openai_base(path: str, value: Any, places: Places) -> Finding:
    where = f"{path} openai_base_url"
    if value is None:
        return _ok(where, f"not set: Codex uses its built-in {BUILT_IN}, the live path")
    showing = f"= {shown_value(value)}"
    route = classify(value, places) if isinstance(value, str) else Route.INVALID
    if route in (Route.PROXY, Route.LIVE):
        return _ok(where, f"{showing}: {route}")
    if route is Route.ELSEWHERE:
        return _info(where, f"{showing}: {route}, not this proxy; not checked")
    says = f"{showing}: {route}"
    if route is Route.RETIRED:
        says += "; Codex posts to its /responses, which answers 403"
    elif route is Route.PROXY_SUFFIX and parse(value) and value.rstrip("/").endswith(LIVE_PATH):
        says += " (with the /codex form Codex insists on HTTPS for the workspace origin)"
    return _set(where, path, ("openai_base_url",), says, places.proxy_base)


def _ignored(path: str, profile: str, value: Any) -> Finding:
    """Codex's profiles (codex-rs/config/src/profile_toml.rs, ConfigProfile) take
    chatgpt_base_url but not openai_base_url: there it is read as nothing at all."""
    where = f"{path} {dotted(('profiles', profile, 'openai_base_url'))}"
    says = (
        f"= {shown_value(value)}: ignored: Codex reads openai_base_url only at the top level "
        "(a profile may set chatgpt_base_url); to use it, set the top-level openai_base_url"
    )
    return _info(where, says)


def _chatgpt_base(path: str, table: tuple[str, ...], value: Any, places: Places) -> Finding:
    key = (*table, "chatgpt_base_url")
    where = f"{path} {dotted(key)}"
    showing = f"= {shown_value(value)}"
    url = parse(value) if isinstance(value, str) else None
    route = classify(value, places) if url is not None else Route.INVALID
    at_backend = url is not None and url.path.rstrip("/") == PROXY_PATH
    if route is Route.PROXY:
        return _ok(where, f"{showing}: the ChatGPT backend through this proxy")
    if route is Route.RETIRED and at_backend:
        return _ok(where, f"{showing}: the ChatGPT backend, directly")
    if route is Route.ELSEWHERE:
        return _info(where, f"{showing}: {route}, not this proxy; not checked")
    says = f"{showing}: {route} (Codex's ChatGPT calls need …/backend-api/)"
    return _set(where, path, key, says, places.proxy_base + "/")


def _set(where: str, path: str, key: tuple[str, ...], says: str, value: str) -> Finding:
    edit = Edit(file=path, format=Format.TOML, key=key, value=value)
    return _problem(where, says, f"set it to {json.dumps(value)}", edit)


def _auth(state: CodexState, now: float) -> Finding:  # noqa: PLR0911 - one return per verdict
    path = str(state.auth_path)
    relogin = "run `codex login`"
    text = state.auth_text
    if text is None:
        return _info(path, "no auth.json: Codex is signed in elsewhere (keyring) or not at all")
    if isinstance(text, Unreadable):
        return _problem(path, f"cannot be read: {text.reason}", relogin)
    try:
        auth = json.loads(text)
    except json.JSONDecodeError as exc:
        return _problem(path, f"not valid JSON at line {exc.lineno}", relogin)
    tokens = auth.get("tokens") if isinstance(auth, dict) else None
    if not isinstance(tokens, dict):
        says = "no ChatGPT tokens (API-key sign-in): Codex goes to api.openai.com, not this proxy"
        return _info(path, says)
    access = tokens.get("access_token")
    expires = _expiry(access)
    if not isinstance(access, str) or expires is None:
        return _problem(path, "the access token is missing or not a JWT", relogin)
    who = f"access token {marker(access)}"
    if isinstance(account := tokens.get("account_id"), str):
        who += f", account {marker(account)}"
    when = datetime.datetime.fromtimestamp(expires, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if expires <= now:
        says = f"ChatGPT sign-in: {who} expired {when}"
        fix = f"{relogin} (Codex renews it by itself only while its refresh token works)"
        return _problem(path, says, fix)
    return _ok(path, f"ChatGPT sign-in: {who}, valid until {when}")


def _expiry(token: Any) -> float | None:
    """The `exp` claim of a JWT, read without verifying it."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _ok(where: str, says: str) -> Finding:
    return Finding(area=AREA, status=Status.OK, where=where, says=says)


def _info(where: str, says: str) -> Finding:
    return Finding(area=AREA, status=Status.INFO, where=where, says=says)


def _problem(where: str, says: str, fix: str, *edits: Edit) -> Finding:
    return Finding(area=AREA, status=Status.PROBLEM, where=where, says=says, fix=fix, edits=edits)
