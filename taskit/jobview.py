"""A job as people read it, for `taskit job` / `taskit failed` and the dashboard.

Job data is the user's (or an attacker's): every value is shown through a bounded repr
that never raises, so a 100 MiB argument prints a few hundred characters and a value whose
repr fails shows as such; the dashboard escapes the text it gets from here.
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
from .exceptions import SerializationError, TaskitError
from .job import Job, JobStatus
from .registry import ScheduledJobRegistry
from .storage.keys import FIELDS, Field
from .storage.store import Fields, Store

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
    """The jobs of `job_ids` that still exist (one round trip), each read, or the error that
    says why it cannot be (a corrupt record, a key of another type): a list must show its
    other jobs when one of them is corrupt."""
    if not job_ids:
        return []
    rows = Store.of(config.get_connection(connection)).fetch(job_ids, each=True)
    jobs: list[tuple[str, Job | TaskitError]] = []
    for job_id, fields in zip(job_ids, rows):
        if fields is None:
            continue  # gone since its id was listed
        if isinstance(fields, TaskitError):
            jobs.append((job_id, fields))
            continue
        try:
            jobs.append((job_id, Job.from_fields(job_id, fields, connection)))
        except SerializationError as exc:
            jobs.append((job_id, exc))
    return jobs


#: a field's short name -> the name shown (keys.FIELDS the other way round)
_NAMES = {short: name for name, short in FIELDS.items()}
#: fields that hold msgpack data
_PACKED = (Field.ARGS, Field.META, Field.RESULT, Field.RETRY, Field.TRACE)


def raw_fields(fields: Fields, limit: int = 300) -> dict[str, str]:
    """A job's record as it is stored, each field as bounded text (a traceback: its last
    line), for a job that cannot be read as a Job (`Job.from_fields` refused it): what can
    be read of it is still shown."""
    shown = {}
    order = {short: i for i, short in enumerate(_NAMES)}
    for short, value in sorted(fields.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
        if short == Field.EXC_INFO:  # its last line: the error (read from the end: the traceback may be long)
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
        "traceback": job.exc_info,
        "error": last_error_line(job.exc_info),
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
