"""SAQ (Simple Async Queue) with Redis: the I/O workload only, as an `async def` task.

SAQ runs coroutines only, so it has no no-op row in the main table (its worker has no
mode that runs one job at a time as the others' do). The I/O workload runs
`saq MODULE.settings --workers N` with the concurrency in `settings` (SAQ's default is
10 jobs at once per process). SAQ stores each job's record and result, and moves its id
between a queued and an active list (BLMOVE).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from redis import asyncio as aioredis
from saq.queue.redis import RedisQueue

from . import io_work
from .tools import script

QUEUE = "bench"
CONCURRENCY = int(os.environ.get("BENCH_SAQ_CONCURRENCY", "10"))  # jobs at once per worker process


async def wait_io(ctx: dict[str, Any]) -> None:
    await io_work.async_wait()


def _queue(url: str) -> RedisQueue:
    # each job slot waits for work in a blocking BLMOVE on a connection of its own, and
    # redis-py's asyncio pool stops at 100 connections unless told otherwise
    return RedisQueue(aioredis.from_url(url, max_connections=CONCURRENCY + 100), name=QUEUE)


#: what `saq bench.peers.saq_peer.settings` runs (its concurrency comes from the environment)
settings: dict[str, Any] = {
    "queue": _queue(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")),
    "functions": [wait_io],
    "concurrency": CONCURRENCY,
}


class Peer:
    label = "saq"
    dist = "saq"
    bulk = False  # RedisQueue.enqueue: one job per call

    def connect(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.queue = _queue(url)

    def enqueue_io(self, n: int, pool: str) -> None:
        async def enqueue() -> None:
            for _ in range(n):
                await self.queue.enqueue("wait_io")

        self.loop.run_until_complete(enqueue())

    def io_workers(self, url: str, pool: str, processes: int, concurrency: int) -> tuple[list[list[str]], str]:
        sized = f"BENCH_SAQ_CONCURRENCY={concurrency}"  # read by `settings` in each worker process
        command = ["env", sized, script("saq"), f"{__name__}.settings", "--workers", str(processes)]
        return [command], f"--workers {processes}, concurrency {concurrency}"

    def idle(self, client: Any) -> bool:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(f"saq:{QUEUE}:queued")
            pipe.llen(f"saq:{QUEUE}:active")
            return not any(pipe.execute())
