"""taskit on a real Redis Cluster (issue 12): 3 masters, 3 replicas (tests/topologies.py).

Queues are picked so that their tags (storage/keys.py) live on different masters; every
script then runs on its queue's master, and a script that touched a key of another slot
would be refused (CROSSSLOT). Workers are real `taskit worker` processes given a
redis+cluster:// URL.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import fault_tasks
import pytest
import redis
import sample_tasks
import topologies
from conftest import refused_on, taskit_default, taskit_env
from redis.cluster import RedisCluster
from test_faults import FAST, WorkerProcess, wait_until

import taskit
from taskit import Job, JobStatus, Queue, config
from taskit.storage import keys
from taskit.storage.store import Record, Store


@pytest.fixture
def cluster_connection(cluster: topologies.Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisCluster]:
    """A cluster client, every master flushed, made taskit's default."""
    for node in cluster.nodes:
        if not node.alive:
            cluster.restart(node)  # a test killed it
    with taskit_default(config.connect(cluster.url), cluster.url, monkeypatch) as client:  # (FLUSHALL on every master)
        yield client


@pytest.fixture
def cluster_env(cluster: topologies.Cluster) -> dict[str, str]:
    return taskit_env(cluster.url)


def on_other_masters(cluster: topologies.Cluster, count: int) -> list[str]:
    """`count` queue names whose keys live on `count` different masters."""
    names, owners = [], []
    for i in range(1000):
        name = f"q{i}"
        owner = cluster.owner(keys.of_queue(name).queue)
        if owner not in owners:
            names.append(name)
            owners.append(owner)
            if len(names) == count:
                return names
    raise AssertionError("no queues on different masters")


def test_queues_on_different_masters_enqueue_and_read_by_id(cluster, cluster_connection):
    first, second, third = on_other_masters(cluster, 3)
    jobs = [Queue(name).enqueue(sample_tasks.add, i, i) for i, name in enumerate((first, second, third))]
    custom = Queue(second).enqueue(sample_tasks.add, 10, 10, job_id="report-42")
    later = Queue(third).enqueue_in(3600, sample_tasks.add, 5, 5)
    # every job's record is on its queue's master; a custom id's directory entry on its own slot's
    for job in [*jobs, custom, later]:
        place = keys.of_queue(job.origin)
        assert cluster.owner(place.tagged.bucket(job.id)) is cluster.owner(place.queue)
    assert cluster.owner(keys.directory("report-42")) is not None
    assert Job.fetch(custom.id).args == (10, 10) and Job.fetch(custom.id).origin == second
    fetched = Job.fetch_many([jobs[2].id, "missing", custom.id, jobs[0].id, later.id, jobs[1].id])
    assert [j.id if j else None for j in fetched] == [jobs[2].id, None, custom.id, jobs[0].id, later.id, jobs[1].id]
    assert [j.args for j in fetched if j] == [(2, 2), (10, 10), (0, 0), (5, 5), (1, 1)]
    assert fetched[4].get_status() == JobStatus.SCHEDULED
    assert sorted(q.name for q in Queue.all()) == sorted([first, second, third])
    with pytest.raises(taskit.exceptions.DuplicateJobError):  # the id is taken, on another master
        Queue(first).enqueue(sample_tasks.add, 1, 1, job_id="report-42")
    assert Queue(first).count == 1 and Job.fetch("report-42").origin == second


def test_a_worker_runs_the_jobs_of_queues_on_two_masters_in_priority_order(cluster, cluster_connection, cluster_env, tmp_path):
    high, low = on_other_masters(cluster, 2)
    lows = [Queue(low).enqueue(sample_tasks.add, i, 100) for i in range(5)]
    highs = [Queue(high).enqueue(sample_tasks.add, i, 0) for i in range(5)]
    worker = WorkerProcess(cluster_env, tmp_path, "-q", high, "-q", low, "--burst", modules=("sample_tasks",))
    assert worker.wait(60) == 0, worker.output()
    assert [Job.fetch(j.id).result for j in highs] == list(range(5))
    assert [Job.fetch(j.id).result for j in lows] == [i + 100 for i in range(5)]
    ended = {j.id: Job.fetch(j.id).ended_at for j in [*highs, *lows]}
    assert max(ended[j.id] for j in highs) <= min(ended[j.id] for j in lows)  # the first queue first
    assert "Traceback" not in worker.output() and "CROSSSLOT" not in worker.output()


