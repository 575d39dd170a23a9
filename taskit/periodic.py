"""Periodic tasks, enqueued by the workers themselves: no beat process to run or to lose.

    @task(schedule="*/5 * * * *")              # cron, in UTC
    def cleanup(): ...

    periodic(send_report, "0 9 * * mon", args=["weekly"], name="weekly-report")
    periodic(ping, timedelta(seconds=30))      # an interval

A periodic task is registered when its module is imported, so a worker that imports it
(`taskit worker myapp.tasks`) and listens on its queue enqueues its ticks, from its
maintenance step (`enqueue_due`). Every worker computes the same ticks from the same
schedule; one Lua script per tick (lua/periodic.lua) compares the tick with the last one
stored at `taskit:periodic:<name>` and writes the job in the same atomic step, so each
tick is enqueued exactly once however many workers race. The job id is deterministic,
`periodic:<name>:<tick>`, which makes a tick's job easy to find.

Ticks are enqueued a little ahead (up to one maintenance interval) as scheduled jobs,
so they start on time rather than at the next maintenance step.

Missed ticks (all workers down) are not replayed as a burst: the latest missed tick runs
once when a worker is back (or, if the next tick is due within the look-ahead, that one).
A schedule seen for the first time does not run at once for a tick already past: it
waits for its next tick.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import config
from .connections import Client
from .exceptions import ConfigurationError, TaskitError
from .job import Job, JobStatus, func_name_of, validate_id
from .queue import Queue
from .schedule import Schedule, parse_schedule
from .storage import keys
from .storage.store import Store
from .task import Task

__all__ = ["PeriodicTask", "enqueue_due", "periodic", "registered", "unregister"]

UTC = dt.timezone.utc

log = logging.getLogger("taskit.periodic")

#: options a periodic task passes on to each tick's job (as Queue.enqueue takes them)
JOB_OPTIONS = ("timeout", "job_timeout", "ttl", "result_ttl", "failure_ttl", "meta", "description", "retry")

_lock = threading.Lock()
_registry: dict[str, PeriodicTask] = {}


#: most ticks of one task enqueued ahead in one maintenance step
MAX_TICKS_AHEAD = 100


class PeriodicTask:
    """One registered schedule: what to enqueue, where, and when."""

    def __init__(
        self,
        name: str,
        func: Callable[..., Any] | str,
        schedule: Schedule,
        queue: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        self.name, self.func, self.schedule, self.queue = name, func, schedule, queue
        self.args, self.kwargs, self.options = args, kwargs, options
        self.func_name = func_name_of(func)

    def job_id(self, tick: float) -> str:
        """The id of a tick's job: the same on every worker."""
        return f"periodic:{self.name}:{int(tick)}"

    def due(self, now: float, lookahead: float = 0.0) -> list[tuple[float, float | None]]:
        """(tick, run_at) pairs to enqueue at `now`, oldest first: the latest past tick
        (run_at None: run at once; refused in Redis if already enqueued), then every tick
        within `lookahead` (run_at = the tick), so that a schedule finer than the
        maintenance interval keeps every tick."""
        ticks: list[tuple[float, float | None]] = [(self.schedule.previous(now), None)]
        upcoming = self.schedule.next(now)
        while lookahead > 0 and upcoming - now <= lookahead and len(ticks) <= MAX_TICKS_AHEAD:
            ticks.append((upcoming, upcoming))
            upcoming = self.schedule.next(upcoming)
        return ticks

    def next_run(self, now: float | None = None) -> dt.datetime:
        """When the next tick fires (UTC)."""
        tick = self.schedule.next(time.time() if now is None else now)
        return dt.datetime.fromtimestamp(tick, tz=UTC)

    def job_for(self, tick: float, connection: Client | None = None) -> Job:
        """A built (not written) job for one tick."""
        return Queue(self.queue, connection).prepare_data(
            self.func, self.args, self.kwargs, job_id=self.job_id(tick), **self.options
        )

    def __repr__(self) -> str:
        return f"<PeriodicTask {self.name} {self.schedule!r} -> {self.func_name} on {self.queue!r}>"


