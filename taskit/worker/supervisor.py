"""`taskit worker -c N`: N worker processes under one parent.

The parent forks the workers after the task modules are imported, then watches them:

* a worker that dies is replaced at once, and the jobs it held go back on their queues
  at once instead of after its lease; only a worker that dies before its loop started
  (it could not connect, say) is replaced with backoff (1, 2, 4 ... 30 s), so that a
  pool whose workers are being killed keeps running jobs, and one that cannot start
  does not spin;
* a job that does not stop when told to (past its timeout, or canceled), stuck where no
  exception reaches it (in C code, or a coroutine that blocks the event loop), has its
  worker process killed; the parent records that job (failed with JobTimeoutError, or
  canceled), and the process's other jobs go back on their queues, unblamed;
* a worker that exits to be replaced (--max-jobs, --max-memory) is replaced at once;
* SIGTERM / SIGINT to the parent reaches every worker: the first lets running jobs
  finish (up to --shutdown-timeout), a second stops them at once. Workers stop on their
  own if the parent disappears.

Each worker writes the jobs it runs into a small shared-memory board, one entry per slot
(a thread, or an async task), so the parent knows which jobs to record when it kills a
worker, without asking Redis; the board also says which workers have started their loop,
and which signal the parent got.
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

from ..exceptions import JobCanceledError, JobTimeoutError, TaskitError
from ..job import DEFAULT_FAILURE_TTL, Job
from ..storage.store import Record, Store
from .execution import STOP_GRACE
from .records import failure_record
from .worker import RECYCLE_EXIT, Worker

log = logging.getLogger("taskit.worker")

#: seconds past a job's timeout before its worker process is killed (its own stop gets the first chance)
HARD_KILL_GRACE = STOP_GRACE
_DEADLINE = struct.Struct("d")
_ENTRY = struct.Struct("cq128s128s")  # why ('t' timeout, 'c' cancel), token, queue, job id (names <= 128 characters)


class JobBoard:
    """Shared memory where the worker processes say which jobs they run, and by when each
    must be done: per process, `slots` deadlines (one array the parent scans quickly) and
    `slots` entries; then one byte per process (its loop started), and one where the parent
    says which stop signal it got."""

    def __init__(self, processes: int, slots: int) -> None:
        self.slots = slots
        self._block = slots * (_DEADLINE.size + _ENTRY.size)
        self._flags = self._block * processes  # one byte per process: its loop started
        self._signal = self._flags + processes  # the stop signal the parent got (0: none)
        self._map = mmap.mmap(-1, self._signal + 1)
        self._deadlines = [memoryview(self._map)[i * self._block : i * self._block + slots * _DEADLINE.size].cast("d") for i in range(processes)]

    def spawning(self, index: int) -> None:
        """A new worker process takes the place of process i: no job, nothing started yet."""
        self.clear(index)
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

    def _entry_at(self, index: int, slot: int) -> int:
        return index * self._block + self.slots * _DEADLINE.size + slot * _ENTRY.size

    def started(self, index: int, slot: int, job_id: str, queue: str, token: int, timeout: float | None) -> None:
        _ENTRY.pack_into(self._map, self._entry_at(index, slot), b"t", token, queue.encode(), job_id.encode())
        self._deadlines[index][slot] = time.time() + timeout + HARD_KILL_GRACE if timeout else 0.0

    def stopping(self, index: int, slot: int) -> None:
        """The job in this slot was canceled: it has STOP_GRACE seconds to end."""
        offset = self._entry_at(index, slot)
        self._map[offset : offset + 1] = b"c"
        deadline = time.time() + STOP_GRACE
        current = self._deadlines[index][slot]
        self._deadlines[index][slot] = min(current, deadline) if current else deadline

    def ended(self, index: int, slot: int) -> None:
        self._deadlines[index][slot] = 0.0

    def clear(self, index: int) -> None:
        deadlines = self._deadlines[index]
        for slot in range(self.slots):
            deadlines[slot] = 0.0

    def overdue(self, index: int, now: float) -> list[tuple[str, str, int, str]]:
        """(job id, queue, token, why) of the jobs process i runs past their deadlines."""
        deadlines = self._deadlines[index]
        found = []
        for slot, deadline in enumerate(deadlines):
            if deadline and now >= deadline:
                why, token, queue, job_id = _ENTRY.unpack_from(self._map, self._entry_at(index, slot))
                found.append((job_id.rstrip(b"\0").decode(), queue.rstrip(b"\0").decode(), token, why.decode()))
        return found

    def any_overdue(self, index: int, now: float) -> bool:
        return any(0.0 < deadline <= now for deadline in self._deadlines[index])


class BoardMonitor:
    """The worker side of the board: `Worker(monitor=...)` calls it around each job."""

    def __init__(self, board: JobBoard, index: int) -> None:
        self.board, self.index = board, index

    def job_started(self, slot: int, job_id: str, queue: str, token: int, timeout: float | None) -> None:
        self.board.started(self.index, slot, job_id, queue, token, timeout)

    def job_stopping(self, slot: int) -> None:
        self.board.stopping(self.index, slot)

    def job_ended(self, slot: int) -> None:
        self.board.ended(self.index, slot)

    def worker_ready(self) -> None:
        """The worker connected, registered and starts its loop."""
        self.board.ready(self.index)

    def stop_signal(self) -> str | None:
        """The signal the parent got, if the stop signal this worker got is the parent's."""
        return self.board.stop_signal()


