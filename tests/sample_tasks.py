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


# -- added for the worker tests (issue 3) -------------------------------------------


@task
def job_state():
    """What Redis says about the running job, read from inside it."""
    from taskit import Job

    job = get_current_job()
    fresh = Job.fetch(job.id, connection=job.connection)
    return {
        "status": fresh.get_status().value,
        "worker": fresh.worker_name,
        "started_at": fresh.started_at.timestamp() if fresh.started_at else None,
        "ended_at": fresh.ended_at,
    }


@task
def meta_then_wait(key, value, release_key, timeout=10):
    """Save meta, then block until the test pushes to `release_key` (or `timeout` passes)."""
    job = get_current_job()
    job.meta[key] = value
    job.save_meta()
    released = job.connection.blpop([release_key], timeout)
    return released is not None


@task
def is_imported(module_name):
    import sys

    return module_name in sys.modules


@task
def log_order(tag, list_key="test:order"):
    """Append `tag` to a Redis list, to see in which order jobs ran."""
    get_current_job().connection.rpush(list_key, tag)
    return tag


def triple(x):
    """Not a task; enqueued by name only, so it runs only where sample_tasks was given."""
    return x * 3


@task
def enqueue_followup(x):
    """Enqueue another job from inside a job, through taskit's default connection."""
    return add.delay(x, x).id