def periodic(
    func: Callable[..., Any] | str,
    schedule: Schedule | str | float | dt.timedelta,
    *,
    name: str | None = None,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    **options: Any,
) -> PeriodicTask:
    """Register `func` to be enqueued on `schedule` (a cron string, seconds, a timedelta,
    or a `Cron`/`Every`). Call it at import time of a module the workers import.

    name: identifies the schedule across workers (default: the function's name; give one
    to register the same function twice). queue: default the task's own queue.
    Other options are job options: timeout, ttl, result_ttl, failure_ttl, meta,
    description, retry. Everything is checked now: a bad schedule raises `ScheduleError`.
    """
    parsed = parse_schedule(schedule)
    unknown = sorted(set(options) - set(JOB_OPTIONS))
    if unknown:
        raise ConfigurationError(f"periodic() got unknown option {', '.join(unknown)}; known: {', '.join(JOB_OPTIONS)}")
    if "timeout" in options:
        options["job_timeout"] = options.pop("timeout")
    if isinstance(args, (str, bytes, dict)) or not isinstance(args, Iterable):
        raise ConfigurationError(f"args must be a list or tuple, not {type(args).__name__}")
    name = name if name is not None else func_name_of(func)
    validate_id(name, "periodic task name")
    if queue is None:
        queue = func.queue if isinstance(func, Task) else "default"
    entry = PeriodicTask(name, func, parsed, Queue(queue).name, tuple(args), dict(kwargs or {}), options)
    entry.job_for(parsed.previous(time.time()))  # a bad argument or option fails here, not on a worker
    with _lock:
        existing = _registry.get(name)
        if existing is not None and existing.func_name != entry.func_name:
            raise ConfigurationError(
                f"periodic task {name!r} is already registered for {existing.func_name}; give this one name=..."
            )
        _registry[name] = entry  # a re-import replaces its own registration
    return entry


def unregister(name: str) -> bool:
    """Forget a periodic task in this process; True if it was registered."""
    with _lock:
        return _registry.pop(name, None) is not None


def registered() -> dict[str, PeriodicTask]:
    """The periodic tasks registered in this process, by name."""
    with _lock:
        return dict(_registry)


def enqueue_due(
    connection: Client | Store | None = None,
    now: float | None = None,
    *,
    queues: Iterable[str] | None = None,
    lookahead: float = 0.0,
) -> list[Job]:
    """Enqueue the due tick of every registered periodic task (on `queues`, if given).

    Returns the jobs this call enqueued; a tick another worker already enqueued is not
    among them. One round trip for all tasks, none when no task is registered. Errors of
    one task or tick (a bad option, a key of the wrong type) are logged, not raised, so the
    other ticks and the worker's maintenance go on.
    """
    wanted = None if queues is None else set(queues)
    entries = [e for e in registered().values() if wanted is None or e.queue in wanted]
    if not entries:
        return []
    store = connection if isinstance(connection, Store) else Store.of(config.get_connection(connection))
    now = time.time() if now is None else now
    ticks, jobs = [], []
    for entry in entries:
        try:
            due = [(tick, run_at, entry.job_for(tick, store.redis)) for tick, run_at in entry.due(now, lookahead)]
        except TaskitError as exc:
            log.error("periodic task %s: cannot enqueue its tick: %s", entry.name, exc)
            continue
        for tick, run_at, job in due:
            status = JobStatus.QUEUED if run_at is None else JobStatus.SCHEDULED
            fields = job.to_fields(status, now)
            ticks.append((entry.name, tick, run_at is None, job.id, job.origin, job.ttl, run_at, fields))
            jobs.append((job, status, entry, tick))
    enqueued = []
    for (job, status, entry, tick), result in zip(jobs, store.enqueue_ticks(ticks)):
        when = dt.datetime.fromtimestamp(tick, tz=UTC).isoformat()
        if isinstance(result, TaskitError):
            log.error("periodic task %s: cannot enqueue the tick of %s: %s", entry.name, when, result)
            continue
        if result in (3, 4):
            log.warning("periodic task %s: its last tick (%s) was unreadable; replaced by the tick of %s",
                        entry.name, keys.periodic(keys.queue_tag(entry.queue), entry.name), when)
        if result in (1, 3):
            job._status = status
            job.enqueued_at = dt.datetime.fromtimestamp(now, tz=UTC)
            enqueued.append(job)
            log.info("periodic task %s: enqueued the tick of %s on %s (job %s)", entry.name, when, entry.queue, job.id)
        elif result == 2:
            log.info("periodic task %s: first seen; its next tick is %s", entry.name, entry.next_run(now).isoformat())
    return enqueued
