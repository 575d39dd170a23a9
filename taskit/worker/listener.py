"""Threads that listen to Redis for the worker's loop, each on a connection of its own.

* `CancelListener`: the worker's cancel channel. `job.cancel()` on a running job (from any
  process) publishes its id there, and the job is stopped at once.
* `WorkWatcher`: while jobs run in threads or on the event loop and the last claim found the
  queues empty, the loop waits for outcomes; this thread waits in Redis for new jobs (on the
  queues' wake lists) and tells the loop, so a free slot is filled at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from ..exceptions import TaskitError
from ..storage.store import CancelRequests, Store

log = logging.getLogger("taskit.worker")

#: longest single wait in Redis, so that a stop is noticed promptly (seconds)
LISTEN_SECONDS = 1.0


class CancelListener(threading.Thread):
    """Calls `on_request(job id, reason)` for each cancel request sent to this worker."""

    def __init__(self, requests: CancelRequests, on_request: Callable[[str, str], None], worker_name: str) -> None:
        super().__init__(name=f"taskit-cancels-{worker_name}", daemon=True)
        self.requests, self.on_request = requests, on_request
        self._stop_event = threading.Event()

    def run(self) -> None:
        failing = False
        while not self._stop_event.is_set():
            try:
                for job_id, reason in self.requests.receive(LISTEN_SECONDS):
                    self.on_request(job_id, reason)
                if failing:
                    log.info("listening for cancel requests again")
                failing = False
            except Exception as exc:  # noqa: BLE001 (the loop reports outages; the heartbeat reports cancels meanwhile)
                if self._stop_event.is_set():
                    break  # `stop` closed the connection under it
                if not failing:
                    log.debug("cannot listen for cancel requests: %s", exc)
                failing = True
                self._stop_event.wait(LISTEN_SECONDS)
        self.requests.close()

    def stop(self) -> None:
        """Stop now: closing the subscription ends a wait in progress."""
        self._stop_event.set()
        self.requests.close()


class WorkWatcher(threading.Thread):
    """While `want()` is on, waits in Redis for a job pushed to an empty queue; then calls
    `on_work()` and turns itself off.

    The loop, once it holds nothing, waits in Redis itself (Store.wait_and_claim), never
    beside this thread: a push leaves one wake-up, which only one of them would get. So it
    asks `waiting()` first, which also turns this thread off; if it was waiting, the loop
    waits for `on_work()`, which comes once this thread's wait ends, woken or not."""

    def __init__(self, store: Store, queues: Sequence[str], on_work: Callable[[], None], worker_name: str) -> None:
        super().__init__(name=f"taskit-watcher-{worker_name}", daemon=True)
        self.store, self.queues, self.on_work = store, list(queues), on_work
        self._wanted = threading.Event()
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._blocking = False  # in (or about to be in) a wait in Redis, until it told the loop

    def want(self) -> None:
        self._wanted.set()

    def waiting(self) -> bool:
        """Turn off; whether a wait in Redis is under way (then `on_work()` comes when it ends)."""
        with self._lock:
            self._wanted.clear()
            return self._blocking

    def run(self) -> None:
        while not self._stop_event.is_set():
            if not self._wanted.wait(LISTEN_SECONDS):
                continue
            with self._lock:
                if not self._wanted.is_set():
                    continue
                self._blocking = True
            woken = False
            try:
                woken = self.store.block_for_work(self.queues, LISTEN_SECONDS)
            except TaskitError:  # the loop reports outages
                self._stop_event.wait(LISTEN_SECONDS)
            except Exception:  # noqa: BLE001 (the connection was closed under it: the worker stops)
                self._stop_event.wait(LISTEN_SECONDS)
            if woken:
                self._wanted.clear()
            if woken or not self._wanted.is_set():
                self.on_work()  # (before it stops counting as waiting: the loop hears it first)
            with self._lock:
                self._blocking = False

    def stop(self) -> None:
        self._stop_event.set()
        self._wanted.set()
