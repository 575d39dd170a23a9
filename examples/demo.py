"""taskit's main job, end to end: enqueue example tasks, run a real worker, show the results.

    python examples/demo.py

Redis: the one at TASKIT_REDIS_URL (default redis://localhost:6379/0) if it answers, and the
demo says which (a password shows as ***). If none answers, it starts a private redis-server
and stops it at the end, with every job the demo made. Jobs go to the queue "examples"
(emptied first), so a shared Redis keeps its other queues untouched; there, the demo's jobs
expire on their own: the failed one after FAILURE_TTL seconds, finished ones after 500.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from taskit.config import connect, redact_url
from taskit.exceptions import ConfigurationError, RedisUnavailableError

FAILURE_TTL = 600  # the failing job's record, kept long enough to look at and requeue, not a year


@dataclasses.dataclass(frozen=True)
class DemoRedis:
    url: str
    private: bool  # a redis-server started for the demo, gone (with its jobs) when the demo ends


def find_redis(directory: str) -> tuple[DemoRedis, subprocess.Popen[bytes] | None]:
    """The Redis of TASKIT_REDIS_URL (or localhost) if it answers, else a private redis-server
    started in `directory`."""
    configured = os.environ.get("TASKIT_REDIS_URL")
    url = configured or "redis://localhost:6379/0"
    source = "TASKIT_REDIS_URL" if configured else "the default; set TASKIT_REDIS_URL for another"
    try:
        with contextlib.closing(connect(url)) as client:  # a URL that cannot work is refused here
            client.ping()
        print(f"demo: using the Redis at {redact_url(url)} ({source})")
        return DemoRedis(url, private=False), None
    except ConfigurationError as exc:  # its message names the URL without its secrets
        sys.exit(f"demo: {exc} ({source})")
    except (RedisUnavailableError, redis.RedisError) as exc:
        reason = type(exc).__name__
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(f"demo: no Redis answers at {redact_url(url)} ({source}: {reason}) and redis-server is not "
                 "installed; install it (apt-get install redis-server) or set TASKIT_REDIS_URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )
    private = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(private).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        server.kill()
        sys.exit(f"demo: the private redis-server on port {port} did not start")
    print(f"demo: no Redis answers at {redact_url(url)} ({source}: {reason}); "
          f"using a private redis-server at {private}, stopped when the demo ends")
    return DemoRedis(private, private=True), server


@contextlib.contextmanager
def demo_redis() -> Iterator[DemoRedis]:
    """The Redis for a demo; a private server started for it is stopped after, and its
    directory removed."""
    with tempfile.TemporaryDirectory(prefix="taskit-demo-") as directory:
        found, server = find_redis(directory)
        try:
            yield found
        finally:
            if server is not None:
                server.terminate()
                server.wait()


def main() -> None:
    with demo_redis() as where:
        taskit.configure(url=where.url)
        queue = Queue("examples")
        queue.empty()
        jobs = [
            tasks.add.delay(2, 3),
            tasks.count_words.delay("the quick brown fox jumps over the lazy dog"),
            tasks.slow_square.delay(7),
            tasks.divide.apply_async((1, 0), failure_ttl=FAILURE_TTL),
            tasks.flaky.delay(succeed_on=2),
        ]
        command = ["taskit", "worker", "examples.tasks", "-q", "examples", "--burst"]
        print(f"demo: enqueued {len(jobs)} jobs on queue 'examples'; starting `{' '.join(command)}`\n", flush=True)
        env = dict(os.environ, TASKIT_REDIS_URL=where.url, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-m", *command], env=env, cwd=ROOT, check=True)
        print("\ndemo: results", flush=True)
        failed = []
        for job in Job.fetch_many([j.id for j in jobs]):
            assert job is not None
            lines = (job.exc_info or "").strip().splitlines()
            outcome = repr(job.result) if job.is_finished else (lines[-1] if lines else "")
            print(f"  {job.description:55} {job.get_status():9} attempts={job.attempts}  {outcome}")
            if job.id in queue.failed_job_registry:
                failed.append(job.id)
        if where.private:
            print(f"\n  in the failed registry of 'examples': {', '.join(failed)}")
            print("  (the private redis-server stops now, and every job of the demo with it)")
        else:
            print(f"\n  in the failed registry of 'examples' for {FAILURE_TTL // 60} minutes: {', '.join(failed)}")
            print("  requeue them with: taskit requeue --queue examples --all")


if __name__ == "__main__":
    main()
