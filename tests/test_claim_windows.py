"""A claim over windows and edges of a queue: cases for the queue's length
read once (LLEN), DEL of an emptied queue, wake_one's LPUSH check, the state hash checked
by HMGET, and the claim at Redis's clock."""

from __future__ import annotations

import time

import fault_tasks
import pytest

from taskit import Job, Queue
from taskit.storage import keys
from taskit.storage.store import Store


def _claim(connection, limit, queues=("default",), worker="w"):
    now = time.time()
    return Store.of(connection).claim(worker, list(queues), now, now + 30, limit).jobs


@pytest.mark.parametrize("limit", [1, 999, 1000, 1001, 2499, 2500, 2501, 4000])
def test_a_claim_over_windows_takes_each_job_once_and_leaves_the_rest(connection, limit):
    queue = Queue(connection=connection)
    ids = [job.id for job in queue.enqueue_many([queue.prepare_data(fault_tasks.work, (i,)) for i in range(2500)])]
    place = keys.of_queue("default")
    claimed = [job_id for job_id, *_ in _claim(connection, limit)]
    assert claimed == ids[:limit]
    assert queue.job_ids == ids[limit:]
    rest = 2500 - min(limit, 2500)
    assert connection.lrange(place.wake, 0, -1) == ([b"1"] if rest else [])
    assert [job_id for job_id, *_ in _claim(connection, 5000, worker="w2")] == ids[limit:]
    assert connection.exists(place.queue) == 0


def test_a_claim_that_drops_expired_and_deleted_jobs_then_empties_the_queue(connection):
    queue = Queue(connection=connection)
    short = [queue.enqueue(fault_tasks.work, i, ttl=1) for i in range(3)]
    kept = queue.enqueue(fault_tasks.work, 9)
    Job.fetch(short[1].id, connection=connection).delete()
    time.sleep(1.1)
    later = time.time() + 1
    claimed = Store.of(connection).claim("w", ["default"], later, later + 30, 10).jobs
    assert [job_id for job_id, *_ in claimed] == [kept.id]
    assert connection.exists(keys.of_queue("default").queue) == 0
    # emptied, then pushed again: a worker is woken and the queue is in its tag's queue set
    again = queue.enqueue(fault_tasks.work, 10)
    place = keys.of_queue("default")
    assert connection.lrange(place.wake, 0, -1) == [b"1"]
    assert connection.sismember(place.tagged.queues, "default")
    assert [job_id for job_id, *_ in _claim(connection, 10)] == [again.id]


def test_promoted_jobs_count_in_the_length_the_claim_uses(connection):
    queue = Queue(connection=connection)
    waiting = queue.enqueue(fault_tasks.work, 0)
    due = [queue.enqueue_in(0.01, fault_tasks.work, i) for i in range(1, 4)]
    later = time.time() + 1
    for limit, expected in ((2, [waiting.id, due[0].id]), (10, [d.id for d in due[1:]])):
        claimed = Store.of(connection).claim("w", ["default"], later, later + 30, limit).jobs
        assert [job_id for job_id, *_ in claimed] == expected
    assert connection.exists(keys.of_queue("default").queue) == 0


def test_promotion_into_an_empty_queue_with_a_claim_limit_below_it(connection):
    queue = Queue(connection=connection)
    due = [queue.enqueue_in(0.01, fault_tasks.work, i) for i in range(3)]
    later = time.time() + 1
    claimed = Store.of(connection).claim("w", ["default"], later, later + 30, 1).jobs
    assert [job_id for job_id, *_ in claimed] == [due[0].id]
    assert queue.job_ids == [d.id for d in due[1:]]
    assert connection.lrange(keys.of_queue("default").wake, 0, -1) == [b"1"]


@pytest.mark.parametrize("tokens", [0, 1, 3])
def test_wake_list_keeps_one_token(connection, tokens):
    place = keys.of_queue("default")
    if tokens:
        connection.rpush(place.wake, *["1"] * tokens)
    Queue(connection=connection).enqueue(fault_tasks.work, 1)
    assert connection.lrange(place.wake, 0, -1) == [b"1"]


@pytest.mark.parametrize("wrong", ["string", "hash", "zset", "set"])
def test_enqueue_repairs_a_wake_list_and_queue_set_of_any_other_type(connection, wrong):
    place = keys.of_queue("default")
    for key in (place.wake, place.tagged.queues):
        {"string": lambda k: connection.set(k, "x"), "hash": lambda k: connection.hset(k, "a", "b"),
         "zset": lambda k: connection.zadd(k, {"a": 1}), "set": lambda k: connection.sadd(k, "zz")}[wrong](key)
    if wrong == "set":
        connection.delete(place.tagged.queues)
        connection.sadd(place.tagged.queues, "zz")
    job = Queue(connection=connection).enqueue(fault_tasks.work, 1)
    assert connection.lrange(place.wake, 0, -1) == [b"1"]
    assert connection.sismember(place.tagged.queues, "default")
    assert [job_id for job_id, *_ in _claim(connection, 5)] == [job.id]


def test_a_claim_at_redis_clock_returns_its_time_and_a_lease_after_it(connection):
    queue = Queue(connection=connection)
    for lease in (30, 2.5, 0.000001, 1):
        job = queue.enqueue(fault_tasks.work, 1)
        before = time.time()
        claim = Store.of(connection).wait_and_claim("w", ["default"], 1, lease, 5)
        after = time.time()
        assert [job_id for job_id, *_ in claim.jobs] == [job.id]
        score = connection.zscore(keys.of_queue("default").started, job.id)
        assert score is not None and score >= before + lease - 0.01
        assert score <= after + max(lease * 1.1, lease + 1) + 0.01
