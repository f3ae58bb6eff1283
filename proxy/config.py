"""Configuration, loaded once at the edge: defaults < TOML file < environment < flags.

Nothing outside this module reads files or the environment for settings. A value that
cannot be used raises ConfigError naming where it came from, the key and the reason.
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from proxy.paths import ca_bundle_problem, folder_problem
from proxy.rules import Rule
from proxy.settings import (
    CONFIG_ENV,
    ENV_PREFIX,
    FLAGS,
    SECTIONS,
    Settings,
    UpstreamSection,
    key_type,
    keys,
    redact_url,
)


class ConfigError(Exception):
    """A setting that cannot be used; the message names where it came from and why."""


@dataclass(frozen=True, slots=True)
class Value:
    value: Any
    source: str


Sourced = dict[tuple[str, str], Value]


def defaults() -> Sourced:
    base = Settings()
    return {
        (section, key): Value(getattr(getattr(base, section), key), "default")
        for section in SECTIONS
        for key in keys(section)
    }


def load_settings(
    *,
    config_file: str | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any],
) -> tuple[Settings, Sourced]:
    """Layer every source and validate; raise ConfigError naming source, key and reason."""
    values = defaults()
    path = config_file or environ.get(CONFIG_ENV)
    if path:
        named_by = "flag --config" if config_file else f"environment {CONFIG_ENV}"
        values.update(_from_file(Path(path), named_by))
    values.update(_from_environ(environ))
    for flag, value in flags.items():
        section, key = FLAGS[flag]
        values[section, key] = Value(_coerce(value, section, key, f"flag {flag}"), f"flag {flag}")
    if values["upstream", "proxy_from_env"].value and not values["upstream", "proxy"].value:
        found = proxy_from_environ(values["upstream", "url"].value, environ)
        if found is not None:
            values["upstream", "proxy"] = Value(found[1], f"environment {found[0]}")
    return _build(values), values


def proxy_from_environ(upstream: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, proxy URL) the standard variables give for the upstream, unless NO_PROXY."""
    url = URL(upstream)
    host = (url.host or "").lower()
    no_proxy = environ.get("NO_PROXY", environ.get("no_proxy", ""))
    for entry in (part.strip().lower().split(":")[0].lstrip(".") for part in no_proxy.split(",")):
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    names = (
        ("HTTPS_PROXY", "https_proxy") if url.scheme == "https" else ("HTTP_PROXY", "http_proxy")
    )
    for name in names:
        if environ.get(name):
            return name, environ[name]
    return None


