"""Hundreds of jobs at once in one worker process: async tasks, a hook, a cancel.

    python examples/async_demo.py

Like examples/demo.py: uses the Redis at TASKIT_REDIS_URL if one answers, else starts a
private redis-server. Jobs go to the queue "examples".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import taskit
from examples import async_tasks
from examples.demo import demo_redis
from taskit import Job, JobCanceledError, Queue


def main() -> None:
    with demo_redis() as where:
        taskit.configure(url=where.url)
        queue = Queue("examples")
        queue.empty()
        pages = async_tasks.fetch_title.map([(f"https://example.com/{i}",) for i in range(300)])
        report = async_tasks.slow_report.delay(30)
        sums = [async_tasks.checksum.delay(word) for word in ("taskit", "async")]
        print(f"demo: enqueued {len(pages)} fetches of 0.5 s each, a 30 s report and 2 sync jobs; "
              "starting `taskit worker examples.async_tasks -q examples --async-tasks 300`\n", flush=True)
        env = dict(os.environ, TASKIT_REDIS_URL=where.url, PYTHONPATH=str(ROOT))
        started = time.monotonic()
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskit", "worker", "examples.async_tasks", "-q", "examples",
             "--async-tasks", "300", "--log-level", "error"],
            env=env, cwd=ROOT,
        )
        try:
            for job in pages:
                job.wait(timeout=60)
            took = time.monotonic() - started
            print(f"demo: {len(pages)} fetches done {took:.1f}s after the worker started "
                  f"(one after the other: {len(pages) * 0.5:.0f}s)")
            print(f"demo: page 7's title is {pages[7].wait()!r}; its meta: {Job.fetch(pages[7].id).meta}")
            print(f"demo: checksums from the sync task: {[job.wait(timeout=30) for job in sums]}")
            report.cancel("not needed after all")
            try:
                report.wait(timeout=10)
            except JobCanceledError as exc:
                print(f"demo: {exc}")
            print(f"demo: in the canceled registry of 'examples': {report.id in queue.canceled_job_registry}\n", flush=True)
        finally:
            worker.terminate()  # SIGTERM: it finishes what runs (nothing now), runs its stop hook, exits
            worker.wait(timeout=60)


if __name__ == "__main__":
    main()
