"""What is in Redis now, read once for the dashboard, `taskit info` and the metrics.

Every queue with its counts (waiting, and each registry) and the age of the job at its head;
every registered worker with its lease, heartbeat and the jobs it holds: those it runs (with
--threads or async tasks, many at once) and those it claimed ahead, waiting in its backlog
for a free slot (its hash lists them). The jobs done and failed per minute are history.py's.
Reads only: nothing here changes Redis.

A key that cannot be read (another type where a queue or registry should be, an id that is
not one) does not stop a read: its count is None, and `problems` names it (storage/store.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import config
from .connections import Client
from .registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from .storage import keys
from .storage.store import Store

#: the registries, in the order they are shown
REGISTRIES = (ScheduledJobRegistry, StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry, CanceledJobRegistry)
#: every count of a queue: waiting, then each registry
STATES = ("queued", *(registry.kind for registry in REGISTRIES))


@dataclass
class QueueState:
    name: str
    #: per state (STATES), the number of jobs; None where its key cannot be read
    counts: dict[str, int | None]
    #: when the job at the head of the queue was enqueued (Unix seconds), None if none waits
    oldest_enqueued_at: float | None

    def oldest_age(self, now: float) -> float | None:
        return None if self.oldest_enqueued_at is None else max(0.0, now - self.oldest_enqueued_at)


@dataclass
class HeldJob:
    id: str
    task: str
    status: str
    queue: str
    #: when it was claimed (the job's started_at; a job runs at most about a second later)
    started_at: float | None
    #: claimed and not started: waiting in the worker's backlog for a free slot
    waiting: bool = False

    @property
    def running(self) -> bool:
        return self.status == "started" and not self.waiting

    def running_seconds(self, now: float) -> float | None:
        return None if not self.running or self.started_at is None else max(0.0, now - self.started_at)


@dataclass
class WorkerState:
    name: str
    host: str
    pid: str
    queues: list[str]
    lease_deadline: float
    lease: float | None
    started_at: float | None
    held: int
    jobs: list[HeldJob] = field(default_factory=list)

    def alive(self, now: float) -> bool:
        return self.lease_deadline > now

    def heartbeat_age(self, now: float) -> float | None:
        """Seconds since the last renewal of its lease (None: a worker that did not say its lease)."""
        return None if self.lease is None else max(0.0, now - (self.lease_deadline - self.lease))

    @property
    def running(self) -> list[HeldJob]:
        """The jobs (of those read) that it runs now."""
        return [job for job in self.jobs if job.running]


@dataclass
class Overview:
    at: float
    #: where Redis is (its password redacted)
    redis: str
    queues: list[QueueState]
    workers: list[WorkerState]
    #: members of the queue set that are not valid queue names (skipped)
    unreadable_queues: int = 0
    #: what could not be read, each naming its key ("taskit:failed:q is a string, not a zset")
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form, with ages computed at `at`: for `taskit info --json`."""
        now = self.at
        return {
            "time": now,
            "redis": self.redis,
            "unreadable_queue_names": self.unreadable_queues,
            "problems": self.problems,
            "queues": [
                {"name": q.name, **q.counts, "oldest_waiting_seconds": _round(q.oldest_age(now))} for q in self.queues
            ],
            "workers": [
                {
                    **{k: v for k, v in asdict(w).items() if k not in ("jobs", "lease_deadline", "lease")},
                    "alive": w.alive(now),
                    "lease_left_seconds": _round(w.lease_deadline - now),
                    "heartbeat_age_seconds": _round(w.heartbeat_age(now)),
                    "jobs": [
                        {**asdict(j), "running_seconds": _round(j.running_seconds(now))}
                        for j in w.jobs
                    ],
                }
                for w in self.workers
            ],
        }


def min_scores(now: float) -> dict[str, float | str]:
    """The lowest score that still counts in each registry (expired entries do not)."""
    return {registry.kind: now if registry.scored_by_expiry else "-inf" for registry in REGISTRIES}


def read_queues(store: Store, names: list[str], now: float, problems: list[str] | None = None) -> list[QueueState]:
    """The counts of each queue, and when its head was enqueued (read for the queues that
    had a job waiting only: one to three commands less per empty queue)."""
    counts = store.queue_counts(names, min_scores(now), problems)
    waiting = [name for name, count in zip(names, counts) if count["queued"]]
    oldest = dict(zip(waiting, store.oldest_enqueued(waiting, problems))) if waiting else {}
    return [QueueState(name, count, oldest.get(name)) for name, count in zip(names, counts)]


@dataclass
class QueueList:
    """One page of the queues whose name holds a text (the dashboard's overview)."""

    queues: list[QueueState]
    #: how many queues match
    matching: int
    #: every queue's name (sorted)
    names: list[str]
    #: members of the queue set that are not valid queue names (skipped)
    unreadable: int


def read_queue_list(
    store: Store, now: float, start: int, count: int, match: str = "", problems: list[str] | None = None
) -> QueueList:
    """The queues from `start` (0-based, in name order) to at most `count` of them, among those
    whose name holds `match`: what a page costs is bounded by `count`, whatever the number
    of queues (the names themselves are one command)."""
    names, unreadable = store.read_queue_names()
    matching = [name for name in names if match in name]
    return QueueList(read_queues(store, matching[start:start + count], now, problems), len(matching), names, unreadable)


def live_workers(store: Store, now: float, problems: list[str] | None = None) -> tuple[int, int]:
    """(workers whose lease has not expired, workers registered): one command."""
    workers = store.workers(problems)
    return sum(1 for _, deadline in workers if deadline > now), len(workers)


def read_workers(store: Store, jobs_per_worker: int = 5, problems: list[str] | None = None) -> list[WorkerState]:
    details = store.worker_details(problems)
    held = store.held_jobs([(name, _queues(info)) for name, _, info, _ in details], jobs_per_worker, problems)
    workers = []
    for (name, deadline, info, count), jobs in zip(details, held):
        waiting = set(info.get(keys.WORKER_WAITING, "").split())
        workers.append(
            WorkerState(
                name=name,
                host=info.get("host", "?"),
                pid=info.get("pid", "?"),
                queues=_queues(info),
                lease_deadline=deadline,
                lease=_float(info.get("lease")),
                started_at=_float(info.get("started_at")),
                held=count,
                jobs=[_held_job(job_id, fields, job_id in waiting) for job_id, fields in jobs],
            )
        )
    return workers


def read_overview(connection: Client | None = None, now: float | None = None) -> Overview:
    """Queues and workers as they are now (about eight round trips in all)."""
    connection = config.get_connection(connection)
    store = Store.of(connection)
    now = time.time() if now is None else now
    names, unreadable = store.read_queue_names()
    problems: list[str] = []
    queues, workers = read_queues(store, names, now, problems), read_workers(store, problems=problems)
    return Overview(now, config.describe(connection), queues, workers, unreadable, list(dict.fromkeys(problems)))


def _held_job(job_id: str, fields: dict[str, bytes | None], waiting: bool) -> HeldJob:
    def text(name: str, default: str = "") -> str:
        value = fields.get(name)
        return default if value is None else value.decode(errors="replace")

    started = _float(text("started_at"))
    return HeldJob(
        job_id, text("func", "?"), text("status", "gone"), text("queue", "default"),
        None if started is None else started / 1000, waiting,
    )


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _queues(info: dict[str, str]) -> list[str]:
    """The queues a worker registered (comma-separated)."""
    return [q for q in info.get("queues", "").split(",") if q]
