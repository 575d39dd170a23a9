"""Queue: the RQ-style front door. Enqueue functions, look at what waits, reach the registries."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from . import config, tracing
from .exceptions import ConfigurationError, DuplicateJobError
from .job import Job, JobStatus, validate_id
from .registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from .schedule import run_at
from .storage.keys import Field
from .storage.store import Store

#: options `enqueue()` takes out of the keyword arguments, as RQ does
ENQUEUE_OPTIONS = ("job_timeout", "ttl", "result_ttl", "failure_ttl", "job_id", "meta", "description", "at_front", "retry")
#: enqueue option -> Job.create argument
_JOB_ARGUMENT = {
    "job_timeout": "timeout",
    "job_id": "id",
    "ttl": "ttl",
    "result_ttl": "result_ttl",
    "failure_ttl": "failure_ttl",
    "meta": "meta",
    "description": "description",
    "retry": "retry",
}


class Queue:
    """A named queue in Redis. `Queue("emails", connection=Redis())`."""

    def __init__(self, name: str = "default", connection: redis.Redis | None = None) -> None:
        self.name = validate_id(name, "queue name")
        self._connection = config.check_connection(connection) if connection is not None else None

    @classmethod
    def all(cls, connection: redis.Redis | None = None) -> list[Queue]:
        """Every queue that has ever had a job enqueued."""
        return [cls(name, connection) for name in Store.of(config.get_connection(connection)).queue_names()]

    @property
    def connection(self) -> redis.Redis:
        return config.get_connection(self._connection)

    @property
    def _store(self) -> Store:
        return Store.of(self.connection)

    # -- enqueueing ----------------------------------------------------------------

    def enqueue(self, f: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue `f(*args, **kwargs)`. The options in ENQUEUE_OPTIONS are taken out of kwargs."""
        options = {name: kwargs.pop(name) for name in ENQUEUE_OPTIONS if name in kwargs}
        return self.enqueue_call(f, args, kwargs, **options)

    def enqueue_call(
        self,
        func: Callable[..., Any] | str,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Enqueue with the call's arguments and the job's options kept apart."""
        at_front = options.pop("at_front", False)
        return self.enqueue_job(self.prepare_data(func, args, kwargs, **options), at_front=at_front)

    def prepare_data(
        self,
        func: Callable[..., Any] | str,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """A job for this queue, checked and serialized but not written (for `enqueue_many`).

        Options are those of ENQUEUE_OPTIONS except at_front; a task's own options
        (`@task(timeout=...)`) fill in what is not given here (see `Job.create`).
        """
        unknown = sorted(set(options) - _JOB_ARGUMENT.keys())
        if unknown:
            raise ConfigurationError(
                f"unknown enqueue option {', '.join(unknown)}; known: {', '.join(ENQUEUE_OPTIONS)}"
            )
        settings = {_JOB_ARGUMENT[name]: value for name, value in options.items()}
        if args is not None and not isinstance(args, (str, bytes, dict)) and isinstance(args, Iterable):
            args = tuple(args)
        return Job.create(func, args, kwargs, connection=self._connection, origin=self.name, **settings)

    def enqueue_job(self, job: Job, at_front: bool = False, run_at: float | None = None) -> Job:
        """Write a created job and push it (or schedule it for `run_at`), in one round trip."""
        return self.enqueue_many([job], at_front=at_front, run_at=run_at)[0]

    def enqueue_many(self, jobs: Iterable[Job], at_front: bool = False, run_at: float | None = None) -> list[Job]:
        """Enqueue many prepared jobs (see `prepare_data`) in one round trip."""
        jobs = list(jobs)
        for job in jobs:
            if not isinstance(job, Job):
                raise ConfigurationError(f"enqueue_many takes jobs from Queue.prepare_data, not {type(job).__name__}")
            if job.origin != self.name:
                job.origin = self.name
        status = JobStatus.SCHEDULED if run_at is not None else JobStatus.QUEUED
        now = time.time()
        entries = [(job.id, self.name, job.ttl, at_front, run_at, job.to_fields(status, now)) for job in jobs]
        if tracing.tracer is None:
            written = self._store.enqueue(entries)
        else:
            with tracing.producer_spans(jobs, [entry[-1] for entry in entries]):
                written = self._store.enqueue(entries)
        taken = [job.id for job, ok in zip(jobs, written) if not ok]
        if taken:
            raise DuplicateJobError(
                f"a job with id {', '.join(taken)} already exists; nothing was written for "
                f"{'it' if len(taken) == 1 else 'them'}" + (" (the others were enqueued)" if len(taken) < len(jobs) else "")
            )
        enqueued_at = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc)
        for job, entry in zip(jobs, entries):
            job._status, job.enqueued_at = status, enqueued_at
            if Field.CREATED not in entry[-1]:
                job.created_at = enqueued_at  # not stored apart: read back as enqueued_at
            if job._connection is None:
                job._connection = self._connection
        return jobs

    def enqueue_at(self, when: dt.datetime, f: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue `f` to run at `when` (a timezone-aware datetime; a past time runs at once)."""
        options = {name: kwargs.pop(name) for name in ENQUEUE_OPTIONS if name in kwargs}
        at_front = options.pop("at_front", False)
        return self.enqueue_job(self.prepare_data(f, args, kwargs, **options), at_front, run_at(eta=when))

    def enqueue_in(
        self, delay: dt.timedelta | float, f: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """Enqueue `f` to run after `delay` (a timedelta or seconds)."""
        options = {name: kwargs.pop(name) for name in ENQUEUE_OPTIONS if name in kwargs}
        at_front = options.pop("at_front", False)
        return self.enqueue_job(self.prepare_data(f, args, kwargs, **options), at_front, run_at(countdown=delay))

    # -- looking -------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Jobs waiting on this queue (not scheduled or running ones)."""
        return self._store.queue_count(self.name)

    def __len__(self) -> int:
        return self.count

    @property
    def job_ids(self) -> list[str]:
        return self._store.queue_ids(self.name)

    def get_job_ids(self, offset: int = 0, length: int = -1) -> list[str]:
        return self._store.queue_ids(self.name, offset, -1 if length < 0 else offset + length - 1)

    @property
    def jobs(self) -> list[Job]:
        return [job for job in Job.fetch_many(self.job_ids, connection=self._connection) if job is not None]

    def fetch_job(self, job_id: str) -> Job | None:
        job = Job.fetch_many([job_id], connection=self._connection)[0]
        return job if job is not None and job.origin == self.name else None

    def empty(self) -> int:
        """Delete every job waiting on this queue; returns how many were removed."""
        return self._store.empty_queue(self.name)

    @property
    def started_job_registry(self) -> StartedJobRegistry:
        return StartedJobRegistry(self.name, self._connection)

    @property
    def finished_job_registry(self) -> FinishedJobRegistry:
        return FinishedJobRegistry(self.name, self._connection)

    @property
    def failed_job_registry(self) -> FailedJobRegistry:
        return FailedJobRegistry(self.name, self._connection)

    @property
    def canceled_job_registry(self) -> CanceledJobRegistry:
        return CanceledJobRegistry(self.name, self._connection)

    @property
    def scheduled_job_registry(self) -> ScheduledJobRegistry:
        return ScheduledJobRegistry(self.name, self._connection)

    def __repr__(self) -> str:
        return f"<Queue {self.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Queue) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)