def _from_file(path: Path, named_by: str) -> Sourced:
    where = f"file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{named_by}: cannot read the config file {path}: {exc.strerror}"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    values: Sourced = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: [{section}]: unknown section{_nearest(section, SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section}: must be a table")
        known = keys(section)
        for key, raw in table.items():
            if key not in known:
                raise ConfigError(
                    f"{where}: {section}.{key}: unknown key{_nearest(f'{section}.{key}', _DOTTED)}"
                )
            values[section, key] = Value(_coerce(raw, section, key, where), where)
    return values


_DOTTED = tuple(f"{section}.{key}" for section in SECTIONS for key in keys(section))


def _nearest(name: str, known: Iterable[str], shown: Callable[[str], str] = str) -> str:
    """'; did you mean …?' with the known name nearest a misspelt one, if one is near."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {shown(close[0])}?" if close else ""


def _from_environ(environ: Mapping[str, str]) -> Sourced:
    names = {
        f"{ENV_PREFIX}{section}_{key}".upper(): (section, key)
        for section in SECTIONS
        for key in keys(section)
    }
    values: Sourced = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if name not in names:
            # Matched without the prefix they all share, which would make any name "near".
            hint = _nearest(
                name.removeprefix(ENV_PREFIX),
                (known.removeprefix(ENV_PREFIX) for known in names),
                lambda near: f"{ENV_PREFIX}{near} ({'.'.join(names[ENV_PREFIX + near])})",
            )
            raise ConfigError(f"environment {name}: unknown setting{hint}")
        section, key = names[name]
        where = f"environment {name}"
        values[section, key] = Value(
            _coerce(_parse_env(raw, section, key, where), section, key, where), where
        )
    return values


def _parse_env(raw: str, section: str, key: str, where: str) -> Any:
    kind = key_type(section, key)
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{where}: {section}.{key}: expected true or false, got {raw!r}")
    if kind is int:
        try:
            return int(raw, 10)
        except ValueError:
            raise ConfigError(
                f"{where}: {section}.{key}: expected an integer, got {raw!r}"
            ) from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{where}: {section}.{key}: expected a number, got {raw!r}") from None
    if kind == tuple[str, ...]:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind == tuple[Rule, ...]:
        raise ConfigError(f"{where}: {section}.{key}: can only be set in a TOML file")
    return raw


def _coerce(raw: Any, section: str, key: str, where: str) -> Any:
    """Check one raw value against its key's type; return the typed value."""
    name = f"{section}.{key}"
    kind = key_type(section, key)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        raw = float(raw)
    if kind is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: {name}: expected true or false, got {raw!r}")
        return raw
    if kind in (str, int, float):
        if not isinstance(raw, kind) or isinstance(raw, bool):
            raise ConfigError(f"{where}: {name}: expected {_NOUNS[kind]}, got {raw!r}")
        choices = keys(section)[key].metadata["choices"]
        if choices and raw not in choices:
            raise ConfigError(f"{where}: {name}: must be one of {', '.join(choices)}, got {raw!r}")
        return raw
    if kind == tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise ConfigError(f"{where}: {name}: expected a list of strings, got {raw!r}")
        return tuple(raw)
    assert kind == tuple[Rule, ...], kind
    return _rules(raw, where, name)


_NOUNS: dict[type[Any], str] = {str: "a string", int: "an integer", float: "a number"}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_RULE_KEYS = ("name", "kind", "match", "target")


def _rules(raw: Any, where: str, name: str) -> tuple[Rule, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: {name}: expected an array of tables ([[{name}]])")
    rules: list[Rule] = []
    for index, item in enumerate(raw):
        at = f"{where}: {name}[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at}: expected a table with {', '.join(_RULE_KEYS)}")
        unknown = sorted(set(item) - set(_RULE_KEYS))
        if unknown:
            raise ConfigError(f"{at}.{unknown[0]}: unknown key{_nearest(unknown[0], _RULE_KEYS)}")
        for key in _RULE_KEYS:
            if not isinstance(item.get(key), str):
                raise ConfigError(f"{at}.{key}: expected a string, got {item.get(key)!r}")
        try:
            rule = Rule.build(**item)
        except ValueError as exc:
            raise ConfigError(f"{at}: {exc}") from None
        if any(rule.name == seen.name for seen in rules):
            raise ConfigError(f"{at}.name: duplicate rule name {rule.name!r}")
        rules.append(rule)
    return tuple(rules)


def _build(values: Sourced) -> Settings:
    sections = {
        section: SECTIONS[section](**{key: values[section, key].value for key in keys(section)})
        for section in SECTIONS
    }
    settings = Settings(**sections)
    _validate(settings, values)
    return settings


def _validate(settings: Settings, values: Sourced) -> None:
    def fail(section: str, key: str, reason: str) -> typing.NoReturn:
        raise ConfigError(f"{values[section, key].source}: {section}.{key}: {reason}")

    _validate_upstream(settings.upstream, fail)
    if not 0 <= settings.listen.port <= 65535:
        fail("listen", "port", f"must be 0..65535, got {settings.listen.port}")
    minimums = [
        ("inspector", "ring_size", 1, "must be at least 1"),
        ("inspector", "body_limit", 0, "must not be negative"),
        ("inspector", "total_limit", 0, "must not be negative"),
        ("inspector", "event_limit", 0, "must not be negative"),
        ("limits", "max_connections", 1, "must be at least 1"),
        ("limits", "header_timeout", 0.001, "must be greater than 0"),
        ("limits", "keepalive_timeout", 0.001, "must be greater than 0"),
        ("limits", "max_body_size", 0, "must not be negative"),
        ("limits", "max_header_size", 8190, "must be at least 8190 (HTTP's usual line limit)"),
        ("capture", "body_limit", 0, "must not be negative"),
        ("capture", "total_limit", 0, "must not be negative"),
        ("shutdown", "grace", 0, "must not be negative"),
        ("upstream", "warm_connections", 0, "must not be negative"),
    ]
    for section, key, minimum, reason in minimums:
        if getattr(getattr(settings, section), key) < minimum:
            fail(section, key, reason)
    if settings.capture.dir and (problem := folder_problem(settings.capture.dir)):
        fail("capture", "dir", problem)
    names = {rule.name for rule in settings.rewrite.rules}
    for name in settings.rewrite.disabled:
        if name not in names:
            fail("rewrite", "disabled", f"no rule is named {name!r}")


def _validate_upstream(
    upstream: UpstreamSection, fail: Callable[[str, str, str], typing.NoReturn]
) -> None:
    try:
        url = URL(upstream.url)
    except ValueError as exc:
        fail("upstream", "url", f"not a URL: {exc}")
    if url.scheme not in ("http", "https") or not url.host:
        fail("upstream", "url", f"must be an http:// or https:// URL, got {upstream.url!r}")
    if url.raw_path not in ("", "/") or url.raw_query_string or url.raw_fragment or url.raw_user:
        fail(
            "upstream",
            "url",
            f"must be an origin only (scheme://host[:port]), got {redact_url(upstream.url)!r}",
        )
    for key in ("connect_timeout", "idle_timeout", "keepalive_timeout"):
        if getattr(upstream, key) <= 0:
            fail("upstream", key, "must be greater than 0")
    if upstream.pool_size < 1:
        fail("upstream", "pool_size", "must be at least 1")
    if upstream.proxy:
        try:
            proxy = URL(upstream.proxy)
        except ValueError as exc:
            fail("upstream", "proxy", f"not a URL: {exc}")
        if proxy.port == 0:
            fail("upstream", "proxy", "must name a port of 1..65535, got 0")
        if proxy.scheme not in ("http", "https") or not proxy.host:
            fail(
                "upstream",
                "proxy",
                f"must be an http:// or https:// proxy URL, got {redact_url(upstream.proxy)!r}",
            )
    if upstream.ca_bundle and (problem := ca_bundle_problem(upstream.ca_bundle)):
        fail("upstream", "ca_bundle", problem)
