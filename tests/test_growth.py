"""Growth (issue 11): the work of one script call stays bounded however many queues or jobs.

The maintenance step visits the queue set a chunk at a time (a cursor in Redis) and drops
queues whose keys are all empty; `Queue.empty()` deletes a chunk of jobs per call.
"""

from __future__ import annotations

import math
import time

import fault_tasks
import pytest
from roundtrips import commands_run

from taskit import Job, Queue
from taskit.storage import keys, store
from taskit.storage.store import Store


def step(connection, **kwargs):
    """One maintenance step, as a worker runs it every interval (the lock is per interval)."""
    connection.delete(keys.MAINTENANCE_LOCK)
    result = Store.of(connection).maintain(time.time(), "maintainer", 60_000, 3, 60, **kwargs)
    assert result is not None
    return result


def keep_queue(connection, name: str) -> None:
    """A queue that holds something: one finished job, kept an hour."""
    connection.zadd(keys.of_queue(name).registry("finished"), {f"done-{name}": time.time() + 3600})
    connection.sadd(keys.QUEUES, name)


def test_the_queue_set_is_walked_in_chunks_and_emptied_queues_are_dropped(connection):
    emptied = [f"gone-{i}" for i in range(1000)]
    connection.sadd(keys.QUEUES, *emptied)  # queues that had jobs once; nothing of them is left
    connection.rpush(keys.of_queue("gone-7").wake, "1")  # a wake token alone does not keep a queue
    Queue("waiting").enqueue(fault_tasks.work, 1)
    Queue("later").enqueue_in(3600, fault_tasks.work, 2)
    keep_queue(connection, "kept")
    steps = 0
    while connection.scard(keys.QUEUES) > 3:
        dropped = step(connection).dropped
        assert dropped <= 2 * store.MAINTENANCE_CHUNK  # bounded work per step
        steps += 1
        assert steps <= math.ceil(1000 / store.MAINTENANCE_CHUNK) + 2, "the cursor does not cover the set"
    assert connection.smembers(keys.QUEUES) == {b"waiting", b"later", b"kept"}
    assert not connection.exists(keys.of_queue("gone-7").wake)
    assert [q.name for q in Queue.all()] == ["kept", "later", "waiting"]


def test_an_enqueue_puts_a_dropped_queue_back(connection):
    queue = Queue("comes-back")
    job = queue.enqueue(fault_tasks.work, 1)
    job.delete()
    step(connection)
    assert not connection.sismember(keys.QUEUES, "comes-back")
    queue.enqueue(fault_tasks.work, 2)
    assert connection.sismember(keys.QUEUES, "comes-back")
    step(connection)  # not empty: stays
    assert [q.name for q in Queue.all()] == ["comes-back"]


def expired_claim(connection, worker: str, queue: str, *, alive: bool) -> Job:
    """A job `worker` claimed, whose lease ran out 5 s ago, among 1000 queues that hold
    something. The worker's own lease ran out too, unless it is `alive`."""
    for i in range(1000):
        keep_queue(connection, f"busy-{i}")
    job = Queue(queue).enqueue(fault_tasks.work, 1)
    now = time.time()
    Store.of(connection).register_worker(worker, {"queues": queue}, now - 5, 60)  # as a worker does first
    Store.of(connection).claim(worker, [queue], now - 10, now - 5, 1)
    if alive:
        connection.zadd(keys.WORKERS, {worker: now + 60})
    return job


def test_a_dead_workers_jobs_come_back_at_the_next_step_however_many_queues(connection):
    job = expired_claim(connection, "dead", "busy-999", alive=False)
    result = step(connection)
    assert (result.recovered, result.dead) == ([job.id], ["dead"])
    assert Queue("busy-999").job_ids == [job.id]


def test_an_expired_lease_of_a_live_worker_is_found_within_a_cycle_of_steps(connection):
    job = expired_claim(connection, "alive", "busy-500", alive=True)
    steps = 1
    while job.id not in step(connection).recovered:
        steps += 1
        assert steps <= math.ceil(1001 / store.MAINTENANCE_CHUNK) + 1
    assert connection.zscore(keys.WORKERS, "alive") is not None  # not judged dead


def test_a_workers_own_queues_are_visited_at_every_step(connection):
    job = expired_claim(connection, "alive", "mine", alive=True)
    assert step(connection, queues=["mine"]).recovered == [job.id]


def test_emptying_a_long_queue_works_in_bounded_chunks(connection, queue, redis_server):
    total = 5 * store.EMPTY_CHUNK + 7
    jobs = queue.enqueue_many([queue.prepare_data(fault_tasks.work, (i,)) for i in range(total)])
    other = Queue("other").enqueue(fault_tasks.work, 1)
    with commands_run(redis_server) as ran:
        assert queue.empty() == total
    calls = ran["evalsha"] - ran["script|load"]  # (a NOSCRIPT reply is followed by a load and a retry)
    assert calls == math.ceil(total / store.EMPTY_CHUNK)  # one bounded call per chunk
    assert queue.count == 0 and Job.fetch_many([jobs[0].id, jobs[-1].id]) == [None, None]
    assert not connection.exists(keys.of_queue("default").emptying)
    assert Job.fetch(other.id).args == (1,)  # another queue's job is kept


def test_an_interrupted_emptying_is_finished_by_the_next(connection, queue):
    first = [queue.enqueue(fault_tasks.work, i) for i in range(3)]
    Store.of(connection).scripts.empty(  # a first call that moved the queue aside, then stopped
        keys=[keys.of_queue("default").queue, keys.of_queue("default").wake, keys.of_queue("default").emptying,
              *keys.of_queue("default").tagged.block],
        args=[1, 1, keys.BUCKETS],
    )
    later = queue.enqueue(fault_tasks.work, 9)  # enqueued after that call: on the queue again
    assert queue.job_ids == [later.id]
    assert queue.empty() == 3  # the 2 left aside, then the queue
    assert Job.fetch_many([j.id for j in [*first, later]]) == [None] * 4
    assert not connection.exists(keys.of_queue("default").emptying, keys.of_queue("default").queue)


def test_a_maintenance_lock_left_without_expiry_does_not_stop_maintenance(connection):
    connection.set(keys.MAINTENANCE_LOCK, "garbage, no expiry")
    assert Store.of(connection).maintain(time.time(), "maintainer", 60_000, 3, 60) is not None
    assert 0 < connection.pttl(keys.MAINTENANCE_LOCK) <= 60_000


@pytest.mark.parametrize("name", ["gone", "x" * 128])
def test_a_queue_whose_keys_are_broken_is_reported_and_kept(connection, name):
    connection.sadd(keys.QUEUES, name)
    connection.set(keys.of_queue(name).queue, "not a list")
    result = step(connection)
    assert result.broken == [f"{keys.of_queue(name).queue} is a string, not a list"]
    assert connection.sismember(keys.QUEUES, name) and connection.get(keys.of_queue(name).queue) == b"not a list"
