"""Registries (issue 3): started, finished, failed, scheduled and canceled jobs of a queue.

Each: len, count, get_job_ids, `in`, get_expiration_time, remove; failed and canceled
jobs can be requeued atomically. Reading a registry never changes anything in Redis.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sample_tasks
from conftest import taskit_command
from records import exists, ttl

from taskit import Job, JobStatus, Queue, Worker
from taskit.exceptions import InvalidOperationError, NoSuchJobError
from taskit.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from taskit.storage import keys


def work(queue: Queue, **kwargs: object) -> int:
    return Worker([queue], modules=("sample_tasks",), **kwargs).work(burst=True)  # type: ignore[arg-type]


def poll(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
    return value


def snapshot(connection: redis.Redis) -> dict[bytes, tuple[bytes, object, bool]]:
    """Every key: (type, its contents, whether it has a TTL).

    Contents, not DUMP bytes: a read may advance Redis's incremental rehashing of a big
    hash, which reorders DUMP output without changing anything.
    """
    read = {
        b"hash": connection.hgetall,
        b"list": lambda key: connection.lrange(key, 0, -1),
        b"zset": lambda key: connection.zrange(key, 0, -1, withscores=True),
        b"set": connection.smembers,
        b"string": connection.get,
    }
    out = {}
    for key in connection.scan_iter(count=1000):
        kind = connection.type(key)
        out[key] = (kind, read[kind](key), connection.pttl(key) > 0)
    return out


def assert_same(before: dict, after: dict) -> None:  # type: ignore[type-arg]
    changed = sorted(k.decode() for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"reads changed these keys: {changed}"


# -- importable names ------------------------------------------------------------------------


def test_registry_classes_are_importable_and_match_the_queue_properties(connection: redis.Redis) -> None:
    queue = Queue("emails", connection=connection)
    pairs = [
        (queue.started_job_registry, StartedJobRegistry),
        (queue.finished_job_registry, FinishedJobRegistry),
        (queue.failed_job_registry, FailedJobRegistry),
        (queue.scheduled_job_registry, ScheduledJobRegistry),
        (queue.canceled_job_registry, CanceledJobRegistry),
    ]
    for registry, cls in pairs:
        assert type(registry) is cls and registry.name == "emails"
    job = queue.enqueue(sample_tasks.fail)
    work(queue)
    assert job.id in FailedJobRegistry("emails", connection=connection)
    assert job.id not in FailedJobRegistry("default", connection=connection)


# -- each registry -------------------------------------------------------------------------


def test_finished_registry(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    jobs = [queue.enqueue(sample_tasks.add, i, i, result_ttl=100 + i) for i in range(3)]
    work(queue)
    registry = queue.finished_job_registry
    assert len(registry) == registry.count == 3
    assert registry.get_job_ids() == [j.id for j in jobs]  # ordered by expiry
    assert registry.get_job_ids(0, 0) == [jobs[0].id]
    assert jobs[1].id in registry and jobs[1] in registry
    assert "nope" not in registry and 42 not in registry
    ended = Job.fetch(jobs[2].id).ended_at.timestamp()
    assert registry.get_expiration_time(jobs[2]).timestamp() == pytest.approx(ended + 102, abs=0.01)
    assert registry.remove(jobs[0]) is True
    assert registry.remove(jobs[0]) is False
    assert jobs[0].id not in registry and len(registry) == 2
    assert Job.fetch(jobs[0].id).result == 0  # remove() keeps the job itself ...
    assert registry.remove(jobs[1], delete_job=True) is True
    with pytest.raises(NoSuchJobError):  # ... unless asked to delete it
        Job.fetch(jobs[1].id)
    with pytest.raises(NoSuchJobError):
        registry.get_expiration_time(jobs[0])


def test_failed_registry(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    short = queue.enqueue(sample_tasks.fail, failure_ttl=300)
    forever = queue.enqueue(sample_tasks.fail, failure_ttl=-1)
    work(queue)
    registry = queue.failed_job_registry
    assert len(registry) == registry.count == 2
    assert registry.get_job_ids() == [short.id, forever.id]
    assert short.id in registry and forever in registry
    ended = Job.fetch(short.id).ended_at.timestamp()
    assert registry.get_expiration_time(short.id).timestamp() == pytest.approx(ended + 300, abs=0.01)
    assert registry.get_expiration_time(forever) is None
    assert [j.id for j in registry.get_jobs()] == [short.id, forever.id]
    assert registry.remove(short) and short.id not in registry and len(registry) == 1


def test_scheduled_registry(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    later = queue.enqueue_in(3600, sample_tasks.add, 1, 2)
    sooner = queue.enqueue_in(60, sample_tasks.add, 3, 4)
    registry = queue.scheduled_job_registry
    assert len(registry) == registry.count == 2
    assert registry.get_job_ids() == [sooner.id, later.id]  # by run-at
    assert later.id in registry
    assert registry.get_expiration_time(sooner).timestamp() == pytest.approx(time.time() + 60, abs=5)
    assert registry.get_scheduled_time(later).timestamp() == pytest.approx(time.time() + 3600, abs=5)
    assert queue.count == 0 and Job.fetch(later.id).get_status() == JobStatus.SCHEDULED
    assert registry.remove(later) and later.id not in registry and len(registry) == 1


def test_canceled_registry_and_requeue(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.add, 1, 2)
    job.cancel()
    registry = queue.canceled_job_registry
    assert len(registry) == registry.count == 1
    assert registry.get_job_ids() == [job.id] and job.id in registry
    assert registry.get_expiration_time(job) is not None
    assert queue.count == 0
    registry.requeue(job)
    assert len(registry) == 0 and queue.job_ids == [job.id]
    work(queue)
    assert Job.fetch(job.id).result == 3

    other = queue.enqueue(sample_tasks.add, 5, 5)
    other.cancel()
    assert other.id in registry
    assert registry.remove(other) and other.id not in registry and len(registry) == 0
    assert Job.fetch(other.id).get_status() == JobStatus.CANCELED


def test_started_registry(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    release = f"test:release:{uuid.uuid4().hex}"
    job = sample_tasks.meta_then_wait.delay("k", "v", release)
    worker = subprocess.Popen(
        taskit_command("worker", "sample_tasks", "--burst", "--lease", "30"), env=cli_env, stderr=subprocess.PIPE, text=True
    )
    try:
        poll(lambda: Job.fetch(job.id).meta)  # running now
        registry = StartedJobRegistry(connection=connection)
        assert len(registry) == registry.count == 1
        assert registry.get_job_ids() == [job.id] and job.id in registry
        lease_deadline = registry.get_expiration_time(job).timestamp()
        # the lease's deadline, rounded up to the second (lua/claim.lua)
        assert time.time() < lease_deadline <= time.time() + 31.5
        connection.rpush(release, "go")
        _, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr
    assert len(registry) == 0 and job.id not in registry
    assert job.id in Queue(connection=connection).finished_job_registry


# -- requeue ---------------------------------------------------------------------------------


def test_requeue_resets_the_job_and_puts_it_back_on_its_queue(connection: redis.Redis) -> None:
    queue = Queue("work", connection=connection)
    job = queue.enqueue(sample_tasks.fail, "first")
    Worker([queue], name="w1").work(burst=True)
    failed = Job.fetch(job.id)
    assert failed.exc_info and failed.started_at and failed.ended_at and failed.worker_name == "w1"

    requeued = queue.failed_job_registry.requeue(job.id)
    assert isinstance(requeued, Job) and requeued.id == job.id
    fresh = Job.fetch(job.id)
    assert fresh.get_status() == JobStatus.QUEUED
    assert fresh.started_at is None and fresh.ended_at is None and fresh.exc_info is None
    assert fresh.worker_name is None
    assert fresh.enqueued_at >= failed.ended_at
    assert fresh.args == ("first",) and fresh.func_name == "sample_tasks.fail"
    assert queue.job_ids == [job.id] and queue.count == 1
    assert job.id not in queue.failed_job_registry
    assert ttl(connection, job.id) == -1  # no longer expiring with its failure

    work(queue)  # it runs again, and fails again
    again = Job.fetch(job.id)
    assert again.get_status() == JobStatus.FAILED and again.attempts == 2


class Monitor:
    """Records the commands Redis runs (MONITOR), telling client commands from Lua ones."""

    def __init__(self, connection: redis.Redis) -> None:
        self.client = redis.Redis(port=connection.connection_pool.connection_kwargs["port"])
        self.commands: list[tuple[str, str]] = []
        self._marker = uuid.uuid4().hex
        self._ready = threading.Event()
        self._seen = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            for entry in monitor.listen():
                command = entry["command"]
                if self._marker in command:
                    self._seen.set()
                    if command.endswith("end"):
                        return
                    self.commands.clear()  # everything before the start marker
                    continue
                self.commands.append((entry.get("client_type", ""), command))

    def __enter__(self) -> Monitor:  # noqa: PYI034
        self._thread.start()
        self._ready.wait(5)
        deadline = time.monotonic() + 5
        while not self._seen.is_set() and time.monotonic() < deadline:  # until MONITOR sees us
            self.client.echo(f"{self._marker} ping")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(f"{self._marker} end")
        self._thread.join(5)
        self.client.close()

    def from_clients(self) -> list[str]:
        return [command.split()[0].upper() for kind, command in self.commands if kind != "lua"]


@pytest.mark.single_only("MONITORs the one node")
def test_requeue_is_one_atomic_script(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail)
    work(queue)
    with pytest.raises(InvalidOperationError):  # loads the script, if this server lacks it
        queue.failed_job_registry.requeue("other")
    with Monitor(connection) as monitor:
        queue.failed_job_registry.requeue(job)
    # the move is one EVALSHA; another (lua/read.lua, atomic) reads the requeued job back for the caller
    assert monitor.from_clients() == ["EVALSHA", "EVALSHA"], monitor.commands
    lua = [command.split()[0].upper() for kind, command in monitor.commands if kind == "lua"]
    assert {"ZREM", "DEL", "HSET", "RPUSH"} <= set(lua), lua


def test_requeue_of_a_job_not_in_the_registry(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    finished = queue.enqueue(sample_tasks.add, 1, 2)
    waiting = queue.enqueue(sample_tasks.add, 3, 4)
    Worker([queue]).work(burst=True, max_jobs=1)
    registry = queue.failed_job_registry
    before = snapshot(connection)
    for job_id in (finished.id, waiting.id, "never-existed"):
        with pytest.raises(InvalidOperationError, match=f"job {job_id} is not in the failed registry of queue 'default'"):
            registry.requeue(job_id)
    assert_same(before, snapshot(connection))  # nothing half-moved
    assert Job.fetch(finished.id).result == 3 and queue.job_ids == [waiting.id]


def test_requeue_of_an_expired_job(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    expired = queue.enqueue(sample_tasks.fail, failure_ttl=1)
    work(queue)
    poll(lambda: not exists(connection, expired.id), timeout=5)
    with pytest.raises(NoSuchJobError, match=f"job {expired.id} expired"):
        queue.failed_job_registry.requeue(expired)
    assert queue.count == 0
    assert not exists(connection, expired.id)  # no stub resurrected
    assert connection.zscore(keys.of_queue("default").registry("failed"), expired.id) is None


def test_requeue_all(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    ids = [queue.enqueue(sample_tasks.fail).id for _ in range(3)]
    work(queue)
    assert sorted(queue.failed_job_registry.requeue_all()) == sorted(ids)
    assert len(queue.failed_job_registry) == 0 and sorted(queue.job_ids) == sorted(ids)


# -- reads are reads -----------------------------------------------------------------------------


@pytest.fixture
def busy_redis(connection: redis.Redis) -> Iterator[Queue]:
    """A queue with a job in every state, and a failed entry whose job has expired."""
    queue = Queue(connection=connection)
    queue.enqueue(sample_tasks.add, 1, 2)
    short_lived = queue.enqueue(sample_tasks.fail, failure_ttl=1)
    queue.enqueue(sample_tasks.fail)
    work(queue)
    queue.enqueue(sample_tasks.add, 5, 6)  # queued
    queue.enqueue_in(600, sample_tasks.add, 7, 8)  # scheduled
    queue.enqueue(sample_tasks.add, 9, 9).cancel()  # canceled
    poll(
        lambda: connection.zcard(keys.of_queue("default").registry("failed")) == 2
        and len(queue.failed_job_registry) == 1
        and not exists(connection, short_lived.id),  # Redis expired its record too
        5,
    )
    yield queue


def test_reads_never_change_state(connection: redis.Redis, busy_redis: Queue) -> None:
    queue = busy_redis
    before = snapshot(connection)
    registries = [
        queue.started_job_registry,
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.scheduled_job_registry,
        queue.canceled_job_registry,
    ]
    seen = []
    for registry in registries:
        ids = registry.get_job_ids()
        seen.append((len(registry), registry.count, ids, [j.id for j in registry.get_jobs()]))
        for job_id in [*ids, "not-there"]:
            assert (job_id in registry) == (job_id != "not-there")
            try:
                registry.get_expiration_time(job_id)
            except NoSuchJobError:
                assert job_id == "not-there"
    expired = [i.decode() for i in connection.zrange(keys.of_queue("default").registry("failed"), 0, -1)]
    for job_id in expired:
        _ = job_id in queue.failed_job_registry
    assert [s[0] for s in seen] == [0, 1, 1, 1, 1]
    for job in Job.fetch_many(expired + queue.job_ids + ["not-there"]):
        if job is not None:
            job.get_status(), job.result, job.is_failed, job.is_finished, job.exc_info, job.meta, job.refresh()
    _ = queue.count, len(queue), queue.job_ids, queue.jobs, queue.fetch_job("not-there"), Queue.all(connection)
    with pytest.raises(NoSuchJobError):
        Job.fetch("not-there")
    assert_same(before, snapshot(connection))


def test_taskit_info_is_a_read(connection: redis.Redis, busy_redis: Queue, cli_env: dict[str, str]) -> None:
    before = snapshot(connection)
    out = subprocess.run(taskit_command("info"), env=cli_env, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert "default" in out.stdout
    assert_same(before, snapshot(connection))


def test_snapshot_sees_a_change(connection: redis.Redis, busy_redis: Queue, tmp_path: Path) -> None:
    """The read tests above can fail: a real change shows up in the snapshot."""
    before = snapshot(connection)
    job_id = busy_redis.failed_job_registry.get_job_ids()[0]
    Job.fetch(job_id).save_meta()
    with pytest.raises(AssertionError, match="reads changed these keys"):
        assert_same(before, snapshot(connection))
