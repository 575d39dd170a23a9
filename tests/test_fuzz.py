"""Fuzz (issue 11): garbage written into random taskit keys while real workers run.

Two `taskit worker` processes run jobs on three queues while this test writes garbage
(keys of the wrong type, huge values, bytes that are not UTF-8, absurd numbers, msgpack
that is no record) into job hashes, packed buckets, state entries, directory entries of
custom ids, queue lists, registries, wake and done lists, each tag's expiry, settle, queue
set, workers zset and in-flight lists, the workers zset, worker hashes, periodic keys, the
queue set and the maintenance keys. Then: both workers are alive and still run new jobs, no worker logged a traceback,
and every job whose own keys (its record, its packed bucket, its queue's list and
registries, its state entry and directory entry) were left alone has finished with its
result. Queues `fz-a` and `fz-b` keep their list and registries, and their tag's keys get
garbage only inside (a member, a score); `fz-x` and its tag get garbage everywhere.

The seed is printed; TASKIT_FUZZ_SEED=<seed> replays a run.
"""

from __future__ import annotations

import os
import random
import time

import fault_tasks
import msgpack
import pytest
import redis
from records import field, periodic_key, tag
from test_faults import FAST, wait_until, worker_pool

from taskit import Job, Queue
from taskit.exceptions import TaskitError
from taskit.storage import keys

FUZZ_SECONDS = 12
SAFE, WILD = ("fz-a", "fz-b"), "fz-x"


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("TASKIT_FUZZ_SEED") or random.randrange(2**32))
    print(f"fuzz seed {value} (replay: TASKIT_FUZZ_SEED={value} pytest tests/test_fuzz.py)")
    return value


def garbage_value(rng: random.Random) -> bytes:
    return rng.choice([
        b"\xff\xfe\xfd not utf-8",
        b"nan", b"inf", b"-inf", b"1e400", str(2**70).encode(), b"-5", b"", b"0x10",
        rng.randbytes(rng.randrange(1, 64)),
        b"x" * 1_000_000,
        msgpack.packb(["f"] * 8000),
        msgpack.packb({"not": "a list"}),
        msgpack.packb([1, [2, [3]], None, 4.5]),
        msgpack.packb(["f", "fault_tasks.work", "a", b"\xc1"]),
    ])


def overwrite(connection, key: str, rng: random.Random) -> None:
    """Replace a key by one of another (random) type, or by a huge or binary string."""
    connection.delete(key)
    kind = rng.choice(["string", "list", "set", "zset", "hash"])
    value = garbage_value(rng)
    if kind == "string":
        connection.set(key, value)
    elif kind == "list":
        connection.rpush(key, value, b"\xff", "1")
    elif kind == "set":
        connection.sadd(key, value, b"\xff\xfe", "bad name!")
    elif kind == "zset":
        connection.zadd(key, {value: rng.choice([0, 1e300, float("inf"), -float("inf")]), b"\xff": 1})
    else:
        connection.hset(key, mapping={value: value, "s": value, "n": "nan"})


def scribble(connection, key: str, rng: random.Random) -> None:
    """Garbage inside a key of the right type: a hash field, a list or set member, a score."""
    kind = connection.type(key)
    value = garbage_value(rng)
    if kind in (b"hash", b"none"):
        field = rng.choice([*keys.FIELDS.values(), "al", "wt", "cursor", "hf", "hu", "\xff"])
        connection.hset(key, field.encode(errors="surrogateescape") if field != "\xff" else b"\xff", value)
    elif kind == b"list":
        connection.rpush(key, value)
    elif kind == b"set":
        connection.sadd(key, value)
    elif kind == b"zset":
        connection.zadd(key, {value: rng.choice([0, 1e300, float("inf")])})
    else:
        connection.set(key, value)


