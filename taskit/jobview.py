"""A job as people read it, for `taskit job` / `taskit failed` and the dashboard.

Job data is the user's (or an attacker's): every value is shown through a bounded repr
that never raises, so a value whose repr fails shows as such; the dashboard escapes the
text it gets from here. A value longer than SHOWN_BYTES is not even read from Redis
(Store.peek): it shows as its size, '<50.0 MB, not shown>', so a page that shows a job with
a 50 MB argument loads a few KB.
"""

from __future__ import annotations

import codecs
import datetime as dt
import math
import reprlib
import time
from collections.abc import Sequence
from typing import Any

from . import config, display, serialization
from .connections import Client
from .exceptions import NoSuchJobError, SerializationError, TaskitError
from .job import Job, JobStatus
from .registry import ScheduledJobRegistry
from .storage.keys import FIELDS, Field
from .storage.store import PACKED_ENTRY, Fields, Peek, Store

#: longest value read to show a job (a page shows about 1,000 characters of one anyway)
SHOWN_BYTES = 65536

_repr = reprlib.Repr()
_repr.maxstring = 300
_repr.maxother = 300
_repr.maxlong = 100
_repr.maxlevel = 6
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_repr, _name, 20)


def short_repr(value: Any, limit: int = 1000) -> str:
    """repr(value), cut to about `limit` characters at every level; never raises."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # noqa: BLE001 (a user type's broken __repr__ must not break the view)
        text = f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_jobs(job_ids: Sequence[str], connection: Client | None = None) -> list[tuple[str, Job | TaskitError]]:
    """The jobs of `job_ids` that still exist (one round trip), each read to be shown (values
    over SHOWN_BYTES are not read), or the error that says why it cannot be (a corrupt
    record, a key of another type): a list must show its other jobs when one is corrupt."""
    rows = Store.of(config.get_connection(connection)).peek(job_ids, SHOWN_BYTES)
    jobs: list[tuple[str, Job | TaskitError]] = []
    for job_id, row in zip(job_ids, rows):
        if row is None:
            continue  # gone since its id was listed
        if isinstance(row, TaskitError):
            jobs.append((job_id, row))
            continue
        try:
            jobs.append((job_id, _shown_job(job_id, row, connection)))
        except SerializationError as exc:
            jobs.append((job_id, exc))
    return jobs


def read_job(job_id: str, connection: Client | None = None) -> tuple[Job | SerializationError, dict[str, str]]:
    """One job read to be shown, as `read_jobs` reads it, and its record field by field as
    `raw_fields` shows it (for a job that cannot be read as a Job: why is the first item).
    NoSuchJobError when there is none; StorageError when its key holds another type."""
    (row,) = Store.of(config.get_connection(connection)).peek([job_id], SHOWN_BYTES)
    if row is None:
        raise NoSuchJobError(f"no job {job_id!r} (never enqueued, expired, or deleted)")
    if isinstance(row, TaskitError):
        raise row
    try:
        job: Job | SerializationError = _shown_job(job_id, row, connection)
    except SerializationError as exc:
        job = exc
    return job, raw_fields(*row)


class _NotShown:
    """A value too long to be read for showing: it shows as its size."""

    def __init__(self, length: int) -> None:
        self.text = f"<{_size(length)}, not shown>"

    def __repr__(self) -> str:
        return self.text


def _size(length: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if length >= size:
            return f"{length / size:.1f} {unit}"
    return f"{length} bytes"


def _shown_job(job_id: str, peeked: Peek, connection: Client | None) -> Job:
    """A Job from what Store.peek read: each value that was too long to read stands in as
    its size (text fields as that text, the arguments, meta, result and retry policy as a
    value whose repr is that text), so the job reads as itself, minus those values."""
    fields, lengths = peeked
    if PACKED_ENTRY in lengths:
        raise SerializationError(f"job {job_id} has a packed entry of {_size(lengths[PACKED_ENTRY])} that is not one "
                                 "taskit wrote (not msgpack), too long to read here")
    fields = dict(fields)
    for short in (Field.FUNC, Field.DESCRIPTION, Field.EXC_INFO, Field.WORKER):
        if short in lengths:
            fields[short] = repr(_NotShown(lengths[short])).encode()
    job = Job.from_fields(job_id, fields, connection)
    if Field.ARGS in lengths:
        job._args, job._kwargs = (_NotShown(lengths[Field.ARGS]),), {}
    if Field.META in lengths:
        job.meta = {"(meta)": _NotShown(lengths[Field.META])}
    if Field.RESULT in lengths:
        job._result = _NotShown(lengths[Field.RESULT])
    if Field.RETRY in lengths:
        job.retry = _NotShown(lengths[Field.RETRY])  # type: ignore[assignment]  # (shown only: its repr)
    return job


#: a field's short name -> the name shown (keys.FIELDS the other way round)
_NAMES = {short: name for name, short in FIELDS.items()}
#: fields that hold msgpack data
_PACKED = (Field.ARGS, Field.META, Field.RESULT, Field.RETRY, Field.TRACE)


def raw_fields(fields: Fields, lengths: dict[str, int] | None = None, limit: int = 300) -> dict[str, str]:
    """A job's record as it is stored, each field as bounded text (a traceback: its last
    line; a field that was not read: `lengths`, its size), for a job that cannot be read as a
    Job (`Job.from_fields` refused it): what can be read of it is still shown."""
    fields = {**fields, **{name: b"" for name in lengths or {}}}
    shown = {}
    order = {short: i for i, short in enumerate(_NAMES)}
    for short, value in sorted(fields.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
        if short in (lengths or {}):
            text = repr(_NotShown((lengths or {})[short]))
        elif short == Field.EXC_INFO:  # its last line: the error (read from the end: the traceback may be long)
            text = display.clipped(last_error_line(value[-4 * limit:].decode(errors="replace")), limit)
        elif short in _PACKED:
            try:
                text = short_repr(serialization.loads(value), limit)
            except Exception as exc:  # noqa: BLE001 (job data: whatever it is, it shows as text)
                text = f"<unreadable: {len(value)} bytes ({type(exc).__name__})>"
        else:
            try:  # (a character cut at the limit is not an error: final=False)
                text = codecs.getincrementaldecoder("utf-8")().decode(value[:limit]) + ("..." if len(value) > limit else "")
            except UnicodeDecodeError:  # (not text: its bytes are shown)
                text = repr(value[:limit]) + ("..." if len(value) > limit else "")
        shown[_NAMES.get(short, short)] = text
    return shown


def last_error_line(exc_info: str | None) -> str:
    """The last line of a traceback: the exception and its message."""
    lines = [line for line in (exc_info or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def ago(seconds: float | None) -> str:
    """A duration, short: '0.4s', '12s', '3m 05s', '2h 10m', '4d 3h'; '-' for none, and for
    inf or nan, which a lease or enqueue time someone set in Redis can give."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = int(seconds)
    for size, unit, sub_size, sub_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s")):
        if total >= size:
            return f"{total // size}{unit} {total % size // sub_size:02d}{sub_unit}"
    return f"{total}s"


