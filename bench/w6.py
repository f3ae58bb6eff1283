"""W6: the first byte after an idle gap, through a network with a real round trip.

An HTTPS upstream (bench/upstream.py with a certificate of a CA made for the run) sits
behind a latency relay on 127.0.0.1 that holds a new connection for one round trip (the
TCP handshake a real network costs) and every chunk, each way, for half of one. After an
idle gap of 1, 20 and 90 s, one streamed request is timed to its answer's first byte:

  (a) direct   a fresh client process: DNS is local, then TCP, TLS and the request
  (b) nginx    a fresh local connection to nginx, which proxies over HTTPS to the relay
  (c) proxy    a fresh local connection to this proxy (upstream.url the relay, its CA added)
  (d) warm     a client that already holds a connection to the upstream: the best any
               client can do, one round trip

All four wait out each gap side by side and ask at the same moment. Targets: (c) within
0.2 RTT of (d), and below (a) by at least one RTT. Run as root (it starts nginx):

    bench/run w6 [--rtt-ms 50] [--gaps 1,20,90] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PATH = "/backend-api/codex/responses?w=sse&n=3&size=100"
LEGACY = "/backend-api/responses?w=sse&n=3&size=100"
BODY = b'{"model":"gpt-5","input":"hi","stream":true}'


def request(path: str, host: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nsession_id: w6\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


# --- The network: a relay that costs round trips.


class Relay:
    """TCP relay to `port`: a new connection waits one RTT before anything passes, then
    every chunk waits half an RTT, each way, in order."""

    def __init__(self, port: int, rtt: float) -> None:
        self.port = port
        self.rtt = rtt
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.sleep(self.rtt)  # SYN, SYN-ACK: one round trip before the first byte
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
            up_writer.close()
        except (OSError, asyncio.CancelledError):
            pass  # the run is over
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while data := await reader.read(65536):
            loop.call_later(self.rtt / 2, _write, writer, data)
        loop.call_later(self.rtt / 2, _eof, writer)


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)


def _eof(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing() and writer.can_write_eof():
        writer.write_eof()


# --- The clients.


async def first_byte(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> None:
    writer.write(data)
    await reader.readexactly(1)


async def read_rest(reader: asyncio.StreamReader) -> None:
    """The rest of a chunked answer (the connection stays usable)."""
    await reader.readuntil(b"0\r\n\r\n")


async def timed_local(port: int, path: str) -> float:
    """A fresh local connection (to nginx or the proxy): ms to the answer's first byte."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await first_byte(reader, writer, request(path, f"127.0.0.1:{port}"))
        return (time.perf_counter() - started) * 1000
    finally:
        writer.close()


