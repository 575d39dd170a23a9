"""lua/finish.lua's usual case, taken in short (`ended_in_short`): a job of a batch whose
in-flight ids are released at once, ending finished, failed or canceled, is written as the
long way (`record`) writes it, and a batch that leaves its tag's state hash empty deletes
it whole (issue 13: Redis CPU per processed job).
"""

from __future__ import annotations

import time

import msgpack
import pytest
import redis
import sample_tasks
from roundtrips import commands_run

from taskit import Queue
from taskit.storage import keys
from taskit.storage.store import Record, Store

OUTCOMES = [("finished", b"\x01"), ("failed", "Traceback: boom"), ("canceled", "stopped on request")]


def _claimed(connection, count: int, worker: str = "w1") -> list[tuple[str, int, int, dict]]:
    queue = Queue(connection=connection)
    queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, 1)) for i in range(count)])
    now = time.time()
    jobs = Store.of(connection).claim(worker, ["default"], now, now + 30, count).jobs
    assert len(jobs) == count
    return jobs


def _own_hash(connection, job_id: str) -> dict[bytes, bytes]:
    return connection.hgetall(keys.of_queue("default").tagged.job(job_id))


def test_a_job_ended_in_short_is_written_as_the_long_way_writes_it(connection):
    jobs = _claimed(connection, 2 * len(OUTCOMES))
    short, long_ = jobs[:len(OUTCOMES)], jobs[len(OUTCOMES):]
    store, now = Store.of(connection), time.time()

    def records(claimed):
        return [Record(job_id, "default", token, outcome, payload, 600, micros=5, func="sample_tasks.add")
                for (job_id, token, _, _), (outcome, payload) in zip(claimed, OUTCOMES)]

    # in the order claimed: the in-flight ids are released at once, and the short way is taken
    assert store.finish("w1", records(short), now) == [1] * len(OUTCOMES)
    # with an id twice, each job is read and written as it comes: the long way (the repeat
    # finds its own record already written, which counts as recorded)
    assert store.finish("w1", [*records(long_), records(long_)[0]], now) == [1] * (len(OUTCOMES) + 1)

    for (a, _, _, _), (b, _, _, _), (outcome, _) in zip(short, long_, OUTCOMES):
        written, expected = _own_hash(connection, a), _own_hash(connection, b)
        assert written.keys() == expected.keys(), outcome
        assert {k: v for k, v in written.items() if k != b"p"} == {k: v for k, v in expected.items() if k != b"p"}
        assert written[b"s"] == outcome.encode()
        assert 590 < connection.ttl(keys.of_queue("default").tagged.job(a)) <= 600
    for job_id in (a for a, _, _, _ in jobs):
        assert Queue(connection=connection).fetch_job(job_id) is not None
    place = keys.of_queue("default")
    assert connection.zcard(place.started) == 0
    assert {m.decode() for m in connection.zrange(place.registry("finished"), 0, -1)} == {short[0][0], long_[0][0]}


def test_a_retried_jobs_earlier_traceback_is_dropped_when_it_finishes_in_short(connection):
    (job_id, token, _, _), = _claimed(connection, 1)
    store, now = Store.of(connection), time.time()
    assert store.finish("w1", [Record(job_id, "default", token, "retry", "Traceback: first try")], now) == [1]
    (again, token, _, _), = store.claim("w1", ["default"], now, now + 30, 1).jobs
    assert again == job_id
    assert store.finish("w1", [Record(job_id, "default", token, "finished", b"\x02", 600)], now) == [1]
    written = _own_hash(connection, job_id)
    assert (written[b"s"], written[b"r"], written[b"n"]) == (b"finished", b"\x02", b"2")
    assert b"x" not in written and b"al" not in written


def test_a_batch_that_empties_its_state_hash_deletes_it_whole(connection, redis_server):
    jobs = _claimed(connection, 64)
    records = [Record(job_id, "default", token, "finished", b"", 600) for job_id, token, _, _ in jobs]
    with commands_run(redis_server) as ran:
        assert Store.of(connection).finish("w1", records, time.time()) == [1] * 64
    # one HDEL per job's record in its bucket, none for the 64 state entries: the hash that
    # held only them is deleted (an HDEL of n fields from a small hash costs n * n)
    assert (ran["hdel"], ran["hlen"]) == (64, 1)
    assert not connection.exists(keys.of_queue("default").tagged.state)


def test_a_state_hash_that_holds_other_entries_keeps_them(connection):
    jobs = _claimed(connection, 3)
    store, now = Store.of(connection), time.time()
    first = [Record(job_id, "default", token, "finished", b"", 600) for job_id, token, _, _ in jobs[:2]]
    assert store.finish("w1", first, now) == [1, 1]
    state = keys.of_queue("default").tagged.state
    assert connection.hkeys(state) == [jobs[2][0].encode()]
    last_id, token = jobs[2][0], jobs[2][1]
    assert store.finish("w1", [Record(last_id, "default", token, "finished", b"", 600)], now) == [1]
    assert not connection.exists(state)


