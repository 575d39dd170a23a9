"""`taskit worker -c N`: N worker processes under one parent.

The parent forks the workers after the task modules are imported, then watches them:

* a worker that dies is replaced at once, and the jobs it held go back on their queues
  at once instead of after its lease; only a worker that dies before its loop started
  (it could not connect, say) is replaced with backoff (1, 2, 4 ... 30 s), so that a
  pool whose workers are being killed keeps running jobs, and one that cannot start
  does not spin;
* a job that runs past its timeout and does not stop (stuck in C code, where SIGALRM
  cannot reach it) has its worker process killed and is failed with JobTimeoutError;
* SIGTERM / SIGINT to the parent reaches every worker: the first finishes current jobs,
  a second stops at once. Workers stop on their own if the parent disappears.

Each worker writes the job it is running into a small shared-memory board, so the
parent knows which job to fail when it kills a worker, without asking Redis; the board
also says which workers have started their loop, and which signal the parent got.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

from ..exceptions import JobTimeoutError, TaskitError
from ..job import DEFAULT_FAILURE_TTL, Job
from ..storage.store import Store
from .worker import Worker, failure_record

log = logging.getLogger("taskit.worker")

#: seconds past a job's timeout before its worker process is killed (SIGALRM gets the first chance)
HARD_KILL_GRACE = 3.0
_SLOT = struct.Struct("dq128s128s")  # deadline, token, queue, job id (names are at most 128 characters)


class JobBoard:
    """Shared memory where worker i says which job it runs and when it must be done by, and
    whether its loop has started; and where the parent says which stop signal it got."""

    def __init__(self, size: int) -> None:
        self._flags = _SLOT.size * size  # then one byte per worker: its loop started
        self._signal = self._flags + size  # then the stop signal the parent got (0: none)
        self._map = mmap.mmap(-1, self._signal + 1)

    def spawning(self, index: int) -> None:
        """A new worker process takes slot i: nothing started yet."""
        self.ended(index)
        self._map[self._flags + index] = 0

    def ready(self, index: int) -> None:
        self._map[self._flags + index] = 1

    def was_ready(self, index: int) -> bool:
        return self._map[self._flags + index] == 1

    def got_signal(self, signum: int) -> None:
        self._map[self._signal] = signum

    def stop_signal(self) -> str | None:
        """The name of the stop signal the parent got, if it got one."""
        signum = self._map[self._signal]
        return signal.Signals(signum).name if signum else None

    def started(self, index: int, job_id: str, queue: str, token: int, timeout: float | None) -> None:
        deadline = time.time() + timeout + HARD_KILL_GRACE if timeout else 0.0
        _SLOT.pack_into(self._map, index * _SLOT.size, deadline, token, queue.encode(), job_id.encode())

    def ended(self, index: int) -> None:
        _SLOT.pack_into(self._map, index * _SLOT.size, 0.0, 0, b"", b"")

    def overdue(self, index: int, now: float) -> tuple[str, str, int] | None:
        """(job id, queue, token) if worker i runs a job past its deadline."""
        deadline, token, queue, job_id = _SLOT.unpack_from(self._map, index * _SLOT.size)
        if not deadline or now < deadline:
            return None
        return job_id.rstrip(b"\0").decode(), queue.rstrip(b"\0").decode(), token


class BoardMonitor:
    """The worker side of the board: `Worker(monitor=...)` calls it around each job."""

    def __init__(self, board: JobBoard, index: int) -> None:
        self.board, self.index = board, index

    def job_started(self, job_id: str, queue: str, token: int, timeout: float | None) -> None:
        self.board.started(self.index, job_id, queue, token, timeout)

    def job_ended(self) -> None:
        self.board.ended(self.index)

    def worker_ready(self) -> None:
        """The worker connected, registered and starts its loop."""
        self.board.ready(self.index)

    def stop_signal(self) -> str | None:
        """The signal the parent got, if the stop signal this worker got is the parent's."""
        return self.board.stop_signal()


