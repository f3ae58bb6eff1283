"""The end-to-end suite runs the real clients (scripts/e2e installs them, then runs it in a
network namespace with only loopback). Every selected scenario starts at once, when the
first test asks; each test waits for the outcome it asserts on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Harness, Outcome
from tests.e2e.scenarios import SCENARIOS

HARNESS = pytest.StashKey[Harness]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): the scenario whose outcome a test checks")


def scenario_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("scenario")
    return None if marker is None else str(marker.args[0])


@pytest.fixture(scope="session")
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        pytest.fail(
            f"network interfaces {interfaces}: run ./scripts/e2e, which runs this suite in a "
            "network namespace with only loopback, so no client can reach another host"
        )
    names = dict.fromkeys(name for item in request.session.items if (name := scenario_of(item)))
    chosen = [SCENARIOS[name] for name in names]
    missing = sorted({f"{i.name} {i.version}" for s in chosen for i in s.needs if not i.installed})
    if missing:
        pytest.fail(
            f"clients not installed: {', '.join(missing)}; run ./scripts/e2e (it installs them)"
        )
    harness = request.config.stash[HARNESS] = Harness(chosen)
    yield harness
    harness.close()


@pytest.fixture
def outcome(request: pytest.FixtureRequest, harness: Harness) -> Outcome:
    """The test's scenario, once finished. Its report (each client's output tails, what the
    client sent, what the fake received, what the proxy logged) is printed here: pytest
    shows it with any failure of the test."""
    name = scenario_of(request.node)
    assert name is not None, f"{request.node.nodeid} names no scenario"
    result = harness.outcome(name)
    print(result.report())
    if result.error is not None:
        pytest.fail(f"scenario {result.name} did not finish: {result.error!r}")
    return result


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """How long each scenario and each client run took (they ran side by side)."""
    if HARNESS not in config.stash:
        return
    terminalreporter.section("end-to-end scenarios")
    for result in config.stash[HARNESS].finished():
        runs = ", ".join(
            f"{name} {step.run.seconds:.1f} s (exit {step.run.returncode})"
            for name, step in result.steps.items()
        )
        terminalreporter.write_line(f"{result.name}: {result.seconds:.1f} s: {runs}")