class Supervisor:
    """Runs `concurrency` workers built by `make_worker(name, monitor, parent_pid)`, each
    with `slots` jobs at once at most."""

    def __init__(
        self,
        concurrency: int,
        make_worker: Callable[[str, BoardMonitor, int], Worker],
        store: Store,
        *,
        name: str,
        slots: int = 1,
        burst: bool = False,
        max_jobs: int | None = None,
        max_deaths: int = 3,
    ) -> None:
        self.concurrency, self.make_worker, self.store = concurrency, make_worker, store
        self.burst, self.max_jobs, self.max_deaths = burst, max_jobs, max_deaths
        self.name = name
        self.spawned = 0
        self.board = JobBoard(concurrency, slots)
        self.children: dict[int, tuple[int, str, float]] = {}  # pid -> (index, worker name, started)
        self.restart_at: dict[int, float] = {}  # index -> when to start it again
        self.backoff: dict[int, float] = {}  # index -> the last delay after a start-up crash
        self.killed: set[int] = set()
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
                code = RECYCLE_EXIT if worker.recycle else 0
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
            self.board.clear(index)
            code = os.waitstatus_to_exitcode(status)
            killed = pid in self.killed
            self.killed.discard(pid)
            if code == RECYCLE_EXIT and not killed:
                self._recover(name, "recycled")  # (it handed everything back; this is a check)
                if not self.signals:
                    log.info("worker process %d stopped to be replaced (--max-jobs or --max-memory); starting a new one", pid)
                    self.restart_at[index] = time.monotonic()
                continue
            if code == 0 and not killed:
                if self.burst or self.max_jobs is not None or self.signals:
                    continue  # finished on its own: a burst that ran dry, --max-jobs, or our stop
                how = "it was asked to stop, but not by this process"
            else:
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
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
            if pid in self.killed or not self.board.any_overdue(index, now):
                continue
            overdue = self.board.overdue(index, now)
            log.error(
                "job(s) %s did not stop when told to (past a timeout, or canceled); killing worker process %d "
                "and recording them; its other jobs go back on their queues",
                ", ".join(job_id for job_id, _, _, _ in overdue), pid,
            )
            os.kill(pid, signal.SIGKILL)
            self.killed.add(pid)
            for job_id, queue, token, why in overdue:
                self._record_killed(name, pid, job_id, queue, token, why, now)

    def _record_killed(self, worker: str, pid: int, job_id: str, queue: str, token: int, why: str, now: float) -> None:
        try:
            fields = self.store.fetch([job_id])[0]
            if fields is None:
                return  # deleted meanwhile: nothing to record
            job = Job.from_fields(job_id, fields)
            if why == "c":
                error: TaskitError = JobCanceledError(
                    f"canceled while it ran; it did not stop within {STOP_GRACE:g}s, so its worker process {pid} was killed"
                )
                text = f"taskit.exceptions.JobCanceledError: {error}"
                record = Record(job_id, queue, token, "canceled", text.encode(), job.failure_ttl)
            else:
                error = JobTimeoutError(
                    f"job exceeded its timeout and did not stop (stuck outside Python?); its worker process {pid} was killed"
                )
                summary = f"JobTimeoutError: {error}"
                record = failure_record(job, token, queue, error, summary, f"taskit.exceptions.{summary}", now)
            self.store.finish(worker, [record], now)
        except TaskitError as exc:
            log.warning("could not record job %s (%s); it will be recovered", job_id, exc)

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
        what = "finishing running jobs" if self.signals == 1 else "stopping at once"
        log.warning("%s: %s in %d worker process(es)", signal.Signals(signum).name, what, len(self.children))
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
