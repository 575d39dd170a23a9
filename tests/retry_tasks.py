"""Tasks for the retry, delay and periodic tests (issue 5).

Imported by in-process workers and by `taskit worker retry_tasks`. Calls are counted in
Redis (`test:calls:<key>`), so a count is right whichever process ran the task.
"""

from __future__ import annotations

import tenacity

from taskit import Retry, RetryLater, get_current_job, task

#: the queue of the periodic task below; only workers on it enqueue its ticks
PERIODIC_QUEUE = "periodic-test"


class Transient(Exception):
    """A failure worth retrying."""


class Permanent(Exception):
    """A failure no retry will fix."""


ERRORS = {"Transient": Transient, "Permanent": Permanent, "ValueError": ValueError}


def count_call(key: str) -> int:
    job = get_current_job()
    assert job is not None
    return int(job.connection.incr(f"test:calls:{key}"))


@task(retry=Retry(max=3))
def fail_times(key: str, failures: int, error: str = "Transient") -> int:
    """Fails the first `failures` calls for `key`, then returns how many calls there were."""
    calls = count_call(key)
    if calls <= failures:
        raise ERRORS[error](f"call {calls} of {key}")
    return calls


@task(
    retry=Retry(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_fixed(30),
        retry=tenacity.retry_if_exception_type(Transient),
    )
)
def picky(key: str, error: str) -> None:
    """Always fails with `error`; its policy retries only Transient (every 30s, 4 attempts)."""
    count_call(key)
    raise ERRORS[error](f"{error} from {key}")


@task
def plain_fail(key: str) -> None:
    """No policy of its own: retries only if the caller gives one."""
    count_call(key)
    raise Transient(f"plain failure of {key}")


@task
def retry_later(key: str, until: int, countdown: float | None = 30, max_retries: int | None = None) -> int:
    """Asks to be retried (RetryLater) until it has been called `until` times."""
    calls = count_call(key)
    if calls < until:
        raise RetryLater(f"not ready ({calls})", countdown=countdown, max_retries=max_retries)
    return calls


@task
def log_run(tag: str, list_key: str = "test:runs") -> str:
    """Record that this job ran (for the tests that count runs across workers)."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush(list_key, tag)
    return tag


@task(queue=PERIODIC_QUEUE, schedule=1)
def every_second() -> str:
    """A periodic task: each tick records its job id, so a tick that ran twice shows."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush("test:ticks", job.id)
    return job.id
