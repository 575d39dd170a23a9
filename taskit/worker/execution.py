"""Running one job's function: the job context, the timeout, and what came of it.

Timeouts use SIGALRM, so they are enforced when the worker runs in the main thread (as
`taskit worker` does); a task stuck inside C code that never returns to Python is
stopped by the supervising parent of `taskit worker -c N`, which kills the child.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import serialization
from ..context import reset_current_job, set_current_job
from ..exceptions import JobTimeoutError, SerializationError
from ..job import Job
from ..task import Task


class ColdShutdown(BaseException):
    """Raised inside a running task by a second stop signal; the job goes back on its queue."""


@dataclass
class Outcome:
    """What running a job produced: a packed result, or an error and its traceback text."""

    packed_result: bytes | None = None
    error: BaseException | None = None
    traceback: str = ""
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        """'ValueError: message' for log lines; safe even if the exception's str() raises."""
        return describe_error(self.error) if self.error is not None else ""


def describe_error(exc: BaseException) -> str:
    """'Type: message', never raising: task code can define exceptions whose str() fails."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 (a broken __str__ must not take the worker down)
        message = "<str() of the exception failed>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Alarm:
    """SIGALRM-based job timeouts; raises `JobTimeoutError` only while job code runs.

    Whatever SIGALRM handler and interval timer were there before (a test runner's own
    timeout, say) are put back by `close()`.
    """

    def __init__(self) -> None:
        self.enabled = threading.current_thread() is threading.main_thread()
        self.in_job = False
        self.timeout: float | None = None
        self._deadline = 0.0  # monotonic time the running job must end by
        self._fires_at: float | None = None  # when the armed timer goes off, if armed
        self._previous_handler: Any = None
        self._previous_timer = (0.0, 0.0)
        self._opened = time.monotonic()
        if self.enabled:
            self._previous_handler = signal.signal(signal.SIGALRM, self._fire)
            self._previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)  # paused until close()

    def _fire(self, signum: int, frame: Any) -> None:
        self._fires_at = None
        if not self.timeout:
            return
        left = self._deadline - time.monotonic()
        if left > 0.001:  # armed for an earlier job (or going off as this one starts): wait
            self._set(left)
            return
        if self.in_job:
            raise JobTimeoutError(f"job exceeded its timeout of {self.timeout:g}s and was stopped")

    def start(self, timeout: float | None) -> None:
        """A job starts: set its deadline. The timer is left running between jobs and only
        re-armed when it would go off too late, so a stream of short jobs costs no system
        calls. The deadline is set before the job counts as running, so a timer going off
        in between re-arms for it (see `_fire`) instead of being lost."""
        self.timeout = timeout if self.enabled else None
        if self.timeout:
            self._deadline = time.monotonic() + self.timeout
        self.in_job = True
        if self.timeout and (self._fires_at is None or self._fires_at > self._deadline):
            self._set(self.timeout)

    def stop(self) -> None:
        """The job ended: a timer still armed now goes off harmlessly."""
        self.in_job = False
        self._deadline = 0.0

    def _set(self, seconds: float) -> None:
        self._fires_at = time.monotonic() + seconds
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def close(self) -> None:
        if not self.enabled:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous_handler if self._previous_handler is not None else signal.SIG_DFL)
        delay, interval = self._previous_timer
        if delay:  # the timer someone else had set, minus the time spent here
            signal.setitimer(signal.ITIMER_REAL, max(0.001, delay - (time.monotonic() - self._opened)), interval)


def call_job(job: Job, target: Callable[..., Any], alarm: Alarm, keep_result: bool) -> Outcome:
    """Run `target` with the job's arguments inside the job context."""
    outcome = Outcome()
    context_token = set_current_job(job)
    started = time.perf_counter()
    try:
        args, kwargs = job.args, job.kwargs
        fn = target
        if isinstance(target, Task):
            fn = target.fn
            if target.bind:
                args = (job, *args)
        alarm.start(job.timeout)
        try:
            result = fn(*args, **kwargs)
        finally:
            alarm.stop()
        outcome.seconds = time.perf_counter() - started
        if keep_result:
            try:
                outcome.packed_result = serialization.dumps(result, "result")
            except SerializationError as exc:
                outcome.error = exc
                outcome.traceback = f"taskit.exceptions.SerializationError: the task returned a value it cannot store: {exc}"
    except ColdShutdown:
        outcome.interrupted = True
    except BaseException as exc:  # noqa: BLE001 (whatever the task raised is the job's failure)
        outcome.seconds = time.perf_counter() - started
        outcome.error = exc
        outcome.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None))
    finally:
        reset_current_job(context_token)
    return outcome