def test_workers_survive_garbage_in_their_keys(connection, cli_env, tmp_path, seed):
    rng = random.Random(seed)
    queues = [*SAFE, WILD]
    expected: dict[str, int] = {}  # job id -> its result, for jobs on SAFE queues
    excused: set[str] = set()  # jobs whose own keys got garbage
    counter = 0

    def produce() -> None:
        nonlocal counter
        for _ in range(rng.randrange(1, 6)):
            counter += 1
            queue = Queue(rng.choice(queues))
            options = rng.choice([{}, {}, {"at_front": True}, {"ttl": 600}, {"job_id": f"fz-{seed}-{counter}"}])
            try:
                if rng.random() < 0.15:
                    job = queue.enqueue_in(0.3, fault_tasks.work, counter, 0.005)
                else:
                    job = queue.enqueue(fault_tasks.work, counter, 0.005, **options)
            except TaskitError:
                continue  # refused: one of its keys holds garbage already (nothing was written)
            if job.origin in SAFE:
                expected[job.id] = counter

    assert len({keys.queue_tag(q) for q in queues}) == 3  # a tag's garbage is its queue's alone
    wild_tag = keys.of_queue(WILD).tagged

    def workers_in(tagged: keys.TagKeys) -> list[str]:
        found = connection.zrange(tagged.workers, 0, -1) if connection.type(tagged.workers) == b"zset" else []
        return [name.decode(errors="replace") for name in found] or ["nobody"]

    def tag_of(victim: str) -> keys.TagKeys | None:
        """A job's tag keys; None when its directory entry holds garbage already."""
        try:
            return keys.tag_keys(tag(connection, victim))
        except (redis.ResponseError, UnicodeDecodeError, AssertionError):
            return None

    def fuzz_once() -> None:
        ids = list(expected) or ["none"]
        target = rng.choice(["job", "job", "bucket", "state", "directory", "wild", "wild-tag", "tag", "inflight",
                             "wake", "done", "workers", "worker", "periodic", "queues", "maintenance"])
        inside = target in ("tag", "inflight")  # garbage inside a key of a safe queue's tag, never another type
        if target == "state":
            victim = rng.choice(ids)
            if victim == "none":
                return
            excused.add(victim)
            tagged = tag_of(victim)
            if tagged is not None:
                connection.hset(tagged.state, victim, garbage_value(rng))
            return
        if target == "directory":
            victim = rng.choice([i for i in ids if keys.tag_of(i) is None] or ["none"])
            if victim == "none":
                return
            excused.add(victim)
            key = keys.directory(victim)
        elif target == "wild-tag":
            key = rng.choice([*wild_tag.block[:5], rng.choice(wild_tag.buckets), wild_tag.inflight(rng.choice(workers_in(wild_tag)))])
        elif target == "tag":
            tagged = keys.of_queue(rng.choice(SAFE)).tagged
            key = rng.choice([tagged.expiry, tagged.settle, tagged.queues, tagged.workers])
        elif target == "inflight":
            tagged = keys.of_queue(rng.choice(SAFE)).tagged
            key = tagged.inflight(rng.choice(workers_in(tagged)))
        elif target in ("job", "bucket"):
            victim = rng.choice(ids)
            if victim == "none":
                return
            tagged = tag_of(victim)
            if tagged is None:
                return
            key = tagged.job(victim) if target == "job" else tagged.bucket(victim)
            if target == "bucket":
                excused.update(i for i in expected if keys.tag_of(i) == tagged.tag and tagged.bucket(i) == key)
            excused.add(victim)
        elif target == "wild":
            key = rng.choice([keys.of_queue(WILD).queue, *(keys.of_queue(WILD).registry(kind) for kind in keys.REGISTRIES)])
        elif target == "wake":
            key = keys.of_queue(rng.choice(queues)).wake
        elif target == "done":
            victim = rng.choice(ids)
            tagged = tag_of(victim) if victim != "none" else None
            if tagged is None:
                return
            key = tagged.done(victim)
        elif target == "workers":
            key = keys.WORKERS
        elif target == "worker":
            names = [n.decode(errors="replace") for n in connection.zrange(keys.WORKERS, 0, -1)] if (
                connection.type(keys.WORKERS) == b"zset") else []
            key = keys.worker(rng.choice(names or ["nobody"]))
        elif target == "periodic":
            key = periodic_key(rng.choice(["every-minute", "other"]), "ticks")
        elif target == "queues":
            key = keys.QUEUES
        else:
            key = rng.choice([keys.MAINTENANCE, keys.MAINTENANCE_LOCK])
        try:
            if target == "bucket" and rng.random() < 0.5:
                connection.hset(key, victim, garbage_value(rng))  # garbage in its entry (if it still has one)
            elif inside:
                scribble(connection, key, rng)
            else:
                (overwrite if rng.random() < 0.5 else scribble)(connection, key, rng)
        except redis.ResponseError:
            pass  # a worker changed the key's type meanwhile (repaired it): try another

    with worker_pool(cli_env, tmp_path) as start:
        pool = [
            start("periodic_tasks", *FAST, *(arg for q in [*queues, "ticks", f"own-{i}"] for arg in ("-q", q)))
            for i in range(2)
        ]
        wait_until(lambda: all(worker.ready() for worker in pool), what="the workers to start")
        deadline = time.monotonic() + FUZZ_SECONDS
        while time.monotonic() < deadline:
            produce()
            if rng.random() < 0.5:
                fuzz_once()
            time.sleep(rng.uniform(0, 0.05))

        logs = lambda: "\n".join(f"--- worker {i}\n{w.output()[-3000:]}" for i, w in enumerate(pool))
        finals = [Queue(f"own-{i}").enqueue(fault_tasks.work, -i) for i in range(2)]
        wait_until(lambda: all(_status(connection, job.id) == b"finished" for job in finals), timeout=20,
                   what=f"each worker to run a new job (seed {seed})\n{logs()}")
        must_finish = {job_id: result for job_id, result in expected.items() if job_id not in excused}
        wait_until(lambda: all(_status(connection, i) == b"finished" for i in must_finish), timeout=20,
                   what=f"every job whose keys were left alone to finish (seed {seed}): "
                        f"{[(i, _status(connection, i)) for i in must_finish if _status(connection, i) != b'finished'][:5]}"
                        f"\n{logs()}")
        for job_id, result in must_finish.items():
            assert Job.fetch(job_id).result == result, f"seed {seed}: job {job_id}"
        for i, worker in enumerate(pool):
            assert worker.alive(), f"seed {seed}: worker {i} died\n{logs()}"
            assert "Traceback" not in worker.output(), f"seed {seed}: worker {i} logged a traceback\n{logs()}"
        print(f"{len(expected)} jobs on the safe queues, {len(excused)} of them given garbage; "
              f"{len(must_finish)} finished")
        assert len(must_finish) > 50


def _status(connection, job_id: str) -> bytes | None:
    """A job's status straight from Redis (its record may be garbage: no Job is built)."""
    try:
        return field(connection, job_id, keys.Field.STATUS)
    except TaskitError:  # a key of the wrong type
        return None

