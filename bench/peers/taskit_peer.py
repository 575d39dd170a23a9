"""taskit: the no-op task, and how the benchmark enqueues it and starts workers.

Written against the public API and the `taskit worker` command only. The I/O workload's
thread and async modes run `taskit worker --threads` and `--async-tasks`; an older taskit
without them (before issue 10) has those modes skipped, with a note, not failed.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from typing import Any

import taskit
from taskit import task

from . import io_work
from .marks import mark

QUEUE = "bench"


@task(queue=QUEUE)
def noop() -> None:
    mark()


@task(queue=QUEUE)
def wait_io() -> None:
    io_work.blocking_wait()


#: the I/O workload's pools -> the `taskit worker` option that sizes them
IO_OPTIONS = {"threads": "--threads", "async": "--async-tasks"}
#: the module of the async mode's task (see its docstring)
ASYNC_TASKS = "bench.peers.taskit_async_tasks"


@functools.lru_cache(maxsize=1)
def _worker_help() -> str:
    command = [sys.executable, "-m", "taskit", "worker", "--help"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False).stdout


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

    def io_missing(self, pool: str) -> str | None:
        option = IO_OPTIONS.get(pool)
        # an option's own line in the help ("  --threads N  ..."), not a mention in another's text
        if option is None or re.search(rf"^\s*(-\w, )?{option}\b", _worker_help(), re.MULTILINE):
            return None
        return f"this taskit has no `taskit worker {option}` (issue 10)"

    def enqueue_io(self, n: int, pool: str) -> None:
        if pool == "async":
            from .taskit_async_tasks import wait_io_async

            wait_io_async.map([()] * n)
        else:
            wait_io.map([()] * n)

    def io_workers(self, url: str, pool: str, processes: int, concurrency: int) -> tuple[list[list[str]], str]:
        flags = ["-c", str(processes)]
        if pool in IO_OPTIONS:
            flags += [IO_OPTIONS[pool], str(concurrency)]
        command = self.worker_commands(url, 1)[0]
        if pool == "async":
            command.insert(command.index(__name__) + 1, ASYNC_TASKS)
        return [command + flags], " ".join(flags)

    def idle(self, client: Any) -> bool:
        queue = taskit.Queue(QUEUE, connection=client)
        return queue.count == 0 and queue.started_job_registry.count == 0
