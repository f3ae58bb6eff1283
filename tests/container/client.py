"""An OpenClaw-like client for the Compose example: it reads OpenClaw's own config (the
example mounts openclaw/openclaw.json), takes the openai-codex provider's base URL and
streams one image-generation-shaped request from `{baseUrl}/responses`, as OpenClaw 2026.4
does. Standard library only: it runs in the base image, under whatever Python that has.
It prints each event's type and exits 0 once `response.completed` has arrived."""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def main() -> int:
    with open(os.environ["OPENCLAW_CONFIG_PATH"], encoding="utf-8") as file:
        config = json.load(file)
    base_url = config["models"]["providers"]["openai-codex"]["baseUrl"]
    print(f"base_url {base_url}", flush=True)
    request = urllib.request.Request(
        f"{base_url}/responses",
        data=json.dumps({"model": "gpt-5.4", "input": "a red square", "stream": True}).encode(),
        headers={
            "Authorization": "Bearer fake-token-for-the-compose-test",
            "ChatGPT-Account-Id": "fake-account",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        },
    )
    # No proxy variables: the proxy is reached by its service name on the project network.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    completed = False
    with opener.open(request, timeout=30) as response:
        print(f"status {response.status} {response.headers['Content-Type']}", flush=True)
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
                print(f"event {kind}", flush=True)
                completed = completed or kind == "response.completed"
    return 0 if completed else 1


if __name__ == "__main__":
    sys.exit(main())
