"""Every Redis key taskit uses, in one place.

    taskit:job:<id>              hash   one job (fields: see taskit.job.FIELDS)
    taskit:queue:<queue>         list   ids ready to run, oldest at the head
    taskit:wake:<queue>          list   at most one token; idle workers block on it
    taskit:queues                set    every queue name ever enqueued to
    taskit:started:<queue>       zset   running (or prefetched) ids, score = lease deadline
    taskit:finished:<queue>      zset   score = expiry time (+inf = kept forever)
    taskit:failed:<queue>        zset   score = expiry time
    taskit:canceled:<queue>      zset   score = expiry time
    taskit:scheduled:<queue>     zset   score = run-at time
    taskit:workers               zset   worker name, score = lease deadline
    taskit:worker:<name>         hash   what a worker is (host, pid, queues), expires with it
    taskit:inflight:<name>       list   ids a worker holds
    taskit:done:<id>             list   completion signal for `job.wait()`, short-lived
    taskit:lock:maintenance      string held by the worker running the maintenance step
    taskit:periodic:<name>       string last tick enqueued for a periodic task

Times are Unix seconds (floats). Lua scripts get every fixed key through KEYS[];
job and in-flight keys, which a script only learns while it runs, are built from the
prefixes below (all keys share one prefix, so a cluster hash tag would cover them).
"""

from __future__ import annotations

import os

PREFIX = os.environ.get("TASKIT_PREFIX", "taskit")

JOB = f"{PREFIX}:job:"
INFLIGHT = f"{PREFIX}:inflight:"
QUEUES = f"{PREFIX}:queues"
WORKERS = f"{PREFIX}:workers"
MAINTENANCE_LOCK = f"{PREFIX}:lock:maintenance"

REGISTRIES = ("started", "finished", "failed", "canceled", "scheduled")


def job(job_id: str) -> str:
    return JOB + job_id


def queue(name: str) -> str:
    return f"{PREFIX}:queue:{name}"


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
