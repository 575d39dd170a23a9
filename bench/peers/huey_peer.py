"""Huey with Redis: the same no-op task (returns None, so no result is stored).

Workers: `huey_consumer -w 1 -k thread` for one process; `-w N -k process` for N.
RedisHuey blocks on BRPOP (read timeout 1 s) rather than sleeping between polls.
The I/O workload runs `-k thread -w N` (one process, N worker threads).
"""

from __future__ import annotations

import os
from typing import Any

from huey import RedisHuey

from . import io_work
from .marks import mark
from .tools import script

huey = RedisHuey("bench", url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


@huey.task()
def noop() -> None:
    mark()


@huey.task()
def wait_io() -> None:
    io_work.blocking_wait()


class Peer:
    label = "huey"
    dist = "huey"
    bulk = False  # task.map() enqueues one at a time

    def connect(self, url: str) -> None:
        pass  # built from BENCH_REDIS_URL at import

    def enqueue_one(self) -> None:
        noop()

    def worker_commands(self, url: str, processes: int) -> list[list[str]]:
        kind = ["-w", "1", "-k", "thread"] if processes == 1 else ["-w", str(processes), "-k", "process"]
        return [[script("huey_consumer"), f"{__name__}.huey", "-q", *kind]]

    def enqueue_io(self, n: int, pool: str) -> None:
        for _ in range(n):
            wait_io()

    def io_workers(self, url: str, pool: str, processes: int, concurrency: int) -> tuple[list[list[str]], str]:
        flags = ["-k", "thread", "-w", str(concurrency)]
        return [[script("huey_consumer"), f"{__name__}.huey", "-q", *flags]], " ".join(flags)

    def idle(self, client: Any) -> bool:
        return client.llen(huey.storage.queue_key) == 0
