"""Plan usage in words, for a person: window names as Codex's /status says them (`5h`,
`weekly`), reset times in this machine's local time with how far off they are, bars of
twenty segments, token counts in short (`12.3k`), and the `usage` command's lines."""

from __future__ import annotations

import datetime
from typing import Any

BAR = 20
_DAY = 24 * 60
# Codex rounds a window a few minutes past a boundary down to it.
_BIAS = 3


def window_label(minutes: int | None, slot: str) -> str:
    """`5h`, `weekly`, `monthly`…: a window by its length (Codex's own names), or by
    its place when its length is not said (primary: 5h, secondary: weekly, as Codex)."""
    if minutes is None or minutes <= 0:
        return "5h" if slot == "primary" else "weekly"
    if minutes <= _DAY + _BIAS:
        return f"{max(1, (minutes + _BIAS) // 60)}h"
    if minutes <= 7 * _DAY + _BIAS:
        return "weekly"
    if minutes <= 30 * _DAY + _BIAS:
        return "monthly"
    return "annual"


def clock(at: float, now: float) -> str:
    """`14:05`, or `09:00 on 12 Dec` when not today (local time)."""
    moment = datetime.datetime.fromtimestamp(at)  # this machine's local time
    today = datetime.datetime.fromtimestamp(now).date()
    shown = f"{moment:%H:%M}"
    return shown if moment.date() == today else f"{shown} on {moment.day} {moment:%b}"


def until(seconds: float) -> str:
    """`in 2 h 11 min`, `in 45 s`, `in 3 d 4 h`."""
    left = max(0, round(seconds))
    if left < 60:
        return f"in {left} s"
    minutes = left // 60
    if minutes < 60:
        return f"in {minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"in {hours} h {minutes} min" if minutes else f"in {hours} h"
    days, hours = divmod(hours, 24)
    return f"in {days} d {hours} h" if hours else f"in {days} d"


def resets(at: int | None, now: float) -> str:
    """`at 14:05 (in 2 h 11 min)`; `at 14:05 (passed)`; empty when unknown."""
    if at is None:
        return ""
    return f"at {clock(at, now)} ({'passed' if at <= now else until(at - now)})"


def bar(percent: float) -> str:
    filled = min(BAR, max(0, round(percent / 100 * BAR)))
    return "[" + "█" * filled + "░" * (BAR - filled) + "]"


def count(tokens: int) -> str:
    """`845`, `12.3k`, `1.2M`."""
    if tokens < 1000:
        return str(tokens)
    if tokens < 1_000_000:
        return f"{tokens / 1000:.1f}k".replace(".0k", "k")
    return f"{tokens / 1_000_000:.1f}M".replace(".0M", "M")


def ago(seconds: float) -> str:
    return "just now" if seconds < 1 else until(seconds).replace("in ", "", 1) + " ago"


def lines(view: dict[str, Any]) -> list[str]:
    """The `usage` command's report of `/_proxy/usage`: each account, its limits as bars."""
    now = float(view.get("now") or 0)
    out: list[str] = []
    for account in view.get("accounts") or []:
        if out:
            out.append("")
        facts = [f"account {account.get('account')}"]
        if account.get("plan_type"):
            facts.append(f"plan {account['plan_type']}")
        facts.append(
            f"seen {ago(now - float(account.get('seen_at') or now))}"
            f" ({account.get('source')}, request {account.get('request_id')})"
        )
        out.append(" · ".join(facts))
        rows: list[tuple[str, str]] = []
        for limit in account.get("limits") or []:
            named = f" ({limit['name'] or limit['family']})" if limit["family"] != "codex" else ""
            for window in limit.get("windows") or []:
                label = f"{str(window['label']).capitalize()} limit{named}:"
                used = float(window["used_percent"])
                when = resets(window.get("resets_at"), now)
                note = f"{used:.0f}% used" + (f", resets {when}" if when else "")
                if window.get("stale"):
                    note += "; not seen since"
                rows.append((label, f"{bar(used)} {note}"))
            reached = limit.get("reached")
            if reached is not None:
                when = resets(reached.get("resets_at"), now)
                text = "reached (429)" + (f": lifts {when}" if when else "")
                rows.append((f"Limit{named}:", text))
        credits = account.get("credits")
        if credits:
            rows.append(("Credits:", credits_text(credits)))
        width = max((len(label) for label, _ in rows), default=0)
        out += [f"  {label:<{width}}  {text}" for label, text in rows]
    return out


def credits_text(credits: dict[str, Any]) -> str:
    if credits.get("unlimited"):
        return "unlimited"
    if credits.get("balance") is not None:
        return f"{credits['balance']} credits"
    return "available" if credits.get("has_credits") else "none"
