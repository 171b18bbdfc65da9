"""Process plumbing under the local platform (`stack`): pid files that hold the kernel's start
time, so a stop never signals a process that merely reused a pid; stopping a process group and
reaping it; ports; running as another user; and the probes that say a service answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PlatformError(RuntimeError):
    """A process failed to start or become healthy; the message names its log file."""


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclasses.dataclass(frozen=True)
class ManagedProcess:
    """A process this platform started, as recorded in its pid file."""

    name: str
    pid: int
    start_time: str
    #: Signal that asks the process to shut down cleanly (PostgreSQL: SIGINT is "fast" shutdown).
    stop_signal: int = signal.SIGTERM

    def alive(self) -> bool:
        return proc_start_time(self.pid) == self.start_time


def as_user(user: str) -> list[str]:
    """Run as `user`, keeping the right to traverse folders only root can (CI's run folder sits
    in a 0700 temporary directory). PostgreSQL refuses to run as root at all.
    """
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={user}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]


def terminate(record: ManagedProcess, timeout_s: float = 20.0) -> None:
    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if record.stop_signal == signal.SIGINT and sig != signal.SIGKILL:
                os.kill(record.pid, sig)  # postgres: the postmaster stops its own children
            else:
                os.killpg(record.pid, sig)

    signal_group(record.stop_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not record.alive():
            return
        reap(record.pid)
        time.sleep(0.1)
    signal_group(signal.SIGKILL)
    reap(record.pid)


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def prepare_triton_backends(folder: Path) -> tuple[Path, Path]:
    """Lay out the Python backend from the nvidia-pytriton wheel; returns (tritonserver, dir)."""
    import pytriton

    root = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    python_backend = folder / "backends" / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    sources = [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    for src in sources:
        dst = python_backend / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copy2(src, dst)
    server = root / "bin" / "tritonserver"
    server.chmod(server.stat().st_mode | 0o111)
    (python_backend / "triton_python_backend_stub").chmod(0o755)
    return server, folder / "backends"


def pg_ready(port: int) -> bool:
    result = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
    )
    return result.returncode == 0


def ensure_database(admin_url: str, name: str) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


def _redis_command(port: int, command: bytes) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(command)
            return sock.recv(64)
    except OSError:
        return b""


def redis_ping(port: int) -> bool:
    return _redis_command(port, b"PING\r\n").startswith(b"+PONG")


def redis_exists(port: int, key: str) -> bool:
    return _redis_command(port, f"EXISTS {key}\r\n".encode()).startswith(b":1")


def triton_ready(http: str) -> bool:
    """Ready when every model is; a model that failed to load fails the start at once."""
    if http_ok(f"{http}/v2/health/ready"):
        return True
    try:
        request = urllib.request.Request(f"{http}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=2.0) as response:
            models = json.loads(response.read())
    except (OSError, ValueError):
        return False
    failed = [m for m in models if m.get("state") == "UNAVAILABLE" and m.get("reason")]
    if failed:
        reasons = "; ".join(f"{m['name']}: {m['reason']}" for m in failed)
        raise PlatformError(f"Triton could not load every model: {reasons}")
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False
