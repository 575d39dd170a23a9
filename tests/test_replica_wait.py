"""Producers' opt-in wait for replicas (issue 12, failover): `replicas=N` makes an enqueue
return only once N replicas have it (Redis WAIT, in the enqueue's own round trip), else raise
NotReplicatedError with the job left enqueued.

On the suite's single Redis (no replica) every wait fails, which shows the error and that
each entry point sends the WAIT; through Sentinel (a master and a replica) the wait succeeds,
really waits for a replica held back, and keeps every confirmed job through a failover.
"""

from __future__ import annotations

import datetime as dt
import math
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import sample_tasks
import topologies
from conftest import RedisServer, taskit_command
from redis.backoff import NoBackoff
from redis.retry import Retry
from roundtrips import commands_run, counting_client
from test_edge_cases import _reply_dropping_proxy

import taskit
from taskit import Job, JobStatus, NotReplicatedError, Queue, config
from taskit.exceptions import ConfigurationError
from taskit.storage import scripts
from taskit.storage.store import Store

TIMEOUT = 0.3  # a replica wait short enough for the tests that expect it to fail


def nothing_written(connection: redis.Redis) -> bool:
    return connection.dbsize() == 0


# -- a single Redis: no replica, so every wait fails -------------------------------------------


def test_a_single_redis_raises_after_the_timeout_and_keeps_the_job(connection: redis.Redis) -> None:
    started = time.monotonic()
    with pytest.raises(NotReplicatedError) as caught:
        sample_tasks.add.apply_async((1, 2), replicas=1, replica_timeout=TIMEOUT)
    took = time.monotonic() - started
    error = caught.value
    assert TIMEOUT <= took < TIMEOUT + 3, took  # the wait, and no more than a hang would take
    assert (error.acknowledged, error.replicas, error.timeout) == (0, 1, TIMEOUT)
    assert error.jobs == [error.job]
    message = str(error)
    assert f"job {error.job.id} is enqueued on queue 'default' on the master" in message
    assert "0 of the 1 replica(s) asked for confirmed it within 0.3s" in message
    assert "it stays enqueued and may run" in message and "docs/scaling.md" in message
    # not deleted: it is queued, equal to what Redis holds, and a worker runs it
    assert Job.fetch(error.job.id) == error.job and error.job.get_status() == JobStatus.QUEUED
    assert Queue().job_ids == [error.job.id]
    assert taskit.Worker(["default"]).work(burst=True) == 1 and error.job.refresh() is None and error.job.result == 3


