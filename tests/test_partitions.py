"""Partitioned queues (issue 12, item 3): one queue over N tags, on a single Redis and on the
3 masters + 3 replicas cluster (tests/topologies.py). Workers are real `taskit worker`
processes."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import fault_tasks
import pytest
import sample_tasks
import topologies
from conftest import taskit_command, taskit_default, taskit_env
from roundtrips import counting_client
from test_faults import FAST, WorkerProcess, wait_until

import taskit
from taskit import Job, JobStatus, Queue, Worker, config
from taskit.exceptions import ConfigurationError
from taskit.periodic import enqueue_due, periodic, unregister
from taskit.storage import keys
from taskit.storage.partitions import Rotation
from taskit.storage.store import Store

QUEUE = "emails"


@pytest.fixture(params=["single", "cluster"])
def redis_target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """{"client", "env", "cluster" (None on a single Redis)}: taskit's default, flushed."""
    if request.param == "single":
        server = request.getfixturevalue("redis_server")
        if not server.alive:
            server.start()
        with taskit_default(server.client(), server.url, monkeypatch) as client:
            yield {"client": client, "env": taskit_env(server.url), "cluster": None}
        return
    cluster: topologies.Cluster = request.getfixturevalue("cluster")
    for node in cluster.nodes:
        if not node.alive:
            cluster.restart(node)
    with taskit_default(config.connect(cluster.url), cluster.url, monkeypatch) as client:
        yield {"client": client, "env": taskit_env(cluster.url), "cluster": cluster}


