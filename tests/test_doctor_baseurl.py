"""Where a base URL sends a client: the doctor's judgement, one row per form."""

from __future__ import annotations

import pytest

from proxy.doctor.baseurl import Places, Route, classify, is_chatgpt, proxy_base
from proxy.doctor.findings import dotted, shown
from proxy.settings import ListenSection

UPSTREAM = "http://127.0.0.1:9001"  # a test's fake chatgpt.com
PLACES = Places.build(ListenSection(port=8780), UPSTREAM, frozenset({("http", "127.0.0.1", 8999)}))


@pytest.mark.parametrize(
    ("base", "route"),
    [
        ("http://127.0.0.1:8780/backend-api", Route.PROXY),
        ("http://127.0.0.1:8780/backend-api/", Route.PROXY),
        ("http://127.0.0.1:8999/backend-api", Route.PROXY),  # another proxy found answering
        ("http://127.0.0.1:8780/backend-api/codex", Route.PROXY_SUFFIX),
        ("http://127.0.0.1:8780/v1", Route.PROXY_SUFFIX),
        ("http://127.0.0.1:8780", Route.PROXY_SUFFIX),
        ("http://localhost:8780/backend-api", Route.LOOPBACK),
        ("http://127.0.0.1:9999/backend-api", Route.LOOPBACK),
        ("http://[::1]:8780/backend-api", Route.LOOPBACK),
        ("https://chatgpt.com/backend-api", Route.RETIRED),
        ("https://chatgpt.com/backend-api/", Route.RETIRED),
        ("https://chatgpt.com:443/backend-api/v1", Route.RETIRED),
        ("https://chatgpt.com/backend-api/codex/v1", Route.RETIRED),
        ("http://127.0.0.1:9001/backend-api", Route.RETIRED),  # upstream.url counts as chatgpt.com
        ("https://chatgpt.com/backend-api/codex", Route.LIVE),
        ("https://CHATGPT.com/backend-api/codex/", Route.LIVE),
        ("https://chatgpt.com", Route.UPSTREAM_SUFFIX),
        ("https://chatgpt.com/v1", Route.UPSTREAM_SUFFIX),
        ("http://chatgpt.com/backend-api", Route.ELSEWHERE),  # not the same origin
        ("https://api.openai.com/v1", Route.ELSEWHERE),
        ("chatgpt.com/backend-api", Route.INVALID),
        ("ftp://chatgpt.com/backend-api", Route.INVALID),
        ("http://[::1/x", Route.INVALID),
        ("", Route.INVALID),
    ],
)
def test_classify(base: str, route: Route) -> None:
    assert classify(base, PLACES) is route


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("127.0.0.1", "http://127.0.0.1:8780/backend-api"),
        ("0.0.0.0", "http://127.0.0.1:8780/backend-api"),
        ("::", "http://127.0.0.1:8780/backend-api"),
        ("::1", "http://[::1]:8780/backend-api"),
        ("localhost", "http://localhost:8780/backend-api"),
    ],
)
def test_proxy_base_is_what_a_client_on_this_machine_uses(host: str, base: str) -> None:
    assert proxy_base(ListenSection(host=host, port=8780)) == base


def test_is_chatgpt() -> None:
    assert is_chatgpt("https://ChatGPT.com/backend-api")
    assert not is_chatgpt("http://127.0.0.1:9001/backend-api")
    assert not is_chatgpt("not a url")


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("http://me:s3cret@proxy.corp:3128", "http://me:[redacted]@proxy.corp:3128"),
        ("http://me:s3cret@[bad", "http://[redacted]"),
        ("Bearer abcdef123456", "Bearer [redacted #"),
        ("https://chatgpt.com/backend-api", "https://chatgpt.com/backend-api"),
    ],
)
def test_shown_masks_passwords_and_tokens(text: str, safe: str) -> None:
    assert shown(text).startswith(safe)
    assert "s3cret" not in shown(text)
    assert "abcdef123456" not in shown(text)


def test_dotted_quotes_only_odd_names() -> None:
    assert dotted(("models", "providers", "openai-codex", "baseUrl")) == (
        "models.providers.openai-codex.baseUrl"
    )
    assert dotted(("auth", "profiles", "openai-codex:me@example.com")) == (
        'auth.profiles."openai-codex:me@example.com"'
    )