def test_every_enqueue_path_waits_when_asked(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    queue = Queue(connection=connection, replicas=1, replica_timeout=TIMEOUT)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    ways = {
        "apply_async": lambda: sample_tasks.add.apply_async((1, 2), replicas=1, replica_timeout=TIMEOUT),
        "apply_async countdown": lambda: sample_tasks.add.apply_async((1, 2), countdown=60, replicas=1,
                                                                      replica_timeout=TIMEOUT),
        "Queue.enqueue": lambda: queue.enqueue(sample_tasks.add, 1, 2),
        "Queue.enqueue_call": lambda: Queue().enqueue_call(sample_tasks.add, (1, 2), replicas=1, replica_timeout=TIMEOUT),
        "Queue.enqueue_job": lambda: queue.enqueue_job(Job.create(sample_tasks.add, (1, 2))),
        "Queue.enqueue_in": lambda: queue.enqueue_in(60, sample_tasks.add, 1, 2),
        "Queue.enqueue_at": lambda: queue.enqueue_at(later, sample_tasks.add, 1, 2),
    }
    for way, enqueue in ways.items():
        connection.flushdb()
        with pytest.raises(NotReplicatedError) as caught:
            enqueue()
        assert Job.fetch(caught.value.job.id).get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED), way

    # a batch: one error for all of them, every job kept
    connection.flushdb()
    with pytest.raises(NotReplicatedError, match=r"^3 jobs \([\w.]+, \.\.\.\) are enqueued .* confirmed them") as caught:
        sample_tasks.add.map([(1, 1), (2, 2), (3, 3)], replicas=1, replica_timeout=TIMEOUT)
    assert len(caught.value.jobs) == 3 and caught.value.job is caught.value.jobs[0]
    assert Queue().job_ids == [job.id for job in caught.value.jobs]
    with pytest.raises(NotReplicatedError) as caught:
        queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, i)) for i in range(4)])
    assert len(caught.value.jobs) == 4 and Queue().count == 7

    # the process default (configure), for .delay() and every queue that does not say otherwise
    taskit.configure(connection=connection, replicas=1, replica_timeout=TIMEOUT)
    with pytest.raises(NotReplicatedError):
        sample_tasks.add.delay(1, 2)
    with pytest.raises(NotReplicatedError):
        Queue().enqueue(sample_tasks.add, 1, 2)
    # what is closer to the call wins: the queue's, then the call's
    assert Queue(replicas=0).enqueue(sample_tasks.add, 1, 2).get_status() == JobStatus.QUEUED
    assert sample_tasks.add.apply_async((1, 2), replicas=0).get_status() == JobStatus.QUEUED
    with pytest.raises(NotReplicatedError, match="within 0.05s"):
        Queue(replicas=0).enqueue_call(sample_tasks.add, (1, 2), replicas=1, replica_timeout=0.05)
    taskit.configure(connection=connection)  # back to no wait
    assert sample_tasks.add.delay(1, 2).get_status() == JobStatus.QUEUED

    # the shell: the id on stdout as always, the error on stderr, exit 1
    connection.flushdb()
    done = subprocess.run(taskit_command("enqueue", "sample_tasks.add", "1", "2", "--replicas", "1",
                                         "--replica-timeout", str(TIMEOUT)),
                          env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    job_id = done.stdout.strip()
    assert done.returncode == 1 and done.stderr.startswith(f"Error: job {job_id} is enqueued on queue 'default'"), done
    assert "Traceback" not in done.stderr and Job.fetch(job_id).get_status() == JobStatus.QUEUED


def test_a_wait_is_in_the_enqueues_own_round_trip(redis_server: RedisServer, connection: redis.Redis) -> None:
    client, trips = counting_client(redis_server)
    queue = Queue("rt", connection=client, replicas=1, replica_timeout=0.05)
    with commands_run(redis_server) as ran, pytest.raises(NotReplicatedError):
        queue.enqueue(sample_tasks.add, 1, 2)
    assert trips.trips == 1 and (ran["evalsha"], ran["wait"]) == (1, 1)
    trips.reset()
    with commands_run(redis_server) as ran, pytest.raises(NotReplicatedError):
        sample_tasks.add.map([(i, i) for i in range(20)], connection=client, replicas=1, replica_timeout=0.05)
    assert trips.trips == 1 and (ran["evalsha"], ran["wait"]) == (20, 1)  # one WAIT for the batch
    trips.reset()
    with commands_run(redis_server) as ran:
        Queue("rt", connection=client).enqueue(sample_tasks.add, 1, 2)  # no wait asked: none sent
    assert trips.trips == 1 and "wait" not in ran
    trips.reset()
    assert queue.enqueue_many([]) == [] and trips.trips == 0  # nothing to wait for
    client.close()


def test_a_redis_that_lost_its_scripts_still_waits_on_the_connection_that_wrote(
    redis_server: RedisServer, connection: redis.Redis
) -> None:
    """After a restart or a failover Redis has no scripts: the enqueue is re-run after SCRIPT
    LOAD, and WAIT is sent again after it on the same connection (a WAIT counts only its own
    connection's writes)."""
    client = redis_server.client()
    client.script_flush()
    with commands_run(redis_server) as ran, pytest.raises(NotReplicatedError) as caught:
        Queue(connection=client, replicas=1, replica_timeout=0.05).enqueue(sample_tasks.add, 1, 2)
    assert (ran["evalsha"], ran["wait"], ran["script|load"]) == (2, 2, 1)
    assert Queue().job_ids == [caught.value.job.id]
    client.close()


# -- wrong types and values, on each entry point: refused before anything is written ------------


BAD_REPLICAS = [True, 1.0, "1", -1]
BAD_TIMEOUTS = [0, -1, 0.0, math.nan, math.inf, "1", True, dt.timedelta(0)]


def entry_points(connection: redis.Redis) -> dict[str, Any]:
    """Each way to give the options, as a function of the keywords."""
    return {
        "configure": lambda **o: taskit.configure(connection=connection, **o),
        "Queue": lambda **o: Queue(connection=connection, **o),
        "apply_async": lambda **o: sample_tasks.add.apply_async((1, 2), **o),
        "map": lambda **o: sample_tasks.add.map([(1, 2)], **o),
        "enqueue_call": lambda **o: Queue().enqueue_call(sample_tasks.add, (1, 2), **o),
        "enqueue_job": lambda **o: Queue().enqueue_job(Job.create(sample_tasks.add, (1, 2)), **o),
        "enqueue_many": lambda **o: Queue().enqueue_many([Queue().prepare_data(sample_tasks.add, (1, 2))], **o),
    }


@pytest.mark.parametrize("option,bad", [("replicas", v) for v in BAD_REPLICAS] + [("replica_timeout", v) for v in BAD_TIMEOUTS])
def test_a_bad_option_is_refused_on_every_entry_point(connection: redis.Redis, option: str, bad: object) -> None:
    taskit.configure(connection=connection, replicas=0, replica_timeout=0.5)
    for way, call in entry_points(connection).items():
        with pytest.raises(ConfigurationError, match=f"^{option} must be "):
            call(**{option: bad})
        assert nothing_written(connection), way
    assert config.replica_wait() == (0, 0.5)  # configure refused: the previous default stands
    Queue(connection=connection, replicas=2, replica_timeout=dt.timedelta(milliseconds=250))  # good values pass


def test_bad_options_in_the_shell(cli_env: dict[str, str], connection: redis.Redis) -> None:
    for args, error in [(("--replicas", "-1"), "replicas must be 0 or more, not -1"),
                        (("--replica-timeout", "nan"), "replica_timeout must be more than 0 seconds and finite"),
                        (("--replica-timeout", "0"), "replica_timeout must be more than 0 seconds")]:
        done = subprocess.run(taskit_command("enqueue", "sample_tasks.add", "1", "2", *args),
                              env=cli_env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1 and error in done.stderr and not done.stdout, done
    assert nothing_written(connection)


def scale(replicas: int) -> int:
    return replicas


def test_the_rq_front_door_leaves_replicas_to_the_function(connection: redis.Redis) -> None:
    """`enqueue()` takes only RQ's reserved names out of kwargs, so a function's own `replicas`
    argument reaches it (no wait: one would fail here); the option is enqueue_call's or the Queue's."""
    job = Queue().enqueue(scale, replicas=3)
    assert Job.fetch(job.id).kwargs == {"replicas": 3}
    with pytest.raises(ConfigurationError, match="unknown enqueue option replicas"):
        Queue().enqueue(scale, kwargs={"replicas": 3}, replicas=1)  # RQ's explicit form: options are RQ's


def test_a_wait_longer_than_the_client_allows_is_refused(redis_server: RedisServer, connection: redis.Redis) -> None:
    """WAIT blocks the reply: past the client's socket timeout it would read as a lost connection."""
    client = redis.Redis(port=redis_server.port, socket_timeout=1.0)
    for call in (lambda: Queue(connection=client, replicas=1, replica_timeout=0.6),
                 lambda: taskit.configure(connection=client, replicas=1, replica_timeout=0.6),
                 lambda: sample_tasks.add.apply_async((1, 2), connection=client, replicas=1, replica_timeout=0.6)):
        with pytest.raises(ConfigurationError, match=r"^replica_timeout must be at most 0\.5s with this client"):
            call()
    assert nothing_written(connection)
    Queue(connection=client, replicas=1, replica_timeout=0.5)  # up to half of it
    client.close()


def test_a_cluster_client_is_refused_replicas(cluster: topologies.Cluster) -> None:
    """The cluster layout is not done (enqueue does not run on a cluster yet): no WAIT there."""
    client = config.connect(cluster.url)
    try:
        for call in (lambda: Queue(connection=client, replicas=1),
                     lambda: taskit.configure(connection=client, replicas=1),
                     lambda: sample_tasks.add.apply_async((1, 2), connection=client, replicas=1)):
            with pytest.raises(ConfigurationError, match="^replicas= is not supported with a Redis Cluster client"):
                call()
        Queue(connection=client, replicas=0)
    finally:
        taskit.configure()
        client.close()


# -- Sentinel: a master and a replica ---------------------------------------------------------


@contextmanager
def frozen(node: topologies.Node) -> Iterator[None]:
    """The node's process stopped (SIGSTOP) for the block: it holds its data and answers nothing."""
    assert node.process is not None
    node.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        node.process.send_signal(signal.SIGCONT)


def on_replica(sentinels: topologies.Sentinels, job_id: str) -> bool:
    with sentinels.replica().client(socket_timeout=2) as replica:
        return Job.fetch_many([job_id], connection=replica)[0] is not None


def test_through_sentinel_the_job_is_on_the_replica_when_the_call_returns(
    sentinels: topologies.Sentinels, sentinel_connection: redis.Redis
) -> None:
    # in one round trip, and on the replica at once
    client, trips = counting_client(sentinels.master())
    job = sample_tasks.add.apply_async((1, 2), connection=client, replicas=1)
    assert trips.trips == 1 and on_replica(sentinels, job.id)
    jobs = sample_tasks.add.map([(i, i) for i in range(50)], connection=client, replicas=1)
    assert trips.trips == 2 and all(on_replica(sentinels, j.id) for j in jobs)
    client.close()

    # the call waits for a replica that is late: it returns once the replica is back
    replica = sentinels.replica()
    thaw = threading.Timer(0.4, lambda: replica.process and replica.process.send_signal(signal.SIGCONT))
    assert replica.process is not None
    replica.process.send_signal(signal.SIGSTOP)
    thaw.start()
    try:
        started = time.monotonic()
        job = sample_tasks.add.apply_async((3, 4), replicas=1, replica_timeout=2)
        assert time.monotonic() - started >= 0.35  # it waited for the replica
        assert on_replica(sentinels, job.id)
    finally:
        thaw.join()
        replica.process.send_signal(signal.SIGCONT)
        sentinels.wait_healthy()


def test_through_sentinel_a_stopped_replica_raises_within_the_timeout(
    sentinels: topologies.Sentinels, sentinel_connection: redis.Redis
) -> None:
    replica = sentinels.replica()
    try:
        with frozen(replica):
            started = time.monotonic()
            with pytest.raises(NotReplicatedError, match="0 of the 1 replica") as caught:
                sample_tasks.add.apply_async((1, 2), replicas=1, replica_timeout=TIMEOUT)
            took = time.monotonic() - started
            assert TIMEOUT <= took < TIMEOUT + 3, took
            assert Job.fetch(caught.value.job.id).get_status() == JobStatus.QUEUED  # on the master
            assert sample_tasks.add.delay(1, 2)  # without a wait: not held up
        # once the replica is back it catches up, as for any write
        topologies.wait_for("the job to reach the replica", lambda: on_replica(sentinels, caught.value.job.id))
    finally:
        sentinels.wait_healthy()


def test_a_job_a_retry_found_written_counts_as_unconfirmed(
    sentinels: topologies.Sentinels, sentinel_connection: redis.Redis
) -> None:
    """The reply of the enqueue is lost and the Store's retry finds the job written: WAIT on the
    retry's connection covers only that connection's writes, so the job is not called confirmed."""
    port, dropped = _reply_dropping_proxy(sentinels.master().port, b":1\r\n")
    client = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
    for name in scripts.NAMES:  # loaded already: the first ":1" reply is the enqueue's
        client.script_load(scripts.source(name))
    with pytest.raises(NotReplicatedError) as caught:
        Queue(connection=client, replicas=1).enqueue(sample_tasks.add, 1, 2, job_id="lost-reply")
    assert dropped.is_set() and caught.value.acknowledged == 0
    assert Queue().job_ids == ["lost-reply"] and on_replica(sentinels, "lost-reply")
    client.close()


def test_no_confirmed_job_is_lost_in_a_sentinel_failover(
    sentinels: topologies.Sentinels, sentinel_connection: redis.Redis
) -> None:
    """Kill the master while a producer enqueues with replicas=1: every enqueue that returned is
    on the promoted replica. (Without the wait, test_topologies.py's failover test may lose what
    was acknowledged in the last moments before the kill.) While the new master has no replica,
    enqueues raise NotReplicatedError; once the old master is back as its replica, they succeed."""
    Store.of(sentinel_connection).retry_seconds = 30  # the failover takes about 2 s; the default budget is 5 s
    confirmed: dict[str, float] = {}
    unconfirmed: dict[str, float] = {}
    failover: dict[str, float] = {}

    def fail_over_and_restore() -> None:
        failover["killed_at"] = time.monotonic()
        old, _ = sentinels.fail_over()
        failover["promoted_at"] = promoted = time.monotonic()
        # the new master has no replica until the old one is back: let the producer see that
        topologies.wait_for("an enqueue refused for want of a replica",
                            lambda: any(at > promoted for at in unconfirmed.values()), deadline=30)
        sentinels.restore(old)
        failover["restored_at"] = time.monotonic()

    killer = threading.Thread(target=fail_over_and_restore)
    try:
        deadline, i = time.monotonic() + 180, 0
        while time.monotonic() < deadline:
            try:
                job = sample_tasks.add.apply_async((i, i), replicas=1, replica_timeout=TIMEOUT)
                confirmed[job.id] = time.monotonic()
            except NotReplicatedError as exc:
                unconfirmed[exc.job.id] = time.monotonic()
            i += 1
            if i == 100:
                killer.start()
            restored = failover.get("restored_at")
            if restored is not None and sum(at > restored for at in confirmed.values()) >= 50:
                break
            time.sleep(0.01)
        killer.join(timeout=120)
        assert "restored_at" in failover, "the sentinels did not fail over, or the old master did not come back"
        after = sum(at > failover["promoted_at"] for at in confirmed.values())
        assert after >= 50, "the producer did not go on with replica confirmations after the failover"
        found = Job.fetch_many(list(confirmed))
        lost = [job_id for job_id, job in zip(confirmed, found) if job is None]
        assert not lost, f"{len(lost)} confirmed job(s) lost in the failover: {lost[:5]}"
        # those refused while the new master had no replica were written on it all the same
        kept = sum(job is not None for job in Job.fetch_many(list(unconfirmed)))
        alone = [job_id for job_id, at in unconfirmed.items() if failover["promoted_at"] < at < failover["restored_at"]]
        assert alone and all(Job.fetch_many(alone)), "refused enqueues while the new master was alone are on it"
        print(f"{len(confirmed)} enqueues confirmed by the replica, none lost; {len(unconfirmed)} raised "
              f"NotReplicatedError ({kept} of them on the new master)")
    finally:
        if killer.is_alive():
            killer.join(timeout=120)
        for node in sentinels.data:
            if not node.alive:
                sentinels.restore(node)
