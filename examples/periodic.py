"""Example tasks for retries, delays and periodic tasks (run them: examples/periodic_demo.py).

Workers that import this module and listen on its queue enqueue the periodic task's
ticks themselves, each tick once however many of them run:

    taskit worker examples.periodic -q examples-periodic
"""

from __future__ import annotations

import time

import tenacity

from taskit import Retry, RetryLater, get_current_job, task

QUEUE = "examples-periodic"


@task(queue=QUEUE, schedule=2)  # every 2 seconds; a cron string works too: schedule="*/5 * * * *"
def tick() -> str:
    """Runs once per tick; the job id names the tick (periodic:<task>:<unix time>)."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush("examples:ticks", job.id)
    return job.id


@task(
    queue=QUEUE,
    retry=Retry(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),  # 0.5s, 1s, 2s
        retry=tenacity.retry_if_exception_type(ConnectionError),  # a ValueError would fail at once
    ),
)
def fetch(succeed_on: int) -> int:
    """Fails with ConnectionError until attempt `succeed_on`; the policy schedules the retries."""
    job = get_current_job()
    attempt = job.attempts if job else 1
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt}: upstream not ready")
    return attempt


@task(queue=QUEUE)
def wait_for_report(ready_after: float) -> str:
    """Polls: asks to be retried in 1s (RetryLater) until `ready_after` (Unix time) has passed."""
    if time.time() < ready_after:
        raise RetryLater("report not ready", countdown=1, max_retries=10)
    return "report ready"


@task(queue=QUEUE)
def remind(text: str) -> str:
    return text
