"""The usage ledger: the latest plan usage seen, per account and limit family, and the
warnings it calls for (pure: the caller gives the time and writes the warnings).

An account is known only by the redacted fingerprint the logs show for its
`chatgpt-account-id` (`[redacted #3a8254]`), never by its id. Each window warns once as
it crosses 80% and 95%, and once when its limit is reached (by the window's own count,
or a 429 `usage_limit_reached`); a window that starts anew (its reset time moves on, its
use falls) may warn again. Bounded: the 64 accounts and 16 families of each seen last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy import usage_text
from proxy.usage import CODEX, Credits, Reached, Report, Window

ACCOUNTS = 64
FAMILIES = 16
THRESHOLDS = (80, 95)
# Two sources may round a reset time differently: this close, it is the same one.
SAME_RESET = 120


@dataclass(slots=True)
class Tracked:
    window: Window
    warned: int  # the highest threshold already said (0, 80, 95, 100)


@dataclass(slots=True)
class Family:
    name: str | None = None
    windows: dict[str, Tracked] = field(default_factory=dict)
    reached: Reached | None = None
    said_reached: int | None = None  # the reset time a "reached" warning named (0: none)
    seen_at: float = 0.0
    source: str = ""
    request_id: str = ""


@dataclass(slots=True)
class Account:
    plan_type: str | None = None
    credits: Credits | None = None
    families: dict[str, Family] = field(default_factory=dict)
    seen_at: float = 0.0
    source: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning worth one log line: its message and fields."""

    message: str
    fields: dict[str, Any]


