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
    JobFailedError,
    JobTimeoutError,
    NoSuchJobError,
    SerializationError,
    TaskitError,
)
from .job import Job, JobStatus
from .queue import Queue
from .retry import Retry, RetryLater
from .task import Task, task
from .worker import Worker

__all__ = [
    "Job",
    "JobFailedError",
    "JobStatus",
    "JobTimeoutError",
    "NoSuchJobError",
    "Queue",
    "Retry",
    "RetryLater",
    "SerializationError",
    "Task",
    "TaskitError",
    "Worker",
    "configure",
    "get_current_job",
    "task",
]
__version__ = "0.1.0"
