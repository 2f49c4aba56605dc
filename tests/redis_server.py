"""A real ``redis-server`` on a free loopback port, in a temporary directory, for the Redis tests.

Tests import the ``redis_server`` fixture from here explicitly (conftest.py belongs
to the core tests). The server can be killed and started again on the same port,
which is how the outage tests take Redis away mid-test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server", "running_redis"]

_START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        raise RuntimeError("redis-server is not installed: run `make services`")
    return found


class RedisServer:
    """One redis-server process: no persistence, loopback only, stopped for good by ``close``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [
                _binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--protected-mode", "yes",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("redis-server did not answer PING in time")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Take Redis away abruptly (SIGKILL), as a crash or a lost node would."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        self.kill()


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A fresh redis-server, stopped and its directory removed on exit."""
    with tempfile.TemporaryDirectory(prefix="bearerguard-redis-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test (cheap: a few ms to start)."""
    with running_redis() as server:
        yield server
