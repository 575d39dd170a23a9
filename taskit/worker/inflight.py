"""The jobs a worker process holds, from their claim until their outcome is recorded.

The loop owns it; the monitor (timeouts, jobs waiting too long) and the listeners (cancel
requests) change it too, so every change that reads and writes goes through one lock here.

* waiting: claimed jobs not started yet, per executor (a full executor's jobs wait);
* running: jobs given to an executor (the loop adds and removes; others only read);
* pending: outcomes not recorded yet (they ride on the next claim's round trip).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from ..storage.store import Record
from .execution import RunningJob
from .executors import Executor


class InFlight:
    def __init__(self, executors: Iterable[Executor], clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._waiting: dict[Executor, deque[RunningJob]] = {executor: deque() for executor in executors}
        self._queues = tuple(self._waiting.values())
        self.running: dict[str, RunningJob] = {}
        self.pending: list[Record] = []
        self.pending_since = 0.0  # (the worker's clock) when the oldest pending outcome came

    # -- waiting -------------------------------------------------------------------------

    def wait(self, running: RunningJob, first: bool = False) -> None:
        """A job just claimed waits for a slot of its executor (`first`: at the head of the
        line, a job taken to start that could not)."""
        with self._lock:
            waiting = self._waiting[running.executor]
            if first:
                waiting.appendleft(running)
            else:
                waiting.append(running)

    def next_for(self, executor: Executor) -> RunningJob | None:
        waiting = self._waiting[executor]
        if not waiting:
            return None
        with self._lock:
            return waiting.popleft() if waiting else None

    def waiting(self, executor: Executor) -> int:
        """How many jobs wait for a slot of `executor`."""
        return len(self._waiting[executor])

    def waiting_ids(self, limit: int) -> tuple[str, ...]:
        """The ids of up to `limit` jobs waiting for a slot, oldest claim first per executor."""
        with self._lock:
            return tuple(running.job_id for waiting in self._queues for running in waiting)[:limit]

    def held(self) -> int:
        """Jobs claimed and not ended: running, or waiting for a slot."""
        return len(self.running) + sum(len(waiting) for waiting in self._queues)

    def has_waiting(self) -> bool:
        for waiting in self._queues:
            if waiting:
                return True
        return False

    def move_waiting(self, old: Executor, new: Executor) -> None:
        """Jobs waiting for `old` now wait for `new` (which takes its place)."""
        with self._lock:
            waiting = self._waiting.pop(old)
            for running in waiting:
                running.executor = new
            self._waiting[new] = waiting

    def take_waiting(self, job_id: str) -> RunningJob | None:
        with self._lock:
            for waiting in self._queues:
                for running in waiting:
                    if running.job_id == job_id:
                        waiting.remove(running)
                        return running
        return None

    def take_all_waiting(self) -> list[RunningJob]:
        with self._lock:
            taken = [running for waiting in self._queues for running in waiting]
            for waiting in self._queues:
                waiting.clear()
        return taken

    def take_stale(self, now: float, after: float) -> list[RunningJob]:
        """Jobs that have waited `after` seconds or more (monotonic `now`)."""
        stale = []
        with self._lock:
            for waiting in self._queues:
                while waiting and now - waiting[0].claimed_at >= after:
                    stale.append(waiting.popleft())
        return stale

    # -- stopping ------------------------------------------------------------------------

    def mark_stop(self, running: RunningJob, why: str, at: float) -> bool:
        """Note why a running job is to stop; False if it already is, or has ended."""
        with self._lock:
            if running.stop is not None or running.settled:
                return False
            running.stop, running.stop_at = why, at
            return True

    # -- outcomes ------------------------------------------------------------------------

    def add_record(self, record: Record) -> None:
        with self._lock:
            if not self.pending:
                self.pending_since = self._clock()
            self.pending.append(record)

    def take_records(self, older_than: float | None = None) -> list[Record]:
        """The pending outcomes (only if the oldest is `older_than` seconds old, if given)."""
        with self._lock:
            if older_than is not None and (not self.pending or self._clock() - self.pending_since < older_than):
                return []
            records, self.pending = self.pending, []
        return records

    def put_back(self, records: list[Record]) -> None:
        """Outcomes a failed round trip did not record: sent again later, first."""
        if records:
            with self._lock:
                self.pending[:0] = records

    def pending_ids(self) -> set[str]:
        with self._lock:
            return {record.job_id for record in self.pending}
