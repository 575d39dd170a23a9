"""Periodic tasks (issue 5): ticks enqueued by the workers, each exactly once.

`enqueue_due` is driven with explicit times; workers with an injected clock, and two real
worker processes for a few seconds, check that each tick runs once however many workers run.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import retry_tasks
from conftest import taskit_command
from records import exists, field, periodic_key

from taskit import (
    Job,
    JobStatus,
    Queue,
    Retry,
    SerializationError,
    Worker,
    functions,
    task,
)
from taskit.exceptions import ConfigurationError, InvalidJobIdError, ScheduleError
from taskit.periodic import PeriodicTask, enqueue_due, periodic, registered, unregister
from taskit.schedule import Cron, Every
from taskit.storage import keys

#: a Unix time on a whole hour (so on every minute and 5-minute tick too)
HOUR = 1_800_000_000 - 1_800_000_000 % 3600


@pytest.fixture
def register() -> Iterator[Callable[..., PeriodicTask]]:
    """`periodic(...)` that unregisters what it registered when the test ends."""
    names: list[str] = []

    def register(*args: object, **kwargs: object) -> PeriodicTask:
        entry = periodic(*args, **kwargs)  # type: ignore[arg-type]
        names.append(entry.name)
        return entry

    yield register
    for name in names:
        unregister(name)


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


def test_a_new_schedule_waits_for_its_next_tick(connection: redis.Redis, register: Callable[..., PeriodicTask]) -> None:
    register(retry_tasks.log_run, 60, name="p-first", args=["p"], queue="p1")
    assert enqueue_due(connection, HOUR + 30, queues=["p1"]) == []  # the tick at HOUR is already past
    assert connection.get(periodic_key("p-first", "p1")) == repr(float(HOUR)).encode()
    assert Queue("p1").count == 0

    jobs = enqueue_due(connection, HOUR + 60, queues=["p1"])
    assert ids(jobs) == [f"periodic:p-first:{HOUR + 60}"]
    assert jobs[0].get_status() == JobStatus.QUEUED
    assert Queue("p1").job_ids == [f"periodic:p-first:{HOUR + 60}"]
    assert Job.fetch(jobs[0].id).args == ("p",)
    # the same tick again, from this or any other worker: nothing
    assert enqueue_due(connection, HOUR + 60, queues=["p1"]) == []
    assert enqueue_due(connection, HOUR + 119, queues=["p1"]) == []
    assert Queue("p1").count == 1


def test_missed_ticks_run_once_not_as_a_burst(connection: redis.Redis, register: Callable[..., PeriodicTask]) -> None:
    register(retry_tasks.log_run, 60, name="p-missed", args=["m"], queue="p2")
    enqueue_due(connection, HOUR, queues=["p2"])
    # workers were down for ten minutes: only the latest missed tick is enqueued
    assert ids(enqueue_due(connection, HOUR + 600 + 59, queues=["p2"])) == [f"periodic:p-missed:{HOUR + 600}"]
    assert Queue("p2").count == 1


def test_upcoming_tick_is_scheduled_ahead(connection: redis.Redis, register: Callable[..., PeriodicTask]) -> None:
    register(retry_tasks.log_run, 60, name="p-ahead", args=["a"], queue="p3")
    jobs = enqueue_due(connection, HOUR + 58, queues=["p3"], lookahead=5)
    assert ids(jobs) == [f"periodic:p-ahead:{HOUR + 60}"]
    assert jobs[0].get_status() == JobStatus.SCHEDULED
    assert connection.zscore(keys.of_queue("p3").registry("scheduled"), jobs[0].id) == HOUR + 60
    assert enqueue_due(connection, HOUR + 61, queues=["p3"], lookahead=5) == []


def test_only_workers_on_the_queue_enqueue(connection: redis.Redis, register: Callable[..., PeriodicTask]) -> None:
    register(retry_tasks.log_run, 60, name="p-elsewhere", args=["e"], queue="p4")
    assert enqueue_due(connection, HOUR + 60, queues=["default"]) == []
    assert connection.get(periodic_key("p-elsewhere", "p4")) is None


def test_a_tick_is_not_repeated_after_its_job_record_is_gone(
    connection: redis.Redis, register: Callable[..., PeriodicTask]
) -> None:
    register(retry_tasks.log_run, 60, name="p-gone", args=["g"], queue="p5", result_ttl=0)
    enqueue_due(connection, HOUR, queues=["p5"])
    assert len(enqueue_due(connection, HOUR + 60, queues=["p5"])) == 1
    assert Worker(["p5"], clock=lambda: HOUR + 61.0).work(burst=True) == 1
    assert not exists(connection, f"periodic:p-gone:{HOUR + 60}")  # result_ttl=0 dropped it
    assert enqueue_due(connection, HOUR + 62, queues=["p5"]) == []


def test_job_options_reach_each_tick(connection: redis.Redis, register: Callable[..., PeriodicTask]) -> None:
    register(
        retry_tasks.log_run, "*/5 * * * *", name="p-opts", args=["o"], kwargs={"list_key": "test:o"},
        queue="p6", meta={"source": "cron"}, retry=Retry(max=2), timeout=30, description="every five minutes",
    )
    enqueue_due(connection, HOUR + 1, queues=["p6"])
    job = Job.fetch(enqueue_due(connection, HOUR + 300, queues=["p6"])[0].id)
    assert job.id == f"periodic:p-opts:{HOUR + 300}"
    assert (job.meta, job.retry, job.timeout, job.description) == ({"source": "cron"}, Retry(max=2), 30, "every five minutes")
    assert job.kwargs == {"list_key": "test:o"} and job.origin == "p6"


def test_two_workers_enqueue_and_run_each_tick_once(
    connection: redis.Redis, register: Callable[..., PeriodicTask]
) -> None:
    register(retry_tasks.log_run, 60, name="p-two", args=["tick"], kwargs={"list_key": "test:two"}, queue="p7")

    class Clock:
        now = HOUR + 10.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    workers = [Worker(["p7"], clock=clock, maintenance_interval=1, name=f"w{i}") for i in range(2)]
    ran = []
    for minute in range(6):
        clock.now = HOUR + 10.0 + 60 * minute
        ran.append([w.work(burst=True) for w in workers])
    assert ran == [[0, 0]] + [[1, 0]] * 5  # the first worker to look enqueues and runs it
    assert connection.llen("test:two") == 5
    finished = sorted(Queue("p7").finished_job_registry.get_job_ids())
    assert finished == [f"periodic:p-two:{HOUR + 60 * m}" for m in range(1, 6)]


def test_periodic_ticks_with_two_real_workers(connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path) -> None:
    """`@task(schedule=1)` in retry_tasks: two worker processes, about three ticks, each run once."""
    procs = []
    for i in range(2):
        log = (tmp_path / f"w{i}.log").open("wb")
        procs.append(subprocess.Popen(
            taskit_command("worker", "retry_tasks", "-q", retry_tasks.PERIODIC_QUEUE, "-n", f"periodic{i}",
                           "--maintenance-interval", "0.2"),
            env=cli_env, stdout=log, stderr=subprocess.STDOUT,
        ))
    try:
        deadline = time.monotonic() + 20
        while connection.llen("test:ticks") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a tick run twice would show up now
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=20)
    ticks = [t.decode() for t in connection.lrange("test:ticks", 0, -1)]
    assert len(ticks) >= 3, [p.read_text() for p in tmp_path.glob("*.log")]
    assert len(set(ticks)) == len(ticks), f"a tick ran twice: {ticks}"
    assert all(t.startswith("periodic:retry_tasks.every_second:") for t in ticks)
    ran_on = {field(connection, t, keys.Field.WORKER) for t in ticks}
    assert ran_on <= {b"periodic0", b"periodic1"}
    for log in tmp_path.glob("*.log"):
        assert "Traceback" not in log.read_text()


# -- registration --------------------------------------------------------------------------


def test_task_schedule_registers_a_periodic_task() -> None:
    entry = registered()["retry_tasks.every_second"]
    assert entry.schedule == Every(1)
    assert entry.queue == retry_tasks.PERIODIC_QUEUE
    assert entry.func is retry_tasks.every_second


def test_cron_and_timedelta_schedules(register: Callable[..., PeriodicTask]) -> None:
    assert register(retry_tasks.log_run, "0 9 * * mon-fri", name="p-cron", args=["c"]).schedule == Cron("0 9 * * mon-fri")
    assert register(retry_tasks.log_run, dt.timedelta(hours=1), name="p-td", args=["t"]).schedule == Every(3600)
    entry = register(retry_tasks.log_run, Cron("30 * * * *"), name="p-obj", args=["x"])
    assert entry.next_run(HOUR) == dt.datetime.fromtimestamp(HOUR + 1800, tz=dt.timezone.utc)


@pytest.mark.parametrize(
    "schedule", ["61 * * * *", "* * *", "every minute", "*/0 * * * *", "0 0 30 2 *", -5, 0.5, True, [1, 2]], ids=repr
)
def test_bad_schedules_are_refused_and_nothing_is_registered(connection: redis.Redis, schedule: object) -> None:
    with pytest.raises(ScheduleError):
        task(name="tests.bad_schedule", schedule=schedule)(len)
    assert "tests.bad_schedule" not in registered()
    assert "tests.bad_schedule" not in functions.registered_tasks()
    with pytest.raises(ScheduleError):
        periodic(retry_tasks.log_run, schedule, name="p-bad", args=["b"])  # type: ignore[arg-type]
    assert "p-bad" not in registered()
    assert connection.dbsize() == 0


def test_bad_periodic_options_are_refused(connection: redis.Redis, register: Callable[..., PeriodicTask]) -> None:
    with pytest.raises(ConfigurationError, match="unknown option job_id"):
        periodic(retry_tasks.log_run, 60, name="p-x", args=["x"], job_id="mine")
    with pytest.raises(SerializationError):
        periodic(retry_tasks.log_run, 60, name="p-x", args=[object()])
    with pytest.raises(InvalidJobIdError):
        periodic(retry_tasks.log_run, 60, name="no spaces allowed", args=["x"])
    with pytest.raises(ConfigurationError, match="args must be a list"):
        periodic(retry_tasks.log_run, 60, name="p-x", args="x")
    register(retry_tasks.log_run, 60, name="p-taken", args=["x"])
    with pytest.raises(ConfigurationError, match="already registered"):
        periodic(retry_tasks.plain_fail, 60, name="p-taken", args=["x"])
    assert "p-x" not in registered()
    assert connection.dbsize() == 0