def run_taskit(redis_target: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(taskit_command(*args), env=redis_target["env"], capture_output=True, text=True, timeout=60, check=False)


def waiting_per_master(cluster: topologies.Cluster, queue: str) -> list[int]:
    """Jobs waiting on each master, counted from the queue keys each holds."""
    counts = []
    for master in cluster.masters():
        with master.client(socket_timeout=5) as node:
            counts.append(sum(node.llen(key) for key in node.scan_iter(match=f"{keys.PREFIX}:*:queue:{queue}")))
    return counts


def test_partition_tags_spread_over_the_slot_space():
    tags = keys.partition_tags(QUEUE, 3)
    assert tags[0] == keys.queue_tag(QUEUE) and len(set(tags)) == 3
    slots = sorted(keys.slot(t) for t in tags)
    gaps = [(b - a) % keys.SLOTS for a, b in zip(slots, slots[1:] + slots[:1])]
    assert all(abs(gap - keys.SLOTS // 3) <= 1 for gap in gaps), gaps


def test_each_slot_s_tag_is_the_first_base62_string_that_hashes_to_it():
    """tag_for_slot solves for the last character instead of trying every string: it must
    give what trying them all, shortest first, gives (job ids and keys carry these tags)."""
    first: dict[int, str] = {}
    for length in (1, 2, 3):
        for chars in itertools.product(keys._BASE62, repeat=length):
            first.setdefault(keys.slot("".join(chars)), "".join(chars))
    assert len(first) == keys.SLOTS
    assert all(keys.tag_for_slot(at) == tag for at, tag in first.items())
    taken = next("".join(c) for c in itertools.product(keys._BASE62, repeat=3) if first[keys.slot("".join(c))] != "".join(c))
    assert keys.is_tag(first[0]) and not keys.is_tag(taken) and not keys.is_tag("") and not keys.is_tag("abcd")


def test_declare_queue_is_checked_and_refuses_a_change_while_jobs_would_be_left(redis_target):
    with pytest.raises(ConfigurationError):
        taskit.declare_queue(QUEUE, partitions=0)
    taskit.declare_queue(QUEUE, partitions=3)
    taskit.declare_queue(QUEUE, partitions=3)  # the same again: nothing to do
    jobs = [Queue(QUEUE).enqueue(sample_tasks.add, i, i) for i in range(6)]
    assert {keys.tag_of(j.id) for j in jobs} == set(keys.partition_tags(QUEUE, 3))  # round robin
    with pytest.raises(ConfigurationError, match="empty them first"):
        taskit.declare_queue(QUEUE, partitions=2)
    assert Queue(QUEUE).empty() == 6 and Queue(QUEUE).count == 0
    taskit.declare_queue(QUEUE, partitions=2)
    assert Store.of(redis_target["client"]).partitions.tags(QUEUE) == keys.partition_tags(QUEUE, 2)


def test_the_cli_declares_a_queue(redis_target):
    done = run_taskit(redis_target, "declare-queue", QUEUE, "--partitions", "3")
    assert done.returncode == 0, done.stderr
    assert Store.of(redis_target["client"]).partitions.declared(refresh=True) == {QUEUE: 3}


def test_three_thousand_jobs_spread_over_three_partitions_run_by_one_worker(redis_target, tmp_path):
    taskit.declare_queue(QUEUE, partitions=3)
    jobs = []
    for start in range(0, 3000, 500):
        jobs += sample_tasks.add.map([(i, 1) for i in range(start, start + 500)], queue=QUEUE)
    assert Queue(QUEUE).count == 3000 and len(Queue(QUEUE).job_ids) == 3000
    by_tag = {tag: sum(keys.tag_of(j.id) == tag for j in jobs) for tag in keys.partition_tags(QUEUE, 3)}
    assert sorted(by_tag.values()) == [1000, 1000, 1000]
    if redis_target["cluster"] is not None:
        counts = waiting_per_master(redis_target["cluster"], QUEUE)
        print("jobs per master:", counts)
        assert len(counts) == 3 and sum(counts) == 3000
        assert all(0.25 * 3000 <= n <= 0.42 * 3000 for n in counts), counts
    worker = WorkerProcess(redis_target["env"], tmp_path, "-q", QUEUE, "--burst", modules=("sample_tasks",))
    assert worker.wait(300) == 0, worker.output()
    assert "Traceback" not in worker.output() and "CROSSSLOT" not in worker.output()
    queue = Queue(QUEUE)
    assert queue.count == 0 and queue.finished_job_registry.count == 3000
    assert len(queue.finished_job_registry.get_job_ids()) == 3000
    assert len(queue.finished_job_registry.get_job_ids(10, 19)) == 10
    sample = [jobs[0], jobs[1], jobs[2], jobs[1500], jobs[-1]]
    assert [Job.fetch(j.id).result for j in sample] == [j.args[0] + 1 for j in sample]
    # the dashboard's and the metrics' counters add up every partition
    store = Store.of(redis_target["client"])
    (totals,) = store.task_totals([QUEUE])
    assert totals[sample_tasks.add.name]["d"] == 3000
    (minutes,) = store.minute_counts([QUEUE], int(time.time() // 60) - 10, int(time.time() // 60) + 1)
    assert sum(minutes["d"].values()) == 3000


def test_a_partition_key_keeps_the_order_of_its_jobs(redis_target, tmp_path):
    taskit.declare_queue(QUEUE, partitions=3)
    keys_used = [f"user-{k}" for k in range(6)]
    expected: dict[str, list[str]] = {k: [] for k in keys_used}
    tags: dict[str, set[str | None]] = {k: set() for k in keys_used}
    for n in range(20):
        for k in keys_used:
            job = sample_tasks.log_order.apply_async((f"{n}",), {"list_key": f"taskit-test:order:{k}"}, queue=QUEUE,
                                                     partition_key=k)
            expected[k].append(f"{n}")
            tags[k].add(keys.tag_of(job.id))
    assert all(len(t) == 1 for t in tags.values())  # one partition per key
    assert len({t for k in keys_used for t in tags[k]}) > 1  # the keys spread over partitions
    worker = WorkerProcess(redis_target["env"], tmp_path, "-q", QUEUE, "--burst", "--threads", "1",
                           modules=("sample_tasks",))
    assert worker.wait(120) == 0, worker.output()
    client = redis_target["client"]
    for k in keys_used:
        assert [v.decode() for v in client.lrange(f"taskit-test:order:{k}", 0, -1)] == expected[k], k


def test_the_oldest_waiting_job_is_found_on_any_partition(redis_target):
    taskit.declare_queue(QUEUE, partitions=3)
    jobs = []
    for i in range(3):
        jobs.append(Queue(QUEUE).enqueue(sample_tasks.add, i, 0))
        time.sleep(0.01)
    first = keys.queue_tag(QUEUE)
    for job in jobs:
        if keys.tag_of(job.id) == first:
            job.delete()  # the first partition is empty: the oldest is on another
    left = [job for job in jobs if keys.tag_of(job.id) != first]
    (oldest,) = Store.of(redis_target["client"]).oldest_enqueued([QUEUE])
    assert oldest is not None and oldest == pytest.approx(min(job.enqueued_at for job in left).timestamp(), abs=0.002)


def test_a_custom_id_goes_to_the_first_partition(redis_target):
    taskit.declare_queue(QUEUE, partitions=3)
    job = Queue(QUEUE).enqueue(sample_tasks.add, 1, 2, job_id="report-42")
    assert Job.fetch("report-42").origin == QUEUE and Queue(QUEUE).job_ids == ["report-42"]
    with pytest.raises(ConfigurationError, match="not both"):
        Queue(QUEUE).enqueue(sample_tasks.add, 1, 2, job_id="report-43", partition_key="x")
    assert job.get_status() == JobStatus.QUEUED


def test_registries_counts_requeue_all_retries_and_schedules_across_partitions(redis_target, tmp_path):
    taskit.declare_queue(QUEUE, partitions=3)
    queue = Queue(QUEUE)
    failing = [queue.enqueue(sample_tasks.fail, f"no {i}") for i in range(6)]
    later = [queue.enqueue_in(3600, sample_tasks.add, i, 0) for i in range(3)]
    soon = [sample_tasks.add.apply_async((i, 0), queue=QUEUE, countdown=0.5) for i in range(3)]
    retried = [queue.enqueue(sample_tasks.flaky, f"key {i}") for i in range(3)]
    assert {keys.tag_of(j.id) for j in failing} == set(keys.partition_tags(QUEUE, 3))
    assert queue.count == 9 and queue.scheduled_job_registry.count == 6
    info = run_taskit(redis_target, "info", "--json")
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)["queues"]
    assert [(q["name"], q["queued"], q["scheduled"]) for q in shown] == [(QUEUE, 9, 6)]
    worker = WorkerProcess(redis_target["env"], tmp_path, "-q", QUEUE, *FAST, modules=("sample_tasks", "fault_tasks"))
    try:
        wait_until(lambda: queue.failed_job_registry.count == 6 and queue.finished_job_registry.count >= 3,
                   timeout=60, what="the jobs to end")
        assert sorted(queue.failed_job_registry.get_job_ids()) == sorted(j.id for j in failing)
        wait_until(lambda: all(Job.fetch(j.id).result == 3 for j in retried), timeout=60, what="the retried jobs")
        wait_until(lambda: all(Job.fetch(j.id).result == j.args[0] for j in soon), timeout=60, what="the scheduled jobs")
        assert all(keys.tag_of(Job.fetch(j.id).id) == keys.tag_of(j.id) for j in retried)
        assert queue.scheduled_job_registry.count == 3 and all(j.id in queue.scheduled_job_registry for j in later)
        done = run_taskit(redis_target, "requeue", "--all", "-q", QUEUE)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: queue.failed_job_registry.count == 6 and all(
            Job.fetch(j.id).attempts == 2 for j in failing), timeout=60, what="the requeued jobs to fail again")
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()
    assert "Traceback" not in worker.output()


def test_a_worker_killed_mid_run_loses_nothing(redis_target, tmp_path):
    taskit.declare_queue(QUEUE, partitions=3)
    jobs = [fault_tasks.counted.apply_async((f"k{i}", 0.05), queue=QUEUE) for i in range(60)]
    doomed = WorkerProcess(redis_target["env"], tmp_path, "-q", QUEUE, "-n", "doomed", "--threads", "4", *FAST)
    client = redis_target["client"]
    wait_until(lambda: sum(fault_tasks.runs(client, f"k{i}") for i in range(60)) >= 10, timeout=60,
               what="some jobs to run")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    rescuer = WorkerProcess(redis_target["env"], tmp_path, "-q", QUEUE, *FAST)
    try:
        wait_until(lambda: Queue(QUEUE).finished_job_registry.count == 60, timeout=90, what="every job to finish")
        assert all(Job.fetch(j.id).get_status() == JobStatus.FINISHED for j in jobs)
        assert all(fault_tasks.runs(client, f"k{i}") >= 1 for i in range(60))
        assert Store.of(client).inflight("doomed", [QUEUE]) == []
    finally:
        rescuer.signal(signal.SIGTERM)
        assert rescuer.wait(30) == 0, rescuer.output()


def test_a_worker_claims_from_each_partition_in_turn():
    places = [keys.Partition("a", "x"), keys.Partition("a", "y"), keys.Partition("a", "z"), "b"]
    rotation = Rotation(places)
    firsts = [rotation.next() for _ in range(3)]
    assert [order[0].tag for order in firsts] == ["y", "z", "x"]  # each partition first in turn
    assert all(order[-1] == "b" and sorted(p.tag for p in order[:3]) == ["x", "y", "z"] for order in firsts)
    assert Rotation(["a", "b"]).next() == ["a", "b"]


def test_an_idle_worker_wakes_for_a_job_on_any_partition(redis_target, tmp_path):
    """Waiting on every partition at once, not polling (see test_cluster.py for the timing)."""
    taskit.declare_queue(QUEUE, partitions=3)
    worker = WorkerProcess(redis_target["env"], tmp_path, "-q", QUEUE, "--maintenance-interval", "60",
                           modules=("sample_tasks",))
    try:
        wait_until(worker.ready, what="the worker to start")
        waits, tags = [], set()
        for _ in range(6):
            time.sleep(1.3)
            job = Queue(QUEUE).enqueue(sample_tasks.add, 1, 2)
            tags.add(keys.tag_of(job.id))
            wait_until(lambda job=job: Job.fetch(job.id).get_status() == JobStatus.FINISHED, timeout=10,
                       what="a job to run")
            fetched = Job.fetch(job.id)
            waits.append((fetched.started_at - fetched.enqueued_at).total_seconds())
        assert len(tags) == 3
        assert sorted(waits)[len(waits) // 2] < 0.3, waits
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()


def test_a_producer_learns_the_declaration_in_its_enqueue_round_trip(redis_server, connection):
    taskit.declare_queue(QUEUE, partitions=3, connection=connection)
    client, trips = counting_client(redis_server)  # another producer: it has not read the declaration
    queue = Queue(QUEUE, connection=client)
    first = queue.enqueue(sample_tasks.add, 1, 1)
    assert trips.trips == 1 and keys.tag_of(first.id) == keys.queue_tag(QUEUE)  # the first partition
    more = queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, 1)) for i in range(6)])
    assert {keys.tag_of(j.id) for j in more} == set(keys.partition_tags(QUEUE, 3))
    # (that call found the queue new in two tags, and added it to the global queue set again)
    trips.reset()
    again = queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, 1)) for i in range(6)])
    assert trips.trips == 1 and {keys.tag_of(j.id) for j in again} == set(keys.partition_tags(QUEUE, 3))
    client.close()


