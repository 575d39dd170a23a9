"""taskit through real topologies (issue 12): TLS with client certificates, the documented ACL
user, Sentinel (with a failover mid-run) and the cluster fixture (with a master failover).

The topologies come from tests/topologies.py, started once per session by conftest.py.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import sample_tasks
import topologies
from conftest import RedisServer, taskit_command
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

import taskit
from taskit import Job, JobCanceledError, JobStatus, Queue, Worker, config
from taskit.exceptions import (
    ConfigurationError,
    NotReplicatedError,
    RedisUnavailableError,
)
from taskit.storage import acl, keys
from taskit.storage.store import Store


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(taskit_command(*args), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    return done


def smoke(connection: redis.Redis) -> None:
    """Enqueue, run with a burst worker, fetch: the plain-Redis path end to end."""
    queue = Queue(connection=connection)
    added, failed = queue.enqueue(sample_tasks.add, 2, 3), queue.enqueue(sample_tasks.fail, "on purpose")
    assert Worker([queue], connection).work(burst=True) == 2
    assert Job.fetch(added.id, connection=connection).result == 5
    assert Job.fetch(failed.id, connection=connection).get_status() == JobStatus.FAILED


# -- TLS --------------------------------------------------------------------------------------


def test_taskit_runs_over_tls_with_a_client_certificate(tls_server: topologies.TLSServer, cli_env: dict[str, str]) -> None:
    client = config.connect(tls_server.url())
    assert config.describe(client) == f"rediss://127.0.0.1:{tls_server.node.port}/0"
    smoke(client)
    # the CLI takes the same URL, TLS files in its query
    job = Queue(connection=client).enqueue(sample_tasks.add, 20, 22)
    run(cli_env, "worker", "sample_tasks", "--burst", "-u", tls_server.url(host="localhost"))  # the certificate names localhost too
    assert Job.fetch(job.id, connection=client).result == 42
    info = run(dict(cli_env, TASKIT_REDIS_URL=tls_server.url()), "info").stdout
    assert info.splitlines()[0] == f"Redis at rediss://127.0.0.1:{tls_server.node.port}/0"
    client.close()


def test_tls_files_given_to_configure(tls_server: topologies.TLSServer) -> None:
    c = tls_server.certificates
    try:
        taskit.configure(url=f"rediss://127.0.0.1:{tls_server.node.port}/0", ssl_ca_certs=str(c.ca),
                         ssl_certfile=str(c.client), ssl_keyfile=str(c.client_key))
        job = sample_tasks.add.delay(1, 2)
        Worker(["default"]).work(burst=True)
        assert Job.fetch(job.id).result == 3
    finally:
        taskit.configure()


def test_a_client_certificate_is_required_unless_the_server_makes_it_optional(
    tls_server: topologies.TLSServer, tls_server_optional: topologies.TLSServer, tmp_path: Path
) -> None:
    without = config.connect(tls_server.url(client_certificate=False))
    with pytest.raises(RedisUnavailableError, match=r"^cannot reach Redis at rediss://127\.0\.0\.1:"):
        Store(without, retry_seconds=0.2).ping()
    Store(config.connect(tls_server_optional.url(client_certificate=False))).ping()
    # a server whose certificate another CA signed is refused
    stranger = topologies.Certificates(tmp_path / "other-ca")
    wrong_ca = config.connect(tls_server.url().replace(str(tls_server.certificates.ca), str(stranger.ca)))
    with pytest.raises(RedisUnavailableError, match="certificate verify failed"):
        Store(wrong_ca, retry_seconds=0.2).ping()


# -- ACL ------------------------------------------------------------------------------------


def test_the_documented_acl_user_runs_taskit_and_redis_denies_it_nothing(
    connection: redis.Redis, redis_server: RedisServer, cli_env: dict[str, str]
) -> None:
    user, password = "taskit-acl", secrets.token_hex(12)
    connection.execute_command(*acl.setuser(user, password).split())
    connection.execute_command("ACL", "LOG", "RESET")
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/1"  # db 1: redis-py sends SELECT
    client = config.connect(url)
    env = dict(cli_env, TASKIT_REDIS_URL=url)
    worker = None
    try:
        taskit.configure(connection=client)
        smoke(client)
        queue = Queue(connection=client)
        # scheduled and canceled; meta saved by a task; a queue emptied; a job deleted
        later = sample_tasks.add.apply_async(args=(1, 1), countdown=3600)
        later.cancel()
        meta = queue.enqueue(sample_tasks.record_meta, "k", "v")
        Queue("spare", connection=client).enqueue(sample_tasks.add, 0, 0)
        assert Queue("spare", connection=client).empty() == 1
        queue.enqueue(sample_tasks.add, 9, 9).delete()
        with pytest.raises(NotReplicatedError):  # WAIT is granted; this Redis has no replica to confirm
            queue.enqueue_call(sample_tasks.add, (8, 8), replicas=1, replica_timeout=0.05)
        # the failed job requeued; a real worker process runs it (and meta), while a job is waited for
        failed = queue.failed_job_registry
        failed.requeue(failed.get_job_ids()[0])
        waited = queue.enqueue(sample_tasks.sleep, 0.5)
        stopped = queue.enqueue(sample_tasks.sleep, 60)  # canceled while it runs: published to its worker
        worker = subprocess.Popen(taskit_command("worker", "sample_tasks", "--burst"), env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert waited.wait(timeout=60) == 0.5
        deadline = time.monotonic() + 30
        while stopped.get_status() != JobStatus.STARTED and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped.cancel("through the ACL user")
        with pytest.raises(JobCanceledError):
            stopped.wait(timeout=30)
        assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""
        assert Job.fetch(meta.id).meta == {"k": "v"}
        assert run(env, "info").stdout.startswith(f"Redis at redis://***@127.0.0.1:{redis_server.port}/1")
        assert run(env, "requeue", "--all").returncode == 0

        denied = connection.execute_command("ACL", "LOG")
        assert denied == [], f"the ACL line misses what taskit sent: {denied}"
        # and it allows nothing beyond taskit's keys and commands
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("not-taskit:key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
        (rules,) = [line for line in connection.acl_list() if line.startswith(f"user {user} ")]
        assert f"~{keys.PREFIX}:* resetchannels &{keys.PREFIX}:* -@all +" in rules
    finally:
        if worker is not None and worker.poll() is None:  # a failure above left it running
            worker.kill()
            worker.wait()
        taskit.configure()
        client.close()
        connection.execute_command("ACL", "DELUSER", user)


# -- Sentinel -------------------------------------------------------------------------------


def test_taskit_runs_through_sentinel(sentinels: topologies.Sentinels, sentinel_connection: redis.Redis) -> None:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels.sentinels)
    assert config.describe(sentinel_connection) == f"redis+sentinel://{hosts}/{sentinels.SERVICE}/0"
    smoke(sentinel_connection)
    # a master from redis-py's own Sentinel is a redis.Redis: taken as it is
    master = Sentinel([("127.0.0.1", s.port) for s in sentinels.sentinels]).master_for(sentinels.SERVICE)
    assert config.check_connection(master) is master
    assert Store.of(master).queue_count("default") == 0 and Store.of(master).where.startswith("redis+sentinel://")


def hold_connections(pool: redis.ConnectionPool, count: int) -> None:
    """Take `count` connections from a pool at once (as `count` threads' jobs do), then give them back."""
    held = [pool.get_connection() for _ in range(count)]
    try:
        assert all(c.send_command("PING") is None and c.read_response() == b"PONG" for c in held)
    finally:
        for c in held:
            pool.release(c)


def test_pools_from_sentinel_and_cluster_urls_are_not_capped_at_100(
    sentinels: topologies.Sentinels, sentinel_connection: redis.Redis, cluster: topologies.Cluster
) -> None:
    """redis-py 8 caps a pool at 100 connections; a `--threads 200` worker's jobs use 200."""
    hold_connections(sentinel_connection.connection_pool, 150)
    client = config.connect(cluster.url)
    try:
        for node in client.get_primaries():
            hold_connections(node.redis_connection.connection_pool, 150)
    finally:
        client.close()


def test_a_producer_and_a_worker_ride_through_a_sentinel_failover(
    sentinels: topologies.Sentinels, sentinel_connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Kill the master while a producer enqueues and a worker runs: both carry on with the new
    master; only writes acknowledged just before the kill may be lost (asynchronous
    replication), and every job that survived runs to the end."""
    log = tmp_path / "worker.log"
    env = dict(cli_env, TASKIT_REDIS_URL=sentinels.url)
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            taskit_command("worker", "sample_tasks", "--lease", "1", "--maintenance-interval", "0.2"),
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    # the default 5 s budget covers this failover (about 2 s here), not a loaded CI machine's
    Store.of(sentinel_connection).retry_seconds = 30
    acked: dict[str, float] = {}
    failover: dict[str, object] = {}

    def fail_over() -> None:
        failover["killed_at"] = time.monotonic()
        failover["nodes"] = sentinels.fail_over()
        failover["promoted_at"] = time.monotonic()

    killer = threading.Thread(target=fail_over)
    try:
        for i in range(300):
            job = sample_tasks.add.delay(i, i)  # raises if the producer does not ride through
            acked[job.id] = time.monotonic()
            if i == 100:
                killer.start()
            time.sleep(0.01)
        killer.join(timeout=120)
        assert "promoted_at" in failover, "the sentinels did not fail over"
        killed_at = failover["killed_at"]
        assert isinstance(killed_at, float)
        assert any(at > failover["promoted_at"] for at in acked.values()), "the producer went on after the failover"

        deadline, jobs = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            jobs = Job.fetch_many(list(acked))
            if all(job is None or job.get_status(refresh=False) == JobStatus.FINISHED for job in jobs):
                break
            time.sleep(0.2)
        stuck = [job.id for job in jobs if job is not None and job.get_status(refresh=False) != JobStatus.FINISHED]
        assert not stuck, f"{len(stuck)} job(s) never finished after the failover: {stuck[:5]}\n{log.read_text()}"
        lost = [job_id for job_id, job in zip(acked, jobs) if job is None]
        # the window: only what was acknowledged in the last moments before the kill
        outside = [job_id for job_id in lost if not killed_at - 1.0 <= acked[job_id] <= killed_at + 0.5]
        assert not outside, f"lost jobs acknowledged outside the failover window: {outside}"
        print(f"{len(acked)} jobs enqueued, {len(lost)} lost in the failover window, the rest finished")
        assert worker.poll() is None, f"the worker died in the failover:\n{log.read_text()}"
        assert "is back" in log.read_text() or "cannot reach" not in log.read_text(), log.read_text()
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        if killer.is_alive():
            killer.join(timeout=120)
        for node in sentinels.data:
            if not node.alive:
                sentinels.restore(node)


# -- Cluster ----------------------------------------------------------------------------------


def test_the_cluster_fixture_answers_through_a_cluster_url_and_survives_a_master_failover(cluster: topologies.Cluster) -> None:
    client = config.connect(cluster.url)
    assert isinstance(client, RedisCluster) and client.ping()
    assert config.describe(client) == cluster.url
    assert config.check_connection(client) is client
    store = Store(client, retry_seconds=60)  # a cluster failover takes a few seconds; the budget is not the point here
    assert store.where == cluster.url
    with pytest.raises(ConfigurationError, match="pass a RedisCluster built without decode_responses=True"):
        config.check_connection(RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, decode_responses=True))

    # one queue on the master that dies; one on another master, which answers CLUSTERDOWN
    # while the cluster has a slot without a master (between the failure and the promotion)
    queue = "failover"
    master = cluster.owner(keys.of_queue(queue).queue)
    bystander = next(f"bystander-{i}" for i in range(100) if cluster.owner(keys.of_queue(f"bystander-{i}").queue) is not master)
    for name in (queue, bystander):
        client.rpush(keys.of_queue(name).queue, *range(10))
    cluster.wait_replicated()
    counts: dict[str, list[int]] = {queue: [], bystander: []}
    errors: list[Exception] = []
    done = threading.Event()

    def read_through_the_failover(name: str) -> None:
        while not done.is_set():
            try:
                counts[name].append(store.queue_count(name))
            except Exception as exc:  # noqa: BLE001 (a StorageError here: an error not taken as transient)
                errors.append(exc)
                return
            time.sleep(0.01)

    readers = [threading.Thread(target=read_through_the_failover, args=(name,)) for name in counts]
    for reader in readers:
        reader.start()
    try:
        killed, promoted = cluster.fail_over(master)
        assert cluster.owner(keys.of_queue(queue).queue) is promoted
        time.sleep(0.2)
    finally:
        done.set()
        for reader in readers:
            reader.join(timeout=120)
        for node in cluster.nodes:
            if not node.alive:
                cluster.restart(node)
    assert not errors, errors
    for name, seen in counts.items():  # every read answered, from the old master or the new
        assert seen and set(seen) == {10}, name
        assert store.queue_count(name) == 10
    assert cluster.role(killed) == "slave"
    client.close()


def test_a_user_made_by_the_acl_line_of_an_older_taskit_still_runs_jobs(
    connection: redis.Redis, redis_server: RedisServer
) -> None:
    """The line before +hlen (the finish step's check that a drained state hash can go
    whole): a worker through such a user ends its jobs, leaves no state behind, and Redis
    denies it nothing."""
    user, password = "taskit-old", secrets.token_hex(12)
    older = acl.setuser(user, password).replace(" +hlen", "")
    assert "+hlen" not in older
    connection.execute_command(*older.split())
    connection.execute_command("ACL", "LOG", "RESET")  # (what tests before this one were denied)
    client = config.connect(f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0")
    queue = Queue(connection=client)
    jobs = queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, 1)) for i in range(200)])
    assert Worker([queue], connection=client).work(burst=True) == 200
    assert [Job.fetch(job.id, connection=client).result for job in jobs] == [i + 1 for i in range(200)]
    assert connection.hlen(keys.of_queue("default").tagged.state) == 0
    assert connection.acl_log() == []  # (finish.lua asks whether HLEN is granted: no denial)


def test_the_acl_line_for_a_cluster_lets_redis_py_learn_the_slots(cluster: topologies.Cluster) -> None:
    user, password = "taskit-acl", secrets.token_hex(12)
    admins = [node.client() for node in cluster.live()]
    for admin in admins:
        admin.execute_command(*acl.setuser(user, password, cluster=True).split())
        admin.execute_command("ACL", "LOG", "RESET")
    try:
        client = config.connect(cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:{password}@"))
        assert client.ping() and Store(client).queue_count("default") == 0
        client.close()
        denied = {admin.connection_pool.connection_kwargs["port"]: admin.execute_command("ACL", "LOG") for admin in admins}
        assert not any(denied.values()), denied
    finally:
        for admin in admins:
            admin.execute_command("ACL", "DELUSER", user)
            admin.close()


# -- a demoted master reached directly --------------------------------------------------------


def test_a_store_waits_out_a_master_that_answers_readonly(tmp_path: Path) -> None:
    """A client that points at a host, not a topology, reaches the old master after a failover:
    its READONLY replies are retried until it is writable (or the budget runs out)."""
    with topologies.started(RedisServer(tmp_path)) as server:
        client = config.connect(server.url)
        client.execute_command("REPLICAOF", "127.0.0.1", str(topologies.free_port()))  # demoted: writes refused
        with pytest.raises(RedisUnavailableError, match=r"tried for 0\.\d+s\): .*read only replica"):
            Store(client, retry_seconds=0.3).register_worker("w", {"host": "h"}, time.time() + 10, 10)
        store = Store.of(client)
        store.retry_seconds = 0.3
        with pytest.raises(RedisUnavailableError, match="read only replica"):  # not "already exists"
            sample_tasks.add.apply_async(args=(1, 2), connection=client)
        store.retry_seconds = 5.0
        promote = threading.Timer(0.5, lambda: server.client().execute_command("REPLICAOF", "NO", "ONE"))
        promote.start()
        job = sample_tasks.add.apply_async(args=(1, 2), connection=client)  # retried until writable
        promote.join()
        assert Job.fetch(job.id, connection=client).get_status() == JobStatus.QUEUED
        client.close()