def test_an_idle_worker_wakes_for_a_job_on_either_master(cluster, cluster_connection, cluster_env, tmp_path):
    """Waiting on both masters at once, not polling: a job enqueued while the worker is idle
    starts within milliseconds. (It rechecks every second anyway: a job is enqueued 1.3 s
    after the last one ended, when a worker that only polled would wait about 0.7 s more.)"""
    one, two = on_other_masters(cluster, 2)
    worker = WorkerProcess(cluster_env, tmp_path, "-q", one, "-q", two, "--maintenance-interval", "60",
                           modules=("sample_tasks",))
    try:
        wait_until(worker.ready, what="the worker to start")
        waits = []
        for name in (two, one, two, one):
            time.sleep(1.3)
            job = Queue(name).enqueue(sample_tasks.add, 1, 2)
            wait_until(lambda job=job: Job.fetch(job.id).get_status() == JobStatus.FINISHED, timeout=10,
                       what=f"a job on {name} to run")
            fetched = Job.fetch(job.id)
            waits.append((fetched.started_at - fetched.enqueued_at).total_seconds())
        assert sorted(waits)[len(waits) // 2] < 0.3, waits  # (the median: the machine is shared)
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()


def test_the_failed_registry_and_requeue_on_a_cluster(cluster, cluster_connection, cluster_env, tmp_path):
    queue = Queue(on_other_masters(cluster, 2)[1])
    job = queue.enqueue(sample_tasks.fail, "once")
    worker = WorkerProcess(cluster_env, tmp_path, "-q", queue.name, "--burst", modules=("sample_tasks",))
    assert worker.wait(60) == 0, worker.output()
    assert job.id in queue.failed_job_registry and Job.fetch(job.id).get_status() == JobStatus.FAILED
    queue.failed_job_registry.requeue(job)
    assert job.id not in queue.failed_job_registry and queue.job_ids == [job.id]
    assert Job.fetch(job.id).get_status() == JobStatus.QUEUED and Job.fetch(job.id).exc_info is None


def test_a_worker_killed_mid_job_loses_nothing(cluster, cluster_connection, cluster_env, tmp_path):
    one, two = on_other_masters(cluster, 2)
    slow = Queue(two).enqueue(fault_tasks.slow_first_attempt, 30)
    quick = [Queue(one).enqueue(fault_tasks.work, i) for i in range(3)]
    doomed = WorkerProcess(cluster_env, tmp_path, "-q", two, "-n", "doomed", *FAST)
    wait_until(lambda: Job.fetch(slow.id).get_status() == JobStatus.STARTED, what="the slow job to start")
    assert held_by_cluster(cluster_connection, "doomed", [two]) == [slow.id]
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    rescuer = WorkerProcess(cluster_env, tmp_path, "-q", one, "-q", two, *FAST)
    try:
        wait_until(lambda: Job.fetch(slow.id).get_status() == JobStatus.FINISHED, timeout=30,
                   what="the dead worker's job to be recovered and run")
        assert Job.fetch(slow.id).attempts == 2 and Job.fetch(slow.id).result["attempt"] == 2
        wait_until(lambda: all(Job.fetch(j.id).get_status() == JobStatus.FINISHED for j in quick), what="the others")
        assert held_by_cluster(cluster_connection, "doomed", [two]) == []
    finally:
        rescuer.signal(signal.SIGTERM)
        assert rescuer.wait(30) == 0, rescuer.output()
    assert "Traceback" not in rescuer.output()


def held_by_cluster(client: redis.RedisCluster, worker: str, queues: list[str]) -> list[str]:
    """The ids in a worker's in-flight lists on a cluster (SCAN does not span its nodes)."""
    return Store.of(client).inflight(worker, queues)


def test_scripts_touch_only_keys_of_their_slot_on_a_cluster(cluster, cluster_connection):
    """Run one of each operation with queues on every master: Redis Cluster refuses a script
    whose keys span slots (CROSSSLOT), and one that reaches a key of another node."""
    names = on_other_masters(cluster, 3)
    store, now = Store.of(cluster_connection), time.time()
    jobs = [Queue(name).enqueue(sample_tasks.add, 1, 2) for name in names]
    jobs.append(Queue(names[0]).enqueue(sample_tasks.add, 1, 2, job_id="custom-1", ttl=60))
    store.register_worker("w", {"queues": ",".join(names)}, now + 30, 90)
    claim = store.claim("w", names, now, now + 30, 10)
    assert sorted(j[0] for j in claim.jobs) == sorted(j.id for j in jobs)
    lost, _ = store.heartbeat("w", now + 60, 90, [(j[0], names[j[2]], j[1]) for j in claim.jobs], queues=names)
    assert lost == [] and sorted(store.inflight("w")) == sorted(j.id for j in jobs)
    records = [Record(j[0], names[j[2]], j[1], "finished", b"\x03", 60) for j in claim.jobs]
    assert store.finish("w", records, now) == [1] * len(records)
    assert store.maintain(now, "w", 1000, 3, 60, queues=names) is not None
    assert store.inflight("w") == [] and all(Job.fetch(j.id).result == 3 for j in jobs)
    # a dead worker's jobs on every master come back at the next maintenance step
    again = [Queue(name).enqueue(sample_tasks.add, 2, 2) for name in names]
    assert len(store.claim("dead", names, now, now + 1, 10).jobs) == 3
    store.register_worker("dead", {"queues": ",".join(names)}, now + 1, 90)
    cluster_connection.delete(keys.MAINTENANCE_LOCK)  # (the lock is per interval)
    step = store.maintain(now + 5, "w", 1000, 3, 60, queues=names)
    assert step is not None and sorted(step.recovered) == sorted(j.id for j in again) and "dead" in step.dead
    assert [Queue(name).job_ids for name in names] == [[j.id] for j in again]


def test_a_script_reaching_a_key_of_another_master_is_caught(cluster, cluster_connection):
    """The check the suites run after each test on the cluster (conftest.refused_on) sees a
    script that touches a key it was not given, on another master."""
    here, there = on_other_masters(cluster, 2)
    given, other = keys.of_queue(here).queue, keys.of_queue(there).queue
    for node in cluster.masters():
        with node.client() as client:
            client.config_resetstat()
    with pytest.raises(redis.ResponseError, match="non local key"):
        cluster_connection.eval("return redis.call('llen', ARGV[1])", 1, given, other)
    assert "cmdstat_llen" in refused_on(cluster.owner(given))
    for node in cluster.masters():
        with node.client() as client:
            client.config_resetstat()


def test_a_batch_of_scripts_is_routed_without_asking_the_nodes_for_keys(cluster, cluster_connection):
    """A cluster pipeline of EVALSHA calls is given each call's node: redis-py would otherwise
    ask COMMAND GETKEYS once per call (a serial round trip a job) to find it."""
    names = on_other_masters(cluster, 3)
    for node in cluster.masters():
        with node.client() as client:
            client.config_resetstat()
    jobs = [job for name in names for job in sample_tasks.add.map([(i, i) for i in range(50)], queue=name)]
    assert sorted(Queue(name).count for name in names) == [50, 50, 50] and len(jobs) == 150
    lookups = sum(int(node.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0))
                  for node in cluster.masters())
    assert lookups == 0


def test_every_slot_s_tag_hashes_to_that_slot_in_redis(cluster: topologies.Cluster) -> None:
    """storage/keys.py solves each slot's tag from CRC16's linearity: Redis itself agrees, for
    every slot, on the slot of a key that carries it."""
    with cluster.live()[0].client(socket_timeout=10) as client:
        pipe = client.pipeline(transaction=False)
        for at in range(keys.SLOTS):
            pipe.execute_command("CLUSTER KEYSLOT", f"taskit:{{{keys.tag_for_slot(at)}}}:state")
        assert [int(s) for s in pipe.execute()] == list(range(keys.SLOTS))
