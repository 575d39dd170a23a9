"""lua/claim.lua's reply (issue 13: Redis CPU per processed job)."""

from __future__ import annotations

import time

import msgpack
import sample_tasks
from roundtrips import commands_run

from taskit import Queue
from taskit.storage.store import Record, Store


def _claim_raw(store: Store, now: float) -> list:
    """The claim script's list of claimed jobs, as Redis returned it (packed: see claim.lua)."""
    script, script_keys, args = store._claim("w1", ["default"], [0], now, now + 30, 1, True, None)
    return msgpack.unpackb(script(keys=script_keys, args=args), raw=True)[0]


def test_a_job_never_claimed_comes_back_with_an_empty_text_for_its_state(connection):
    """A job that had no state entry (the usual case) adds no table to the reply (each costs
    the script more to pack than a string)."""
    job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2)
    store, now = Store.of(connection), time.time()
    claimed = _claim_raw(store, now)
    assert (claimed[0].decode(), claimed[1], claimed[4]) == (job.id, 1, b"")

    # one that had a state entry (it ran once and went back to its queue) gets its pairs
    assert store.finish("w1", [Record(job.id, "default", 1, "retry", "Traceback: once")], now) == [1]
    claimed = _claim_raw(store, now)
    assert (claimed[0].decode(), claimed[1]) == (job.id, 2)
    state = dict(zip(claimed[4][0::2], claimed[4][1::2]))
    assert (state[b"s"], state[b"x"]) == (b"queued", b"Traceback: once")


def test_an_idle_worker_picks_up_after_redis_forgot_its_scripts_or_closed_its_connections(connection, cli_env, tmp_path):
    """An idle worker's pickup (the wait and the claim in one write, on a connection held
    between pickups) and its finish run again after SCRIPT FLUSH, and after Redis closed
    every client connection while a job ran."""
    import fault_tasks
    from test_faults import FAST, wait_until, worker_pool

    from taskit import Job, JobStatus

    with worker_pool(cli_env, tmp_path) as start:
        worker = start(*FAST)
        wait_until(worker.ready, what="the worker to start")
        for i in range(3):
            time.sleep(0.3)  # idle: waiting in Redis
            connection.script_flush()
            job = fault_tasks.work.delay(i)
            wait_until(lambda job=job: Job.fetch(job.id).get_status() == JobStatus.FINISHED, what=f"job {i}")
        slow = fault_tasks.work.delay(10, 1.0)
        wait_until(lambda: Job.fetch(slow.id).get_status() == JobStatus.STARTED, what="the slow job to start")
        connection.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        connection.script_flush()
        wait_until(lambda: Job.fetch(slow.id).get_status() == JobStatus.FINISHED, what="the slow job")
        time.sleep(0.3)
        after = fault_tasks.work.delay(11)
        wait_until(lambda: Job.fetch(after.id).get_status() == JobStatus.FINISHED, what="the job after")
        assert worker.alive(), worker.output()
        assert Job.fetch(after.id).result == 11


def test_a_claim_checks_types_by_its_reads_and_writes_not_by_asking(connection, redis_server):
    """An idle worker's claim of one job (its pickup) asks no TYPE: the queue's length
    (which also says how many stay), the started registry's count, the scheduled zset's
    first entry, the read of the state entries, the writes to the in-flight list and the
    worker leases are their own checks (another type is passed over or repaired as before:
    tests/test_corrupt_keys.py), and the queue is measured once."""
    job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2)
    store, now = Store.of(connection), time.time()
    store.claim("w1", ["default"], now, now + 30, 64)  # (loads the script)
    Queue(connection=connection).enqueue(sample_tasks.add, 3, 4)
    with commands_run(redis_server) as ran:
        claimed = store.claim("w1", ["default"], now, now + 30, 64).jobs
    assert len(claimed) == 1 and claimed[0][0] != job.id
    assert "type" not in ran and ran["llen"] == 1 and "zrangebyscore" not in ran, ran
    assert sum(ran.values()) == 14, ran  # (the EVALSHA and its 13 commands)


def test_a_claim_denied_the_queue_length_by_an_acl_raises_and_takes_nothing(connection, redis_server):
    """The claim reads a queue's length as its type check (WRONGTYPE: passed over); another
    refusal, such as an ACL user made without +llen, is raised (taskit's StorageError with
    Redis's words), not read as a broken queue and passed over in silence; nothing is taken."""
    import pytest
    import redis

    from taskit.exceptions import StorageError
    from taskit.storage import acl

    user, password = "taskit-no-llen", "no-llen-password"
    line = acl.setuser(user, password).replace(" +llen", "")
    assert "+llen" not in line
    connection.execute_command(*line.split())
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, username=user, password=password)
    try:
        job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2)
        now = time.time()
        with pytest.raises(StorageError, match="can't run this command"):
            Store.of(client).claim("w1", ["default"], now, now + 30, 10)
        assert Queue(connection=connection).job_ids == [job.id]
    finally:
        client.close()
        connection.execute_command("ACL", "DELUSER", user)
