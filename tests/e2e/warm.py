"""Install step for OpenClaw 2026.4.x, run by install_clients.sh with registry access.

On first use, OpenClaw 2026.4.x npm-installs the runtime dependencies of the bundled
plugins it loads, into the shared plugin-stage folder; a test run (offline) cannot. So the
image and chat commands run here once, with the network, against a loopback server that
answers every request 400: they load their plugins (installing what those need), then
fail at once, which is expected. This also fills the shared compile caches the test runs
then start from.

    python3 -m tests.e2e.warm
"""

from __future__ import annotations

import asyncio
import http.server
import sys
import tempfile
import threading
from pathlib import Path

from tests.e2e import openclaw


class Refuse(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b'{"error": {"message": "warm-up only", "type": "invalid_request_error"}}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def staged() -> list[Path]:
    return list(openclaw.OLD.plugin_stage.glob("*/node_modules/@mariozechner/pi-ai/package.json"))


async def main() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_port}/backend-api"
    runs = []
    try:
        for command in (openclaw.image, openclaw.model_run):
            with tempfile.TemporaryDirectory(prefix="e2e-warm-") as tmp:
                home = Path(tmp)
                openclaw.set_up(openclaw.OLD, home, base_url)
                run = await command(openclaw.OLD, home, timeout=900, network=True).run()
                print(run.report())
                runs.append(run)
    finally:
        server.shutdown()
    if staged() and all(run.returncode is not None for run in runs):
        print(f"[warm] plugin dependencies staged in {sum(r.seconds for r in runs):.0f} s")
        return 0
    print(f"[warm] no plugin dependencies in {openclaw.OLD.plugin_stage}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
