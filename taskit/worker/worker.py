"""The worker loop: claim jobs, run them, record what happened, and keep the books.

One iteration is one round trip when jobs are waiting: the outcomes of the last batch
are recorded in the same pipeline that claims the next batch. The batch size adapts
to how long jobs take (many tiny jobs per claim, one slow job per claim), and jobs of a
batch still waiting behind one that runs longer than HAND_BACK_AFTER are handed back to
their queues for other workers (and the outcomes before it are recorded), so neither a
prefetched job nor a finished job's result is stuck behind a slow one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import tenacity

from .. import config, display, functions, tracing
from ..connections import Client
from ..exceptions import (
    ConfigurationError,
    RedisUnavailableError,
    SerializationError,
    StorageError,
    TaskitError,
    TaskNotAllowedError,
)
from ..job import DEFAULT_FAILURE_TTL, Job, validate_id
from ..queue import Queue
from ..storage import keys
from ..storage.keys import DEFAULT_QUEUE, Field
from ..storage.store import Fields, Record, Store
from .execution import Alarm, ColdShutdown, Outcome, call_job, describe_error
from .heartbeat import Heartbeat, Held

log = logging.getLogger("taskit.worker")

#: record outcomes at once when the oldest waiting one is older than this (seconds)
FLUSH_AFTER = 0.002
#: aim for claims that hold about this much work (seconds), within [1, prefetch]
BATCH_SECONDS = 0.005
#: longest idle block, so stop signals are noticed promptly
IDLE_BLOCK = 1.0
#: a job running this long (seconds) makes the worker record the outcomes before it and
#: hand back the jobs claimed with it
HAND_BACK_AFTER = 1.0


class _CrashPoints:
    """Fault injection for the fault tests: TASKIT_CRASH_AT=point[:n] makes the worker
    SIGKILL itself the n-th time (default 1st) it reaches `point` (after_claim,
    before_record, after_record). Unset, it costs one comparison."""

    def __init__(self, spec: str | None) -> None:
        point, _, count = (spec or "").partition(":")
        self.point, self.left = point or None, int(count or 1)

    def hit(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


_crash = _CrashPoints(os.environ.get("TASKIT_CRASH_AT"))


class Worker:
    """Runs jobs from queues, in priority order. `Worker([queue]).work(burst=True)`.

    lease: seconds a claim stays valid without a heartbeat; a dead worker's jobs are
        recovered about this long after it dies.
    modules: module names this worker was told to import; their functions may run.
    clock: the time source (tests inject one to move time forward without sleeping).
    monitor, parent_pid: set by the supervisor of `taskit worker -c N` (it watches for jobs
        stuck past their timeout; the worker stops if that parent goes away).
    """

    def __init__(
        self,
        queues: Iterable[Queue | str] | Queue | str,
        connection: Client | None = None,
        name: str | None = None,
        *,
        modules: Sequence[str] = (),
        lease: float = 20.0,
        heartbeat_interval: float | None = None,
        maintenance_interval: float = 5.0,
        max_deaths: int = 3,
        prefetch: int = 64,
        clock: Callable[[], float] = time.time,
        monitor: Any = None,
        parent_pid: int | None = None,
    ) -> None:
        if isinstance(queues, (Queue, str)):
            queues = [queues]
        names: list[str] = []
        for q in queues:
            if not isinstance(q, (Queue, str)):
                raise ConfigurationError(f"queues must be Queue objects or names, not {type(q).__name__}")
            if connection is None and isinstance(q, Queue):
                connection = q._connection
            qname = q.name if isinstance(q, Queue) else validate_id(q, "queue name")
            if qname not in names:
                names.append(qname)
        if not names:
            raise ConfigurationError("a worker needs at least one queue")
        for what, seconds in (("lease", lease), ("maintenance_interval", maintenance_interval)):
            if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
                raise ConfigurationError(f"{what} must be a positive number of seconds, not {seconds!r}")
        if prefetch < 1 or max_deaths < 1:
            raise ConfigurationError("prefetch and max_deaths must be positive")
        if heartbeat_interval is not None and not 0 < heartbeat_interval < lease:
            raise ConfigurationError(
                f"heartbeat_interval must be more than 0 and less than the lease ({lease}s), not {heartbeat_interval}"
            )
        self.queues = names
        self.connection = config.get_connection(connection)
        # a short retry budget: an outage is reported within a second, then backed off from
        self.store = Store(self.connection, retry_seconds=1.0)
        self.name = validate_id(name, "worker name") if name else default_worker_name()
        self.modules = tuple(modules)
        self.lease = float(lease)
        self.heartbeat_interval = heartbeat_interval or self.lease / 4
        self.maintenance_interval = float(maintenance_interval)
        self.max_deaths = max_deaths
        self.prefetch = prefetch
        self.clock = clock
        self.monitor = monitor
        self.parent_pid = parent_pid
        self.held = Held()
        self._batch: deque[tuple[str, int, str, Fields]] = deque()
        self._running_since: float | None = None  # monotonic start of the job running now
        # while a job runs, the heartbeat thread may take the batch and the pending records
        # (`_while_slow`); this lock makes "a job is running" and that taking one step
        self._lock = threading.Lock()
        self._pending: list[Record] = []
        self._pending_since = 0.0
        self._window = 1
        self._avg_seconds = 0.0
        self._next_maintenance = 0.0
        self._claimed_at = 0.0
        self._stop_requested = False
        self._refusals = 0
        self._reported: set[str] = set()  # broken keys already logged
        self._wake = threading.Event()
        self._registration: dict[str, str] = {}
        self._losses_seen = 0  # store.lost_connections when this worker last registered
        self.jobs_run = 0

    # -- the loop --------------------------------------------------------------------

    def work(self, burst: bool = False, max_jobs: int | None = None) -> int:
        """Run jobs until stopped (or, with `burst`, until nothing is due). Returns jobs run."""
        if max_jobs is not None and max_jobs < 1:
            raise ConfigurationError("max_jobs must be a positive number")
        self._stop_requested = False
        self.jobs_run = 0
        previous_handlers = self._install_signal_handlers()
        self.alarm = Alarm()
        self._call_job = tracing.consumer(call_job)  # call_job itself unless taskit.tracing is on
        heartbeat = Heartbeat(self.store, self.name, self.held, self.lease, self.heartbeat_interval, self.clock)
        heartbeat.on_tick = self._while_slow
        if self.parent_pid is not None:
            heartbeat.on_orphan(self.parent_pid, self._orphaned)
        self.heartbeat = heartbeat
        try:
            self._register()
            if self.monitor is not None:
                self.monitor.worker_ready()  # connected: a death from now on is not a start-up crash
            self._announce()
            heartbeat.start()
            while not self._stop_requested:
                if max_jobs is not None and self.jobs_run >= max_jobs and not self._batch:
                    break
                try:
                    if not self._step(burst, max_jobs):
                        break
                    self._refusals = 0
                except RedisUnavailableError as exc:
                    self._wait_for_redis(exc)
                except StorageError as exc:
                    self._refused(exc)
        finally:
            heartbeat.stop()
            self.alarm.close()
            self._restore_signal_handlers(previous_handlers)
            self._shutdown()
        return self.jobs_run

    def _step(self, burst: bool, max_jobs: int | None) -> bool:
        """One turn of the loop; False when a burst worker has nothing left to do."""
        now = self.clock()
        if now >= self._next_maintenance:
            self._maintain(now)
        if not self._batch:
            limit = self._window
            if max_jobs is not None:
                limit = max(1, min(limit, max_jobs - self.jobs_run))
            recorded, claimed, next_run_at = self._record_and_claim(now, limit)
            if not claimed:
                if recorded:
                    # a retry just recorded may be runnable; only a claim that records
                    # nothing proves the queues empty (after a NOSCRIPT reload the
                    # recording can even run after the claim in the same round trip)
                    return True
                if burst and (next_run_at is None or next_run_at > self.clock()):
                    return False
                self._idle(next_run_at)
                return True
        with self._lock:
            next_job = self._batch.popleft() if self._batch else None
        if next_job is None:
            return True  # handed back while the last job ran
        self._run(*next_job)
        if self._pending and self._batch and self.clock() - self._pending_since > FLUSH_AFTER:
            self._flush()
        return True

    def _record_and_claim(self, now: float, limit: int) -> tuple[bool, int, float | None]:
        """Send the pending outcomes and claim the next batch: (recorded any, claimed, next run-at)."""
        deadline = now + self.lease
        records = self._take_pending()
        if records:
            _crash.hit("before_record")
            with self._sending(records):
                recorded, claimed, next_run_at = self.store.finish_and_claim(
                    self.name, records, now, self.queues, deadline, limit
                )
            self._recorded(records, recorded)
            _crash.hit("after_record")
        else:
            claimed, next_run_at = self.store.claim(self.name, self.queues, now, deadline, limit)
        if claimed:
            self._claimed_at = now
            _crash.hit("after_claim")
        for job_id, token, queue_index, fields in claimed:
            queue = self.queues[queue_index]
            self.held.add(job_id, queue, token)
            with self._lock:
                self._batch.append((job_id, token, queue, fields))
        return bool(records), len(claimed), next_run_at

    def _idle(self, next_run_at: float | None) -> None:
        now = self.clock()
        timeout = min(IDLE_BLOCK, max(0.0, self._next_maintenance - now))
        if next_run_at is not None:
            timeout = min(timeout, max(0.0, next_run_at - now))
        if timeout > 0:
            self.store.block_for_work(self.queues, timeout)

    # -- running one job -------------------------------------------------------------

    def _run(self, job_id: str, token: int, queue: str, fields: Fields) -> None:
        if self._stop_requested:
            self._add_record(Record(job_id, queue, token, "released"))
            return
        if self.clock() - max(self.heartbeat.renewed_at, self._claimed_at) > self.lease / 2:
            # a stall (paused process, swapping): are these claims still ours?
            try:
                self.heartbeat.beat()
            except BaseException:  # Redis is away: the job waits, first in line, for the loop to go on
                with self._lock:
                    self._batch.appendleft((job_id, token, queue, fields))
                raise
        if (job_id, token) in self.heartbeat.lost:
            self.heartbeat.lost.discard((job_id, token))
            self.held.discard(job_id)
            return
        try:
            record = self._attempt(job_id, token, queue, fields)
        except Exception as exc:  # noqa: BLE001 (the rule: what goes wrong with one job fails that job, never the worker)
            record = _failure_of(job_id, token, queue, fields, exc)
        if record.outcome == "interrupted":
            self._stop_requested = True  # a cold shutdown: the job goes back, and it did not run
        else:
            self.jobs_run += 1
        self._add_record(record)

    def _attempt(self, job_id: str, token: int, queue: str, fields: Fields) -> Record:
        """Load, resolve and run one job, and build its record. The task's own exceptions are
        its outcome; anything this raises (unreadable data, a function this worker may not
        run, a failure around the task) becomes the job's failure in `_run`."""
        if not job_id.isascii():  # not even UTF-8 (see storage.store._text): written by hand
            raise SerializationError(f"job id {display.shown(job_id)} is corrupt: not an id taskit writes")
        job = Job.from_fields(job_id, fields, self.connection)
        _ = job.args  # unpacks the arguments now: unreadable ones fail the job, and nothing runs
        target = functions.resolve(job.func_name, self.modules)
        outcome = self._execute(job, target, queue, token)
        if outcome.interrupted:
            log.warning("%s: %s interrupted by shutdown; back on the queue (job %s)", queue, display.call(job), job_id)
            return Record(job_id, queue, token, "interrupted")
        self._adapt(outcome.seconds)
        return self._record_for(job, token, queue, outcome)

    def _execute(self, job: Job, target: Callable[..., Any], queue: str, token: int) -> Outcome:
        """Run the job's function, with the supervisor and the heartbeat thread told it runs."""
        if self.monitor is not None:
            self.monitor.job_started(job.id, queue, token, job.timeout)
        self._running_since = time.monotonic()  # (only its end must be under the lock: see _while_slow)
        try:
            return self._call_job(job, target, self.alarm, keep_result=job.result_ttl != 0)
        finally:
            with self._lock:
                self._running_since = None
            if self.monitor is not None:
                self.monitor.job_ended()

    def _record_for(self, job: Job, token: int, queue: str, outcome: Outcome) -> Record:
        if outcome.error is None:
            if log.isEnabledFor(logging.INFO):
                log.info("%s: %s finished in %s (job %s)", queue, display.call(job), _took(outcome.seconds), job.id)
            return Record(job.id, queue, token, "finished", outcome.packed_result or b"", job.result_ttl,
                          micros=int(outcome.seconds * 1_000_000))
        # outcome.summary is safe even when the exception's str() raises
        return failure_record(
            job, token, queue, outcome.error, outcome.summary, outcome.traceback, self.clock(), outcome.seconds
        )

    def _adapt(self, seconds: float) -> None:
        """Size the next claim so that a batch holds about BATCH_SECONDS of work."""
        self._avg_seconds = seconds if not self._avg_seconds else 0.8 * self._avg_seconds + 0.2 * seconds
        self._window = max(1, min(self.prefetch, int(BATCH_SECONDS / max(self._avg_seconds, 1e-6))))

    def _while_slow(self) -> None:
        """Called by the heartbeat thread. Once the job running has taken HAND_BACK_AFTER
        seconds, record the outcomes waiting to be sent, and hand the jobs claimed with it
        back to the front of their queues, where idle workers get them, in one round trip:
        neither waits for it to end (prefetch's head-of-line problem).

        Handed-back jobs stop being held first, so this worker's own next claim of one is
        never dropped by mistake. If the round trip fails, the outcomes go back to be sent by
        the loop, and the maintenance step hands the jobs back as strays (they are in this
        worker's in-flight list, and no longer held)."""
        with self._lock:
            started = self._running_since
            if started is None or time.monotonic() - started < HAND_BACK_AFTER:
                return
            waiting, records = list(self._batch), self._pending
            self._batch.clear()
            self._pending = []
        if not waiting and not records:
            return
        for job_id, _, _, _ in waiting:
            self.held.discard(job_id)
        released = _released(waiting)
        with self._sending(records):
            results = self.store.finish(self.name, records + released, self.clock())
        self._recorded(records, results)
        if released:
            log.info(
                "handed back %d job(s) claimed behind one that has run %.1fs, for other workers: %s",
                len(released), time.monotonic() - started, ", ".join(r.job_id for r in released),
            )

    # -- recording -------------------------------------------------------------------

    # The pending outcomes are shared with the heartbeat thread (`_while_slow` sends them
    # while a slow job runs): the list is only added to, taken or put back under the lock.

    def _add_record(self, record: Record) -> None:
        """Queue an outcome for recording. The job stays held (its lease renewed) until the
        record is written, however long the next job of the batch takes."""
        with self._lock:
            if not self._pending:
                self._pending_since = self.clock()
            self._pending.append(record)

    def _take_pending(self) -> list[Record]:
        with self._lock:
            records, self._pending = self._pending, []
        return records

    @contextlib.contextmanager
    def _sending(self, records: list[Record]) -> Iterator[None]:
        """Records taken to be sent go back to the front of the pending list if sending
        them fails, to be sent again later, ahead of any added meanwhile."""
        try:
            yield
        except BaseException:
            with self._lock:
                self._pending[:0] = records
            raise

    def _flush(self) -> None:
        records = self._take_pending()
        if records:
            _crash.hit("before_record")
            with self._sending(records):
                results = self.store.finish(self.name, records, self.clock())
            self._recorded(records, results)
            _crash.hit("after_record")

    def _recorded(self, records: list[Record], results: list[int]) -> None:
        for record, ok in zip(records, results):
            self.held.discard(record.job_id)
            self.heartbeat.lost.discard((record.job_id, record.token))
            if ok == 2:
                log.error(
                    "%s: job %s was failed as corrupt instead of recorded as %s: its record, or the registry "
                    "or queue it goes to, was overwritten by another type (see its exc_info)",
                    record.queue, record.job_id, record.outcome,
                )
            elif not ok and record.outcome != "released":
                log.warning(
                    "%s: job %s was not recorded as %s: this worker no longer holds it "
                    "(its lease expired and it was recovered, or it was deleted)",
                    record.queue, record.job_id, record.outcome,
                )

    # -- the books -------------------------------------------------------------------

    def _register(self) -> None:
        """Say who this worker is (`taskit info` shows it). Done again after the connection
        was lost, since a Redis restart may have lost the registration."""
        if not self._registration:
            self._registration = {
                "host": socket.gethostname(),
                "pid": str(os.getpid()),
                "queues": ",".join(self.queues),
                "started_at": repr(time.time()),
                "lease": repr(self.lease),  # heartbeat age = now - (lease deadline - lease), for the dashboard
            }
        self._losses_seen = self.store.lost_connections
        self.store.register_worker(self.name, self._registration, self.clock() + self.lease, int(self.lease) + 60)

    def _announce(self) -> None:
        tasks = sorted(functions.registered_tasks())
        log.info(
            "worker %s started; queues: %s; %d task%s: %s",
            self.name, ", ".join(self.queues), len(tasks), "" if len(tasks) == 1 else "s", ", ".join(tasks) or "none",
        )
        if tasks:
            return
        if self.modules:
            log.warning(
                "module%s %s register%s no @task: only functions defined in %s can run, and a job naming "
                "any other function fails with TaskNotAllowedError. If your tasks are defined elsewhere, "
                "give that module instead (taskit worker myapp.tasks)",
                "" if len(self.modules) == 1 else "s", ", ".join(self.modules),
                "s" if len(self.modules) == 1 else "", "it" if len(self.modules) == 1 else "them",
            )
        elif not functions.enqueued_names():
            log.warning(
                "this worker was given no modules and knows no task, so every job will fail with "
                "TaskNotAllowedError: name the modules that define your tasks "
                "(taskit worker myapp.tasks, or Worker(..., modules=['myapp.tasks']))"
            )

    def _maintain(self, now: float) -> None:
        """The maintenance step. Its parts are kept apart: one that fails (a corrupt key, a
        bug) is logged and the others still run; only an outage stops the step."""
        self._next_maintenance = now + self.maintenance_interval
        if self.store.lost_connections != self._losses_seen:
            self._register()
        # periodic tasks: enqueue their due ticks, each once across workers (issue 5)
        from ..periodic import enqueue_due

        parts: list[tuple[str, Callable[[], object]]] = [
            ("enqueueing periodic tasks", lambda: enqueue_due(
                self.store, now, queues=self.queues, lookahead=self.maintenance_interval)),
            ("handing back stray claims", self._release_strays),
            ("recovering jobs", lambda: self._recover(now)),
        ]
        for part, run in parts:
            try:
                run()
            except RedisUnavailableError:
                raise
            except TaskitError as exc:
                log.error("maintenance: %s failed: %s; the rest of the step went on", part, exc)
            except Exception:
                log.exception("maintenance: %s failed; the rest of the step went on", part)

    def _recover(self, now: float) -> None:
        """Recover the jobs of dead workers and expired leases, and report what needs an operator."""
        result = self.store.maintain(
            now, self.name, int(self.maintenance_interval * 1000), self.max_deaths, DEFAULT_FAILURE_TTL,
            queues=self.queues, stall_began=self.heartbeat.stall_began(now), grace=self.lease,
        )
        if result is None:
            return
        if result.dead:
            log.warning("workers gone (lease expired): %s", ", ".join(result.dead))
        if result.recovered:
            log.warning("recovered %d job(s) whose worker died; back on their queues: %s",
                        len(result.recovered), ", ".join(result.recovered))
        if result.abandoned:
            log.error(
                "abandoned %d job(s) that killed their worker %d times; in the failed registry: %s",
                len(result.abandoned), self.max_deaths, ", ".join(result.abandoned),
            )
        if result.failed:
            log.error("failed %d job(s) as corrupt (record overwritten, or queue not a list); see their exc_info: %s",
                      len(result.failed), ", ".join(result.failed))
        for problem in result.broken:
            if problem not in self._reported:
                self._reported.add(problem)
                log.error("%s: that queue's jobs cannot be written there until the key is deleted or repaired", problem)
        if result.unreadable:
            log.warning("dropped %d member(s) of the queue set that are no queue names: %s",
                        len(result.unreadable), ", ".join(map(repr, result.unreadable)))

    def _shutdown(self) -> None:
        """Record what is pending, hand back prefetched jobs, and sign off."""
        with self._lock:
            waiting = list(self._batch)
            self._batch.clear()
        for record in _released(waiting):
            self._add_record(record)
        try:
            self._flush()
            self._release_strays()
            if not self.store.inflight(self.name):
                self.store.unregister_worker(self.name)
        except TaskitError as exc:
            log.warning("could not record the last results (%s); their leases will expire and they will re-run", exc)
        log.info("worker %s stopped after %d job(s)", self.name, self.jobs_run)

    def _wait_for_redis(self, exc: RedisUnavailableError) -> None:
        """Back off until Redis answers again; results not yet recorded are kept for then."""
        log.warning("%s; retrying with backoff (held jobs stay claimed until their leases expire)", exc)
        started = time.monotonic()
        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential(multiplier=0.5, max=10) + tenacity.wait_random(0, 0.5),
            retry=tenacity.retry_if_exception_type(RedisUnavailableError),
            stop=lambda state: self._stop_requested,
            sleep=self._pause,
            reraise=True,
        )
        try:
            retrying(self.store.ping)
        except RedisUnavailableError:
            return  # asked to stop while Redis is away
        log.warning("Redis at %s is back after %.0fs; resuming", self.store.where, time.monotonic() - started)
        self._next_maintenance = 0.0  # at once: it also hands back claims whose reply was lost

    def _release_strays(self) -> None:
        """Hand back jobs in this worker's in-flight list that it does not know of: claimed by
        a round trip whose reply was lost with the connection (taskit never retries a claim,
        but a redis-py client with retries on may). One LRANGE when there are none."""
        with self._lock:
            known = {r.job_id for r in self._pending}
        known.update(job_id for job_id, _, _ in self.held.snapshot())
        strays = [job_id for job_id in self.store.inflight(self.name) if job_id not in known]
        if not strays:
            return
        records = []
        for job_id, fields in zip(strays, self.store.fetch(strays)):
            if fields is not None and fields.get(Field.WORKER) == self.name.encode():
                # a queue field that is no queue name: left to its lease, which names its queue
                queue = keys.readable_name(fields.get(Field.QUEUE, DEFAULT_QUEUE.encode()))
                if queue is None:
                    log.error("job %s has a corrupt queue field; leaving it to its lease", display.name(job_id))
                    continue
                records.append(Record(job_id, queue, _int_field(fields, Field.ATTEMPTS, 0), "released"))
        if records:
            self.store.finish(self.name, records[::-1], self.clock())
            log.warning("handed back %d job(s) claimed while the connection was lost: %s",
                        len(records), ", ".join(r.job_id for r in records))

    def _refused(self, exc: StorageError) -> None:
        """Redis answered with an error (a key of the wrong type, out of memory, ...): say so
        and back off (1, 2, 4 ... 30 s) rather than crash or spin."""
        self._refusals += 1
        delay = min(30.0, 2.0 ** (self._refusals - 1))
        log.error("%s; trying again in %.0fs", exc, delay)
        self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Sleep between reconnection attempts; a stop request ends the sleep early."""
        self._wake.wait(seconds)

    # -- signals ---------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        # under `-c N` the supervising process passes its stop signal on as SIGTERM
        forwarded = self.monitor.stop_signal() if self.monitor is not None else None
        if self._stop_requested:
            if self.alarm.in_job:
                cause = f"the supervising process got {forwarded} again" if forwarded else f"{name} again"
                log.warning("%s: stopping now; the running job goes back on its queue", cause)
                raise ColdShutdown()
            return
        self._stop_requested = True
        self._wake.set()
        if forwarded:
            log.warning(
                "the supervising process got %s and asked this worker to stop: finishing the current job, "
                "then stopping (another %s to it stops at once)", forwarded, forwarded,
            )
        else:
            log.warning("%s: finishing the current job, then stopping (send it again to stop at once)", name)

    def _orphaned(self) -> None:
        log.warning("the supervising process %d is gone; stopping after the current job", self.parent_pid)
        self.request_stop()

    def request_stop(self) -> None:
        """Ask the loop to stop after the current job (thread-safe)."""
        self._stop_requested = True
        self._wake.set()


def failure_record(
    job: Job, token: int, queue: str, error: BaseException, summary: str, text: str, now: float,
    seconds: float | None = None,
) -> Record:
    """What to record for a failed attempt: a retry now, a retry later, or the failure for good,
    as the job's retry policy (or the task's own RetryLater) says. `seconds`: how long it ran."""
    from ..retry import delay_after_failure

    delay = delay_after_failure(job, error, now)
    payload = text.encode("utf-8", "backslashreplace")  # (a message may hold lone surrogates)
    summary = display.clipped(summary, 200)
    micros = None if seconds is None else int(seconds * 1_000_000)
    if delay is None:
        log.error(
            "%s: %s failed: %s (job %s, attempt %d); kept in the failed registry",
            queue, display.call(job), summary, job.id, job.attempts,
        )
        return Record(job.id, queue, token, "failed", payload, job.failure_ttl, micros=micros)
    log.warning(
        "%s: %s failed: %s; retry %d in %s (job %s)", queue, display.call(job), summary, job.retries + 1, _took(delay), job.id
    )
    if delay <= 0:
        return Record(job.id, queue, token, "retry", payload, micros=micros)
    return Record(job.id, queue, token, "scheduled", payload, run_at=now + delay, micros=micros)


def default_worker_name() -> str:
    """host.pid.random: unique per process, so a restarted worker never inherits a dead one's claims."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def _int_field(fields: Fields, name: str, default: int) -> int:
    try:
        return int(fields[name]) if name in fields else default
    except ValueError:
        return default


