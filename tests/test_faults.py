"""Fault tests: real `taskit worker` processes killed with SIGKILL, paused, and cut off from Redis.

Workers here run with a 1 s lease and a 0.2 s maintenance step, so a dead worker's jobs
come back in about a second; the last test measures recovery with the default settings.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import fault_tasks
import msgpack
import pytest
from conftest import taskit_command
from records import corrupt_record, field, forget, set_fields

from taskit import Job, JobStatus, Queue, SerializationError
from taskit.storage import keys

FAST = ("--lease", "1", "--maintenance-interval", "0.2")


class WorkerProcess:
    """A `taskit worker fault_tasks` subprocess (or of other `modules`) with its output in a log file."""

    count = 0

    def __init__(
        self, env: dict[str, str], tmp_path: Path, *args: str, crash_at: str | None = None, modules: tuple[str, ...] = ("fault_tasks",)
    ) -> None:
        WorkerProcess.count += 1
        self.log = tmp_path / f"worker-{WorkerProcess.count}.log"
        env = dict(env)
        if crash_at:
            env["TASKIT_CRASH_AT"] = crash_at
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                taskit_command("worker", *modules, *args), env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text()

    def ready(self) -> bool:
        """The worker has started its loop (its signal handlers are installed)."""
        return "started; queues" in self.output()

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()

    def kill_while_running(self, job_id: str, after: float = 0.0) -> None:
        """kill -9 this worker `after` seconds into running the job, and wait until it is gone."""
        wait_until(lambda: status(job_id) == JobStatus.STARTED, what="the job to start")
        time.sleep(after)
        self.signal(signal.SIGKILL)
        self.wait()


@contextmanager
def worker_pool(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """`start(*args, crash_at=None)` starts a worker process; all are killed at the end."""
    started: list[WorkerProcess] = []

    def start(*args: str, crash_at: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path, *args, crash_at=crash_at)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def workers(cli_env: dict[str, str], tmp_path: Path):
    with worker_pool(cli_env, tmp_path) as start:
        yield start


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status(job_id: str) -> JobStatus:
    return Job.fetch(job_id).get_status()


def assert_nothing_held(connection, queues: bool = True) -> None:
    """No job is left in a started registry or an in-flight list (nor, by default, a queue)."""
    kinds = "started|inflight" + ("|queue" if queues else "")
    for key in connection.scan_iter(f"{keys.PREFIX}:*"):
        name = key.decode()
        if re.match(rf"{keys.PREFIX}:{{[^}}]*}}:({kinds}):", name):
            kind = connection.type(key).decode()
            size = connection.llen(key) if kind == "list" else connection.zcard(key)
            assert size == 0, f"{name} still holds {size} job(s)"


def test_kill_while_idle_loses_nothing(connection, workers):
    idle = workers(*FAST)
    wait_until(lambda: connection.zcard(keys.WORKERS) == 1, what="the worker to register")
    idle.signal(signal.SIGKILL)
    idle.wait()
    jobs = [fault_tasks.work.delay(i) for i in range(5)]
    workers(*FAST, "--burst").wait()
    assert [Job.fetch(j.id).result for j in jobs] == list(range(5))
    time.sleep(1.2)  # the dead worker's lease runs out; the next maintenance step forgets it
    workers(*FAST, "--burst").wait()
    assert connection.zcard(keys.WORKERS) == 0


@pytest.mark.parametrize("point", ["after_claim", "before_record"])
def test_kill_at_a_crash_point_reruns_the_job(connection, workers, point):
    job = fault_tasks.work.delay(7)
    dead = workers(*FAST, crash_at=point)
    assert dead.wait() == -signal.SIGKILL
    assert status(job.id) == JobStatus.STARTED  # held by a dead worker, findable, not lost
    assert job.id in Queue().started_job_registry
    rescuer = workers(*FAST)
    wait_until(lambda: status(job.id) == JobStatus.FINISHED, what="the recovered job to finish")
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0
    job.refresh()
    assert (job.result, job.attempts, job.recoveries) == (7, 2, 1)
    assert_nothing_held(connection)


def test_kill_after_record_does_not_rerun(connection, workers):
    job = fault_tasks.work.delay(3)
    other = fault_tasks.work.delay(4)
    dead = workers(*FAST, "--prefetch", "1", crash_at="after_record")
    assert dead.wait() == -signal.SIGKILL
    job.refresh()
    assert (job.get_status(), job.result, job.attempts) == (JobStatus.FINISHED, 3, 1)
    # the same round trip claimed the second job for the worker that died: it comes back
    rescuer = workers(*FAST)
    wait_until(lambda: status(other.id) == JobStatus.FINISHED, what="the second job")
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0
    assert Job.fetch(job.id).attempts == 1
    assert_nothing_held(connection)


def test_kill_mid_job_reruns_it(connection, workers):
    job = fault_tasks.slow_first_attempt.delay(30)
    workers(*FAST).kill_while_running(job.id, after=0.3)
    second = workers(*FAST)
    wait_until(lambda: status(job.id) == JobStatus.FINISHED, what="the job to be recovered and re-run")
    result = Job.fetch(job.id).result
    assert result == {"pid": second.pid, "attempt": 2}
    assert "recovered 1 job(s)" in second.output()


def test_a_job_that_kills_every_worker_is_abandoned(connection, workers):
    killer = fault_tasks.kill_my_worker.delay()
    bystanders = [fault_tasks.work.delay(i) for i in range(10)]
    for _ in range(6):
        if status(killer.id) == JobStatus.FAILED:
            break
        workers(*FAST, "--burst", "--max-deaths", "3").wait()
        time.sleep(1.3)  # let the lease run out
    workers(*FAST, "--burst", "--max-deaths", "3").wait()
    killer.refresh()
    assert killer.get_status() == JobStatus.FAILED
    assert "abandoned: worker died 3 times" in killer.exc_info
    assert killer.id in Queue().failed_job_registry
    for i, job in enumerate(bystanders):
        job.refresh()
        assert (job.get_status(), job.result) == (JobStatus.FINISHED, i), "a bystander was blamed"
    assert_nothing_held(connection)


def test_random_kills_lose_no_job(connection, workers):
    rng = random.Random(1234)
    total = 300
    jobs = Queue().enqueue_many([Queue().prepare_data(fault_tasks.work, (i, 0.02)) for i in range(total)])
    pool = [workers(*FAST) for _ in range(2)]
    kills = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and kills < 12 and Queue().count > 0:
        time.sleep(rng.uniform(0.2, 0.6))
        working = [w for w in pool if w.ready()]  # kill workers that are running jobs, not starting up
        if not working:
            continue
        victim = rng.choice(working)
        victim.signal(signal.SIGKILL)
        victim.wait()
        kills += 1
        pool[pool.index(victim)] = workers(*FAST)
    assert kills >= 5, "the queue drained before enough kills; make the jobs longer"

    def accounted() -> bool:
        found = Job.fetch_many([j.id for j in jobs])
        return all(j is not None and j.status in (JobStatus.FINISHED, JobStatus.FAILED) for j in found)

    wait_until(accounted, timeout=120, what="every job to end")
    found = Job.fetch_many([j.id for j in jobs])
    finished = [j for j in found if j is not None and j.status == JobStatus.FINISHED]
    abandoned = [j for j in found if j is not None and j.status == JobStatus.FAILED and "abandoned" in j.exc_info]
    assert len(finished) + len(abandoned) == total
    assert sorted(j.result for j in finished) == sorted(i for i, j in enumerate(found) if j in finished)
    assert sum(j.recoveries for j in finished) >= 1
    for worker in pool:
        wait_until(worker.ready, what="the replacement worker to start")
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    assert_nothing_held(connection)


def test_a_paused_worker_cannot_overwrite_the_rerun(connection, workers):
    job = fault_tasks.slow_first_attempt.delay(2)
    zombie = workers(*FAST)
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    zombie.signal(signal.SIGSTOP)
    try:
        rescuer = workers(*FAST)
        wait_until(lambda: status(job.id) == JobStatus.FINISHED, what="the re-run to finish")
        assert Job.fetch(job.id).result == {"pid": rescuer.pid, "attempt": 2}
    finally:
        zombie.signal(signal.SIGCONT)
    wait_until(lambda: "was not recorded" in zombie.output(), timeout=10, what="the zombie to give up its result")
    job.refresh()
    assert job.result == {"pid": rescuer.pid, "attempt": 2}
    assert (job.attempts, job.worker_name) == (2, Job.fetch(job.id).worker_name)


def test_a_cpu_bound_job_keeps_its_lease(connection, workers):
    job = fault_tasks.spin.delay(3)
    spinning = workers(*FAST)
    wait_until(lambda: status(job.id) == JobStatus.FINISHED, timeout=20, what="the spinning job")
    job.refresh()
    assert (job.attempts, job.recoveries) == (1, 0)
    assert "recovered" not in spinning.output()


def test_sigterm_finishes_the_current_job_and_exits_0(connection, workers):
    job = fault_tasks.sleep_then_pid.delay(1)
    worker = workers(*FAST)
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    job.refresh()
    assert (job.get_status(), job.result) == (JobStatus.FINISHED, worker.pid)
    assert connection.zcard(keys.WORKERS) == 0


def test_second_sigterm_puts_the_job_back(connection, workers):
    job = fault_tasks.sleep_then_pid.delay(30)
    worker = workers(*FAST)
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert status(job.id) == JobStatus.QUEUED
    assert Queue().job_ids == [job.id]
    assert_nothing_held(connection, queues=False)


def test_worker_survives_a_redis_restart(connection, workers, redis_server):
    worker = workers(*FAST)
    before = fault_tasks.work.delay(1)
    wait_until(lambda: status(before.id) == JobStatus.FINISHED, what="the first job")
    redis_server.stop()
    time.sleep(3)
    assert worker.alive()
    redis_server.start()
    after = fault_tasks.work.delay(2)
    wait_until(lambda: Job.fetch_many([after.id])[0] is not None and status(after.id) == JobStatus.FINISHED,
               timeout=30, what="a job enqueued after the restart")
    assert worker.alive()
    log = worker.output()
    assert log.count("cannot reach Redis") == 1, log
    assert "is back after" in log
    assert "Traceback" not in log


def test_corrupt_and_missing_jobs_do_not_stop_the_worker(connection, workers):
    q = Queue()
    corrupt = fault_tasks.work.delay(1)
    set_fields(connection, corrupt.id, {keys.Field.ARGS: b"\xc1not msgpack"})
    garbled = fault_tasks.work.delay(5)  # its packed entry (storage/keys.py `packed`) garbled
    corrupt_record(connection, garbled.id, b"\xc1not msgpack")
    misshapen = fault_tasks.work.delay(6)
    corrupt_record(connection, misshapen.id, msgpack.packb(["f", ["nested"], "odd"]))
    expired = q.enqueue(fault_tasks.work, 2, ttl=1)
    forget(connection, expired.id)  # as if its ttl ran out: the id stays queued
    unknown = q.enqueue("fault_tasks.no_such_function", 3)
    forbidden = q.enqueue("os.system", "touch /tmp/taskit-fault-test-should-not-exist")
    good = fault_tasks.work.delay(4)
    worker = workers(*FAST, "--burst")
    assert worker.wait() == 0
    assert status(good.id) == JobStatus.FINISHED
    assert status(corrupt.id) == JobStatus.FAILED
    assert "field 'args' is unreadable" in Job.fetch(corrupt.id).exc_info
    assert "no_such_function" in Job.fetch(unknown.id).exc_info
    assert "os.system" in Job.fetch(forbidden.id).exc_info
    assert not os.path.exists("/tmp/taskit-fault-test-should-not-exist")
    for unreadable in (garbled, misshapen):
        with pytest.raises(SerializationError, match="field 'func' is missing"):
            Job.fetch(unreadable.id)
        assert field(connection, unreadable.id, keys.Field.STATUS) == b"failed"
        assert unreadable.id in q.failed_job_registry
    assert_nothing_held(connection)


def test_recovery_time_with_default_settings(connection, workers):
    """Measures how long a SIGKILLed worker's job takes to come back with the defaults."""
    job = fault_tasks.slow_first_attempt.delay(60)
    first = workers()
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    workers()
    time.sleep(1)
    killed_at = time.monotonic()
    first.signal(signal.SIGKILL)
    wait_until(lambda: status(job.id) == JobStatus.FINISHED, timeout=60, what="recovery with default settings")
    took = time.monotonic() - killed_at
    print(f"recovered with default settings in {took:.1f}s")
    assert took < 40


