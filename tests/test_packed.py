"""Job records (storage/keys.py, "Per tag"; lua/lib/records.lua): a job not ended is one
packed entry in one of its tag's buckets, plus a state entry once anything changed it; an
ended job has a hash of its own.

Python (`keys.bucket_index`) and Lua (lib/records.lua `bucket_of`) must agree on a job's
bucket: the producer writes where Python says, the claim looks where Lua says.
"""

from __future__ import annotations

import time

import msgpack
import pytest
import sample_tasks
from records import bucket, has_own_hash, key, state_key, stored

from taskit import Job, JobStatus, Queue, Worker
from taskit.exceptions import DuplicateJobError, StorageError
from taskit.storage import keys
from taskit.storage.store import Store


def is_packed(connection, job_id: str) -> bool:
    return bool(connection.hexists(bucket(connection, job_id), job_id)) and not has_own_hash(connection, job_id)


def records_left(connection) -> list[bytes]:
    return list(connection.scan_iter(f"{keys.PREFIX}:{{*}}:jobs:*")) + list(connection.scan_iter(f"{keys.PREFIX}:{{*}}:state"))


def test_python_and_lua_find_the_same_bucket_for_ids_of_every_shape(connection, queue):
    ids = ["a", "Z", "0", "-", "x" * 128, "a:b@c.d-e_f", "report-2026-11-28", *(f"n{i}" for i in range(300))]
    # those leave some buckets empty (the ids below are random): the first ids past them that
    # fill those, so that the spread checked below never rests on chance
    empty = set(range(keys.BUCKETS)) - {keys.bucket_index(job_id) for job_id in ids}
    for i in range(100_000):
        if not empty:
            break
        if keys.bucket_index(f"m{i}") in empty:
            empty.discard(keys.bucket_index(f"m{i}"))
            ids.append(f"m{i}")
    jobs = [queue.enqueue(sample_tasks.add, i, 1, job_id=job_id) for i, job_id in enumerate(ids)]
    jobs += [queue.enqueue(sample_tasks.add, i, 1) for i in range(300)]  # ids that carry their tag
    assert all(is_packed(connection, job.id) for job in jobs)
    assert len({bucket(connection, job.id) for job in jobs}) == keys.BUCKETS  # spread over every bucket
    assert Worker([queue]).work(burst=True) == len(jobs)  # the claim (Lua) found every one
    assert [Job.fetch(job.id).result for job in jobs] == [i + 1 for i in range(len(ids))] + [i + 1 for i in range(300)]
    assert records_left(connection) == []  # ended: each has its own hash, nothing left behind


def test_every_job_not_ended_is_packed_and_a_ttl_is_kept_apart(connection, queue):
    plain = queue.enqueue(sample_tasks.add, 1, 2)
    front = queue.enqueue(sample_tasks.add, 1, 2, at_front=True)
    mapped = sample_tasks.add.map([(1, 2), (3, 4)])
    expiring = queue.enqueue(sample_tasks.add, 1, 2, ttl=60)
    later = queue.enqueue_in(60, sample_tasks.add, 1, 2)
    assert all(is_packed(connection, job.id) for job in [plain, front, *mapped, expiring, later])
    expiry = keys.of_queue("default").tagged.expiry
    assert connection.zrange(expiry, 0, -1) == [expiring.id.encode()]
    assert 55 < connection.zscore(expiry, expiring.id) - time.time() <= 60


def test_a_packed_job_reads_like_any_other(connection, queue):
    job = queue.enqueue(sample_tasks.add, 1, 2, description="one and two", meta={"k": "v"}, job_timeout=7)
    fetched = Job.fetch(job.id)
    assert fetched.get_status() == JobStatus.QUEUED and fetched.result is None and fetched.exc_info is None
    assert (fetched.args, fetched.description, fetched.meta, fetched.timeout) == ((1, 2), "one and two", {"k": "v"}, 7)
    assert abs(fetched.enqueued_at - job.enqueued_at).total_seconds() < 0.001 and fetched.origin == "default"
    assert Job.fetch_many([job.id, "missing"])[0] == job
    assert stored(connection, job.id)[keys.Field.STATUS] == b"queued"  # implied, not stored
    packed = msgpack.unpackb(connection.hget(bucket(connection, job.id), job.id), raw=True)
    assert keys.Field.STATUS.encode() not in packed[0::2]


