"""Celery with its Redis broker: the same no-op task; no result backend (Celery's default).

Workers: `-P solo` for one process; the prefork pool with `-c N` for N processes (its
parent process consumes from Redis and hands jobs to the N children). Prefetch and acks
are Celery's defaults (prefetch multiplier 4, ack before running). The I/O workload runs
Celery's defaults (prefork, a child per core) and its thread pool (`-P threads -c N`).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from . import io_work
from .marks import mark
from .tools import script

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
QUEUE = "celery"  # Celery's default queue: a Redis list of that name


@app.task
def noop() -> None:
    mark()


@app.task
def wait_io() -> None:
    io_work.blocking_wait()


class Peer:
    label = "celery"
    dist = "celery"
    bulk = False  # groups and chunks publish one message per job

    def connect(self, url: str) -> None:
        app.conf.broker_url = url

    def enqueue_one(self) -> None:
        noop.delay()

    def worker_commands(self, url: str, processes: int) -> list[list[str]]:
        pool = ["-P", "solo"] if processes == 1 else ["-P", "prefork", "-c", str(processes)]
        return [[script("celery"), "-A", __name__, "worker", "-l", "WARNING", "-Q", QUEUE, *pool]]

    def enqueue_io(self, n: int, pool: str) -> None:
        for _ in range(n):
            wait_io.delay()

    def io_workers(self, url: str, pool: str, processes: int, concurrency: int) -> tuple[list[list[str]], str]:
        flags = ["-P", "threads", "-c", str(concurrency)] if pool == "threads" else []
        command = [script("celery"), "-A", __name__, "worker", "-l", "WARNING", "-Q", QUEUE, *flags]
        return [command], " ".join(flags) or "defaults (prefork, a process per core)"

    def idle(self, client: Any) -> bool:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(QUEUE)
            pipe.hlen("unacked")
            return not any(pipe.execute())
