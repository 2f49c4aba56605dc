"""Real Redis topologies for the tests: a 3-node cluster and a sentinel watching one master.

Each node is a ``redis-server`` on a free loopback port in its own temporary
directory; the cluster is joined with ``redis-cli --cluster create`` and the
fixture waits until every node reports ``cluster_state:ok``. Imported explicitly
by the tests that use them, like ``redis_server``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from redis_server import RedisServer, _binary, _free_port

__all__ = ["RedisCluster", "RedisSentinel", "redis_cluster", "redis_sentinel"]

_READY_TIMEOUT = 20.0


def _cli(*args: str, timeout: float = 30.0) -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed: run `make services`")
    done = subprocess.run(
        [cli, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


class _Node(RedisServer):
    """A cluster-enabled redis-server (its node table in its own directory)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        # The bus defaults to port + 10000, which a free high port cannot always have.
        self.bus_port = _free_port()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                _binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000", "--cluster-port", str(self.bus_port),
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in time")


class RedisCluster:
    """Three masters sharing the 16384 slots, no replicas."""

    def __init__(self, stack: ExitStack) -> None:
        self.nodes: list[_Node] = []
        for _ in range(3):
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bg-node-")))
            node = _Node(directory)
            stack.callback(node.close)
            node.start()
            self.nodes.append(node)
        _cli(
            "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas", "0", "--cluster-yes",
        )  # fmt: skip
        deadline = time.monotonic() + _READY_TIMEOUT
        while not all(self._ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    @staticmethod
    def _ok(node: _Node) -> bool:
        return "cluster_state:ok" in _cli("-p", str(node.port), "cluster", "info")

    @property
    def url(self) -> str:
        """The ``limits`` notation: every node, any of which finds the others."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)


class RedisSentinel:
    """One master and one sentinel that monitors it as ``bgmaster`` (quorum 1)."""

    SERVICE = "bgmaster"

    def __init__(self, stack: ExitStack) -> None:
        master_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bg-master-")))
        self.master = RedisServer(master_dir)
        stack.callback(self.master.close)
        self.master.start()
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bg-sentinel-")))
        self.port = _free_port()
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n",
            encoding="ascii",
        )
        self.process = subprocess.Popen(
            [_binary(), str(config), "--sentinel", "--logfile", str(directory / "s.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(self._stop)
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            try:
                reply = _cli(
                    "-p", str(self.port), "sentinel", "get-master-addr-by-name", self.SERVICE
                )  # fmt: skip
                if str(self.master.port) in reply:
                    return
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel did not report its master in time")
            time.sleep(0.05)

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.SERVICE}"


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    with ExitStack() as stack:
        yield RedisCluster(stack)


@pytest.fixture(scope="module")
def redis_sentinel() -> Iterator[RedisSentinel]:
    with ExitStack() as stack:
        yield RedisSentinel(stack)
