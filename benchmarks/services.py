"""The processes the benchmarks start and always stop: redis-server, uvicorn; and wrk's install."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

#: The repository root: child processes import ``benchmarks`` from here, wherever we run.
ROOT = Path(__file__).resolve().parents[1]


def child_pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Terminate one process we started (by its own handle), then kill it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def apt_install(package: str, binary: str) -> str | None:
    """Install a Debian package when its binary is missing; None on success, else why not."""
    if shutil.which(binary):
        return None
    if shutil.which("apt-get") is None:
        return f"{binary} is missing and apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"[bench] installing {package} with apt-get", file=sys.stderr)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    return None if shutil.which(binary) else f"{package} installed but {binary} not found"


class Redis:
    """A throw-away redis-server on a free loopback port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bearerguard-bench-redis-")
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir,
             "--logfile", str(Path(self.dir) / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not wait_for_port(self.port, proc=self.proc):
            stop(self.proc)
            raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def taskset_prefix(cpus: str | None) -> list[str]:
    """``taskset -c CPUS`` where taskset exists and the machine has more than one core."""
    if cpus is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", cpus]


def uvicorn_options() -> list[str]:
    """uvloop and httptools when both are installed (then for every scenario alike)."""
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError:
        return []
    return ["--loop", "uvloop", "--http", "httptools"]


class Uvicorn:
    """``uvicorn benchmarks.apps:app`` on a free port, configured by environment variables."""

    def __init__(self, env: Mapping[str, str], *, workers: int = 1, cpus: str | None = "0") -> None:
        self.port = free_port()
        cmd = [
            *taskset_prefix(cpus), sys.executable, "-m", "uvicorn", "benchmarks.apps:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
            "--no-access-log", "--log-level", "warning", *uvicorn_options(),
        ]  # fmt: skip
        self.command = cmd
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            prefix="bearerguard-bench-uvicorn-", suffix=".log", delete=False
        )
        full_env = {
            **os.environ,
            **env,
            "PYTHONPATH": child_pythonpath(),
        }
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for_port(self.port, timeout=30, proc=self.proc):
            stop(self.proc)
            raise RuntimeError(f"uvicorn did not start: {self.tail()}")

    def tail(self) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def close(self) -> None:
        stop(self.proc, timeout=10)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
