"""Retries (issue 5): RQ's Retry(max, interval), tenacity strategies, RetryLater.

Real Redis, real workers. Waits between retries are checked on the scheduled registry's
scores with an injected clock, never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import msgpack
import pytest
import redis
import retry_tasks
import tenacity
from conftest import taskit_command
from records import field, set_fields, stored
from retry_tasks import Permanent, Transient

from taskit import Job, JobStatus, Queue, Retry, RetryLater, Worker, task
from taskit.exceptions import ConfigurationError, ScheduleError, TaskitError
from taskit.retry import DEFAULT_MAX, call_state
from taskit.storage import keys


class Clock:
    """A worker clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def calls(connection: redis.Redis, key: str) -> int:
    return int(connection.get(f"test:calls:{key}") or 0)


def burst(queue: Queue | str = "default", clock: Clock | None = None) -> int:
    return Worker([queue], clock=clock or time.time).work(burst=True)


def scheduled_at(connection: redis.Redis, job: Job) -> float | None:
    return connection.zscore(keys.of_queue(job.origin).registry("scheduled"), job.id)


# -- end to end through a worker -------------------------------------------------------


def test_retry_until_success(connection: redis.Redis) -> None:
    job = retry_tasks.fail_times.delay("ok", 2)
    burst()
    job.refresh()
    assert job.status == JobStatus.FINISHED
    assert job.result == 3
    assert (job.attempts, job.retries) == (3, 2)
    assert calls(connection, "ok") == 3
    assert job.exc_info is None


def test_retries_exhausted_lands_in_failed_registry(connection: redis.Redis) -> None:
    queue = Queue()
    job = retry_tasks.fail_times.delay("never", 100)
    burst()
    job.refresh()
    assert job.status == JobStatus.FAILED
    assert job in queue.failed_job_registry
    assert (job.attempts, job.retries) == (4, 3)  # Retry(max=3): 1 attempt + 3 retries
    assert calls(connection, "never") == 4
    assert job.exc_info.strip().splitlines()[-1] == "retry_tasks.Transient: call 4 of never"
    assert queue.count == 0 and len(queue.scheduled_job_registry) == 0


def test_exception_outside_the_retry_filter_is_not_retried(connection: redis.Redis) -> None:
    job = retry_tasks.picky.delay("perm", "Permanent")
    burst()
    job.refresh()
    assert job.status == JobStatus.FAILED
    assert (job.attempts, job.retries) == (1, 0)
    assert calls(connection, "perm") == 1
    assert "Permanent: Permanent from perm" in job.exc_info


def test_intervals_are_honoured_on_the_scheduled_registry(connection: redis.Redis) -> None:
    clock = Clock()
    queue = Queue()
    job = queue.enqueue(retry_tasks.plain_fail, "iv", retry=Retry(max=2, interval=[10, 100]))
    assert burst(clock=clock) == 1
    assert job.get_status() == JobStatus.SCHEDULED
    assert scheduled_at(connection, job) == clock.now + 10
    assert queue.scheduled_job_registry.get_scheduled_time(job).timestamp() == pytest.approx(clock.now + 10)
    assert "plain failure of iv" in Job.fetch(job.id).exc_info  # the last traceback stays visible

    assert burst(clock=clock) == 0  # not due yet: nothing runs, the worker exits
    clock.advance(10)
    assert burst(clock=clock) == 1
    assert scheduled_at(connection, job) == clock.now + 100  # the second interval
    clock.advance(100)
    assert burst(clock=clock) == 1
    job.refresh()
    assert job.status == JobStatus.FAILED
    assert (job.attempts, job.retries, calls(connection, "iv")) == (3, 2, 3)


def test_tenacity_wait_exponential_and_stop_after_attempt(connection: redis.Redis) -> None:
    clock = Clock()
    policy = Retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(multiplier=2, max=60))
    job = retry_tasks.plain_fail.apply_async(["exp"], retry=policy)
    waits = []
    for _ in range(3):
        burst(clock=clock)
        score = scheduled_at(connection, job)
        if score is None:
            break
        waits.append(score - clock.now)
        clock.now = score
    assert waits == [2, 4]  # 2 * 2**0, 2 * 2**1; the 3rd attempt is the last
    job.refresh()
    assert job.status == JobStatus.FAILED and (job.attempts, job.retries) == (3, 2)


