"""taskit: the no-op task, and how the benchmark enqueues it and starts workers.

Written against the public API and the `taskit worker` command only.
"""

from __future__ import annotations

import sys
from typing import Any

import taskit
from taskit import task

from .marks import mark

QUEUE = "bench"


@task(queue=QUEUE)
def noop() -> None:
    mark()


class Peer:
    label = "taskit"
    dist = "taskit"
    bulk = True  # Task.map / Queue.enqueue_many: one pipelined round trip per call

    def connect(self, url: str) -> None:
        taskit.configure(url=url)

    def enqueue_one(self) -> None:
        noop.delay()

    def enqueue_bulk(self, n: int) -> None:
        noop.map([()] * n)

    def worker_commands(self, url: str, processes: int) -> list[list[str]]:
        command = [sys.executable, "-m", "taskit", "worker", __name__, "-q", QUEUE, "-u", url, "--log-level", "warning"]
        return [command] * processes

    def idle(self, client: Any) -> bool:
        queue = taskit.Queue(QUEUE, connection=client)
        return queue.count == 0 and queue.started_job_registry.count == 0
