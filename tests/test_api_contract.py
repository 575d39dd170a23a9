"""The public API's promises under misuse (issue 11): RQ's reserved options, bounded
durations, a local Job equal to the stored one, `wait()` saying no worker listens,
`bind=True` called directly, fresh counts beside a fresh status, and a clear TaskitError
(nothing written) for wrong types, missing jobs and a dead Redis.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import retry_tasks
import sample_tasks
from conftest import free_port, registered_worker
from records import set_fields, stored, ttl
from roundtrips import commands_run, counting_client

import taskit
from taskit import Job, JobStatus, Queue, Retry, Worker, config, task
from taskit.exceptions import (
    ConfigurationError,
    InvalidJobIdError,
    InvalidOperationError,
    NoSuchJobError,
    RedisUnavailableError,
    ScheduleError,
    SerializationError,
    TaskitError,
    WaitTimeoutError,
)
from taskit.queue import ENQUEUE_OPTIONS, NOT_SUPPORTED
from taskit.registry import FailedJobRegistry
from taskit.schedule import MAX_SECONDS
from taskit.storage import keys

UTC = dt.timezone.utc
CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = []


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Records what it was called with: a reserved option must never arrive here."""
    CALLS.append((args, kwargs))
    return {"args": list(args), "kwargs": kwargs}


