"""The plan usage model, table-driven: every shape the upstream sends it in, the ledger's
warnings (each once) and the words and bars a person reads."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import usage, usage_text
from proxy.ledger import ACCOUNTS, FAMILIES, Ledger
from proxy.usage import Credits, Reached, Reading, Report, Tokens, Window

NOW = 1_796_676_254.0  # fixed: every reset below is relative to it
RESET = int(NOW) + 2 * 3600 + 11 * 60
WEEK = int(NOW) + 4 * 86400


def pairs(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]


HEADERS = pairs(
    X_Codex_Primary_Used_Percent="42.5",
    x_codex_primary_window_minutes="300",
    x_codex_primary_reset_at=str(RESET),
    x_codex_secondary_used_percent="12",
    x_codex_secondary_window_minutes="10080",
    x_codex_secondary_reset_after_seconds="345600",
    x_codex_credits_has_credits="True",
    x_codex_credits_unlimited="0",
    x_codex_credits_balance=" 38 ",
    x_codex_plan_type="plus",
    x_codex_other_primary_used_percent="80",
    x_codex_other_limit_name="GPT-5.2-Codex-Sonic",
    x_request_id="req_1",
)


def test_headers_every_family_credits_and_plan() -> None:
    report = usage.from_headers(HEADERS, now=NOW)
    assert report == Report(
        readings=(
            Reading(
                "codex",
                None,
                Window(42.5, 300, RESET),
                Window(12.0, 10080, WEEK),
            ),
            Reading("codex_other", "GPT-5.2-Codex-Sonic", Window(80.0), None),
        ),
        plan_type="plus",
        credits=Credits(has_credits=True, unlimited=False, balance="38"),
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Nothing of usage: not a report.
        (pairs(x_request_id="1"), None),
        # All zeros and nothing else says nothing (as Codex); a bad number is no window.
        (pairs(x_codex_primary_used_percent="0"), None),
        (pairs(x_codex_primary_used_percent="q" * 60), None),
        (pairs(x_codex_primary_used_percent="nan"), None),
        (pairs(x_codex_primary_used_percent="7" * 70), None),  # longer than any number
        # Credits need both flags; a family id must be a plain name.
        (pairs(x_codex_credits_has_credits="true"), None),
        ([(b"x-bad.name-primary-used-percent", b"5")], None),
        # A 429's family alone is still worth knowing.
        (pairs(x_codex_active_limit="Codex-Other"), Report(active="codex_other")),
        (
            pairs(x_codex_primary_used_percent="0", x_codex_primary_window_minutes="300"),
            Report(readings=(Reading("codex", None, Window(0.0, 300)),)),
        ),
        (
            pairs(x_codex_primary_used_percent="3", x_codex_primary_reset_at="soon"),
            Report(readings=(Reading("codex", None, Window(3.0)),)),
        ),
    ],
)
def test_headers_that_say_little_or_nothing(
    headers: list[tuple[bytes, bytes]], expected: Report | None
) -> None:
    assert usage.from_headers(headers, now=NOW) == expected


def test_a_rate_limits_message() -> None:
    event = {
        "type": "codex.rate_limits",
        "plan_type": "pro",
        "rate_limits": {
            "primary": {"used_percent": 97, "window_minutes": 300, "reset_at": RESET},
            "secondary": {"used_percent": 5.5, "window_minutes": 10080, "reset_after_seconds": 60},
        },
        "credits": {"has_credits": True, "unlimited": True, "balance": 12.5},
        "metered_limit_name": "codex_other",
    }
    assert usage.from_event(event, now=NOW) == Report(
        readings=(
            Reading(
                "codex_other", None, Window(97.0, 300, RESET), Window(5.5, 10080, int(NOW) + 60)
            ),
        ),
        plan_type="pro",
        credits=Credits(has_credits=True, unlimited=True, balance="12.5"),
    )
    assert usage.from_event({"type": "response.created"}, now=NOW) is None
    bare = usage.from_event({"type": "codex.rate_limits", "rate_limits": [], "credits": 1}, now=NOW)
    assert bare == Report()
    assert not bare


def test_a_429_says_the_limit_is_reached_and_when_it_lifts() -> None:
    headers = usage.from_headers(
        pairs(x_codex_active_limit="codex", x_codex_primary_used_percent="100"), now=NOW
    )
    body = {"error": {"type": "usage_limit_reached", "plan_type": "plus", "resets_at": RESET}}
    report = usage.from_error(body, headers, now=NOW)
    assert report is not None
    assert report.reached == Reached("codex", RESET)
    assert report.plan_type == "plus"
    assert report.readings == (Reading("codex", None, Window(100.0)),)
    in_seconds = {"error": {"type": "usage_limit_reached", "resets_in_seconds": 90}}
    assert usage.from_error(in_seconds, None, now=NOW) == Report(
        reached=Reached("codex", int(NOW) + 90)
    )
    # Another 429 (or not an error at all) adds nothing to what the headers said.
    assert usage.from_error({"error": {"type": "rate_limit"}}, headers, now=NOW) is headers
    assert usage.from_error({"error": "text"}, None, now=NOW) is None


def test_a_wham_usage_answer() -> None:
    answer: dict[str, Any] = {
        "plan_type": "team",
        "rate_limit": {
            "allowed": False,
            "limit_reached": True,
            "primary_window": {
                "used_percent": 100,
                "limit_window_seconds": 18000,
                "reset_after_seconds": 600,
                "reset_at": RESET,
            },
            "secondary_window": {"used_percent": 40, "limit_window_seconds": 604800},
        },
        "credits": {"has_credits": False, "unlimited": False, "balance": None},
        "additional_rate_limits": [
            {
                "limit_name": "GPT-5.2-Codex-Sonic",
                "metered_feature": "codex_other",
                "rate_limit": {"primary_window": {"used_percent": 10, "reset_after_seconds": 5}},
            },
            {"limit_name": "?", "metered_feature": "not an id!", "rate_limit": {}},
            "junk",
        ],
    }
    assert usage.from_wham(answer, now=NOW) == Report(
        readings=(
            Reading("codex", None, Window(100.0, 300, RESET), Window(40.0, 10080, None)),
            Reading("codex_other", "GPT-5.2-Codex-Sonic", Window(10.0, None, int(NOW) + 5)),
        ),
        plan_type="team",
        credits=Credits(has_credits=False, unlimited=False),
        reached=Reached("codex", RESET),
    )
    assert usage.from_wham({"detail": "unauthorized"}, now=NOW) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            {
                "input_tokens": 12300,
                "input_tokens_details": {"cached_tokens": 8000},
                "output_tokens": 845,
                "output_tokens_details": {"reasoning_tokens": 512},
                "total_tokens": 13145,
            },
            Tokens(12300, 8000, 845, 512),
        ),
        ({"input_tokens": 10, "output_tokens": 2}, Tokens(10, 0, 2, 0)),
        ({"input_tokens": True, "output_tokens": 2}, None),
        ({"input_tokens": -1, "output_tokens": 2}, None),
        ({"input_tokens": 1 << 60, "output_tokens": 2}, None),
        ({"output_tokens": 2}, None),
        ("usage", None),
    ],
)
def test_tokens(given: object, expected: Tokens | None) -> None:
    assert usage.tokens(given) == expected


def test_tokens_add_up() -> None:
    assert Tokens(1, 2, 3, 4) + Tokens(10, 20, 30, 40) == Tokens(11, 22, 33, 44)


def window(percent: float, resets_at: int = RESET, minutes: int = 300) -> Report:
    return Report(readings=(Reading("codex", None, Window(percent, minutes, resets_at)),))


def test_the_ledger_warns_once_at_80_and_95_and_when_the_limit_is_reached() -> None:
    ledger = Ledger()
    said = []
    for percent in (10, 79.9, 80, 81, 90, 95, 96, 99, 100, 100, 100):
        notices = ledger.record(
            "[redacted #3a8254]",
            window(percent),
            source="headers",
            request_id=f"r{percent}",
            now=NOW,
        )
        said += [(percent, notice.message) for notice in notices]
    when = f"at {usage_text.clock(RESET, NOW)} (in 2 h 11 min)"
    assert said == [
        (80, f"5h window 80% used for account [redacted #3a8254]; resets {when}"),
        (95, f"5h window 95% used for account [redacted #3a8254]; resets {when}"),
        (100, f"5h limit reached for account [redacted #3a8254]; resets {when}"),
    ]
    # A 429 for the same reset says nothing new; a new period starts afresh.
    reached = Report(reached=Reached("codex", RESET + 30))
    assert ledger.record("[redacted #3a8254]", reached, source="429", request_id="x", now=NOW) == []
    later = RESET + 5 * 3600
    fresh = ledger.record(
        "[redacted #3a8254]", window(3, later), source="headers", request_id="y", now=NOW
    )
    assert fresh == []
    again = ledger.record(
        "[redacted #3a8254]", window(85, later), source="headers", request_id="z", now=NOW
    )
    assert [notice.fields for notice in again] == [
        {
            "account": "[redacted #3a8254]",
            "family": "codex",
            "window": "5h",
            "used_percent": 85.0,
            "resets_at": later,
            "source": "headers",
            "request_id": "z",
        }
    ]


def test_a_429_alone_warns_and_lifts_with_a_later_answer() -> None:
    ledger = Ledger()
    notices = ledger.record(
        "[redacted #3a8254]",
        Report(reached=Reached("codex", RESET)),
        source="429",
        request_id="a",
        now=NOW,
    )
    assert [n.message for n in notices] == [
        f"plan limit reached for account [redacted #3a8254]; resets at "
        f"{usage_text.clock(RESET, NOW)} (in 2 h 11 min)"
    ]
    [limit] = ledger.view(NOW)["accounts"][0]["limits"]
    assert limit["reached"] == {"resets_at": RESET}
    assert ledger.view(RESET + 1)["accounts"][0]["limits"][0]["reached"] is None
    ledger.record("[redacted #3a8254]", window(20), source="headers", request_id="b", now=NOW)
    assert ledger.view(NOW)["accounts"][0]["limits"][0]["reached"] is None


def test_the_view_newest_account_first_codex_first_and_bounded() -> None:
    ledger = Ledger()
    assert ledger.view(NOW) == {"now": NOW, "seen": False, "accounts": []}
    other = Report(
        readings=(Reading("codex_other", "Sonic", Window(5.0, 10080, RESET)),),
        plan_type="plus",
        credits=Credits(has_credits=True, unlimited=False, balance="38"),
    )
    ledger.record("[redacted #aaaaaa]", window(42), source="headers", request_id="1", now=NOW)
    ledger.record("[redacted #aaaaaa]", other, source="websocket", request_id="2", now=NOW + 1)
    ledger.record("[redacted #bbbbbb]", window(1), source="headers", request_id="3", now=NOW + 2)
    view = ledger.view(NOW + 3)
    assert [a["account"] for a in view["accounts"]] == ["[redacted #bbbbbb]", "[redacted #aaaaaa]"]
    first = view["accounts"][1]
    assert first["plan_type"] == "plus"
    assert first["credits"] == {"has_credits": True, "unlimited": False, "balance": "38"}
    assert [limit["family"] for limit in first["limits"]] == ["codex", "codex_other"]
    assert first["limits"][0]["windows"] == [
        {
            "slot": "primary",
            "label": "5h",
            "used_percent": 42.0,
            "minutes": 300,
            "resets_at": RESET,
            "stale": False,
        }
    ]
    assert first["limits"][1]["windows"][0]["label"] == "weekly"
    assert (first["source"], first["request_id"]) == ("websocket", "2")
    assert ledger.view(RESET)["accounts"][1]["limits"][0]["windows"][0]["stale"] is True
    for n in range(ACCOUNTS + 5):
        ledger.record(f"[redacted #{n:06x}]", window(1), source="h", request_id="", now=NOW)
    assert len(ledger.accounts) == ACCOUNTS
    many = Report(readings=tuple(Reading(f"f{n}", None, Window(1.0)) for n in range(40)))
    ledger.record("[redacted #cccccc]", many, source="h", request_id="", now=NOW)
    assert len(ledger.accounts["[redacted #cccccc]"].families) == FAMILIES


@pytest.mark.parametrize(
    ("minutes", "slot", "label"),
    [
        (None, "primary", "5h"),
        (None, "secondary", "weekly"),
        (300, "primary", "5h"),
        (60, "primary", "1h"),
        (1, "primary", "1h"),
        (1440, "primary", "24h"),
        (10080, "secondary", "weekly"),
        (43200, "secondary", "monthly"),
        (525600, "secondary", "annual"),
    ],
)
def test_window_labels_as_codex_says_them(minutes: int | None, slot: str, label: str) -> None:
    assert usage_text.window_label(minutes, slot) == label


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0, "in 0 s"),
        (45.4, "in 45 s"),
        (60, "in 1 min"),
        (3600, "in 1 h"),
        (2 * 3600 + 11 * 60 + 5, "in 2 h 11 min"),
        (3 * 86400 + 4 * 3600, "in 3 d 4 h"),
        (2 * 86400, "in 2 d"),
    ],
)
def test_until(seconds: float, said: str) -> None:
    assert usage_text.until(seconds) == said


def test_clock_resets_bar_and_counts() -> None:
    local = datetime.datetime.fromtimestamp(RESET)  # this machine's local time
    today = datetime.datetime.fromtimestamp(NOW).date()
    shown = (
        f"{local:%H:%M}" if local.date() == today else f"{local:%H:%M} on {local.day} {local:%b}"
    )
    assert usage_text.clock(RESET, NOW) == shown
    week = datetime.datetime.fromtimestamp(WEEK)
    assert usage_text.clock(WEEK, NOW) == f"{week:%H:%M} on {week.day} {week:%b}"
    assert usage_text.resets(None, NOW) == ""
    assert usage_text.resets(int(NOW) - 1, NOW).endswith("(passed)")
    assert usage_text.bar(42) == "[████████░░░░░░░░░░░░]"
    assert usage_text.bar(150) == "[" + "█" * 20 + "]"
    assert usage_text.bar(-3) == "[" + "░" * 20 + "]"
    assert [usage_text.count(n) for n in (845, 1000, 12_345, 1_200_000, 3_000_000)] == [
        "845",
        "1k",
        "12.3k",
        "1.2M",
        "3M",
    ]
    assert usage_text.ago(0.2) == "just now"
    assert usage_text.ago(125) == "2 min ago"


def test_the_usage_command_s_lines() -> None:
    ledger = Ledger()
    ledger.record(
        "[redacted #3a8254]",
        usage.from_headers(HEADERS, now=NOW) or Report(),
        source="headers",
        request_id="req_1",
        now=NOW - 12,
    )
    ledger.record(
        "[redacted #3a8254]",
        Report(reached=Reached("codex_other", RESET)),
        source="429",
        request_id="req_2",
        now=NOW - 12,
    )
    lines = usage_text.lines(ledger.view(NOW))
    clock, week = usage_text.clock(RESET, NOW), usage_text.clock(WEEK, NOW)
    rows = [
        ("5h limit:", f"[████████░░░░░░░░░░░░] 42% used, resets at {clock} (in 2 h 11 min)"),
        ("Weekly limit:", f"[██░░░░░░░░░░░░░░░░░░] 12% used, resets at {week} (in 4 d)"),
        ("5h limit (GPT-5.2-Codex-Sonic):", "[████████████████░░░░] 80% used"),
        ("Limit (GPT-5.2-Codex-Sonic):", f"reached (429): lifts at {clock} (in 2 h 11 min)"),
        ("Credits:", "38 credits"),
    ]
    assert lines == [
        "account [redacted #3a8254] · plan plus · seen 12 s ago (429, request req_2)",
        *(f"  {label:<31}  {text}" for label, text in rows),
    ]
    assert usage_text.lines({"now": NOW, "seen": False, "accounts": []}) == []


@pytest.mark.parametrize(
    ("credits", "said"),
    [
        ({"unlimited": True, "has_credits": True, "balance": "3"}, "unlimited"),
        ({"unlimited": False, "has_credits": True, "balance": None}, "available"),
        ({"unlimited": False, "has_credits": False, "balance": None}, "none"),
    ],
)
def test_credits_in_words(credits: dict[str, Any], said: str) -> None:
    assert usage_text.credits_text(credits) == said


def test_a_reading_without_its_reset_keeps_the_window_s_last_one() -> None:
    ledger = Ledger()
    ledger.record("[redacted #3a8254]", window(42), source="headers", request_id="a", now=NOW)
    bare = Report(readings=(Reading("codex", None, Window(100.0)),))
    ledger.record("[redacted #3a8254]", bare, source="429", request_id="b", now=NOW)
    [shown] = ledger.view(NOW)["accounts"][0]["limits"][0]["windows"]
    assert (shown["used_percent"], shown["minutes"], shown["resets_at"]) == (100.0, 300, RESET)


def test_a_meter_keeps_the_latest_reports_and_a_bounded_body() -> None:
    meter = usage.Meter(body=bytearray(), body_limit=10)
    for n in range(12):
        meter.add(window(n))
        meter.keep(b"abcdef")
    assert [r.readings[0].primary.used_percent for r in meter.reports] == list(range(4, 12))  # type: ignore[union-attr]
    assert meter.body == bytearray(b"abcdefabcd")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("not an object", None),
        (
            {"x-codex-credits-has-credits": True, "x-codex-credits-unlimited": False},
            Report(credits=Credits(has_credits=True, unlimited=False)),
        ),
        (
            {"x-codex-primary-used-percent": 55.5, "x-codex-primary-reset-at": [1]},
            Report(readings=(Reading("codex", None, Window(55.5)),)),
        ),
    ],
)
def test_json_headers_of_an_error_message(headers: object, expected: Report | None) -> None:
    assert usage.from_json_headers(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("window_json", "expected"),
    [
        (
            {"used_percent": "12", "reset_at": 1.5e9, "window_minutes": 300.0},
            Window(12.0, 300, 1500000000),
        ),
        ({"used_percent": None}, None),
        ({"used_percent": True}, None),
        ({"used_percent": [1]}, None),
        ({"used_percent": 5, "reset_at": float("inf"), "window_minutes": "x" * 30}, Window(5.0)),
        ({"used_percent": 5, "reset_at": -1}, Window(5.0)),
    ],
)
def test_event_windows_take_numbers_in_any_json_shape(
    window_json: dict[str, Any], expected: Window | None
) -> None:
    event = {"type": "codex.rate_limits", "rate_limits": {"primary": window_json}}
    report = usage.from_event(event, now=NOW)
    assert report is not None
    found = report.readings[0].primary if report.readings else None
    assert found == expected


def test_the_usage_lines_of_a_stale_window_and_credits_alone() -> None:
    view = {
        "now": NOW,
        "accounts": [
            {
                "account": "a",
                "seen_at": NOW,
                "source": "headers",
                "request_id": "1",
                "limits": [],
                "credits": {"unlimited": True},
            },
            {
                "account": "b",
                "seen_at": NOW,
                "source": "headers",
                "request_id": "2",
                "limits": [
                    {
                        "family": "codex",
                        "name": None,
                        "reached": None,
                        "windows": [
                            {"label": "5h", "used_percent": 50, "resets_at": None, "stale": True}
                        ],
                    }
                ],
            },
        ],
    }
    assert usage_text.lines(view) == [
        "account a · seen just now (headers, request 1)",
        "  Credits:  unlimited",
        "",
        "account b · seen just now (headers, request 2)",
        "  5h limit:  [██████████░░░░░░░░░░] 50% used; not seen since",
    ]


HEADER_NAMES = st.sampled_from(
    [name for name, _ in HEADERS]
    + [
        b"x-codex-active-limit",
        b"x-codex-other-secondary-used-percent",
        b"x-a-primary-used-percent",
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=6)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "type",
        "rate_limits",
        "primary",
        "secondary",
        "used_percent",
        "window_minutes",
        "reset_at",
        "reset_after_seconds",
        "credits",
        "has_credits",
        "unlimited",
        "balance",
        "plan_type",
        "error",
        "resets_at",
        "resets_in_seconds",
        "rate_limit",
        "primary_window",
        "limit_reached",
        "limit_window_seconds",
        "additional_rate_limits",
        "metered_feature",
        "limit_name",
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
        "cached_tokens",
    ]
)
SHAPED = st.recursive(
    JSON,
    lambda inner: st.dictionaries(KEYS, inner, max_size=8) | st.lists(inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(HEADER_NAMES | st.binary(max_size=40), st.binary(max_size=80)), max_size=12)
)
def test_no_header_list_makes_the_reader_raise(headers: list[tuple[bytes, bytes]]) -> None:
    # It runs on the forwarding path, outside any observer's guard.
    usage.from_headers(headers, now=NOW)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPED, SHAPED)
def test_no_json_makes_a_reader_raise(event: Any, headers: Any) -> None:
    found = event if isinstance(event, dict) else {"type": "codex.rate_limits", "x": event}
    usage.from_event({**found, "type": "codex.rate_limits"}, now=NOW)
    usage.from_error(found, usage.from_json_headers(headers, now=NOW), now=NOW)
    usage.from_wham(found, now=NOW)
    usage.tokens(event)
