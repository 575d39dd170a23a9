"""Per-queue job registries: sorted sets of job ids, read without side effects.

    started    running or prefetched jobs   score = lease deadline
    finished   succeeded jobs               score = when the record expires
    failed     failed jobs                  score = when the record expires
    canceled   canceled jobs                score = when the record expires
    scheduled  jobs waiting for a time      score = when they become due

Expired entries are not counted; Redis expires the job hashes, and the worker's
maintenance step removes the ids (DESIGN.md, principle 4: reads are reads).
"""

from __future__ import annotations

import datetime as dt
import math
import time

from . import config
from .connections import Client
from .exceptions import InvalidOperationError, NoSuchJobError
from .job import Job, validate_id, whole_number
from .storage.store import Store


def _id_of(job_or_id: Job | str) -> str:
    return validate_id(job_or_id.id if isinstance(job_or_id, Job) else job_or_id)


class BaseRegistry:
    kind = ""
    #: whether the score is an expiry time (entries below now are gone)
    scored_by_expiry = True

    def __init__(self, name: str = "default", connection: Client | None = None) -> None:
        self.name = validate_id(name, "queue name")
        self._connection = connection

    @property
    def connection(self) -> Client:
        return config.get_connection(self._connection)

    @property
    def _store(self) -> Store:
        return Store.of(self.connection)

    def _min_score(self) -> float | str:
        return time.time() if self.scored_by_expiry else "-inf"

    @property
    def count(self) -> int:
        return self._store.registry_count(self.kind, self.name, self._min_score())

    def __len__(self) -> int:
        return self.count

    def __contains__(self, job_or_id: object) -> bool:
        if not isinstance(job_or_id, (Job, str)):
            return False
        score = self._store.registry_score(self.kind, self.name, _id_of(job_or_id))
        return score is not None and (not self.scored_by_expiry or score > time.time())

    def get_job_ids(self, start: int = 0, end: int = -1) -> list[str]:
        start, end = whole_number("start", start), whole_number("end", end)
        return self._store.registry_ids(self.kind, self.name, self._min_score(), start, end)

    def get_jobs(self, start: int = 0, end: int = -1) -> list[Job]:
        jobs = Job.fetch_many(self.get_job_ids(start, end), connection=self._connection)
        return [job for job in jobs if job is not None]

    def get_expiration_time(self, job_or_id: Job | str) -> dt.datetime | None:
        """When the entry expires (for started jobs: the lease deadline); None if kept forever."""
        score = self._store.registry_score(self.kind, self.name, _id_of(job_or_id))
        if score is None:
            raise NoSuchJobError(f"job {_id_of(job_or_id)} is not in the {self.kind} registry of queue {self.name!r}")
        return None if math.isinf(score) else dt.datetime.fromtimestamp(score, tz=dt.timezone.utc)

    def remove(self, job_or_id: Job | str, delete_job: bool = False) -> bool:
        """Take an id out of the registry (and delete the job with `delete_job=True`)."""
        return self._store.registry_remove(self.kind, self.name, _id_of(job_or_id), delete_job)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _Requeueable(BaseRegistry):
    def requeue(self, job_or_id: Job | str) -> Job:
        """Put the job back on its queue, atomically; its failure details are cleared."""
        job_id = _id_of(job_or_id)
        result = self._store.requeue(self.kind, self.name, job_id, time.time())
        if result == "absent":
            raise InvalidOperationError(f"job {job_id} is not in the {self.kind} registry of queue {self.name!r}")
        if result == "expired":
            raise NoSuchJobError(f"job {job_id} expired from the {self.kind} registry of queue {self.name!r}")
        return Job.fetch(job_id, connection=self._connection)

    def requeue_all(self) -> list[str]:
        """Requeue every job in the registry; returns the ids requeued."""
        requeued = []
        for job_id in self.get_job_ids():
            if self._store.requeue(self.kind, self.name, job_id, time.time()) == "ok":
                requeued.append(job_id)
        return requeued


class StartedJobRegistry(BaseRegistry):
    kind = "started"
    scored_by_expiry = False


class FinishedJobRegistry(BaseRegistry):
    kind = "finished"


class FailedJobRegistry(_Requeueable):
    kind = "failed"


class CanceledJobRegistry(_Requeueable):
    kind = "canceled"


class ScheduledJobRegistry(BaseRegistry):
    kind = "scheduled"
    scored_by_expiry = False

    def get_scheduled_time(self, job_or_id: Job | str) -> dt.datetime:
        when = self.get_expiration_time(job_or_id)
        assert when is not None
        return when