def test_a_frozen_redis_does_not_make_live_workers_look_dead(connection, workers, redis_server):
    """Redis stopped (SIGSTOP) for three leases: no worker could renew anything meanwhile, so
    when it resumes, leases that ran out during the freeze must wait for their workers to renew
    them (lib/verdicts.lua) rather than be judged at once. A worker really killed just before
    the freeze still has its job recovered afterwards."""
    long = [fault_tasks.counted.delay(f"long{i}", 6) for i in range(2)]
    live = [workers(*FAST, "-n", f"live-{i}") for i in range(2)]  # each claims one long job
    wait_until(lambda: all(status(job.id) == JobStatus.STARTED for job in long), what="the long jobs to start")
    idle = workers(*FAST, "-n", "live-idle")
    wait_until(idle.ready, what="the idle worker to start")
    orphan = fault_tasks.counted.apply_async(("orphan",), queue="orphans")
    dead = workers(*FAST, "-n", "dead", "-q", "orphans", crash_at="after_claim")
    assert dead.wait() == -signal.SIGKILL  # holds the orphan; its lease runs out during the freeze
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    wait_until(lambda: all(status(job.id) == JobStatus.FINISHED for job in long), what="the long jobs to finish")
    wait_until(lambda: Job.fetch(orphan.id).recoveries == 1, what="the killed worker's job to be recovered")
    assert workers(*FAST, "-q", "orphans", "--burst").wait() == 0
    logs = "".join(worker.output() for worker in [*live, idle])
    gone = [line for line in logs.splitlines() if "workers gone" in line]
    assert gone and all("live-" not in line for line in gone), gone
    for i, job in enumerate(long):
        job.refresh()
        assert (fault_tasks.runs(connection, f"long{i}"), job.attempts, job.recoveries) == (1, 1, 0), logs
    assert Job.fetch(orphan.id).recoveries == 1 and fault_tasks.runs(connection, "orphan") == 1
    for worker in [*live, idle]:
        assert worker.alive()
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
