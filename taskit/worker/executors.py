"""Where jobs run. The worker's loop claims and records; an executor only runs what it is given.

* `InlineExecutor`: one sync job at a time in the loop's own thread (`--threads 1`, the
  default): no thread hand-off, SIGALRM timeouts.
* `ThreadExecutor`: sync jobs on N threads of its own (`--threads N`). A thread whose job
  does not stop when told is abandoned and replaced, which a concurrent.futures pool cannot do.
* `AsyncExecutor`: coroutine jobs on one event loop, in a thread of its own (`--async-tasks N`).

Each reports every job it was given exactly once, through `report(running, outcome)`:
`settle` decides between the job's own end and the worker giving up on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

from .execution import (
    STOP_EXCEPTIONS,
    Alarm,
    Outcome,
    RunningJob,
    ThreadInterrupts,
    call_async,
    call_sync,
    stopped_outcome,
)

log = logging.getLogger("taskit.worker")

Report = Callable[[RunningJob, Outcome], None]
#: the event loop has not answered for this long (seconds): something blocks it
LOOP_STALL = 2.0


class Executor:
    """Runs jobs; the loop keeps count of its free slots (`busy`, `capacity`)."""

    #: it stops jobs at their timeout itself (else the monitor does)
    times_out = False

    def __init__(self, capacity: int, report: Report) -> None:
        self.capacity = capacity
        self.busy = 0  # jobs given and not yet reported back (the loop's count)
        self._report = report
        self._lock = threading.Lock()
        #: the average run time of its jobs; the claim window adapts to it
        self.avg_seconds = 0.0

    @property
    def free(self) -> int:
        return self.capacity - self.busy

    def start(self) -> None:
        """Get ready to run jobs."""

    def submit(self, running: RunningJob) -> None:
        raise NotImplementedError

    def stop_job(self, running: RunningJob) -> None:
        """Interrupt a running job for the reason in `running.stop` (at most once per job)."""
        raise NotImplementedError

    def give_up(self, running: RunningJob, outcome: Outcome) -> bool:
        """Report `outcome` for a job that ignored its stop, and stop waiting for it; False if
        this executor cannot (the job runs in the loop's own thread) or it has just ended."""
        return False

    def close(self, timeout: float) -> None:
        """Stop, after the jobs given have been reported (waiting up to `timeout` seconds)."""

    def settle(self, running: RunningJob) -> bool:
        """True exactly once per job: for whoever reports it first."""
        with self._lock:
            if running.settled:
                return False
            running.settled = True
            return True


class InlineExecutor(Executor):
    """One sync job at a time, run by `submit` itself, in the loop's thread."""

    def __init__(self, report: Report, alarm: Alarm) -> None:
        super().__init__(1, report)
        self.alarm = alarm
        # not in the main thread, SIGALRM is not ours: stop the job as a pool thread's
        self._interrupts = None if alarm.enabled else ThreadInterrupts()
        self.times_out = alarm.enabled

    def submit(self, running: RunningJob) -> None:
        if self._interrupts is None:
            outcome = call_sync(running, self.alarm)
        else:
            try:
                outcome = self._interrupts.run(running, functools.partial(call_sync, running))
            except BaseException as exc:  # noqa: BLE001 (a stop that landed just after the job)
                outcome = stopped_outcome(running, exc)
        running.settled = True  # (nothing else reports a job of the loop's own thread)
        self._report(running, outcome)

    def stop_job(self, running: RunningJob) -> None:
        assert running.stop is not None
        if self._interrupts is None:
            self.alarm.interrupt(running, STOP_EXCEPTIONS[running.stop](running.stop_message()))
        else:
            self._interrupts.interrupt(running)


class _Seat:
    """One thread of a ThreadExecutor."""

    def __init__(self) -> None:
        self.abandoned = False
        self.thread: threading.Thread | None = None


class ThreadExecutor(Executor):
    """N threads, each running one sync job at a time, in a fresh copy of the context."""

    def __init__(self, size: int, report: Report, name: str) -> None:
        super().__init__(size, report)
        self.name = name
        self._inbox: Any = None
        self._interrupts = ThreadInterrupts()
        self._seats: list[_Seat] = []
        self._started = 0

    def start(self) -> None:
        if self._inbox is None:
            self._inbox = queue.SimpleQueue()
            for _ in range(self.capacity):
                self._add_seat()

    def _add_seat(self) -> None:
        seat = _Seat()
        self._started += 1
        seat.thread = threading.Thread(target=self._serve, args=(seat,), name=f"taskit-{self.name}-{self._started}", daemon=True)
        self._seats.append(seat)
        seat.thread.start()

    def submit(self, running: RunningJob) -> None:
        self._inbox.put(running)

    def _serve(self, seat: _Seat) -> None:
        while True:
            running = self._inbox.get()
            if running is None:
                return
            running.seat = seat
            try:
                outcome = self._interrupts.run(running, functools.partial(contextvars.copy_context().run, call_sync, running))
            except BaseException as exc:  # noqa: BLE001 (a stop that landed just after the job's own code)
                outcome = stopped_outcome(running, exc)
            if not self.settle(running):
                return  # given up on: its outcome was reported, and a new thread took this one's place
            self._report(running, outcome)

    def stop_job(self, running: RunningJob) -> None:
        self._interrupts.interrupt(running)

    def give_up(self, running: RunningJob, outcome: Outcome) -> bool:
        seat = running.seat
        if seat is None or not self.settle(running):
            return False
        with self._lock:
            seat.abandoned = True
            self._seats.remove(seat)
            self._add_seat()
        self._report(running, outcome)
        return True

    def close(self, timeout: float) -> None:
        if self._inbox is None:
            return
        with self._lock:
            seats = list(self._seats)
        for _ in seats:
            self._inbox.put(None)
        deadline = time.monotonic() + timeout
        for seat in seats:
            if seat.thread is not None:
                seat.thread.join(max(0.0, deadline - time.monotonic()))


class AsyncExecutor(Executor):
    """Coroutine jobs as tasks of one event loop, which runs in a thread of its own.

    The loop also runs the async worker hooks (taskit.worker.hooks), so a connection pool they make
    belongs to the loop the jobs run on. The monitor pings it (`watch`): a loop that does not
    answer for LOOP_STALL seconds is blocked by sync code in a coroutine, and the stack of
    that code is logged.
    """

    def __init__(self, size: int, report: Report, name: str) -> None:
        super().__init__(size, report)
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._incoming: list[RunningJob] = []  # given, not begun yet
        self._pinged_at: float | None = None  # monotonic time of a ping not yet answered
        self._stall_logged = False

    def start(self) -> None:
        if self.loop is not None:
            return
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name=f"taskit-{self.name}-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self.loop = loop

    def submit(self, running: RunningJob) -> None:
        with self._lock:
            self._incoming.append(running)
            first = len(self._incoming) == 1
        if first:  # one wake-up of the loop for all the jobs given meanwhile
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._begin_all)

    def _begin_all(self) -> None:
        with self._lock:
            given, self._incoming = self._incoming, []
        for running in given:
            self._begin(running)

    def _begin(self, running: RunningJob) -> None:
        assert self.loop is not None
        if running.stop is not None:  # stopped before it started
            self._finish(running, stopped_outcome(running, asyncio.CancelledError()))
            return
        running.task = task = self.loop.create_task(self._run(running))
        task.add_done_callback(lambda _: self._ended(running))

    async def _run(self, running: RunningJob) -> None:
        self._finish(running, await call_async(running))
        # (canceled before its first step, the task never runs this: the callback reports it)

    def _ended(self, running: RunningJob) -> None:
        if not running.settled:  # canceled before its first step: the coroutine never ran
            self._finish(running, stopped_outcome(running, asyncio.CancelledError()))

    def _finish(self, running: RunningJob, outcome: Outcome) -> None:
        if self.settle(running):
            self._report(running, outcome)

    def stop_job(self, running: RunningJob) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel, running)

    def _cancel(self, running: RunningJob) -> None:
        # a job not begun yet is stopped by _begin, which sees running.stop
        if running.task is not None and not running.task.done():
            running.task.cancel()

    def give_up(self, running: RunningJob, outcome: Outcome) -> bool:
        if not self.settle(running):
            return False
        self._report(running, outcome)  # the task, if it ever ends, reports nothing more
        return True

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float | None = None) -> Any:
        """Run a coroutine on the loop from another thread and return its result."""
        self.start()
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def watch(self) -> None:
        """Called by the monitor every tick: ping the loop, and log the stack of whatever
        keeps it from answering."""
        if self.loop is None:
            return
        now = time.monotonic()
        if self._pinged_at is None:
            self._pinged_at = now
            self.loop.call_soon_threadsafe(self._pong)
        elif now - self._pinged_at > LOOP_STALL and not self._stall_logged:
            self._stall_logged = True
            frame = sys._current_frames().get((self._thread.ident if self._thread else None) or 0)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(unknown)\n"
            log.warning(
                "the event loop has not answered for %.1fs: an async task is blocking it with sync code "
                "(call blocking code with asyncio.to_thread, or make it a sync task); every async job waits. "
                "It is here:\n%s", now - self._pinged_at, stack.rstrip(),
            )

    def _pong(self) -> None:
        if self._stall_logged:
            log.warning("the event loop answers again after %.1fs", time.monotonic() - (self._pinged_at or 0.0))
        self._pinged_at, self._stall_logged = None, False

    def close(self, timeout: float) -> None:
        loop = self.loop
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        if not loop.is_running():
            loop.close()
