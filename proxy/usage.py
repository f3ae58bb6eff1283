"""Plan usage as the upstream tells it, read from whatever carried it: pure functions.

Every answer from chatgpt.com's Codex backend says how much of the user's plan is used,
in one of these shapes (as the Codex CLI reads them, `codex-rs/codex-api/src/rate_limits.rs`
and `api_bridge.rs`):

- response headers: `x-codex-primary-used-percent`, `-window-minutes`, `-reset-at` (Unix
  seconds; older answers `-reset-after-seconds`), the same with `secondary-`, for the
  `codex` family and for every named family whose `x-<name>-primary-used-percent` is
  present (`x-codex-other-…` is the family `codex_other`), with `x-<name>-limit-name`;
  `x-codex-credits-has-credits`, `-unlimited`, `-balance`; `x-codex-plan-type`;
  `x-codex-active-limit` (the family a 429 is about);
- a WebSocket message `{"type": "codex.rate_limits", "rate_limits": {"primary": {…},
  "secondary": {…}}, "plan_type", "credits", "metered_limit_name"}`, and `{"type":
  "error", "status": 429, "error": {…}, "headers": {…}}`;
- a 429 whose body's `error.type` is `usage_limit_reached` (`resets_at`, `plan_type`);
- `GET /backend-api/wham/usage`'s answer (`rate_limit.primary_window` …,
  `additional_rate_limits`, `credits`, `plan_type`);
- `response.usage` in `response.completed`: the tokens of one response.

Each reader returns a `Report` (or None when the input carries nothing of it); nothing
here raises on what an upstream sends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CODEX = "codex"
_USED = "-primary-used-percent"
# A header value longer than this is no number of ours (a hostile upstream's 60 KB).
_VALUE_LIMIT = 64
_FAMILY = re.compile(r"[a-z0-9_]{1,64}")
_SLOTS = ("primary", "secondary")


@dataclass(frozen=True, slots=True)
class Window:
    """One rate-limit window: how much of it is used, its length, when it starts anew."""

    used_percent: float
    minutes: int | None = None
    resets_at: int | None = None  # Unix seconds


@dataclass(frozen=True, slots=True)
class Credits:
    has_credits: bool
    unlimited: bool
    balance: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """What one source said of one limit family (`codex`, `codex_other`, …)."""

    family: str
    name: str | None = None
    primary: Window | None = None
    secondary: Window | None = None

    def windows(self) -> Iterable[tuple[str, Window]]:
        for slot, window in zip(_SLOTS, (self.primary, self.secondary), strict=True):
            if window is not None:
                yield slot, window


@dataclass(frozen=True, slots=True)
class Reached:
    """A 429 `usage_limit_reached`: the family it stopped, and when it lifts."""

    family: str
    resets_at: int | None = None


@dataclass(frozen=True, slots=True)
class Report:
    readings: tuple[Reading, ...] = ()
    plan_type: str | None = None
    credits: Credits | None = None
    reached: Reached | None = None
    # The family the upstream says is in force (x-codex-active-limit).
    active: str | None = None

    def __bool__(self) -> bool:
        return bool(self.readings or self.plan_type or self.credits or self.reached)


@dataclass(frozen=True, slots=True)
class Tokens:
    """One response's tokens (`response.usage`), or a session's summed."""

    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.cached + other.cached,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "cached": self.cached,
            "output": self.output,
            "reasoning": self.reasoning,
        }


@dataclass(slots=True)
class Meter:
    """What one exchange carried of usage, filled as it passes: the reports of its head
    and of event-stream or WebSocket messages (the latest few), a WebSocket session's
    tokens and model, and a bounded copy of an answer's body worth reading for usage (a
    `wham/usage` answer, a 429)."""

    reports: list[Report] = field(default_factory=list)
    head: Report | None = None
    tokens: Tokens | None = None
    model: str | None = None
    body: bytearray | None = None
    body_limit: int = 0

    def add(self, report: Report) -> None:
        self.reports.append(report)
        if len(self.reports) > 8:
            del self.reports[0]

    def keep(self, piece: bytes) -> None:
        body = self.body
        if body is not None and len(body) < self.body_limit:
            body += piece[: self.body_limit - len(body)]


def family_id(name: str) -> str | None:
    """A limit family's id as Codex writes it: lower case, `_` for `-`; None if odd."""
    normalized = name.strip().lower().replace("-", "_")
    return normalized if _FAMILY.fullmatch(normalized) else None


