"""taskit's main job, end to end: enqueue example tasks, run a real worker, show the results.

    python examples/demo.py

Uses the Redis at TASKIT_REDIS_URL (default redis://localhost:6379/0) if one answers;
otherwise starts a private redis-server for the demo and stops it afterwards. Jobs go to
the queue "examples", so a shared Redis keeps its other queues untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import taskit
from examples import tasks
from taskit import Job, Queue


def find_redis() -> tuple[str, subprocess.Popen[bytes] | None]:
    url = os.environ.get("TASKIT_REDIS_URL", "redis://localhost:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url, None
    except redis.RedisError:
        pass
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(f"demo: no Redis answers at {url} and redis-server is not installed; "
                 "install it (apt-get install redis-server) or set TASKIT_REDIS_URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="taskit-demo-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    print(f"demo: no Redis at the configured URL; started a private redis-server at {url}")
    return url, server


@contextlib.contextmanager
def demo_redis() -> Iterator[str]:
    """The URL of a Redis for a demo; a private server started for it is stopped after."""
    url, server = find_redis()
    try:
        yield url
    finally:
        if server is not None:
            server.terminate()
            server.wait()


def main() -> None:
    with demo_redis() as url:
        taskit.configure(url=url)
        queue = Queue("examples")
        queue.empty()
        jobs = [
            tasks.add.delay(2, 3),
            tasks.count_words.delay("the quick brown fox jumps over the lazy dog"),
            tasks.slow_square.delay(7),
            tasks.divide.delay(1, 0),
            tasks.flaky.delay(succeed_on=2),
        ]
        sys.stdout.flush()
        print(f"demo: enqueued {len(jobs)} jobs on queue 'examples'; starting `taskit worker examples.tasks --burst`\n")
        env = dict(os.environ, TASKIT_REDIS_URL=url, PYTHONPATH=str(ROOT))
        subprocess.run(
            [sys.executable, "-m", "taskit", "worker", "examples.tasks", "-q", "examples", "--burst"],
            env=env, cwd=ROOT, check=True,
        )
        print("\ndemo: results", flush=True)
        failed = []
        for job in Job.fetch_many([j.id for j in jobs]):
            assert job is not None
            lines = (job.exc_info or "").strip().splitlines()
            outcome = repr(job.result) if job.is_finished else (lines[-1] if lines else "")
            print(f"  {job.description:55} {job.get_status():9} attempts={job.attempts}  {outcome}")
            if job.id in queue.failed_job_registry:
                failed.append(job.id)
        print(f"\n  in the failed registry of 'examples': {', '.join(failed)}")
        print("  requeue them with: taskit requeue --queue examples --all")


if __name__ == "__main__":
    main()