class Supervisor:
    """Runs `concurrency` workers built by `make_worker(name, monitor, parent_pid)`."""

    def __init__(
        self,
        concurrency: int,
        make_worker: Callable[[str, BoardMonitor, int], Worker],
        store: Store,
        *,
        name: str,
        burst: bool = False,
        max_jobs: int | None = None,
        max_deaths: int = 3,
    ) -> None:
        self.concurrency, self.make_worker, self.store = concurrency, make_worker, store
        self.burst, self.max_jobs, self.max_deaths = burst, max_jobs, max_deaths
        self.name = name
        self.spawned = 0
        self.board = JobBoard(concurrency)
        self.children: dict[int, tuple[int, str, float]] = {}  # pid -> (index, worker name, started)
        self.restart_at: dict[int, float] = {}  # index -> when to start it again
        self.backoff: dict[int, float] = {}  # index -> the last delay after a start-up crash
        self.timed_out: set[int] = set()
        self.signals = 0

    def run(self) -> int:
        """Start the workers and watch them until they have all exited; returns the exit status."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(self.concurrency):
                self._spawn(index)
            while self.children or (self.restart_at and not self.signals):
                self._reap_exited()
                self._kill_overdue()
                self._restart_due()
                time.sleep(0.1)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("all %d worker processes stopped", self.concurrency)
        return 0

    def _spawn(self, index: int) -> None:
        self.spawned += 1
        name = f"{self.name}.{self.spawned}"
        self.board.spawning(index)
        pid = os.fork()
        if pid == 0:  # the worker process
            code = 1
            try:
                os.setpgid(0, 0)  # Ctrl-C reaches the parent only; it forwards the stop
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                worker = self.make_worker(name, BoardMonitor(self.board, index), os.getppid())
                worker.work(burst=self.burst, max_jobs=self.max_jobs)
                code = 0
            except TaskitError as exc:  # Redis is away at start-up, say: one line, no traceback
                log.error("worker process %d stopped: %s", os.getpid(), exc)
            except BaseException:
                log.exception("worker process %d crashed", os.getpid())
            finally:
                os._exit(code)
        self.children[pid] = (index, name, time.monotonic())
        log.info("started worker process %d as %s", pid, name)

    def _reap_exited(self) -> None:
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            index, name, _ = self.children.pop(pid)
            started = self.board.was_ready(index)
            self.board.ended(index)
            code = os.waitstatus_to_exitcode(status)
            if code == 0 and pid not in self.timed_out:
                if self.burst or self.max_jobs is not None or self.signals:
                    continue  # finished on its own: a burst that ran dry, --max-jobs, or our stop
                how = "it was asked to stop, but not by this process"
            else:
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                self.timed_out.discard(pid)
                self._recover(name, how)
            if self.signals:
                continue
            if started:  # killed or crashed while working: replace it now
                self.backoff.pop(index, None)
                self.restart_at[index] = time.monotonic()
                log.warning("worker process %d ended (%s); starting a new one now", pid, how)
            else:  # it never got going: starting it again at once would only spin
                delay = min(30.0, self.backoff.get(index, 0.5) * 2)
                self.backoff[index] = delay
                self.restart_at[index] = time.monotonic() + delay
                log.warning("worker process %d could not start (%s); trying again in %.0fs", pid, how, delay)

    def _recover(self, name: str, how: str) -> None:
        """Put the jobs of a dead worker back on their queues now, not after its lease."""
        try:
            recovered, abandoned = self.store.reap(name, time.time(), self.max_deaths, DEFAULT_FAILURE_TTL)
        except TaskitError as exc:
            log.warning("could not recover the jobs of worker %s now (%s); its lease will expire", name, exc)
            return
        if recovered:
            log.warning("worker %s died (%s): %d job(s) back on their queues: %s", name, how, len(recovered), ", ".join(recovered))
        if abandoned:
            log.error("worker %s died (%s): abandoned %s (it killed %d workers)", name, how, ", ".join(abandoned), self.max_deaths)

    def _kill_overdue(self) -> None:
        now = time.time()
        for pid, (index, name, _) in list(self.children.items()):
            overdue = self.board.overdue(index, now)
            if overdue is None or pid in self.timed_out:
                continue
            job_id, queue, token = overdue
            log.error(
                "job %s ran past its timeout and did not stop; killing worker process %d and failing the job",
                job_id, pid,
            )
            os.kill(pid, signal.SIGKILL)
            self.timed_out.add(pid)
            error = JobTimeoutError(
                f"job exceeded its timeout and did not stop (stuck outside Python?); its worker process {pid} was killed"
            )
            try:
                fields = self.store.fetch([job_id])[0]
                if fields is None:
                    continue  # deleted meanwhile: nothing to record
                job = Job.from_fields(job_id, fields)
                summary = f"JobTimeoutError: {error}"
                record = failure_record(job, token, queue, error, summary, f"taskit.exceptions.{summary}", now)
                self.store.finish(name, [record], now)
            except TaskitError as exc:
                log.warning("could not record the timeout of job %s (%s); it will be recovered", job_id, exc)

    def _restart_due(self) -> None:
        if self.signals:
            self.restart_at.clear()
            return
        now = time.monotonic()
        for index, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[index]
                self._spawn(index)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1
        self.board.got_signal(signum)  # so that the workers can say why they stop
        what = "finishing current jobs" if self.signals == 1 else "stopping at once"
        log.warning("%s: %s in %d worker process(es)", signal.Signals(signum).name, what, len(self.children))
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
