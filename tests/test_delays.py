"""Delayed and scheduled jobs (issue 5): countdown, eta, enqueue_in, enqueue_at.

Due times are checked on the scheduled registry's scores, and time is moved with the
worker's injectable clock; the tests with real worker processes sleep a second or two.
"""

from __future__ import annotations

import datetime as dt
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis
import retry_tasks
from conftest import taskit_command
from records import field, held_by

from taskit import Job, JobStatus, Queue, Retry, Worker
from taskit.exceptions import ScheduleError
from taskit.storage import keys

UTC = dt.timezone.utc


def at(seconds_from_now: float) -> float:
    return time.time() + seconds_from_now


def score(connection: redis.Redis, job: Job) -> float | None:
    return connection.zscore(keys.of_queue(job.origin).registry("scheduled"), job.id)


def burst(clock: float | None = None, queue: str = "default") -> int:
    return Worker([queue], clock=(lambda: clock) if clock is not None else time.time).work(burst=True)


# -- the four ways in ----------------------------------------------------------------------


def test_countdown(connection: redis.Redis) -> None:
    before = time.time()
    job = retry_tasks.log_run.apply_async(["countdown"], countdown=60)
    after = time.time()
    assert job.get_status() == JobStatus.SCHEDULED
    assert before + 60 <= score(connection, job) <= after + 60
    queue = Queue()
    assert queue.count == 0 and job.id in queue.scheduled_job_registry.get_job_ids()
    assert burst() == 0  # a burst worker exits when nothing is due
    assert job.get_status() == JobStatus.SCHEDULED
    assert burst(clock=after + 60) == 1
    assert job.get_status() == JobStatus.FINISHED
    assert connection.lrange("test:runs", 0, -1) == [b"countdown"]
    assert len(queue.scheduled_job_registry) == 0


def test_countdown_as_timedelta_and_zero(connection: redis.Redis) -> None:
    later = retry_tasks.log_run.apply_async(["td"], countdown=dt.timedelta(minutes=5))
    now = retry_tasks.log_run.apply_async(["zero"], countdown=0)
    assert score(connection, later) == pytest.approx(at(300), abs=5)
    assert burst() == 1  # countdown=0 is due at once
    assert now.get_status() == JobStatus.FINISHED and later.get_status() == JobStatus.SCHEDULED


def test_eta(connection: redis.Redis) -> None:
    when = dt.datetime.now(ZoneInfo("Asia/Tokyo")).replace(microsecond=0) + dt.timedelta(hours=2)
    job = retry_tasks.log_run.apply_async(["eta"], eta=when)
    assert score(connection, job) == when.timestamp()
    assert Queue().scheduled_job_registry.get_scheduled_time(job) == when
    assert burst(clock=when.timestamp() - 1) == 0
    assert burst(clock=when.timestamp()) == 1
    assert job.get_status() == JobStatus.FINISHED


def test_eta_in_the_past_runs_at_once(connection: redis.Redis) -> None:
    job = retry_tasks.log_run.apply_async(["past"], eta=dt.datetime(2001, 1, 1, tzinfo=UTC))
    assert job.get_status() == JobStatus.SCHEDULED  # until a worker promotes it
    assert burst() == 1
    assert job.get_status() == JobStatus.FINISHED


def test_enqueue_in(connection: redis.Redis) -> None:
    queue = Queue("later", connection=connection)
    a = queue.enqueue_in(dt.timedelta(seconds=90), retry_tasks.log_run, "in-td", list_key="test:in")
    b = queue.enqueue_in(30, retry_tasks.log_run, "in-s", list_key="test:in", job_id="fixed-id", retry=Retry(max=1))
    assert (a.origin, b.id) == ("later", "fixed-id")
    assert Job.fetch("fixed-id").retry == Retry(max=1)
    assert score(connection, a) == pytest.approx(at(90), abs=5)
    assert score(connection, b) == pytest.approx(at(30), abs=5)
    assert queue.scheduled_job_registry.get_job_ids() == ["fixed-id", a.id]  # by run-at
    assert burst(clock=at(60), queue="later") == 1
    assert burst(clock=at(120), queue="later") == 1
    assert connection.lrange("test:in", 0, -1) == [b"in-s", b"in-td"]
    assert Job.fetch(b.id).kwargs == {"list_key": "test:in"}


def test_enqueue_at(connection: redis.Redis) -> None:
    when = dt.datetime(2030, 6, 1, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))
    job = Queue().enqueue_at(when, retry_tasks.log_run, "at")
    assert score(connection, job) == when.timestamp()
    assert job.get_status() == JobStatus.SCHEDULED
    assert burst(clock=when.timestamp()) == 1
    assert connection.lrange("test:runs", 0, -1) == [b"at"]


def test_scheduled_job_can_be_canceled(connection: redis.Redis) -> None:
    job = retry_tasks.log_run.apply_async(["canceled"], countdown=10)
    job.cancel()
    assert score(connection, job) is None
    assert burst(clock=at(20)) == 0


def test_burst_worker_promotes_due_jobs_works_and_exits(connection: redis.Redis) -> None:
    due = [retry_tasks.log_run.apply_async([f"due{i}"], countdown=i) for i in range(5)]
    future = retry_tasks.log_run.apply_async(["future"], countdown=3600)
    assert burst(clock=at(10)) == 5
    assert all(j.get_status() == JobStatus.FINISHED for j in due)
    assert future.get_status() == JobStatus.SCHEDULED
    assert Counter(connection.lrange("test:runs", 0, -1)) == Counter(f"due{i}".encode() for i in range(5))


