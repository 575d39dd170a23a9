"""Retries, delays and periodic tasks, end to end.

    python examples/periodic_demo.py

Enqueues a delayed job, a job for a given time, a flaky job retried with exponential
backoff, and a job that asks to be retried itself (tasks in examples/periodic.py); then
runs two real workers for a few seconds while the periodic task fires every two seconds,
exactly once per tick. Redis: as in examples/demo.py (TASKIT_REDIS_URL, or a private
redis-server). Jobs go to the queue "examples-periodic".
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import taskit
from examples import periodic as tasks
from examples.demo import demo_redis
from taskit import Job, Queue


def main() -> None:
    with demo_redis() as where:
        taskit.configure(url=where.url)
        queue = Queue(tasks.QUEUE)
        queue.empty()
        connection = taskit.config.get_connection()
        connection.delete("examples:ticks")
        now = dt.datetime.now(dt.timezone.utc)
        jobs = [
            tasks.remind.apply_async(["in three seconds"], countdown=3),
            queue.enqueue_at(now + dt.timedelta(seconds=4), tasks.remind, "at a given time"),
            queue.enqueue_in(dt.timedelta(seconds=1), tasks.remind, "after a timedelta"),
            tasks.fetch.delay(succeed_on=3),
            tasks.wait_for_report.delay(time.time() + 2.5),
        ]
        print(f"enqueued {len(jobs)} jobs, {len(queue.scheduled_job_registry)} of them for later; "
              "running two workers for 7 seconds", flush=True)
        env = dict(os.environ, TASKIT_REDIS_URL=where.url, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "taskit", "worker", "examples.periodic", "-q", tasks.QUEUE,
                   "--maintenance-interval", "0.5", "--log-level", "warning"]
        workers = [subprocess.Popen(command, env=env, cwd=ROOT) for _ in range(2)]
        try:
            time.sleep(7)
        finally:
            for proc in workers:
                proc.send_signal(signal.SIGTERM)
            for proc in workers:
                proc.wait()
        print("\nresults")
        for job in Job.fetch_many([j.id for j in jobs]):
            assert job is not None
            print(f"  {job.description:45} {job.get_status():9} attempts={job.attempts} result={job.result!r}")
        ticks = [t.decode() for t in connection.lrange("examples:ticks", 0, -1)]
        connection.delete("examples:ticks")  # the demo's own list; the jobs expire on their own
        print(f"  periodic ticks, each run once by one of the two workers: {ticks}")


if __name__ == "__main__":
    main()
