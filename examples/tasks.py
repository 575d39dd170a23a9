"""Example tasks: run them with `taskit worker examples.tasks` (see examples/demo.py)."""

from __future__ import annotations

import time
import urllib.request

from taskit import Retry, get_current_job, task


@task(queue="examples")
def add(x: int, y: int) -> int:
    return x + y


@task(queue="examples")
def count_words(text: str) -> int:
    """Count words; reports progress through job.meta, which others read while it runs."""
    job = get_current_job()
    words = text.split()
    for done in range(0, len(words) + 1, max(1, len(words) // 4)):
        if job is not None:
            job.meta["progress"] = f"{done}/{len(words)}"
            job.save_meta()
    return len(words)


@task(queue="examples", timeout=30)
def count_words_at_url(url: str) -> int:
    """The RQ classic: fetch a page and count its words."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return len(response.read().decode(errors="replace").split())


@task(queue="examples")
def divide(x: float, y: float) -> float:
    """Fails for y == 0: the job lands in the failed registry with its traceback."""
    return x / y


@task(queue="examples", retry=Retry(max=3, interval=[0, 1, 2]))
def flaky(succeed_on: int) -> int:
    """Fails until its attempt number reaches `succeed_on`; the Retry policy re-runs it."""
    job = get_current_job()
    attempt = job.attempts if job else 1
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt}: upstream not ready")
    return attempt


@task(queue="examples", bind=True)
def slow_square(job, x: int, seconds: float = 0.2) -> int:
    """`bind=True` hands the running Job in as the first argument (Celery's bound tasks)."""
    time.sleep(seconds)
    job.meta["squared"] = x
    job.save_meta()
    return x * x
