"""How many jobs the worker's next claim asks for, and what a claim's reply says about the next.

* Size: the free slots of each kind of job seen lately (sync, async), times about
  BATCH_SECONDS of work per slot for short jobs, so tiny jobs come up to `prefetch` at a
  time and slow ones one per free slot; plus, for an executor of many slots (threads, the
  event loop), a backlog: the jobs its slots free up in about BACKLOG_SECONDS, so that a
  freed slot starts the next job at once rather than after a claim's round trip (none while
  its jobs' run time is unknown, and none for jobs that take BACKLOG_SECONDS x slots or
  more). A job that finds the slots of its kind full waits (claimed, so recoverable) and is
  handed back after a while; the next claim then waits for a slot of that kind.
* When: not while claimed jobs wait for a slot (beyond half of a backlog, which is refilled
  in batches), and, once a claim came back short (the queues are empty), not until new work
  is signalled or IDLE_BLOCK has passed.
* Blame (lua/claim.lua, lib/recover.lua): a job claimed alone by a worker that holds
  nothing else (running or waiting) is marked as running alone; the next claim beside it
  says it no longer is. A quarantined job (one that may have killed workers) runs only
  alone: the worker then claims nothing more until it ends, or finishes what it holds
  before claiming it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..storage.store import Alone, Claim
from .execution import RunningJob
from .executors import Executor

#: aim for claims that hold about this much work per free slot (seconds), within [1, prefetch]
BATCH_SECONDS = 0.005
#: an executor of many slots keeps claimed about as many jobs waiting as its slots free up in
#: this long (seconds), by their average run time
BACKLOG_SECONDS = 0.01
#: a kind of job (sync or async) rarer than this among recent jobs does not count its free slots
RARE = 0.05
#: after a short claim, claim again at the latest this much later (seconds)
IDLE_BLOCK = 1.0


class ClaimPolicy:
    def __init__(self, prefetch: int, sync: Executor, async_: Executor, async_share: float) -> None:
        self.prefetch = prefetch
        self.sync, self.async_ = sync, async_
        #: the share of async jobs among those claimed lately
        self.async_share = async_share
        self.queues_empty = False  # the last claim found no more work (until woken or rechecked)
        self.next_run_at: float | None = None  # the earliest scheduled job, as the last claim saw
        self._recheck_at = 0.0  # (monotonic)
        self._blocked: Executor | None = None  # its jobs were handed back: claim once it has a free slot
        self._alone: RunningJob | None = None  # claimed alone ('al' 1), still held
        self.quarantine = ""  # 'alone' or 'drain' (see the module docstring), or ''

    def limit(self, held: int, room: int | None, waiting: Callable[[Executor], int]) -> int:
        """Jobs to claim now, holding `held` jobs (running or waiting for a slot; `waiting`:
        how many wait for each executor) and with `room` more allowed (None: no limit); 0 when
        no claim is due. A worker that holds nothing always claims (or then blocks in Redis
        for work)."""
        if room is not None and room <= 0:
            return 0
        if held:
            if self.quarantine or (self.queues_empty and time.monotonic() < self._recheck_at):
                return 0
            if self._blocked is not None and self._blocked.free == 0:
                return 0
            if any(waiting(executor) > self.backlog(executor) // 2 for executor in (self.sync, self.async_)):
                return 0
        self._blocked = None
        wanted = free = 0
        for executor, share in ((self.sync, 1.0 - self.async_share), (self.async_, self.async_share)):
            if share >= RARE:
                seconds = executor.avg_seconds
                window = max(1, min(self.prefetch, int(BATCH_SECONDS / seconds))) if seconds else 1
                free += executor.free
                wanted += max(0, executor.free * window + self.backlog(executor) - waiting(executor))
        wanted = min(wanted, max(self.prefetch, free))
        if room is not None:
            wanted = min(wanted, room)
        return wanted if held else max(1, wanted)

    def backlog(self, executor: Executor) -> int:
        """Claimed jobs to keep waiting for `executor`'s next free slots (see the module docstring)."""
        seconds = executor.avg_seconds
        if executor.capacity == 1 or not seconds:
            return 0
        return min(executor.capacity, self.prefetch, int(BACKLOG_SECONDS * executor.capacity / seconds))

    def free_slots(self) -> int:
        return self.sync.free + (self.async_.free if self.async_share >= RARE else 0)

    def wants_work(self) -> bool:
        """Slots are free but the queues were empty: worth waiting in Redis for new work."""
        return self.queues_empty and not self.quarantine and self.free_slots() > 0

    def recheck_in(self) -> float:
        return self._recheck_at - time.monotonic()

    def alone(self, holds_nothing: bool) -> Alone:
        """What the claim says about running alone (see Store.claim)."""
        if holds_nothing:
            self._alone = None
        beside = self._alone
        return holds_nothing, (beside.job_id, beside.token, beside.queue) if beside is not None else None

    def claimed(self, claim: Claim, limit: int, alone: Alone, jobs: list[RunningJob], now: float) -> None:
        """Take in a claim's reply (`now`: the worker's clock when it was sent)."""
        holds_nothing, beside = alone
        if beside is not None:
            self._alone = None  # no longer runs alone: its 'al' is 0 now
        if holds_nothing and len(jobs) == 1:
            self._alone = jobs[0]
        self.next_run_at = claim.next_run_at
        self.quarantine = claim.quarantine
        self.queues_empty = len(claim.jobs) < limit and claim.quarantine != "drain"
        self._recheck_at = time.monotonic() + IDLE_BLOCK
        if claim.next_run_at is not None:
            self._recheck_at = min(self._recheck_at, time.monotonic() + max(0.0, claim.next_run_at - now))

    def seen(self, is_async: bool) -> None:
        """A job of this kind was claimed."""
        self.async_share = 0.9 * self.async_share + (0.1 if is_async else 0.0)

    def ended(self, running: RunningJob) -> None:
        if running is self._alone:
            self._alone = None
            if self.quarantine == "alone":
                self.quarantine = ""

    def handed_back(self, executor: Executor) -> None:
        """A job waited too long for a slot of `executor` (called by the monitor)."""
        self._blocked = executor

    def woken(self) -> None:
        """New work was pushed to a queue."""
        self.queues_empty = False

    def use(self, sync: Executor) -> None:
        """A new sync executor took the old one's place."""
        self.sync = sync
