"""Diagnoses: one readable sentence for the failures users cannot see on the wire."""

from __future__ import annotations

from proxy.exchange import Exchange
from proxy.rules import DEFAULT_RULES, Rule

# Paths chatgpt.com retired (they answer 403 with an HTML page): the default rules' matches.
RETIRED = tuple(rule.match for rule in DEFAULT_RULES)


def diagnose(exchange: Exchange, *, upstream_host: str, rules: tuple[Rule, ...]) -> str | None:
    status = exchange.status
    if status is None or exchange.upstream_target is None:
        return None
    content_type = (exchange.response_header("Content-Type") or "").lower()
    accept = (exchange.request_header("Accept") or "").lower()
    if content_type.startswith("text/html") and (
        not accept or "json" in accept or "event-stream" in accept or "*/*" in accept
    ):
        ids = ", ".join(
            f"{name} {value}"
            for name in ("cf-ray", "cf-mitigated")
            if (value := exchange.response_header(name))
        )
        table = ", ".join(rule.name for rule in rules) or "empty"
        expected = "an event stream" if "event-stream" in accept else "JSON"
        return (
            f"{upstream_host} answered an HTML page (status {status}{', ' + ids if ids else ''}) "
            f"where the client expected {expected}: the path is retired or the request was "
            f"blocked; rule table: {table}"
        )
    if exchange.rule is None and _retired(exchange.upstream_target):
        path = exchange.upstream_target.partition("?")[0]
        return (
            f"{exchange.method} {path} reached {upstream_host} unrewritten: that path was "
            "retired in 2026-04 and answers 403; no active rule covers it "
            "(see rewrite.rules and rewrite.disabled)"
        )
    if status in (401, 403) and content_type.startswith("application/json"):
        return (
            f"{upstream_host} answered {status} with JSON: the access token is expired or "
            "invalid, or the account lacks the Codex entitlement; sign in again"
        )
    if exchange.stream_unfinished:
        assert exchange.sse is not None
        end = exchange.sse.terminal or exchange.sse.last_event or "no event"
        return f"the event stream ended without response.completed (last: {end})"
    return None


def _retired(target: str) -> bool:
    path = target.partition("?")[0]
    return any(path == prefix or path.startswith(prefix + "/") for prefix in RETIRED)
