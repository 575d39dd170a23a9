"""RQ: the same no-op task, its default forking `Worker` and its `SimpleWorker`."""

from __future__ import annotations

from typing import Any

from .marks import mark
from .tools import script

QUEUE = "bench"


def noop() -> None:
    mark()


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

    def idle(self, client: Any) -> bool:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(self.queue.key)
            pipe.zcard(self.queue.started_job_registry.key)
            return not any(pipe.execute())
