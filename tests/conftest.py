"""Test fixtures: a private redis-server per test session, never a shared one.

The server runs on a free port in a temporary directory with persistence off. Each test
starts from an empty database of that server (it is ours to flush). If no redis-server
binary exists, the session fails loudly instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

import taskit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process we own: start, stop (to simulate outages), restart on the same port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit("redis-server is not installed; the tests need it (apt-get install redis-server)", 2)
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.025)
        pytest.exit(f"redis-server did not start on port {self.port}; see {self.directory / 'redis.log'}", 2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def connection(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """A client of the private server, flushed first and made taskit's default."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test stopped it
    client = redis_server.client()
    client.flushall()
    monkeypatch.setenv("TASKIT_REDIS_URL", redis_server.url)
    taskit.configure(connection=client)
    yield client
    taskit.configure()
    client.close()


@pytest.fixture
def queue(connection: redis.Redis) -> taskit.Queue:
    """The default queue on the private server."""
    return taskit.Queue(connection=connection)


@pytest.fixture
def cli_env(redis_server: RedisServer) -> dict[str, str]:
    """Environment for `taskit` subprocesses: the private Redis and the tests' modules importable."""
    env = dict(os.environ)
    env["TASKIT_REDIS_URL"] = redis_server.url
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def taskit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskit", *args]


@contextmanager
def registered_worker(env: dict[str, str], connection: redis.Redis, name: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `taskit worker sample_tasks -n NAME ARGS...` process, once it has registered; killed on exit."""
    from taskit.storage import keys

    worker = subprocess.Popen(taskit_command("worker", "sample_tasks", "-n", name, *args),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not connection.zscore(keys.WORKERS, name):
            assert time.monotonic() < deadline and worker.poll() is None, f"worker {name} did not register"
            time.sleep(0.05)
        yield worker
    finally:
        worker.kill()
        worker.wait(timeout=30)