def when(moment: dt.datetime | None, now: float | None = None) -> str:
    """'2024-05-01 12:00:03 UTC (3m 05s ago)', or '-'."""
    if moment is None:
        return "-"
    now = time.time() if now is None else now
    delta = now - moment.timestamp()
    relative = f"{ago(delta)} ago" if delta >= 0 else f"in {ago(-delta)}"
    return f"{moment.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC ({relative})"


def details(job: Job, now: float | None = None) -> dict[str, Any]:
    """Everything about a job as text, in the order it is shown (JSON-able)."""
    now = time.time() if now is None else now
    try:
        args: list[str] | str = [short_repr(a) for a in job.args]
        kwargs: dict[str, str] | str = {k: short_repr(v) for k, v in job.kwargs.items()}
    except TaskitError as exc:
        args = kwargs = f"<unreadable: {exc}>"
    status = job.get_status(refresh=False)
    next_run = None
    if status == JobStatus.SCHEDULED:
        try:
            next_run = ScheduledJobRegistry(job.origin, job._connection).get_scheduled_time(job.id)
        except (TaskitError, OverflowError, OSError, ValueError):  # (a score no datetime holds)
            next_run = None
    return {
        "id": job.id,
        "status": str(status),
        "task": job.func_name,
        "queue": job.origin,
        "description": call_text(job),
        "args": args,
        "kwargs": kwargs,
        "meta": {str(k): short_repr(v) for k, v in job.meta.items()},
        "result": short_repr(job.result) if status == JobStatus.FINISHED else None,
        "traceback": job._exc_info,  # (as read: job.exc_info would read it again, whole, if not ended)
        "error": last_error_line(job._exc_info),
        "created_at": when(job.created_at, now),
        "enqueued_at": when(job.enqueued_at, now),
        "started_at": when(job.started_at, now),
        "ended_at": when(job.ended_at, now),
        "next_run": when(next_run, now) if next_run else None,
        "worker": job.worker_name,
        "attempts": job.attempts,
        "retries": job.retries,
        "recoveries": job.recoveries,
        "retry_policy": short_repr(job.retry) if job.retry is not None else None,
        "timeout": job.timeout,
        "ttl": job.ttl,
        "result_ttl": job.result_ttl,
        "failure_ttl": job.failure_ttl,
    }


def call_text(job: Job, limit: int = 200) -> str:
    """The job's description, or its call with bounded reprs: 'mod.add(1, 2)'."""
    if job._description is not None:
        text = job._description
    else:
        try:
            parts = [short_repr(a, 60) for a in job.args] + [f"{k}={short_repr(v, 60)}" for k, v in job.kwargs.items()]
        except TaskitError:
            parts = ["<unreadable arguments>"]
        text = f"{job.func_name}({', '.join(parts)})"
    return text if len(text) <= limit else text[: limit - 3] + "..."
