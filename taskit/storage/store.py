"""The one module that talks to Redis.

Everything above it (jobs, queues, registries, the worker) calls a `Store` method and
never a Redis command, so the round trips of each operation can be read off this file:
each public method is one round trip unless its docstring says otherwise.

Transient failures (a lost connection, a failover: see `transient`) are retried for a
bounded time (`retry_seconds`) with backoff and then raised as `RedisUnavailableError`;
any other Redis error becomes `StorageError`.
"""

from __future__ import annotations

import codecs
import functools
import logging
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
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
from .partitions import Partitions
from .resp import Replies
from .scripts import Scripts

T = TypeVar("T")
Fields = dict[str, bytes]
#: a job read to be shown (Store.peek): its fields, and the length of each one not read
Peek = tuple[Fields, dict[str, int]]
#: in the lengths of a Peek: the job's packed entry cannot be unpacked and has that length
PACKED_ENTRY = "packed entry"
#: longest value read to show a job that `Store.fetch` could not read (a key of another type)
PEEK_BYTES = 65536

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

#: (the worker holds nothing else, (id, token, queue) of a job it holds that no longer runs
#: alone, or None): see `Store.claim` and lua/claim.lua
Alone = tuple[bool, "tuple[str, int, str] | None"]
ALONE: Alone = (True, None)


#: the attribute of a client that holds its Store (`Store.of`)
_STORE_ATTRIBUTE = "_taskit_store"


