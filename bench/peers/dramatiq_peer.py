"""Dramatiq with its Redis broker: the same no-op actor, default middleware and threads (8).

Workers: `dramatiq -p N` (N processes, each with Dramatiq's default 8 worker threads).
The I/O workload runs Dramatiq's defaults (a process per core, 8 threads each) and
`--processes N --threads M`.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from . import io_work
from .marks import mark
from .tools import script

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)
QUEUE = "default"


@dramatiq.actor(queue_name=QUEUE)
def noop() -> None:
    mark()


@dramatiq.actor(queue_name=QUEUE)
def wait_io() -> None:
    io_work.blocking_wait()


class Peer:
    label = "dramatiq"
    dist = "dramatiq"
    bulk = False  # group(...).run() sends one message at a time

    def connect(self, url: str) -> None:
        pass  # the broker is built from BENCH_REDIS_URL at import

    def enqueue_one(self) -> None:
        noop.send()

    def worker_commands(self, url: str, processes: int) -> list[list[str]]:
        return [[script("dramatiq"), __name__, "-p", str(processes), "-Q", QUEUE]]

    def enqueue_io(self, n: int, pool: str) -> None:
        for _ in range(n):
            wait_io.send()

    def io_workers(self, url: str, pool: str, processes: int, concurrency: int) -> tuple[list[list[str]], str]:
        flags = ["--processes", str(processes), "--threads", str(concurrency)] if pool == "threads" else []
        return [[script("dramatiq"), __name__, "-Q", QUEUE, *flags]], " ".join(flags) or "defaults"

    def idle(self, client: Any) -> bool:
        # a message stays in the .msgs hash until it is acked, after it ran
        return client.hlen(f"{broker.namespace}:{QUEUE}.msgs") == 0
