"""Every Redis key taskit uses, in one place.

    taskit:job:<id>              hash   one job (fields: see Field below)
    taskit:packed:<n>            hash   queued jobs not yet given a hash of their own,
                                        id -> packed fields (see `packed` below)
    taskit:queue:<queue>         list   ids ready to run, oldest at the head
    taskit:wake:<queue>          list   at most one token; idle workers block on it
    taskit:queues                set    the queues that hold something: names are added with a
                                        job; the maintenance step drops a queue whose keys are all empty
    taskit:started:<queue>       zset   running (or prefetched) ids, score = lease deadline
    taskit:finished:<queue>      zset   score = expiry time (+inf = kept forever)
    taskit:failed:<queue>        zset   score = expiry time
    taskit:canceled:<queue>      zset   score = expiry time
    taskit:scheduled:<queue>     zset   score = run-at time
    taskit:workers               zset   worker name, score = lease deadline
    taskit:worker:<name>         hash   what a worker is (host, pid, queues), expires with it;
                                        `waiting`: ids of the jobs it claimed and has not started
    taskit:inflight:<name>       list   ids a worker holds
    taskit:done:<id>             list   completion signal for `job.wait()`, short-lived
    taskit:lock:maintenance      string held by the worker running the maintenance step
    taskit:maintenance           hash   the maintenance step's own state: cursor (where in the queue
                                        set the next step starts), hf/hu (verdicts held after a stall)
    taskit:emptying:<queue>      list   ids `Queue.empty()` is deleting, a chunk at a time
    taskit:periodic:<name>       string last tick enqueued for a periodic task
    taskit:cancel:<worker>       pub/sub channel: ids of running jobs to stop (not a key)
    taskit:stats:<queue>:<hour>  hash   jobs finished/failed/retried per minute of one hour
                                        (Unix hour); expires a day later (lua/lib/stats.lua)
    taskit:totals:<queue>        hash   the same per task since the start, and run-time
                                        histograms per task (lua/lib/stats.lua)

Times are Unix seconds (floats). Lua scripts get every fixed key through KEYS[];
job and in-flight keys, which a script only learns while it runs, are built from the
prefixes below, and so are the queue keys of a dead worker's jobs in the maintenance
step (all keys share one prefix, so a cluster hash tag would cover them).
"""

from __future__ import annotations

import os
import re

PREFIX = os.environ.get("TASKIT_PREFIX", "taskit")
#: the queue a job goes to when none is named (not stored in its hash)
DEFAULT_QUEUE = "default"

JOB = f"{PREFIX}:job:"
PACKED = f"{PREFIX}:packed:"
#: biggest job (the bytes of its fields) that is packed (lua/lib/add_job.lua): a packed entry
#: can only be read whole, and a bigger job gains little from it
MAX_PACKED_BYTES = 4096
#: how many packed-job hashes there are; each stays a compact listpack up to Redis's
#: hash-max-listpack-entries (512 by default), so up to ~500,000 waiting jobs
PACKED_BUCKETS = 1024
INFLIGHT = f"{PREFIX}:inflight:"
QUEUES = f"{PREFIX}:queues"
WORKERS = f"{PREFIX}:workers"
MAINTENANCE_LOCK = f"{PREFIX}:lock:maintenance"
MAINTENANCE = f"{PREFIX}:maintenance"
#: the field of a worker's hash that lists (space-separated) the jobs it claimed and has not
#: started: its claim marks every job it takes started, and only the worker knows which wait
WORKER_WAITING = "waiting"

#: longest job id, queue name or worker name
MAX_NAME_LENGTH = 128
#: what a job id, queue name or worker name may be (job.validate_id); keys are built from them,
#: and so are the dashboard's URLs: a name made only of dots ('.', '..') is a path segment
#: that a browser or a proxy resolves away (/jobs/.. is /), so it is refused
NAME = re.compile(rf"(?!\.+\Z)[A-Za-z0-9_.:@-]{{1,{MAX_NAME_LENGTH}}}")

REGISTRIES = ("started", "finished", "failed", "canceled", "scheduled")


def job(job_id: str) -> str:
    return JOB + job_id


def packed(job_id: str) -> str:
    """The hash that holds a waiting job's packed fields.

    A key of its own costs a job about 100 bytes of Redis bookkeeping, more than its data.
    So a small job (its fields at most MAX_PACKED_BYTES) enqueued to run now (no ttl, no
    delay) is kept as one entry, id -> msgpack
    [field, value, ...] without its status ("queued"), in one of PACKED_BUCKETS hashes,
    and gets its own hash only when something changes it: the claim that starts it,
    cancel, save_meta or wait (lua/lib/packed.lua; the same bucket arithmetic is there).
    """
    bucket = 0
    for byte in job_id.encode("utf-8", "surrogateescape"):  # (an id read from Redis may not be UTF-8)
        bucket = (bucket * 31 + byte) % PACKED_BUCKETS
    return f"{PACKED}{bucket}"


def queue(name: str) -> str:
    return f"{PREFIX}:queue:{name}"


def readable_name(raw: bytes) -> str | None:
    """A name read from Redis (a member of the queue set, an id in a list), or None if it is
    not one taskit could have written: not UTF-8, or not matching NAME."""
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        return None
    return name if NAME.fullmatch(name) else None


def emptying(name: str) -> str:
    return f"{PREFIX}:emptying:{name}"


def wake(name: str) -> str:
    return f"{PREFIX}:wake:{name}"


def registry(kind: str, queue_name: str) -> str:
    return f"{PREFIX}:{kind}:{queue_name}"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def inflight(worker_name: str) -> str:
    return INFLIGHT + worker_name


def done(job_id: str) -> str:
    return f"{PREFIX}:done:{job_id}"


def periodic(name: str) -> str:
    return f"{PREFIX}:periodic:{name}"


def cancel_channel(worker_name: str) -> str:
    """The pub/sub channel on which a worker hears which of its running jobs to stop."""
    return f"{PREFIX}:cancel:{worker_name}"


def stats(queue_name: str, hour: int) -> str:
    """Per-minute counters of one queue for one Unix hour (`int(time // 3600)`)."""
    return f"{PREFIX}:stats:{queue_name}:{hour}"


def totals(queue_name: str) -> str:
    return f"{PREFIX}:totals:{queue_name}"


class Field:
    """The fields of a job hash. Every queued job carries its field names, so they are short.

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
