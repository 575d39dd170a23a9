"""Test fixtures: a private redis-server per test session, never a shared one.

The server runs on a free port in a temporary directory with persistence off. Each test
starts from an empty database of that server (it is ours to flush). If no redis-server
binary exists, the session fails loudly instead of skipping. The other topologies (Cluster,
Sentinel, TLS: tests/topologies.py) start once per session, for the tests that ask for them.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import topologies

import taskit
from taskit import config

ROOT = Path(__file__).resolve().parent.parent

# A test run started in the background by a non-interactive shell (as CI may start it) inherits
# SIGINT ignored, and so would every process a test starts: Python then never raises
# KeyboardInterrupt, and a `taskit info -i` stopped with Ctrl-C runs on. Exec resets a handled
# signal to its default, so handling it here gives every child the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

free_port = topologies.free_port


class RedisServer(topologies.Node):
    """The suite's redis-server: stop it (to simulate an outage), start it again on its port."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, *topologies.NO_PERSISTENCE)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        try:
            super().start(*extra)
        except topologies.TopologyError as exc:
            pytest.exit(str(exc), 2)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


# -- targets: the suites below run on the single server and on the session's cluster --------

#: the modules whose tests using `connection` or `cli_env` run on both targets (issue 12);
#: test_delays is the scheduling suite (test_schedule parses schedules, and uses no Redis)
ON_BOTH = {"test_enqueue", "test_job", "test_worker", "test_registries", "test_retry",
           "test_periodic", "test_faults", "test_delays"}
TARGETS = ("single", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "single_only(reason): the test inspects a single node's internals")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of ON_BOTH on both targets, except those marked single_only or that ask
    for the single server itself (`redis_server`: they stop it, count its commands, ...)."""
    if "target" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    direct = inspect.signature(metafunc.function).parameters
    if module in ON_BOTH and "redis_server" not in direct and not metafunc.definition.get_closest_marker("single_only"):
        metafunc.parametrize("target", TARGETS, indirect=True)


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(name, URL) of the Redis the test runs on: the single server unless parametrized."""
    name = getattr(request, "param", "single")
    if name == "cluster":
        started: topologies.Cluster = request.getfixturevalue("cluster")
        for node in started.nodes:
            if not node.alive:
                started.restart(node)  # a test killed it
        masters = started.masters()
        for node in masters:
            with node.client() as client:
                client.config_resetstat()
        yield name, started.url
        for node in masters:
            if node.alive:
                assert not refused_on(node), f"{node} refused commands: {refused_on(node)}"
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    if not server.alive:
        server.start()  # a test stopped it
    yield name, server.url


@pytest.fixture
def masters_of(target: tuple[str, str], request: pytest.FixtureRequest) -> Callable[..., set[int]]:
    """queue names -> the ports of the masters that hold their keys (one port on the single server)."""
    from taskit.storage import keys

    def ports(*queues: str) -> set[int]:
        if target[0] == "single":
            return {request.getfixturevalue("redis_server").port}
        started: topologies.Cluster = request.getfixturevalue("cluster")
        return {started.owner(keys.of_queue(name).queue).port for name in queues}

    return ports


def refused_on(node: topologies.Node) -> dict[str, Any]:
    """What a master refused since its stats were reset: CROSSSLOT errors, and the commands
    it rejected (a script's redis.call of a key on another node is one: "Script attempted to
    access a non local key"). Checked after each test on the cluster, since in a worker
    subprocess such an error might only be logged. (NOSCRIPT, an EVALSHA rejected before
    the script is loaded, is expected; so are the ERR replies to redis-py's CLIENT SETINFO.)"""
    refused = {k: v for k, v in node.info("errorstats").items() if "CROSSSLOT" in k}
    refused.update({k: v for k, v in node.info("commandstats").items()
                    if v.get("rejected_calls") and not k.startswith(("cmdstat_evalsha", "cmdstat_client"))})
    return refused


@pytest.fixture
def connection(target: tuple[str, str], request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """A client of the test's target, flushed first (every master of a cluster), made taskit's default."""
    name, url = target
    client = config.connect(url) if name == "cluster" else request.getfixturevalue("redis_server").client()
    with taskit_default(client, url, monkeypatch) as client:
        yield client


@contextmanager
def taskit_default(client: redis.Redis, url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """`client` flushed, and taskit's default (TASKIT_REDIS_URL too) until the block ends."""
    client.flushall()
    monkeypatch.setenv("TASKIT_REDIS_URL", url)
    taskit.configure(connection=client)
    try:
        yield client
    finally:
        taskit.configure()
        client.close()


@pytest.fixture
def queue(connection: redis.Redis) -> taskit.Queue:
    """The default queue on the private server."""
    return taskit.Queue(connection=connection)


@pytest.fixture
def cli_env(target: tuple[str, str]) -> dict[str, str]:
    """Environment for `taskit` subprocesses: the test's Redis and the tests' modules importable."""
    return taskit_env(target[1])


def taskit_env(url: str) -> dict[str, str]:
    """Environment for `taskit` subprocesses on the Redis of `url`, the tests' modules importable."""
    env = dict(os.environ)
    env["TASKIT_REDIS_URL"] = url
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


# -- topologies (tests/topologies.py), started once per session by the tests that need them --


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topologies.Cluster]:
    """3 masters + 3 replicas. A test that kills a node restarts it before it ends."""
    with topologies.started(topologies.Cluster(tmp_path_factory.mktemp("cluster"))) as started:
        yield started


@pytest.fixture(scope="session")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topologies.Sentinels]:
    with topologies.started(topologies.Sentinels(tmp_path_factory.mktemp("sentinel"))) as started:
        yield started


@pytest.fixture
def sentinel_connection(sentinels: topologies.Sentinels, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """A client of the Sentinel-managed master (both data nodes up, flushed), made taskit's default."""
    for node in sentinels.data:
        if not node.alive:
            sentinels.restore(node)  # a test failed over and did not bring it back
    with taskit_default(config.connect(sentinels.url), sentinels.url, monkeypatch) as client:
        yield client


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> topologies.Certificates:
    return topologies.Certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certificates: topologies.Certificates) -> Iterator[topologies.TLSServer]:
    """TLS only; a client certificate signed by the test CA is required."""
    server = topologies.TLSServer(tmp_path_factory.mktemp("tls"), certificates, auth_clients="yes")
    with topologies.started(server) as started:
        yield started


@pytest.fixture(scope="session")
def tls_server_optional(tmp_path_factory: pytest.TempPathFactory, certificates: topologies.Certificates) -> Iterator[topologies.TLSServer]:
    """TLS only; a client certificate is checked if one is shown, and not required."""
    server = topologies.TLSServer(tmp_path_factory.mktemp("tls-optional"), certificates, auth_clients="optional")
    with topologies.started(server) as started:
        yield started
