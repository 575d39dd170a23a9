"""taskit: background jobs in Redis, with msgpack records and no lost jobs.

    from taskit import task

    @task
    def add(x, y):
        return x + y

    job = add.delay(1, 2)      # a worker runs it: `taskit worker myapp.tasks`
    job.wait()                 # -> 3
"""

from .config import configure
from .context import get_current_job
from .exceptions import (
    JobCanceledError,
    JobFailedError,
    JobTimeoutError,
    NoSuchJobError,
    NotReplicatedError,
    SerializationError,
    TaskitError,
)
from .job import Job, JobStatus
from .partitions import declare_queue
from .queue import Queue
from .retry import Retry, RetryLater
from .task import Task, task
from .worker import Worker, on_worker_start, on_worker_stop

__all__ = [
    "Job",
    "JobCanceledError",
    "JobFailedError",
    "JobStatus",
    "JobTimeoutError",
    "NoSuchJobError",
    "NotReplicatedError",
    "Queue",
    "Retry",
    "RetryLater",
    "SerializationError",
    "Task",
    "TaskitError",
    "Worker",
    "configure",
    "declare_queue",
    "get_current_job",
    "on_worker_start",
    "on_worker_stop",
    "task",
]
__version__ = "0.1.0"