# -- bad input: clear errors, nothing written ------------------------------------------------

NAIVE = dt.datetime(2030, 1, 1, 12, 0)
AWARE = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
BAD = [
    ({"countdown": -1}, r"countdown must be 0 to 3,155,760,000 seconds \(100 years\)"),
    ({"countdown": dt.timedelta(seconds=-5)}, r"countdown must be 0 to 3,155,760,000 seconds \(100 years\)"),
    ({"countdown": math.nan}, r"countdown must be 0 to 3,155,760,000 seconds \(100 years\)"),
    ({"countdown": math.inf}, r"countdown must be 0 to 3,155,760,000 seconds \(100 years\)"),
    ({"countdown": sys.maxsize}, r"countdown must be 0 to 3,155,760,000 seconds \(100 years\)"),  # past 100 years
    ({"countdown": "10"}, "countdown must be seconds or a timedelta, not str"),
    ({"countdown": True}, "countdown must be seconds or a timedelta, not bool"),
    ({"eta": NAIVE}, "has no timezone"),
    ({"eta": "2030-01-01T12:00:00Z"}, "eta must be a datetime, not str"),
    ({"eta": dt.date(2030, 1, 1)}, "eta must be a datetime, not date"),
    ({"eta": 1893499200}, "eta must be a datetime, not int"),
    ({"countdown": 5, "eta": AWARE}, "not both"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[m for _, m in BAD])
def test_apply_async_refuses_bad_times(connection: redis.Redis, kwargs: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        retry_tasks.log_run.apply_async(["bad"], **kwargs)
    assert connection.dbsize() == 0


@pytest.mark.parametrize(
    "delay", [-1, math.nan, "5", None, dt.datetime(2030, 1, 1, tzinfo=UTC)], ids=repr
)
def test_enqueue_in_refuses_bad_delays(connection: redis.Redis, delay: object) -> None:
    with pytest.raises(ScheduleError):
        Queue().enqueue_in(delay, retry_tasks.log_run, "bad")  # type: ignore[arg-type]
    assert connection.dbsize() == 0


@pytest.mark.parametrize("when", [NAIVE, "tomorrow", 1893499200, dt.date(2030, 1, 1), None], ids=repr)
def test_enqueue_at_refuses_bad_times(connection: redis.Redis, when: object) -> None:
    with pytest.raises(ScheduleError):
        Queue().enqueue_at(when, retry_tasks.log_run, "bad")  # type: ignore[arg-type]
    assert connection.dbsize() == 0


def test_schedule_error_is_a_configuration_error_and_a_value_error(connection: redis.Redis) -> None:
    with pytest.raises(ValueError):
        Queue().enqueue_in(-5, retry_tasks.log_run, "bad")


# -- real worker processes ---------------------------------------------------------------


def start_worker(cli_env: dict[str, str], tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen(
        taskit_command("worker", "retry_tasks", "-n", name, "--maintenance-interval", "0.2", *args),
        env=cli_env, stdout=log, stderr=subprocess.STDOUT,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_workers_racing_on_the_same_due_jobs_run_each_once(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    workers = [start_worker(cli_env, tmp_path, f"racer{i}") for i in range(4)]
    try:
        due = at(1.5)
        queue = Queue()
        jobs = queue.enqueue_many([queue.prepare_data(retry_tasks.log_run, [f"r{i}"]) for i in range(300)], run_at=due)
        assert len(queue.scheduled_job_registry) == 300
        assert wait_for(lambda: connection.llen("test:runs") >= 300)
        time.sleep(0.3)  # a duplicate run would show up now
    finally:
        stop(workers)
    runs = Counter(connection.lrange("test:runs", 0, -1))
    assert len(runs) == 300 and set(runs.values()) == {1}
    assert all(j.get_status() == JobStatus.FINISHED for j in Job.fetch_many([j.id for j in jobs]))
    ran_on = {field(connection, j.id, keys.Field.WORKER) for j in jobs}
    assert len(ran_on) > 1, "expected several workers to take part in the race"


def test_delayed_jobs_survive_a_worker_restart(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    worker = start_worker(cli_env, tmp_path, "doomed")
    try:
        assert wait_for(lambda: connection.zscore(keys.WORKERS, "doomed") is not None)
        job = retry_tasks.log_run.apply_async(["survivor"], countdown=1.5)
        time.sleep(0.3)
    finally:
        worker.kill()  # kill -9: nothing is held in its memory
        worker.wait()
    assert job.get_status() == JobStatus.SCHEDULED
    assert score(connection, job) is not None
    # (a periodic tick of retry_tasks, due every second, may have been claimed: only the
    # delayed job must not be)
    assert [i for i in held_by(connection, "doomed") if not i.startswith(b"periodic:")] == []
    assert wait_for(lambda: time.time() >= score(connection, job), timeout=5)
    subprocess.run(taskit_command("worker", "retry_tasks", "--burst"), env=cli_env, check=True, timeout=60)
    assert job.get_status() == JobStatus.FINISHED
    assert connection.lrange("test:runs", 0, -1) == [b"survivor"]