# ---- the readers


def from_headers(pairs: Iterable[tuple[bytes, bytes]], *, now: float) -> Report | None:
    """The usage in an answer's headers (raw pairs, as they crossed the wire)."""
    values: dict[str, str] = {}
    for name, value in pairs:
        lowered = name.lower()
        if lowered.startswith(b"x-") and len(value) <= _VALUE_LIMIT:
            values.setdefault(lowered.decode("latin-1"), value.decode("latin-1").strip())
    return _from_values(values, now=now)


def from_json_headers(headers: object, *, now: float) -> Report | None:
    """The usage in the `headers` object of a WebSocket error message."""
    if not isinstance(headers, dict):
        return None
    values = {
        str(name).lower(): _text(value)
        for name, value in headers.items()
        if isinstance(value, str | int | float | bool) and len(_text(value)) <= _VALUE_LIMIT
    }
    return _from_values(values, now=now)


def _text(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _from_values(values: Mapping[str, str], *, now: float) -> Report | None:
    families = [CODEX]
    for name in values:
        if name.endswith(_USED):
            found = family_id(name[2 : -len(_USED)])
            if found is not None and found not in families:
                families.append(found)
    readings = []
    for family in families:
        prefix = "x-" + family.replace("_", "-")
        primary = _header_window(values, prefix + "-primary", now)
        secondary = _header_window(values, prefix + "-secondary", now)
        if primary or secondary:
            limit_name = values.get(prefix + "-limit-name") or None
            readings.append(Reading(family, limit_name, primary, secondary))
    credits = None
    has, unlimited = (
        _bool(values.get("x-codex-credits-has-credits")),
        _bool(values.get("x-codex-credits-unlimited")),
    )
    if has is not None and unlimited is not None:
        credits = Credits(has, unlimited, values.get("x-codex-credits-balance") or None)
    active = values.get("x-codex-active-limit")
    report = Report(
        readings=tuple(readings),
        plan_type=values.get("x-codex-plan-type") or None,
        credits=credits,
        active=family_id(active) if active else None,
    )
    return report if report or report.active else None


def _header_window(values: Mapping[str, str], prefix: str, now: float) -> Window | None:
    used = _number(values.get(prefix + "-used-percent"))
    if used is None:
        return None
    minutes = _integer(values.get(prefix + "-window-minutes"))
    resets_at = _integer(values.get(prefix + "-reset-at"))
    if resets_at is None:
        after = _integer(values.get(prefix + "-reset-after-seconds"))
        resets_at = None if after is None else int(now) + after
    # As Codex: a window all zeros and nothing else says nothing.
    if used == 0 and not minutes and resets_at is None:
        return None
    return Window(used, minutes, resets_at)


def from_event(event: Mapping[str, Any], *, now: float) -> Report | None:
    """A `codex.rate_limits` message (WebSocket, or an event of a stream)."""
    if event.get("type") != "codex.rate_limits":
        return None
    limits = event.get("rate_limits")
    limits = limits if isinstance(limits, dict) else {}
    named = event.get("metered_limit_name") or event.get("limit_name")
    family = (family_id(named) if isinstance(named, str) else None) or CODEX
    primary = _json_window(limits.get("primary"), now, minutes_key="window_minutes")
    secondary = _json_window(limits.get("secondary"), now, minutes_key="window_minutes")
    readings = (Reading(family, None, primary, secondary),) if primary or secondary else ()
    return Report(
        readings=readings,
        plan_type=_string(event.get("plan_type")),
        credits=_json_credits(event.get("credits")),
    )


def from_error(error: Mapping[str, Any], report: Report | None, *, now: float) -> Report | None:
    """A 429's JSON body (or a WebSocket error message) beside what its headers said: a
    `usage_limit_reached` names when the limit lifts."""
    detail = error.get("error")
    if not isinstance(detail, dict):
        return report
    base = report or Report()
    if detail.get("type") != "usage_limit_reached":
        return report
    resets_at = _integer(detail.get("resets_at"))
    if resets_at is None:
        after = _integer(detail.get("resets_in_seconds"))
        resets_at = None if after is None else int(now) + after
    reached = Reached(base.active or CODEX, resets_at)
    plan = _string(detail.get("plan_type")) or base.plan_type
    return Report(base.readings, plan, base.credits, reached, base.active)


def from_wham(answer: Mapping[str, Any], *, now: float) -> Report | None:
    """`GET /backend-api/wham/usage`'s answer: what recent Codex CLIs show in /status."""
    readings: list[Reading] = []
    reached = None
    limits: list[tuple[str, str | None, object]] = [(CODEX, None, answer.get("rate_limit"))]
    extra = answer.get("additional_rate_limits")
    for item in extra[:16] if isinstance(extra, list) else ():
        if isinstance(item, dict):
            named = item.get("metered_feature") or item.get("limit_name")
            family = family_id(named) if isinstance(named, str) else None
            if family is not None:
                limits.append((family, _string(item.get("limit_name")), item.get("rate_limit")))
    for family, name, limit in limits:
        if not isinstance(limit, dict):
            continue
        primary = _json_window(limit.get("primary_window"), now, minutes_key=None)
        secondary = _json_window(limit.get("secondary_window"), now, minutes_key=None)
        if primary or secondary:
            readings.append(Reading(family, name, primary, secondary))
        if limit.get("limit_reached") is True and reached is None:
            full = [w for w in (primary, secondary) if w is not None and w.used_percent >= 100]
            resets = max((w.resets_at or 0 for w in full), default=0) or None
            reached = Reached(family, resets)
    report = Report(
        readings=tuple(readings),
        plan_type=_string(answer.get("plan_type")),
        credits=_json_credits(answer.get("credits")),
        reached=reached,
    )
    return report or None


def tokens(usage: object) -> Tokens | None:
    """`response.usage` of a closing event, as four counts; None if it is not one."""
    if not isinstance(usage, dict):
        return None
    given = usage.get("input_tokens"), usage.get("output_tokens")
    if not all(_count(value) for value in given):
        return None
    cached = _details(usage.get("input_tokens_details"), "cached_tokens")
    reasoning = _details(usage.get("output_tokens_details"), "reasoning_tokens")
    return Tokens(int(given[0]), cached, int(given[1]), reasoning)  # type: ignore[arg-type]


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 53


def _details(details: object, key: str) -> int:
    value = details.get(key) if isinstance(details, dict) else None
    return value if _count(value) else 0  # type: ignore[return-value]


def _json_window(window: object, now: float, *, minutes_key: str | None) -> Window | None:
    if not isinstance(window, dict):
        return None
    used = _number(window.get("used_percent"))
    if used is None:
        return None
    if minutes_key is None:
        seconds = _integer(window.get("limit_window_seconds"))
        minutes = None if seconds is None else seconds // 60
    else:
        minutes = _integer(window.get(minutes_key))
    resets_at = _integer(window.get("reset_at"))
    if resets_at is None:
        after = _integer(window.get("reset_after_seconds"))
        resets_at = None if after is None else int(now) + after
    return Window(used, minutes, resets_at)


def _json_credits(credits: object) -> Credits | None:
    if not isinstance(credits, dict):
        return None
    has, unlimited = credits.get("has_credits"), credits.get("unlimited")
    if not isinstance(has, bool) or not isinstance(unlimited, bool):
        return None
    balance = credits.get("balance")
    shown = _string(balance) if isinstance(balance, str) else None
    if isinstance(balance, int | float) and not isinstance(balance, bool):
        shown = f"{balance:g}"
    return Credits(has, unlimited, shown)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and 0 <= number <= 1000 else None


def _integer(value: object) -> int | None:
    number: int
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        number = int(value)
    elif isinstance(value, str) and len(value) <= 20:
        try:
            number = int(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if 0 <= number < 1 << 40 else None


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.lower()
    return True if lowered in ("true", "1") else False if lowered in ("false", "0") else None


def _string(value: object) -> str | None:
    return value[:64] if isinstance(value, str) and value.strip() else None
