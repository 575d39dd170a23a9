"""What to record for a job that ended (finish.lua takes it), and the log line that says so.

Building a record never raises: anything that goes wrong with one job fails that job only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..exceptions import TaskitError
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
                log.info("%s: %s finished in %s (job %s)", running.queue, describe_call(job), took(outcome.seconds), job.id)
            return Record(job.id, running.queue, running.token, "finished", outcome.packed_result or b"", job.result_ttl)
        if running.stop == "shutdown" or isinstance(outcome.error, ColdShutdown):
            log.warning("%s: %s interrupted by shutdown; back on the queue (job %s)", running.queue, job.func_name, job.id)
            return Record(job.id, running.queue, running.token, "interrupted")
        if running.stop == "cancel":
            log.warning("%s: %s stopped: %s (job %s)", running.queue, describe_call(job), outcome.summary, job.id)
            return Record(job.id, running.queue, running.token, "canceled", outcome.traceback.encode(), job.failure_ttl)
        # outcome.summary is safe even when the exception's str() raises
        return failure_record(job, running.token, running.queue, outcome.error, outcome.summary, outcome.traceback, now)
    except Exception as exc:  # noqa: BLE001 (recording one job must not fail the worker)
        log.error("%s: could not build the record of job %s (%s); failing it", running.queue, running.job_id, describe_error(exc))
        text = f"{outcome.traceback}\nand then, recording it: {describe_error(exc)}".strip()
        return Record(running.job_id, running.queue, running.token, "failed", text.encode(), job.failure_ttl)


def failure_record(job: Job, token: int, queue: str, error: BaseException, summary: str, text: str, now: float) -> Record:
    """What to record for a failed attempt: a retry now, a retry later, or the failure for good,
    as the job's retry policy (or the task's own RetryLater) says."""
    from ..retry import delay_after_failure

    delay = delay_after_failure(job, error, now)
    payload = text.encode()
    if delay is None:
        log.error(
            "%s: %s failed: %s (job %s, attempt %d); kept in the failed registry",
            queue, describe_call(job), summary, job.id, job.attempts,
        )
        return Record(job.id, queue, token, "failed", payload, job.failure_ttl)
    log.warning("%s: %s failed: %s; retry %d in %s (job %s)", queue, describe_call(job), summary, job.retries + 1, took(delay), job.id)
    if delay <= 0:
        return Record(job.id, queue, token, "retry", payload)
    return Record(job.id, queue, token, "scheduled", payload, run_at=now + delay)


def canceled_record(running: RunningJob, why: str) -> Record:
    """The record of a job canceled before it ran (this time)."""
    log.warning("%s: job %s %s", running.queue, running.job_id, why)
    text = f"taskit.exceptions.JobCanceledError: {why}"
    return Record(running.job_id, running.queue, running.token, "canceled", text.encode(), _failure_ttl(running.fields))


def refused_record(running: RunningJob, exc: Exception) -> Record:
    """The record of a job whose data cannot be read, or whose function may not (or cannot) be
    found: failed, not retried, nothing run."""
    if isinstance(exc, TaskitError):
        text, reason = f"taskit.exceptions.{describe_error(exc)}", error_message(exc)
    else:  # something in the task module raised while its name was looked up
        reason = text = f"cannot load or find the job's function: {describe_error(exc)}"
    log.error("%s: refused job %s: %s", running.queue, running.job_id, reason)
    return Record(running.job_id, running.queue, running.token, "failed", text.encode(), _failure_ttl(running.fields))


def released(jobs: Iterable[RunningJob]) -> list[Record]:
    """Records handing claimed, unrun jobs back. Each goes back to its queue's front, so
    the last comes first: that keeps their order."""
    return [Record(r.job_id, r.queue, r.token, "released") for r in reversed(list(jobs))]


def describe_call(job: Job, limit: int = 80) -> str:
    """The job's call for a log line; never raising (a log line must not fail a job)."""
    try:
        text = job.description
    except Exception:  # noqa: BLE001 (an argument whose repr fails)
        text = f"{job.func_name}(...)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def took(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _failure_ttl(fields: Fields) -> int:
    try:
        return int(fields[Field.FAILURE_TTL]) if Field.FAILURE_TTL in fields else DEFAULT_FAILURE_TTL
    except ValueError:
        return DEFAULT_FAILURE_TTL
