"""The worker: one loop per process claims jobs, hands them to executors, records outcomes.

The loop (the thread that calls `work()`) is the only code that claims and records, always
through the Store. Executors only run jobs (taskit.worker.executors): sync jobs in the
loop's own thread (`threads=1`) or on a pool of threads, coroutine jobs on an event loop.
Capacity is a number of free slots, and a claim asks for the free slots only, plus a small
prefetch when jobs are short (about BATCH_SECONDS of work per slot), so tiny jobs come 64
at a time and slow ones one per free slot, and a backlog of a few jobs for threads or the
event loop, so that a freed slot starts the next job at once (claims.py). Outcomes come
back through a mailbox and are recorded in the round trip that claims the next jobs.
Idle, the loop waits in Redis with its next claim sent behind the wait, so a job pushed
then starts after that one round trip (Store.wait_and_claim).

Beside the loop: the monitor thread (heartbeat.py) renews every lease in one round trip
and runs `_tick` (timeouts, jobs told to stop that do not, the shutdown deadline, jobs
waiting too long for a slot); two listeners (listener.py) hear cancel requests and, while
jobs run elsewhere, new work. Anything that goes wrong with one job fails that job only.
"""

from __future__ import annotations

import logging
import math
import os
import queue as queue_module
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import tenacity

from .. import config, display, functions
from ..connections import Client
from ..exceptions import (
    ConfigurationError,
    HookError,
    RedisUnavailableError,
    SerializationError,
    StorageError,
    TaskitError,
)
from ..job import DEFAULT_FAILURE_TTL, Job, validate_id
from ..queue import Queue
from ..storage import keys
from ..storage.keys import DEFAULT_QUEUE, Field
from ..storage.partitions import Rotation
from ..storage.store import Record, Store
from . import hooks
from .claims import IDLE_BLOCK, ClaimPolicy
from .execution import (
    STOP_GRACE,
    Alarm,
    Outcome,
    Plan,
    RunningJob,
    describe_error,
    given_up_outcome,
    is_async,
    plan_of,
)
from .executors import AsyncExecutor, Executor, InlineExecutor, ThreadExecutor
from .heartbeat import Heartbeat, Held
from .inflight import InFlight
from .listener import CancelListener, WorkWatcher
from .records import (
    canceled_record,
    int_field,
    record_for,
    refused_record,
    released,
)

log = logging.getLogger("taskit.worker")

