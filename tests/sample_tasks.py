"""Tasks the tests enqueue; imported by in-process workers and by `taskit worker sample_tasks`."""

from __future__ import annotations

import os
import time

from taskit import Retry, get_current_job, task


@task
def add(x, y):
    return x + y


@task
def fail(message="boom"):
    raise ValueError(message)


@task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@task
def record_meta(key, value):
    job = get_current_job()
    job.meta[key] = value
    job.save_meta()
    return job.id


@task(bind=True)
def whoami(job):
    return job.id


@task
def unserializable_result():
    return object()


@task
def pid():
    return os.getpid()


@task(retry=Retry(max=2))
def flaky(key):
    """Fails until it has been called twice for `key` (counts in the job's meta)."""
    job = get_current_job()
    job.refresh()
    calls = job.meta.get("calls", 0) + 1
    job.meta["calls"] = calls
    job.save_meta()
    if calls < 3:
        raise RuntimeError(f"call {calls} fails")
    return calls


def plain_function(x):
    """Not a task: runs only in a worker that was given this module."""
    return x * 2
