"""Diagnoses: one readable sentence for the failures users cannot see on the wire.

The most specific cause comes first (a wrong base URL, a retired path sent unrewritten);
what else is true of the answer (an HTML page where data was expected) follows it.
"""

from __future__ import annotations

import re

from proxy.exchange import Exchange
from proxy.rules import DEFAULT_RULES, Rule

# Paths chatgpt.com retired (they answer 403 with an HTML page): the default rules' matches.
RETIRED = tuple(rule.match for rule in DEFAULT_RULES)
BASE_PATH = "/backend-api"
# What a client sends when its base URL lacks /backend-api: the API's own paths, at the
# root (base http://host:port) or under /v1 (base http://host:port/v1).
_OUTSIDE_BASE = ("/responses", "/codex/responses", "/v1")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?")


def diagnose(exchange: Exchange, *, upstream_host: str, rules: tuple[Rule, ...]) -> str | None:
    if exchange.status is None or exchange.upstream_target is None:
        return None
    content_type = (exchange.response_header("Content-Type") or "").lower()
    html = _html_answer(exchange, content_type) if content_type.startswith("text/html") else None
    cause = _cause(exchange, exchange.upstream_target, upstream_host)
    if cause:
        return cause + (f"; {upstream_host} answered {html}" if html else "")
    if html:
        table = ", ".join(rule.name for rule in rules) or "empty"
        return (
            f"{upstream_host} answered {html}: the path is retired or the request was "
            f"blocked; rule table: {table}"
        )
    return _symptom(exchange, exchange.status, content_type, upstream_host)


def _cause(exchange: Exchange, upstream_target: str, upstream_host: str) -> str | None:
    """What the client or the rule table got wrong, when the request shows it."""
    if exchange.rule is not None:
        return None
    if exchange.status is not None and exchange.status >= 400:
        wrong = wrong_base_url(exchange)
        if wrong:
            return wrong
    if _under(upstream_target, RETIRED):
        path = upstream_target.partition("?")[0]
        return (
            f"{exchange.method} {path} reached {upstream_host} unrewritten: that path was "
            "retired in 2026-04 and answers 403; no active rule covers it "
            "(see rewrite.rules and rewrite.disabled)"
        )
    return None


def _symptom(exchange: Exchange, status: int, content_type: str, upstream_host: str) -> str | None:
    """What the answer itself says went wrong."""
    if status in (401, 403) and content_type.startswith("application/json"):
        if not exchange.request_header("Authorization"):
            return (
                f"no token was sent: the request had no Authorization header and "
                f"{upstream_host} answered {status}; the client should send "
                "Authorization: Bearer <access token> (its ChatGPT sign-in) and "
                "ChatGPT-Account-Id: <account id>"
            )
        return (
            f"{upstream_host} answered {status} with JSON: the access token is expired or "
            "invalid, or the account lacks the Codex entitlement; sign in again"
        )
    if exchange.stream_unfinished:
        assert exchange.sse is not None
        end = exchange.sse.terminal or exchange.sse.last_event or "no event"
        return f"the event stream ended without response.completed (last: {end})"
    return None


def wrong_base_url(exchange: Exchange) -> str | None:
    """The sentence for a client whose base URL lacks /backend-api, naming the one to set."""
    path = exchange.target.partition("?")[0]
    if not _under(path, _OUTSIDE_BASE):
        return None
    used = "/v1" if _under(path, ("/v1",)) else ""
    host = exchange.request_header("Host") or ""
    origin = f"http://{host}" if _HOST.fullmatch(host) else "http://<this proxy>"
    return (
        f"{exchange.method} {path} is outside {BASE_PATH}: the client's base URL is "
        f"{origin}{used}; set it to {origin}{BASE_PATH}"
    )


def _html_answer(exchange: Exchange, content_type: str) -> str | None:
    """'an HTML page (status …) where the client expected …', when that is what came."""
    accept = (exchange.request_header("Accept") or "").lower()
    if not content_type.startswith("text/html") or not (
        not accept or "json" in accept or "event-stream" in accept or "*/*" in accept
    ):
        return None
    ids = "".join(
        f", {name} {value}"
        for name in ("cf-ray", "cf-mitigated")
        if (value := exchange.response_header(name))
    )
    expected = "an event stream" if "event-stream" in accept else "JSON"
    return f"an HTML page (status {exchange.status}{ids}) where the client expected {expected}"


def _under(target: str, prefixes: tuple[str, ...]) -> bool:
    path = target.partition("?")[0]
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)
