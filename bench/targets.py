"""What the load goes through: direct to the upstream, nginx, mitmproxy, and the proxy
under test (any command), each started pinned to the proxy core and stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from client import request_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RETIRED = "/backend-api/responses"
CANONICAL = "/backend-api/codex/responses"
DEFAULT_PROXY_CMD = "{python} -m proxy --port {port} --upstream {upstream} --log-format json"
COMPARATORS = ("direct", "nginx", "mitmproxy")

NGINX_CONF = """\
# The rewriting proxy of bench/README.md, as nginx would be set up to be fair to it.
worker_processes 1;
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    # One line per request, as the proxy's canonical log.
    access_log {dir}/nginx-access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    # Codex's session_id header would be dropped silently otherwise.
    underscores_in_headers on;
    large_client_header_buffers 4 64k;
    client_max_body_size 128m;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream chatgpt {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host 127.0.0.1:{upstream_port};
        # Stream both ways, as the proxy does.
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        proxy_connect_timeout 10s;
        location ~ ^/backend-api/(?:v1/|codex/v1/|v1/codex/)?responses(?<rest>/.*)?$ {{
            proxy_pass http://chatgpt/backend-api/codex/responses$rest$is_args$args;
        }}
        location / {{
            proxy_pass http://chatgpt;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_tool(name: str) -> str:
    for folder in (*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/sbin"):
        candidate = Path(folder) / name
        if folder and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(f"{name} not found: run bench/setup")


class StartError(RuntimeError):
    """A target did not start serving; the message ends with its last output."""


@dataclass(frozen=True, slots=True)
class Startup:
    listening_s: float
    serving_s: float


@dataclass(slots=True)
class Target:
    """One way through to the upstream. `command` is None for direct."""

    name: str
    kind: str  # direct | nginx | mitmproxy | proxy
    command: list[str] | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    startups: list[Startup] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The client's path: only direct needs the already rewritten one."""
        return CANONICAL if self.kind == "direct" else RETIRED

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def under_test(self) -> bool:
        return self.kind == "proxy"


def proxy_target(name: str, template: str) -> Target:
    return Target(
        name=name, kind="proxy", command=shlex.split(template), cwd=REPO, env=_clean_env()
    )


def comparator(name: str, mitm_venv: Path) -> Target:
    if name == "direct":
        return Target(name="direct", kind="direct")
    if name == "nginx":
        return Target(name="nginx", kind="nginx", command=[find_tool("nginx")])
    if name == "mitmproxy":
        mitmdump = mitm_venv / "bin" / "mitmdump"
        if not mitmdump.exists():
            raise FileNotFoundError(f"{mitmdump} not found: run bench/setup")
        return Target(name="mitmproxy", kind="mitmproxy", command=[str(mitmdump)])
    raise ValueError(f"unknown comparator {name!r} (known: {', '.join(COMPARATORS)})")


# Where the proxy's bytecode is cached between starts: an installed package (pip, the
# Docker image) starts from compiled bytecode, so the proxy under test must too, even
# where PYTHONDONTWRITEBYTECODE is set, without writing caches into the checkout.
PYCACHE = Path(tempfile.gettempdir()) / "codex-path-proxy-bench-pycache"


def _clean_env() -> dict[str, str]:
    """The proxy runs on its defaults: no setting leaks in from the bench's environment."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CODEX_PATH_PROXY_")
        and key not in ("AIOHTTP_NO_EXTENSIONS", "PYTHONDONTWRITEBYTECODE")
    }
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def argv_for(target: Target, port: int, upstream_port: int, scratch: Path) -> list[str]:
    assert target.command is not None
    upstream = f"http://127.0.0.1:{upstream_port}"
    if target.kind == "nginx":
        folder = scratch / f"nginx-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=folder, port=port, upstream_port=upstream_port))
        return [
            *target.command,
            "-p", str(folder), "-c", str(conf), "-e", str(folder / "nginx-error.log"),
            "-g", "daemon off;",
        ]  # fmt: skip
    if target.kind == "mitmproxy":
        confdir = scratch.parent / "mitmproxy-confdir"
        return [
            *target.command,
            "--mode", f"reverse:{upstream}/",
            "--listen-host", "127.0.0.1",
            "--listen-port", str(port),
            "--set", f"confdir={confdir}",
            "-s", str(HERE / "mitm_rewrite.py"),
        ]  # fmt: skip
    values = {"port": str(port), "upstream": upstream, "python": _python()}
    return [_substitute(part, values) for part in target.command]


def _python() -> str:
    import sys  # noqa: PLC0415

    return sys.executable


def _substitute(part: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        part = part.replace("{" + key + "}", value)
    return part


def start(
    target: Target, *, cpu: int, upstream_port: int, scratch: Path, timeout: float = 30.0
) -> Startup | None:
    """Start the target pinned to `cpu` and wait until it serves; None for direct."""
    began = launch(target, cpu=cpu, upstream_port=upstream_port, scratch=scratch)
    return ready(target, began, timeout)


def start_many(
    targets: list[Target], *, cpu: int, upstream_port: int, scratch: Path, timeout: float = 30.0
) -> None:
    """Start several targets at once (their start-up times are not W5's: they overlap)."""
    launched = [
        (target, launch(target, cpu=cpu, upstream_port=upstream_port, scratch=scratch))
        for target in targets
    ]
    for target, began in launched:
        ready(target, began, timeout, record=False)


def launch(target: Target, *, cpu: int, upstream_port: int, scratch: Path) -> float:
    """Spawn the target's process; the time it was spawned at."""
    if target.kind == "direct":
        target.port = upstream_port
        return time.monotonic()
    port = free_port()
    argv = ["taskset", "-c", str(cpu), *argv_for(target, port, upstream_port, scratch)]
    target.log_path = scratch / f"{target.name}-{port}.log"
    with target.log_path.open("wb") as log:
        began = time.monotonic()
        target.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=target.cwd,
            env=target.env,
            start_new_session=True,
        )
    target.port = port
    return began


def ready(target: Target, began: float, timeout: float, *, record: bool = True) -> Startup | None:
    """Wait until the launched target serves; StartError (and it is stopped) if it never does."""
    if target.kind == "direct":
        return None
    try:
        startup = wait_serving(target, began, timeout)
    except TimeoutError:
        stop(target)
        assert target.log_path is not None
        lines = target.log_path.read_text(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "(no output)"
        raise StartError(
            f"{target.name} did not serve within {timeout:g} s; its last output line: {last}"
        ) from None
    if record:
        target.startups.append(startup)
    return startup


def wait_serving(target: Target, began: float, timeout: float) -> Startup:
    """Poll every millisecond: first accepted connection, then first 200 to a small POST."""
    listening = 0.0
    request = request_bytes(f"{target.path}?w=small", f"127.0.0.1:{target.port}", b"{}")
    while time.monotonic() - began < timeout:
        if target.process is not None and target.process.poll() is not None:
            raise TimeoutError
        try:
            with socket.create_connection(("127.0.0.1", target.port), timeout=2) as sock:
                listening = listening or time.monotonic() - began
                sock.sendall(request)
                if _status(sock) == 200:
                    return Startup(listening_s=listening, serving_s=time.monotonic() - began)
        except OSError:
            pass
        time.sleep(0.001)
    raise TimeoutError


def probe(port: int, path: str) -> int:
    """The status of a GET, or 0 when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return _status(sock)
    except OSError:
        return 0


def _status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head and len(head) < 4096:
        piece = sock.recv(4096)
        if not piece:
            return 0
        head += piece
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def stop_many(targets: list[Target], timeout: float = 10.0) -> None:
    """Ask every target to stop at once, then wait for each."""
    for target in targets:
        if target.process is not None and target.process.poll() is None:
            target.process.send_signal(signal.SIGTERM)
    for target in targets:
        stop(target, timeout)


def stop(target: Target, timeout: float = 10.0) -> None:
    process = target.process
    if process is None:
        return
    target.process = None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Still unreaped, so the group is still ours: its own children (nginx's
            # worker) go with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