def _released(batch: Iterable[tuple[str, int, str, Fields]]) -> list[Record]:
    """Records handing claimed, unrun jobs back. Each goes back to its queue's front, so
    the last comes first: that keeps their order."""
    return [Record(job_id, queue, token, "released") for job_id, token, queue, _ in reversed(list(batch))]


def _failure_of(job_id: str, token: int, queue: str, fields: Fields, exc: Exception) -> Record:
    """The failure record of a job that went wrong outside its task: its data could not be
    read, it names a function this worker may not run, or something broke while the worker
    loaded, logged or recorded it. Every such error of `Worker._run` comes here, and this
    never raises: the job fails with the reason in its exc_info, and the worker goes on."""
    shown_id = display.name(job_id)
    if isinstance(exc, (SerializationError, TaskNotAllowedError)):
        text = f"taskit.exceptions.{type(exc).__name__}: {exc}"
        log.error("%s: refused job %s: %s", queue, shown_id, display.clipped(str(exc), 300))
    else:
        try:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except Exception:  # noqa: BLE001 (say what failed, however little can be said)
            trace = describe_error(exc)
        text = f"the worker failed while handling this job (the error is taskit's, not the task's):\n{trace}"
        log.error("%s: job %s failed in the worker, outside its task: %s", queue, shown_id, display.clipped(describe_error(exc), 300))
    failure_ttl = _int_field(fields, Field.FAILURE_TTL, DEFAULT_FAILURE_TTL)
    return Record(job_id, queue, token, "failed", text.encode("utf-8", "backslashreplace"), failure_ttl)


def _took(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