def test_periodic_ticks_on_a_partitioned_queue_run(redis_target):
    """A tick's job has a custom id (periodic:<name>:<tick>): it goes to the first partition,
    beside its task's last-tick key."""
    taskit.declare_queue(QUEUE, partitions=3)
    hour = 1_800_000_000 - 1_800_000_000 % 3600
    periodic(sample_tasks.add, 60, name="part-tick", args=[2, 3], queue=QUEUE)
    try:
        assert enqueue_due(None, hour + 30, queues=[QUEUE]) == []  # first seen: remembered
        jobs = enqueue_due(None, hour + 60, queues=[QUEUE])
        assert [j.id for j in jobs] == [f"periodic:part-tick:{hour + 60}"]
        assert enqueue_due(None, hour + 60, queues=[QUEUE]) == []  # once
        assert Worker([QUEUE]).work(burst=True) == 1
        assert Job.fetch(jobs[0].id).result == 5
    finally:
        unregister("part-tick")


def test_cancel_and_delete_across_partitions(redis_target):
    taskit.declare_queue(QUEUE, partitions=3)
    queue = Queue(QUEUE)
    jobs = [queue.enqueue(sample_tasks.add, i, i) for i in range(6)]
    for job in jobs[:3]:
        job.cancel()
    assert queue.count == 3 and queue.canceled_job_registry.count == 3
    assert sorted(queue.canceled_job_registry.get_job_ids()) == sorted(j.id for j in jobs[:3])
    assert all(j.id in queue.canceled_job_registry for j in jobs[:3])
    assert queue.canceled_job_registry.requeue_all() and queue.count == 6
    jobs[4].delete()
    assert sorted(queue.job_ids) == sorted(j.id for j in jobs if j is not jobs[4])
