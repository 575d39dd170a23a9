"""`@task`: the Celery-style front door. A task is still a plain function when called."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from . import functions
from .connections import Client
from .exceptions import ConfigurationError
from .job import Job, Options, seconds
from .queue import Queue, take_wait_options
from .retry import Retry
from .schedule import run_at

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A registered function with default job options; enqueue it with `delay` or `apply_async`."""

    def __init__(
        self,
        fn: Callable[..., R],
        *,
        name: str | None = None,
        queue: str = "default",
        timeout: int | dt.timedelta | None = None,
        ttl: int | dt.timedelta | None = None,
        result_ttl: int | dt.timedelta | None = None,
        failure_ttl: int | dt.timedelta | None = None,
        retry: Retry | None = None,
        bind: bool = False,
        schedule: Any = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"@task decorates a function, not {type(fn).__name__}")
        self.fn = fn
        self.name = name if name is not None else functions.qualified_name(fn)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"task name must be a non-empty string, not {self.name!r}")
        #: the task's queue, checked once (`apply_async` enqueues through it)
        self._queue = Queue(queue)
        self.queue = self._queue.name
        self.bind = bind
        # validated now, so a bad option fails at import time rather than at the first delay()
        self.job_options: dict[str, Any] = {}
        if timeout is not None:
            self.job_options["timeout"] = -1 if timeout == -1 else seconds("timeout", timeout)
        if ttl is not None:
            self.job_options["ttl"] = seconds("ttl", ttl)
        if result_ttl is not None:
            self.job_options["result_ttl"] = seconds("result_ttl", result_ttl, allow_zero=True, forever=True)
        if failure_ttl is not None:
            self.job_options["failure_ttl"] = seconds("failure_ttl", failure_ttl, allow_zero=True, forever=True)
        if retry is not None:
            if not isinstance(retry, Retry):
                raise ConfigurationError(f"retry must be a taskit.Retry, not {type(retry).__name__}")
            self.job_options["retry"] = retry
        self._options, self._options_of = Options.of(self.job_options), dict(self.job_options)
        functools.update_wrapper(self, fn)
        if schedule is not None:  # a periodic task: the workers enqueue it (taskit.periodic)
            from .periodic import periodic

            periodic(self, schedule)
        functions.register_task(self.name, self)

    @property
    def options(self) -> Options:
        """The options of its jobs (Job.create reads them), checked again only when
        `job_options` was changed since."""
        if self.job_options != self._options_of:
            self._options, self._options_of = Options.of(self.job_options), dict(self.job_options)
        return self._options

    @property
    def task_name(self) -> str:
        return self.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as if it were not a task."""
        if self.bind:
            from .context import get_current_job

            # outside a worker, a job that is never enqueued: an id, meta, a harmless save_meta()
            job = get_current_job() or Job.detached(self, args, kwargs)
            return self.fn(job, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue a call with the task's default options."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        job_id: str | None = None,
        countdown: float | dt.timedelta | None = None,
        eta: dt.datetime | None = None,
        connection: Client | None = None,
        at_front: bool = False,
        replicas: int | None = None,
        replica_timeout: float | dt.timedelta | None = None,
        **options: Any,
    ) -> Job:
        """Enqueue with options: queue, job_id, countdown or eta, and any of ttl, result_ttl,
        failure_ttl, timeout, meta, description, retry (these win over the task's own),
        partition_key (the partition of a partitioned queue: taskit.partitions); `replicas`
        and `replica_timeout` (see `Queue`) win over `taskit.configure()`'s."""
        if not isinstance(at_front, bool):
            raise ConfigurationError(f"at_front must be True or False, not {type(at_front).__name__}")
        target = self._queue
        if queue is not None or connection is not None or target.name != self.queue:  # (`task.queue` may be set)
            target = Queue(queue if queue is not None else self.queue, connection)
        if job_id is not None:
            options["job_id"] = job_id
        job = target.prepare_data(self, args, kwargs, **options)
        when = None if countdown is None and eta is None else run_at(countdown, eta)
        return target.enqueue_job(job, at_front, when, replicas=replicas, replica_timeout=replica_timeout)

    def map(self, calls: Iterable[Iterable[Any]], **options: Any) -> list[Job]:
        """Enqueue one job per argument tuple in a single round trip: `add.map([(1, 2), (3, 4)])`;
        with `replicas=N`, one WAIT follows the whole batch."""
        if isinstance(calls, (str, bytes)) or not isinstance(calls, Iterable):
            raise ConfigurationError(f"map takes a list of argument tuples, not {type(calls).__name__}")
        connection = options.pop("connection", None)
        wait = take_wait_options(options)
        target = Queue(options.pop("queue", self.queue), connection)
        return target.enqueue_many([target.prepare_data(self, args, None, **options) for args in calls], **wait)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


@overload
def task(fn: Callable[P, R]) -> Task[P, R]: ...


@overload
def task(
    fn: None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    timeout: int | dt.timedelta | None = None,
    ttl: int | dt.timedelta | None = None,
    result_ttl: int | dt.timedelta | None = None,
    failure_ttl: int | dt.timedelta | None = None,
    retry: Retry | None = None,
    bind: bool = False,
    schedule: Any = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Make a function a task: `@task` or `@task(queue="emails", timeout=30, retry=Retry(3))`.

    With `bind=True` the function receives the running `Job` as its first argument.
    With `schedule=` (a cron string, seconds or a timedelta) the workers enqueue it on
    that schedule (see taskit.periodic).
    """
    if fn is None:
        return lambda f: Task(f, **options)
    return Task(fn, **options)
