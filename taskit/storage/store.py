"""The one module that talks to Redis.

Everything above it (jobs, queues, registries, the worker) calls a `Store` method and
never a Redis command, so the round trips of each operation can be read off this file:
each public method is one round trip unless its docstring says otherwise.

Transient failures (a lost connection, a failover: see `transient`) are retried for a
bounded time (`retry_seconds`) with backoff and then raised as `RedisUnavailableError`;
any other Redis error becomes `StorageError`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgpack
import redis
import tenacity
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import (
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from ..connections import Client, describe
from ..exceptions import ConfigurationError, RedisUnavailableError, StorageError
from . import keys
from .scripts import Scripts

T = TypeVar("T")
Fields = dict[str, bytes]
#: a job read to be shown (Store.peek): its fields, and the length of each one not read
Peek = tuple[Fields, dict[str, int]]
#: in the lengths of a Peek: the job waits as one packed entry of that length, not read
PACKED_ENTRY = "packed entry"

log = logging.getLogger("taskit.storage")

#: how long a producer call may wait for an unreachable Redis before it raises, its first
#: attempt included (so a client's socket timeout, config.SOCKET_TIMEOUT, must be shorter)
RETRY_SECONDS = 5.0
#: longest single blocking wait (halved to stay below a client's shorter socket timeout)
BLOCK_SECONDS = 5.0

#: how many queue names one maintenance step visits (besides the worker's own queues); a
#: step costs Redis a few microseconds per queue (lua/maintain.lua, lua/next_queues.lua)
MAINTENANCE_CHUNK = 200
#: how many waiting jobs one call of lua/empty.lua deletes (a few milliseconds of Redis)
EMPTY_CHUNK = 500
#: how long a job failed as corrupt (its record overwritten) is kept: a year, as a failed job
CORRUPT_KEEP = 31_536_000

#: what a Redis client can raise
_ERRORS = (redis.RedisError, RedisClusterException)
#: errors an outage or a failover causes, which go away by themselves
_TRANSIENT = (
    # a lost connection; also a Sentinel-managed master that was demoted (redis-py turns
    # its READONLY into a ConnectionError) and no master known while the sentinels elect one
    redis.ConnectionError,
    redis.TimeoutError,
    ReadOnlyError,  # a demoted master reached directly: it is a replica now
    ClusterError,  # CLUSTERDOWN or MASTERDOWN in a cluster failover; "TTL exhausted" after a storm of MOVED
    TryAgainError,  # TRYAGAIN: keys of one call split by a slot migration
    SlotNotCoveredError,  # a slot with no master in the client's map, while it refreshes the map
)


def transient(error: BaseException) -> bool:
    """Whether retrying may help: the error is an outage or a failover, not a refusal."""
    if isinstance(error, _TRANSIENT):
        return True
    # a cluster client that reached none of its nodes while refreshing its slot map
    return isinstance(error, RedisClusterException) and isinstance(error.__cause__, _TRANSIENT)

#: (the worker holds nothing else, (id, token) of a job it holds that no longer runs alone,
#: or None): see `Store.claim` and lua/claim.lua
Alone = tuple[bool, "tuple[str, int] | None"]
ALONE: Alone = (True, None)


class Store:
    """Redis operations on taskit's keys for one client. Get one with `Store.of(connection)`."""

    _stores: ClassVar[weakref.WeakKeyDictionary[Client, Store]] = weakref.WeakKeyDictionary()
    _stores_lock = threading.Lock()

    def __init__(self, connection: Client, retry_seconds: float = RETRY_SECONDS) -> None:
        # typed loosely: redis-py's stubs allow str replies, but taskit refuses
        # decode_responses (config.check_connection), so every reply here is bytes
        self.redis: Any = connection
        self.where = describe(connection)
        self.scripts = Scripts(connection)
        self.retry_seconds = retry_seconds
        self._written = _Written()
        #: calls that found the connection lost, so far (a Redis restart may have lost what
        #: the caller keeps there: the worker registers again when this changes)
        self.lost_connections = 0
        # a block must end well before the socket times out, or it reads as an outage
        socket_timeout = connection.get_connection_kwargs().get("socket_timeout")
        self.block_seconds = min(BLOCK_SECONDS, socket_timeout / 2) if socket_timeout else BLOCK_SECONDS

    @classmethod
    def of(cls, connection: Client) -> Store:
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
        except _ERRORS as exc:
            first_error = self._transient_or_raise(exc)
        return self._retry(started, first_error, fn, *args, **kwargs)

    def _call_once(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an operation that must not be repeated blindly (a claim: a lost reply would
        leave jobs claimed that the caller never saw); a lost connection raises at once,
        and the worker releases what it does not know of when Redis is back."""
        try:
            return fn(*args)
        except _ERRORS as exc:
            error = self._transient_or_raise(exc)
        self.lost_connections += 1
        raise RedisUnavailableError(f"cannot reach Redis at {self.where}: {error}")

    def _transient_or_raise(self, error: Exception) -> Exception:
        """`error` if it is transient (worth retrying); else it is raised as a StorageError."""
        if transient(error):
            return error
        raise self._refused(error) from None

    def _retry(self, started: float, error: Exception, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Retry `fn` within what is left of the budget that began at `started`.

        The budget bounds the whole wait, the first attempt included: a client that retries
        on its own (as redis-py's default client does) must not stretch it, and no attempt
        starts that would end past the budget if it took as long as the slowest one so far
        (against a frozen Redis, every attempt lasts a whole socket timeout).
        """
        self.lost_connections += 1
        slowest = time.monotonic() - started
        backoff = tenacity.wait_exponential(multiplier=0.1, max=1.0)

        def attempt() -> T:
            nonlocal slowest
            began = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                slowest = max(slowest, time.monotonic() - began)

        def out_of_budget(state: tenacity.RetryCallState | None) -> bool:
            wait = backoff(state) if state is not None else 0.0
            return time.monotonic() - started + wait + slowest > self.retry_seconds

        try:
            if not out_of_budget(None):
                return tenacity.Retrying(
                    stop=out_of_budget,
                    wait=backoff,
                    retry=tenacity.retry_if_exception(transient),
                    reraise=True,
                )(attempt)
        except _ERRORS as exc:
            error = self._transient_or_raise(exc)
        raise RedisUnavailableError(
            f"cannot reach Redis at {self.where} (tried for {time.monotonic() - started:.1f}s): {error}"
        )

    def ping(self) -> None:
        self._call(self.redis.ping)

    # -- jobs ------------------------------------------------------------------------

    def enqueue(
        self,
        jobs: Sequence[tuple[str, str, int | None, bool, float | None, Mapping[str, Any]]],
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> Enqueued:
        """Write jobs and push them, all in one round trip; False where the id was taken.

        Each entry is (id, queue, ttl, at_front, run_at, fields). A retry after a lost
        reply (ours, or redis-py's own) may find its own job already written:
        lua/enqueue.lua tells it (same function, arguments and enqueue time, to the
        millisecond) from an older job with the same id, which is still reported as taken
        (see `_Written` for the same job enqueued twice by this process).

        With `replicas`, `WAIT replicas timeout` follows the scripts in the same pipeline
        (so on the same connection, whose writes WAIT counts) and `acknowledged` is how
        many replicas have every job written. A job a retry found already written counts as
        confirmed by none: WAIT covers only the writes of its own connection, not those of
        the attempt whose reply was lost.
        """
        if replicas:
            self.check_replica_wait(replicas, replica_timeout)
        if not jobs:
            return Enqueued([], None)
        calls = []
        for job_id, queue, ttl, at_front, run_at, fields in jobs:
            flat = [x for pair in fields.items() for x in pair]
            job_keys = _new_job_keys(job_id, queue)
            options: list[Any] = [job_id, queue, "" if ttl is None else ttl, int(at_front), "" if run_at is None else run_at]
            calls.append((self.scripts.enqueue, job_keys, options + flat))
        wait = (replicas, max(1, math.ceil(replica_timeout * 1000))) if replicas else None  # WAIT's 0 is forever
        started = time.monotonic()
        try:
            results = self._run_scripts(calls, wait=wait)
        except _ERRORS as exc:
            results = self._retry(started, self._transient_or_raise(exc), self._run_scripts, calls, wait=wait)
        acknowledged = None
        if wait is not None:
            acknowledged = int(results.pop())
            if any(r == 2 for r in results):
                acknowledged = 0
        return Enqueued([self._written.written(job[0], job[5], r) for job, r in zip(jobs, results)], acknowledged)

    def check_replica_wait(self, replicas: int, timeout: float) -> None:
        """Refuse a replica wait this client cannot do, before anything is written: WAIT on a
        cluster client (redis-py sends a keyless command to any node, not the one that wrote),
        or one longer than a blocking wait may be (it would read as a lost connection)."""
        if replicas and isinstance(self.redis, RedisCluster):
            raise ConfigurationError(
                "replicas= is not supported with a Redis Cluster client yet (taskit's jobs do not run on a "
                "cluster yet; see docs/scaling.md); nothing was enqueued"
            )
        if replicas and timeout > self.block_seconds:
            raise ConfigurationError(
                f"replica_timeout must be at most {self.block_seconds:g}s with this client (half its socket "
                f"timeout, at most {BLOCK_SECONDS:g}s), not {timeout:g}: a longer wait reads as a lost "
                "connection; raise the client's socket_timeout to wait longer"
            )

    def enqueue_ticks(
        self, ticks: Sequence[tuple[str, float, bool, str, str, int | None, float | None, dict[str, Any]]]
    ) -> list[int | StorageError]:
        """Enqueue periodic ticks, each at most once across workers, in one round trip.

        Each entry is (periodic name, tick, past, job id, queue, ttl, run_at, fields);
        see lua/periodic.lua for the answers (1 enqueued, 0 already done, 2 remembered,
        3 and 4 an unreadable last tick replaced). A tick Redis refused (a key of the
        wrong type) gets its StorageError in its place, so the others still count.
        Safe to re-run after a lost reply: a tick is never enqueued twice.
        """
        calls = []
        for name, tick, past, job_id, queue, ttl, run_at, fields in ticks:
            flat = [x for pair in fields.items() for x in pair]
            tick_keys = [keys.periodic(name), *_new_job_keys(job_id, queue)]
            options = [repr(tick), int(past), job_id, queue, "" if ttl is None else ttl, "" if run_at is None else repr(run_at)]
            calls.append((self.scripts.periodic, tick_keys, options + flat))
        if not calls:
            return []
        results = self._call(self._run_scripts, calls, True)
        return [self._refused(r) if isinstance(r, redis.RedisError) else int(r) for r in results]

    def _refused(self, error: Exception) -> StorageError:
        return StorageError(f"Redis at {self.where} refused the command: {error}")

    def _named(self, replies: list[Any], names: Sequence[str]) -> list[Any]:
        """Replies of a pipeline, one per key of `names`; an error raises StorageError naming its key."""
        for reply, name in zip(replies, names):
            if isinstance(reply, redis.ResponseError):
                raise StorageError(f"Redis at {self.where} refused to read {name}: {reply}")
        return replies

    # Reads for the dashboard, `taskit info` and the metrics show what they can: a key of
    # another type than taskit keeps there (WRONGTYPE), or a member or field that is not what
    # taskit writes, is left out and said in `problems` (a list the caller shows), or, when
    # the caller passes none, logged as a warning. Either way the message names the key.

    def _readable(self, replies: list[Any], read: Sequence[tuple[str, str]], problems: list[str] | None) -> list[Any]:
        """Replies of a pipeline of reads, one per (key, the type it should be) of `read`: a key
        of another type reads as None and is reported ("KEY is a string, not a zset"); any
        other error raises StorageError naming its key."""
        wrong = {}
        for i, (reply, (key, expected)) in enumerate(zip(replies, read)):
            if isinstance(reply, redis.ResponseError):
                if not str(reply).startswith("WRONGTYPE"):
                    raise StorageError(f"Redis at {self.where} refused to read {key}: {reply}")
                replies[i] = None
                wrong[key] = expected
        for key, found in zip(wrong, self._types(list(wrong))):
            if found != "none":  # (gone since)
                _report(problems, f"{key} is a {found}, not a {wrong[key]}")
        return replies

    def _read(self, key: str, expected: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One read of one key; a key of another type raises StorageError saying what it is."""
        try:
            return self._call(fn, *args, **kwargs)
        except StorageError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            found = self._types([key])[0]
        raise StorageError(f"Redis at {self.where} refused to read {key}: WRONGTYPE it is a {found}, not a {expected}")

    def _types(self, names: Sequence[str]) -> list[str]:
        """The Redis type of each key (one round trip; none when `names` is empty)."""
        if not names:
            return []

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.type(name)
            return pipe.execute()

        return [kind.decode(errors="replace") for kind in self._call(run)]

    def _run_scripts(
        self,
        calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]],
        each: bool = False,
        wait: tuple[int, int] | None = None,
    ) -> list[Any]:
        """Run script calls in one pipelined round trip.

        redis-py would check every script with SCRIPT EXISTS before each pipeline (an
        extra round trip); EVALSHA alone is enough, and a script Redis lost (a restart)
        is loaded and that one call re-run. `each`: a call Redis refuses gets its error
        in its place instead of raising (a lost connection or a failover still raises).
        `wait`: (replicas, timeout in ms) for a WAIT after the scripts, whose reply is
        appended to the replies.
        """
        if len(calls) == 1 and not each and wait is None:
            script, script_keys, args = calls[0]
            return [script(keys=script_keys, args=args)]
        results = self._pipeline(calls, wait)
        lost = [i for i, result in enumerate(results) if isinstance(result, redis.exceptions.NoScriptError)]
        if lost and wait is not None:
            # WAIT counts its own connection's writes: the lost scripts are loaded and re-run
            # with a WAIT of their own in one more pipeline (the first WAIT covered the other
            # calls; so when the replicas do not answer, this call waits twice its timeout)
            again = self._pipeline([calls[i] for i in lost], wait, load=True)
            for i, result in zip(lost, again):
                results[i] = result
            first, second = results[-1], again[-1]
            results[-1] = first if isinstance(first, Exception) else second if isinstance(second, Exception) \
                else min(first, second)
        else:
            for i in lost:
                script, script_keys, args = calls[i]
                try:
                    results[i] = script(keys=script_keys, args=args)
                except redis.ResponseError as exc:
                    results[i] = exc
        for result in results:
            refused = isinstance(result, redis.ResponseError) and not transient(result)
            if isinstance(result, Exception) and not (each and refused):
                raise result
        return results

    def _pipeline(
        self, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]], wait: tuple[int, int] | None, load: bool = False
    ) -> list[Any]:
        """EVALSHA each call (after SCRIPT LOAD of its script, with `load`), then WAIT if asked:
        the replies of the calls, then WAIT's."""
        pipe = self.redis.pipeline(transaction=False)
        loaded = {script.sha: script for script, _, _ in calls} if load else {}
        for script in loaded.values():
            pipe.script_load(script.script)
        for script, script_keys, args in calls:
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
        if wait is not None:
            pipe.wait(*wait)
        return pipe.execute(raise_on_error=False)[len(loaded):]

    def fetch(self, job_ids: Sequence[str]) -> list[Fields | None]:
        """Every field of each job (None where it does not exist), packed or not.

        A transaction, so that a claim unpacking a job between the two reads cannot hide it.
        A key of the wrong type raises StorageError naming it.
        """

        def run() -> list[Fields | None]:
            pipe = self.redis.pipeline(transaction=True)
            names = []
            for job_id in job_ids:
                names += [keys.job(job_id), keys.packed(job_id)]
                pipe.hgetall(_raw(names[-2]))
                pipe.hget(names[-1], _raw(job_id))
            replies = self._named(pipe.execute(raise_on_error=False), names)
            return [_job_fields(raw, packed) for raw, packed in zip(replies[0::2], replies[1::2])]

        return self._call(run)

    def peek(self, job_ids: Sequence[str], bound: int) -> list[Peek | StorageError | None]:
        """Each job's fields as `fetch` reads them, to show them: but a field longer than
        `bound` bytes is not read, only its length: (fields, {field: length}). A packed
        entry longer than that (enqueue packs only small jobs) is not read either:
        ({status: queued}, {PACKED_ENTRY: length}). None where a job does not exist; its
        StorageError where its key holds another type (the others are read). One round trip,
        atomic (lua/peek.lua)."""
        if not job_ids:
            return []
        script_keys = [key for job_id in job_ids for key in (keys.job(job_id), keys.packed(job_id))]
        names = list(keys.FIELDS.values())
        reply = self._call(self.scripts.peek, keys=script_keys, args=[bound, len(names), *names, *job_ids])
        rows: list[Peek | StorageError | None] = []
        for item in reply:
            if not item:
                rows.append(None)
            elif item[0] == b"wrongtype":
                key, found = _texts(item[1:3])
                rows.append(StorageError(f"Redis at {self.where} refused to read {key}: WRONGTYPE it is a {found}, not a hash"))
            elif item[0] == b"hash":
                fields, lengths = item[1], item[2]
                rows.append((_text_keys(zip(fields[0::2], fields[1::2])), dict(zip(_texts(lengths[0::2]), lengths[1::2]))))
            elif isinstance(item[1], int):
                rows.append(({keys.Field.STATUS: b"queued"}, {PACKED_ENTRY: item[1]}))
            else:
                rows.append((_job_fields({}, item[1]) or {}, {}))
        return rows

    def fields(self, job_id: str, *names: str) -> list[bytes | None]:
        """Some fields of one job (all None if it does not exist); a transaction, as `fetch`."""

        def run() -> list[bytes | None]:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hmget(keys.job(job_id), names)
            pipe.hget(keys.packed(job_id), job_id)
            values, packed = self._named(pipe.execute(raise_on_error=False), [keys.job(job_id), keys.packed(job_id)])
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

    def cancel(self, job_id: str, queue: str, now: float, keep: int, reason: str = "") -> str | None:
        """'ok' (canceled), 'requested' (running: its worker was told to stop it), or the
        status that prevents canceling (None: no such job)."""
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
            args=[job_id, now, keep, reason, keys.cancel_channel("")],
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
        """The queues that hold something, sorted; names that are not valid queue names are
        left out (see `read_queue_names`)."""
        return self.read_queue_names()[0]

    def read_queue_names(self) -> tuple[list[str], int]:
        """(valid queue names sorted, how many members of the queue set are not valid queue
        names: not UTF-8, or not allowed by keys.NAME; a set of the wrong type counts as 1)."""
        try:
            raw = self._call(self.redis.smembers, keys.QUEUES)
        except StorageError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            return [], 1
        names, unreadable = _names(raw)
        return sorted(names), len(unreadable)

    def queue_count(self, queue: str) -> int:
        return self._read(keys.queue(queue), "list", self.redis.llen, keys.queue(queue))

    def empty_queue(self, queue: str) -> int:
        """Delete every job waiting on the queue; how many were deleted.

        Several round trips, each deleting at most EMPTY_CHUNK jobs (lua/empty.lua): the
        first moves the whole queue aside at once, so what was waiting is deleted, and
        nothing enqueued meanwhile.
        """
        script_keys = [keys.queue(queue), keys.wake(queue), keys.emptying(queue)]
        removed, moved = 0, False
        while True:
            deleted, left, moved_now = self._call(
                self.scripts.empty, keys=script_keys, args=[keys.JOB, keys.PACKED, EMPTY_CHUNK, int(not moved)]
            )
            removed, moved = removed + deleted, moved or bool(moved_now)
            if moved and not left:
                return removed

    def queue_ids(self, queue: str, start: int = 0, end: int = -1, problems: list[str] | None = None) -> list[str]:
        """The ids from `start` to `end` (inclusive); members that are no job id (not UTF-8,
        or not allowed by keys.NAME: written by hand) are left out and reported."""
        key = keys.queue(queue)
        return _ids(key, self._read(key, "list", self.redis.lrange, key, start, end), problems)

    def registry_count(self, kind: str, queue: str, min_score: float | str = "-inf") -> int:
        """Entries scored at or above `min_score` (pass now to skip expired ones)."""
        key = keys.registry(kind, queue)
        return self._read(key, "zset", self.redis.zcount, key, min_score, "+inf")

    def registry_ids(
        self, kind: str, queue: str, min_score: float | str = "-inf", start: int = 0, end: int = -1,
        problems: list[str] | None = None,
    ) -> list[str]:
        """As `queue_ids`, for the entries scored at or above `min_score`."""
        num = -1 if end < 0 else end - start + 1
        key = keys.registry(kind, queue)
        return _ids(key, self._read(key, "zset", self.redis.zrangebyscore, key, min_score, "+inf", start=start, num=num),
                    problems)

    def registry_score(self, kind: str, queue: str, job_id: str) -> float | None:
        key = keys.registry(kind, queue)
        return self._read(key, "zset", self.redis.zscore, key, job_id)

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
        self, worker: str, queues: Sequence[str], now: float, deadline: float, limit: int, alone: Alone = ALONE
    ) -> Claim:
        """Promote due scheduled jobs and claim up to `limit` jobs (see `Claim`).

        `alone`: (the worker holds nothing else, (id, token) of a job it holds that was
        claimed alone and will no longer run alone, or None); see lua/claim.lua."""
        reply = self._call_once(self._run_scripts, [self._claim(worker, queues, now, deadline, limit, alone)])
        return _parse_claim(reply[0], worker, now)

    def finish_and_claim(
        self,
        worker: str,
        records: Sequence[Record],
        now: float,
        queues: Sequence[str],
        deadline: float,
        limit: int,
        alone: Alone = ALONE,
    ) -> tuple[list[int], Claim]:
        """Record finished jobs and claim the next batch in the same round trip."""

        calls = [self._finish(worker, records, now), self._claim(worker, queues, now, deadline, limit, alone)]
        recorded, claim = self._call_once(self._run_scripts, calls)
        return list(recorded), _parse_claim(claim, worker, now)

    def finish(self, worker: str, records: Sequence[Record], now: float) -> list[int]:
        """Record outcomes of claimed jobs (fenced by token): 1 recorded, 0 claim lost, 2
        failed instead (its record, or the registry or queue its outcome goes to, was
        overwritten by another type: lua/finish.lua)."""
        return list(self._call(self._run_scripts, [self._finish(worker, records, now)])[0])

    def _claim(self, worker: str, queues: Sequence[str], now: float, deadline: float, limit: int, alone: Alone) -> Any:
        script_keys = [keys.inflight(worker), keys.WORKERS]
        for queue in queues:
            script_keys += [
                keys.queue(queue),
                keys.wake(queue),
                keys.registry("started", queue),
                keys.registry("scheduled", queue),
                keys.registry("failed", queue),
            ]
        holds_nothing, no_longer_alone = alone
        job_id, token = no_longer_alone or ("", "")
        args = [
            worker, now, deadline, limit, keys.JOB, keys.PACKED, CORRUPT_KEEP, int(holds_nothing), _raw(job_id), token,
            *queues,
        ]
        return self.scripts.claim, script_keys, args

    def _finish(self, worker: str, records: Sequence[Record], now: float) -> Any:
        script_keys: list[str | bytes] = [keys.inflight(worker)]
        args: list[Any] = [now, worker, CORRUPT_KEEP]
        counted: set[str] = set()
        for r in records:
            target = _TARGETS.get(r.outcome, "started")
            job_id, job_key, done_key = _job_wire(r.job_id)
            script_keys += [
                job_key,
                keys.registry("started", r.queue),
                keys.registry(target, r.queue),
                keys.registry("failed", r.queue),
                keys.queue(r.queue),
                keys.wake(r.queue),
                done_key,
            ]
            # the run time rides on the outcome ('finished 1234'), and so does a refusal
            # ('failed refused'): lua/lib/stats.lua
            outcome = f"{r.outcome} refused" if r.refused else r.outcome if r.micros is None else f"{r.outcome} {r.micros}"
            args += [job_id, r.token, outcome, r.payload, r.keep, "" if r.run_at is None else r.run_at, r.queue]
            if r.outcome in _COUNTED:
                counted.add(r.queue)
        hour = int(now // 3600)
        for queue in counted:  # lua/lib/stats.lua
            script_keys += [keys.queue(queue), keys.stats(queue, hour), keys.totals(queue)]
        return self.scripts.finish, script_keys, args

    def block_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until one of the queues is woken (a job was pushed) or `timeout` passes.

        A wake list overwritten by another type counts as a wake: the claim that follows
        repairs it (lua/claim.lua)."""
        wait = max(0.001, min(timeout, self.block_seconds))
        try:
            return self._call(self.redis.blpop, [keys.wake(q) for q in queues], wait) is not None
        except StorageError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            return True

    def heartbeat(
        self,
        worker: str,
        deadline: float,
        info_ttl: int,
        held: Iterable[tuple[str, str, int]],
        stall_began: float | None = None,
        grace: float = 0.0,
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Renew the worker's lease and those of its held (id, queue, token) jobs.

        Returns the ids of claims it lost, and (id, reason) of held jobs whose cancel was
        requested (a backup for a missed message on the worker's cancel channel).
        stall_began: when a stall began, if the worker could not renew for more than half its
        lease: verdicts on leases that ran out since are held for `grace` seconds
        (lua/lib/verdicts.lua).
        """
        script_keys: list[str | bytes] = [keys.WORKERS, keys.worker(worker), keys.MAINTENANCE]
        args: list[Any] = [worker, deadline, info_ttl, "" if stall_began is None else repr(stall_began), repr(grace)]
        for job_id, queue, token in held:
            wire_id, job_key, _ = _job_wire(job_id)
            script_keys += [job_key, keys.registry("started", queue)]
            args += [wire_id, token]
        lost, canceled = self._call(self.scripts.heartbeat, keys=script_keys, args=args)
        pairs = [(_text(canceled[i]), canceled[i + 1].decode(errors="replace")) for i in range(0, len(canceled), 2)]
        return [_text(i) for i in lost], pairs

    def cancel_requests(self, worker: str) -> CancelRequests:
        """A subscription to the worker's cancel channel (its own connection; see the class)."""
        return CancelRequests(self, keys.cancel_channel(worker))

    def register_worker(self, worker: str, info: dict[str, str], deadline: float, info_ttl: int) -> None:
        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(keys.worker(worker), mapping=info)
            pipe.expire(keys.worker(worker), info_ttl)
            pipe.zadd(keys.WORKERS, {worker: deadline})
            pipe.execute()

        self._call(run)

    def update_worker(self, worker: str, info: dict[str, str], info_ttl: int) -> None:
        """Change fields of what a worker registered (its lease is the heartbeat's business)."""

        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(keys.worker(worker), mapping=info)
            pipe.expire(keys.worker(worker), info_ttl)
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

    def workers(self, problems: list[str] | None = None) -> list[tuple[str, float]]:
        """(name, lease deadline) of each registered worker (none if the workers zset was
        overwritten by another type, which is reported: every live worker adds itself back at
        its next heartbeat)."""

        def run() -> list[Any]:
            return self.redis.pipeline(transaction=False).zrange(keys.WORKERS, 0, -1, withscores=True).execute(
                raise_on_error=False
            )

        (members,) = self._readable(self._call(run), [(keys.WORKERS, "zset")], problems)
        return [(name.decode(errors="replace"), deadline) for name, deadline in members or []]

    def worker_details(self, problems: list[str] | None = None) -> list[tuple[str, float, dict[str, str], int]]:
        """(name, lease deadline, what it registered, jobs it holds) per worker (two round trips).
        A worker hash or in-flight list of another type reads as empty, and is reported."""
        workers = self.workers(problems)
        if not workers:
            return []
        read = [(key, kind) for name, _ in workers for key, kind in ((keys.worker(name), "hash"), (keys.inflight(name), "list"))]

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for name, _ in workers:
                pipe.hgetall(keys.worker(name))
                pipe.llen(keys.inflight(name))
            return pipe.execute(raise_on_error=False)

        replies = self._readable(self._call(run), read, problems)
        return [
            (name, deadline, {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (info or {}).items()}, held or 0)
            for (name, deadline), info, held in zip(workers, replies[0::2], replies[1::2])
        ]

    def inflight(self, worker: str) -> list[str]:
        """The ids in a worker's in-flight list (see `_text` for ids that are not UTF-8)."""
        return [_text(i) for i in self._call(self.redis.lrange, keys.inflight(worker), 0, -1)]

    def reap(self, worker: str, now: float, max_deaths: int, default_failure_ttl: int) -> tuple[list[str], list[str]]:
        """Recover at once every job a worker that is known dead held (two round trips).

        Returns (recovered ids, abandoned ids). A job whose queue cannot be read (its key
        holds another type, its queue field is no queue name) is left where it is: its
        lease runs out and the maintenance step, which finds it through its queue's started
        registry, recovers it then.
        """

        def held() -> list[tuple[str, str]]:
            ids = [i for i in map(keys.readable_name, self.redis.lrange(keys.inflight(worker), 0, -1)) if i]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(keys.job(job_id), keys.Field.QUEUE)
                pipe.exists(keys.job(job_id))
            replies = pipe.execute(raise_on_error=False)
            jobs = []
            for job_id, queue, exists in zip(ids, replies[0::2], replies[1::2]):
                if isinstance(queue, Exception) or exists != 1:
                    continue  # not a hash (left to its lease), or gone
                name = keys.DEFAULT_QUEUE if queue is None else keys.readable_name(queue)
                if name is not None:
                    jobs.append((job_id, name))
            return jobs

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
            args += [job_id, queue]
        recovered, abandoned, failed = self._call(self.scripts.reap, keys=script_keys, args=args)
        if failed:
            log.error("failed %d job(s) of worker %s that could not go back to their queue (see their exc_info): %s",
                      len(failed), worker, ", ".join(_texts(failed)))
        return _texts(recovered), _texts(abandoned)

    def maintain(
        self,
        now: float,
        token: str,
        lock_ms: int,
        max_deaths: int,
        default_failure_ttl: int,
        queues: Sequence[str] = (),
        stall_began: float | None = None,
        grace: float = 0.0,
    ) -> Maintenance | None:
        """The maintenance step, or None if another worker holds the maintenance lock.

        Two round trips: lua/next_queues.lua takes the lock and picks the next
        MAINTENANCE_CHUNK names of the queue set (a cursor in Redis walks the whole set,
        step after step), then lua/maintain.lua does the work on those queues and on
        `queues` (the worker's own, visited at every step). Members of the queue set that
        are not queue names are dropped from it, and reported. stall_began, grace: as for
        `heartbeat`, reported by this worker.
        """
        begun = self._call(
            self.scripts.next_queues,
            keys=[keys.MAINTENANCE_LOCK, keys.MAINTENANCE, keys.QUEUES],
            args=[token, lock_ms, MAINTENANCE_CHUNK],
        )
        if not begun:
            return None
        cursor, members = begun
        names, unreadable = _names(members)
        visit = list(dict.fromkeys([*queues, *names]))
        script_keys = [keys.WORKERS, keys.MAINTENANCE, keys.QUEUES]
        for queue in visit:
            script_keys += [
                keys.queue(queue),
                keys.wake(queue),
                *(keys.registry(kind, queue) for kind in ("started", "scheduled", "failed", "finished", "canceled")),
            ]
        args = [
            repr(now), keys.JOB, keys.INFLIGHT, keys.worker(""), max_deaths, default_failure_ttl, keys.done(""),
            keys.queue(""), keys.wake(""), keys.registry("started", ""), keys.registry("failed", ""),
            cursor, "" if stall_began is None else repr(stall_began), repr(grace), len(unreadable), *unreadable, *visit,
        ]
        recovered, abandoned, dead, failed, broken, dropped = self._call(self.scripts.maintain, keys=script_keys, args=args)
        return Maintenance(
            _texts(recovered), _texts(abandoned), _texts(dead), _texts(failed), _texts(broken), int(dropped),
            _texts(unreadable),
        )

    # -- reading for the dashboard, `taskit info` and the metrics ---------------------------

    def queue_counts(
        self, queues: Sequence[str], min_scores: Mapping[str, float | str], problems: list[str] | None = None
    ) -> list[dict[str, int | None]]:
        """Per queue: {"queued": n, <registry kind>: n, ...} in one round trip, counting the
        registry entries scored at or above `min_scores[kind]` (now, to skip expired ones).
        A count whose key holds another type is None (and reported)."""
        read = []
        for queue in queues:
            read.append((keys.queue(queue), "list"))
            read += [(keys.registry(kind, queue), "zset") for kind in min_scores]

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues:
                pipe.llen(keys.queue(queue))
                for kind, low in min_scores.items():
                    pipe.zcount(keys.registry(kind, queue), low, "+inf")
            return pipe.execute(raise_on_error=False)

        replies = self._readable(self._call(run), read, problems) if queues else []
        names, width = ["queued", *min_scores], 1 + len(min_scores)
        return [dict(zip(names, replies[i:i + width])) for i in range(0, len(replies), width)]

    def oldest_enqueued(self, queues: Sequence[str], problems: list[str] | None = None) -> list[float | None]:
        """Per queue, when the job at its head was enqueued (Unix seconds; None: the queue is
        empty, or its head just left, or what is there cannot be read: reported). Two round
        trips for all queues."""

        def heads() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues:
                pipe.lindex(keys.queue(queue), 0)
            return pipe.execute(raise_on_error=False)

        replies = self._readable(self._call(heads), [(keys.queue(q), "list") for q in queues], problems) if queues else []
        ids: list[str | None] = []
        for queue, head in zip(queues, replies):
            found = [] if head is None else _ids(keys.queue(queue), [head], problems)
            ids.append(found[0] if found else None)
        present = [job_id for job_id in ids if job_id is not None]
        if not present:
            return [None for _ in ids]
        read = [(key, "hash") for job_id in present for key in (keys.job(job_id), keys.packed(job_id))]

        def enqueued() -> list[Any]:
            pipe = self.redis.pipeline(transaction=True)
            for job_id in present:
                pipe.hget(keys.job(job_id), keys.Field.ENQUEUED)
                pipe.hget(keys.packed(job_id), job_id)
            return pipe.execute(raise_on_error=False)

        replies = self._readable(self._call(enqueued), read, problems)
        times: dict[str, float | None] = {}
        for job_id, own, packed in zip(present, replies[0::2], replies[1::2]):
            raw = own if own is not None else (_job_fields({}, packed) or {}).get(keys.Field.ENQUEUED)
            at = None if raw is None else _number(raw, f"{keys.job(job_id)} has an enqueue time", problems)
            times[job_id] = None if at is None else at / 1000
        return [None if job_id is None else times[job_id] for job_id in ids]

    def held_jobs(
        self, workers: Sequence[str], limit: int = 10, problems: list[str] | None = None
    ) -> list[list[tuple[str, dict[str, bytes | None]]]]:
        """Per worker, the first `limit` jobs of its in-flight list (in the order claimed), each
        as (id, {func, status, started_at, queue}); two round trips. An in-flight list or a job
        record of another type reads as empty (reported)."""

        def lists() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for worker in workers:
                pipe.lrange(keys.inflight(worker), 0, limit - 1)
            return pipe.execute(raise_on_error=False)

        read = [(keys.inflight(worker), "list") for worker in workers]
        replies = self._readable(self._call(lists), read, problems) if workers else []
        held = [_ids(key, ids or [], problems) for (key, _), ids in zip(read, replies)]
        every = list(dict.fromkeys(job_id for ids in held for job_id in ids))
        if not every:
            return [[] for _ in held]
        names = (keys.Field.FUNC, keys.Field.STATUS, keys.Field.STARTED, keys.Field.QUEUE)

        def details() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in every:
                pipe.hmget(keys.job(job_id), names)
            return pipe.execute(raise_on_error=False)

        found = dict(zip(every, self._readable(self._call(details), [(keys.job(i), "hash") for i in every], problems)))
        labels = ("func", "status", "started_at", "queue")
        return [[(job_id, dict(zip(labels, found[job_id] or [None] * 4))) for job_id in ids] for ids in held]

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

    def minute_counts(
        self, queues: Sequence[str], first_minute: int, last_minute: int, problems: list[str] | None = None
    ) -> list[dict[str, dict[int, int]]]:
        """Per queue, jobs {"d": finished, "f": failed, "r": retried} per Unix minute in
        [first_minute, last_minute] (lua/lib/stats.lua); minutes without any are left out.
        One round trip. A field that is no counter is left out (reported)."""
        hours = range(first_minute // 60, last_minute // 60 + 1)
        read = [(keys.stats(queue, hour), "hash") for queue in queues for hour in hours]

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for key, _ in read:
                pipe.hgetall(key)
            return pipe.execute(raise_on_error=False)

        replies = self._readable(self._call(run), read, problems) if queues else []
        result = []
        for i in range(len(queues)):
            counts: dict[str, dict[int, int]] = {"d": {}, "f": {}, "r": {}}
            for (key, _), reply in list(zip(read, replies))[i * len(hours):(i + 1) * len(hours)]:
                for (kind, minute), n in _counters(key, reply or {}, problems, per_minute=True):
                    at = int(minute)
                    if kind in counts and first_minute <= at <= last_minute:
                        counts[kind][at] = n
            result.append(counts)
        return result

    def task_totals(self, queues: Sequence[str], problems: list[str] | None = None) -> list[dict[str, dict[str, int]]]:
        """Per queue, per task, its counters since the start (lua/lib/stats.lua): {"d", "f",
        "r", "us", "h<bound>"...} -> number. One round trip. A field that is no counter is
        left out (reported)."""
        read = [(keys.totals(queue), "hash") for queue in queues]

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for key, _ in read:
                pipe.hgetall(key)
            return pipe.execute(raise_on_error=False)

        result = []
        for (key, _), reply in zip(read, self._readable(self._call(run), read, problems) if queues else []):
            tasks: dict[str, dict[str, int]] = {}
            for (kind, task), n in _counters(key, reply or {}, problems):
                tasks.setdefault(task, {})[kind] = n
            result.append(tasks)
        return result


class Enqueued(NamedTuple):
    """What `Store.enqueue` did: per job, whether it was written (False: its id was taken);
    with a replica wait, how many replicas confirmed every job (else None)."""

    written: list[bool]
    acknowledged: int | None


class _Written:
    """(id, enqueue time) of the jobs this Store wrote lately, to read lua/enqueue.lua's
    answer 2 ("the job stored is this very one: same function, arguments and enqueue time").
    That is a retry finding its own write, after a lost reply (the Store's retry, or
    redis-py's own, invisible here), unless this Store was already told it wrote that job:
    then it is the same job enqueued twice within a millisecond, a duplicate."""

    SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: dict[tuple[str, Any], None] = {}

    def written(self, job_id: str, fields: Mapping[str, Any], answer: int) -> bool:
        if answer not in (1, 2):
            return False
        key = (job_id, fields.get(keys.Field.ENQUEUED))
        with self._lock:
            if answer == 2 and key in self._recent:
                return False
            self._recent[key] = None
            if len(self._recent) > self.SIZE:
                del self._recent[next(iter(self._recent))]
        return True


class Maintenance(NamedTuple):
    """What one maintenance step did (Store.maintain), for the worker to log."""

    recovered: list[str]  # jobs of dead workers, or with an expired lease, back on their queue
    abandoned: list[str]  # jobs that killed their worker too often: failed
    dead: list[str]  # workers whose lease ran out: forgotten
    failed: list[str]  # jobs failed as corrupt (record overwritten, or their queue is not a list)
    broken: list[str]  # queue keys of the wrong type, left for an operator ("KEY is a string, not a list")
    dropped: int  # queues whose keys were all empty: dropped from the queue set
    unreadable: list[str]  # members of the queue set that are no queue name: dropped from it


class CancelRequests:
    """A worker's subscription to its cancel channel (lua/cancel.lua publishes the running
    jobs to stop there), on a connection of its own.

    Pub/sub keeps nothing: a request sent while the connection is down is lost, which is why
    the heartbeat reports those jobs too. After an error, `receive` subscribes afresh.
    """

    def __init__(self, store: Store, channel: str) -> None:
        self._store, self._channel = store, channel
        self._pubsub: Any = None

    def subscribe(self) -> None:
        """Listen from now on (one round trip); a worker does it before its first claim."""
        self._guarded(self._subscribe)

    def _subscribe(self) -> None:
        if self._pubsub is None:
            pubsub = self._store.redis.pubsub(ignore_subscribe_messages=True)
            self._pubsub = pubsub
            pubsub.subscribe(self._channel)

    def receive(self, timeout: float) -> list[tuple[str, str]]:
        """(job id, reason) of the requests that arrive within `timeout` seconds (subscribing
        afresh after an error); `RedisUnavailableError` / `StorageError` if Redis fails."""
        return self._guarded(self._receive, timeout)

    def _receive(self, timeout: float) -> list[tuple[str, str]]:
        self._subscribe()
        requests = []
        message = self._pubsub.get_message(timeout=timeout)
        while message is not None:
            if message.get("type") in (b"message", "message"):
                job_id, _, reason = bytes(message["data"]).partition(b"\n")
                requests.append((_text(job_id), reason.decode(errors="replace")))
            message = self._pubsub.get_message(timeout=0)
        return requests

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except _ERRORS as exc:
            self.close()
            if transient(exc):
                raise RedisUnavailableError(f"cannot reach Redis at {self._store.where}: {exc}") from None
            raise self._store._refused(exc) from None

    def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis.RedisError, OSError):
                pass


class Record:
    """What happened to one claimed job, as `finish.lua` takes it.

    micros, how long it ran in microseconds, feeds the run-time histograms
    (lua/lib/stats.lua); None: refused before running, or not measured.
    refused: the worker did not run it (its function unknown or not allowed, its data
    unreadable): counted under one task name, REFUSED_TASK, whatever function it names, so
    that made-up names cannot add counters (metrics series) without bound."""

    __slots__ = ("job_id", "keep", "micros", "outcome", "payload", "queue", "refused", "run_at", "token")

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
        refused: bool = False,
    ) -> None:
        self.job_id, self.queue, self.token, self.outcome = job_id, queue, token, outcome
        self.payload, self.keep, self.run_at = payload, keep, run_at
        self.micros, self.refused = micros, refused

    def __repr__(self) -> str:
        return f"Record({self.job_id!r}, {self.outcome!r}, token={self.token})"


#: the outcomes the statistics count (a released or interrupted job did not run to an end)
_COUNTED = frozenset({"finished", "failed", "retry", "scheduled"})
#: the task name under which jobs the worker refused are counted (see `Record`; lua/lib/stats.lua)
REFUSED_TASK = "(refused)"


def _new_job_keys(job_id: str, queue: str) -> list[str]:
    """The keys lua/lib/add_job.lua writes: job hash, packed-job bucket, queue, wake list,
    schedule, queue set."""
    return [keys.job(job_id), keys.packed(job_id), keys.queue(queue), keys.wake(queue), keys.registry("scheduled", queue), keys.QUEUES]


def _texts(items: Iterable[bytes]) -> list[str]:
    """Redis replies as text, for messages and ids (bytes that are not UTF-8 show as U+FFFD)."""
    return [item.decode(errors="replace") for item in items]


def _names(raw: Iterable[bytes]) -> tuple[list[str], list[bytes]]:
    """(the valid names, the members that are not: see keys.readable_name) of members of the
    queue set, a list of ids or a registry."""
    names, unreadable = [], []
    for member in raw:
        name = keys.readable_name(member)
        if name is None:
            unreadable.append(member)
        else:
            names.append(name)
    return names, unreadable


def _report(problems: list[str] | None, message: str) -> None:
    """Say what a read left out: in `problems` when the caller shows them, else in the log."""
    if problems is None:
        log.warning("left out: %s", message)
    else:
        problems.append(message)


def _ids(key: str, members: Iterable[bytes], problems: list[str] | None) -> list[str]:
    """The members of a list or registry that are job ids; the others (not UTF-8, or not
    allowed by keys.NAME: written by hand) are left out and reported."""
    ids, others = _names(members)
    if others:
        shown = ", ".join(repr(member[:40]) for member in others[:3]) + (", ..." if len(others) > 3 else "")
        _report(problems, f"{key} holds {len(others)} member(s) that are no job id: {shown}")
    return ids


def _counters(
    key: str, fields: Mapping[bytes, bytes], problems: list[str] | None, per_minute: bool = False
) -> list[tuple[tuple[str, str], int]]:
    """((kind, what), n) of a stats or totals hash's 'kind:what' fields (lua/lib/stats.lua;
    `per_minute`: what is a Unix minute); a field whose name is not UTF-8 text of that form,
    or whose value is not a whole number, is left out, and reported once for the key."""
    counters, bad = [], []
    for field, value in fields.items():
        try:
            kind, colon, what = field.decode().partition(":")
            if not colon or (per_minute and not what.isdigit()):
                raise ValueError(field)
            counters.append(((kind, what), int(value)))
        except ValueError:  # (UnicodeDecodeError is one)
            bad.append(field)
    if bad:
        _report(problems, f"{key} has {len(bad)} field(s) that are not counters: {bad[0][:40]!r}" + (", ..." if len(bad) > 1 else ""))
    return counters


def _number(raw: bytes, what: str, problems: list[str] | None) -> float | None:
    """A number field of a record; one that is not a number is None (reported as `what` ...)."""
    try:
        return float(raw)
    except ValueError:
        _report(problems, f"{what} that is not a number: {raw[:40]!r}")
        return None


def _text_keys(pairs: Iterable[tuple[bytes, bytes]]) -> Fields:
    """Hash fields by name; a field name that is not UTF-8 is not one of taskit's: left out."""
    fields = {}
    for name, value in pairs:
        try:
            fields[name.decode()] = value
        except UnicodeDecodeError:
            pass
    return fields


def _job_fields(raw: dict[bytes, bytes], packed: bytes | None) -> Fields | None:
    """A job's fields from its hash, or else from its packed entry (lib/packed.lua); an
    unreadable entry yields only its status, so reading the job reports it corrupt."""
    if raw:
        return _text_keys(raw.items())
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
#: the registry each outcome of `Record` goes to ("started" where there is none: unused)
_TARGETS = {"finished": "finished", "failed": "failed", "scheduled": "scheduled", "canceled": "canceled"}


def _text(raw: bytes) -> str:
    """A job id or field name read from Redis. taskit writes ASCII, but anyone can write to
    Redis: bytes that are not UTF-8 become surrogates, which `_raw` turns back into the
    same bytes, so such a job can still be recorded (as failed) rather than crash its reader."""
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> str | bytes:
    """`text` as redis-py must be given it: redis-py encodes str strictly, which fails on
    the surrogates of `_text`."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape")


def _job_wire(job_id: str) -> tuple[str | bytes, str | bytes, str | bytes]:
    """A job's id, hash key and done key as redis-py must be given them (see `_raw`)."""
    if job_id.isascii():
        return job_id, keys.job(job_id), keys.done(job_id)
    return _raw(job_id), _raw(keys.job(job_id)), _raw(keys.done(job_id))


class Claim(NamedTuple):
    """What a claim returned.

    jobs: (id, token, queue index, fields) per claimed job.
    next_run_at: the earliest scheduled run-at among the queues, or None.
    quarantine: '' , 'drain' (a job that may only run alone waits: finish what you hold, then
        claim with nothing held) or 'alone' (the one job claimed may only run alone: claim
        nothing more until it ends). See lua/claim.lua.
    """

    jobs: Claimed
    next_run_at: float | None
    quarantine: str


def _parse_claim(reply: Any, worker: str, now: float) -> Claim:
    """The claim's reply, parsed.

    claim.lua returns each job's fields as they were before it marked the claim; the
    claim's own writes are known here and filled in. Jobs the claim failed as corrupt
    (their key overwritten while they waited) are logged.
    """
    flat, next_run_at, corrupt, quarantine = reply
    if corrupt:
        log.error(
            "failed %d job(s) as corrupt: their record was overwritten by another type while they waited; "
            "see their exc_info in the failed registry: %s",
            len(corrupt), ", ".join(i.decode(errors="replace") for i in corrupt),
        )
    claimed = []
    started = {
        keys.Field.STATUS: b"started",
        keys.Field.STARTED: b"%d" % round(now * 1000),
        keys.Field.WORKER: worker.encode(),
    }
    for i in range(0, len(flat), 4):
        job_id = _text(flat[i])  # an id written by hand may not be UTF-8: see _text
        pairs = flat[i + 3]
        fields = _text_keys(zip(pairs[0::2], pairs[1::2]))
        fields.update(started)
        fields[keys.Field.ATTEMPTS] = b"%d" % flat[i + 1]
        claimed.append((job_id, int(flat[i + 1]), int(flat[i + 2]), fields))
    return Claim(claimed, float(next_run_at) if next_run_at else None, quarantine.decode())
