"""Queued jobs kept packed (storage/keys.py `packed`): where they live and what unpacks them.

Python (`keys.packed`) and Lua (lib/packed.lua `packed_key`) must agree on a job's bucket:
the producer writes where Python says, the claim looks where Lua says.
"""

from __future__ import annotations

import msgpack
import pytest
import sample_tasks
from records import stored

from taskit import Job, JobStatus, Queue, Worker
from taskit.exceptions import DuplicateJobError, StorageError
from taskit.storage import keys


def is_packed(connection, job_id: str) -> bool:
    return bool(connection.hexists(keys.packed(job_id), job_id)) and not connection.exists(keys.job(job_id))


def test_python_and_lua_find_the_same_bucket_for_ids_of_every_shape(connection, queue):
    ids = ["a", "Z", "0", "-", "x" * 128, "a:b@c.d-e_f", "report-2026-11-28", *(f"n{i}" for i in range(300))]
    jobs = [queue.enqueue(sample_tasks.add, i, 1, job_id=job_id) for i, job_id in enumerate(ids)]
    assert all(is_packed(connection, job.id) for job in jobs)
    assert len({keys.packed(job_id) for job_id in ids}) > 100  # spread over the buckets
    assert Worker([queue]).work(burst=True) == len(ids)  # the claim (Lua) found every one
    assert [Job.fetch(job.id).result for job in jobs] == [i + 1 for i in range(len(ids))]
    assert not connection.keys(keys.PACKED + "*")  # nothing left behind


def test_only_jobs_that_wait_plainly_on_a_queue_are_packed(connection, queue):
    plain = queue.enqueue(sample_tasks.add, 1, 2)
    front = queue.enqueue(sample_tasks.add, 1, 2, at_front=True)
    mapped = sample_tasks.add.map([(1, 2), (3, 4)])
    expiring = queue.enqueue(sample_tasks.add, 1, 2, ttl=60)  # the hash's own expiry is the ttl
    later = queue.enqueue_in(60, sample_tasks.add, 1, 2)
    assert all(is_packed(connection, job.id) for job in [plain, front, *mapped])
    assert not is_packed(connection, expiring.id) and not is_packed(connection, later.id)
    assert 0 < connection.ttl(keys.job(expiring.id)) <= 60


def test_a_packed_job_reads_like_any_other(connection, queue):
    job = queue.enqueue(sample_tasks.add, 1, 2, description="one and two", meta={"k": "v"}, job_timeout=7)
    fetched = Job.fetch(job.id)
    assert fetched.get_status() == JobStatus.QUEUED and fetched.result is None and fetched.exc_info is None
    assert (fetched.args, fetched.description, fetched.meta, fetched.timeout) == ((1, 2), "one and two", {"k": "v"}, 7)
    assert abs(fetched.enqueued_at - job.enqueued_at).total_seconds() < 0.001 and fetched.origin == "default"
    assert Job.fetch_many([job.id, "missing"])[0] == job
    assert stored(connection, job.id)[keys.Field.STATUS] == b"queued"  # implied, not stored
    packed = msgpack.unpackb(connection.hget(keys.packed(job.id), job.id), raw=True)
    assert keys.Field.STATUS.encode() not in packed[0::2]


def test_what_changes_a_packed_job_gives_it_its_own_hash(connection, queue):
    meta = queue.enqueue(sample_tasks.add, 1, 2)
    meta.meta["progress"] = 1
    meta.save_meta()
    canceled = queue.enqueue(sample_tasks.add, 1, 2)
    canceled.cancel()
    deleted = queue.enqueue(sample_tasks.add, 1, 2)
    deleted.delete()
    for job in (meta, canceled):
        assert not is_packed(connection, job.id) and connection.exists(keys.job(job.id))
    assert Job.fetch(meta.id).meta == {"progress": 1} and Job.fetch(meta.id).args == (1, 2)
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
    good = queue.enqueue(sample_tasks.add, 3, 4, ttl=60)  # its own hash: not in a bucket
    bucket = keys.packed(lost.id)
    connection.delete(bucket)
    connection.set(bucket, "not a hash")
    before = connection.dbsize()
    with pytest.raises(StorageError, match="WRONGTYPE"):
        queue.enqueue(sample_tasks.add, 5, 6, job_id=lost.id)  # an id whose bucket is that key
    assert connection.dbsize() == before  # nothing written
    assert Worker([queue]).work(burst=True) == 1  # the lost job is passed over; the worker goes on
    assert Job.fetch(good.id).result == 7 and queue.count == 0
