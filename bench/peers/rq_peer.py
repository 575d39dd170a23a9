"""RQ: the same no-op task, its default forking `Worker` and its `SimpleWorker`.

RQ runs one job at a time per worker process; the I/O workload runs its default
(forking) worker as N separate `rq worker` processes, as a user scales RQ.
"""

from __future__ import annotations

from typing import Any

from . import io_work
from .marks import mark
from .tools import script

QUEUE = "bench"


def noop() -> None:
    mark()


def wait_io() -> None:
    io_work.blocking_wait()


class Peer:
    dist = "rq"
    bulk = True  # Queue.enqueue_many: one pipeline

    def __init__(self, worker_class: str) -> None:
        self.worker_class = worker_class
        self.label = "rq (fork per job)" if worker_class == "rq.Worker" else "rq SimpleWorker"
        # the default Worker forks a process per job (tens of jobs/s): the driver caps its jobs
        self.slow = worker_class == "rq.Worker"

    def connect(self, url: str) -> None:
        import redis
        from rq import Queue

        self.queue = Queue(QUEUE, connection=redis.Redis.from_url(url))

    def enqueue_one(self) -> None:
        self.queue.enqueue(noop)

    def enqueue_bulk(self, n: int) -> None:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(noop) for _ in range(n)])

    def worker_commands(self, url: str, processes: int) -> list[list[str]]:
        command = [script("rq"), "worker", QUEUE, "-u", url, "-w", self.worker_class, "--logging_level", "WARNING"]
        return [command] * processes

    def enqueue_io(self, n: int, pool: str) -> None:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(wait_io) for _ in range(n)])

    def io_workers(self, url: str, pool: str, processes: int, concurrency: int) -> tuple[list[list[str]], str]:
        return self.worker_commands(url, processes), f"worker x {processes} (the default Worker: a fork per job)"

    def idle(self, client: Any) -> bool:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(self.queue.key)
            pipe.zcard(self.queue.started_job_registry.key)
            return not any(pipe.execute())
