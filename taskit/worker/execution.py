"""Running one job's function: the job context, stopping it, and what came of it.

A job is stopped (past its timeout, canceled, or at shutdown) by an exception raised
inside it: `JobTimeoutError`, `JobCanceledError` or `ColdShutdown` in sync code, and
`asyncio.CancelledError` in a coroutine. Where it is raised from depends on where it runs:

* the worker's main thread (`--threads 1`): SIGALRM, both for the timeout and, sent by
  `signal.pthread_kill`, for a cancel, so that a blocking system call is interrupted too
  (`Alarm`);
* a thread of the pool, or a worker not in the main thread: an exception set on that
  thread (`ThreadInterrupts`), which lands at its next Python instruction;
* the event loop: `Task.cancel()` (executors.AsyncExecutor).

Code stuck in C never sees any of them: after STOP_GRACE the job is given up on (its
thread abandoned), or, under `taskit worker -c N`, its process is killed.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .. import serialization, tracing
from ..context import reset_current_job, set_current_job
from ..exceptions import JobCanceledError, JobTimeoutError, SerializationError
from ..job import Job
from ..storage.store import Fields
from ..task import Task

#: seconds a job that was told to stop has to end before it is given up on (or, under -c N,
#: its process is killed)
STOP_GRACE = 3.0


class ColdShutdown(BaseException):
    """Raised inside a running task to stop it for a shutdown; the job goes back on its queue."""


#: why a job is being stopped -> what is raised inside a sync job
STOP_EXCEPTIONS: dict[str, type[BaseException]] = {
    "timeout": JobTimeoutError,
    "cancel": JobCanceledError,
    "shutdown": ColdShutdown,
}


class RunningJob:
    """A claimed job, from its claim until its outcome is recorded.

    Written by the loop (claim, start), by the thread or task that runs it (`thread`,
    `task`) and by whoever stops it (`stop`, under the worker's lock).
    """

    # (defaults as class attributes: a claim makes one per job, and sets only its own five
    # here, where an idle worker's pickup runs cold)
    job: Job | None = None
    call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None  # what runs: fn, args, kwargs
    is_async = False
    executor: Any = None
    started_at: float | None = None  # monotonic, once it runs
    deadline: float | None = None  # monotonic time past which the monitor stops it
    stop: str | None = None  # "timeout", "cancel" or "shutdown" once told to stop
    stop_at = 0.0
    reason = ""  # the reason given with a cancel
    settled = False  # its outcome was reported (by its runner, or when given up on)
    thread: int | None = None  # the thread running it, while it runs in one
    interrupted = False  # an exception was set on that thread
    task: asyncio.Task[Any] | None = None
    seat: Any = None  # the pool thread running it
    slot = -1  # its entry on the supervisor's board

    def __init__(self, job_id: str, token: int, queue: str, fields: Fields, claimed_at: float) -> None:
        self.job_id, self.token, self.queue, self.fields = job_id, token, queue, fields
        self.claimed_at = claimed_at  # monotonic

    def stop_message(self) -> str:
        assert self.job is not None
        if self.stop == "timeout":
            return f"job exceeded its timeout of {self.job.timeout:g}s and was stopped"
        if self.stop == "cancel":
            return "canceled while it ran" + (f": {self.reason}" if self.reason else "")
        return "stopped for a shutdown"

    def __repr__(self) -> str:
        return f"<RunningJob {self.job_id} token={self.token} stop={self.stop}>"


class Outcome:
    """What running a job produced: a packed result, or an error and its traceback text."""

    # (defaults as class attributes: each job makes one as it starts, no __init__ to run)
    packed_result: bytes | None = None
    error: BaseException | None = None
    traceback = ""
    seconds = 0.0

    @property
    def summary(self) -> str:
        """'ValueError: message' for log lines; safe even if the exception's str() raises."""
        return describe_error(self.error) if self.error is not None else ""

    def failed(self, exc: BaseException, text: str | None = None) -> Outcome:
        self.error = exc
        self.traceback = text if text is not None else _format(exc)
        return self


def error_message(exc: BaseException) -> str:
    """str(exc), never raising: task code can define exceptions whose str() fails."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 (a broken __str__ must not take the worker down)
        return "<str() of the exception failed>"


def describe_error(exc: BaseException) -> str:
    """'Type: message', never raising."""
    message = error_message(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _format(exc: BaseException) -> str:
    """The traceback text of a job's exception, without the worker's own frame on top."""
    try:
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # noqa: BLE001 (a broken exception must still fail only its job)
        return f"{type(exc).__module__}.{describe_error(exc)}"


def as_stop_error(running: RunningJob, exc: BaseException) -> BaseException:
    """The error to record for a job that ended by raising `exc`: if the job had been told to
    stop, the stop, with its message (an exception set on a thread comes without one)."""
    if running.stop is None or running.stop == "shutdown":
        return exc
    wanted = STOP_EXCEPTIONS[running.stop]
    if isinstance(exc, wanted):
        if not any(exc.args):  # raised by the worker, as a class: no message
            exc.args = (running.stop_message(),)
        return exc
    if isinstance(exc, asyncio.CancelledError):
        error = wanted(running.stop_message())
        error.__cause__ = exc  # the traceback shows where the coroutine was
        return error
    return exc  # it raised something else while stopping: that is what happened


def stopped_outcome(running: RunningJob, exc: BaseException) -> Outcome:
    """The outcome of a job stopped before (or just after) its own code ran."""
    return Outcome().failed(as_stop_error(running, exc))


def given_up_outcome(running: RunningJob, how: str) -> Outcome:
    """The outcome of a job that did not stop within STOP_GRACE of being told to."""
    error = STOP_EXCEPTIONS[running.stop or "timeout"](f"{running.stop_message()}; it did not stop within {STOP_GRACE:g}s, {how}")
    text = f"{type(error).__module__}.{describe_error(error)}"
    frame = _frame_of(running.thread)
    if frame:
        text = f"it was stuck here:\n{frame}{text}"
    return Outcome().failed(error, text)


def _frame_of(thread_id: int | None) -> str:
    import sys

    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    return "".join(traceback.format_stack(frame)) if frame is not None else ""


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether a job's function (a task's own function) or a hook is an `async def`."""
    return inspect.iscoroutinefunction(fn.fn if isinstance(fn, Task) else fn)


#: how a job's target is called: (the function, whether the job is given to it first (a task
#: made with bind=True), whether it is a coroutine function)
Plan = tuple[Callable[..., Any], bool, bool]


def plan_of(target: Callable[..., Any]) -> Plan:
    """How to call `target` (worked out once per target: see `Worker._accept`)."""
    if isinstance(target, Task):
        return target.fn, target.bind, is_async(target)
    return target, False, is_async(target)


def _store_result(outcome: Outcome, result: Any, keep_result: bool) -> None:
    if keep_result:
        try:
            outcome.packed_result = serialization.dumps(result, "result")
        except SerializationError as exc:
            outcome.failed(exc, f"taskit.exceptions.SerializationError: the task returned a value it cannot store: {exc}")


def call_sync(running: RunningJob, alarm: Alarm | None = None) -> Outcome:
    """Run a sync job's function here, inside the job context (and, with taskit.tracing on,
    inside its span)."""
    if tracing.tracer is None:
        return _call_sync(running, alarm)
    assert running.job is not None
    with tracing.consumer_span(running.job) as ended:
        outcome = _call_sync(running, alarm)
        ended(outcome)
    return outcome


def _call_sync(running: RunningJob, alarm: Alarm | None) -> Outcome:
    job, call = running.job, running.call
    assert job is not None and call is not None
    outcome = Outcome()
    context_token = set_current_job(job)
    started = time.perf_counter()
    try:
        fn, args, kwargs = call
        if alarm is not None:
            alarm.start(job.timeout, running)
        try:
            result = fn(*args, **kwargs)
        finally:
            if alarm is not None:
                alarm.stop()
        outcome.seconds = time.perf_counter() - started
        _store_result(outcome, result, job.result_ttl != 0)
    except BaseException as exc:  # noqa: BLE001 (whatever the task raised is the job's failure)
        outcome.seconds = time.perf_counter() - started
        outcome.failed(as_stop_error(running, exc))
    finally:
        reset_current_job(context_token)
    return outcome


async def call_async(running: RunningJob) -> Outcome:
    """Await a coroutine job inside the job context (this task's own copy of it; and, with
    taskit.tracing on, inside its span)."""
    if tracing.tracer is None:
        return await _call_async(running)
    assert running.job is not None
    with tracing.consumer_span(running.job) as ended:
        outcome = await _call_async(running)
        ended(outcome)
    return outcome


async def _call_async(running: RunningJob) -> Outcome:
    job, call = running.job, running.call
    assert job is not None and call is not None
    outcome = Outcome()
    set_current_job(job)  # the task runs in a copy of the context: no reset needed
    started = time.perf_counter()
    try:
        fn, args, kwargs = call
        result = await fn(*args, **kwargs)
        outcome.seconds = time.perf_counter() - started
        _store_result(outcome, result, job.result_ttl != 0)
    except BaseException as exc:  # noqa: BLE001 (whatever the task raised, or its cancel, is the job's)
        outcome.seconds = time.perf_counter() - started
        outcome.failed(as_stop_error(running, exc))
    return outcome


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in another thread at its next Python instruction (None: take back one not
    yet raised). CPython only, as Dramatiq's time limits."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class ThreadInterrupts:
    """Stops jobs running in other threads by raising an exception in them.

    An exception aimed at a job must never land in the code that runs around jobs: `run`
    takes back, as the job ends, one that was set but had not been raised yet. One that lands
    just after the job's own code leaves `run` as an exception; the caller records the stop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def run(self, running: RunningJob, call: Callable[[], Outcome]) -> Outcome:
        """In the job's thread: `call()`, interruptible by `interrupt`."""
        me = threading.get_ident()
        with self._lock:
            if running.stop is not None:  # stopped before it started
                return stopped_outcome(running, STOP_EXCEPTIONS[running.stop]())
            running.thread = me
        try:
            return call()
        finally:
            with self._lock:
                running.thread = None
                if running.interrupted:
                    _set_async_exc(me, None)

    def interrupt(self, running: RunningJob) -> None:
        """From any thread: raise the exception for `running.stop` in the thread running it,
        if it runs now (one that has not started yet is stopped by `run`)."""
        with self._lock:
            if running.thread is not None and not running.interrupted and running.stop is not None:
                running.interrupted = True
                _set_async_exc(running.thread, STOP_EXCEPTIONS[running.stop])


class Alarm:
    """SIGALRM in the main thread: job timeouts, and interrupts sent by other threads
    (`interrupt`), raised only while job code runs.

    Whatever SIGALRM handler and interval timer were there before (a test runner's own
    timeout, say) are put back by `close()`.
    """

    def __init__(self) -> None:
        self.enabled = threading.current_thread() is threading.main_thread()
        self.in_job = False
        self.timeout: float | None = None
        self._running: RunningJob | None = None
        self._interrupt: tuple[RunningJob, BaseException] | None = None
        self._deadline = 0.0  # monotonic time the running job must end by
        self._fires_at: float | None = None  # when the armed timer goes off, if armed
        self._previous_handler: Any = None
        self._previous_timer = (0.0, 0.0)
        self._opened = time.monotonic()
        if self.enabled:
            self._previous_handler = signal.signal(signal.SIGALRM, self._fire)
            self._previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)  # paused until close()

    def _fire(self, signum: int, frame: Any) -> None:
        interrupt, self._interrupt = self._interrupt, None
        if interrupt is not None and self.in_job and interrupt[0] is self._running:
            left = signal.getitimer(signal.ITIMER_REAL)[0]  # the timer may have gone off with it
            self._fires_at = time.monotonic() + left if left else None
            raise interrupt[1]
        self._fires_at = None
        if not self.timeout:
            return
        left = self._deadline - time.monotonic()
        if left > 0.001:  # armed for an earlier job (or going off as this one starts): wait
            self._set(left)
            return
        if self.in_job:
            raise JobTimeoutError(f"job exceeded its timeout of {self.timeout:g}s and was stopped")

    def start(self, timeout: float | None, running: RunningJob | None = None) -> None:
        """A job starts: set its deadline. The timer is left running between jobs and only
        re-armed when it would go off too late, so a stream of short jobs costs no system
        calls. The deadline is set before the job counts as running, so a timer going off
        in between re-arms for it (see `_fire`) instead of being lost."""
        self.timeout = timeout if self.enabled else None
        if self.timeout:
            self._deadline = time.monotonic() + self.timeout
        self._running = running
        self.in_job = True
        if self.timeout and (self._fires_at is None or self._fires_at > self._deadline):
            self._set(self.timeout)

    def stop(self) -> None:
        """The job ended: a timer still armed now goes off harmlessly."""
        self.in_job = False
        self._running = None
        self._deadline = 0.0

    def interrupt(self, running: RunningJob, exc: BaseException) -> None:
        """From any thread: raise `exc` in the main thread if `running` still runs there. A
        real signal, so that a blocking system call (a sleep, a socket read) is cut short."""
        if self.enabled and self.in_job and self._running is running:
            self._interrupt = (running, exc)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM)

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
