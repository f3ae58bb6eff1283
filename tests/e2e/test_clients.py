"""The real clients against a fake chatgpt.com, straight (the bug) and through the proxy.

Each test checks what the client printed and wrote, what the fake received, and, through
the recording relay, that the proxy passed on what the client sent: the path rewritten
by the rule, Host set, hop-by-hop headers dropped, everything else unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from tests.e2e import transparency
from tests.e2e.clients import ACCOUNT_ID
from tests.e2e.fake_chatgpt import ANSWER
from tests.e2e.harness import Outcome
from tests.e2e.rig import Step

pytestmark = pytest.mark.e2e

Call = tuple[str, str, int | None]


def fake_calls(step: Step) -> list[Call]:
    """The Responses requests the fake received: method, raw target, its answer."""
    return [(r.method, r.target, r.status) for r in step.received if "/responses" in r.target]


def sent_calls(step: Step) -> list[tuple[str, str]]:
    return [(m.method, m.target) for m in step.sent if "/responses" in m.target]


def unfaithful(outcome: Outcome, step: Step) -> list[str]:
    """Every way the proxy did not pass on what the client sent (empty: faithful)."""
    assert outcome.rig is not None
    host = f"127.0.0.1:{outcome.rig.fake.port}"
    return transparency.unfaithful(step.sent, step.received, host=host)


def served_png(outcome: Outcome) -> bytes:
    assert outcome.rig is not None
    return outcome.rig.fake.png


def digest(data: bytes | None) -> str:
    return "nothing" if data is None else f"{len(data)} B sha256 {hashlib.sha256(data).hexdigest()}"


@pytest.mark.scenario("openclaw_old_image")
def test_openclaw_2026_4_23_image_straight_at_chatgpt_fails_with_the_403(outcome: Outcome) -> None:
    """The bug as reported: `${baseUrl}/responses` is retired, the client exits 1."""
    control = outcome.step("control")
    assert control.run.returncode == 1
    assert "OpenAI Codex image generation failed (HTTP 403)" in control.run.stderr
    assert "Just a moment..." in control.run.stderr
    assert fake_calls(control) == [("POST", "/backend-api/responses", 403)]
    assert "image" not in control.run.files


@pytest.mark.scenario("openclaw_old_image")
def test_openclaw_2026_4_23_image_through_the_proxy(outcome: Outcome) -> None:
    step = outcome.step("proxy")
    assert step.run.returncode == 0
    assert json.loads(step.run.stdout)["ok"] is True
    assert digest(step.run.files.get("image")) == digest(served_png(outcome))
    assert sent_calls(step) == [("POST", "/backend-api/responses")]
    assert fake_calls(step) == [("POST", "/backend-api/codex/responses", 200)]
    assert unfaithful(outcome, step) == []


@pytest.mark.scenario("openclaw_old_image")
def test_the_inspector_shows_openclaw_2026_4_23_image_request_and_the_image(
    outcome: Outcome,
) -> None:
    """Issue 16's user: with `--inspector`, the exchange OpenClaw's image generation made
    shows the model and tools it asked for, the image that came back (served whole) and
    how the stream ended, and nothing the inspector serves holds the credentials."""
    step = outcome.step("proxy")
    (sent,) = [m for m in step.sent if "/responses" in m.target]
    asked = json.loads(sent.body)
    shown = {name: data for name, data in step.run.files.items() if name.startswith("inspector")}
    token = (sent.header("Authorization") or "").removeprefix("Bearer ")
    assert len(token) > 100
    for data in shown.values():
        assert token.encode() not in data
        assert ACCOUNT_ID.encode() not in data

    content = json.loads(shown["inspector 1"])
    summary = content["request"]["summary"]
    assert summary["model"] == asked["model"]
    assert [tool.split(":")[0] for tool in summary["tools"]] == [t["type"] for t in asked["tools"]]
    assert "image_generation" in summary["tools"]
    answer = content["answer"]
    assert answer["status"] == "completed"
    (item,) = [item for item in answer["items"] if item["type"] == "image_generation_call"]
    png = served_png(outcome)
    assert (item["image"]["size"], item["image"]["sha256"]) == (
        len(png),
        hashlib.sha256(png).hexdigest(),
    )
    assert sorted(shown) == ["inspector 1", f"inspector 1 image {item['id']}"]
    assert shown[f"inspector 1 image {item['id']}"] == png
    assert step.proxy_lines[0]["stream_end"] == "response.completed"


@pytest.mark.scenario("openclaw_old_doctor")
def test_doctor_fix_makes_openclaw_2026_4_23_image_generation_work_through_the_proxy(
    outcome: Outcome,
) -> None:
    assert outcome.rig is not None
    provider = "models.providers.openai-codex"
    proxy_base = outcome.rig.via_proxy
    before = outcome.step("doctor")
    assert before.run.returncode == 1
    lines = [line.strip() for line in before.run.stdout.splitlines()]
    assert any(
        line.startswith("✘ ")
        and f'{provider}.baseUrl = "{outcome.rig.direct}"' in line
        and "OpenClaw 2026.4.23 posts images to" in line
        and line.endswith(f'→ set it to "{proxy_base}"')
        for line in lines
    ), before.run.stdout
    assert any(
        line.startswith("✘ ") and f"{provider}.request.allowPrivateNetwork: not set" in line
        for line in lines
    ), before.run.stdout

    fix = outcome.step("doctor --fix")
    assert fix.run.returncode == 0, fix.run.stdout
    assert fix.run.stdout.endswith("\nNothing is wrong.\n"), fix.run.stdout
    original, edited = before.run.files["config"], fix.run.files["config"]
    backups = [
        data for name, data in fix.run.files.items() if name.startswith("openclaw.json.bak-")
    ]
    assert backups == [original]
    old_lines, new_lines = original.decode().splitlines(), edited.decode().splitlines()
    assert [line for line in old_lines if line not in new_lines] == [
        f'        "baseUrl": "{outcome.rig.direct}",'
    ]
    assert [line for line in new_lines if line not in old_lines] == [
        '        "request": {',
        '          "allowPrivateNetwork": true',
        "        },",
        f'        "baseUrl": "{proxy_base}",',
    ]

    image = outcome.step("image")
    assert image.run.returncode == 0
    assert digest(image.run.files.get("image")) == digest(served_png(outcome))
    assert sent_calls(image) == [("POST", "/backend-api/responses")]
    assert fake_calls(image) == [("POST", "/backend-api/codex/responses", 200)]
    assert unfaithful(outcome, image) == []


@pytest.mark.scenario("openclaw_old_chat")
def test_openclaw_2026_4_23_chat_through_the_proxy(outcome: Outcome) -> None:
    step = outcome.step("proxy")
    assert step.run.returncode == 0
    assert json.loads(step.run.stdout)["outputs"][0]["text"] == ANSWER
    # Its chat path builds the live path itself: passed through untouched.
    assert sent_calls(step) == [("POST", "/backend-api/codex/responses")]
    assert fake_calls(step) == [("POST", "/backend-api/codex/responses", 200)]
    assert [r.header("chatgpt-account-id") for r in step.received] == [ACCOUNT_ID]
    assert unfaithful(outcome, step) == []


@pytest.mark.scenario("openclaw_latest")
def test_openclaw_latest_image_through_the_proxy(outcome: Outcome) -> None:
    assert outcome.step("doctor").run.returncode == 0
    step = outcome.step("image")
    assert step.run.returncode == 0
    assert digest(step.run.files.get("image")) == digest(served_png(outcome))
    assert sent_calls(step) == [("POST", "/backend-api/responses")]
    assert fake_calls(step) == [("POST", "/backend-api/codex/responses", 200)]
    assert unfaithful(outcome, step) == []


@pytest.mark.scenario("openclaw_latest")
def test_openclaw_latest_agent_over_websocket_through_the_proxy(outcome: Outcome) -> None:
    step = outcome.step("agent websocket")
    assert step.run.returncode == 0
    assert ANSWER in step.run.stdout
    assert fake_calls(step)[:1] == [("GET", "/backend-api/codex/responses", 101)]
    frames = [f for r in step.received for f in r.frames_in]
    assert any(f.get("type") == "response.create" for f in frames), frames
    assert unfaithful(outcome, step) == []


@pytest.mark.scenario("openclaw_latest")
def test_openclaw_latest_agent_falls_back_to_zstd_posts_through_the_proxy(outcome: Outcome) -> None:
    step = outcome.step("agent http")
    assert step.run.returncode == 0
    assert ANSWER in step.run.stdout
    calls = fake_calls(step)
    assert calls[:2] == [
        ("GET", "/backend-api/codex/responses", 426),
        ("POST", "/backend-api/codex/responses", 200),
    ]
    posts = [r for r in step.received if r.method == "POST" and "/responses" in r.target]
    assert {r.header("content-encoding") for r in posts} == {"zstd"}
    assert unfaithful(outcome, step) == []


@pytest.mark.scenario("codex")
def test_codex_straight_at_chatgpt_fails_with_403(outcome: Outcome) -> None:
    control = outcome.step("control")
    assert control.run.returncode == 1
    assert "403" in control.run.output()
    calls = fake_calls(control)
    assert calls, "Codex sent no Responses request"
    assert {(target, status) for _, target, status in calls} == {("/backend-api/responses", 403)}


@pytest.mark.scenario("codex")
def test_codex_over_websocket_through_the_proxy(outcome: Outcome) -> None:
    step = outcome.step("websocket")
    assert step.run.returncode == 0
    assert ANSWER in step.run.stdout
    assert sent_calls(step) == [("GET", "/backend-api/responses")]
    assert fake_calls(step) == [("GET", "/backend-api/codex/responses", 101)]
    frames = [f for r in step.received for f in r.frames_in]
    assert any(f.get("type") == "response.create" for f in frames), frames
    assert unfaithful(outcome, step) == []


@pytest.mark.scenario("codex")
def test_codex_falls_back_to_http_through_the_proxy_with_the_zstd_body_unchanged(
    outcome: Outcome,
) -> None:
    step = outcome.step("http")
    assert step.run.returncode == 0
    assert ANSWER in step.run.stdout
    assert sent_calls(step) == [
        ("GET", "/backend-api/responses"),
        ("POST", "/backend-api/responses"),
    ]
    assert fake_calls(step) == [
        ("GET", "/backend-api/codex/responses", 426),
        ("POST", "/backend-api/codex/responses", 200),
    ]
    post = next(r for r in step.received if r.method == "POST" and "/responses" in r.target)
    assert post.header("content-encoding") == "zstd"
    assert json.loads(post.decoded_body())["input"]
    # Byte-identical bodies and header lists, for this POST and every other request.
    assert unfaithful(outcome, step) == []


SDKS = [
    pytest.param("python", marks=pytest.mark.scenario("openai_python"), id="python"),
    pytest.param("js", marks=pytest.mark.scenario("openai_js"), id="js"),
]


def events_printed(step: Step) -> list[tuple[int, str, int]]:
    rows = [line.split("\t") for line in step.run.stdout.splitlines() if line.startswith("EVENT\t")]
    return [(int(seq), kind, int(size)) for _, seq, kind, size in rows]


@pytest.mark.parametrize("sdk", SDKS)
def test_openai_sdk_straight_at_chatgpt_fails_with_403(sdk: str, outcome: Outcome) -> None:
    control = outcome.step("control")
    assert control.run.returncode == 1
    assert "ERROR\t403" in control.run.stderr
    assert fake_calls(control) == [("POST", "/backend-api/responses", 403)]


@pytest.mark.parametrize("sdk", SDKS)
def test_openai_sdk_stream_arrives_event_by_event_through_the_proxy(
    sdk: str, outcome: Outcome
) -> None:
    """The fake sends each event only once the client has printed the one before, so a
    hop that held events back would miss an acknowledgement here."""
    assert outcome.rig is not None
    step = outcome.step("stream")
    assert step.run.returncode == 0
    assert outcome.rig.fake.missed_acks == [], "an event never reached the client in time"
    events = events_printed(step)
    assert [seq for seq, _, _ in events] == list(range(len(events)))
    assert [kind for _, kind, _ in events[-1:]] == ["response.completed"]
    image_sizes = [size for _, kind, size in events if kind.endswith("partial_image")]
    assert image_sizes == [len(base64.b64encode(served_png(outcome)))]
    assert image_sizes[0] > 2_000_000
    assert digest(step.run.files.get("image")) == digest(served_png(outcome))
    assert f"TEXT\t{ANSWER}" in step.run.stdout
    assert sent_calls(step) == [("POST", "/backend-api/responses")]
    assert fake_calls(step) == [("POST", "/backend-api/codex/responses", 200)]
    assert unfaithful(outcome, step) == []


@pytest.mark.parametrize("sdk", SDKS)
def test_openai_sdk_non_streaming_call_through_the_proxy(sdk: str, outcome: Outcome) -> None:
    step = outcome.step("once")
    assert step.run.returncode == 0
    assert f"TEXT\t{ANSWER}" in step.run.stdout
    assert fake_calls(step) == [("POST", "/backend-api/codex/responses", 200)]
    assert unfaithful(outcome, step) == []


@pytest.mark.parametrize("sdk", SDKS)
def test_openai_sdk_sees_an_error_inside_a_200_stream(sdk: str, outcome: Outcome) -> None:
    step = outcome.step("error in stream")
    assert step.run.returncode == 4
    assert "overloaded" in step.run.stderr
    assert fake_calls(step) == [("POST", "/backend-api/codex/responses", 200)]