def test_tenacity_filter_retries_matching_exceptions_with_waits(connection: redis.Redis) -> None:
    clock = Clock()
    job = retry_tasks.picky.delay("tr", "Transient")  # stop_after_attempt(4), wait_fixed(30)
    for _ in range(3):
        burst(clock=clock)
        assert scheduled_at(connection, job) == clock.now + 30
        clock.advance(30)
    burst(clock=clock)
    job.refresh()
    assert job.status == JobStatus.FAILED
    assert (job.attempts, job.retries, calls(connection, "tr")) == (4, 3, 4)


def test_stop_after_delay_counts_from_job_creation(connection: redis.Redis) -> None:
    clock = Clock()
    policy = Retry(stop=tenacity.stop_after_delay(60), wait=tenacity.wait_fixed(25))
    job = Queue().enqueue(retry_tasks.plain_fail, "delay", retry=policy)
    runs = 0
    while job.get_status() != JobStatus.FAILED and runs < 10:
        runs += burst(clock=clock)
        clock.advance(25)
    job.refresh()
    assert runs == 4  # failed at 0s, 25s and 50s (retried); at 75s, past 60s, it stops
    assert (job.attempts, job.retries) == (4, 3)


def test_per_call_policy_wins(connection: redis.Redis) -> None:
    one_retry = Retry(max=1)
    by_task = retry_tasks.fail_times.delay("t", 100)  # @task(retry=Retry(max=3))
    by_apply = retry_tasks.fail_times.apply_async(["a", 100], retry=one_retry)
    by_queue = Queue().enqueue(retry_tasks.fail_times, "q", 100, retry=Retry(max=2))
    assert Job.fetch(by_task.id).retry == Retry(max=3)
    assert Job.fetch(by_apply.id).retry == one_retry
    assert Job.fetch(by_queue.id).retry == Retry(max=2)
    burst()
    assert [calls(connection, k) for k in ("t", "a", "q")] == [4, 2, 3]
    assert Job.fetch(by_apply.id).attempts == 2


def test_policy_is_stored_as_msgpack_data_not_pickle(connection: redis.Redis) -> None:
    policy = Retry(
        stop=tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(600),
        wait=tenacity.wait_random_exponential(multiplier=1, max=60) + tenacity.wait_fixed(1),
        retry=tenacity.retry_if_exception_type((ConnectionError, Transient)),
    )
    job = retry_tasks.plain_fail.apply_async(["raw"], retry=policy)
    data = msgpack.unpackb(stored(connection, job.id)[keys.Field.RETRY])
    assert data["stop"] == [
        "stop_any",
        [["stop_after_attempt", {"max_attempt_number": 5}], ["stop_after_delay", {"max_delay": 600.0}]],
    ]
    assert data["wait"][0] == "wait_combine"
    assert data["retry"] == ["retry_if_exception_type", ["builtins.ConnectionError", "retry_tasks.Transient"]]
    assert Job.fetch(job.id).retry == policy


def test_unknown_exception_names_match_nothing_and_import_nothing(connection: redis.Redis) -> None:
    """Job data names a module nobody imported: the worker neither imports it nor retries."""
    job = retry_tasks.plain_fail.apply_async(["ghost"], retry=Retry(max=3))
    policy = {"max": 3, "intervals": [0], "retry": ["retry_if_exception_type", ["taskit_ghost_module.Boom"]]}
    set_fields(connection, job.id, {keys.Field.RETRY: msgpack.packb(policy)})
    burst()
    job.refresh()
    assert job.status == JobStatus.FAILED and job.retries == 0
    assert "taskit_ghost_module" not in sys.modules


def test_corrupt_stored_policy_fails_the_job_cleanly(connection: redis.Redis) -> None:
    job = retry_tasks.plain_fail.apply_async(["corrupt"], retry=Retry(max=3))
    set_fields(connection, job.id, {keys.Field.RETRY: msgpack.packb({"stop": ["os.system", {"command": "true"}]})})
    burst()
    status, exc_info = field(connection, job.id, keys.Field.STATUS), field(connection, job.id, keys.Field.EXC_INFO)  # Job.fetch would refuse it too
    assert status == b"failed"
    assert b"field 'retry' is unreadable" in exc_info
    assert calls(connection, "corrupt") == 0  # refused before running


