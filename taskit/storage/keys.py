"""Every Redis key taskit uses, in one place, laid out for Redis Cluster.

A *tag* is a short base-62 string that names one hash slot (`tag_for_slot`); every key
with `{T}` in its name lives in that slot. A queue has one tag (`queue_tag`: the tag of
the slot its name hashes to), and every key of the queue, and of the jobs on it, carries
that tag, so that each Lua script touches one slot only. Keys that belong to no queue
live in the home tag (`{taskit}`, the prefix). A job id made by taskit carries its tag
(`T.` + 22 random characters, `tag_of`); a job with an id of the caller's choosing is
found through a directory key in the id's own slot.

Per tag T (P = the prefix, `taskit` by default):

    P:{T}:queue:<queue>          list   ids ready to run, oldest at the head
    P:{T}:wake:<queue>           list   at most one token; idle workers block on it
    P:{T}:started:<queue>        zset   running (or prefetched) ids, score = lease deadline
    P:{T}:finished:<queue>       zset   score = expiry time (+inf = kept forever)
    P:{T}:failed:<queue>         zset   score = expiry time
    P:{T}:canceled:<queue>       zset   score = expiry time
    P:{T}:scheduled:<queue>      zset   score = run-at time
    P:{T}:emptying:<queue>       list   ids `Queue.empty()` is deleting, a chunk at a time
    P:{T}:stats:<queue>:<hour>   hash   jobs finished/failed/retried per minute of one hour
                                        (Unix hour); expires a day later (lua/lib/stats.lua)
    P:{T}:totals:<queue>         hash   the same per task since the start, and run-time
                                        histograms per task (lua/lib/stats.lua)
    P:{T}:periodic:<name>        string last tick enqueued of a periodic task on a queue of T
    P:{T}:jobs:<b>               hash   the record of each job not ended (queued, scheduled,
                                        running): id -> msgpack [field, value, ...] as
                                        enqueued, b = `bucket_index(id)` (BUCKETS per tag)
    P:{T}:state                  hash   id -> msgpack [field, value, ...] of what changed
                                        since (status, worker, attempts, ...): it overrides
                                        the record; the claim writes only here
    P:{T}:expiry                 zset   queued jobs with a ttl: id -> when it runs out
    P:{T}:settle                 zset   jobs ended by a script that could not name their own
                                        key (maintenance, claim): id -> seconds to keep; the
                                        next step moves them into P:{T}:job:<id>
    P:{T}:queues                 set    the queues of T that hold something (enqueue adds)
    P:{T}:workers                zset   workers that claimed in T, score = lease deadline
    P:{T}:inflight:<worker>      list   ids a worker holds in T
    P:{T}:job:<id>               hash   an ended job (finished, failed, canceled), expiring:
                                        its packed record in field p, its state and end beside
                                        (fields: see Field below)
    P:{T}:done:<id>              list   completion signal for `job.wait()`, short-lived

In the home tag H (= the prefix):

    P:{H}:queues                 set    the queues that hold something (every tag's)
    P:{H}:workers                zset   worker name, score = lease deadline
    P:{H}:worker:<name>          hash   what a worker is (host, pid, queues), expires with it;
                                        `waiting`: ids of the jobs it claimed and has not started
    P:{H}:lock:maintenance       string held by the worker running the maintenance step
    P:{H}:partitions             hash   queue name -> its number of partitions (queues
                                        declared with more than one: taskit.partitions)
    P:{H}:maintenance            hash   the maintenance step's own state: cursor (where in the
                                        queue set the next step starts), hf/hu (verdicts held
                                        after a stall), q:<worker> (the queues a worker
                                        registered: where its in-flight lists are)

Elsewhere:

    P:{<id>}:home                string the tag of a job whose id has none (a custom id)
    P:cancel:<worker>            pub/sub channel: ids of running jobs to stop (not a key)

Times are Unix seconds (floats). Every key a Lua script touches is built here and passed
in KEYS[]; no script builds a key (tests/test_script_keys.py checks it).

What changed in the layout (issue 12): keys were `P:<kind>:<name>` in one keyspace; a
queue's keys now share its tag. A waiting job was packed in one of 1,024 global buckets
and got a hash of its own when claimed; now it stays packed in its tag's buckets until
it ends (the claim writes a small state entry instead, and the worker, not Lua, unpacks
the record), and only an ended job gets a hash, with the record copied in still packed. In-flight lists, worker leases used by recovery, the queue set used by the
maintenance step and the ttl of a waiting job (a zset, not a key expiry) are per tag; the
global queue set and workers zset remain, in the home tag, as indexes.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import string
from binascii import crc_hqx
from typing import Any

PREFIX = os.environ.get("TASKIT_PREFIX", "taskit")
#: the queue a job goes to when none is named (not stored in its hash)
DEFAULT_QUEUE = "default"
#: the tag of the keys that belong to no queue
HOME = PREFIX

#: how many record buckets a tag has. A bucket stays a compact listpack up to Redis's
#: hash-max-listpack-entries (512 by default), so about 32,000 waiting jobs per tag (past
#: that a waiting job costs about 150 bytes, not 100), and a short one is quick to search;
#: a claim is given every bucket key of its tags (it does not know the ids it will pop)
BUCKETS = 64
SLOTS = 16384
#: the field of a worker's hash that lists (space-separated) the jobs it claimed and has not
#: started: its claim marks every job it takes started, and only the worker knows which wait
WORKER_WAITING = "waiting"

#: longest job id, queue name or worker name
MAX_NAME_LENGTH = 128
#: what a job id, queue name or worker name may be (job.validate_id); keys are built from them,
#: and so are the dashboard's URLs: a name made only of dots ('.', '..') is a path segment
#: that a browser or a proxy resolves away (/jobs/.. is /), so it is refused
NAME = re.compile(rf"(?!\.+\Z)[A-Za-z0-9_.:@-]{{1,{MAX_NAME_LENGTH}}}")
#: a job id made by taskit: its tag, '.', 22 base-62 characters
GENERATED_ID = re.compile(r"([0-9A-Za-z]{1,3})\.[0-9A-Za-z]{22}")

REGISTRIES = ("started", "finished", "failed", "canceled", "scheduled")

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def slot(name: str) -> int:
    """The hash slot of a key whose whole name is hashed (no braces in `name`)."""
    return crc_hqx(name.encode("utf-8", "surrogateescape"), 0) % SLOTS


@functools.cache
def tag_for_slot(at: int) -> str:
    """The tag of a slot: the first base-62 string (shortest first, then in `_BASE62` order)
    that hashes to it. Every slot has one of at most 3 characters.
    Found without trying tens of thousands of strings: CRC16 is linear (crc(a ^ b) =
    crc(a) ^ crc(b) for strings of one length), so a string's slot is the XOR of what each
    of its characters adds at its place, and the last character is looked up, not tried."""
    for length in (1, 2, 3):
        added = _added_by_place(length)
        last = added[-1]
        for chars in itertools.product(*added[:-1]):
            wanted = at
            for _, value in chars:
                wanted ^= value
            if wanted in last:
                return "".join(char for char, _ in chars) + last[wanted]
    raise AssertionError("a slot has no tag of 3 characters")  # (checked: never)


@functools.cache
def _added_by_place(length: int) -> list[Any]:
    """For each place of a string of `length`: what each base-62 character there adds to its
    slot (the CRC of the string with that character there and zero bytes elsewhere) as
    (character, value) pairs, and for the last place a map value -> first such character."""
    places: list[Any] = []
    for place in range(length):
        pairs = []
        for char in _BASE62:
            raw = bytearray(length)
            raw[place] = ord(char)
            pairs.append((char, crc_hqx(bytes(raw), 0) % SLOTS))
        places.append(pairs)
    last: dict[int, str] = {}
    for char, value in places[-1]:
        last.setdefault(value, char)
    places[-1] = last
    return places


def is_tag(text: str) -> bool:
    return 0 < len(text) <= 3 and tag_for_slot(slot(text)) == text


class Partition(str):
    """A queue name that stands for one partition of a partitioned queue (taskit.partitions):
    it equals, and hashes as, the queue's name, and carries the partition's tag, which
    `queue_tag` and `of_queue` use. A worker claims from such names."""

    __slots__ = ("tag",)
    tag: str

    def __new__(cls, name: str, tag: str) -> Partition:  # noqa: PYI034
        self = super().__new__(cls, name)
        self.tag = tag
        return self

    def __repr__(self) -> str:
        return f"Partition({str(self)!r}, {self.tag!r})"


def partition_tags(name: str, count: int) -> tuple[str, ...]:
    """The tags of a queue declared with `count` partitions: spread evenly over the slot
    space from the slot of its name, so that on a cluster whose slots are split evenly
    between masters the partitions land on different masters. The first is `queue_tag`."""
    base = slot(name)
    return tuple(tag_for_slot((base + i * SLOTS // count) % SLOTS) for i in range(count))


def queue_tag(name: str) -> str:
    """The tag of a queue: that of the slot its name hashes to (a `Partition`: its own)."""
    if type(name) is Partition:
        return name.tag
    return _queue_tag(name)


@functools.lru_cache(maxsize=65536)
def _queue_tag(name: str) -> str:
    return tag_for_slot(slot(name))


def tag_of(job_id: str) -> str | None:
    """The tag a job id made by taskit carries; None for any other id (a custom id, whose
    tag is its queue's, found through `directory`)."""
    match = GENERATED_ID.fullmatch(job_id)
    if match is None or not is_tag(match[1]):
        return None
    return match[1]


def job_tag(job_id: str, queue_name: str) -> str:
    """The tag of a job on a known queue (its own, or its queue's for a custom id)."""
    return tag_of(job_id) or queue_tag(queue_name)


def bucket_index(job_id: str | bytes) -> int:
    """Which of its tag's BUCKETS holds a job's record: (index * 31 + byte) % BUCKETS over
    the id's bytes, as lib/records.lua `bucket_of` computes it. (When 31 * 31 is 1 modulo
    BUCKETS, as for any BUCKETS that divides 960, 64 does, that is the sum of the bytes at an
    even distance from the end plus 31 times the sum of the others: sums fast in C.)"""
    raw = job_id.encode("utf-8", "surrogateescape") if isinstance(job_id, str) else job_id
    if 960 % BUCKETS == 0:
        return (sum(raw[-1::-2]) + 31 * sum(raw[-2::-2])) % BUCKETS
    index = 0
    for byte in raw:
        index = (index * 31 + byte) % BUCKETS
    return index


# -- per tag ---------------------------------------------------------------------------------


def _in(tag: str) -> str:
    return f"{PREFIX}:{{{tag}}}:"


class TagKeys:
    """The keys of one tag that are not a queue's: record buckets, state, expiry, ..."""

    __slots__ = ("block", "buckets", "expiry", "prefix", "queues", "settle", "state", "tag", "workers")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.prefix = _in(tag)
        self.state = self.prefix + "state"
        self.expiry = self.prefix + "expiry"
        self.settle = self.prefix + "settle"
        self.queues = self.prefix + "queues"
        self.workers = self.prefix + "workers"
        self.buckets = tuple(f"{self.prefix}jobs:{b}" for b in range(BUCKETS))
        #: the keys as lib/records.lua `tag_block` takes them
        self.block = (self.state, self.expiry, self.settle, self.queues, self.workers, *self.buckets)

    def bucket(self, job_id: str | bytes) -> str:
        return self.buckets[bucket_index(job_id)]

    def job(self, job_id: str) -> str:
        return job(self.tag, job_id)

    def done(self, job_id: str) -> str:
        return done(self.tag, job_id)

    def inflight(self, worker_name: str) -> str:
        return inflight(self.tag, worker_name)


@functools.lru_cache(maxsize=65536)
def tag_keys(tag: str) -> TagKeys:
    return TagKeys(tag)


class QueueKeys:
    """The keys of one queue in one tag (a queue partition; a queue that is not partitioned
    has one, in `queue_tag(name)`)."""

    __slots__ = ("canceled", "emptying", "failed", "finished", "name", "queue", "scheduled", "started", "tag",
                 "tagged", "totals", "wake")

    def __init__(self, name: str, tag: str) -> None:
        self.name, self.tag = name, tag
        self.tagged = tag_keys(tag)
        self.queue = queue(tag, name)
        self.wake = wake(tag, name)
        self.started = registry("started", tag, name)
        self.finished = registry("finished", tag, name)
        self.failed = registry("failed", tag, name)
        self.canceled = registry("canceled", tag, name)
        self.scheduled = registry("scheduled", tag, name)
        self.emptying = emptying(tag, name)
        self.totals = totals(tag, name)

    def registry(self, kind: str) -> str:
        return registry(kind, self.tag, self.name)

    def stats(self, hour: int) -> str:
        return stats(self.tag, self.name, hour)


def of_queue(name: str, tag: str | None = None) -> QueueKeys:
    """The keys of a queue (`tag`: of one of its partitions; default, its own tag, or that
    of the `Partition` it is)."""
    return _of_queue(str(name), tag or queue_tag(name))


@functools.lru_cache(maxsize=65536)
def _of_queue(name: str, tag: str) -> QueueKeys:
    return QueueKeys(name, tag)


def queue(tag: str, name: str) -> str:
    return f"{_in(tag)}queue:{name}"


def wake(tag: str, name: str) -> str:
    return f"{_in(tag)}wake:{name}"


def registry(kind: str, tag: str, queue_name: str) -> str:
    return f"{_in(tag)}{kind}:{queue_name}"


def emptying(tag: str, name: str) -> str:
    return f"{_in(tag)}emptying:{name}"


def stats(tag: str, queue_name: str, hour: int) -> str:
    """Per-minute counters of a queue for one Unix hour (`int(time // 3600)`)."""
    return f"{_in(tag)}stats:{queue_name}:{hour}"


def totals(tag: str, queue_name: str) -> str:
    return f"{_in(tag)}totals:{queue_name}"


def periodic(tag: str, name: str) -> str:
    """The last tick of a periodic task, in the tag of the queue its jobs go to."""
    return f"{_in(tag)}periodic:{name}"


def job(tag: str, job_id: str) -> str:
    """The hash of an ended job."""
    return f"{_in(tag)}job:{job_id}"


def done(tag: str, job_id: str) -> str:
    return f"{_in(tag)}done:{job_id}"


def inflight(tag: str, worker_name: str) -> str:
    return f"{_in(tag)}inflight:{worker_name}"


def directory(job_id: str) -> str:
    """Where the tag of a job with a custom id is written (in the id's own slot)."""
    return f"{PREFIX}:{{{job_id}}}:home"


# -- home ------------------------------------------------------------------------------------

_HOME = _in(HOME)
QUEUES = _HOME + "queues"
WORKERS = _HOME + "workers"
MAINTENANCE_LOCK = _HOME + "lock:maintenance"
MAINTENANCE = _HOME + "maintenance"
#: queue name -> number of partitions, for the queues declared with more than one
PARTITIONS = _HOME + "partitions"


def worker(name: str) -> str:
    return f"{_HOME}worker:{name}"


def cancel_channel(worker_name: str) -> str:
    """The pub/sub channel on which a worker hears which of its running jobs to stop."""
    return f"{PREFIX}:cancel:{worker_name}"


def readable_name(raw: bytes) -> str | None:
    """A name read from Redis (a member of the queue set, an id in a list), or None if it is
    not one taskit could have written: not UTF-8, or not matching NAME."""
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        return None
    return name if NAME.fullmatch(name) else None


class Field:
    """The fields of a job record. Every queued job carries its field names, so they are short.

        f   func          a   args (msgpack [args, kwargs]; absent = no arguments)
        s   status        q   queue (absent = "default")
        c   created_at    e   enqueued_at      st  started_at    en  ended_at
                          (times in Unix milliseconds; c absent = same as e)
        to  timeout       tl  ttl              rt  result_ttl    ft  failure_ttl
        de  description   m   meta (msgpack)   r   result (msgpack)
        x   exc_info      w   worker           n   attempts (the claim token)
        rc  recoveries (deaths blamed on it)   ru  recoveries not blamed on it
        rn  retries done  rp  retry policy (msgpack)
        wt  waited (someone blocks in job.wait())
        al  claimed alone (1: blamed if its worker dies)
        cx  cancel requested while it ran (the reason)
        tc  trace context (msgpack propagator carrier; only with taskit.tracing on)
        p   (an ended job's own hash only) its record as it was packed in its bucket;
            the other fields of that hash override it (lua/lib/records.lua)

    The Lua scripts use the same names (their headers say which they touch).
    """

    FUNC = "f"
    ARGS = "a"
    STATUS = "s"
    QUEUE = "q"
    CREATED = "c"
    ENQUEUED = "e"
    STARTED = "st"
    ENDED = "en"
    TIMEOUT = "to"
    TTL = "tl"
    RESULT_TTL = "rt"
    FAILURE_TTL = "ft"
    DESCRIPTION = "de"
    META = "m"
    RESULT = "r"
    EXC_INFO = "x"
    WORKER = "w"
    ATTEMPTS = "n"
    RECOVERIES = "rc"
    UNBLAMED = "ru"
    RETRIES = "rn"
    RETRY = "rp"
    WAITED = "wt"
    ALONE = "al"
    CANCEL = "cx"
    TRACE = "tc"


#: the job attribute (or option) name of each field -> its short name, for tools and tests
FIELDS = {
    "func": Field.FUNC,
    "args": Field.ARGS,
    "status": Field.STATUS,
    "queue": Field.QUEUE,
    "created_at": Field.CREATED,
    "enqueued_at": Field.ENQUEUED,
    "started_at": Field.STARTED,
    "ended_at": Field.ENDED,
    "timeout": Field.TIMEOUT,
    "ttl": Field.TTL,
    "result_ttl": Field.RESULT_TTL,
    "failure_ttl": Field.FAILURE_TTL,
    "description": Field.DESCRIPTION,
    "meta": Field.META,
    "result": Field.RESULT,
    "exc_info": Field.EXC_INFO,
    "worker": Field.WORKER,
    "attempts": Field.ATTEMPTS,
    "recoveries": Field.RECOVERIES,
    "unblamed_recoveries": Field.UNBLAMED,
    "retries": Field.RETRIES,
    "retry": Field.RETRY,
    "waited": Field.WAITED,
    "alone": Field.ALONE,
    "cancel": Field.CANCEL,
    "trace_context": Field.TRACE,
}
