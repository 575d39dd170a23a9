"""The monitor thread: it renews the worker's lease and those of the jobs it holds, and
every TICK runs the worker's checks (deadlines of running jobs, jobs waiting too long).

It runs beside the tasks, so a CPU-bound task is not mistaken for a dead worker (Python
switches threads every few milliseconds). One round trip renews every held job, and its
reply also names held jobs whose cancel was requested (in case the worker missed the message).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from ..exceptions import TaskitError
from ..storage.store import Store

log = logging.getLogger("taskit.worker")

#: how often (seconds) the thread wakes between beats, to run the worker's `on_tick` checks
TICK = 0.25


class Held:
    """The jobs a worker holds: id -> (queue, token). Shared by the loop and the heartbeat."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[str, int]] = {}

    def add(self, job_id: str, queue: str, token: int) -> None:
        with self._lock:
            self._jobs[job_id] = (queue, token)

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def snapshot(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return [(job_id, queue, token) for job_id, (queue, token) in self._jobs.items()]

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs


class Heartbeat(threading.Thread):
    def __init__(
        self,
        store: Store,
        worker_name: str,
        held: Held,
        lease: float,
        interval: float,
        clock: Callable[[], float],
        queues: Sequence[str] = (),
    ) -> None:
        super().__init__(name=f"taskit-heartbeat-{worker_name}", daemon=True)
        self.store, self.worker_name, self.held = store, worker_name, held
        self.lease, self.interval, self.clock = lease, interval, clock
        #: the worker's queues: its lease is renewed in each of their tags (storage/keys.py)
        self.queues = list(queues)
        self.info_ttl = int(lease) + 60
        self._stop_event = threading.Event()
        #: when the leases were last renewed (the worker checks it after a stall)
        self.renewed_at = clock()
        #: renewals further apart than this mean a stall (Redis frozen or unreachable, this
        #: process paused): half a lease with the default interval
        self.stall_after = interval + lease / 4
        #: the last stall: (began, ended)
        self.last_stall: tuple[float, float] | None = None
        #: (job id, token) of claims this worker lost; a later claim of the same job is new
        self.lost: set[tuple[str, int]] = set()
        self._parent_pid: int | None = None
        self._orphaned: Callable[[], None] | None = None
        #: called every TICK seconds (the worker's checks of running and waiting jobs)
        self.on_tick: Callable[[], None] | None = None
        #: called with (job id, reason) for a held job whose cancel was requested
        self.on_cancel: Callable[[str, str], None] | None = None

    def on_orphan(self, parent_pid: int, callback: Callable[[], None]) -> None:
        """Call `callback` once if this process's parent changes (the supervisor died)."""
        self._parent_pid, self._orphaned = parent_pid, callback

    def stall_began(self, now: float) -> float | None:
        """When the stall to report at `now` began: the one going on, if the leases have not
        been renewed for too long, else one that ended less than a lease ago. Every other
        live worker was most likely cut off too, so verdicts on its leases must wait
        (lua/lib/verdicts.lua)."""
        if now - self.renewed_at > self.stall_after:
            return self.renewed_at
        if self.last_stall is not None and now - self.last_stall[1] < self.lease:
            return self.last_stall[0]
        return None

    def beat(self) -> None:
        """Renew the leases now; remember claims that were lost (recovered elsewhere)."""
        held, now = self.held.snapshot(), self.clock()
        stall = (self.renewed_at, now) if now - self.renewed_at > self.stall_after else None
        began = None if stall is None else stall[0]
        lost_ids, canceled = self.store.heartbeat(
            self.worker_name, now + self.lease, self.info_ttl, held, began, self.lease, self.queues
        )
        lost = set(lost_ids)
        self.renewed_at = now
        if stall is not None:
            self.last_stall = stall
            log.warning(
                "leases not renewed for %.1fs (Redis frozen or unreachable, or this process paused); "
                "verdicts on leases that ran out meanwhile wait %.0fs for their workers to renew them",
                stall[1] - stall[0], self.lease,
            )
        for job_id, _, token in held:
            # a job recorded while the heartbeat was under way is no longer held: not lost
            if job_id in lost and job_id in self.held and (job_id, token) not in self.lost:
                log.warning(
                    "lost the claim on job %s: its lease expired and another worker owns it now; "
                    "this worker's result for it will be discarded",
                    job_id,
                )
                self.lost.add((job_id, token))
        if self.on_cancel is not None:
            for job_id, reason in canceled:
                self.on_cancel(job_id, reason)

    def run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._stop_event.wait(min(TICK, self.interval)):
            if self._orphaned is not None and os.getppid() != self._parent_pid:
                self._orphaned()
                self._orphaned = None
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except TaskitError as exc:  # the main loop reports outages
                    log.debug("the monitor's checks failed: %s", exc)
                except Exception:  # whatever goes wrong there, the leases must be renewed
                    log.exception("the monitor's checks failed; going on")
            if time.monotonic() >= next_beat:
                began = time.monotonic()
                next_beat = began + self.interval
                try:
                    self.beat()
                except TaskitError as exc:  # the main loop reports outages; keep beating
                    log.debug("heartbeat failed: %s", exc)
                except Exception:  # (a bug here must not stop every lease being renewed)
                    log.exception("heartbeat failed; trying again at the next beat")
                if time.monotonic() - began > self.stall_after:
                    next_beat = 0.0  # it waited out a stall: renew again at once, reporting it

    def stop(self) -> None:
        """Stop beating, and wait for a beat under way: one that ended after the worker
        signed off would put it back on the list of live workers."""
        self._stop_event.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join()