class Ledger:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}

    def record(
        self, account: str, report: Report, *, source: str, request_id: str, now: float
    ) -> list[Notice]:
        """Take what one source said; the warnings it calls for, in order."""
        book = self.accounts.pop(account, None) or Account()
        self.accounts[account] = book  # the newest last
        while len(self.accounts) > ACCOUNTS:
            del self.accounts[next(iter(self.accounts))]
        book.seen_at, book.source, book.request_id = now, source, request_id
        book.plan_type = report.plan_type or book.plan_type
        book.credits = report.credits or book.credits
        notices: list[Notice] = []
        # A 429 that comes with its headers is said once, by the reach (it names the reset).
        stopped = report.reached.family if report.reached is not None else None
        for reading in report.readings:
            family = self._family(book, reading.family)
            family.name = reading.name or family.name
            family.seen_at, family.source, family.request_id = now, source, request_id
            for slot, window in reading.windows():
                notices += self._window(
                    account,
                    reading.family,
                    family,
                    slot=slot,
                    window=window,
                    now=now,
                    quiet=reading.family == stopped,
                )
            if all(window.used_percent < 100 for _, window in reading.windows()):
                family.reached = None  # a later answer: usable again
        reached = report.reached
        if reached is not None:
            family = self._family(book, reached.family)
            family.reached = reached
            family.seen_at, family.source, family.request_id = now, source, request_id
            fullest = max(
                family.windows.items(), key=lambda item: item[1].window.used_percent, default=None
            )
            label = (
                usage_text.window_label(fullest[1].window.minutes, fullest[0])
                if fullest
                else "plan"
            ) + _label(family)
            notices += self._reached(
                account, reached.family, family, label=label, resets_at=reached.resets_at, now=now
            )
        for notice in notices:
            notice.fields.update(source=source, request_id=request_id)
        return notices

    def _family(self, book: Account, name: str) -> Family:
        family = book.families.pop(name, None) or Family()
        book.families[name] = family
        while len(book.families) > FAMILIES:
            del book.families[next(iter(book.families))]
        return family

    def _window(
        self,
        account: str,
        name: str,
        family: Family,
        *,
        slot: str,
        window: Window,
        now: float,
        quiet: bool,
    ) -> list[Notice]:
        level = 100 if window.used_percent >= 100 else _threshold(window.used_percent)
        tracked = family.windows.get(slot)
        if tracked is not None and window.resets_at is None:
            # A reading that does not say its reset (a 429's few headers): the window's
            # length and reset stay as last said.
            old = tracked.window
            window = Window(window.used_percent, window.minutes or old.minutes, old.resets_at)
        if tracked is None:
            tracked = family.windows[slot] = Tracked(window, 0)
        elif _new_period(tracked.window, window) or level < tracked.warned:
            tracked.warned = min(tracked.warned, level)
        tracked.window = window
        if level <= tracked.warned:
            return []
        tracked.warned = level
        if level == 100 and quiet:
            return []
        label = usage_text.window_label(window.minutes, slot) + _label(family)
        if level == 100:
            return self._reached(
                account, name, family, label=label, resets_at=window.resets_at, now=now
            )
        fields = {
            "account": account,
            "family": name,
            "window": usage_text.window_label(window.minutes, slot),
            "used_percent": window.used_percent,
            "resets_at": window.resets_at,
        }
        when = usage_text.resets(window.resets_at, now)
        message = f"{label} window {window.used_percent:g}% used for account {account}" + (
            f"; resets {when}" if when else ""
        )
        return [Notice(message, fields)]

    def _reached(
        self,
        account: str,
        name: str,
        family: Family,
        *,
        label: str,
        resets_at: int | None,
        now: float,
    ) -> list[Notice]:
        said = family.said_reached
        if said is not None and abs((resets_at or 0) - said) <= SAME_RESET:
            return []
        family.said_reached = resets_at or 0
        when = usage_text.resets(resets_at, now)
        message = f"{label} limit reached for account {account}" + (
            f"; resets {when}" if when else ""
        )
        fields = {"account": account, "family": name, "resets_at": resets_at}
        return [Notice(message, fields)]

    def view(self, now: float) -> dict[str, Any]:
        """What `/_proxy/usage` answers: every account, the newest first."""
        accounts = []
        for name, book in reversed(self.accounts.items()):
            limits = []
            for family_name, family in reversed(family_items(book)):
                reached = family.reached
                limits.append(
                    {
                        "family": family_name,
                        "name": family.name,
                        "reached": None
                        if reached is None or _past(reached.resets_at, now)
                        else {"resets_at": reached.resets_at},
                        "windows": [
                            _window_view(slot, tracked.window, now)
                            for slot, tracked in family.windows.items()
                        ],
                        "seen_at": family.seen_at,
                        "source": family.source,
                        "request_id": family.request_id,
                    }
                )
            credits = book.credits
            accounts.append(
                {
                    "account": name,
                    "plan_type": book.plan_type,
                    "credits": None
                    if credits is None
                    else {
                        "has_credits": credits.has_credits,
                        "unlimited": credits.unlimited,
                        "balance": credits.balance,
                    },
                    "limits": limits,
                    "seen_at": book.seen_at,
                    "source": book.source,
                    "request_id": book.request_id,
                }
            )
        return {"now": now, "seen": bool(accounts), "accounts": accounts}


def family_items(book: Account) -> list[tuple[str, Family]]:
    """The families, `codex` last (the view reverses: first)."""
    items = [(name, family) for name, family in book.families.items() if name != CODEX]
    if CODEX in book.families:
        items.append((CODEX, book.families[CODEX]))
    return items


def _window_view(slot: str, window: Window, now: float) -> dict[str, Any]:
    return {
        "slot": slot,
        "label": usage_text.window_label(window.minutes, slot),
        "used_percent": window.used_percent,
        "minutes": window.minutes,
        "resets_at": window.resets_at,
        # Its reset time has passed since it was seen: its count is from the last period.
        "stale": _past(window.resets_at, now),
    }


def _label(family: Family) -> str:
    return f" ({family.name})" if family.name else ""


def _threshold(used: float) -> int:
    return max((level for level in THRESHOLDS if used >= level), default=0)


def _new_period(old: Window, new: Window) -> bool:
    return (
        old.resets_at is not None
        and new.resets_at is not None
        and new.resets_at - old.resets_at > SAME_RESET
    )


def _past(resets_at: int | None, now: float) -> bool:
    return resets_at is not None and resets_at <= now
