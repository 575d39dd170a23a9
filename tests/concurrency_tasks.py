"""Tasks for the concurrency tests (tests/test_concurrency.py): sync and async, in one module."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from fault_tasks import FIRST_ATTEMPTS

from taskit import Retry, get_current_job, task


def _span(started: float) -> dict:
    job = get_current_job()
    assert job is not None
    return {"start": started, "end": time.time(), "pid": os.getpid(), "thread": threading.get_ident(), "id": job.id}


@task
def span(seconds: float) -> dict:
    """Sleeps (I/O-bound); its result says when it ran, where, and which job it thought it was."""
    started = time.time()
    time.sleep(seconds)
    return _span(started)


@task
async def async_span(seconds: float) -> dict:
    started = time.time()
    await asyncio.sleep(seconds)
    return _span(started)


def _mark_running() -> None:
    """Say in the job's meta that it runs (a job the worker claimed may still wait in its backlog)."""
    job = get_current_job()
    assert job is not None
    job.meta["running"] = True
    job.save_meta()


@task
def marked_span(seconds: float) -> dict:
    """`span`, saying in its meta that it runs first."""
    _mark_running()
    return span.fn(seconds)


@task
async def async_marked_span(seconds: float) -> dict:
    _mark_running()
    return await async_span.fn(seconds)


@task
def who_am_i(seconds: float) -> str:
    """The current job's id, read after the others had the time to start (and save meta)."""
    job = get_current_job()
    assert job is not None
    job.meta["mine"] = job.id
    job.save_meta()
    time.sleep(seconds)
    again = get_current_job()
    assert again is not None
    return again.id


@task
async def async_who_am_i(seconds: float) -> str:
    job = get_current_job()
    assert job is not None
    job.meta["mine"] = job.id
    job.save_meta()
    await asyncio.sleep(seconds)
    again = get_current_job()
    assert again is not None
    return again.id


@task(bind=True)
async def async_bound(job, x: int) -> list:
    await asyncio.sleep(0)
    return [job.id, x]


@task(timeout=1, retry=Retry(max=1))
async def async_too_slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@task(timeout=1)
def too_slow(seconds: float) -> str:
    """Waits in small steps: an exception set on its thread lands between two of them."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
    return "done"


@task(timeout=1)
def ignores_timeout(seconds: float) -> str:
    """Swallows every exception raised in it, as careless code does: only giving up on it, or
    killing its process, ends it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:  # noqa: BLE001, S110 (on purpose)
            pass
    return "survived"


@task(timeout=1)
async def blocks_the_loop(seconds: float) -> str:
    """Sync code in a coroutine: the event loop is stuck until it returns."""
    time.sleep(seconds)  # noqa: ASYNC251 (on purpose)
    return "unblocked"


@task(retry=Retry(max=3))
def long_sync(seconds: float) -> str:
    """Waits in small steps (as I/O with timeouts does): a cancel lands between two."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
    return "not canceled"


@task(retry=Retry(max=3))
def stuck_in_c(seconds: float) -> str:
    """One long blocking call: an exception set on its thread cannot land until it returns."""
    time.sleep(seconds)
    return "not canceled"


@task(retry=Retry(max=3))
async def long_async(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "not canceled"


@task
async def async_first_attempt_sleeps(seconds: float) -> dict:
    """fault_tasks.slow_first_attempt, async."""
    job = get_current_job()
    assert job is not None
    if job.attempts == 1:
        job.connection.sadd(FIRST_ATTEMPTS, job.id)
        await asyncio.sleep(seconds)
    return {"pid": os.getpid(), "attempt": job.attempts}


@task
def grow(megabytes: int) -> int:
    """Keeps `megabytes` of memory alive in this process (the --max-memory test)."""
    _hoard.append(bytearray(megabytes * 1_048_576))
    return os.getpid()


_hoard: list[bytearray] = []


@task
def pid() -> int:
    return os.getpid()


#: the list where `gated` jobs note that they started
GATED_STARTED = "taskit-test:gated-started"


@task
def gated(gate: str) -> str:
    """Notes that it started, then waits until the file `gate` exists (the test opens it)."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush(GATED_STARTED, job.id)
    while not os.path.exists(gate):
        time.sleep(0.01)
    return job.id