def test_an_acl_user_made_before_hlen_was_granted_finishes_batches_and_is_denied_nothing(connection, redis_server):
    """An ACL user made with an older `taskit acl` line (without +hlen) still finishes its
    jobs (finish.lua falls back to the HDEL), and Redis logs no denial for it: a denial per
    batch would fill ACL LOG and the acl_access_denied_cmd counter an operator watches."""
    from taskit.storage import acl

    user, password = "taskit-old-acl", "old-line-password"
    old_line = acl.setuser(user, password).replace(" +hlen", "")
    assert "+hlen" not in old_line
    connection.execute_command(*old_line.split())
    connection.execute_command("ACL", "LOG", "RESET")
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, username=user, password=password)
    try:
        jobs = _claimed(connection, 4)
        records = [Record(job_id, "default", token, "finished", b"", 600) for job_id, token, _, _ in jobs]
        assert Store.of(client).finish("w1", records, time.time()) == [1] * 4
        assert not connection.exists(keys.of_queue("default").tagged.state)  # the HDEL emptied it
        assert connection.execute_command("ACL", "LOG") == []
    finally:
        client.close()
        connection.execute_command("ACL", "DELUSER", user)


def _mark(connection, job_id: str, **fields: str) -> None:
    """Add fields to a claimed job's state entry (as wait.lua adds 'wt')."""
    state = keys.of_queue("default").tagged.state
    flat = msgpack.unpackb(connection.hget(state, job_id), raw=False)
    for name, value in fields.items():
        flat += [name, value]
    connection.hset(state, job_id, msgpack.packb(flat))


@pytest.mark.parametrize("keep", [0, -1, 600])
@pytest.mark.parametrize("waited", [False, True])
def test_the_short_way_and_the_long_way_write_alike_for_every_keep_and_waiter(connection, keep, waited):
    jobs = _claimed(connection, 2 * len(OUTCOMES))
    if waited:
        for job_id, _, _, _ in jobs:
            _mark(connection, job_id, wt="1")
    short, long_ = jobs[:len(OUTCOMES)], jobs[len(OUTCOMES):]
    store, now = Store.of(connection), time.time()
    place = keys.of_queue("default")

    def records(claimed):
        return [Record(job_id, "default", token, outcome, payload, keep, micros=5, func="sample_tasks.add")
                for (job_id, token, _, _), (outcome, payload) in zip(claimed, OUTCOMES)]

    assert store.finish("w1", records(short), now) == [1] * len(OUTCOMES)
    # (the repeat, the long way, finds the record it wrote: none with keep 0)
    assert store.finish("w1", [*records(long_), records(long_)[0]], now) == [1] * len(OUTCOMES) + [int(keep != 0)]
    for (a, _, _, _), (b, _, _, _), (outcome, _) in zip(short, long_, OUTCOMES):
        written, expected = _own_hash(connection, a), _own_hash(connection, b)
        assert {k: v for k, v in written.items() if k != b"p"} == {k: v for k, v in expected.items() if k != b"p"}, outcome
        registry = place.registry(outcome)
        assert connection.zscore(registry, a) == connection.zscore(registry, b), outcome
        assert (connection.zscore(registry, a) is None) == (keep == 0)
        assert connection.ttl(place.tagged.job(a)) == connection.ttl(place.tagged.job(b))
        assert connection.lrange(place.tagged.done(a), 0, -1) == connection.lrange(place.tagged.done(b), 0, -1)
        assert connection.lrange(place.tagged.done(a), 0, -1) == ([outcome.encode()] if waited else [])
    assert not connection.exists(place.tagged.state)
    totals = {k: v for k, v in connection.hgetall(place.totals).items() if b"sample_tasks.add" in k}
    assert (totals[b"d:sample_tasks.add"], totals[b"f:sample_tasks.add"]) == (b"2", b"2")


def test_a_batch_over_two_tags_deletes_only_the_state_hash_it_drained(connection):
    """Each tag's state hash is judged apart: one left with entries of jobs outside the batch
    (claimed, not ended) keeps them, even when the other tag's is deleted whole."""
    queues = [Queue("default", connection=connection), Queue("other", connection=connection)]
    assert keys.queue_tag("default") != keys.queue_tag("other")
    for queue in queues:
        queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, 1)) for i in range(3)])
    store, now = Store.of(connection), time.time()
    jobs = store.claim("w1", ["default", "other"], now, now + 30, 6).jobs
    assert len(jobs) == 6
    kept = next(job for job in jobs if job[2] == 1)
    records = [Record(job_id, ["default", "other"][index], token, "finished", b"", 600)
               for job_id, token, index, _ in jobs if job_id != kept[0]]
    assert store.finish("w1", records, now) == [1] * 5
    assert not connection.exists(keys.of_queue("default").tagged.state)
    assert connection.hkeys(keys.of_queue("other").tagged.state) == [kept[0].encode()]
    assert store.finish("w1", [Record(kept[0], "other", kept[1], "finished", b"", 600)], now) == [1]
    assert Queue("other", connection=connection).fetch_job(kept[0]).get_status() == "finished"
