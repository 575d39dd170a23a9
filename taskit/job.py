"""The Job record: what to run, with what, and what happened.

A job is stored with the short field names listed in `taskit.storage.keys.Field`: packed in
its queue's record buckets until it ends, then in a hash of its own (storage/keys.py, "Per
tag"). Options equal to their default are not stored (timeout 180 s,
result_ttl 500 s, failure_ttl one year, no ttl, queue "default"), nor are empty arguments, nor a
created_at within a second of enqueued_at, so a queued job costs little Redis memory. Job ids
are their tag (storage/keys.py), a dot and 22 random base-62 characters, unless given.

Reading a job never changes it (DESIGN.md, principle 4).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from . import config, functions, serialization
from .connections import Client
from .exceptions import (
    ConfigurationError,
    InvalidJobIdError,
    InvalidOperationError,
    JobCanceledError,
    JobFailedError,
    NoSuchJobError,
    SerializationError,
    WaitTimeoutError,
)
from .schedule import MAX_SECONDS
from .storage.keys import DEFAULT_QUEUE, NAME, Field, queue_tag, tag_of
from .storage.store import Fields, Store

if TYPE_CHECKING:
    from .retry import Retry

DEFAULT_TIMEOUT = 180
DEFAULT_RESULT_TTL = 500
DEFAULT_FAILURE_TTL = 31_536_000  # one year
#: created_at is stored apart only when a job was made this long before it was enqueued
#: (Job.create, then enqueue_job later); otherwise it reads as enqueued_at
CREATED_APART_MS = 1000

class _Unset:
    """Marks an option the caller did not give, so a task's own option can fill it."""

    def __repr__(self) -> str:
        return "<default>"


UNSET: Any = _Unset()
#: option -> value when neither the call nor the task gives one
DEFAULT_OPTIONS: dict[str, Any] = {
    "ttl": None,
    "result_ttl": DEFAULT_RESULT_TTL,
    "failure_ttl": DEFAULT_FAILURE_TTL,
    "timeout": DEFAULT_TIMEOUT,
    "retry": None,
}

_ID = NAME


class JobStatus(str, Enum):
    CREATED = "created"
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"

    def __str__(self) -> str:
        return self.value


ENDED = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED})
#: status as stored -> status: a dict lookup, where JobStatus(text) runs Enum's Python code (a
#: worker reads the status of each job it claims; an idle one, cold); JobStatus(text)
#: still raises for a text that is no status
_STATUSES = {status.value.encode(): status for status in JobStatus}


def validate_id(value: object, what: str = "job id") -> str:
    if not isinstance(value, str):
        raise InvalidJobIdError(f"{what} must be a string, not {type(value).__name__}")
    if not _ID.fullmatch(value):
        if value and value.strip(".") == "":
            raise InvalidJobIdError(f"{what} {value!r} is invalid: a name made only of dots cannot be reached "
                                    "in a URL (the dashboard's /jobs/..): add a letter or a digit")
        raise InvalidJobIdError(
            f"{what} {value!r} is invalid: use 1 to 128 letters, digits or the characters _ . : @ -"
        )
    return value