def test_retry_later_reschedules_the_job(connection: redis.Redis) -> None:
    clock = Clock()
    job = retry_tasks.retry_later.delay("later", until=3, countdown=45)
    burst(clock=clock)
    assert job.get_status() == JobStatus.SCHEDULED
    assert scheduled_at(connection, job) == clock.now + 45
    for _ in range(2):
        clock.advance(45)
        burst(clock=clock)
    job.refresh()
    assert job.status == JobStatus.FINISHED and job.result == 3
    assert (job.attempts, job.retries) == (3, 2)


def test_retry_later_ignores_the_filter_but_respects_the_budget(connection: redis.Redis) -> None:
    only_permanent = Retry(max=1, retry=tenacity.retry_if_exception_type(Permanent))
    job = retry_tasks.retry_later.apply_async(["budget", 10], {"countdown": 0}, retry=only_permanent)
    burst()
    job.refresh()
    assert job.status == JobStatus.FAILED
    assert (job.attempts, job.retries) == (2, 1)
    assert "RetryLater: the task asked to be retried in 0s: not ready (2)" in job.exc_info


def test_retry_later_max_retries_and_default_budget(connection: redis.Redis) -> None:
    capped = retry_tasks.retry_later.delay("cap", 10, countdown=0, max_retries=1)
    default = retry_tasks.retry_later.delay("default", 10, countdown=0)
    burst()
    assert calls(connection, "cap") == 2
    assert calls(connection, "default") == DEFAULT_MAX + 1
    assert capped.get_status() == default.get_status() == JobStatus.FAILED


def test_retry_in_a_real_worker_process(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    job = retry_tasks.fail_times.delay("cli", 2)
    subprocess.run(taskit_command("worker", "retry_tasks", "--burst"), env=cli_env, check=True, timeout=60)
    job.refresh()
    assert (job.status, job.result, job.attempts, job.retries) == (JobStatus.FINISHED, 3, 3, 2)


# -- refused at build time, nothing written ------------------------------------------------


class CustomWait(tenacity.wait.wait_base):
    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wait": lambda state: 1.0}, "<lambda> is not a wait strategy taskit can store"),
        ({"wait": CustomWait()}, "CustomWait is not a wait strategy"),
        ({"wait": tenacity.wait_fixed(1) + CustomWait()}, "CustomWait is not a wait strategy"),
        ({"stop": lambda state: True}, "is not a stop strategy"),
        ({"retry": tenacity.retry_if_exception(lambda e: True)}, "retry_if_exception is not a retry strategy"),
        ({"retry": tenacity.retry_if_result(bool)}, "retry_if_result is not a retry strategy"),
        ({"stop": tenacity.wait_fixed(1)}, "wait_fixed is a wait strategy, not a stop strategy"),
        ({"max": 0}, "positive int"),
        ({"max": "3"}, "positive int"),
        ({"interval": -1}, "seconds >= 0"),
        ({"interval": []}, "seconds >= 0"),
        ({"interval": 1, "wait": tenacity.wait_fixed(1)}, "not both"),
    ],
)
def test_unsupported_policies_are_refused(connection: redis.Redis, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Retry(**kwargs)
    assert connection.dbsize() == 0


def test_local_exception_class_is_refused(connection: redis.Redis) -> None:
    class Local(Exception):
        pass

    with pytest.raises(ConfigurationError, match="cannot be found by name"):
        Retry(retry=tenacity.retry_if_exception_type(Local))


def test_bad_retry_argument_writes_nothing(connection: redis.Redis) -> None:
    with pytest.raises(ConfigurationError, match="taskit.Retry"):
        retry_tasks.plain_fail.apply_async(["x"], retry=tenacity.stop_after_attempt(3))
    with pytest.raises(ConfigurationError, match="taskit.Retry"):
        Queue().enqueue(retry_tasks.plain_fail, "x", retry=3)
    with pytest.raises(ConfigurationError, match="taskit.Retry"):
        task(name="tests.bad_retry", retry=tenacity.wait_fixed(1))(len)
    assert connection.dbsize() == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"countdown": -1}, {"countdown": "5"}, {"countdown": float("nan")}, {"eta": dt.datetime(2030, 1, 1)},
     {"countdown": 1, "eta": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)}],
)
def test_retry_later_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ScheduleError):
        RetryLater(**kwargs)


