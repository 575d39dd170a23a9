"""What to record for a job that ended (finish.lua takes it), and the log line that says so.

Building a record never raises: anything that goes wrong with one job fails that job only.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable

from .. import display
from ..exceptions import SerializationError, TaskNotAllowedError
from ..job import DEFAULT_FAILURE_TTL, Job
from ..storage.keys import Field
from ..storage.store import Fields, Record
from .execution import ColdShutdown, Outcome, RunningJob, describe_error, error_message

log = logging.getLogger("taskit.worker")


def record_for(running: RunningJob, outcome: Outcome, now: float) -> Record:
    """The record of a job that ran: finished, failed or retried (its retry policy says),
    canceled, or interrupted by a shutdown (back on its queue)."""
    job = running.job
    assert job is not None
    try:
        if outcome.error is None:
            if log.isEnabledFor(logging.INFO):
                log.info("%s: %s finished in %s (job %s)", running.queue, display.call(job), took(outcome.seconds), job.id)
            return Record(job.id, running.queue, running.token, "finished", outcome.packed_result or b"", job.result_ttl,
                          micros=int(outcome.seconds * 1_000_000), func=job.func_name)
        if running.stop == "shutdown" or isinstance(outcome.error, ColdShutdown):
            log.warning("%s: %s interrupted by shutdown; back on the queue (job %s)", running.queue, display.call(job), job.id)
            return Record(job.id, running.queue, running.token, "interrupted")
        if running.stop == "cancel":
            log.warning("%s: %s stopped: %s (job %s)", running.queue, display.call(job), display.clipped(outcome.summary, 200), job.id)
            return Record(job.id, running.queue, running.token, "canceled", _text(outcome.traceback), job.failure_ttl)
        # outcome.summary is safe even when the exception's str() raises
        return failure_record(
            job, running.token, running.queue, outcome.error, outcome.summary, outcome.traceback, now, outcome.seconds
        )
    except Exception as exc:  # noqa: BLE001 (recording one job must not fail the worker)
        log.error("%s: could not build the record of job %s (%s); failing it",
                  running.queue, running.job_id, display.clipped(describe_error(exc), 300))
        text = f"{outcome.traceback}\nand then, recording it: {describe_error(exc)}".strip()
        return Record(running.job_id, running.queue, running.token, "failed", _text(text), job.failure_ttl)


def failure_record(
    job: Job, token: int, queue: str, error: BaseException, summary: str, text: str, now: float,
    seconds: float | None = None,
) -> Record:
    """What to record for a failed attempt: a retry now, a retry later, or the failure for good,
    as the job's retry policy (or the task's own RetryLater) says. `seconds`: how long it ran."""
    from ..retry import delay_after_failure

    delay = delay_after_failure(job, error, now)
    payload = _text(text)
    summary = display.clipped(summary, 200)
    micros = None if seconds is None else int(seconds * 1_000_000)
    if delay is None:
        log.error(
            "%s: %s failed: %s (job %s, attempt %d); kept in the failed registry",
            queue, display.call(job), summary, job.id, job.attempts,
        )
        return Record(job.id, queue, token, "failed", payload, job.failure_ttl, micros=micros, func=job.func_name)
    log.warning(
        "%s: %s failed: %s; retry %d in %s (job %s)", queue, display.call(job), summary, job.retries + 1, took(delay), job.id
    )
    if delay <= 0:
        return Record(job.id, queue, token, "retry", payload, micros=micros, func=job.func_name)
    return Record(job.id, queue, token, "scheduled", payload, run_at=now + delay, micros=micros, func=job.func_name)


def canceled_record(running: RunningJob, why: str) -> Record:
    """The record of a job canceled before it ran (this time)."""
    log.warning("%s: job %s %s", running.queue, display.name(running.job_id), display.clipped(why, 300))
    text = f"taskit.exceptions.JobCanceledError: {why}"
    return Record(running.job_id, running.queue, running.token, "canceled", _text(text), _failure_ttl(running.fields))


def refused_record(running: RunningJob, exc: Exception) -> Record:
    """The failure record of a job that went wrong outside its task: its data could not be
    read, it names a function this worker may not run, or something broke while the worker
    loaded or looked it up. Failed, not retried, nothing run; this never raises: the job
    fails with the reason in its exc_info, and the worker goes on."""
    shown_id = display.name(running.job_id)
    if isinstance(exc, (SerializationError, TaskNotAllowedError)):
        text = f"taskit.exceptions.{describe_error(exc)}"
        log.error("%s: refused job %s: %s", running.queue, shown_id, display.clipped(error_message(exc), 300))
    else:
        try:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except Exception:  # noqa: BLE001 (say what failed, however little can be said)
            trace = describe_error(exc)
        text = f"the worker failed while handling this job (the error is taskit's, not the task's):\n{trace}"
        log.error("%s: job %s failed in the worker, outside its task: %s",
                  running.queue, shown_id, display.clipped(describe_error(exc), 300))
    return Record(running.job_id, running.queue, running.token, "failed", _text(text), _failure_ttl(running.fields),
                  refused=True)


def released(jobs: Iterable[RunningJob]) -> list[Record]:
    """Records handing claimed, unrun jobs back. Each goes back to its queue's front, so
    the last comes first: that keeps their order."""
    return [Record(r.job_id, r.queue, r.token, "released") for r in reversed(list(jobs))]


def took(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def int_field(fields: Fields, name: str, default: int) -> int:
    """A whole-number field of a job's record, or `default` if it is missing or unreadable."""
    try:
        return int(fields[name]) if name in fields else default
    except ValueError:
        return default


def _failure_ttl(fields: Fields) -> int:
    return int_field(fields, Field.FAILURE_TTL, DEFAULT_FAILURE_TTL)


def _text(text: str) -> bytes:
    """Text for a record (a message may hold lone surrogates: a non-UTF-8 id, say)."""
    return text.encode("utf-8", "backslashreplace")
