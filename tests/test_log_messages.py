"""The proxy's own log messages come out as written; credentials in them stay masked.

Every literal message passed to a log call anywhere in proxy/ is collected from the
source, logged through the real configuration (JSON and console), and compared.
"""

from __future__ import annotations

import ast
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from proxy.log import configure_logging
from proxy.redact import fingerprint

SOURCE = Path(__file__).parent.parent / "proxy"
LEVELS = ("debug", "info", "warning", "error", "exception", "critical")


def logged_messages() -> dict[str, str]:
    """Each literal message a log call in proxy/ passes, with where it is."""
    found: dict[str, str] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and node.args
            ):
                continue
            first = node.args[0]
            branches = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            for branch in branches:
                if isinstance(branch, ast.Constant) and isinstance(branch.value, str):
                    found[branch.value] = f"{path.relative_to(SOURCE.parent)}:{node.lineno}"
    return found


MESSAGES = logged_messages()


@pytest.fixture
def configured() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def render(message: str, log_format: str, **values: object) -> str:
    stream = io.StringIO()
    configure_logging("debug", log_format, stream)
    structlog.get_logger("proxy").warning(message, **values)
    return stream.getvalue()


def test_the_collector_finds_the_proxy_s_messages() -> None:
    assert len(MESSAGES) >= 10, MESSAGES
    assert any(
        message.startswith("listening beyond this machine: bearer tokens") for message in MESSAGES
    )


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("message", sorted(MESSAGES), ids=lambda m: MESSAGES[m])
def test_every_message_comes_out_as_written(message: str) -> None:
    assert json.loads(render(message, "json"))["event"] == message
    assert message in render(message, "console")


TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0b2tlbi1vd25lciJ9.dG9rZW4tc2lnbmF0dXJl"


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("secret", "text"),
    [
        (TOKEN, f"sent Authorization: Bearer {TOKEN}"),
        ("abc123opaque", "header was bearer abc123opaque, refused"),
        ("dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
        ("lowercaseonlybutlong", "Bearer lowercaseonlybutlong"),
        ("sk-proj-0123456789abcdef", "key sk-proj-0123456789abcdef in a body"),
    ],
)
def test_credentials_in_a_message_or_a_value_stay_masked(secret: str, text: str) -> None:
    for line in (render(text, "json", detail=text), render(text, "console", detail=text)):
        assert secret not in line
        assert f"[redacted #{fingerprint(secret)}]" in line