# -- the policy itself (no worker) ---------------------------------------------------------

ALL_STRATEGIES = [
    Retry(max=5, interval=[1, 2, 3]),
    Retry(stop=tenacity.stop_after_attempt(3)),
    Retry(max=2, stop=tenacity.stop_after_delay(dt.timedelta(minutes=5))),
    Retry(stop=tenacity.stop_never, wait=tenacity.wait_none()),
    Retry(stop=tenacity.stop_after_attempt(3) & tenacity.stop_after_delay(10)),
    Retry(wait=tenacity.wait_random(1, 5)),
    Retry(wait=tenacity.wait_incrementing(start=1, increment=2, max=10)),
    Retry(wait=tenacity.wait_exponential(multiplier=0.5, max=30, exp_base=3, min=1)),
    Retry(wait=tenacity.wait_random_exponential(multiplier=1, max=60)),
    Retry(wait=tenacity.wait_chain(tenacity.wait_fixed(1), tenacity.wait_fixed(10))),
    Retry(wait=tenacity.wait_fixed(1) + tenacity.wait_random(0, 1)),
    Retry(retry=tenacity.retry_if_exception_type(KeyError)),
    Retry(retry=tenacity.retry_if_not_exception_type((KeyError, Permanent))),
    Retry(retry=tenacity.retry_if_exception_type(KeyError) | tenacity.retry_if_exception_type(OSError)),
    Retry(retry=tenacity.retry_if_exception_type(OSError) & tenacity.retry_if_not_exception_type(TimeoutError)),
    Retry(retry=tenacity.retry_if_exception_cause_type(KeyError)),
    Retry(retry=tenacity.retry_always),
]


@pytest.mark.parametrize("policy", ALL_STRATEGIES, ids=repr)
def test_every_supported_strategy_round_trips(policy: Retry) -> None:
    data = msgpack.unpackb(msgpack.packb(policy.to_data()))
    again = Retry.from_data(data)
    assert again == policy
    for retries in range(4):
        for exc in (KeyError("k"), OSError("o"), Transient("t")):
            a, b = policy.next_delay(retries, exc, 1.0), again.next_delay(retries, exc, 1.0)
            assert (a is None) == (b is None)
            if "random" not in repr(policy) and a is not None:
                assert a == b


def test_rq_style_semantics() -> None:
    policy = Retry(max=3, interval=[1, 5])
    assert [policy.next_delay(n, ValueError()) for n in range(4)] == [1, 5, 5, None]
    assert Retry().max == DEFAULT_MAX and Retry().next_delay(0, ValueError()) == 0
    assert Retry(max=2).next_delay(2, ValueError()) is None
    # stop_after_attempt(n) is the same budget as max=n-1
    same = Retry(stop=tenacity.stop_after_attempt(4))
    assert [same.next_delay(n, ValueError()) is None for n in range(5)] == [False, False, False, True, True]
    # only Exception subclasses are retried by default
    assert Retry(max=3).next_delay(0, KeyboardInterrupt()) is None
    # combinations: whichever stop ends first
    both = Retry(max=10, stop=tenacity.stop_after_delay(30))
    assert both.next_delay(1, ValueError(), elapsed=29) == 0
    assert both.next_delay(1, ValueError(), elapsed=31) is None


def test_call_state_is_what_tenacity_sees() -> None:
    state = call_state(3, Transient("x"), 12.5)
    assert state.attempt_number == 3
    assert state.outcome is not None and isinstance(state.outcome.exception(), Transient)
    assert state.seconds_since_start == 12.5


def test_policy_errors_derive_from_taskit_error() -> None:
    with pytest.raises(TaskitError):
        Retry(wait=lambda s: 0)
    assert issubclass(RetryLater, TaskitError)
    with pytest.raises(ConfigurationError):
        Retry.from_data({"stop": ["stop_after_attempt", {"evil": 1}]})
    with pytest.raises(ConfigurationError):
        Retry.from_data({"wait": ["stop_after_attempt", {"max_attempt_number": 1}]})