async def timed_fresh_process(relay: int, ca: Path) -> float:
    """A new client process going straight to the upstream, as a Codex CLI run would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--fresh-client",
        str(relay),
        str(ca),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    return float(out)


async def fresh_client(relay: int, ca: Path) -> None:
    """Inside the fresh process: TCP, TLS, the request; prints ms to the first byte."""
    context = ssl.create_default_context(cafile=str(ca))
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", relay, ssl=context, server_hostname="127.0.0.1"
    )
    await first_byte(reader, writer, request(PATH, f"127.0.0.1:{relay}"))
    print(f"{(time.perf_counter() - started) * 1000:.3f}")
    writer.close()


class WarmClient:
    """A client holding a TLS connection to the upstream, through the relay."""

    def __init__(self, relay: int, ca: Path) -> None:
        self.relay = relay
        self.ca = ca
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.relay, ssl=context, server_hostname="127.0.0.1"
        )

    async def timed(self) -> float:
        assert self.reader is not None
        assert self.writer is not None
        started = time.perf_counter()
        await first_byte(self.reader, self.writer, request(PATH, f"127.0.0.1:{self.relay}"))
        elapsed = (time.perf_counter() - started) * 1000
        await read_rest(self.reader)
        return elapsed


# --- The set-up: a CA, the upstream, the relay, nginx and the proxy.


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "leaf.pem", directory / "leaf.key", directory / "leaf.csr"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(
        ["openssl", "req", "-x509", *curve, "-keyout", ca_key, "-out", ca, "-subj", "/CN=w6 CA"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "req", *curve, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key),
            *("-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext),
        ],
        check=True,
        capture_output=True,
    )
    return ca, cert, key


NGINX = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    underscores_in_headers on;
    upstream chatgpt {{
        server 127.0.0.1:{relay};
        keepalive 16;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host 127.0.0.1:{relay};
        proxy_buffering off;
        proxy_ssl_trusted_certificate {ca};
        proxy_ssl_verify on;
        proxy_ssl_name 127.0.0.1;
        proxy_ssl_server_name on;
        proxy_ssl_session_reuse on;
        location /backend-api/responses {{
            rewrite ^/backend-api/responses(.*)$ /backend-api/codex/responses$1 break;
            proxy_pass https://chatgpt;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return


def median(values: list[float]) -> float:
    return statistics.median(values)


async def run(rtt_ms: float, gaps: list[float], reps: int) -> dict[str, object]:
    rtt = rtt_ms / 1000
    with tempfile.TemporaryDirectory(prefix="w6-") as scratch:
        directory = Path(scratch)
        ca, cert, key = make_certificates(directory)
        processes: list[subprocess.Popen[bytes]] = []
        relays: list[Relay] = []
        try:
            # The targets run for the whole run: started once, here, as processes of its own.
            upstream = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, str(HERE / "upstream.py"), "--port", "0", "--tls", cert, key],
                stdout=subprocess.PIPE,
            )
            processes.append(upstream)
            assert upstream.stdout is not None
            upstream_port = int(upstream.stdout.readline().split()[1])
            relays.append(relay := Relay(upstream_port, rtt))
            relay_port = await relay.start()
            nginx_port, proxy_port = free_port(), free_port()
            (directory / "nginx.conf").write_text(
                NGINX.format(dir=directory, relay=relay_port, port=nginx_port, ca=ca)
            )
            processes.append(
                subprocess.Popen(  # noqa: ASYNC220
                    ["nginx", "-c", str(directory / "nginx.conf"), "-g", "daemon off;"]
                )
            )
            environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH")}
            environ["CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE"] = str(ca)
            processes.append(
                subprocess.Popen(  # noqa: ASYNC220
                    [
                        *(sys.executable, "-m", "proxy", "--port", str(proxy_port)),
                        *("--upstream", f"https://127.0.0.1:{relay_port}", "--log-format", "json"),
                    ],
                    cwd=REPO,
                    env=environ,
                    stderr=subprocess.DEVNULL,
                )
            )
            await wait_listening(nginx_port)
            await wait_listening(proxy_port)
            warm = WarmClient(relay_port, ca)
            await warm.open()
            # Each way out in use once, as after a first request.
            await timed_local(nginx_port, LEGACY)
            await timed_local(proxy_port, LEGACY)
            await warm.timed()
            samples: dict[str, dict[str, list[float]]] = {}
            for gap in gaps:
                for rep in range(reps):
                    await asyncio.sleep(gap)
                    direct, via_nginx, via_proxy, held = await asyncio.gather(
                        timed_fresh_process(relay_port, ca),
                        timed_local(nginx_port, LEGACY),
                        timed_local(proxy_port, LEGACY),
                        warm.timed(),
                    )
                    cell = samples.setdefault(f"{gap:g}", {})
                    for name, value in (
                        ("direct", direct),
                        ("nginx", via_nginx),
                        ("proxy", via_proxy),
                        ("warm", held),
                    ):
                        cell.setdefault(name, []).append(value)
                    print(f"  W6 gap {gap:g} s rep {rep + 1} done", file=sys.stderr, flush=True)
        finally:
            for relay in relays:
                relay.close()
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    return {"rtt_ms": rtt_ms, "reps": reps, "samples": samples}


def report(result: dict[str, object]) -> str:
    rtt = float(result["rtt_ms"])  # type: ignore[arg-type]
    samples: dict[str, dict[str, list[float]]] = result["samples"]  # type: ignore[assignment]
    lines = [
        f"W6: ms to the first byte after an idle gap, RTT {rtt:g} ms, medians of {result['reps']}",
        "",
        "| gap | (a) direct, fresh process | (b) nginx | (c) proxy | (d) warm client | "
        "(c) - (d) | (a) - (c) | targets |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for gap, cell in samples.items():
        a, b, c, d = (median(cell[name]) for name in ("direct", "nginx", "proxy", "warm"))
        near = c - d <= 0.2 * rtt
        below = a - c >= rtt
        verdict = " and ".join(
            f"{'PASS' if ok else 'FAIL'} {what}"
            for ok, what in ((near, "within 0.2 RTT of (d)"), (below, "1 RTT below (a)"))
        )
        lines.append(
            f"| {gap} s | {a:.1f} | {b:.1f} | {c:.1f} | {d:.1f} | {(c - d) / rtt:+.2f} RTT | "
            f"{(a - c) / rtt:+.2f} RTT | {verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--fresh-client":
        asyncio.run(fresh_client(int(sys.argv[2]), Path(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--gaps", default="1,20,90", help="idle gaps in seconds")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args()
    gaps = [float(gap) for gap in args.gaps.split(",")]
    result = asyncio.run(run(args.rtt_ms, gaps, args.reps))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(report(result))


if __name__ == "__main__":
    main()
