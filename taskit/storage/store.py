"""The one module that talks to Redis.

Everything above it (jobs, queues, registries, the worker) calls a `Store` method and
never a Redis command, so the round trips of each operation can be read off this file:
each public method is one round trip unless its docstring says otherwise.

Connection failures are retried for a bounded time (`retry_seconds`) with backoff and
then raised as `RedisUnavailableError`; any other Redis error becomes `StorageError`.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import msgpack
import redis
import tenacity
from redis.commands.core import Script

from ..exceptions import RedisUnavailableError, StorageError
from . import keys
from .scripts import Scripts

T = TypeVar("T")
Fields = dict[str, bytes]

#: how long a producer call keeps retrying an unreachable Redis before it raises
RETRY_SECONDS = 5.0
#: longest single blocking wait (halved to stay below a client's shorter socket timeout)
BLOCK_SECONDS = 5.0

_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)


def describe(connection: redis.Redis) -> str:
    """Where a client points, for error messages: 'redis://host:port/db'."""
    kw = connection.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


class Store:
    """Redis operations on taskit's keys for one client. Get one with `Store.of(connection)`."""

    _stores: ClassVar[weakref.WeakKeyDictionary[redis.Redis, Store]] = weakref.WeakKeyDictionary()
    _stores_lock = threading.Lock()

    def __init__(self, connection: redis.Redis, retry_seconds: float = RETRY_SECONDS) -> None:
        # typed loosely: redis-py's stubs allow str replies, but taskit refuses
        # decode_responses (config.check_connection), so every reply here is bytes
        self.redis: Any = connection
        self.where = describe(connection)
        self.scripts = Scripts(connection)
        self.retry_seconds = retry_seconds
        # a block must end well before the socket times out, or it reads as an outage
        socket_timeout = connection.connection_pool.connection_kwargs.get("socket_timeout")
        self.block_seconds = min(BLOCK_SECONDS, socket_timeout / 2) if socket_timeout else BLOCK_SECONDS

    @classmethod
    def of(cls, connection: redis.Redis) -> Store:
        """The store for a client, built once (its scripts are registered once)."""
        with cls._stores_lock:
            store = cls._stores.get(connection)
            if store is None:
                store = cls._stores[connection] = cls(connection)
            return store

    # -- error handling -------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one Redis operation; retry a lost connection for a while, then raise ours."""
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except _TRANSIENT as exc:
            first_error: Exception = exc
        except redis.RedisError as exc:
            raise StorageError(f"Redis at {self.where} refused the command: {exc}") from None
        return self._retry(started, first_error, fn, *args, **kwargs)

    def _call_once(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an operation that must not be repeated blindly (a claim: a lost reply would
        leave jobs claimed that the caller never saw); a lost connection raises at once,
        and the worker releases what it does not know of when Redis is back."""
        try:
            return fn(*args)
        except _TRANSIENT as exc:
            raise RedisUnavailableError(f"cannot reach Redis at {self.where}: {exc}") from None
        except redis.RedisError as exc:
            raise StorageError(f"Redis at {self.where} refused the command: {exc}") from None

    def _retry(self, started: float, error: Exception, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Retry `fn` within what is left of the budget that began at `started`.

        The budget covers the first attempt too: a client that retries on its own (as
        redis-py's default client does) must not stretch it.
        """
        left = self.retry_seconds - (time.monotonic() - started)
        try:
            if left > 0:
                return tenacity.Retrying(
                    stop=tenacity.stop_after_delay(left),
                    wait=tenacity.wait_exponential(multiplier=0.1, max=1.0),
                    retry=tenacity.retry_if_exception_type(_TRANSIENT),
                    reraise=True,
                )(fn, *args, **kwargs)
        except _TRANSIENT as exc:
            error = exc
        except redis.RedisError as exc:
            raise StorageError(f"Redis at {self.where} refused the command: {exc}") from None
        raise RedisUnavailableError(
            f"cannot reach Redis at {self.where} (gave up after {time.monotonic() - started:.1f}s): {error}"
        ) from None

    def ping(self) -> None:
        self._call(self.redis.ping)

    # -- jobs ------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[tuple[str, str, int | None, bool, float | None, Mapping[str, Any]]]) -> list[bool]:
        """Write jobs and push them, all in one round trip; False where the id was taken.

        Each entry is (id, queue, ttl, at_front, run_at, fields). A retry after a lost
        reply may find its own job already written: that counts as written.
        """

        calls = []
        for job_id, queue, ttl, at_front, run_at, fields in jobs:
            flat = [x for pair in fields.items() for x in pair]
            job_keys = _new_job_keys(job_id, queue)
            options: list[Any] = [job_id, queue, "" if ttl is None else ttl, int(at_front), "" if run_at is None else run_at]
            calls.append((self.scripts.enqueue, job_keys, options + flat))
        started = time.monotonic()
        try:
            return [bool(r) for r in self._run_scripts(calls)]
        except _TRANSIENT as exc:
            first_error: Exception = exc
        except redis.RedisError as exc:
            raise StorageError(f"Redis at {self.where} refused the command: {exc}") from None
        return [True for _ in self._retry(started, first_error, self._run_scripts, calls)]

    def enqueue_ticks(
        self, ticks: Sequence[tuple[str, float, bool, str, str, int | None, float | None, dict[str, Any]]]
    ) -> list[int]:
        """Enqueue periodic ticks, each at most once across workers, in one round trip.

        Each entry is (periodic name, tick, past, job id, queue, ttl, run_at, fields);
        see lua/periodic.lua for the answers (1 enqueued, 0 already done, 2 remembered).
        Safe to re-run after a lost reply: a tick is never enqueued twice.
        """
        calls = []
        for name, tick, past, job_id, queue, ttl, run_at, fields in ticks:
            flat = [x for pair in fields.items() for x in pair]
            tick_keys = [keys.periodic(name), *_new_job_keys(job_id, queue)]
            options = [repr(tick), int(past), job_id, queue, "" if ttl is None else ttl, "" if run_at is None else repr(run_at)]
            calls.append((self.scripts.periodic, tick_keys, options + flat))
        return [int(r) for r in self._call(self._run_scripts, calls)] if calls else []

    def _run_scripts(self, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Run script calls in one pipelined round trip.

        redis-py would check every script with SCRIPT EXISTS before each pipeline (an
        extra round trip); EVALSHA alone is enough, and a script Redis lost (a restart)
        is loaded and that one call re-run.
        """
        if len(calls) == 1:
            script, script_keys, args = calls[0]
            return [script(keys=script_keys, args=args)]
        pipe = self.redis.pipeline(transaction=False)
        for script, script_keys, args in calls:
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
        results = pipe.execute(raise_on_error=False)
        for i, result in enumerate(results):
            if isinstance(result, redis.exceptions.NoScriptError):
                script, script_keys, args = calls[i]
                results[i] = script(keys=script_keys, args=args)
            elif isinstance(result, Exception):
                raise result
        return results

    def fetch(self, job_ids: Sequence[str]) -> list[Fields | None]:
        """Every field of each job (None where it does not exist), packed or not.

        A transaction, so that a claim unpacking a job between the two reads cannot hide it.
        """

        def run() -> list[Fields | None]:
            pipe = self.redis.pipeline(transaction=True)
            for job_id in job_ids:
                pipe.hgetall(keys.job(job_id))
                pipe.hget(keys.packed(job_id), job_id)
            replies = pipe.execute()
            return [_job_fields(raw, packed) for raw, packed in zip(replies[0::2], replies[1::2])]

        return self._call(run)

    def fields(self, job_id: str, *names: str) -> list[bytes | None]:
        """Some fields of one job (all None if it does not exist); a transaction, as `fetch`."""

        def run() -> list[bytes | None]:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hmget(keys.job(job_id), names)
            pipe.hget(keys.packed(job_id), job_id)
            values, packed = pipe.execute()
            if packed is None:
                return values
            fields = _job_fields({}, packed) or {}
            return [fields.get(name) for name in names]

        return self._call(run)

    def update(self, job_id: str, fields: Fields) -> bool:
        """Set fields on an existing job; False if it does not exist."""
        flat = [x for pair in fields.items() for x in pair]
        return bool(self._call(self.scripts.update, keys=[keys.job(job_id), keys.packed(job_id)], args=[job_id, *flat]))

    def delete(self, job_id: str, queue: str) -> None:
        """Remove a job from its queue, every registry and Redis, atomically."""

        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrem(keys.queue(queue), 0, job_id)
            for kind in keys.REGISTRIES:
                pipe.zrem(keys.registry(kind, queue), job_id)
            pipe.delete(keys.job(job_id), keys.done(job_id))
            pipe.hdel(keys.packed(job_id), job_id)
            pipe.execute()

        self._call(run)

    def cancel(self, job_id: str, queue: str, now: float, keep: int) -> str | None:
        """'ok', or the status that prevents canceling (None: no such job)."""
        result = self._call(
            self.scripts.cancel,
            keys=[
                keys.job(job_id),
                keys.queue(queue),
                keys.registry("scheduled", queue),
                keys.registry("canceled", queue),
                keys.done(job_id),
                keys.packed(job_id),
            ],
            args=[job_id, now, keep],
        )
        return result.decode() if result else None

    def requeue(self, kind: str, queue: str, job_id: str, now: float) -> str:
        """Move a job from a registry back onto its queue: 'ok', 'absent' or 'expired'."""
        result = self._call(
            self.scripts.requeue,
            keys=[keys.registry(kind, queue), keys.job(job_id), keys.queue(queue), keys.wake(queue), keys.done(job_id)],
            args=[job_id, now],
        )
        return result.decode()

    def start_waiting(self, job_id: str) -> str | None:
        """The job's status, after asking for an end signal if it has not ended."""
        status = self._call(self.scripts.wait, keys=[keys.job(job_id), keys.packed(job_id)], args=[job_id])
        return status.decode() if status else None

    def wait_signal(self, job_id: str, timeout: float) -> str | None:
        """Block until the job's end is signalled ('finished' or 'failed'), or None after `timeout`.

        BLMOVE from the done list onto itself leaves the signal for other waiters.
        """
        key = keys.done(job_id)
        signal = self._call(self.redis.blmove, key, key, min(timeout, self.block_seconds), "LEFT", "RIGHT")
        return signal.decode() if signal is not None else None

    # -- queues and registries -------------------------------------------------------------

    def queue_names(self) -> list[str]:
        return sorted(name.decode() for name in self._call(self.redis.smembers, keys.QUEUES))

    def queue_count(self, queue: str) -> int:
        return self._call(self.redis.llen, keys.queue(queue))

    def empty_queue(self, queue: str) -> int:
        return self._call(self.scripts.empty, keys=[keys.queue(queue), keys.wake(queue)], args=[keys.JOB, keys.PACKED])

    def queue_ids(self, queue: str, start: int = 0, end: int = -1) -> list[str]:
        return [i.decode() for i in self._call(self.redis.lrange, keys.queue(queue), start, end)]

    def registry_count(self, kind: str, queue: str, min_score: float | str = "-inf") -> int:
        """Entries scored at or above `min_score` (pass now to skip expired ones)."""
        return self._call(self.redis.zcount, keys.registry(kind, queue), min_score, "+inf")

    def registry_ids(
        self, kind: str, queue: str, min_score: float | str = "-inf", start: int = 0, end: int = -1
    ) -> list[str]:
        num = -1 if end < 0 else end - start + 1
        ids = self._call(
            self.redis.zrangebyscore, keys.registry(kind, queue), min_score, "+inf", start=start, num=num
        )
        return [i.decode() for i in ids]

    def registry_score(self, kind: str, queue: str, job_id: str) -> float | None:
        return self._call(self.redis.zscore, keys.registry(kind, queue), job_id)

    def registry_remove(self, kind: str, queue: str, job_id: str, delete_job: bool = False) -> bool:
        def run() -> bool:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(keys.registry(kind, queue), job_id)
            if delete_job:
                pipe.delete(keys.job(job_id))
            return bool(pipe.execute()[0])

        return self._call(run)

    # -- workers ---------------------------------------------------------------------------

    def claim(
        self, worker: str, queues: Sequence[str], now: float, deadline: float, limit: int
    ) -> tuple[Claimed, float | None]:
        """Promote due scheduled jobs and claim up to `limit` jobs: (claimed, next run-at)."""
        reply = self._call_once(self._run_scripts, [self._claim(worker, queues, now, deadline, limit)])
        return _parse_claim(reply[0], worker, now)

    def finish_and_claim(
        self,
        worker: str,
        records: Sequence[Record],
        now: float,
        queues: Sequence[str],
        deadline: float,
        limit: int,
    ) -> tuple[list[int], Claimed, float | None]:
        """Record finished jobs and claim the next batch in the same round trip."""

        calls = [self._finish(worker, records, now), self._claim(worker, queues, now, deadline, limit)]
        recorded, claim = self._call_once(self._run_scripts, calls)
        return list(recorded), *_parse_claim(claim, worker, now)

    def finish(self, worker: str, records: Sequence[Record], now: float) -> list[int]:
        """Record outcomes of claimed jobs (fenced by token): 1 recorded, 0 claim lost."""
        return list(self._call(self._run_scripts, [self._finish(worker, records, now)])[0])

    def _claim(self, worker: str, queues: Sequence[str], now: float, deadline: float, limit: int) -> Any:
        script_keys = [keys.inflight(worker), keys.WORKERS]
        for queue in queues:
            script_keys += [
                keys.queue(queue),
                keys.wake(queue),
                keys.registry("started", queue),
                keys.registry("scheduled", queue),
            ]
        return self.scripts.claim, script_keys, [worker, now, deadline, limit, keys.JOB, keys.PACKED]

    def _finish(self, worker: str, records: Sequence[Record], now: float) -> Any:
        script_keys = [keys.inflight(worker)]
        args: list[Any] = [now, worker]
        counted: set[str] = set()
        for r in records:
            target = {"finished": "finished", "failed": "failed", "scheduled": "scheduled"}.get(r.outcome, "started")
            script_keys += [
                keys.job(r.job_id),
                keys.registry("started", r.queue),
                keys.registry(target, r.queue),
                keys.queue(r.queue),
                keys.wake(r.queue),
                keys.done(r.job_id),
            ]
            args += [r.job_id, r.token, r.outcome, r.payload, r.keep, "" if r.run_at is None else r.run_at,
                     "" if r.micros is None else r.micros]
            if r.outcome in _COUNTED:
                counted.add(r.queue)
        hour = int(now // 3600)
        for queue in counted:  # lua/lib/stats.lua
            script_keys += [keys.queue(queue), keys.stats(queue, hour), keys.totals(queue)]
        return self.scripts.finish, script_keys, args

    def block_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until one of the queues is woken (a job was pushed) or `timeout` passes."""
        wait = max(0.001, min(timeout, self.block_seconds))
        return self._call(self.redis.blpop, [keys.wake(q) for q in queues], wait) is not None

    def heartbeat(
        self, worker: str, deadline: float, info_ttl: int, held: Iterable[tuple[str, str, int]]
    ) -> list[str]:
        """Renew the worker's lease and those of its held (id, queue, token) jobs; return lost ids."""
        script_keys, args = [keys.WORKERS, keys.worker(worker)], [worker, deadline, info_ttl]
        for job_id, queue, token in held:
            script_keys += [keys.job(job_id), keys.registry("started", queue)]
            args += [job_id, token]
        lost = self._call(self.scripts.heartbeat, keys=script_keys, args=args)
        return [i.decode() for i in lost]

    def register_worker(self, worker: str, info: dict[str, str], deadline: float, info_ttl: int) -> None:
        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(keys.worker(worker), mapping=info)
            pipe.expire(keys.worker(worker), info_ttl)
            pipe.zadd(keys.WORKERS, {worker: deadline})
            pipe.execute()

        self._call(run)

    def unregister_worker(self, worker: str) -> None:
        """Forget a worker that holds nothing any more (call after releasing its jobs).

        Its in-flight list is not touched: empty, Redis has already dropped it; not empty,
        the maintenance step must find it through the worker's expiring lease."""

        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(keys.WORKERS, worker)
            pipe.delete(keys.worker(worker))
            pipe.execute()

        self._call(run)

    def workers(self) -> list[tuple[str, float]]:
        return [(n.decode(), s) for n, s in self._call(self.redis.zrange, keys.WORKERS, 0, -1, withscores=True)]

    def worker_details(self) -> list[tuple[str, float, dict[str, str], int]]:
        """(name, lease deadline, what it registered, jobs it holds) per worker (two round trips)."""
        workers = self.workers()
        if not workers:
            return []

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for name, _ in workers:
                pipe.hgetall(keys.worker(name))
                pipe.llen(keys.inflight(name))
            return pipe.execute()

        replies = self._call(run)
        return [
            (name, deadline, {k.decode(): v.decode() for k, v in info.items()}, held)
            for (name, deadline), info, held in zip(workers, replies[0::2], replies[1::2])
        ]

    def inflight(self, worker: str) -> list[str]:
        return [i.decode() for i in self._call(self.redis.lrange, keys.inflight(worker), 0, -1)]

    def reap(self, worker: str, now: float, max_deaths: int, default_failure_ttl: int) -> tuple[list[str], list[str]]:
        """Recover at once every job a worker that is known dead held (two round trips).

        Returns (recovered ids, abandoned ids).
        """

        def held() -> list[tuple[str, str]]:
            ids = [i.decode() for i in self.redis.lrange(keys.inflight(worker), 0, -1)]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(keys.job(job_id), keys.Field.QUEUE)
                pipe.exists(keys.job(job_id))
            exists = pipe.execute()
            return [(i, q.decode() if q else keys.DEFAULT_QUEUE) for i, q, e in zip(ids, exists[0::2], exists[1::2]) if e]

        jobs = self._call(held)[::-1]  # each goes back to the queue's front: last first keeps their order
        script_keys, args = [keys.inflight(worker), keys.WORKERS, keys.worker(worker)], [now, worker, max_deaths, default_failure_ttl]
        for job_id, queue in jobs:
            script_keys += [
                keys.job(job_id),
                keys.registry("started", queue),
                keys.queue(queue),
                keys.wake(queue),
                keys.registry("failed", queue),
                keys.done(job_id),
            ]
            args.append(job_id)
        recovered, abandoned = self._call(self.scripts.reap, keys=script_keys, args=args)
        return [i.decode() for i in recovered], [i.decode() for i in abandoned]

    def maintain(
        self, now: float, token: str, lock_ms: int, max_deaths: int, default_failure_ttl: int
    ) -> tuple[list[str], list[str], list[str]] | None:
        """The maintenance step (two round trips: the queue names, then the script).

        Returns (recovered ids, abandoned ids, dead workers), or None if another worker
        holds the maintenance lock.
        """
        script_keys = [keys.MAINTENANCE_LOCK, keys.WORKERS]
        for queue in self.queue_names():
            script_keys += [
                keys.queue(queue),
                keys.wake(queue),
                keys.registry("started", queue),
                keys.registry("failed", queue),
                keys.registry("finished", queue),
                keys.registry("canceled", queue),
            ]
        args = [
            now, token, lock_ms, keys.JOB, keys.INFLIGHT, keys.worker(""), max_deaths, default_failure_ttl,
            keys.done(""), keys.queue(""), keys.wake(""),
        ]
        result = self._call(self.scripts.maintain, keys=script_keys, args=args)
        if not result:
            return None
        recovered, abandoned, dead = ([x.decode() for x in part] for part in result)
        return recovered, abandoned, dead

    # -- reading for the dashboard, `taskit info` and the metrics ---------------------------

    def queue_counts(self, queues: Sequence[str], min_scores: Mapping[str, float | str]) -> list[dict[str, int]]:
        """Per queue: {"queued": n, <registry kind>: n, ...} in one round trip, counting the
        registry entries scored at or above `min_scores[kind]` (now, to skip expired ones)."""

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues:
                pipe.llen(keys.queue(queue))
                for kind, low in min_scores.items():
                    pipe.zcount(keys.registry(kind, queue), low, "+inf")
            return pipe.execute()

        replies = self._call(run) if queues else []
        names, width = ["queued", *min_scores], 1 + len(min_scores)
        return [dict(zip(names, replies[i:i + width])) for i in range(0, len(replies), width)]

    def oldest_enqueued(self, queues: Sequence[str]) -> list[float | None]:
        """Per queue, when the job at its head was enqueued (Unix seconds; None: the queue is
        empty, or its head just left). Two round trips for all queues."""

        def heads() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues:
                pipe.lindex(keys.queue(queue), 0)
            return pipe.execute()

        ids = [None if head is None else head.decode() for head in self._call(heads)] if queues else []
        present = [job_id for job_id in ids if job_id is not None]
        if not present:
            return [None for _ in ids]

        def enqueued() -> list[Any]:
            pipe = self.redis.pipeline(transaction=True)
            for job_id in present:
                pipe.hget(keys.job(job_id), keys.Field.ENQUEUED)
                pipe.hget(keys.packed(job_id), job_id)
            return pipe.execute()

        replies = self._call(enqueued)
        times: dict[str, float | None] = {}
        for job_id, own, packed in zip(present, replies[0::2], replies[1::2]):
            raw = own if own is not None else (_job_fields({}, packed) or {}).get(keys.Field.ENQUEUED)
            try:
                times[job_id] = float(raw) / 1000 if raw is not None else None
            except ValueError:
                times[job_id] = None
        return [None if job_id is None else times[job_id] for job_id in ids]

    def held_jobs(self, workers: Sequence[str], limit: int = 10) -> list[list[tuple[str, dict[str, bytes | None]]]]:
        """Per worker, the first `limit` jobs of its in-flight list (the one running first, then
        those claimed with it), each as (id, {func, status, started_at, queue}); two round trips."""

        def lists() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for worker in workers:
                pipe.lrange(keys.inflight(worker), 0, limit - 1)
            return pipe.execute()

        held = [[i.decode() for i in ids] for ids in self._call(lists)] if workers else []
        every = [job_id for ids in held for job_id in ids]
        if not every:
            return [[] for _ in held]
        names = (keys.Field.FUNC, keys.Field.STATUS, keys.Field.STARTED, keys.Field.QUEUE)

        def details() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in every:
                pipe.hmget(keys.job(job_id), names)
            return pipe.execute()

        found = dict(zip(every, self._call(details)))
        labels = ("func", "status", "started_at", "queue")
        return [[(job_id, dict(zip(labels, found[job_id]))) for job_id in ids] for ids in held]

    def last_ticks(self, names: Sequence[str]) -> list[float | None]:
        """The last tick enqueued of each periodic task (Unix seconds; None: never)."""
        values = self._call(self.redis.mget, [keys.periodic(name) for name in names]) if names else []
        ticks: list[float | None] = []
        for value in values:
            try:
                ticks.append(float(value) if value is not None else None)
            except ValueError:
                ticks.append(None)
        return ticks

    def minute_counts(self, queues: Sequence[str], first_minute: int, last_minute: int) -> list[dict[str, dict[int, int]]]:
        """Per queue, jobs {"d": finished, "f": failed, "r": retried} per Unix minute in
        [first_minute, last_minute] (lua/lib/stats.lua); minutes without any are left out.
        One round trip."""
        hours = range(first_minute // 60, last_minute // 60 + 1)

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues:
                for hour in hours:
                    pipe.hgetall(keys.stats(queue, hour))
            return pipe.execute()

        replies = self._call(run) if queues else []
        result = []
        for i in range(len(queues)):
            counts: dict[str, dict[int, int]] = {"d": {}, "f": {}, "r": {}}
            for reply in replies[i * len(hours):(i + 1) * len(hours)]:
                for field, value in reply.items():
                    kind, _, minute = field.decode().partition(":")
                    try:
                        at, n = int(minute), int(value)
                    except ValueError:
                        continue
                    if kind in counts and first_minute <= at <= last_minute:
                        counts[kind][at] = n
            result.append(counts)
        return result

    def task_totals(self, queues: Sequence[str]) -> list[dict[str, dict[str, int]]]:
        """Per queue, per task, its counters since the start (lua/lib/stats.lua): {"d", "f",
        "r", "us", "h<bound>"...} -> number. One round trip."""

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues:
                pipe.hgetall(keys.totals(queue))
            return pipe.execute()

        result = []
        for reply in self._call(run) if queues else []:
            tasks: dict[str, dict[str, int]] = {}
            for field, value in reply.items():
                kind, _, task = field.decode(errors="replace").partition(":")
                try:
                    tasks.setdefault(task, {})[kind] = int(value)
                except ValueError:
                    continue
            result.append(tasks)
        return result



class Record:
    """What happened to one claimed job, as `finish.lua` takes it.

    micros, how long it ran in microseconds, feeds the run-time histograms
    (lua/lib/stats.lua); None: refused before running, or not measured."""

    __slots__ = ("job_id", "keep", "micros", "outcome", "payload", "queue", "run_at", "token")

    def __init__(
        self,
        job_id: str,
        queue: str,
        token: int,
        outcome: str,
        payload: bytes | str = b"",
        keep: int = 0,
        run_at: float | None = None,
        micros: int | None = None,
    ) -> None:
        self.job_id, self.queue, self.token, self.outcome = job_id, queue, token, outcome
        self.payload, self.keep, self.run_at = payload, keep, run_at
        self.micros = micros

    def __repr__(self) -> str:
        return f"Record({self.job_id!r}, {self.outcome!r}, token={self.token})"


#: the outcomes the statistics count (a released or interrupted job did not run to an end)
_COUNTED = frozenset({"finished", "failed", "retry", "scheduled"})


def _new_job_keys(job_id: str, queue: str) -> list[str]:
    """The keys lua/lib/add_job.lua writes: job hash, packed-job bucket, queue, wake list,
    schedule, queue set."""
    return [keys.job(job_id), keys.packed(job_id), keys.queue(queue), keys.wake(queue), keys.registry("scheduled", queue), keys.QUEUES]


def _job_fields(raw: dict[bytes, bytes], packed: bytes | None) -> Fields | None:
    """A job's fields from its hash, or else from its packed entry (lib/packed.lua); an
    unreadable entry yields only its status, so reading the job reports it corrupt."""
    if raw:
        return {k.decode(): v for k, v in raw.items()}
    if packed is None:
        return None
    try:
        flat = msgpack.unpackb(packed, raw=True)
        fields = {flat[i].decode(): _bytes(flat[i + 1]) for i in range(0, len(flat), 2)}
    except (ValueError, TypeError, IndexError, AttributeError, msgpack.UnpackException):
        fields = {}
    fields[keys.Field.STATUS] = b"queued"
    return fields


def _bytes(value: bytes | int) -> bytes:
    """A packed value as Redis would return it from a hash (the enqueue time is packed as a number)."""
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, bytes):
        return value
    raise TypeError(f"a packed field is a {type(value).__name__}")


Claimed = list[tuple[str, int, int, Fields]]


def _parse_claim(reply: Any, worker: str, now: float) -> tuple[Claimed, float | None]:
    """(id, token, queue index, fields) per claimed job, and the next scheduled run-at.

    claim.lua returns each job's fields as they were before it marked the claim; the
    claim's own writes are known here and filled in.
    """
    flat, next_run_at = reply
    claimed = []
    started = {
        keys.Field.STATUS: b"started",
        keys.Field.STARTED: b"%d" % round(now * 1000),
        keys.Field.WORKER: worker.encode(),
    }
    for i in range(0, len(flat), 4):
        pairs = flat[i + 3]
        fields = {pairs[j].decode(): pairs[j + 1] for j in range(0, len(pairs), 2)}
        fields.update(started)
        fields[keys.Field.ATTEMPTS] = b"%d" % flat[i + 1]
        claimed.append((flat[i].decode(), int(flat[i + 1]), int(flat[i + 2]), fields))
    return claimed, float(next_run_at) if next_run_at else None