#: record outcomes at once when the oldest waiting one is older than this (seconds)
FLUSH_AFTER = 0.002
#: a claimed job that waits this long (seconds) for a slot goes back to its queue for
#: other workers, and outcomes not recorded for this long are recorded by the monitor
HAND_BACK_AFTER = 1.0
#: the most ids of waiting jobs a worker's hash lists (readers show the first ten it holds)
SHOWN_WAITING = 100
#: exit status of a `-c N` child that stopped to be replaced (--max-jobs, --max-memory)
RECYCLE_EXIT = 75
#: put in the mailbox to wake the loop (a stop, a record added by another thread, new work)
_WAKE, _WORK = "wake", "work"


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

    threads: sync jobs run at once (1: in the worker's own thread, with SIGALRM timeouts).
    async_tasks: `async def` jobs run at once on the worker's event loop.
    shutdown_timeout: seconds a stop lets running jobs finish before interrupting them
        (they go back to their queues).
    max_memory: megabytes of resident memory past which the worker stops after the job
        that took it there (`taskit worker -c N` starts a new one).
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
        threads: int = 1,
        async_tasks: int = 10,
        shutdown_timeout: float = 30.0,
        max_memory: float | None = None,
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
        for what, value in (("threads", threads), ("async_tasks", async_tasks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{what} must be a whole number of at least 1, not {value!r}")
        if not 0 <= shutdown_timeout < float("inf"):
            raise ConfigurationError(f"shutdown_timeout must be 0 or more seconds, not {shutdown_timeout!r}")
        if max_memory is not None and not 0 < max_memory < float("inf"):
            raise ConfigurationError(f"max_memory must be a positive number of megabytes, not {max_memory!r}")
        self.queues = names
        self.connection = config.get_connection(connection)
        # a short retry budget: an outage is reported within a second, then backed off from
        self.store = Store(self.connection, retry_seconds=1.0)
        #: the queues as claimed: a partitioned queue's partitions in turn (storage/partitions.py)
        self._rotation = Rotation(names)
        self.name = validate_id(name, "worker name") if name else default_worker_name()
        self.modules = tuple(modules)
        self.threads, self.async_tasks = threads, async_tasks
        self.shutdown_timeout, self.max_memory = float(shutdown_timeout), max_memory
        self.lease = float(lease)
        self.heartbeat_interval = heartbeat_interval or self.lease / 4
        self.maintenance_interval = float(maintenance_interval)
        self.max_deaths = max_deaths
        self.prefetch = prefetch
        self.clock = clock
        self.monitor = monitor
        self.parent_pid = parent_pid
        self.held = Held()
        self._next_maintenance = 0.0
        self._claimed_at = 0.0
        self._stop_requested = False
        self._refusals = 0
        self._reported: set[str] = set()  # broken keys already logged
        self._wake = threading.Event()
        self._registration: dict[str, str] = {}
        self._shown_waiting: tuple[str, ...] | None = None  # the jobs the worker hash says wait
        self._losses_seen = 0  # store.lost_connections when this worker last registered
        self.jobs_run = 0
        #: set when the worker stopped to be replaced (--max-jobs, --max-memory)
        self.recycle = False

    #: slots per process, for the supervisor's board
    @property
    def slots(self) -> int:
        return self.threads + self.async_tasks

    # -- the loop --------------------------------------------------------------------

    def work(self, burst: bool = False, max_jobs: int | None = None) -> int:
        """Run jobs until stopped (or, with `burst`, until nothing is due). Returns jobs run."""
        if max_jobs is not None and max_jobs < 1:
            raise ConfigurationError("max_jobs must be a positive number")
        self._prepare()
        previous_handlers = self._install_signal_handlers()
        self.alarm = Alarm()
        kinds = [is_async(fn) for fn in self._own_tasks()]
        # threads=1: sync jobs run in the loop's own thread, unless async jobs need the loop to
        # go on claiming and recording while one runs (then on a thread: from the start if the
        # worker's modules hold async tasks, else from the first async job)
        inline = self.threads == 1 and not any(kinds)
        self._sync: Executor = (
            InlineExecutor(self._report, self.alarm) if inline else ThreadExecutor(self.threads, self._report, self.name)
        )
        self._async = AsyncExecutor(self.async_tasks, self._report, self.name)
        # the share of async jobs at first, from the tasks the worker knows
        share = 0.0 if not any(kinds) else 1.0 if all(kinds) else 0.5
        self._claims = ClaimPolicy(self.prefetch, self._sync, self._async, share)
        self._executors: tuple[Executor, ...] = (self._async, self._sync)  # non-blocking submits first
        self._inflight = InFlight(self._executors, self.clock)
        self._plans: dict[Any, Plan] = {}  # function -> how it is called (worked out once each)
        self._board_slots = list(range(self.slots))[::-1]
        # the partitions of the worker's queues, as declared when it starts
        self._rotation = Rotation(self.store.partitions.expand(self.queues))
        heartbeat = Heartbeat(self.store, self.name, self.held, self.lease, self.heartbeat_interval, self.clock, self._places)
        heartbeat.on_tick, heartbeat.on_cancel = self._tick, self._cancel_requested
        if self.parent_pid is not None:
            heartbeat.on_orphan(self.parent_pid, self._orphaned)
        self.heartbeat = heartbeat
        cancels = CancelListener(self.store.cancel_requests(self.name), self._cancel_requested, self.name)
        self._watcher = WorkWatcher(self.store, self._places, lambda: self._mailbox.put(_WORK), self.name)
        hooks_started = False
        try:
            self._register()
            cancels.requests.subscribe()  # before the first claim: no request is missed
            heartbeat.start()
            cancels.start()
            self._sync.start()
            if any(kinds):
                self._async.start()
            self._run_hooks(hooks.start_hooks(), "on_worker_start")
            hooks_started = True
            if self.monitor is not None:
                self.monitor.worker_ready()  # started: a death from now on is not a start-up crash
            self._announce()
            while True:
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
            self._watcher.stop()
            self.alarm.close()
            self._restore_signal_handlers(previous_handlers)
            self._shutdown(hooks_started)
            cancels.stop()  # last: it hands its closed connection back to the pool
        return self.jobs_run

    def _own_tasks(self) -> list[Callable[..., Any]]:
        """The registered tasks defined in the modules this worker was given (`taskit worker
        MODULE`): the kinds of job to expect, before any comes."""
        prefixes = tuple(f"{m}." for m in self.modules)
        return [
            fn for fn in functions.registered_tasks().values()
            if (module := getattr(getattr(fn, "fn", fn), "__module__", "")) in self.modules or module.startswith(prefixes)
        ]

    def _prepare(self) -> None:
        self._stop_requested = self._interrupt_all = False
        self._stop_deadline: float | None = None
        self.jobs_run = 0
        self.recycle = False
        self._mailbox: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()

    def _step(self, burst: bool, max_jobs: int | None) -> bool:
        """One turn of the loop; False when there is nothing left to do (a burst ran dry,
        --max-jobs reached, or a stop has let every job end)."""
        now = self.clock()
        if now >= self._next_maintenance and not self._stop_requested:
            self._maintain(now)
        mailbox = self._mailbox
        while not mailbox.empty():
            self._take(mailbox.get_nowait())
        if self._stop_requested:
            return self._drain()
        running = self._next_to_start()
        if running is None:
            limit = self._claim_limit(max_jobs)
            if limit:
                recorded = bool(self._inflight.pending)
                claimed = self._record_and_claim(now, limit)
                if not claimed and not self._inflight.running:
                    if recorded:
                        # a retry just recorded may be runnable; only a claim that records
                        # nothing proves the queues empty (after a NOSCRIPT reload the
                        # recording can even run after the claim in the same round trip)
                        return True
                    next_run_at = self._claims.next_run_at
                    if burst and (next_run_at is None or next_run_at > self.clock()):
                        return False
                    if not self._idle(limit) or self._stop_requested:
                        return True
                running = self._next_to_start()
        if running is not None:
            self._start(running)
            inflight = self._inflight
            if inflight.pending and self.clock() - inflight.pending_since > FLUSH_AFTER and inflight.has_waiting():
                self._flush()
            return True
        if self._inflight.running:
            self._await_outcomes()
            return True
        if self._inflight.has_waiting():
            return True  # a job stopped before it started was just dropped
        # nothing held, and no claim due: --max-jobs reached
        return max_jobs is None or self.jobs_run < max_jobs

    def _claim_limit(self, max_jobs: int | None) -> int:
        held = self._inflight.held()
        room = None if max_jobs is None else max_jobs - self.jobs_run - held
        if room is not None and room <= 0 and not held:
            self.recycle = True  # --max-jobs reached: a supervisor starts a new process
        return self._claims.limit(held, room, self._inflight.waiting)

    def _record_and_claim(self, now: float, limit: int, wait: float | None = None) -> int:
        """Record the pending outcomes and claim up to `limit` jobs, in one round trip; with
        `wait` (seconds; nothing is held or pending), wait for work first, in the same round
        trip (Store.wait_and_claim). Returns the number of jobs claimed."""
        deadline = now + self.lease
        alone = self._claims.alone(holds_nothing=not self._inflight.held())
        records = self._inflight.take_records()
        places = self._rotation.next()
        try:
            if wait is not None:
                # the claim runs when the wait ends, at Redis's time (a clock given to the
                # worker is kept: it does not move by itself)
                given = None if self.clock is time.time else now
                claim = self.store.wait_and_claim(self.name, places, wait, self.lease, limit, alone, given)
                now = self.clock()
            elif records:
                _crash.hit("before_record")
                recorded, claim = self.store.finish_and_claim(self.name, records, now, places, deadline, limit, alone)
                self._recorded(records, recorded)
                _crash.hit("after_record")
            else:
                claim = self.store.claim(self.name, places, now, deadline, limit, alone)
        except BaseException:
            self._inflight.put_back(records)
            raise
        if claim.jobs:
            self._claimed_at = now
            _crash.hit("after_claim")
        claimed_at = time.monotonic()
        jobs = [RunningJob(job_id, token, places[index], fields, claimed_at) for job_id, token, index, fields in claim.jobs]
        self._claims.claimed(claim, limit, alone, jobs, now)
        for running in jobs:
            self.held.add(running.job_id, running.queue, running.token)
            self._accept(running)
        return len(jobs)

    def _idle(self, limit: int) -> int:
        """Nothing held: wait until a job is pushed, maintenance is due, or a scheduled job
        comes due, and claim up to `limit` jobs; returns how many came.

        In Redis itself, with the claim pipelined behind the wait: an idle worker's pickup
        is one round trip (Store.wait_and_claim). Not while the work watcher waits in Redis
        (jobs ran on threads or the event loop): a push leaves one wake-up, and one the
        watcher took while the loop waited in Redis too would be lost to the loop; the loop
        then waits for the watcher's word, tells it to stop waiting after this wait, and
        claims at its next turn."""
        now = self.clock()
        timeout = min(IDLE_BLOCK, max(0.0, self._next_maintenance - now))
        if self._claims.next_run_at is not None:
            timeout = min(timeout, max(0.0, self._claims.next_run_at - now))
        if timeout <= 0:
            return 0
        if self._watcher.waiting():
            self._collect(timeout)
            return 0
        return self._record_and_claim(now, limit, wait=timeout)

    def _await_outcomes(self) -> None:
        """Jobs run elsewhere and none can start: wait for an outcome (or new work, or a stop)."""
        if self._inflight.pending:
            # results ride on the next claim, if one comes soon; otherwise they go now
            left = FLUSH_AFTER - (self.clock() - self._inflight.pending_since)
            if left <= 0 or not self._collect(left):
                self._flush()
            return
        timeout = min(IDLE_BLOCK, max(0.001, self._next_maintenance - self.clock()))
        if self._claims.wants_work():
            self._watcher.want()  # (started on first use)
            if not self._watcher.is_alive():
                self._watcher.start()
        if self._claims.queues_empty:
            timeout = min(timeout, max(0.001, self._claims.recheck_in()))
        self._collect(timeout)

    # -- one job ---------------------------------------------------------------------

    def _accept(self, running: RunningJob) -> None:
        """A job just claimed: read it, find its function, and queue it for its executor.
        Anything that goes wrong fails this job only."""
        fields = running.fields
        if Field.CANCEL in fields:  # its cancel was requested while an earlier attempt ran
            reason = fields[Field.CANCEL].decode(errors="replace")
            why = "canceled while an earlier attempt ran" + (f": {reason}" if reason else "")
            self._inflight.add_record(canceled_record(running, f"{why} (its worker died; not run again)"))
            return
        try:
            if not running.job_id.isascii():  # not even UTF-8 (see storage.store._text): written by hand
                raise SerializationError(f"job id {display.shown(running.job_id)} is corrupt: not an id taskit writes")
            job = Job.from_fields(running.job_id, fields, self.connection)
            args = job.args  # unpacks the arguments now: unreadable ones fail the job, and nothing runs
            target = functions.resolve(job.func_name, self.modules)
            plan = self._plans.get(target)
            if plan is None:
                plan = self._plans[target] = plan_of(target)
            fn, bind, running.is_async = plan
            running.call = fn, (job, *args) if bind else args, job.kwargs
            self._claims.seen(running.is_async)
        except Exception as exc:  # noqa: BLE001 (the rule: what goes wrong with one job fails that job, never the worker)
            self._inflight.add_record(refused_record(running, exc))
            self.jobs_run += 1
            return
        running.job = job
        executor: Executor = self._sync
        if running.is_async:
            executor = self._async
            executor.start()  # (returns at once once started)
            if isinstance(self._sync, InlineExecutor):  # the first async job
                self._sync_on_a_thread()
        running.executor = executor
        self._inflight.wait(running)

    def _sync_on_a_thread(self) -> None:
        """From now on, run sync jobs on a thread of their own (called by the loop, between jobs)."""
        inline, thread = self._sync, ThreadExecutor(1, self._report, self.name)
        thread.start()
        thread.avg_seconds = inline.avg_seconds
        self._inflight.move_waiting(inline, thread)
        self._sync, self._executors = thread, (self._async, thread)
        self._claims.use(thread)

    def _next_to_start(self) -> RunningJob | None:
        for executor in self._executors:
            if executor.busy < executor.capacity:
                running = self._inflight.next_for(executor)
                if running is not None:
                    return running
        return None

    def _start(self, running: RunningJob) -> None:
        if self.clock() - max(self.heartbeat.renewed_at, self._claimed_at) > self.lease / 2:
            # a stall (paused process, swapping): are these claims still ours?
            try:
                self.heartbeat.beat()
            except BaseException:  # Redis is away: the job waits, first in line, for the loop to go on
                self._inflight.wait(running, first=True)
                raise
        lost = self.heartbeat.lost
        if lost and (running.job_id, running.token) in lost:
            lost.discard((running.job_id, running.token))
            self.held.discard(running.job_id)
            return
        job, executor = running.job, running.executor
        assert job is not None
        running.started_at = time.monotonic()
        if job.timeout and not executor.times_out:
            running.deadline = running.started_at + job.timeout  # the monitor stops it then
        self._inflight.running[running.job_id] = running
        executor.busy += 1
        if self.monitor is not None:
            running.slot = self._board_slots.pop()
            self.monitor.job_started(running.slot, running.job_id, running.queue, running.token, job.timeout)
        executor.submit(running)  # the inline executor runs it now

    def _report(self, running: RunningJob, outcome: Outcome) -> None:
        """Called by an executor (any thread) when a job it was given has ended."""
        self._mailbox.put((running, outcome))

    def _collect(self, timeout: float | None = None) -> bool:
        """Take the outcomes the executors reported (waiting up to `timeout` seconds for the
        first); True if anything came."""
        mailbox = self._mailbox
        if timeout is not None:
            try:
                item = mailbox.get(timeout=timeout)
            except queue_module.Empty:
                return False
            self._take(item)
        elif mailbox.empty():
            return False
        while not mailbox.empty():
            self._take(mailbox.get_nowait())
        return True

    def _take(self, item: Any) -> None:
        if item is _WORK:
            self._claims.woken()
            return
        if item is _WAKE:
            return
        running, outcome = item
        executor = running.executor
        executor.busy -= 1
        self._inflight.running.pop(running.job_id, None)
        if running.slot >= 0:
            self.monitor.job_ended(running.slot)
            self._board_slots.append(running.slot)
        self._claims.ended(running)
        if running.stop is None:
            seconds = outcome.seconds
            executor.avg_seconds = seconds if not executor.avg_seconds else 0.8 * executor.avg_seconds + 0.2 * seconds
        record = record_for(running, outcome, self.clock())
        if record.outcome != "interrupted":  # (a job handed back by a shutdown did not run)
            self.jobs_run += 1
        self._inflight.add_record(record)
        if self.max_memory is not None:
            self._check_memory(running)

    # -- stopping jobs (any thread) -----------------------------------------------------

    def _stop_job(self, running: RunningJob, why: str) -> None:
        """Tell a running job to stop ("timeout", "cancel" or "shutdown"); the first reason wins."""
        if not self._inflight.mark_stop(running, why, time.monotonic()):
            return
        if why == "timeout":
            assert running.job is not None
            log.warning("%s: stopping job %s: it ran past its timeout of %gs", running.queue, running.job_id, running.job.timeout)
        elif why == "cancel":
            log.warning("%s: stopping job %s: canceled%s", running.queue, running.job_id, f" ({running.reason})" if running.reason else "")
        if self.monitor is not None and why == "cancel" and running.slot >= 0:
            self.monitor.job_stopping(running.slot)
        running.executor.stop_job(running)

    def _cancel_requested(self, job_id: str, reason: str) -> None:
        """A cancel request for a job this worker holds (from the listener or the heartbeat)."""
        running = self._inflight.take_waiting(job_id)
        if running is not None:  # claimed, not started: it never runs
            self._inflight.add_record(canceled_record(running, "canceled before it started" + (f": {reason}" if reason else "")))
            self._mailbox.put(_WAKE)
            return
        running = self._inflight.running.get(job_id)
        if running is not None and running.stop is None:
            running.reason = reason
            self._stop_job(running, "cancel")

    def _tick(self) -> None:
        """The monitor's checks, every heartbeat.TICK seconds."""
        now = time.monotonic()
        if self._stop_deadline is not None and (self._interrupt_all or now >= self._stop_deadline):
            self._stop_deadline = None
            running_now = list(self._inflight.running.values())
            if running_now:
                log.warning("stopping %d job(s) still running; they go back on their queues", len(running_now))
            for running in running_now:
                self._stop_job(running, "shutdown")
        for running in list(self._inflight.running.values()):
            if running.stop is None:
                if running.deadline is not None and now >= running.deadline:
                    self._stop_job(running, "timeout")
            elif now - running.stop_at >= STOP_GRACE and not running.settled and (
                self.monitor is None or running.stop == "shutdown"  # under -c N the supervisor kills the process
            ):
                self._give_up(running)
        if self._async.loop is not None:
            self._async.watch()
        self._hand_back(now)
        self._show_waiting()

    def _show_waiting(self) -> None:
        """Say in the worker's hash which held jobs wait for a slot (claimed, not started), for
        `taskit info` and the dashboard: the claim marks each job it takes started. Written by
        the monitor when it changed, so at most once a TICK."""
        waiting = self._inflight.waiting_ids(SHOWN_WAITING)
        if waiting != self._shown_waiting:
            self.store.update_worker(self.name, {keys.WORKER_WAITING: " ".join(waiting)}, self.heartbeat.info_ttl)
            self._shown_waiting = waiting

    def _give_up(self, running: RunningJob) -> None:
        how = "so the worker stopped waiting for it" if running.is_async else "so its thread was abandoned (it may still be running)"
        if running.executor.give_up(running, given_up_outcome(running, how)):
            log.error(
                "%s: job %s did not stop within %gs of being told to (%s); %s. Run the worker with -c N "
                "to have such a process replaced",
                running.queue, running.job_id, STOP_GRACE, running.stop, how,
            )

    def _hand_back(self, now: float) -> None:
        """Called by the monitor. Hand claimed jobs that have waited HAND_BACK_AFTER for a slot
        back to the front of their queues, where idle workers get them, and record outcomes
        that have waited as long (the loop is busy running a job), in one round trip: neither
        waits for a slow job to end (prefetch's head-of-line problem).

        Handed-back jobs stop being held first, so this worker's own next claim of one is
        never dropped by mistake. If the round trip fails, the outcomes go back to be sent by
        the loop, and the maintenance step hands the jobs back as strays (they are in this
        worker's in-flight list, and no longer held)."""
        stale = self._inflight.take_stale(now, HAND_BACK_AFTER)
        records = self._inflight.take_records(older_than=HAND_BACK_AFTER)
        if not stale and not records:
            return
        for running in stale:
            self.held.discard(running.job_id)
            self._claims.handed_back(running.executor)
        handed_back = released(stale)
        try:
            results = self.store.finish(self.name, records + handed_back, self.clock())
        except BaseException:
            self._inflight.put_back(records)
            raise
        self._recorded(records, results)
        if handed_back:
            log.info(
                "handed back %d job(s) that waited %.1fs for a free slot, for other workers: %s",
                len(handed_back), HAND_BACK_AFTER, ", ".join(r.job_id for r in handed_back),
            )

    # -- recording -------------------------------------------------------------------

    def _flush(self) -> None:
        """Record the pending outcomes now. (A job stays held, its lease renewed, until its
        record is written, however long the next job takes.)"""
        records = self._inflight.take_records()
        if not records:
            return
        try:
            _crash.hit("before_record")
            self._recorded(records, self.store.finish(self.name, records, self.clock()))
            _crash.hit("after_record")
        except BaseException:
            self._inflight.put_back(records)
            raise

    def _recorded(self, records: list[Record], results: list[int]) -> None:
        for record, ok in zip(records, results):
            self.held.discard(record.job_id)
            self.heartbeat.lost.discard((record.job_id, record.token))
            if ok == 2:
                log.error(
                    "%s: job %s was failed as corrupt instead of recorded as %s: its record, or the registry "
                    "or queue it goes to, was overwritten by another type (see its exc_info)",
                    record.queue, display.name(record.job_id), record.outcome,
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
        self._shown_waiting = None  # (a Redis restart lost it too: said again at the next tick)
        self.store.register_worker(self.name, self._registration, self.clock() + self.lease, int(self.lease) + 60)

    def _announce(self) -> None:
        tasks = sorted(functions.registered_tasks())
        log.info(
            "worker %s started; queues: %s; %d task%s: %s; runs %d sync job%s and %d async job%s at once",
            self.name, ", ".join(self.queues), len(tasks), "" if len(tasks) == 1 else "s", ", ".join(tasks) or "none",
            self.threads, "" if self.threads == 1 else "s", self.async_tasks, "" if self.async_tasks == 1 else "s",
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

    def _run_hooks(self, functions_: list[Callable[[], Any]], what: str) -> None:
        """Run start or stop hooks: sync ones here, async ones on the event loop."""
        for hook in functions_:
            try:
                if is_async(hook):
                    self._async.run(hook)
                else:
                    hook()
            except Exception as exc:  # a hook's failure is reported, naming it
                message = f"{what} hook {hooks.name_of(hook)} raised {describe_error(exc)}"
                if what == "on_worker_start":
                    raise HookError(f"{message}; the worker cannot start") from exc
                log.error("%s", message)

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
            queues=self._places, stall_began=self.heartbeat.stall_began(now), grace=self.lease,
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

    def _drain(self) -> bool:
        """A stop: hand back jobs not started, let running ones end (the monitor interrupts
        them at the shutdown deadline), record; False once nothing is left."""
        self._hand_back_waiting()
        if not self._inflight.running:
            return False
        if self._inflight.pending:
            self._flush()
        self._collect(IDLE_BLOCK)
        return True

    def _hand_back_waiting(self) -> None:
        """Jobs claimed and not started go back to their queues (with the next record)."""
        for record in released(self._inflight.take_all_waiting()):
            self._inflight.add_record(record)

    def _shutdown(self, hooks_started: bool) -> None:
        """Record what is pending, hand back jobs not started, run the stop hooks, sign off."""
        self._hand_back_waiting()
        try:
            self._flush()
        except TaskitError as exc:
            log.warning("could not record the last results (%s); their leases will expire and they will re-run", exc)
        if hooks_started:
            self._run_hooks(hooks.stop_hooks(), "on_worker_stop")
        for executor in self._executors:
            executor.close(timeout=STOP_GRACE)
        try:
            self._release_strays()
            if not self.store.inflight(self.name, self._places):
                self.store.unregister_worker(self.name, self._places)
        except TaskitError as exc:
            log.warning("could not sign off (%s); this worker's lease will expire", exc)
        log.info("worker %s stopped after %d job(s)", self.name, self.jobs_run)

    @property
    def _places(self) -> list[str]:
        """The worker's queues with each partitioned queue as its partitions, unrotated."""
        return self._rotation.places

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
        known = {job_id for job_id, _, _ in self.held.snapshot()} | self._inflight.pending_ids()
        strays = [job_id for job_id in self.store.inflight(self.name, self._places) if job_id not in known]
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
                records.append(Record(job_id, queue, int_field(fields, Field.ATTEMPTS, 0), "released"))
        if records:
            self.store.finish(self.name, records[::-1], self.clock())
            log.warning("handed back %d job(s) claimed while the connection was lost: %s",
                        len(records), ", ".join(display.name(r.job_id) for r in records))

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

    def _check_memory(self, running: RunningJob) -> None:
        rss = resident_megabytes()
        if rss is not None and self.max_memory is not None and rss > self.max_memory and not self._stop_requested:
            log.warning(
                "worker process %d uses %.0f MB, past --max-memory %g MB (after job %s); stopping to be replaced",
                os.getpid(), rss, self.max_memory, running.job_id,
            )
            self.recycle = True
            self.request_stop(quiet=True)

    # -- signals ---------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # no lock is taken here: the main thread may hold it when the signal arrives
        name = signal.Signals(signum).name
        # under `-c N` the supervising process passes its stop signal on as SIGTERM
        forwarded = self.monitor.stop_signal() if self.monitor is not None else None
        if self._stop_requested:
            cause = f"the supervising process got {forwarded} again" if forwarded else f"{name} again"
            log.warning("%s: stopping now; running jobs go back on their queues", cause)
            self._interrupt_all = True
            if self._stop_deadline is None:
                self._stop_deadline = 0.0
            return
        if forwarded:
            log.warning(
                "the supervising process got %s and asked this worker to stop: finishing running jobs "
                "(for up to %gs), then stopping (another %s to it stops at once)", forwarded, self.shutdown_timeout, forwarded,
            )
        else:
            log.warning(
                "%s: finishing running jobs (for up to %gs), then stopping (send it again to stop at once)",
                name, self.shutdown_timeout,
            )
        self.request_stop(quiet=True)

    def _orphaned(self) -> None:
        log.warning("the supervising process %d is gone; stopping after the running jobs", self.parent_pid)
        self.request_stop(quiet=True)

    def request_stop(self, quiet: bool = False) -> None:
        """Stop claiming, let running jobs finish (up to `shutdown_timeout`), then stop
        (thread-safe; a signal handler may call it)."""
        if not quiet:
            log.info("worker %s asked to stop", self.name)
        if not self._stop_requested:
            self._stop_deadline = time.monotonic() + self.shutdown_timeout
            self._stop_requested = True
        self._wake.set()
        mailbox = getattr(self, "_mailbox", None)
        if mailbox is not None:
            mailbox.put(_WAKE)


def default_worker_name() -> str:
    """host.pid.random: unique per process, so a restarted worker never inherits a dead one's claims."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"


def resident_megabytes() -> float | None:
    """This process's resident memory now (Linux /proc), or its peak elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except (OSError, ValueError, IndexError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except (ImportError, OSError):
            return None
