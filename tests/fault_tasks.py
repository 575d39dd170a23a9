"""Tasks for the fault tests (tests/test_faults.py)."""

from __future__ import annotations

import os
import signal
import time

import records

from taskit import Retry, get_current_job, task
from taskit.storage import keys

#: ids of the jobs whose first attempt began (slow_first_attempt and its async twin)
FIRST_ATTEMPTS = "test:first-attempts"


@task
def work(i: int, seconds: float = 0.0) -> int:
    if seconds:
        time.sleep(seconds)
    return i


@task
def slow_first_attempt(seconds: float) -> dict:
    """Sleeps on its first attempt only, so a killed first attempt is re-run quickly. Each
    first attempt adds its id to the set FIRST_ATTEMPTS once it runs."""
    job = get_current_job()
    assert job is not None
    if job.attempts == 1:
        job.connection.sadd(FIRST_ATTEMPTS, job.id)
        time.sleep(seconds)
    return {"pid": os.getpid(), "attempt": job.attempts}


@task
def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@task
def kill_my_worker() -> None:
    """A job that takes its worker down with it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


@task
def spin(seconds: float) -> int:
    """CPU-bound: never sleeps, never does I/O."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
    return n


@task(timeout=1)
def stuck(seconds: float) -> None:
    """Past its 1 s timeout with SIGALRM blocked, as if stuck in C code: only a kill stops it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    time.sleep(seconds)


@task(timeout=1, retry=Retry(max=1))
def stuck_once() -> str:
    """Stuck past its timeout (SIGALRM blocked) on the first attempt only; its policy retries it."""
    job = get_current_job()
    assert job is not None
    if job.attempts == 1:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        time.sleep(60)
    return "ok"


@task(retry=Retry(max=3))
def sleep_retried(seconds: float) -> int:
    """One long sleep, with a retry policy (a canceled job must not be retried)."""
    time.sleep(seconds)
    return os.getpid()


def runs(connection, name: str) -> int:
    """How many times `counted(name)` has run."""
    return int(connection.get(f"taskit-test:runs:{name}") or 0)


@task
def counted(name: str, seconds: float = 0.0) -> int:
    """Counts its runs in Redis, so that a test sees a job that ran twice (`runs`)."""
    job = get_current_job()
    assert job is not None
    n = int(job.connection.incr(f"taskit-test:runs:{name}"))
    time.sleep(seconds)
    return n


@task
def overwrite_my_record() -> None:
    """Its own record is overwritten while it runs (by hand, or by a bug elsewhere)."""
    job = get_current_job()
    assert job is not None
    records.corrupt_record(job.connection, job.id, b"overwritten")


@task
def garble_my_queue_and_die() -> None:
    """Its queue field becomes bytes that are not UTF-8, then it takes its worker down."""
    job = get_current_job()
    assert job is not None
    records.set_fields(job.connection, job.id, {keys.Field.QUEUE: b"\xff\xfe"})
    os.kill(os.getpid(), signal.SIGKILL)
