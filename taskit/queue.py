"""Queue: the RQ-style front door. Enqueue functions, look at what waits, reach the registries."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import config, tracing
from .connections import Client
from .exceptions import ConfigurationError, DuplicateJobError, NotReplicatedError
from .job import Job, JobStatus, retag, validate_id, whole_number
from .partitions import place
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
#: enqueue options of taskit's own, taken out of the keyword arguments too (a name RQ does
#: not reserve: a function with such a keyword argument must take it through kwargs=)
TASKIT_OPTIONS = ("partition_key",)
#: the rest of what RQ's `enqueue()` takes out of the keyword arguments (rq.Queue.parse_args),
#: not implemented by taskit yet: refused, never handed to the function (where a job meant
#: to wait for another would run at once). `args=` and `kwargs=` are RQ's explicit form.
NOT_SUPPORTED = ("depends_on", "on_success", "on_failure", "on_stopped", "repeat", "rate_limit", "webhooks",
                 "pipeline", "unique")
#: enqueue option -> Job.create argument (`timeout` as in RQ's enqueue_call and prepare_data)
_JOB_ARGUMENT = {
    "job_timeout": "timeout",
    "timeout": "timeout",
    "job_id": "id",
    "ttl": "ttl",
    "result_ttl": "result_ttl",
    "failure_ttl": "failure_ttl",
    "meta": "meta",
    "description": "description",
    "retry": "retry",
}


class Queue:
    """A named queue in Redis. `Queue("emails", connection=Redis())`.

    `replicas=N`: each enqueue through this queue returns only once N replicas have the
    job (Redis WAIT, up to `replica_timeout` seconds), else raises NotReplicatedError;
    None takes `taskit.configure()`'s (see docs/scaling.md).
    """

    def __init__(
        self,
        name: str = "default",
        connection: Client | None = None,
        *,
        replicas: int | None = None,
        replica_timeout: float | dt.timedelta | None = None,
    ) -> None:
        self.name = validate_id(name, "queue name")
        self._connection = config.check_connection(connection) if connection is not None else None
        self.replicas = None if replicas is None else config.check_replicas(replicas)
        self.replica_timeout = None if replica_timeout is None else config.check_replica_timeout(replica_timeout)
        if self._connection is not None and self.replicas:
            self._store.check_replica_wait(*self._replica_wait())

    @classmethod
    def all(cls, connection: Client | None = None) -> list[Queue]:
        """Every queue that holds a job (waiting, running, scheduled or kept in a registry);
        the maintenance step drops a queue emptied of everything, an enqueue adds it back."""
        return [cls(name, connection) for name in Store.of(config.get_connection(connection)).queue_names()]

    @property
    def connection(self) -> Client:
        return config.get_connection(self._connection)

    @property
    def _store(self) -> Store:
        return Store.of(self.connection)

    # -- enqueueing ----------------------------------------------------------------

    def enqueue(self, f: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue `f(*args, **kwargs)`. The options in ENQUEUE_OPTIONS and TASKIT_OPTIONS are taken out of
        kwargs; so is RQ's explicit form, `enqueue(f, args=(1,), kwargs={"x": 2}, ttl=60)`."""
        call_args, call_kwargs, options = split_call(args, kwargs)
        return self.enqueue_call(f, call_args, call_kwargs, **options)

    def enqueue_call(
        self,
        func: Callable[..., Any] | str,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Enqueue with the call's arguments and the job's options kept apart; besides the
        options of `prepare_data`, takes `at_front`, `replicas` and `replica_timeout`."""
        at_front, wait = options.pop("at_front", False), take_wait_options(options)
        return self.enqueue_job(self.prepare_data(func, args, kwargs, **options), at_front=at_front, **wait)

    def prepare_data(
        self,
        func: Callable[..., Any] | str,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """A job for this queue, checked and serialized but not written (for `enqueue_many`).

        Options are those of ENQUEUE_OPTIONS except at_front, and partition_key (which
        partition of a partitioned queue: taskit.partitions); a task's own options
        (`@task(timeout=...)`) fill in what is not given here (see `Job.create`).
        """
        if not options:  # (the common case: nothing to check or take out)
            return Job.create(func, args, kwargs, connection=self._connection, origin=self.name)
        unsupported = [name for name in NOT_SUPPORTED if name in options]
        if unsupported:
            raise ConfigurationError(
                f"taskit does not support RQ's enqueue option {'= and '.join(unsupported)}= yet; nothing was enqueued"
            )
        partition_key = options.pop("partition_key", None)
        unknown = sorted(set(options) - _JOB_ARGUMENT.keys())
        if unknown:
            raise ConfigurationError(
                f"unknown enqueue option {', '.join(unknown)}; known: {', '.join(sorted(_JOB_ARGUMENT))}"
            )
        if "job_timeout" in options and "timeout" in options:
            raise ConfigurationError("give job_timeout or timeout, not both (they are the same option)")
        settings = {_JOB_ARGUMENT[name]: value for name, value in options.items()}
        if args is not None and not isinstance(args, (str, bytes, dict)) and isinstance(args, Iterable):
            args = tuple(args)
        job = Job.create(func, args, kwargs, connection=self._connection, origin=self.name, **settings)
        if partition_key is not None:
            if not isinstance(partition_key, (str, bytes, int)) or isinstance(partition_key, bool):
                raise ConfigurationError(f"partition_key must be a str, bytes or int, not {type(partition_key).__name__}")
            job._partition_key = partition_key
        return job

    def enqueue_job(
        self,
        job: Job,
        at_front: bool = False,
        run_at: float | None = None,
        *,
        replicas: int | None = None,
        replica_timeout: float | dt.timedelta | None = None,
    ) -> Job:
        """Write a created job and push it (or schedule it for `run_at`), in one round trip."""
        return self.enqueue_many([job], at_front, run_at, replicas=replicas, replica_timeout=replica_timeout)[0]

    def enqueue_many(
        self,
        jobs: Iterable[Job],
        at_front: bool = False,
        run_at: float | None = None,
        *,
        replicas: int | None = None,
        replica_timeout: float | dt.timedelta | None = None,
    ) -> list[Job]:
        """Enqueue many prepared jobs (see `prepare_data`) in one round trip.

        `replicas`, `replica_timeout`: this call's replica wait (one WAIT after all the jobs);
        None takes the queue's, else `taskit.configure()`'s.
        """
        if type(jobs) is not list:
            if isinstance(jobs, Job) or not isinstance(jobs, Iterable):
                raise ConfigurationError(f"enqueue_many takes a list of jobs, not {type(jobs).__name__}")
            jobs = list(jobs)
        if at_front is not False and at_front is not True:
            raise ConfigurationError(f"at_front must be True or False, not {type(at_front).__name__}")
        if run_at is not None and (
            isinstance(run_at, bool) or not isinstance(run_at, (int, float)) or not math.isfinite(run_at)
        ):
            raise ConfigurationError(f"run_at must be a Unix time in seconds, not {run_at!r}")
        wait = self._replica_wait(replicas, replica_timeout)
        store, name = self._store, self.name
        tags = store.partitions.known_tags(name)
        for job in jobs:
            if not isinstance(job, Job):
                raise ConfigurationError(f"enqueue_many takes jobs from Queue.prepare_data, not {type(job).__name__}")
            if job.origin != name:
                job.origin = name
            retag(job, name, tags)
        if len(tags) > 1:
            place(store, name, jobs)
        status = JobStatus.SCHEDULED if run_at is not None else JobStatus.QUEUED
        now = time.time()
        entries = [(job.id, name, job.ttl, at_front, run_at, job.to_fields(status, now), job._generated) for job in jobs]
        if tracing.tracer is None:
            written, acknowledged = store.enqueue(entries, *wait)
        else:
            with tracing.producer_spans(jobs, [entry[5] for entry in entries]):
                written, acknowledged = store.enqueue(entries, *wait)
        taken = [job.id for job, ok in zip(jobs, written) if not ok]
        if taken:
            raise DuplicateJobError(
                f"a job with id {', '.join(taken)} already exists; nothing was written for "
                f"{'it' if len(taken) == 1 else 'them'}" + (" (the others were enqueued)" if len(taken) < len(jobs) else "")
            )
        for job, entry in zip(jobs, entries):
            fields = entry[5]
            # the times as stored (milliseconds), so that this Job equals what Job.fetch reads
            enqueued = float(fields[Field.ENQUEUED])
            times = job.__dict__
            job._status, times["_enqueued_at"] = status, enqueued
            times["_created_at"] = float(fields[Field.CREATED]) if Field.CREATED in fields else enqueued  # as Job._load reads it
            if job._connection is None:
                job._connection = self._connection
        if acknowledged is not None and acknowledged < wait.replicas:
            raise not_replicated(jobs, self.name, acknowledged, wait)
        return jobs

    def _replica_wait(
        self, replicas: int | None = None, replica_timeout: float | dt.timedelta | None = None
    ) -> config.ReplicaWait:
        """A call's replica wait: what it gives, else the queue's, else the process default."""
        return config.replica_wait(
            self.replicas if replicas is None else replicas,
            self.replica_timeout if replica_timeout is None else replica_timeout,
        )

    def enqueue_at(self, when: dt.datetime, f: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue `f` to run at `when` (a timezone-aware datetime; a past time runs at once).
        Takes the options and forms of `enqueue`."""
        return self._enqueue_later(run_at(eta=when), f, args, kwargs)

    def enqueue_in(
        self, delay: dt.timedelta | float, f: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """Enqueue `f` to run after `delay` (a timedelta or seconds). Takes the options and
        forms of `enqueue`."""
        return self._enqueue_later(run_at(countdown=delay), f, args, kwargs)

    def _enqueue_later(
        self, when: float, f: Callable[..., Any] | str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job:
        call_args, call_kwargs, options = split_call(args, kwargs)
        at_front = options.pop("at_front", False)
        return self.enqueue_job(self.prepare_data(f, call_args, call_kwargs, **options), at_front, when)

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
        offset, length = whole_number("offset", offset), whole_number("length", length)
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


def take_wait_options(options: dict[str, Any]) -> dict[str, Any]:
    """`replicas=` and `replica_timeout=` taken out of a call's options (for `enqueue_many`)."""
    return {name: options.pop(name) for name in ("replicas", "replica_timeout") if name in options}


def not_replicated(jobs: list[Job], queue: str, acknowledged: int, wait: config.ReplicaWait) -> NotReplicatedError:
    """The error of an enqueue that fewer replicas than asked confirmed: it says the jobs are
    enqueued (and stay), what was confirmed, and where to read what to do."""
    what, it = (f"job {jobs[0].id} is", "it") if len(jobs) == 1 else (f"{len(jobs)} jobs ({jobs[0].id}, ...) are", "them")
    return NotReplicatedError(
        f"{what} enqueued on queue {queue!r} on the master, but {acknowledged} of the {wait.replicas} "
        f"replica(s) asked for confirmed {it} within {wait.timeout:g}s, so a failover now could lose {it}; "
        f"{'it stays' if len(jobs) == 1 else 'they stay'} enqueued and may run (what to do: docs/scaling.md, "
        "'Producers: waiting for a replica')",
        jobs, acknowledged, wait.replicas, wait.timeout,
    )


def split_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(args, kwargs, options) of RQ's `enqueue(f, *args, **kwargs)`.

    The options (ENQUEUE_OPTIONS, and NOT_SUPPORTED so that they are refused rather than
    handed to the function) are taken out of kwargs. In RQ's explicit form,
    `enqueue(f, args=(1,), kwargs={"x": 2}, ttl=60)`, the call's arguments are `args=`
    and `kwargs=`, and every other keyword must be an option.
    """
    options = {name: kwargs.pop(name) for name in (*ENQUEUE_OPTIONS, *TASKIT_OPTIONS, *NOT_SUPPORTED) if name in kwargs}
    if "args" not in kwargs and "kwargs" not in kwargs:
        return args, kwargs, options
    if args:
        raise ConfigurationError("give the function's arguments positionally or as args=/kwargs=, not both")
    call_args, call_kwargs = kwargs.pop("args", None), kwargs.pop("kwargs", None)
    if kwargs:
        raise ConfigurationError(
            f"unknown enqueue option {', '.join(sorted(kwargs))}: with args=/kwargs=, the function's keyword "
            "arguments go in kwargs="
        )
    return call_args, call_kwargs, options