@task
def echo_task(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return echo(*args, **kwargs)


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


def run_all(queue: Queue) -> int:
    return Worker([queue]).work(burst=True)


# -- RQ's reserved options -------------------------------------------------------------------------

#: what rq.Queue.parse_args takes out of enqueue()'s keyword arguments (RQ 2.x)
RQ_RESERVED = {
    "job_timeout", "description", "result_ttl", "ttl", "failure_ttl", "depends_on", "job_id", "at_front", "meta",
    "retry", "repeat", "on_success", "on_failure", "on_stopped", "rate_limit", "webhooks", "pipeline", "unique",
}


def test_every_name_rq_reserves_is_taken_out_of_the_call() -> None:
    assert set(ENQUEUE_OPTIONS) | set(NOT_SUPPORTED) == RQ_RESERVED
    assert not set(ENQUEUE_OPTIONS) & set(NOT_SUPPORTED)


def ways_to_enqueue(queue: Queue, option: str, value: object) -> dict[str, Any]:
    later = dt.datetime.now(UTC) + dt.timedelta(minutes=5)
    return {
        "enqueue": lambda: queue.enqueue(echo, 1, **{option: value}),
        "enqueue explicit": lambda: queue.enqueue(echo, args=(1,), **{option: value}),
        "enqueue_at": lambda: queue.enqueue_at(later, echo, 1, **{option: value}),
        "enqueue_in": lambda: queue.enqueue_in(60, echo, 1, **{option: value}),
        "enqueue_call": lambda: queue.enqueue_call(echo, (1,), **{option: value}),
        "prepare_data": lambda: queue.prepare_data(echo, (1,), **{option: value}),
        "apply_async": lambda: echo_task.apply_async((1,), **{option: value}),
        "map": lambda: echo_task.map([(1,)], **{option: value}),
    }


@pytest.mark.parametrize("option", NOT_SUPPORTED)
def test_an_rq_option_taskit_lacks_is_refused_and_nothing_is_written(connection: redis.Redis, queue: Queue, option: str) -> None:
    parent = queue.enqueue(echo, "parent")
    before = connection.dbsize()
    for way, call in ways_to_enqueue(queue, option, parent.id).items():
        with pytest.raises(ConfigurationError) as refused:
            call()
        assert str(refused.value) == f"taskit does not support RQ's enqueue option {option}= yet; nothing was enqueued", way
        assert connection.dbsize() == before, way
    assert queue.job_ids == [parent.id]
    run_all(queue)
    assert CALLS == [(("parent",), {})]  # the function never saw the option


def test_depends_on_no_longer_runs_the_dependent_job_at_once(connection: redis.Redis, queue: Queue) -> None:
    parent = queue.enqueue(echo, "parent")
    with pytest.raises(ConfigurationError, match="depends_on"):
        queue.enqueue(echo, "child", depends_on=parent)
    with pytest.raises(ConfigurationError, match="on_success= and on_failure="):
        queue.enqueue(echo, "child", on_success=echo, on_failure=echo)
    assert queue.count == 1


def test_rq_explicit_args_and_kwargs(connection: redis.Redis, queue: Queue) -> None:
    both = queue.enqueue(echo, args=(1, 2), kwargs={"ttl": "the function's"}, ttl=60, job_id="explicit")
    only_args = queue.enqueue(echo, args=[3])
    only_kwargs = queue.enqueue(echo, kwargs={"x": 4})
    later = queue.enqueue_in(0, echo, args=(5,), kwargs={"y": 6}, result_ttl=10)
    at = queue.enqueue_at(dt.datetime.now(UTC), echo, kwargs={"z": 7})
    assert (both.id, both.args, both.kwargs, both.ttl) == ("explicit", (1, 2), {"ttl": "the function's"}, 60)
    assert (only_args.args, only_args.kwargs, only_kwargs.args, only_kwargs.kwargs) == ((3,), {}, (), {"x": 4})
    assert (later.args, later.kwargs, later.result_ttl, at.kwargs) == ((5,), {"y": 6}, 10, {"z": 7})
    run_all(queue)
    assert Job.fetch("explicit").result == {"args": [1, 2], "kwargs": {"ttl": "the function's"}}
    assert Job.fetch(later.id).result == {"args": [5], "kwargs": {"y": 6}}


def test_rq_explicit_form_refuses_mixing(connection: redis.Redis, queue: Queue) -> None:
    with pytest.raises(ConfigurationError, match="positionally or as args=/kwargs=, not both"):
        queue.enqueue(echo, 1, args=(2,))
    with pytest.raises(ConfigurationError, match=r"unknown enqueue option x: with args=/kwargs=, the function's keyword"):
        queue.enqueue(echo, args=(1,), x=2)  # RQ drops x silently
    with pytest.raises(ConfigurationError, match="args must be a list or tuple, not int"):
        queue.enqueue(echo, args=5)
    with pytest.raises(ConfigurationError, match="kwargs must be a dict"):
        queue.enqueue_in(5, echo, kwargs=[1])
    assert connection.dbsize() == 0


def test_enqueue_call_takes_rqs_timeout_name(connection: redis.Redis, queue: Queue) -> None:
    assert queue.enqueue_call(echo, (1,), timeout=7).timeout == 7  # RQ's enqueue_call spells it timeout
    assert queue.enqueue(echo, timeout=7).kwargs == {"timeout": 7}  # in enqueue, as in RQ: the function's
    with pytest.raises(ConfigurationError, match="job_timeout or timeout, not both"):
        queue.enqueue_call(echo, timeout=1, job_timeout=2)


# -- durations are bounded ---------------------------------------------------------------------------

TOO_LONG = [sys.maxsize, MAX_SECONDS + 1, dt.timedelta(days=365 * 200)]


@pytest.mark.parametrize("value", TOO_LONG, ids=repr)
@pytest.mark.parametrize("option", ["ttl", "result_ttl", "failure_ttl", "job_timeout"])
def test_a_duration_past_100_years_is_refused_and_nothing_is_written(
    connection: redis.Redis, queue: Queue, option: str, value: object
) -> None:
    name = "timeout" if option == "job_timeout" else option
    expected = rf"^{name} must be [01] to 3,155,760,000 seconds \(100 years\)"
    calls = [
        lambda: queue.enqueue(echo, 1, **{option: value}),
        lambda: queue.enqueue_in(10, echo, 1, **{option: value}),
        lambda: echo_task.apply_async((1,), **{name: value}),
        lambda: echo_task.map([(1,)], **{name: value}),
        lambda: Job.create(echo, **{name: value}),
        lambda: task(**{name: value})(echo),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError, match=expected):
            call()
    assert connection.dbsize() == 0


def test_100_years_and_forever_are_accepted_and_recorded_whole(connection: redis.Redis, queue: Queue) -> None:
    ok = queue.enqueue(echo, "ok", ttl=MAX_SECONDS, result_ttl=MAX_SECONDS, job_timeout=MAX_SECONDS)
    failed = queue.enqueue(sample_tasks.fail, "boom", failure_ttl=MAX_SECONDS)
    forever = queue.enqueue(echo, "forever", result_ttl=-1, job_timeout=-1)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    assert Job.fetch(ok.id).result == {"args": ["ok"], "kwargs": {}}
    assert ok.id in queue.finished_job_registry and forever.id in queue.finished_job_registry
    assert failed.id in queue.failed_job_registry  # the whole batch was recorded
    assert ttl(connection, ok.id) > MAX_SECONDS - 60 and ttl(connection, forever.id) == -1
    assert Job.fetch(forever.id).timeout is None


def test_countdown_is_bounded_too(connection: redis.Redis, queue: Queue) -> None:
    for call in (lambda: echo_task.apply_async((1,), countdown=sys.maxsize),
                 lambda: queue.enqueue_in(dt.timedelta(days=365 * 101), echo, 1)):
        with pytest.raises(ScheduleError, match=r"countdown must be 0 to 3,155,760,000 seconds \(100 years\)"):
            call()
    assert connection.dbsize() == 0


# -- the Job enqueue() returns is the Job Job.fetch reads -------------------------------------------

STATE = ("id", "func_name", "args", "kwargs", "origin", "status", "created_at", "enqueued_at", "started_at",
         "ended_at", "ttl", "result_ttl", "failure_ttl", "timeout", "description", "meta", "attempts", "retries",
         "recoveries", "worker_name")


def state(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in STATE}


def test_the_enqueued_job_equals_the_fetched_one(connection: redis.Redis, queue: Queue) -> None:
    made_early = [Job.create(echo, args=(i,), meta={"i": i}) for i in range(20)]
    for job in made_early:  # stored with a created_at of its own (made a second or more before)
        job.created_at = job.created_at - dt.timedelta(seconds=5, microseconds=123_456)
    jobs = [queue.enqueue(echo, i, ttl=100) for i in range(150)]
    jobs += [echo_task.apply_async((i,), countdown=60) for i in range(50)]
    jobs += queue.enqueue_many([queue.prepare_data(echo, (i,)) for i in range(50)])
    jobs += [queue.enqueue_job(job) for job in made_early]
    fetched = Job.fetch_many([job.id for job in jobs])
    mismatched = [(state(j), state(f)) for j, f in zip(jobs, fetched) if f is None or state(j) != state(f)]
    assert not mismatched, mismatched[:1]
    assert all(job.enqueued_at.microsecond % 1000 == 0 for job in jobs)  # stored to the millisecond


# -- wait() says when no worker listens --------------------------------------------------------------


def test_wait_timeout_says_no_worker_is_alive(connection: redis.Redis) -> None:
    job = Queue("reports", connection=connection).enqueue(echo, 1)
    with pytest.raises(WaitTimeoutError) as timed_out:
        job.wait(timeout=0.1)
    assert str(timed_out.value) == (
        f"job {job.id} is still queued after 0.1s; no worker is listening on queue 'reports' (no worker is alive)"
    )


def test_wait_timeout_names_the_queues_live_workers_listen_on(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    waiting = Queue("reports", connection=connection).enqueue(echo, 1)
    scheduled = Queue("reports", connection=connection).enqueue_in(3600, echo, 2)
    with registered_worker(cli_env, connection, "w-hint", "-q", "emails", "-q", "high"):
        for job, status in ((waiting, "queued"), (scheduled, "scheduled")):
            with pytest.raises(WaitTimeoutError) as timed_out:
                job.wait(timeout=0.2)
            assert str(timed_out.value) == (
                f"job {job.id} is still {status} after 0.2s; no worker is listening on queue 'reports' "
                "(live workers listen on: emails, high)"
            )
        listened = Queue("emails", connection=connection).enqueue(sample_tasks.sleep, 30)
        deadline = time.monotonic() + 30
        while listened.get_status() != JobStatus.STARTED:
            assert time.monotonic() < deadline, "the worker did not start the job"
            time.sleep(0.05)
        with pytest.raises(WaitTimeoutError) as running:
            listened.wait(timeout=0.2)
        assert str(running.value) == f"job {listened.id} is still started after 0.2s"  # no hint: it runs


def test_wait_reads_the_workers_only_when_it_times_out(redis_server, connection: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(echo, 1)
    run_all(queue)
    with commands_run(redis_server) as ran:
        assert job.wait(timeout=5) == {"args": [1], "kwargs": {}}
    assert "zrange" not in ran and "llen" not in ran, ran  # the workers are read only on a timeout


def test_wait_refuses_a_bad_timeout(connection: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(echo, 1)
    for bad in ("10", -1, float("nan"), True, [1]):
        with pytest.raises(ConfigurationError, match="wait timeout must be None or zero or more seconds"):
            job.wait(timeout=bad)  # type: ignore[arg-type]


# -- bind=True called directly ---------------------------------------------------------------------


@task(bind=True, queue="emails", timeout=30)
def progress(job: Job, x: Any, *, step: str = "start") -> Job:
    job.meta["step"] = step
    job.save_meta()
    return job


def test_a_bound_task_called_directly_gets_a_job_that_is_never_written(redis_server, connection: redis.Redis) -> None:
    taskit.configure(url=f"redis://127.0.0.1:{free_port()}/0")  # a dead default: nothing may reach Redis
    began = time.monotonic()
    job = progress(object(), step="resize")  # any argument: a direct call serializes nothing
    assert time.monotonic() - began < 1
    assert len(job.id.partition(".")[2]) == 22 and job.func_name == "test_api_contract.progress"
    assert job.origin == "emails" and job.timeout == 30 and job.status == JobStatus.CREATED
    assert job.kwargs == {"step": "resize"} and job.meta == {"step": "resize"}
    assert sample_tasks.whoami() != sample_tasks.whoami()  # a fresh job per call
    with pytest.raises(InvalidOperationError, match="cannot be enqueued: build it with Job.create"):
        Queue(connection=connection).enqueue_job(job)
    assert connection.dbsize() == 0


def test_save_meta_before_enqueue_is_kept_and_written_by_the_enqueue(connection: redis.Redis, queue: Queue) -> None:
    job = Job.create(echo, args=(1,))
    job.meta["campaign"] = "spring"
    job.save_meta()
    assert connection.dbsize() == 0
    job.meta["bad"] = object()
    with pytest.raises(SerializationError):
        job.save_meta()
    del job.meta["bad"]
    queue.enqueue_job(job)
    assert Job.fetch(job.id).meta == {"campaign": "spring"}


# -- a fresh status comes with fresh counts -------------------------------------------------------


def test_status_reads_refresh_attempts_and_retries_in_the_same_round_trip(redis_server, connection: redis.Redis) -> None:
    client, trips = counting_client(redis_server)
    job = retry_tasks.fail_times.apply_async(("twice", 2), connection=client)
    assert (job.attempts, job.retries, job.worker_name, job.started_at) == (0, 0, None, None)
    Worker([Queue(connection=connection)], name="counter").work(burst=True)
    trips.reset()
    assert job.is_finished
    assert trips.trips == 1
    assert (job.attempts, job.retries, job.recoveries, job.worker_name) == (3, 2, 0, "counter")
    fetched = Job.fetch(job.id)
    assert (job.started_at, job.ended_at) == (fetched.started_at, fetched.ended_at)
    client.close()


def test_a_corrupt_count_read_with_the_status_is_named(connection: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(echo, 1)
    run_all(queue)
    set_fields(connection, job.id, {keys.FIELDS["attempts"]: "many"})
    with pytest.raises(SerializationError, match=f"job {job.id} is corrupt: field 'attempts' is unreadable"):
        job.get_status()


# -- wrong types, missing jobs, a dead Redis -------------------------------------------------------


def test_wrong_types_give_a_clear_taskit_error_and_write_nothing(connection: redis.Redis, queue: Queue) -> None:
    job = Job.create(echo)
    registry = FailedJobRegistry(connection=connection)
    cases: list[tuple[Any, type[TaskitError], str]] = [
        (lambda: Job.fetch_many(5), ConfigurationError, "fetch_many takes a list of job ids, not int"),
        (lambda: Job.fetch_many(None), ConfigurationError, "fetch_many takes a list of job ids, not NoneType"),
        (lambda: Job.fetch(5), InvalidJobIdError, "job id must be a string, not int"),
        (lambda: Job.create(echo, status="finished"), ConfigurationError, "status must be JobStatus.CREATED"),
        (lambda: Job.create(echo, status="bogus"), ConfigurationError, "status must be JobStatus.CREATED"),
        (lambda: queue.enqueue(echo, at_front="yes"), ConfigurationError, "at_front must be True or False, not str"),
        (lambda: queue.enqueue_job(job, run_at="soon"), ConfigurationError, "run_at must be a Unix time"),
        (lambda: queue.enqueue_job(job, run_at=float("inf")), ConfigurationError, "run_at must be a Unix time"),
        (lambda: queue.enqueue_many(5), ConfigurationError, "enqueue_many takes a list of jobs, not int"),
        (lambda: queue.enqueue_many(job), ConfigurationError, "enqueue_many takes a list of jobs, not Job"),
        (lambda: queue.get_job_ids("a"), ConfigurationError, "offset must be a whole number, not str"),
        (lambda: queue.get_job_ids(0, None), ConfigurationError, "length must be a whole number, not NoneType"),
        (lambda: registry.get_job_ids("0"), ConfigurationError, "start must be a whole number, not str"),
        (lambda: registry.get_jobs(0, 1.5), ConfigurationError, "end must be a whole number, not float"),
        (lambda: registry.requeue(None), InvalidJobIdError, "job id must be a string, not NoneType"),
        (lambda: echo_task.apply_async((1,), at_front=1), ConfigurationError, "at_front must be True or False"),
        (lambda: echo_task.map(5), ConfigurationError, "map takes a list of argument tuples, not int"),
        (lambda: echo_task.map("ab"), ConfigurationError, "map takes a list of argument tuples, not str"),
        (lambda: echo_task.map([5]), ConfigurationError, "args must be a list or tuple, not int"),
        (lambda: taskit.configure(connection="redis://x"), ConfigurationError, "connection must be a redis.Redis"),
        (lambda: taskit.configure(url=b"redis://x"), ConfigurationError, "the Redis URL must be a string, not bytes"),
        (lambda: taskit.configure(url=""), ConfigurationError, "bad Redis URL ''"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as caught:
            call()
        assert message in str(caught.value), (message, str(caught.value))
        assert connection.dbsize() == 0, message
    assert Queue().count == 0  # the refused configure() calls kept the default


def test_meta_replaced_by_something_else_is_refused(connection: redis.Redis, queue: Queue) -> None:
    job = queue.enqueue(echo, 1, meta={"a": 1})
    job.meta = ["not", "a", "dict"]  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match="job.meta must be a dict, not list"):
        job.save_meta()
    assert Job.fetch(job.id).meta == {"a": 1}


def test_missing_jobs_give_the_right_error(connection: redis.Redis, queue: Queue) -> None:
    gone = queue.enqueue(echo, 1)
    Job.fetch(gone.id).delete()
    left = set(connection.keys())  # the queue's name and wake list
    registry = FailedJobRegistry(connection=connection)
    for call in (lambda: Job.fetch(gone.id), gone.refresh, gone.get_status, gone.cancel, gone.save_meta,
                 lambda: gone.wait(timeout=1)):
        with pytest.raises(NoSuchJobError, match=f"no job {gone.id!r}"):
            call()
    with pytest.raises(InvalidOperationError, match=f"job {gone.id} is not in the failed registry"):
        registry.requeue(gone.id)
    with pytest.raises(NoSuchJobError, match="is not in the failed registry"):
        registry.get_expiration_time(gone.id)
    assert Job.fetch_many([gone.id]) == [None] and queue.fetch_job(gone.id) is None
    gone.delete()  # deleting what is gone does nothing
    assert registry.remove(gone.id) is False
    assert set(connection.keys()) == left


def attempt(call: Any) -> str:
    try:
        call()
    except RedisUnavailableError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 (the test reports what it was)
        return f"{type(exc).__name__}: {exc}"
    return "no error"


@pytest.mark.timeout(90)
def test_a_dead_redis_gives_redis_unavailable_everywhere(redis_server, connection: redis.Redis) -> None:
    client = config.connect(redis_server.url)
    queue = Queue(connection=client)
    job = queue.enqueue(echo, 1)
    failed = queue.enqueue(sample_tasks.fail)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    taskit.configure(connection=client)
    registry = queue.failed_job_registry
    redis_server.stop()  # the `connection` fixture restarts it for the next test
    operations = {
        "Job.fetch": lambda: Job.fetch(job.id, connection=client),
        "Job.fetch_many": lambda: Job.fetch_many([job.id], connection=client),
        "refresh": job.refresh,
        "get_status": job.get_status,
        "result": lambda: Job(job.id, client).result,
        "cancel": job.cancel,
        "delete": job.delete,
        "wait": lambda: job.wait(timeout=1),
        "save_meta": job.save_meta,
        "enqueue": lambda: queue.enqueue(echo, 2),
        "enqueue_in": lambda: queue.enqueue_in(5, echo, 2),
        "enqueue_many": lambda: queue.enqueue_many([queue.prepare_data(echo, (3,))]),
        "count": lambda: queue.count,
        "job_ids": lambda: queue.job_ids,
        "empty": queue.empty,
        "fetch_job": lambda: queue.fetch_job(job.id),
        "Queue.all": lambda: Queue.all(client),
        "registry count": lambda: registry.count,
        "registry ids": registry.get_job_ids,
        "registry requeue": lambda: registry.requeue(failed.id),
        "registry requeue_all": registry.requeue_all,
        "registry remove": lambda: registry.remove(failed.id),
        "delay": lambda: echo_task.delay(1),
        "apply_async": lambda: echo_task.apply_async((1,), countdown=5, connection=client),
        "map": lambda: echo_task.map([(1,), (2,)]),
    }
    with ThreadPoolExecutor(len(operations)) as pool:  # concurrently: the retry budget is paid once
        outcomes = dict(zip(operations, pool.map(attempt, operations.values())))
    wrong = {name: message for name, message in outcomes.items()
             if not message.startswith(f"cannot reach Redis at redis://127.0.0.1:{redis_server.port}/0")}
    assert not wrong, wrong
    client.close()


def test_nothing_is_left_behind_by_a_refused_enqueue(connection: redis.Redis, queue: Queue) -> None:
    before = connection.dbsize()
    refused = [
        lambda: queue.enqueue(echo, object()),
        lambda: queue.enqueue(echo, result_ttl=sys.maxsize),
        lambda: queue.enqueue(echo, depends_on="x"),
        lambda: queue.enqueue_many([queue.prepare_data(echo, (1,)), "not a job"]),
        lambda: echo_task.apply_async((1,), retry="3"),
        lambda: queue.enqueue(echo, retry=Retry(max=2), meta=[1]),
    ]
    for call in refused:
        with pytest.raises(TaskitError):
            call()
    assert connection.dbsize() == before == 0
    assert stored(connection, "x") is None
