"""Every error taskit raises, in one tree.

    TaskitError
    ├── ConfigurationError        bad settings or arguments (also a ValueError)
    │   ├── InvalidJobIdError     an empty or malformed job id
    │   └── ScheduleError         a bad countdown, eta, interval or cron expression
    ├── SerializationError        a value msgpack cannot carry (also a TypeError)
    ├── StorageError              Redis refused a command (wrong key type, out of memory, ...)
    │   └── RedisUnavailableError Redis could not be reached within the retry budget
    ├── NoSuchJobError            no job with that id (also a LookupError)
    ├── DuplicateJobError         a job with that id already exists
    ├── NotReplicatedError        enqueued on the master, but fewer replicas than asked confirmed it in time
    ├── InvalidOperationError     the job is not in a state that allows this
    ├── JobTimeoutError           raised inside a task that ran past its timeout
    ├── JobFailedError            `job.wait()` on a job that failed; carries exc_info
    │   └── JobCanceledError      ... that was canceled (also raised inside a running job to stop it)
    ├── WaitTimeoutError          `job.wait(timeout=...)` ran out (also a TimeoutError)
    ├── TaskNotAllowedError       the worker refused to run a function it was not given
    ├── HookError                 a worker start or stop hook raised
    └── RetryLater                raised by a task to run again later (defined in taskit.retry)

Catch `TaskitError` to catch them all; the standard-library bases let code that
already catches `ValueError` / `TypeError` / `LookupError` keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job


class TaskitError(Exception):
    """Base class of every exception taskit raises."""


class ConfigurationError(TaskitError, ValueError):
    """A setting or argument is invalid."""


class InvalidJobIdError(ConfigurationError):
    """A job id is empty, too long, or contains characters that are not allowed."""


class ScheduleError(ConfigurationError):
    """A countdown, eta, interval or cron expression is invalid."""


class SerializationError(TaskitError, TypeError):
    """A value cannot be stored with msgpack; the message names its path and type."""


class StorageError(TaskitError):
    """Redis answered with an error: a key of the wrong type, out of memory, a bad script."""


class RedisUnavailableError(StorageError):
    """Redis did not answer within the retry budget."""


class NoSuchJobError(TaskitError, LookupError):
    """There is no job with that id (it never existed, expired, or was deleted)."""


class DuplicateJobError(TaskitError):
    """A job with that id already exists; delete it first or pick another id."""


class NotReplicatedError(TaskitError):
    """An enqueue that asked for `replicas=N` is on the master, but fewer than N replicas
    confirmed it (Redis `WAIT`) within the timeout: a failover now could lose it.

    The jobs are not deleted (a worker may be running them already). `jobs` are the call's
    jobs (`job` the first, the only one of a single enqueue), `acknowledged` how many
    replicas confirmed them, `replicas` how many were asked for, `timeout` the wait in seconds.
    """

    def __init__(self, message: str, jobs: list[Job], acknowledged: int, replicas: int, timeout: float) -> None:
        super().__init__(message)
        self.jobs, self.job = jobs, jobs[0]
        self.acknowledged, self.replicas, self.timeout = acknowledged, replicas, timeout


class InvalidOperationError(TaskitError):
    """The job's state does not allow the operation (e.g. requeue of a job that did not fail)."""


class JobTimeoutError(TaskitError):
    """Raised inside a task that ran past its timeout."""


class JobFailedError(TaskitError):
    """The job failed; `exc_info` holds the worker's traceback text."""

    def __init__(self, message: str, exc_info: str | None = None) -> None:
        super().__init__(message)
        self.exc_info = exc_info


class JobCanceledError(JobFailedError):
    """The job was canceled. `job.wait()` raises it; a running job that is canceled gets it
    raised inside (a thread or single-threaded job; an `async def` job gets CancelledError)."""

    def __init__(self, message: str = "", exc_info: str | None = None) -> None:
        super().__init__(message, exc_info)


class WaitTimeoutError(TaskitError, TimeoutError):
    """`job.wait(timeout=...)` returned before the job ended."""


class TaskNotAllowedError(TaskitError):
    """The job names a function the worker was not told it may run."""


class HookError(TaskitError):
    """An `on_worker_start` / `on_worker_stop` hook raised; the message names the hook."""
