"""One exchange (request and its response) as the log sees it, written once when it ends."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from proxy.redact import redact_target


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_CUT = "upstream_cut"
    TIMEOUT = "timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    REJECTED = "rejected"


@dataclass(slots=True, kw_only=True)
class Exchange:
    method: str
    target: str
    upstream_target: str | None = None
    rule: str | None = None
    status: int | None = None
    outcome: Outcome = Outcome.COMPLETED
    cause: str | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    started: float = field(default_factory=time.perf_counter)

    def fail(self, outcome: Outcome, cause: str) -> None:
        self.outcome = outcome
        self.cause = cause

    def fields(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": redact_target(self.target),
            "upstream_path": redact_target(self.upstream_target) if self.upstream_target else None,
            "rule": self.rule,
            "status": self.status,
            "outcome": str(self.outcome),
            "cause": self.cause,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }

    def log(self) -> None:
        log = structlog.get_logger("proxy.request")
        if self.outcome is Outcome.COMPLETED:
            log.info("request", **self.fields())
        else:
            log.warning("request", **self.fields())
