"""`codex-path-proxy usage`: what the running proxy has seen of the plan's usage.

It asks the proxy where the settings say it listens (`/_proxy/usage`, JSON) and prints
each account's windows as bars, as Codex's own /status does; `--json` prints the answer
as it came. It never asks chatgpt.com anything: the proxy shows what the answers that
passed through it said.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from yarl import URL

from proxy import usage_text
from proxy.doctor.baseurl import origin_of, proxy_base
from proxy.doctor.listener import ask, url
from proxy.doctor.wire import Answer
from proxy.settings import ENV_PREFIX, Settings

PATH = "/_proxy/usage"
PROG = "codex-path-proxy usage"


def fetch(settings: Settings) -> tuple[dict[str, Any] | None, str]:
    """The proxy's answer, or None and why there is none; and where it was asked."""
    origin = origin_of(URL(proxy_base(settings.listen)))
    where = url(origin)
    answer = asyncio.run(ask(origin, PATH))
    if not isinstance(answer, Answer):
        return None, (
            f"no proxy answers at {where} ({answer}): start it with `codex-path-proxy`, "
            f"or name where it listens (--port, --host, {ENV_PREFIX}LISTEN_PORT)"
        )
    try:
        found = json.loads(answer.body)
    except ValueError:
        found = None
    if answer.status == 200 and isinstance(found, dict) and "accounts" in found:
        return found, where
    error = found.get("error") if isinstance(found, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return None, f"the proxy at {where} says: {error['message']}"
    return None, (
        f"{where} answers {PATH} with {answer.summary}: not a codex-path-proxy, "
        "or one too old to count usage"
    )


def run(settings: Settings, *, as_json: bool) -> int:
    view, where = fetch(settings)
    if view is None:
        if as_json:
            print(json.dumps({"error": where}))
        else:
            print(f"{PROG}: {where}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(view, indent=2))
        return 0
    if not view.get("seen"):
        print(
            f"No answer through the proxy at {where} has carried plan usage yet: every "
            "answer from /backend-api/codex/responses does, and it shows here after the first."
        )
        return 0
    print(f"Plan usage as the answers through {where} said it:")
    print("\n".join(usage_text.lines(view)))
    return 0