def test_a_claim_writes_only_a_state_entry_and_an_end_moves_the_job_to_its_own_hash(connection, queue):
    job = queue.enqueue(sample_tasks.add, 1, 2)
    record = connection.hget(bucket(connection, job.id), job.id)
    store, now = Store.of(connection), time.time()
    [(job_id, token, _, _)] = store.claim("w", ["default"], now, now + 30, 1).jobs
    assert connection.hget(bucket(connection, job.id), job.id) == record  # the record as enqueued
    state = msgpack.unpackb(connection.hget(state_key(connection, job.id), job.id), raw=False)
    assert dict(zip(state[0::2], state[1::2])) | {"st": "?"} == {"s": "started", "w": "w", "n": "1", "al": "1", "st": "?"}
    from taskit.storage.store import Record

    assert store.finish("w", [Record(job_id, "default", token, "finished", b"\x03", 60)], now) == [1]
    assert not connection.hexists(bucket(connection, job.id), job.id)
    assert not connection.hexists(state_key(connection, job.id), job.id)
    assert connection.hget(key(connection, job.id), "s") == b"finished" and 55 < connection.ttl(key(connection, job.id)) <= 60
    assert Job.fetch(job.id).result == 3


def test_what_changes_a_waiting_job_goes_to_its_state_entry_or_ends_it(connection, queue):
    meta = queue.enqueue(sample_tasks.add, 1, 2)
    record = connection.hget(bucket(connection, meta.id), meta.id)
    meta.meta["progress"] = 1
    meta.save_meta()
    canceled = queue.enqueue(sample_tasks.add, 1, 2)
    canceled.cancel()
    deleted = queue.enqueue(sample_tasks.add, 1, 2)
    deleted.delete()
    assert is_packed(connection, meta.id) and connection.hget(bucket(connection, meta.id), meta.id) == record
    assert connection.hexists(state_key(connection, meta.id), meta.id)
    assert Job.fetch(meta.id).meta == {"progress": 1} and Job.fetch(meta.id).args == (1, 2)
    assert has_own_hash(connection, canceled.id) and not connection.hexists(bucket(connection, canceled.id), canceled.id)
    assert Job.fetch(canceled.id).get_status() == JobStatus.CANCELED
    assert stored(connection, deleted.id) is None and queue.job_ids == [meta.id]


def test_emptying_a_queue_removes_its_packed_jobs(connection, queue):
    jobs = sample_tasks.add.map([(i, i) for i in range(50)])
    other = Queue("other").enqueue(sample_tasks.add, 1, 1)
    assert queue.empty() == 50
    assert all(stored(connection, job.id) is None for job in jobs)
    assert is_packed(connection, other.id)


def test_a_duplicate_of_a_packed_job_is_refused(connection, queue):
    queue.enqueue(sample_tasks.add, 1, 2, job_id="once")
    for options in ({}, {"ttl": 5}, {"at_front": True}):
        with pytest.raises(DuplicateJobError, match="already exists"):
            queue.enqueue(sample_tasks.add, 3, 4, job_id="once", **options)
    assert Job.fetch("once").args == (1, 2) and queue.count == 1


def test_a_bucket_overwritten_by_something_else_is_a_clear_error_and_stops_nothing(connection, queue):
    lost = queue.enqueue(sample_tasks.add, 1, 2)
    good = queue.enqueue(sample_tasks.add, 3, 4, ttl=60)
    while bucket(connection, good.id) == bucket(connection, lost.id):  # (a job of another bucket)
        good.delete()
        good = queue.enqueue(sample_tasks.add, 3, 4, ttl=60)
    lost_bucket = bucket(connection, lost.id)
    connection.delete(lost_bucket)
    connection.set(lost_bucket, "not a hash")
    before = connection.dbsize()
    with pytest.raises(StorageError, match="WRONGTYPE"):
        queue.enqueue(sample_tasks.add, 5, 6, job_id=lost.id)  # an id whose bucket is that key
    assert connection.dbsize() == before  # nothing written
    assert Worker([queue]).work(burst=True) == 1  # the lost job is failed as corrupt; the worker goes on
    assert Job.fetch(good.id).result == 7 and queue.count == 0
    assert Job.fetch(lost.id).get_status() == JobStatus.FAILED and lost.id in queue.failed_job_registry


def test_a_waiting_job_costs_little_memory(connection, queue, redis_server):
    """About 115 bytes per waiting no-op job before the cluster layout (docs/benchmarks.md);
    the tag in each id and the per-tag buckets must keep it near that."""
    def used() -> int:
        return int(connection.info("memory")["used_memory"])

    queue.enqueue_many([queue.prepare_data(sample_tasks.add, (0, 0)) for _ in range(500)])  # warm
    total, before = 5000, used()
    for _ in range(total // 1000):
        queue.enqueue_many([queue.prepare_data(sample_tasks.add, (0, 0)) for _ in range(1000)])
    per_job = (used() - before) / total
    print(f"{per_job:.0f} bytes per waiting job")
    assert per_job < 135, per_job