class Store:
    """Redis operations on taskit's keys for one client. Get one with `Store.of(connection)`."""

    _stores_lock = threading.Lock()
    #: (queues) -> the waits on their wake lists, on a cluster (`block_for_work`)
    _wakes: dict[tuple[str, ...], _Wakes]

    def __init__(self, connection: Client, retry_seconds: float = RETRY_SECONDS) -> None:
        # typed loosely: redis-py's stubs allow str replies, but taskit refuses
        # decode_responses (config.check_connection), so every reply here is bytes
        self.redis: Any = connection
        self.where = describe(connection)
        self.scripts = Scripts(connection)
        self.retry_seconds = retry_seconds
        #: a cluster: a script or transaction covers one slot (one tag), and calls for
        #: several go one per slot; a single Redis takes every tag in one call
        self.cluster = isinstance(connection, RedisCluster)
        self._written = _Written()
        #: scripts sent by taskit itself, on a plain client (`_Direct`); else None
        self._direct = _Direct.of(connection)
        #: the same for an idle worker's pickups (`wait_and_claim`): its connection is handed
        #: back to the pool as the next pickup begins, not between the reply and the job
        self._pickup = _Direct.of(connection)
        #: queue -> when (monotonic) this Store last added it to the global queue set
        self._indexed: dict[str, float] = {}
        self._wakes = {}
        #: the queues declared with partitions (storage/partitions.py)
        self.partitions = Partitions(lambda: self._call(self.redis.hgetall, keys.PARTITIONS))
        #: calls that found the connection lost, so far (a Redis restart may have lost what
        #: the caller keeps there: the worker registers again when this changes)
        self.lost_connections = 0
        # a block must end well before the socket times out, or it reads as an outage
        socket_timeout = connection.get_connection_kwargs().get("socket_timeout")
        self.block_seconds = min(BLOCK_SECONDS, socket_timeout / 2) if socket_timeout else BLOCK_SECONDS

    @classmethod
    def of(cls, connection: Client) -> Store:
        """The store for a client, built once (its scripts are registered once). The client
        holds it: the two are freed together (a client made per request must not leave a
        Store behind for ever)."""
        store = vars(connection).get(_STORE_ATTRIBUTE)
        if store is None:
            with cls._stores_lock:
                store = vars(connection).get(_STORE_ATTRIBUTE)
                if store is None:
                    store = cls(connection)
                    setattr(connection, _STORE_ATTRIBUTE, store)
        return store

    # -- error handling -------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one Redis operation; retry a lost connection for a while, then raise ours."""
        if self._direct is not None:
            self._direct.give_back()
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
        if self._direct is not None:
            self._direct.give_back()
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
        jobs: Sequence[tuple[str, str, int | None, bool, float | None, Mapping[str, Any], bool]],
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> Enqueued:
        """Write jobs and push them, all in one round trip; False where the id was taken.

        Each entry is (id, queue, ttl, at_front, run_at, fields, made): `made` when taskit
        made the id (lua/enqueue.lua then looks it up in the bucket and among ended jobs,
        not in the state hash: lib/add_job.lua exists_apart). A retry after a lost reply
        (ours, or redis-py's own) may find its own job already written: lua/enqueue.lua
        tells it (same function, arguments and enqueue time, to the millisecond) from an
        older job with the same id, which is still reported as taken
        (see `_Written` for the same job enqueued twice by this process). A job with a
        custom id gets its directory entry (keys.directory) in the same round trip, before
        it is written.

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
        calls, queues, custom = [], [], []
        before: list[tuple[Any, ...]] = []
        for i, (job_id, queue, ttl, at_front, run_at, fields, made) in enumerate(jobs):
            tag = job_id[:job_id.find(".")] if made else keys.tag_of(job_id)  # (an id taskit made: tag.random)
            place = _queue_keys(queue, tag or keys.queue_tag(queue))
            args = [job_id, place.name, _NONE if ttl is None else ttl, _FLAG[at_front],
                    _NONE if run_at is None else run_at, pack_record(fields), fields[keys.Field.ENQUEUED], _FLAG[made]]
            calls.append((self.scripts.enqueue, place.job_keys(job_id, ttl), args))
            entry = _directory_entry(job_id, queue, tag)
            if entry:
                custom.append((i, len(before)))
                before += entry
            queues.append(queue)
        before += self._index(queues)
        wait = (replicas, max(1, math.ceil(replica_timeout * 1000))) if replicas else None  # WAIT's 0 is forever
        # the declarations of partitioned queues, read along when stale (storage/partitions.py)
        declarations = len(before) if self.partitions.stale() else None
        if declarations is not None:
            before.append(("hgetall", keys.PARTITIONS, {}))
        started = time.monotonic()
        entries: list[Any] = []
        each = bool(before)  # what a refused call wrote before it is taken back (`_take_back`)
        try:
            results = self._run_scripts(calls, each, before, entries, wait)
        except _ERRORS as exc:
            results = self._retry(
                started, self._transient_or_raise(exc), self._run_scripts, calls, each, before, entries, wait
            )
        confirmed = results.pop() if wait is not None else None
        for reply in entries:
            if isinstance(reply, Exception) and not isinstance(reply, redis.ResponseError):
                raise reply
        unnamed = [i for i, at in custom if isinstance(entries[at], Exception)]
        if unnamed:  # the jobs were written, but could not be found by their id: taken back
            withdrawn = []
            for i in unnamed:
                _, script_keys, args = calls[i]
                withdrawn.append(self._call(self.scripts.withdraw, keys=script_keys, args=[jobs[i][0], args[5]]))
            job_id = jobs[unnamed[0]][0]
            key = keys.directory(job_id)
            what = f"job {job_id} was not enqueued" if withdrawn[0] else (
                f"job {job_id} was enqueued and a worker has it, but Job.fetch cannot find it by its id")
            raise StorageError(f"Redis at {self.where} refused to write {key}: it is a {self._types([key])[0]}, not a "
                               f"string; delete the key or repair it ({what})")
        refused = [r for r in results if isinstance(r, Exception)]
        if refused:
            self._take_back([jobs[i][0] for i, at in custom if entries[at] is None], before)
            raise self._refused(refused[0])
        if isinstance(confirmed, Exception):
            raise confirmed
        self._index_new(queues, [int(r) >= 10 for r in results], before)
        if declarations is not None and entries:
            self.partitions.update(entries[declarations])
        written = [self._written.written(job[0], job[5], int(r) % 10) for job, r in zip(jobs, results)]
        for i, at in custom:
            held = entries[at] if entries else None
            tag = keys.job_tag(jobs[i][0], jobs[i][1])
            if held is not None and held.decode(errors="replace") != tag and not self._claim_directory(jobs[i], held, calls[i]):
                written[i] = False
        acknowledged = None
        if confirmed is not None:
            acknowledged = 0 if any(int(r) % 10 == 2 for r in results) else int(confirmed)
        return Enqueued(written, acknowledged)

    def _take_back(self, fresh_ids: Sequence[str], before: Sequence[tuple[Any, ...]]) -> None:
        """An enqueue was refused (a key of the wrong type): nothing it wrote stays. The
        directory entries it made go, and the queues it added to the global queue set that
        hold nothing in their tag (enqueue.lua adds them there only when it writes)."""
        added = [name for command in before if command[0] == "sadd" for name in command[2:-1]]
        for name in added:
            self._indexed.pop(name, None)

        def run() -> None:
            if fresh_ids:
                self.redis.delete(*(keys.directory(job_id) for job_id in fresh_ids))
            if added:
                pipe = self.redis.pipeline(transaction=False)
                for name in added:
                    pipe.sismember(keys.of_queue(name).tagged.queues, name)
                empty = [name for name, there in zip(added, pipe.execute(raise_on_error=False)) if there is not True and there != 1]
                if empty:
                    self.redis.srem(keys.QUEUES, *empty)

        self._call(run)

    def _claim_directory(self, job: tuple[str, str, Any, Any, Any, Mapping[str, Any], bool], held: bytes, call: Any) -> bool:
        """A custom id's directory entry named another tag than the one the job was just
        written in: the id is taken there if a job with it exists there (then the new job is
        taken back, lua/withdraw.lua, and False returned); else the entry was left by a job
        that is gone, and now names the new one. (A worker that took the new job in the
        moment between is let run it, and the entry is left as it was: logged.)"""
        job_id, queue, *_ = job
        old = held.decode(errors="replace")
        if keys.is_tag(old) and self._exists_in(old, job_id):
            _, script_keys, args = call
            if not self._call(self.scripts.withdraw, keys=script_keys, args=[job_id, args[5]]):
                log.warning("job %s was enqueued on %s although its id is taken by a job of another queue", job_id, queue)
                return True
            return False
        self._call(self.redis.set, keys.directory(job_id), keys.job_tag(job_id, queue))
        return True

    def _exists_in(self, tag: str, job_id: str) -> bool:
        tagged = keys.tag_keys(tag)
        script_keys = [tagged.state, tagged.expiry, _raw(tagged.bucket(job_id)), _raw(tagged.job(job_id))]
        return bool(self._call(self.scripts.read, keys=script_keys, args=[repr(time.time()), _raw(job_id)])[0])

    def _rebuild_index(self, names: Sequence[str]) -> int:
        """The global queue set held another type (written by hand): replaced by a set of
        `names`, the queues just enqueued to (it is an index: the maintenance step adds the
        others back from their tags' sets). The enqueue that found it goes on."""
        found = self._types([keys.QUEUES])[0]
        log.warning("%s was a %s, not a set of queue names: replaced by a new set (the maintenance step adds "
                    "back the queues it misses)", keys.QUEUES, found)

        def run() -> Any:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(keys.QUEUES)
            pipe.sadd(keys.QUEUES, *names)
            return pipe.execute()[-1]

        return int(self._call(run))

    def _index(self, queues: Iterable[str]) -> list[tuple[Any, ...]]:
        """SADD the queues to the global queue set unless this Store did lately (the enqueue
        script says when a queue is new in its tag: `_index_new` adds it then)."""
        now = time.monotonic()
        fresh = [q for q in dict.fromkeys(queues) if now - self._indexed.get(q, -INDEX_SECONDS) >= INDEX_SECONDS]
        for queue in fresh:
            self._indexed[queue] = now
        return [("sadd", keys.QUEUES, *fresh, {})] if fresh else []

    def _index_new(self, queues: Sequence[str], new: Sequence[Any], sent: Sequence[tuple[Any, ...]]) -> None:
        """Add to the global queue set the queues a script found new in their tag, unless
        the round trip did (a queue dropped by the maintenance step since this Store last
        added it)."""
        if not any(new):
            return
        done = {name for command in sent if command[0] == "sadd" and command[1] == keys.QUEUES for name in command[2:-1]}
        missing = [q for q, n in zip(queues, new) if n and q not in done]
        if missing:
            self._call(self.redis.sadd, keys.QUEUES, *dict.fromkeys(missing))

    def check_replica_wait(self, replicas: int, timeout: float) -> None:
        """Refuse a replica wait this client cannot do, before anything is written: WAIT on a
        cluster client (redis-py sends a keyless command to any node, not the one that wrote),
        or one longer than a blocking wait may be (it would read as a lost connection)."""
        if replicas and isinstance(self.redis, RedisCluster):
            raise ConfigurationError(
                "replicas= is not supported with a Redis Cluster client yet (WAIT would have to go to each "
                "master that wrote a job, on the connection that wrote it); nothing was enqueued"
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
        calls, before, queues = [], [], []
        for name, tick, past, job_id, queue, ttl, run_at, fields in ticks:
            tag = keys.tag_of(job_id)
            tick_keys = [keys.periodic(keys.queue_tag(queue), name),
                         *_queue_keys(queue, tag or keys.queue_tag(queue)).job_keys(job_id, ttl)]
            options = [repr(tick), int(past), job_id, queue, "" if ttl is None else ttl, "" if run_at is None else repr(run_at),
                       pack_record(fields), fields[keys.Field.ENQUEUED]]
            calls.append((self.scripts.periodic, tick_keys, options))
            before += _directory_entry(job_id, queue, tag)
            queues.append(queue)
        if not calls:
            return []
        before += self._index(queues)
        results = self._call(self._run_scripts, calls, True, before)
        self._index_new(queues, [not isinstance(r, Exception) and int(r) >= 10 for r in results], before)
        return [self._refused(r) if isinstance(r, redis.RedisError) else int(r) % 10 for r in results]

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
        before: Sequence[tuple[Any, ...]] = (),
        replies: list[Any] | None = None,
        wait: tuple[int, int] | None = None,
    ) -> list[Any]:
        """Run script calls in one pipelined round trip (on a cluster, one per node, sent
        together), after the commands of `before`, each (pipeline method, *args, {kwargs}),
        whose replies are checked, and put in `replies` if given.

        redis-py would check every script with SCRIPT EXISTS before each pipeline (an
        extra round trip); EVALSHA alone is enough, and a script Redis lost (a restart)
        is loaded and that one call re-run. `each`: a call Redis refuses gets its error
        in its place instead of raising (a lost connection or a failover still raises).
        `wait`: (replicas, timeout in ms) for a WAIT after the scripts, whose reply is
        appended to the replies.
        """
        direct = self._direct
        if direct is not None and (before or wait is not None):
            direct.give_back()  # (redis-py's path: one connection for both)
            direct = None
        if direct is not None:
            results = direct.evalsha(calls)
        elif len(calls) == 1 and not each and not before and wait is None:
            script, script_keys, args = calls[0]
            return [script(keys=script_keys, args=args)]
        else:
            answers = self._pipeline(calls, wait, before)
            for at, (command, reply) in enumerate(zip(before, answers)):
                if isinstance(reply, Exception):
                    if _repairs_index(command, reply):
                        answers[at] = self._rebuild_index(command[2:-1])
                    elif replies is None:
                        raise reply
            if replies is not None:
                replies[:] = answers[:len(before)]
            results = answers[len(before):]
        lost = [i for i, result in enumerate(results) if isinstance(result, redis.exceptions.NoScriptError)]
        if lost and direct is not None:
            # loaded (each once), then run again together, in one round trip
            direct.give_back()  # (the scripts are loaded through redis-py's path)
            for source in dict.fromkeys(calls[i][0].script for i in lost):
                self.redis.script_load(source)
            for i, result in zip(lost, direct.evalsha([calls[i] for i in lost])):
                results[i] = result
        elif lost and wait is not None:
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
        self,
        calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]],
        wait: tuple[int, int] | None,
        before: Sequence[tuple[Any, ...]] = (),
        load: bool = False,
    ) -> list[Any]:
        """The commands of `before`, then EVALSHA each call (after SCRIPT LOAD of its script,
        with `load`), then WAIT if asked: the replies of `before` and the calls, then WAIT's."""
        pipe = self.redis.pipeline(transaction=False)
        for method, *command_args in before:
            getattr(pipe, method)(*command_args[:-1], **command_args[-1])
        loaded = {script.sha: script for script, _, _ in calls} if load else {}
        for script in loaded.values():
            pipe.script_load(script.script)
        cluster = self.redis if isinstance(self.redis, RedisCluster) else None
        for script, script_keys, args in calls:
            # a cluster pipeline finds an EVALSHA's node with COMMAND GETKEYS, one round trip a
            # call (redis-py 8.1); its first key names the node (a MOVED re-routes it as usual)
            where = {"target_nodes": cluster.get_node_from_key(script_keys[0])} if cluster and script_keys else {}
            pipe.execute_command("EVALSHA", script.sha, len(script_keys), *script_keys, *args, **where)
        if wait is not None:
            pipe.wait(*wait)
        answers = pipe.execute(raise_on_error=False)
        return answers[:len(before)] + answers[len(before) + len(loaded):]

    def _tags(self, job_ids: Sequence[str]) -> list[str | None]:
        """The tag of each job (None: no such job): carried by its id, or, for a custom id,
        read from its directory entry (one round trip, only if there is such an id)."""
        tags: list[str | None] = [keys.tag_of(job_id) for job_id in job_ids]
        custom = [i for i, tag in enumerate(tags) if tag is None]
        if custom:

            def run() -> list[Any]:
                pipe = self.redis.pipeline(transaction=False)
                for i in custom:
                    pipe.get(_raw(keys.directory(job_ids[i])))
                return pipe.execute(raise_on_error=False)

            for i, value in zip(custom, self._call(run)):
                tag = value.decode(errors="replace") if isinstance(value, bytes) else None
                tags[i] = tag if tag is not None and keys.is_tag(tag) else None
        return tags

    def fetch(self, job_ids: Sequence[str]) -> list[Fields | None]:
        """Every field of each job (None where it does not exist), wherever they are kept
        (lib/records.lua), read atomically per tag (lua/read.lua). One round trip, two if
        an id is a custom one (its directory entry is read first). A key of the wrong type
        raises StorageError naming it."""
        tags = self._tags(job_ids)
        by_tag: dict[str, list[int]] = {}
        for i, tag in enumerate(tags):
            if tag is not None:
                by_tag.setdefault(tag, []).append(i)
        found: list[Fields | None] = [None] * len(job_ids)
        if not by_tag:
            return found
        now = repr(time.time())
        calls = []
        for tag, indexes in by_tag.items():
            tagged = keys.tag_keys(tag)
            script_keys: list[str | bytes] = [tagged.state, tagged.expiry]
            args: list[Any] = [now]
            for i in indexes:
                wire = _raw(job_ids[i])
                script_keys += [_raw(tagged.bucket(job_ids[i])), _raw(tagged.job(job_ids[i]))]
                args.append(wire)
            calls.append((self.scripts.read, script_keys, args))
        for indexes, reply in zip(by_tag.values(), self._call(self._run_scripts, calls)):
            for i, flat in zip(indexes, reply):
                if flat:
                    found[i] = _text_keys(zip(flat[0::2], flat[1::2]))
        return found

    def peek(self, job_ids: Sequence[str], bound: int) -> list[Peek | StorageError | None]:
        """Each job's fields as `fetch` reads them, to show them: but a value longer than
        `bound` bytes is not sent, only its length: (fields, {field: length}). A job not
        ended keeps its fields in packed entries, which Redis reads and unpacks to leave the
        long values out; one that cannot be unpacked and is longer than `bound` shows as
        {PACKED_ENTRY: length}. None where a job does not exist; its StorageError where its
        key holds another type (the others are read). One round trip, atomic (per tag on a
        cluster: lua/peek.lua); two if an id is a custom one (its directory entry is read first)."""
        tags = self._tags(job_ids)
        groups: dict[str, list[int]] = {}  # one call per tag on a cluster, one in all on a single Redis
        for i, tag in enumerate(tags):
            if tag is not None:
                groups.setdefault(tag if self.cluster else "", []).append(i)
        rows: list[Peek | StorageError | None] = [None] * len(job_ids)
        if not groups:
            return rows
        names = list(keys.FIELDS.values())
        head = [repr(time.time()), bound, len(names), *names]
        calls = []
        for indexes in groups.values():
            script_keys: list[str | bytes] = []
            for i in indexes:
                tagged = keys.tag_keys(tags[i])
                script_keys += [_raw(tagged.bucket(job_ids[i])), _raw(tagged.job(job_ids[i])), tagged.state, tagged.expiry]
            calls.append((self.scripts.peek, script_keys, [*head, *(_raw(job_ids[i]) for i in indexes)]))
        for indexes, reply in zip(groups.values(), self._call(self._run_scripts, calls)):
            for i, item in zip(indexes, reply):
                if not item:
                    continue
                if item[0] == b"wrongtype":
                    key, found = _texts(item[1:3])
                    rows[i] = StorageError(f"Redis at {self.where} refused to read {key}: WRONGTYPE it is a {found}, not a hash")
                else:
                    fields, lengths = item[1], item[2]
                    rows[i] = (_text_keys(zip(fields[0::2], fields[1::2])), dict(zip(_texts(lengths[0::2]), lengths[1::2])))
        return rows

    def fields(self, job_id: str, *names: str) -> list[bytes | None]:
        """Some fields of one job (all None if it does not exist); read as `fetch` reads."""
        fields = self.fetch([job_id])[0] or {}
        return [fields.get(name) for name in names]

    def update(self, job_id: str, fields: Fields) -> bool:
        """Set fields on an existing job; False if it does not exist."""
        tag = self._tags([job_id])[0]
        if tag is None:
            return False
        tagged = keys.tag_keys(tag)
        flat = [x for pair in fields.items() for x in pair]
        script_keys = [tagged.job(job_id), tagged.bucket(job_id), tagged.state]
        return bool(self._call(self.scripts.update, keys=script_keys, args=[job_id, *flat]))

    def delete(self, job_id: str, queue: str) -> None:
        """Remove a job from its queue, every registry and Redis, atomically (its directory
        entry, for a custom id, just after)."""
        place = keys.of_queue(queue, keys.job_tag(job_id, queue))
        tagged = place.tagged

        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrem(place.queue, 0, job_id)
            for kind in keys.REGISTRIES:
                pipe.zrem(place.registry(kind), job_id)
            pipe.delete(tagged.job(job_id), tagged.done(job_id))
            pipe.hdel(tagged.bucket(job_id), job_id)
            pipe.hdel(tagged.state, job_id)
            pipe.zrem(tagged.expiry, job_id)
            pipe.zrem(tagged.settle, job_id)
            pipe.execute()
            if keys.tag_of(job_id) is None:
                self.redis.delete(keys.directory(job_id))

        self._call(run)

    def cancel(self, job_id: str, queue: str, now: float, keep: int, reason: str = "") -> str | None:
        """'ok' (canceled), 'requested' (running: its worker was told to stop it), or the
        status that prevents canceling (None: no such job)."""
        place = keys.of_queue(queue, keys.job_tag(job_id, queue))
        tagged = place.tagged
        result = self._call(
            self.scripts.cancel,
            keys=[
                tagged.job(job_id), tagged.bucket(job_id), tagged.state, tagged.expiry,
                place.queue, place.scheduled, place.canceled, tagged.done(job_id),
            ],
            args=[job_id, now, keep, reason, keys.cancel_channel("")],
        )
        if result == b"ok":
            self._directory_lifetime([job_id], [keep])
        return result.decode() if result else None

    def requeue(self, kind: str, queue: str, job_id: str, now: float) -> str:
        """Move a job from a registry back onto its queue: 'ok', 'absent' or 'expired'."""
        place = keys.of_queue(queue, keys.job_tag(job_id, queue))
        tagged = place.tagged
        result = self._call(
            self.scripts.requeue,
            keys=[
                place.registry(kind), tagged.job(job_id), tagged.bucket(job_id), tagged.state,
                place.queue, place.wake, tagged.done(job_id), tagged.settle,
            ],
            args=[job_id, now],
        )
        if result == b"ok":
            self._directory_lifetime([job_id], [-1])
        return result.decode()

    def _directory_lifetime(self, job_ids: Sequence[str], keeps: Sequence[int]) -> None:
        """Give the directory entries of custom ids the lifetime of their ended job (`keep`
        seconds: -1 forever, 0 none), one round trip if there is any."""
        custom = [(job_id, keep) for job_id, keep in zip(job_ids, keeps) if keys.tag_of(job_id) is None]
        if not custom:
            return

        def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for job_id, keep in custom:
                entry = _raw(keys.directory(job_id))
                if keep < 0:
                    pipe.persist(entry)
                elif keep == 0:
                    pipe.delete(entry)
                else:
                    pipe.expire(entry, keep)
            pipe.execute()

        self._call(run)

    def start_waiting(self, job_id: str) -> str | None:
        """The job's status, after asking for an end signal if it has not ended."""
        tag = self._tags([job_id])[0]
        if tag is None:
            return None
        tagged = keys.tag_keys(tag)
        script_keys = [tagged.job(job_id), tagged.bucket(job_id), tagged.state]
        status = self._call(self.scripts.wait, keys=script_keys, args=[job_id])
        return status.decode() if status else None

    def wait_signal(self, job_id: str, timeout: float) -> str | None:
        """Block until the job's end is signalled ('finished' or 'failed'), or None after `timeout`.

        BLMOVE from the done list onto itself leaves the signal for other waiters.
        """
        tag = self._tags([job_id])[0]
        if tag is None:
            return None
        key = keys.done(tag, job_id)
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

    def _places(self, queue: str) -> list[keys.QueueKeys]:
        """The keys of each partition of a queue (one for a queue not partitioned)."""
        return [keys.of_queue(queue, tag) for tag in self.partitions.tags(queue)]

    def _each(self, queue: str, command: Callable[[Any, keys.QueueKeys], Any]) -> list[Any]:
        """`command(pipe, place)` on each partition of a queue, in one round trip."""
        places = self._places(queue)
        if len(places) == 1:
            return [self._call(command, self.redis, places[0])]

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for place in places:
                command(pipe, place)
            return pipe.execute()

        return self._call(run)

    def queue_count(self, queue: str) -> int:
        places = self._places(queue)
        if len(places) == 1:
            return self._read(places[0].queue, "list", self.redis.llen, places[0].queue)
        return sum(self._each(queue, lambda r, place: r.llen(place.queue)))

    def empty_queue(self, queue: str) -> int:
        """Delete every job waiting on the queue; how many were deleted.

        Several round trips, each deleting at most EMPTY_CHUNK jobs (lua/empty.lua): the
        first moves the whole queue aside at once, so what was waiting is deleted, and
        nothing enqueued meanwhile.
        """
        removed = 0
        for place in self._places(queue):
            script_keys = [place.queue, place.wake, place.emptying, *place.tagged.block]
            moved = False
            while True:
                deleted, left, moved_now = self._call(
                    self.scripts.empty, keys=script_keys, args=[EMPTY_CHUNK, int(not moved), keys.BUCKETS]
                )
                removed, moved = removed + deleted, moved or bool(moved_now)
                if moved and not left:
                    break
        return removed

    def queue_ids(self, queue: str, start: int = 0, end: int = -1, problems: list[str] | None = None) -> list[str]:
        """The ids from `start` to `end` (inclusive); on a partitioned queue, partition after
        partition (the order of the jobs across partitions is not kept anywhere). Members that
        are no job id (not UTF-8, or not allowed by keys.NAME: written by hand) are left out
        and reported."""
        places = self._places(queue)
        if len(places) == 1:
            key = places[0].queue
            return _ids(key, self._read(key, "list", self.redis.lrange, key, start, end), problems)
        replies = self._each(queue, lambda r, place: r.lrange(place.queue, 0, -1))
        every = [i for place, ids in zip(places, replies) for i in _ids(place.queue, ids, problems)]
        return every[start:] if end < 0 else every[start:end + 1]

    def registry_count(self, kind: str, queue: str, min_score: float | str = "-inf") -> int:
        """Entries scored at or above `min_score` (pass now to skip expired ones)."""
        places = self._places(queue)
        if len(places) == 1:
            key = places[0].registry(kind)
            return self._read(key, "zset", self.redis.zcount, key, min_score, "+inf")
        return sum(self._each(queue, lambda r, place: r.zcount(place.registry(kind), min_score, "+inf")))

    def registry_ids(
        self, kind: str, queue: str, min_score: float | str = "-inf", start: int = 0, end: int = -1,
        problems: list[str] | None = None,
    ) -> list[str]:
        """As `queue_ids`, for the entries scored at or above `min_score` (over every
        partition of a partitioned queue, merged by score)."""
        num = -1 if end < 0 else end - start + 1
        places = self._places(queue)
        if len(places) == 1:
            key = places[0].registry(kind)
            return _ids(key, self._read(key, "zset", self.redis.zrangebyscore, key, min_score, "+inf", start=start,
                                        num=num), problems)
        # the first end + 1 of each partition hold the first end + 1 of all
        replies = self._each(queue, lambda r, place: r.zrangebyscore(
            place.registry(kind), min_score, "+inf", start=0, num=-1 if end < 0 else end + 1, withscores=True))
        merged = []
        for place, reply in zip(places, replies):
            wanted = set(_ids(place.registry(kind), [member for member, _ in reply], problems))
            merged += [(score, member.decode(errors="replace")) for member, score in reply
                       if member.decode(errors="replace") in wanted]
        merged.sort()
        chosen = merged[start:] if end < 0 else merged[start:end + 1]
        return [job_id for _, job_id in chosen]

    def registry_score(self, kind: str, queue: str, job_id: str) -> float | None:
        tag = keys.tag_of(job_id)
        key = keys.of_queue(queue, tag if tag in self.partitions.tags(queue) else None).registry(kind)
        return self._read(key, "zset", self.redis.zscore, key, job_id)

    def registry_remove(self, kind: str, queue: str, job_id: str, delete_job: bool = False) -> bool:
        place = keys.of_queue(queue, keys.job_tag(job_id, queue))
        tagged = place.tagged

        def run() -> bool:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(place.registry(kind), job_id)
            if delete_job:
                pipe.delete(tagged.job(job_id))
                pipe.hdel(tagged.bucket(job_id), job_id)
                pipe.hdel(tagged.state, job_id)
                pipe.zrem(tagged.expiry, job_id)
            return bool(pipe.execute()[0])

        removed = self._call(run)
        if delete_job:
            self._directory_lifetime([job_id], [0])
        return removed

    def declare_partitions(self, queue: str, count: int) -> None:
        """Record a queue's number of partitions (1: not partitioned) for every client."""
        if count > 1:
            self._call(self.redis.hset, keys.PARTITIONS, queue, count)
        else:
            self._call(self.redis.hdel, keys.PARTITIONS, queue)

    def partition_jobs(self, queue: str, tags: Sequence[str]) -> int:
        """How many jobs the queue holds in the partitions of `tags`, in any state (one round
        trip)."""
        if not tags:
            return 0

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for tag in tags:
                place = keys.of_queue(queue, tag)
                pipe.llen(place.queue)
                for kind in keys.REGISTRIES:
                    pipe.zcard(place.registry(kind))
            return pipe.execute()

        return sum(self._call(run))

    # -- workers ---------------------------------------------------------------------------

    def _segments(self, queues: Sequence[str]) -> list[list[int]]:
        """The worker's queues (by index) in the calls of a claim: all in one on a single
        Redis; on a cluster, runs of consecutive queues that share a tag (one slot a call),
        claimed one after the other in priority order."""
        if not self.cluster:
            return [list(range(len(queues)))]
        segments: list[list[int]] = []
        last = None
        for i, queue in enumerate(queues):
            tag = keys.queue_tag(queue)
            if tag != last:
                segments.append([])
                last = tag
            segments[-1].append(i)
        return segments

    def claim(
        self, worker: str, queues: Sequence[str], now: float, deadline: float, limit: int, alone: Alone = ALONE
    ) -> Claim:
        """Promote due scheduled jobs and claim up to `limit` jobs (see `Claim`); one round
        trip (on a cluster, one per slot until `limit` is reached).

        `alone`: (the worker holds nothing else, (id, token, queue) of a job it holds that
        was claimed alone and will no longer run alone, or None); see lua/claim.lua."""
        return self._claim_all(worker, queues, now, deadline, limit, alone, [])

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
        recorded: list[int] = []
        claim = self._claim_all(worker, queues, now, deadline, limit, alone, self._finish(worker, records, now), recorded)
        self._after_finish(records, recorded)
        return recorded, claim

    def finish(self, worker: str, records: Sequence[Record], now: float) -> list[int]:
        """Record outcomes of claimed jobs (fenced by token): 1 recorded, 0 claim lost, 2
        failed instead (its registry or queue it goes to was overwritten by another type:
        lua/finish.lua)."""
        calls = self._finish(worker, records, now)
        recorded = _in_order(calls, self._call(self._run_scripts, [call for call, _ in calls]))
        self._after_finish(records, recorded)
        return recorded

    def _after_finish(self, records: Sequence[Record], recorded: Sequence[int]) -> None:
        """Give the directory entries of ended jobs with custom ids their lifetime."""
        ended = [(r.job_id, r.keep) for r, ok in zip(records, recorded) if ok == 1 and r.outcome in _ENDED]
        if ended:
            self._directory_lifetime([job_id for job_id, _ in ended], [keep for _, keep in ended])

    def _claim_all(
        self,
        worker: str,
        queues: Sequence[str],
        now: float,
        deadline: float,
        limit: int,
        alone: Alone,
        finishing: list[tuple[Any, list[int]]],
        recorded: list[int] | None = None,
    ) -> Claim:
        """The claim, after the `finishing` calls (`_finish`) in the same round trip, whose
        answers go into `recorded`. On a cluster, each slot's queues are claimed in turn
        while the claim is short (a job marked as claimed alone is then unmarked before
        the worker gets it, if more came)."""
        holds_nothing, beside = alone
        segments = self._segments(queues)
        first = segments[0]
        pre: list[Any] = [call for call, _ in finishing]
        if beside is not None and keys.job_tag(beside[0], beside[2]) != keys.queue_tag(queues[first[0]]):
            # (cluster) its tag is claimed later or not at all: unmarked first
            segment = next((s for s in segments if keys.queue_tag(queues[s[0]]) == keys.job_tag(beside[0], beside[2])), None)
            if segment is not None:
                pre.append(self._claim(worker, queues, segment, now, deadline, 0, False, beside))
            beside = None
        replies = self._call_once(self._run_scripts, [*pre, self._claim(worker, queues, first, now, deadline, limit, holds_nothing, beside)])
        if recorded is not None:
            recorded += _in_order(finishing, replies[:len(finishing)])
        claim = _parse_claim(replies[-1], worker, first)
        marked = claim.jobs[0] if holds_nothing and len(claim.jobs) == 1 else None
        for segment in segments[1:]:
            if len(claim.jobs) >= limit or claim.quarantine:
                break
            reply = self._call_once(self._run_scripts, [self._claim(
                worker, queues, segment, now, deadline, limit - len(claim.jobs), holds_nothing and not claim.jobs, None
            )])
            more = _parse_claim(reply[0], worker, segment)
            if more.jobs and not claim.jobs and holds_nothing and len(more.jobs) == 1:
                marked = more.jobs[0]
            claim = _merge_claims(claim, more)
        if marked is not None and len(claim.jobs) > 1:
            job_id, token, index, _ = marked
            segment = next(s for s in segments if index in s)
            self._call_once(self._run_scripts, [self._claim(
                worker, queues, segment, now, deadline, 0, False, (job_id, token, queues[index])
            )])
        if claim.corrupt:
            self._settle(claim.corrupt)
        return claim

    def _claim(
        self,
        worker: str,
        queues: Sequence[str],
        indexes: Sequence[int],
        now: float | str,
        deadline: float,
        limit: int,
        alone: bool,
        beside: tuple[str, int, str] | None,
    ) -> Any:
        """The claim's script call over the queues at `indexes` (see lua/claim.lua; `now` ''
        takes Redis's clock, and `deadline` is then the lease in seconds)."""
        tags: list[str] = []
        for i in indexes:
            tag = keys.queue_tag(queues[i])
            if tag not in tags:
                tags.append(tag)
        script_keys: list[str] = []
        for tag in tags:
            tagged = keys.tag_keys(tag)
            script_keys += [tagged.inflight(worker), *tagged.block]
        queue_args: list[Any] = []
        for i in indexes:
            place = keys.of_queue(queues[i])
            script_keys += [place.queue, place.wake, place.started, place.scheduled, place.failed]
            queue_args += [place.name, tags.index(place.tag) + 1]
        job_id, token, block = "", "", 0
        if beside is not None:
            beside_tag = keys.job_tag(beside[0], beside[2])
            if beside_tag in tags:
                job_id, token, block = beside[0], str(beside[1]), tags.index(beside_tag) + 1
        args = [
            worker, now, deadline, limit, CORRUPT_KEEP, int(alone), _raw(job_id), token, block, keys.BUCKETS, len(tags),
            *queue_args,
        ]
        return self.scripts.claim, script_keys, args

    def _finish(self, worker: str, records: Sequence[Record], now: float) -> list[tuple[Any, list[int]]]:
        """The finish script calls for `records`, each with the indexes of the records it
        takes: one call on a single Redis, one per slot on a cluster. The keys a batch's
        jobs share (a tag's, a queue's) are given once (lua/finish.lua)."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(keys.job_tag(r.job_id, r.queue) if self.cluster else "", []).append(i)
        calls = []
        hour = int(now // 3600)
        for indexes in groups.values():
            tags: dict[str, int] = {}
            places: dict[tuple[str, str], int] = {}
            # what most jobs of a batch share (outcome, keep, run-at, queue, task) is sent
            # once, as a kind, and each job names its kind: 5 arguments a job, not 8
            kinds: dict[tuple[Any, ...], int] = {}
            job_keys: list[str | bytes] = []
            job_args: list[Any] = []
            counted: dict[str, keys.QueueKeys] = {}
            for i in indexes:
                r = records[i]
                place = keys.of_queue(r.queue, keys.job_tag(r.job_id, r.queue))
                tagged = place.tagged
                tags.setdefault(place.tag, len(tags) + 1)
                number = places.setdefault((place.name, place.tag), len(places) + 1)
                job_keys += [_raw(tagged.bucket(r.job_id)), _raw(tagged.job(r.job_id)), _raw(tagged.done(r.job_id))]
                # a refusal rides on the outcome ('failed refused'): lua/lib/stats.lua
                kind = (f"{r.outcome} refused" if r.refused else r.outcome, r.keep, "" if r.run_at is None else r.run_at,
                        number, r.func)
                job_args += [_raw(r.job_id), r.token, kinds.setdefault(kind, len(kinds) + 1),
                             "" if r.micros is None else r.micros, r.payload]
                if r.outcome in _COUNTED:
                    counted[place.queue] = place
            script_keys: list[str | bytes] = []
            for tag in tags:
                tagged = keys.tag_keys(tag)
                script_keys += [tagged.inflight(worker), tagged.state, tagged.expiry]
            args: list[Any] = [now, worker, CORRUPT_KEEP, len(tags), len(places), len(kinds)]
            for name, tag in places:
                place = keys.of_queue(name, tag)
                script_keys += [place.queue, place.wake, place.started, place.finished, place.failed, place.canceled,
                                place.scheduled]
                args += [name, tags[tag]]
            for kind in kinds:
                args += kind
            script_keys += job_keys
            for place in counted.values():  # lua/lib/stats.lua
                script_keys += [place.queue, place.stats(hour), place.totals]
            calls.append(((self.scripts.finish, script_keys, args + job_args), indexes))
        return calls

    def block_for_work(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until one of the queues is woken (a job was pushed) or `timeout` passes.

        On a cluster, the wake lists of each tag are waited on by a thread of their own
        (a blocking call covers one slot), on connections of their own: see `_Wakes`.
        A wake list overwritten by another type counts as a wake: the claim that follows
        repairs it (lua/claim.lua)."""
        wait = max(0.001, min(timeout, self.block_seconds))
        groups: dict[str, list[str]] = {}
        for queue in queues:
            place = keys.of_queue(queue)
            groups.setdefault(place.tag if self.cluster else "", []).append(place.wake)
        if len(groups) > 1:
            with self._stores_lock:
                wakes = self._wakes.get(tuple(queues))
                if wakes is None:
                    wakes = self._wakes[tuple(queues)] = _Wakes(self, list(groups.values()))
            return wakes.wait(wait)
        return self._block(next(iter(groups.values())), wait)

    def wait_and_claim(
        self,
        worker: str,
        queues: Sequence[str],
        timeout: float,
        lease: float,
        limit: int,
        alone: Alone = ALONE,
        now: float | None = None,
    ) -> Claim:
        """An idle worker's pickup: wait up to `timeout` seconds for one of the queues to be
        woken (as `block_for_work`), then claim (as `claim`), in ONE round trip.

        The claim is pipelined behind the blocking pop on the same connection: Redis runs
        a blocked client's next commands as soon as it is unblocked, so the claim runs the
        moment a push wakes the wait (or when it times out: it then finds nothing, or the
        scheduled jobs that came due meanwhile, which it promotes). It is the same atomic,
        leased, fenced script as `claim`; only its time differs: sent up to `timeout`
        before it runs, it takes the time from Redis's clock when it runs (lua/claim.lua,
        ARGV 2 ''), so the job's start time is when it was claimed and its lease is a full
        `lease` seconds from then. (Redis's clock stands in for the worker's for that one
        claim: hosts' clocks are assumed to agree, as leases already assume; the next
        heartbeat renews the lease by the worker's.) `now`: a time to use instead, for a
        worker given its own clock (tests), which does not move during the wait.

        On a cluster, when the queues are on several slots, each slot is waited on apart
        (`block_for_work`) and the claim follows: two round trips or more."""
        wait = max(0.001, min(timeout, self.block_seconds))
        tags = {keys.queue_tag(queue) for queue in queues} if self.cluster else set()
        holds_nothing, beside = alone
        if len(tags) > 1 or beside is not None:
            self.block_for_work(queues, wait)
            at = time.time() if now is None else now
            return self.claim(worker, queues, at, at + lease, limit, alone)
        indexes = list(range(len(queues)))
        script, script_keys, args = self._claim(
            worker, queues, indexes, "" if now is None else now, lease if now is None else now + lease, limit,
            holds_nothing, None,
        )
        wake_keys = [keys.of_queue(queue).wake for queue in queues]

        commands = [("BLPOP", *wake_keys, wait), ("EVALSHA", script.sha, len(script_keys), *script_keys, *args)]

        def run() -> Any:
            popped, reply = self._send_and_read(commands, script_keys[0])
            if isinstance(reply, Exception):
                if not isinstance(reply, redis.exceptions.NoScriptError):
                    raise reply
                reply = script(keys=script_keys, args=args)  # (a restarted Redis)
            claim = _parse_claim(reply, worker, indexes)  # (with the time it claimed at)
            # a wake list of another type woke the wait at once: the claim repaired it
            if isinstance(popped, Exception) and "WRONGTYPE" not in str(popped) and not claim.jobs:
                raise popped
            return claim

        claim = self._call_once(run)
        if claim.corrupt:
            self._settle(claim.corrupt)
        return claim

    def _send_and_read(self, commands: Sequence[tuple[Any, ...]], key: str) -> list[Any]:
        """Send `commands` in one write and read their replies (an error reply in its place).
        A pipeline, as lean as it can be on a single Redis: an idle worker's pickup runs it
        as it wakes, when every line of Python costs several times what it does warm, and
        redis-py's Pipeline adds about 100 µs there. On a plain client, the connection is
        held out of the pool until the next pickup (`_pickup`): handing it back between the
        reply and the job's start cost that start about 20 µs, and taking one from the pool
        checks it (a connection Redis closed meanwhile is replaced) before the wait, where
        time is free. On a cluster, a pipeline to `key`'s node."""
        if self.cluster:
            pipe = self.redis.pipeline(transaction=False)
            node = self.redis.get_node_from_key(key)
            for command in commands:
                pipe.execute_command(*command, target_nodes=node)
            return list(pipe.execute(raise_on_error=False))
        pickup = self._pickup
        if pickup is not None:
            pickup.give_back()  # the last pickup's
            return pickup.send(commands)
        pool = self.redis.connection_pool
        connection = pool.get_connection()
        try:
            return _exchange(connection, connection.pack_commands(commands), len(commands))
        finally:
            pool.release(connection)

    def _block(self, wake_keys: Sequence[str], wait: float) -> bool:
        try:
            return self._call(self.redis.blpop, wake_keys, wait) is not None
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
        queues: Sequence[str] = (),
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Renew the worker's lease, its lease in the tags of `queues` and those of its held
        (id, queue, token) jobs, in one round trip (lua/heartbeat.lua, lua/renew.lua).

        Returns the ids of claims it lost, and (id, reason) of held jobs whose cancel was
        requested (a backup for a missed message on the worker's cancel channel).
        stall_began: when a stall began, if the worker could not renew for more than half its
        lease: verdicts on leases that ran out since are held for `grace` seconds
        (lua/lib/verdicts.lua).
        """
        home = [keys.WORKERS, keys.worker(worker), keys.MAINTENANCE]
        calls: list[Any] = [
            (self.scripts.heartbeat, home, [worker, deadline, info_ttl, "" if stall_began is None else repr(stall_began), repr(grace)])
        ]
        by_tag: dict[str, list[tuple[str, str, int]]] = {keys.queue_tag(q): [] for q in queues}
        for job_id, queue, token in held:
            by_tag.setdefault(keys.job_tag(job_id, queue), []).append((job_id, queue, token))
        for tag, jobs in by_tag.items():
            tagged = keys.tag_keys(tag)
            script_keys: list[str | bytes] = [tagged.workers, tagged.state, tagged.inflight(worker)]
            args: list[Any] = [worker, deadline]
            for job_id, queue, token in jobs:
                script_keys.append(keys.of_queue(queue, tag).started)
                args += [_raw(job_id), token]
            calls.append((self.scripts.renew, script_keys, args))
        replies = self._call(self._run_scripts, calls)
        lost, pairs = [], []
        for renewed, canceled in replies[1:]:
            lost += [_text(i) for i in renewed]
            pairs += [(_text(canceled[i]), canceled[i + 1].decode(errors="replace")) for i in range(0, len(canceled), 2)]
        return lost, pairs

    def cancel_requests(self, worker: str) -> CancelRequests:
        """A subscription to the worker's cancel channel (its own connection; see the class)."""
        return CancelRequests(self, keys.cancel_channel(worker))

    def register_worker(self, worker: str, info: dict[str, str], deadline: float, info_ttl: int) -> None:
        """Say who a worker is; the maintenance hash keeps its queues (info["queues"]) until
        it is forgotten, so that recovery finds the tags it used (lua/next_queues.lua)."""

        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(keys.worker(worker), mapping=info)
            pipe.expire(keys.worker(worker), info_ttl)
            pipe.zadd(keys.WORKERS, {worker: deadline})
            pipe.hset(keys.MAINTENANCE, f"q:{worker}", info.get("queues", ""))
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

    def unregister_worker(self, worker: str, queues: Sequence[str] = ()) -> None:
        """Forget a worker that holds nothing any more (call after releasing its jobs), and
        its leases in the tags of `queues`.

        Its in-flight lists are not touched: empty, Redis has already dropped them; not
        empty, the maintenance step must find them through the worker's expiring lease."""

        def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(keys.WORKERS, worker)
            pipe.delete(keys.worker(worker))
            pipe.hdel(keys.MAINTENANCE, f"q:{worker}")
            pipe.execute()
            tags = dict.fromkeys(keys.queue_tag(q) for q in queues)
            if tags:
                pipe = self.redis.pipeline(transaction=False)
                for tag in tags:
                    pipe.zrem(keys.tag_keys(tag).workers, worker)
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
        """(name, lease deadline, what it registered, jobs it holds) per worker (three round trips).
        A worker hash or in-flight list of another type reads as empty, and is reported."""
        workers = self.workers(problems)
        if not workers:
            return []

        def infos() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for name, _ in workers:
                pipe.hgetall(keys.worker(name))
            return pipe.execute(raise_on_error=False)

        read = [(keys.worker(name), "hash") for name, _ in workers]
        details = [
            {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (info or {}).items()}
            for info in self._readable(self._call(infos), read, problems)
        ]
        lists = [self._inflight_keys(name, _queues_of(info)) for (name, _), info in zip(workers, details)]
        every = [key for per_worker in lists for key in per_worker]

        def lengths() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for key in every:
                pipe.llen(key)
            return pipe.execute(raise_on_error=False)

        counts = iter(self._readable(self._call(lengths), [(key, "list") for key in every], problems) if every else [])
        return [
            (name, deadline, info, sum(next(counts) or 0 for _ in per_worker))
            for (name, deadline), info, per_worker in zip(workers, details, lists)
        ]

    def _inflight_keys(self, worker: str, queues: Iterable[str]) -> list[str]:
        """A worker's in-flight lists: one per tag of its queues (of each partition)."""
        return [keys.inflight(tag, worker) for tag in dict.fromkeys(keys.queue_tag(q) for q in self.partitions.expand(queues))]

    def _registered_queues(self, worker: str) -> list[str]:
        """The queues a worker registered (register_worker), while it is not forgotten."""
        raw = self._call(self.redis.hget, keys.MAINTENANCE, f"q:{worker}")
        return _queues_of({"queues": raw.decode(errors="replace") if raw else ""})

    def inflight(self, worker: str, queues: Sequence[str] | None = None) -> list[str]:
        """The ids in a worker's in-flight lists (see `_text` for ids that are not UTF-8);
        `queues`: the worker's (default: those it registered)."""
        lists = self._inflight_keys(worker, self._registered_queues(worker) if queues is None else queues)

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for key in lists:
                pipe.lrange(key, 0, -1)
            return pipe.execute()

        return [_text(i) for ids in (self._call(run) if lists else []) for i in ids]

    def reap(
        self, worker: str, now: float, max_deaths: int, default_failure_ttl: int, queues: Sequence[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """Recover at once every job a worker that is known dead held, in each tag of its
        `queues` (default: those it registered), and forget the worker (a few round trips).

        Returns (recovered ids, abandoned ids). A job whose queue cannot be read (its queue
        field is no queue name, or not one of the worker's) is left where it is: its lease
        runs out and the maintenance step, which finds it through its queue's started
        registry, recovers it then.
        """
        queues = self._registered_queues(worker) if queues is None else list(queues)
        by_tag = self._by_tag(queues)
        calls = []
        for tag, names in by_tag.items():
            tagged = keys.tag_keys(tag)
            script_keys = [tagged.inflight(worker), *tagged.block]
            for name in names:
                place = keys.of_queue(name, tag)
                script_keys += [place.queue, place.wake, place.started, place.failed]
            calls.append((self.scripts.reap, script_keys, [now, worker, max_deaths, default_failure_ttl, keys.BUCKETS, *names]))
        recovered, abandoned, failed, settle = [], [], [], []
        for reply in self._call(self._run_scripts, calls) if calls else []:
            recovered += _texts(reply[0])
            abandoned += _texts(reply[1])
            failed += _texts(reply[2])
            settle += [_text(i) for i in reply[3]]
        self.unregister_worker(worker, self.partitions.expand(queues))
        if settle:
            self._settle(settle)
        if failed:
            log.error("failed %d job(s) of worker %s that could not go back to their queues (see their exc_info): %s",
                      len(failed), worker, ", ".join(failed))
        return recovered, abandoned

    def _settle(self, job_ids: Sequence[str], tags: Sequence[str] | None = None) -> None:
        """Move jobs a script ended without naming their own keys into their own hash
        (lua/settle.lua), one call per tag."""
        by_tag: dict[str, list[str]] = {}
        for i, job_id in enumerate(job_ids):
            tag = tags[i] if tags is not None else keys.tag_of(job_id)
            if tag is not None:
                by_tag.setdefault(tag, []).append(job_id)
        if not by_tag:
            return
        calls = []
        for tag, ids in by_tag.items():
            tagged = keys.tag_keys(tag)
            script_keys: list[str | bytes] = [tagged.settle, tagged.state, tagged.expiry]
            for job_id in ids:
                script_keys += [_raw(tagged.bucket(job_id)), _raw(tagged.job(job_id)), _raw(tagged.done(job_id))]
            calls.append((self.scripts.settle, script_keys, [_raw(i) for i in ids]))
        self._call(self._run_scripts, calls)

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

        Three round trips, and a few more when there is more to do: lua/next_queues.lua
        takes the lock, judges the workers and picks the next MAINTENANCE_CHUNK names of the
        queue set (a cursor in Redis walks the whole set, step after step); the leases of
        workers in each tag visited are read; then lua/maintain.lua does the work in each
        tag, on those queues, on `queues` (the worker's own, visited at every step) and on
        the queues of dead workers; jobs it failed are settled (lua/settle.lua); the queue
        set and cursor are updated. Members of the queue set that are not queue names are
        dropped from it, and reported. stall_began, grace: as for `heartbeat`, reported by
        this worker.
        """
        begun = self._call(
            self.scripts.next_queues,
            keys=[keys.MAINTENANCE_LOCK, keys.MAINTENANCE, keys.QUEUES, keys.WORKERS],
            args=[token, lock_ms, MAINTENANCE_CHUNK, repr(now), "" if stall_began is None else repr(stall_began), repr(grace)],
        )
        if not begun:
            return None
        cursor, members, cutoff, dead_raw, their_queues = begun
        names, unreadable = _names(members)
        dead = _texts(dead_raw)
        visit = [*queues, *names, *(q for raw in their_queues for q in _queues_of({"queues": raw.decode(errors="replace")}))]
        by_tag = self._by_tag(visit)

        def dead_in_tags() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for tag in by_tag:
                pipe.zrangebyscore(keys.tag_keys(tag).workers, "-inf", cutoff, start=0, num=100)
            return pipe.execute(raise_on_error=False)

        lists = {
            tag: [] if isinstance(reply, Exception) else _texts(reply)
            for tag, reply in zip(by_tag, self._call(dead_in_tags) if by_tag else [])
        }
        result = _Maintained()
        todo = {tag: (lists[tag], by_tag[tag]) for tag in by_tag}
        for _ in range(3):  # a second (and third) call for workers and queues the first did not name
            if not todo:
                break
            calls = [self._maintain_call(tag, now, cutoff, max_deaths, default_failure_ttl, *todo[tag]) for tag in todo]
            more = {}
            for tag, reply in zip(todo, self._call(self._run_scripts, calls)):
                undeclared, missing = result.add(tag, reply)
                if undeclared or missing:
                    more[tag] = (list(dict.fromkeys([*todo[tag][0], *undeclared])), list(dict.fromkeys([*todo[tag][1], *missing])))
            todo = more
        if result.settle:
            self._settle([job_id for _, job_id in result.settle], [tag for tag, _ in result.settle])
        self._tidy_queue_set(cursor, unreadable, result.dropped, result.kept)
        return Maintenance(
            _texts(result.recovered), _texts(result.abandoned), list(dict.fromkeys([*dead, *result.dead])),
            _texts(result.failed), _texts(result.broken), len(result.dropped), _texts(unreadable),
        )

    def _by_tag(self, queues: Iterable[str]) -> dict[str, list[str]]:
        """tag -> the queue names with a partition there (each partition of a partitioned
        queue in its own tag; a `keys.Partition` in its own)."""
        by_tag: dict[str, list[str]] = {}
        for queue in queues:
            tags = [queue.tag] if type(queue) is keys.Partition else self.partitions.tags(queue)
            for tag in tags:
                names = by_tag.setdefault(tag, [])
                if str(queue) not in names:
                    names.append(str(queue))
        return by_tag

    def _maintain_call(
        self, tag: str, now: float, cutoff: Any, max_deaths: int, default_failure_ttl: int, workers: Sequence[str],
        queues: Sequence[str],
    ) -> Any:
        tagged = keys.tag_keys(tag)
        script_keys = [*tagged.block, *(tagged.inflight(w) for w in workers)]
        for queue in queues:
            place = keys.of_queue(queue, tag)
            script_keys += [place.queue, place.wake, place.started, place.scheduled, place.failed, place.finished, place.canceled]
        args = [repr(now), cutoff, max_deaths, default_failure_ttl, keys.BUCKETS, len(workers), *workers, *queues]
        return self.scripts.maintain, script_keys, args

    def _tidy_queue_set(self, cursor: bytes, unreadable: Sequence[bytes], dropped: Sequence[tuple[str, str]], kept: Sequence[str]) -> None:
        """The end of a maintenance step in the home tag: save the cursor, drop from the
        queue set what is no queue name and the queues dropped from their tag's set, put
        back those kept. A queue dropped while a producer enqueued to it is then put back
        (its tag's set has it again): enqueue.lua adds it there first."""

        def run() -> None:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(keys.MAINTENANCE, "cursor", cursor)
            if unreadable or dropped:
                pipe.srem(keys.QUEUES, *unreadable, *(name for _, name in dropped))
            if kept:
                pipe.sadd(keys.QUEUES, *kept)
            pipe.execute()
            if not dropped:
                return
            pipe = self.redis.pipeline(transaction=False)
            names = list(dict.fromkeys(name for _, name in dropped))
            tags = [self.partitions.tags(name) for name in names]
            for name, in_tags in zip(names, tags):
                for tag in in_tags:  # (a partitioned queue is kept while any partition holds something)
                    pipe.sismember(keys.tag_keys(tag).queues, name)
            there = [bool(x) for x in pipe.execute()]
            back, at = [], 0
            for name, in_tags in zip(names, tags):
                if any(there[at:at + len(in_tags)]):
                    back.append(name)
                at += len(in_tags)
            if back:
                self.redis.sadd(keys.QUEUES, *back)
                for name in back:
                    self._indexed.pop(name, None)

        self._call(run)

    # -- reading for the dashboard, `taskit info` and the metrics ---------------------------

    def queue_counts(
        self, queues: Sequence[str], min_scores: Mapping[str, float | str], problems: list[str] | None = None
    ) -> list[dict[str, int | None]]:
        """Per queue: {"queued": n, <registry kind>: n, ...} in one round trip, counting the
        registry entries scored at or above `min_scores[kind]` (now, to skip expired ones).
        A count whose key holds another type is None (and reported)."""
        places = {queue: self._places(queue) for queue in queues}
        read = []
        for queue in queues:
            for place in places[queue]:
                read.append((place.queue, "list"))
                read += [(place.registry(kind), "zset") for kind in min_scores]

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for queue in queues:
                for place in places[queue]:
                    pipe.llen(place.queue)
                    for kind, low in min_scores.items():
                        pipe.zcount(place.registry(kind), low, "+inf")
            return pipe.execute(raise_on_error=False)

        replies = iter(self._readable(self._call(run), read, problems) if queues else [])
        names = ["queued", *min_scores]
        counts: list[dict[str, int | None]] = []
        for queue in queues:
            total: dict[str, int | None] = dict.fromkeys(names, 0)
            for _ in places[queue]:
                for name in names:
                    n, sum_ = next(replies), total[name]
                    total[name] = None if n is None or sum_ is None else sum_ + n
            counts.append(total)
        return counts

    def _read_places(
        self, queues: Sequence[str], keys_of: Callable[[keys.QueueKeys], list[str]], kind: str,
        read: Callable[[Any, str], Any], problems: list[str] | None,
    ) -> list[list[tuple[str, Any]]]:
        """Per queue, (key, `read(pipe, key)`) for each key `keys_of` gives in each of its
        partitions, all in one round trip; a key of another type reads as None (reported)."""
        places = [[key for place in self._places(queue) for key in keys_of(place)] for queue in queues]
        wanted = [(key, kind) for per_queue in places for key in per_queue]

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for key, _ in wanted:
                read(pipe, key)
            return pipe.execute(raise_on_error=False)

        replies = iter(self._readable(self._call(run), wanted, problems) if wanted else [])
        return [[(key, next(replies)) for key in per_queue] for per_queue in places]

    def oldest_enqueued(self, queues: Sequence[str], problems: list[str] | None = None) -> list[float | None]:
        """Per queue, when the oldest of the jobs at the head of its partitions was enqueued
        (Unix seconds; None: the queue is empty, or its heads just left, or what is there
        cannot be read: reported). Two round trips for all queues."""
        heads = self._read_places(queues, lambda place: [place.queue], "list", lambda pipe, key: pipe.lindex(key, 0), problems)
        ids: list[list[str]] = []
        for per_queue in heads:
            ids.append([job_id for key, head in per_queue if head is not None for job_id in _ids(key, [head], problems)])
        present = [(job_id, queue) for per_queue, queue in zip(ids, queues) for job_id in per_queue]
        times: dict[str, float | None] = {}
        # read as a page shows a job (Store.peek): a waiting job's big arguments are not sent
        for (job_id, queue), row in zip(present, self.peek([job_id for job_id, _ in present], PEEK_BYTES) if present else []):
            if isinstance(row, StorageError):
                _report(problems, str(row))
            raw = row[0].get(keys.Field.ENQUEUED) if isinstance(row, tuple) else None
            bucket = keys.tag_keys(keys.job_tag(job_id, queue)).bucket(job_id)
            when = None if raw is None else _number(raw, f"{bucket} has an enqueue time", problems)
            times[job_id] = None if when is None else when / 1000
        known = [[times[job_id] for job_id in per_queue if times[job_id] is not None] for per_queue in ids]
        return [min(when) if when else None for when in known]  # type: ignore[type-var]

    def held_jobs(
        self, workers: Sequence[tuple[str, Sequence[str]]], limit: int = 10, problems: list[str] | None = None
    ) -> list[list[tuple[str, dict[str, bytes | None]]]]:
        """Per (worker, its queues), the first `limit` jobs of its in-flight lists (the one
        running first, then those claimed with it), each as (id, {func, status, started_at,
        queue}); two round trips (three with custom ids). An in-flight list of another type
        reads as empty (reported)."""
        lists = [self._inflight_keys(name, queues) for name, queues in workers]
        every_list = [key for per_worker in lists for key in per_worker]

        def read_lists() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for key in every_list:
                pipe.lrange(key, 0, limit - 1)
            return pipe.execute(raise_on_error=False)

        replies = iter(self._readable(self._call(read_lists), [(key, "list") for key in every_list], problems)
                       if every_list else [])
        held = []
        for per_worker in lists:
            ids = [job_id for key in per_worker for job_id in _ids(key, next(replies) or [], problems)]
            held.append(ids[:limit])
        every = list(dict.fromkeys(job_id for ids in held for job_id in ids))
        if not every:
            return [[] for _ in held]
        names = (keys.Field.FUNC, keys.Field.STATUS, keys.Field.STARTED, keys.Field.QUEUE)
        try:
            found = {job_id: fields or {} for job_id, fields in zip(every, self.fetch(every))}
        except StorageError:  # a key of another type: the others are shown, it is reported
            found = {}
            for job_id, row in zip(every, self.peek(every, PEEK_BYTES)):
                if isinstance(row, StorageError):
                    _report(problems, str(row))
                found[job_id] = row[0] if isinstance(row, tuple) else {}
        labels = ("func", "status", "started_at", "queue")
        return [
            [(job_id, {label: found[job_id].get(name) for label, name in zip(labels, names)}) for job_id in ids]
            for ids in held
        ]

    def last_ticks(self, tasks: Sequence[tuple[str, str]]) -> list[float | None]:
        """The last tick enqueued of each periodic task, given as (name, queue) (Unix
        seconds; None: never)."""

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for name, queue in tasks:
                pipe.get(keys.periodic(keys.queue_tag(queue), name))
            return pipe.execute()

        values = self._call(run) if tasks else []
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
        """Per queue (summed over its partitions), jobs {"d": finished, "f": failed, "r":
        retried} per Unix minute in [first_minute, last_minute] (lua/lib/stats.lua); minutes
        without any are left out. One round trip. A field that is no counter is left out
        (reported)."""
        hours = range(first_minute // 60, last_minute // 60 + 1)
        result = []
        read = self._read_places(queues, lambda place: [place.stats(hour) for hour in hours], "hash",
                                 lambda pipe, key: pipe.hgetall(key), problems)
        for per_queue in read:
            counts: dict[str, dict[int, int]] = {"d": {}, "f": {}, "r": {}}
            for key, reply in per_queue:
                for (kind, minute), n in _counters(key, reply or {}, problems, per_minute=True):
                    at = int(minute)
                    if kind in counts and first_minute <= at <= last_minute:
                        counts[kind][at] = counts[kind].get(at, 0) + n
            result.append(counts)
        return result

    def task_totals(self, queues: Sequence[str], problems: list[str] | None = None) -> list[dict[str, dict[str, int]]]:
        """Per queue (summed over its partitions), per task, its counters since the start
        (lua/lib/stats.lua): {"d", "f", "r", "us", "h<bound>"...} -> number. One round trip.
        A field that is no counter is left out (reported)."""
        result = []
        for per_queue in self._read_places(queues, lambda place: [place.totals], "hash", lambda pipe, key: pipe.hgetall(key), problems):
            tasks: dict[str, dict[str, int]] = {}
            for key, reply in per_queue:
                for (kind, task), n in _counters(key, reply or {}, problems):
                    counts = tasks.setdefault(task, {})
                    counts[kind] = counts.get(kind, 0) + n
            result.append(tasks)
        return result


class _Direct:
    """EVALSHA packed by taskit and sent on a connection of a plain client's pool.

    redis-py spends about 30 µs of CPU around each command (its encoder, hooks, retries,
    response callbacks, and the pool's checkout, which polls the socket), which was most
    of what a single enqueue cost a producer. For a plain `redis.Redis` whose pool is
    redis-py's own ConnectionPool (not Sentinel's, whose connections follow a failover; no
    client-side cache; not a single-connection client) the Store packs its scripts itself,
    sends them on a connection it holds out of the pool between calls, and reads the
    replies off its socket itself (storage/resp.py). The Store gives the connection back before any
    other command it runs (`give_back`), so a producer still uses one connection; a thread
    that finds it busy takes one from the pool for that call. A lost connection is
    disconnected (the next call reconnects) and raised, for the Store to retry as any
    other; a forked child never uses its parent's (`forked`: the pool gives it its own).
    """

    _all: ClassVar[weakref.WeakSet[_Direct]] = weakref.WeakSet()

    #: the smallest pool a connection is held out of: a smaller one (`max_connections`) is
    #: left whole to the application, and its Store goes through redis-py
    SMALLEST_POOL = 100

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        #: [the connection held, or None]: a cell, so that the connection goes back to the
        #: pool when this is freed with its client (a client made per request)
        self.cell: list[Any] = [None]
        weakref.finalize(self, _give_back_held, pool, self.cell)
        settings = pool.connection_kwargs
        self.encoding = settings.get("encoding", "utf-8"), settings.get("encoding_errors", "strict")
        self.utf8 = codecs.lookup(self.encoding[0]).name == "utf-8"  # (`_Packed` names are UTF-8)
        _Direct._all.add(self)

    @classmethod
    def forked(cls) -> None:
        """In a forked child: the parent's connection is not ours (nor, maybe, its lock,
        if another thread held it at the fork)."""
        for direct in list(cls._all):
            direct.lock, direct.cell[0] = threading.Lock(), None

    @classmethod
    def of(cls, client: Any) -> _Direct | None:
        """One for `client` if it is a plain client of an ordinary pool, else None."""
        pool = getattr(client, "connection_pool", None)
        if (
            type(client) is not redis.Redis or type(pool) is not redis.ConnectionPool
            or client.connection is not None  # single_connection_client
            or getattr(pool, "cache", None) is not None  # client-side caching
            or (pool.max_connections or 0) < cls.SMALLEST_POOL
        ):
            return None
        return cls(pool)

    def evalsha(self, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Each call's reply (a refusal as its ResponseError), in one round trip."""
        return self._send(b"".join(_evalsha_head(script.sha, len(script_keys), len(args)) + self._pack((*script_keys, *args))
                                   for script, script_keys, args in calls), len(calls))

    def send(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each command's reply (a refusal as its ResponseError), in one round trip."""
        return self._send(b"".join(b"*%d\r\n" % len(command) + self._pack(command) for command in commands), len(commands))

    def _send(self, payload: bytes, count: int) -> list[Any]:
        """The `count` replies to the commands packed in `payload`, on the connection held
        (or, when another thread has it, on one of the pool's)."""
        if not self.lock.acquire(blocking=False):  # another thread has it
            connection = self.pool.get_connection()
            try:
                return _exchange(connection, [payload], count)
            finally:
                self.pool.release(connection)
        try:
            connection = self.cell[0]
            if connection is None:
                connection = self.cell[0] = self.pool.get_connection()
            return _exchange(connection, [payload], count)
        finally:
            self.lock.release()

    def give_back(self) -> None:
        """Put the held connection back in the pool (before another command of the Store)."""
        if self.cell[0] is not None and self.lock.acquire(blocking=False):
            try:
                _give_back_held(self.pool, self.cell)
            finally:
                self.lock.release()

    def _pack(self, arguments: Sequence[Any]) -> bytes:
        """Arguments of a command in RESP, encoded as redis-py's encoder does."""
        encoding, utf8 = self.encoding, self.utf8
        parts: list[bytes] = []
        for arg in arguments:
            if type(arg) is _Packed and utf8:
                parts.append(arg.resp)
                continue
            if type(arg) is str:
                arg = arg.encode(*encoding)
            elif type(arg) is not bytes:
                arg = _encoded(arg, encoding)
            parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
        return b"".join(parts)


def _encoded(value: Any, encoding: tuple[str, str]) -> bytes:
    """What redis-py's encoder sends for a value that is not plain bytes or str; a type it
    refuses (a bool, a None, any other object) is refused alike."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode(*encoding)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise redis.DataError(f"Invalid input of type: '{type(value).__name__}'. Convert to a bytes, string, int or "
                          "float first.")


@functools.lru_cache(maxsize=256)
def _evalsha_head(sha: str, key_count: int, arg_count: int) -> bytes:
    """The RESP of EVALSHA up to its keys: the same for every call of a script with as many
    keys and arguments."""
    head = (b"EVALSHA", sha.encode(), b"%d" % key_count)
    return b"*%d\r\n" % (len(head) + key_count + arg_count) + b"".join(map(_bulk, head))


os.register_at_fork(after_in_child=_Direct.forked)


def _give_back_held(pool: redis.ConnectionPool, cell: list[Any]) -> None:
    connection, cell[0] = cell[0], None
    if connection is not None:
        pool.release(connection)


def _exchange(connection: Any, payload: Sequence[bytes], count: int) -> list[Any]:
    """Send commands packed in one write on `connection` and read their `count` replies,
    a refusal as its ResponseError in its place. On any other error the connection is
    disconnected (a reply may be half read; its next use reconnects) and the error raised."""
    try:
        connection.send_packed_command(payload)
        if type(connection) not in _PLAIN_CONNECTIONS:  # (Sentinel's reads a READONLY as a failover)
            return [_response_of(connection) for _ in range(count)]
        replies = Replies(connection._sock).read(count)
    except BaseException:
        connection.disconnect()
        raise
    if connection.health_check_interval:  # (as redis-py's reader does: the connection is alive)
        connection.next_health_check = time.monotonic() + connection.health_check_interval
    return replies


#: connections whose replies are read straight off their socket (storage/resp.py): those
#: whose reading redis-py does not specialize
_PLAIN_CONNECTIONS = frozenset({redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection})


def _response_of(connection: Any) -> Any:
    """The next reply, read by the connection; a refusal as its ResponseError (read whole:
    the next reply follows)."""
    try:
        return connection.read_response()
    except redis.ResponseError as exc:
        return exc


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
        #: (an OrderedDict forgets its oldest in O(1); a dict's first key is found by
        #: walking past the slots of those deleted before it)
        self._recent: OrderedDict[tuple[str, Any], None] = OrderedDict()

    def written(self, job_id: str, fields: Mapping[str, Any], answer: int) -> bool:
        if answer not in (1, 2):
            return False
        key = (job_id, fields.get(keys.Field.ENQUEUED))
        with self._lock:
            if answer == 2 and key in self._recent:
                return False
            self._recent[key] = None
            if len(self._recent) > self.SIZE:
                self._recent.popitem(last=False)
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
    (lua/lib/stats.lua); None: refused before running, or not measured. func: the task's
    name, for the statistics ('': finish.lua reads it from the job's record).
    refused: the worker did not run it (its function unknown or not allowed, its data
    unreadable): counted under one task name, REFUSED_TASK, whatever function it names, so
    that made-up names cannot add counters (metrics series) without bound."""

    __slots__ = ("func", "job_id", "keep", "micros", "outcome", "payload", "queue", "refused", "run_at", "token")

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
        func: str = "",
        refused: bool = False,
    ) -> None:
        self.job_id, self.queue, self.token, self.outcome = job_id, queue, token, outcome
        self.payload, self.keep, self.run_at = payload, keep, run_at
        self.micros, self.func, self.refused = micros, func, refused

    def __repr__(self) -> str:
        return f"Record({self.job_id!r}, {self.outcome!r}, token={self.token})"


#: the outcomes the statistics count (a released or interrupted job did not run to an end)
_COUNTED = frozenset({"finished", "failed", "retry", "scheduled"})
#: the task name under which jobs the worker refused are counted (see `Record`; lua/lib/stats.lua)
REFUSED_TASK = "(refused)"


#: outcomes that end a job (it leaves its bucket for its own hash)
_ENDED = frozenset({"finished", "failed", "canceled"})
#: how long a Store trusts that a queue it added to the global queue set is still there
#: (seconds); lua/enqueue.lua says when it is not
INDEX_SECONDS = 60.0


class _Packed(str):
    """A name sent with every job of its queue: its RESP form (UTF-8, as redis-py's default
    encoder makes it) is made once, for `_Direct._pack`; to everything else, a str."""

    __slots__ = ("resp",)
    resp: bytes

    def __new__(cls, text: str) -> _Packed:  # noqa: PYI034
        self = super().__new__(cls, text)
        self.resp = _bulk(text.encode())
        return self


def _bulk(raw: bytes) -> bytes:
    """`raw` as a RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


#: the arguments of lua/enqueue.lua that are mostly the same: none given, and flags
_NONE = _Packed("")
_FLAG = {False: _Packed("0"), True: _Packed("1")}


class _QueueKeys(NamedTuple):
    """What every enqueue to a queue sends the same, packed once (`_Packed`)."""

    tagged: keys.TagKeys
    buckets: tuple[_Packed, ...]
    state: _Packed
    queue_keys: tuple[_Packed, ...]  # (queue list, wake list, scheduled zset, the tag's queue set)
    expiry: _Packed
    name: _Packed

    def job_keys(self, job_id: str, ttl: int | None) -> list[str]:
        """The keys lua/lib/add_job.lua writes for a job of this queue; the expiry zset only
        for a job with a ttl."""
        job_keys = [self.buckets[keys.bucket_index(job_id)], self.state, self.tagged.job(job_id), *self.queue_keys]
        if ttl is not None:
            job_keys.append(self.expiry)
        return job_keys


@functools.lru_cache(maxsize=4096)
def _queue_keys(queue: str, tag: str) -> _QueueKeys:
    """The names an enqueue to `queue` sends that are the same for every job (its tag, `tag`:
    the one a job's id carries, else the queue's)."""
    place = keys.of_queue(queue, tag)
    tagged = place.tagged
    return _QueueKeys(tagged, tuple(map(_Packed, tagged.buckets)), _Packed(tagged.state),
                      tuple(map(_Packed, (place.queue, place.wake, place.scheduled, tagged.queues))),
                      _Packed(tagged.expiry), _Packed(queue))


def _repairs_index(command: tuple[Any, ...], reply: Exception) -> bool:
    """Whether a refused command of an enqueue was its SADD to a global queue set of another type."""
    return command[0] == "sadd" and command[1] == keys.QUEUES and str(reply).startswith("WRONGTYPE")


def _directory_entry(job_id: str, queue: str, tag: str | None) -> list[tuple[Any, ...]]:
    """The SET of a custom id's directory entry (keys.directory), or nothing for an id that
    carries its tag (`tag`). It is set only if absent, and replies what was there: the same tag for
    a retried or duplicate enqueue on that queue, another tag if the id was used on another
    queue (see `Store._claim_directory`)."""
    if tag is not None:
        return []
    return [("set", keys.directory(job_id), keys.queue_tag(queue), {"nx": True, "get": True})]


def _queues_of(info: Mapping[str, str]) -> list[str]:
    """The queue names a worker registered ("queues": comma-separated), valid ones only."""
    return [q for q in info.get("queues", "").split(",") if keys.NAME.fullmatch(q)]


def _in_order(calls: Sequence[tuple[Any, list[int]]], replies: Sequence[Any]) -> list[int]:
    """The answers of `_finish` calls, one per record, in the records' order."""
    answers: dict[int, int] = {}
    for (_, indexes), reply in zip(calls, replies):
        answers.update(zip(indexes, (int(r) for r in reply)))
    return [answers[i] for i in range(len(answers))]


class _Maintained:
    """What the maintenance calls of a step did, gathered over the tags."""

    def __init__(self) -> None:
        self.recovered: list[bytes] = []
        self.abandoned: list[bytes] = []
        self.dead: list[str] = []
        self.failed: list[bytes] = []
        self.broken: list[bytes] = []
        self.dropped: list[tuple[str, str]] = []
        self.kept: list[str] = []
        self.settle: list[tuple[str, str]] = []

    def add(self, tag: str, reply: Any) -> tuple[list[str], list[str]]:
        """Take in one tag's answer; returns (workers, queues) it needs named to go on."""
        recovered, abandoned, dead, failed, broken, dropped, kept, settle, undeclared, missing = reply
        self.recovered += recovered
        self.abandoned += abandoned
        self.dead += _texts(dead)
        self.failed += failed
        self.broken += [b for b in broken if b not in self.broken]
        self.dropped += [(tag, name) for name in _texts(dropped)]
        self.kept += _texts(kept)
        self.settle += [(tag, _text(i)) for i in settle if (tag, _text(i)) not in self.settle]
        return _texts(undeclared), [q for q in _texts(missing) if keys.NAME.fullmatch(q)]


class _Wakes:
    """Waits for a wake on several slots of a cluster at once: one thread per group of wake
    lists (a blocking call covers one slot), each on a connection of its own. A wake that
    comes after `wait` returned is kept for the next `wait`, which then returns at once
    (the claim that follows finds the job), so none is lost."""

    def __init__(self, store: Store, groups: list[list[str]]) -> None:
        self.store, self.groups = store, groups
        self._woken = threading.Event()
        self._lock = threading.Lock()
        self._waiting: set[int] = set()

    def wait(self, seconds: float) -> bool:
        if self._woken.is_set():
            self._woken.clear()
            return True
        with self._lock:
            for i, group in enumerate(self.groups):
                if i not in self._waiting:
                    self._waiting.add(i)
                    threading.Thread(target=self._block, args=(i, group, seconds), daemon=True,
                                     name="taskit-wake").start()
        woken = self._woken.wait(seconds)
        if woken:
            self._woken.clear()
        return woken

    def _block(self, i: int, group: list[str], seconds: float) -> None:
        try:
            if self.store._block(group, seconds):
                self._woken.set()
        except Exception:  # noqa: BLE001 (an outage: the claim that follows reports it)
            time.sleep(seconds)
        finally:
            with self._lock:
                self._waiting.discard(i)


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


Claimed = list[tuple[str, int, int, Fields]]
#: the registry each outcome of `Record` goes to ("started" where there is none: unused)
_TARGETS = {"finished": "finished", "failed": "failed", "scheduled": "scheduled", "canceled": "canceled"}


_packers = threading.local()


def pack_record(fields: Mapping[str, Any]) -> bytes:
    """A new job's record as its bucket keeps it (lib/records.lua): msgpack [field, value,
    ...] without a 'queued' status, the enqueue time 'e' an integer and every other value
    text, byte for byte what Lua's cmsgpack would write (strings as str, never bin, which
    Redis's cmsgpack cannot read: bytes go through as surrogates). Packed here, not in
    Lua, because unpacking 20 arguments and packing them again was most of an enqueue's
    Redis time; one Packer per thread."""
    flat: list[Any] = []
    for name, value in fields.items():
        if type(value) is bytes:
            value = value.decode("utf-8", "surrogateescape")
        elif not isinstance(value, str):
            value = int(value) if name == keys.Field.ENQUEUED else repr(value)  # (as redis-py sends a number)
        elif name == keys.Field.STATUS and value == "queued":
            continue
        flat += (name, value)
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
    return packer.pack(flat)


def _record_fields(record: Any) -> Fields:
    """A claimed job's fields from its packed record (lib/records.lua: msgpack [field, value,
    ...], every value text but the enqueue time, an integer). One that is unreadable, or
    none (False), gives no fields: the worker then fails the job as corrupt (its function
    is missing), never runs it with part of its record."""
    try:
        flat = msgpack.unpackb(record, raw=True)
        if type(flat) is not list or len(flat) % 2:
            return {}
        return {name.decode(): value if type(value) is bytes else _integer_text(value)
                for name, value in zip(flat[0::2], flat[1::2])}
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError, msgpack.UnpackException):
        return {}


def _integer_text(value: Any) -> bytes:
    """A record's integer value as text; any other value (a list, a map, a float, true) is
    not one taskit packs, and makes its record unreadable."""
    if type(value) is not int:
        raise TypeError(f"not text nor an integer: {type(value).__name__}")
    return b"%d" % value


def _text(raw: bytes) -> str:
    """A job id or field name read from Redis. taskit writes ASCII, but anyone can write to
    Redis: bytes that are not UTF-8 become surrogates, which `_raw` turns back into the
    same bytes, so such a job can still be recorded (as failed) rather than crash its reader."""
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> str | bytes:
    """`text` as redis-py must be given it: redis-py encodes str strictly, which fails on
    the surrogates of `_text`."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape")


class Claim(NamedTuple):
    """What a claim returned.

    jobs: (id, token, queue index, fields) per claimed job.
    next_run_at: the earliest scheduled run-at among the queues, or None.
    quarantine: '' , 'drain' (a job that may only run alone waits: finish what you hold, then
        claim with nothing held) or 'alone' (the one job claimed may only run alone: claim
        nothing more until it ends). See lua/claim.lua.
    corrupt: ids of jobs the claim failed as corrupt (settled by the Store).
    """

    jobs: Claimed
    next_run_at: float | None
    quarantine: str
    corrupt: tuple[str, ...] = ()


def _parse_claim(reply: Any, worker: str, indexes: Sequence[int]) -> Claim:
    """The claim's reply, parsed (`indexes`: the worker's queues the call covered).

    claim.lua returns each job's packed record and its state entry as it was before it
    marked the claim, and the time it claimed them at (the worker's, or Redis's own clock for
    Store.wait_and_claim); the claim's own writes are known here and filled in. Jobs the claim failed as corrupt
    (their record was overwritten while they waited) are logged. The reply comes packed
    in one msgpack string: redis-py's own parser (without hiredis) reads a reply an
    element at a time, in Python, about 2 µs each, 12 for one job and 5 more per job.
    """
    reply = msgpack.unpackb(reply, raw=True)
    flat, next_run_at, corrupt, quarantine, claimed_at = reply
    now = float(claimed_at)
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
    for i in range(0, len(flat), 5):
        job_id = _text(flat[i])  # an id written by hand may not be UTF-8: see _text
        pairs = flat[i + 4]  # its state entry's field/value pairs (empty when it had none)
        fields = _record_fields(flat[i + 3])  # (unpacked here, not in Lua)
        if pairs:
            fields.update(_text_keys(zip(pairs[0::2], pairs[1::2])))
        fields.update(started)
        fields[keys.Field.ATTEMPTS] = b"%d" % flat[i + 1]
        claimed.append((job_id, int(flat[i + 1]), indexes[int(flat[i + 2])], fields))
    return Claim(claimed, float(next_run_at) if next_run_at else None, quarantine.decode(), tuple(map(_text, corrupt)) if corrupt else ())


def _merge_claims(first: Claim, then: Claim) -> Claim:
    """Two claims of one round of a cluster claim, as one."""
    runs = [t for t in (first.next_run_at, then.next_run_at) if t is not None]
    return Claim(first.jobs + then.jobs, min(runs) if runs else None, then.quarantine or first.quarantine,
                 first.corrupt + then.corrupt)
