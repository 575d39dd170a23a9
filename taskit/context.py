"""The job being run by this thread or task, for `get_current_job()`."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job

_current_job: ContextVar[Job | None] = ContextVar("taskit_current_job", default=None)

set_current_job = _current_job.set
reset_current_job = _current_job.reset


def get_current_job() -> Job | None:
    """The `Job` being run here, or None outside a job."""
    return _current_job.get()
