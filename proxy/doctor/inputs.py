"""The doctor's own inputs, read once at the process edge (proxy.cli) and passed in:
where the clients keep their configs, the variables that steer them, and the clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The variables that decide whether a client's request goes through another proxy.
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    home: Path
    openclaw_config_path: str
    openclaw_state_dir: str
    codex_home: str
    openai_base_url: str | None
    proxy_environ: Mapping[str, str]
    path: str
    now: float

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, home: Path, now: float) -> Inputs:
        return cls(
            home=Path(environ.get("HOME") or home),
            openclaw_config_path=environ.get("OPENCLAW_CONFIG_PATH", ""),
            openclaw_state_dir=environ.get("OPENCLAW_STATE_DIR", ""),
            codex_home=environ.get("CODEX_HOME", ""),
            openai_base_url=environ.get("OPENAI_BASE_URL"),
            proxy_environ={k: environ[k] for k in PROXY_VARIABLES if environ.get(k)},
            path=environ.get("PATH", ""),
            now=now,
        )

    def expand(self, path: str) -> Path:
        """A path from a variable, `~` meaning this HOME (as the clients expand it)."""
        if path == "~" or path.startswith("~/"):
            return self.home / path[2:]
        return Path(path)