def whole_number(name: str, value: object) -> int:
    """Validate an index or count argument (offsets, lengths, registry ranges)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a whole number, not {type(value).__name__}")
    return value


def seconds(name: str, value: object, *, allow_zero: bool = False, forever: bool = False) -> int | None:
    """Validate a duration option: an int or timedelta up to MAX_SECONDS (100 years, so that
    Redis never refuses the expiry later); -1 (or None) means forever where allowed."""
    if isinstance(value, dt.timedelta):
        value = int(value.total_seconds())
    if value is None and forever:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a whole number of seconds, not {type(value).__name__}")
    if value == -1 and forever:
        return -1
    if value < 0 or (value == 0 and not allow_zero) or value > MAX_SECONDS:
        least = "0" if allow_zero else "1"
        raise ConfigurationError(
            f"{name} must be {least} to {MAX_SECONDS:,} seconds (100 years)"
            + (", or -1 for forever" if forever else "") + f", not {value}"
        )
    return value


#: random byte -> a base-62 character (a slight bias: still about 5.95 random bits each)
_TO_BASE62 = bytes((string.digits + string.ascii_letters).encode()[b % 62] for b in range(256))


def new_id(tag: str) -> str:
    """A random job id that carries its tag (storage/keys.py): the tag, '.', then 22
    base-62 characters, about 130 random bits (a uuid4 has 122)."""
    return f"{tag}.{os.urandom(22).translate(_TO_BASE62).decode()}"


def retag(job: Job, queue: str, tags: Sequence[str] = ()) -> None:
    """Make a job's id fit the queue it is enqueued on: an id taskit made carries the tag of
    the queue it was made for (storage/keys.py), so a job made for another queue gets a new
    one (`tags`: those of the queue's partitions, any of which fits). A custom id that reads
    as an id taskit made for another queue is refused: the job would be looked for in that
    queue's keys."""
    tag = queue_tag(queue)
    made = job._generated
    if made and job.id.startswith(tag) and job.id[len(tag)] == ".":
        return  # (the common case, without parsing the id)
    if not made:
        validate_id(job.id)  # (set by hand, maybe after Job.create)
    carried = tag_of(job.id)
    if carried is None or carried == tag or carried in tags:
        return
    if not made:
        raise InvalidJobIdError(
            f"job id {job.id!r} has the form of an id taskit made for another queue (tag {carried!r}); "
            "choose another id"
        )
    job.id = job._made_id = new_id(tag)


class Options(NamedTuple):
    """A job's options, checked: what `@task(...)` gives its jobs (checked once, when the
    task is made, not at each call), with what a call gives in `given`."""

    ttl: int | None
    result_ttl: int
    failure_ttl: int
    timeout: int | None
    retry: Retry | None

    @classmethod
    def of(cls, options: dict[str, Any]) -> Options:
        """From option -> value (names of DEFAULT_OPTIONS; a missing one takes its default)."""
        ttl, result_ttl, failure_ttl, timeout, retry = ({**DEFAULT_OPTIONS, **options}[name] for name in cls._fields)
        if retry is not None:
            from .retry import Retry

            if not isinstance(retry, Retry):
                raise ConfigurationError(f"retry must be a taskit.Retry, not {type(retry).__name__}")
        return cls(
            seconds("ttl", ttl) if ttl is not None else None,
            seconds("result_ttl", result_ttl, allow_zero=True, forever=True) or 0,
            seconds("failure_ttl", failure_ttl, allow_zero=True, forever=True) or 0,
            None if timeout in (None, -1) else seconds("timeout", timeout),
            retry,
        )

    def given(self, ttl: Any, result_ttl: Any, failure_ttl: Any, timeout: Any, retry: Any) -> Options:
        """These options with those a call gives (UNSET: not given) checked and put in."""
        mine = {"ttl": self.ttl, "result_ttl": self.result_ttl, "failure_ttl": self.failure_ttl,
                "timeout": -1 if self.timeout is None else self.timeout, "retry": self.retry}
        call = zip(self._fields, (ttl, result_ttl, failure_ttl, timeout, retry))
        return Options.of({**mine, **{name: value for name, value in call if value is not UNSET}})


_DEFAULTS = Options.of({})
#: the packed arguments of a call without any (a job holds them, and does not store them)
_NO_ARGUMENTS = serialization.dumps_call((), {})


def _ms(when: float) -> int:
    return round(when * 1000)


class _StoredTime:
    """A job's time: kept as stored (Unix milliseconds) and made a UTC datetime when read,
    so that a worker loading thousands of jobs a second does not build datetimes it never uses."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, job: Any, owner: type | None = None) -> Any:
        if job is None:
            return self
        value = job.__dict__.get(self.slot)
        if isinstance(value, float):
            value = job.__dict__[self.slot] = dt.datetime.fromtimestamp(value / 1000, tz=dt.timezone.utc)
        return value

    def __set__(self, job: Any, value: dt.datetime | float | None) -> None:
        job.__dict__[self.slot] = value


#: the last stored time (Unix milliseconds) a datetime can hold: the end of the year 9999
_LAST_MS = 253_402_300_799_999


def _stored_time(raw: bytes | None) -> float | None:
    """A stored time, checked now so that reading it later as a datetime cannot fail: a
    crafted 'inf', 'nan' or 1e20 would make every page and command that shows the job raise."""
    if raw is None:
        return None
    value = float(raw)
    if not 0 <= value <= _LAST_MS:
        raise ValueError(f"{value!r} is not a time in Unix milliseconds")
    return value


#: (attribute, field) of the stored times
_TIMES = (
    ("created_at", Field.CREATED),
    ("enqueued_at", Field.ENQUEUED),
    ("started_at", Field.STARTED),
    ("ended_at", Field.ENDED),
)
_TIME_FIELDS = frozenset(field for _, field in _TIMES)
#: (attribute, field) of what changes along with the status (read by `get_status`)
_PROGRESS = (
    ("attempts", Field.ATTEMPTS),
    ("retries", Field.RETRIES),
    ("recoveries", Field.RECOVERIES),
    ("worker_name", Field.WORKER),
    ("started_at", Field.STARTED),
    ("ended_at", Field.ENDED),
)
#: (attribute, field, default) of the stored numbers
_NUMBERS = (
    ("ttl", Field.TTL, None),
    ("result_ttl", Field.RESULT_TTL, DEFAULT_RESULT_TTL),
    ("failure_ttl", Field.FAILURE_TTL, DEFAULT_FAILURE_TTL),
    ("attempts", Field.ATTEMPTS, 0),
    ("recoveries", Field.RECOVERIES, 0),
    ("retries", Field.RETRIES, 0),
)


def _status_of(raw: bytes) -> JobStatus:
    return _STATUSES.get(raw) or JobStatus(raw.decode())


def _timeout_of(raw: bytes) -> int | None:
    timeout = int(raw)
    return None if timeout == -1 else timeout


def _meta_of(raw: bytes) -> dict[str, Any]:
    return serialization.loads(raw) or {}


def _retry_of(raw: bytes) -> Retry:
    from .retry import Retry

    return Retry.from_data(serialization.loads(raw))


#: field -> (its name in errors, the attribute it is read into (a stored time: its slot, see
#: _StoredTime: checked now, made a datetime when read), how it is read)
_READERS: dict[str, tuple[str, str, Callable[[bytes], Any]]] = {
    Field.FUNC: ("func", "func_name", bytes.decode),
    Field.ARGS: ("args", "_call", bytes),  # (as stored: bytes(raw) is raw; unpacked when read)
    Field.STATUS: ("status", "_status", _status_of),
    Field.QUEUE: ("queue", "origin", bytes.decode),
    **{field: (name, f"_{name}", _stored_time) for name, field in _TIMES},
    Field.TIMEOUT: ("timeout", "timeout", _timeout_of),
    **{field: (name, name, int) for name, field, _ in _NUMBERS},
    Field.DESCRIPTION: ("description", "_description", bytes.decode),
    Field.META: ("meta", "meta", _meta_of),
    Field.EXC_INFO: ("exc_info", "_exc_info", bytes.decode),
    Field.WORKER: ("worker", "worker_name", bytes.decode),
    Field.TRACE: ("trace context", "trace_context", bytes),
    Field.RETRY: ("retry", "retry", _retry_of),
    Field.RESULT: ("result", "_result", serialization.loads),
}
#: the fields every record has
_REQUIRED = (Field.FUNC, Field.STATUS)
#: what reading a field's bytes may raise (RecursionError: data nested too deep for a check
#: that recurses; job data is whatever someone wrote, so reading it must end in one error)
_UNREADABLE = (KeyError, ValueError, TypeError, UnicodeDecodeError, SerializationError, RecursionError)
#: attribute -> what a new Job holds while its field is absent (its class default): what a
#: refresh resets (meta to a new {}; a retry policy is kept)
_ABSENT: dict[str, Any] = {
    **{attribute: None for field, (_, attribute, _) in _READERS.items() if field not in _REQUIRED},
    **{name: default for name, _, default in _NUMBERS},
    "origin": DEFAULT_QUEUE,
    "timeout": DEFAULT_TIMEOUT,
    "_args": None,
    "_kwargs": None,
}
del _ABSENT["retry"], _ABSENT["meta"]


class Job:
    """One unit of work. Build with `Job.create`, `Queue.enqueue` or `task.delay`; read with `Job.fetch`."""

    #: timezone-aware UTC datetimes, or None
    created_at = _StoredTime()
    enqueued_at = _StoredTime()
    started_at = _StoredTime()
    ended_at = _StoredTime()

    # what a new Job holds until it is set (here rather than in __init__: a producer builds
    # thousands a second; the stored times default to None through _StoredTime)
    #: the id taskit made for it (it carries its queue's tag: see `retag`), if it made one
    _made_id: str | None = None
    #: which partition of a partitioned queue it goes to (taskit.partitions)
    _partition_key: Any = None
    func_name = ""
    _call: bytes | None = None
    _args: tuple[Any, ...] | None = None
    _kwargs: dict[str, Any] | None = None
    _status: JobStatus | None = None
    origin = DEFAULT_QUEUE
    timeout: int | None = DEFAULT_TIMEOUT
    ttl: int | None = None
    result_ttl: int = DEFAULT_RESULT_TTL
    failure_ttl: int = DEFAULT_FAILURE_TTL
    _description: str | None = None
    _result: Any = None
    _outcome_loaded = False
    _exc_info: str | None = None
    worker_name: str | None = None
    attempts = 0
    recoveries = 0
    retries = 0
    retry: Retry | None = None
    #: the enqueuer's trace context (taskit.tracing), as stored
    trace_context: bytes | None = None

    def __init__(self, id: str, connection: Client | None = None) -> None:
        self.id = id
        self._connection = connection
        self.meta: dict[str, Any] = {}

    # -- building ----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        func: Callable[..., Any] | str,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        connection: Client | None = None,
        id: str | None = None,
        origin: str = DEFAULT_QUEUE,
        ttl: int | dt.timedelta | None = UNSET,
        result_ttl: int | dt.timedelta | None = UNSET,
        failure_ttl: int | dt.timedelta | None = UNSET,
        timeout: int | dt.timedelta | None = UNSET,
        description: str | None = None,
        meta: dict[str, Any] | None = None,
        retry: Retry | None = UNSET,
        status: JobStatus = JobStatus.CREATED,
    ) -> Job:
        """Build a job without enqueuing it. Every argument is checked here, before Redis.

        Options not given come from the task (`@task(timeout=...)`), else DEFAULT_OPTIONS.
        """
        options = getattr(func, "options", None)  # a task's (taskit.task)
        if type(options) is not Options:
            job_options = getattr(func, "job_options", None)
            options = Options.of(job_options) if job_options else _DEFAULTS
        if not (ttl is result_ttl is failure_ttl is timeout is retry is UNSET):  # (else a task's own, checked once)
            options = options.given(ttl, result_ttl, failure_ttl, timeout, retry)
        if connection is not None:
            config.check_connection(connection)
        if origin is not DEFAULT_QUEUE:
            validate_id(origin, "queue name")
        if id is None:
            job = cls(new_id(queue_tag(origin)), connection)
            job._made_id = job.id
        else:
            job = cls(validate_id(id), connection)
        job.func_name = func_name_of(func)
        if args is None:
            args = ()
        elif type(args) is not tuple and (isinstance(args, (str, bytes, dict)) or not isinstance(args, Iterable)):
            raise ConfigurationError(f"args must be a list or tuple, not {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, dict) or (kwargs and not all(isinstance(k, str) for k in kwargs)):
            raise ConfigurationError("kwargs must be a dict with string keys")
        job._args, job._kwargs = tuple(args), dict(kwargs)
        job._call = serialization.dumps_call(job._args, job._kwargs) if job._args or job._kwargs else _NO_ARGUMENTS
        job.origin = origin
        job.ttl, job.result_ttl, job.failure_ttl, job.timeout, job.retry = options
        if description is not None and not isinstance(description, str):
            raise ConfigurationError(f"description must be a string, not {type(description).__name__}")
        job._description = description
        if meta is not None:
            if not isinstance(meta, dict):
                raise ConfigurationError(f"meta must be a dict, not {type(meta).__name__}")
            job.meta = dict(meta)
            serialization.dumps(job.meta, "meta")
        else:
            job.meta = {}
        if status is not JobStatus.CREATED:
            if status not in (JobStatus.CREATED, JobStatus.QUEUED, JobStatus.SCHEDULED):
                raise ConfigurationError(f"status must be JobStatus.CREATED, QUEUED or SCHEDULED, not {status!r}")
            status = JobStatus(status)
        job._status = status
        job.__dict__["_created_at"] = float(round(time.time() * 1000))  # as stored: to the millisecond
        return job

    @classmethod
    def detached(cls, func: Callable[..., Any], args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None) -> Job:
        """The job a `bind=True` task receives when it is called directly, outside a worker.

        It has an id, the task's options and `meta`, but is never written to Redis: its
        status stays `created`, and `save_meta()` keeps `meta` on the object. The call's
        arguments are kept as given, not serialized, so a direct call works as it would
        without taskit. It cannot be enqueued.
        """
        job = cls.create(func)
        job._call = None
        job._args, job._kwargs = tuple(args), dict(kwargs or {})
        queue = getattr(func, "queue", None)
        if isinstance(queue, str):
            job.origin = queue
        return job

    def to_fields(self, status: JobStatus, now: float) -> dict[str, bytes | str | int | float]:
        """The hash fields for a new job; defaults are left out (see the module docstring)."""
        if self._call is None or self.__dict__.get("_created_at") is None:
            raise InvalidOperationError(
                f"job {self.id} cannot be enqueued: build it with Job.create or Queue.prepare_data"
            )
        enqueued = _ms(now)
        fields: dict[str, bytes | str | int | float] = {
            Field.FUNC: self.func_name,
            Field.STATUS: status._value_,  # (`.value` is an Enum property: Python code per job)
            Field.ENQUEUED: enqueued,
        }
        if self.origin != DEFAULT_QUEUE:
            fields[Field.QUEUE] = self.origin
        if self._args or self._kwargs:
            fields[Field.ARGS] = self._call
        created = self.__dict__["_created_at"]
        created = _ms(created.timestamp()) if isinstance(created, dt.datetime) else int(created)
        if enqueued - created >= CREATED_APART_MS:
            fields[Field.CREATED] = created
        if self.timeout != DEFAULT_TIMEOUT:
            fields[Field.TIMEOUT] = -1 if self.timeout is None else self.timeout
        if self.ttl is not None:
            fields[Field.TTL] = self.ttl
        if self.result_ttl != DEFAULT_RESULT_TTL:
            fields[Field.RESULT_TTL] = self.result_ttl
        if self.failure_ttl != DEFAULT_FAILURE_TTL:
            fields[Field.FAILURE_TTL] = self.failure_ttl
        if self._description is not None:
            fields[Field.DESCRIPTION] = self._description
        if self.meta:
            fields[Field.META] = serialization.dumps(self.meta, "meta")
        if self.retry is not None:
            fields[Field.RETRY] = serialization.dumps(self.retry.to_data(), "retry")
        return fields

    @classmethod
    def from_fields(cls, job_id: str, fields: Fields, connection: Client | None = None) -> Job:
        """A job from its hash; a corrupt field raises `SerializationError` naming it."""
        job = cls(job_id, connection)
        job._load(fields)
        return job

    def _load(self, f: Fields) -> None:
        """Read a record's fields into this job; a corrupt one raises `SerializationError`
        naming it. A worker loads each job it claims, an idle one with cold caches, where each
        step counts: so only the fields the record has are read, and an absent one leaves its
        attribute as it is, at its class default in a new Job (`refresh` loads into a new one)."""
        for field in _REQUIRED:
            if field not in f:
                raise self._corrupt(f)
        slots = self.__dict__
        try:
            for field, raw in f.items():
                reader = _READERS.get(field)
                if reader is not None:
                    _, attribute, read = reader
                    slots[attribute] = read(raw)
        except _UNREADABLE:
            raise self._corrupt(f) from None
        if slots.get("_created_at") is None:
            slots["_created_at"] = slots.get("_enqueued_at")
        self._outcome_loaded = self._status in ENDED

    def _corrupt(self, f: Fields) -> SerializationError:
        """The error for a record `_load` cannot read: it names the first field, in the order
        of _READERS, that is missing or unreadable (read again here, off the common path)."""
        for field, (name, _, read) in _READERS.items():
            raw = f.get(field)
            if raw is None:
                if field in _REQUIRED:
                    return SerializationError(f"job {self.id} is corrupt: field {name!r} is missing")
                continue
            try:
                read(raw)
            except _UNREADABLE as exc:
                return SerializationError(f"job {self.id} is corrupt: field {name!r} is unreadable ({exc})")
        return SerializationError(f"job {self.id} is corrupt")  # (a read that failed once does again)

    # -- reading -----------------------------------------------------------------

    @classmethod
    def fetch(cls, id: str, connection: Client | None = None) -> Job:
        """Read one job; `NoSuchJobError` if it does not exist."""
        validate_id(id)
        fields = Store.of(config.get_connection(connection)).fetch([id])[0]
        if fields is None:
            raise NoSuchJobError(f"no job {id!r} (never enqueued, expired, or deleted)")
        return cls.from_fields(id, fields, connection)

    @classmethod
    def fetch_many(cls, job_ids: Iterable[str], connection: Client | None = None) -> list[Job | None]:
        """Read many jobs in one round trip; None where a job does not exist."""
        if isinstance(job_ids, (str, bytes)) or not isinstance(job_ids, Iterable):
            raise ConfigurationError(f"fetch_many takes a list of job ids, not {type(job_ids).__name__}")
        ids = [validate_id(i) for i in job_ids]
        if not ids:
            return []
        rows = Store.of(config.get_connection(connection)).fetch(ids)
        return [None if row is None else cls.from_fields(i, row, connection) for i, row in zip(ids, rows)]

    def refresh(self) -> None:
        """Reload every field from Redis (all or none: a corrupt record raises
        SerializationError and leaves this Job as it was)."""
        fields = self._store.fetch([self.id])[0]
        if fields is None:
            raise NoSuchJobError(f"no job {self.id!r} (expired or deleted)")
        loaded = Job(self.id, self._connection)
        loaded._load(fields)  # (into a new Job: a corrupt record raises, and this one stays as it was)
        self.__dict__.update(_ABSENT, **vars(loaded))  # (a field gone since is read as absent)

    def get_status(self, refresh: bool = True) -> JobStatus:
        """The status, read fresh from Redis unless `refresh=False`.

        The same read refreshes what changes with it (attempts, retries, recoveries,
        worker_name, started_at, ended_at), so a held Job never shows a new status beside
        stale counts; `refresh()` reloads everything.
        """
        if refresh:
            raw, *progress = self._store.fields(self.id, Field.STATUS, *(field for _, field in _PROGRESS))
            if raw is None and self._status == JobStatus.CREATED:
                return self._status  # built with Job.create and not enqueued yet: not in Redis
            if raw is None:
                raise NoSuchJobError(f"no job {self.id!r} (expired or deleted)")
            self._load_progress(raw, progress)
        assert self._status is not None
        return self._status

    def _load_progress(self, status: bytes, values: list[bytes | None]) -> None:
        name = "status"
        try:
            self._status = JobStatus(status.decode())
            for (name, field), raw in zip(_PROGRESS, values):
                if field in _TIME_FIELDS:
                    setattr(self, name, _stored_time(raw))
                elif field == Field.WORKER:
                    self.worker_name = None if raw is None else raw.decode()
                else:
                    setattr(self, name, 0 if raw is None else int(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"job {self.id} is corrupt: field {name!r} is unreadable ({exc})") from None

    @property
    def connection(self) -> Client:
        return config.get_connection(self._connection)

    @property
    def _generated(self) -> bool:
        """Whether its id is the one taskit made: one set by hand since is a custom id, even
        in the form of a made one (the enqueue reads a made id's tag off its prefix)."""
        return self.id is self._made_id

    @property
    def _store(self) -> Store:
        return Store.of(self.connection)

    @property
    def args(self) -> tuple[Any, ...]:
        if self._args is None:
            self._unpack_call()
        assert self._args is not None
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        if self._kwargs is None:
            self._unpack_call()
        assert self._kwargs is not None
        return self._kwargs

    def _unpack_call(self) -> None:
        if self._call is None:  # not stored: called without arguments
            self._args, self._kwargs = (), {}
            return
        try:
            self._args, self._kwargs = serialization.loads_call(self._call)
        except (SerializationError, ValueError, TypeError) as exc:
            raise SerializationError(f"job {self.id} is corrupt: field 'args' is unreadable ({exc})") from None

    @property
    def result(self) -> Any:
        """The return value (None until the job finishes).

        Like RQ's, it reads Redis when the job had not ended when this object was loaded,
        so `job = q.enqueue(...)` ... `job.result` works without `refresh()`.
        """
        self._load_outcome()
        return self._result

    @property
    def exc_info(self) -> str | None:
        """The traceback text of the last failure, read like `result`."""
        self._load_outcome()
        return self._exc_info

    def _load_outcome(self) -> None:
        if self._outcome_loaded or self._status == JobStatus.CREATED:
            return
        status, result, exc_info = self._store.fields(self.id, Field.STATUS, Field.RESULT, Field.EXC_INFO)
        if status is None:
            return  # expired or deleted: keep what was loaded
        self._result = serialization.loads(result)
        self._exc_info = exc_info.decode() if exc_info is not None else None
        self._outcome_loaded = status.decode() in ENDED

    def return_value(self, refresh: bool = False) -> Any:
        if refresh:
            self._outcome_loaded = False
        return self.result

    @property
    def description(self) -> str:
        if self._description is not None:
            return self._description
        try:
            parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        except SerializationError:
            parts = ["<unreadable arguments>"]
        return f"{self.func_name}({', '.join(parts)})"

    @property
    def status(self) -> JobStatus | None:
        """The status as last loaded; `get_status()` reads it fresh."""
        return self._status

    is_created = property(lambda self: self._status == JobStatus.CREATED)
    is_queued = property(lambda self: self.get_status() == JobStatus.QUEUED)
    is_scheduled = property(lambda self: self.get_status() == JobStatus.SCHEDULED)
    is_started = property(lambda self: self.get_status() == JobStatus.STARTED)
    is_finished = property(lambda self: self.get_status() == JobStatus.FINISHED)
    is_failed = property(lambda self: self.get_status() == JobStatus.FAILED)
    is_canceled = property(lambda self: self.get_status() == JobStatus.CANCELED)

    # -- changing ----------------------------------------------------------------

    def save_meta(self) -> None:
        """Write `job.meta` (and only meta); other processes see it at once.

        A job not enqueued yet (`Job.create`, or the job a `bind=True` task gets when
        called directly) is not in Redis: its meta is only checked, and is written when
        the job is enqueued.
        """
        if not isinstance(self.meta, dict):
            raise ConfigurationError(f"job.meta must be a dict, not {type(self.meta).__name__}")
        blob = serialization.dumps(self.meta, "meta")
        if self._status == JobStatus.CREATED:
            return
        if not self._store.update(self.id, {Field.META: blob}):
            raise NoSuchJobError(f"no job {self.id!r}: cannot save meta (expired or deleted)")

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the job, into the canceled registry (with `reason`, if given), never to be retried.

        A queued or scheduled job is taken off its queue at once. A job that has started is
        stopped by its worker, from any process, within about a second (docs/concurrency.md
        says how in each mode); until then its status stays "started", and `job.wait()`
        raises `JobCanceledError` once it has stopped. `InvalidOperationError` if it has ended.
        """
        if reason is not None and not isinstance(reason, str):
            raise ConfigurationError(f"reason must be a string, not {type(reason).__name__}")
        result = self._store.cancel(self.id, self.origin, time.time(), self.failure_ttl, reason or "")
        if result is None:
            raise NoSuchJobError(f"no job {self.id!r} to cancel")
        if result == "requested":
            self._status = JobStatus.STARTED
            return
        if result != "ok":
            if result in JobStatus._value2member_map_:
                self._status = JobStatus(result)
            raise InvalidOperationError(f"job {self.id} is {result}; only a job that has not ended can be canceled")
        self._status = JobStatus.CANCELED

    def delete(self) -> None:
        """Remove the job from its queue, every registry, and Redis."""
        self._store.delete(self.id, self.origin)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends; return its result or raise `JobFailedError`
        (`JobCanceledError`, a subclass, if it was canceled).

        Blocks on Redis (a per-job signal list), not on a sleep loop. `WaitTimeoutError`
        if `timeout` seconds pass first.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < math.inf
        ):
            raise ConfigurationError(f"wait timeout must be None or zero or more seconds, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        store = self._store
        signal: str | None = None
        while True:
            status = store.start_waiting(self.id)
            if status is None and signal == "finished":
                return None  # ended, and result_ttl=0 dropped the record
            if status is None and signal == "failed":
                raise JobFailedError(f"job {self.id} ({self.func_name}) failed; failure_ttl=0 dropped its record")
            if status is None and signal == "canceled":
                raise JobCanceledError(f"job {self.id} ({self.func_name}) was canceled; failure_ttl=0 dropped its record")
            if status is None:
                raise NoSuchJobError(f"no job {self.id!r} (expired, deleted, or result_ttl=0 dropped it)")
            if status in ENDED:
                self.refresh()
                if self._status == JobStatus.FINISHED:
                    return self._result
                reason = (self.exc_info or "").strip().splitlines()[-1:] or [str(self._status)]
                if self._status == JobStatus.CANCELED:
                    # "canceled while it ran: why", "canceled before it started", ...
                    why = reason[0].removeprefix("taskit.exceptions.JobCanceledError: ")
                    why = why.removeprefix("canceled") if why.startswith("canceled") else f": {why}"
                    raise JobCanceledError(f"job {self.id} ({self.func_name}) was canceled{why}", self.exc_info)
                raise JobFailedError(f"job {self.id} ({self.func_name}) {self._status}: {reason[0]}", self.exc_info)
            left = store.block_seconds if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(f"job {self.id} is still {status} after {timeout}s{self._no_worker_hint(status)}")
            signal = store.wait_signal(self.id, left)

    def _no_worker_hint(self, status: str) -> str:
        """Why a waiting job may never run, when no live worker listens on its queue (an
        extra round trip or two, paid only when a wait times out)."""
        if status not in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            return ""
        now = time.time()
        listening: set[str] = set()
        for _, deadline, registered, _ in self._store.worker_details():
            if deadline > now:
                if "queues" not in registered:
                    return ""  # a worker that does not say: it may listen here
                listening.update(filter(None, registered["queues"].split(",")))
        if self.origin in listening:
            return ""
        where = f"live workers listen on: {', '.join(sorted(listening))}" if listening else "no worker is alive"
        return f"; no worker is listening on queue {self.origin!r} ({where})"

    get = wait

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.func_name} {self._status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def func_name_of(func: object) -> str:
    """The name a job stores for `func`: a task's name, a function's dotted name, or a string."""
    if isinstance(func, str):
        if not func or not re.fullmatch(r"[A-Za-z_][\w.]*", func) or "." not in func:
            raise ConfigurationError(f"function name {func!r} must be a dotted 'module.function' path")
        return func
    name = getattr(func, "task_name", None)
    if isinstance(name, str):
        return name
    if not callable(func):
        raise ConfigurationError(f"expected a task, a function or a dotted name, not {type(func).__name__}")
    name = functions.qualified_name(func)
    functions.remember(name, func)
    return name
