"""A corrupt key costs its own job (or queue) only: issue 11.

Redis does not roll back a Lua script that raises halfway, so every script checks what it
reads before it writes (taskit/lua/lib/guard.lua). Here each kind of corruption found by
the review is made by hand, with real `taskit worker` processes where the defect was a
worker that stalled or crashed.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import fault_tasks
import msgpack
import pytest
import redis
from conftest import taskit_command
from records import (
    bucket,
    corrupt_record,
    field,
    inflight,
    periodic_key,
    set_fields,
    ttl,
    write_job,
)
from redis.backoff import NoBackoff
from redis.retry import Retry
from test_edge_cases import _reply_dropping_proxy
from test_faults import FAST, assert_nothing_held, status, wait_until, worker_pool

from taskit import Job, JobStatus, Queue, Worker
from taskit.exceptions import DuplicateJobError, StorageError
from taskit.periodic import enqueue_due, periodic, unregister
from taskit.storage import keys, scripts
from taskit.storage.store import Record, Store


@pytest.fixture
def workers(cli_env, tmp_path):
    with worker_pool(cli_env, tmp_path) as start:
        yield start


def failed_as_corrupt(job_id: str, during: str, by: str = "a string") -> Job:
    """The job ended as a minimal failed record, in its failed registry, saying why."""
    job = Job.fetch(job_id)
    assert job.get_status() == JobStatus.FAILED
    assert f"was overwritten by {by} while it {during}" in job.exc_info, job.exc_info
    assert job_id in Queue(job.origin).failed_job_registry
    return job


# -- 1. a job's record overwritten while it runs --------------------------------------------------------


def test_a_record_overwritten_while_it_runs_fails_that_job_and_the_worker_goes_on(connection, workers):
    fault_tasks.work.delay(0)  # the first claim takes one job; after it the batch grows
    overwritten = fault_tasks.overwrite_my_record.delay()
    slow = fault_tasks.counted.delay("slow", 3)  # claimed in the same batch, runs while the record waits
    after = fault_tasks.work.delay(5)  # the same batch: handed back while `slow` runs
    first = workers(*FAST)
    wait_until(lambda: status(slow.id) == JobStatus.STARTED, what="the slow job to start")
    second = workers(*FAST)  # would recover `slow` if the first worker's leases were not renewed
    wait_until(lambda: status(slow.id) == JobStatus.FINISHED, what="the slow job to finish")
    slow.refresh()
    assert (fault_tasks.runs(connection, "slow"), slow.attempts, slow.recoveries) == (1, 1, 0)
    failed_as_corrupt(overwritten.id, "ran", "unreadable data")
    wait_until(lambda: status(after.id) == JobStatus.FINISHED, what="the job claimed with them")
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    later = fault_tasks.work.delay(6)  # the first worker goes on
    wait_until(lambda: status(later.id) == JobStatus.FINISHED, what="a job enqueued later")
    assert first.alive() and "was failed as corrupt" in first.output()
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert_nothing_held(connection)


def test_the_heartbeat_renews_every_other_lease_when_a_held_record_is_overwritten(connection):
    store = Store.of(connection)
    fault_tasks.work.delay(1)
    fault_tasks.work.delay(2)
    claimed = store.claim("w", ["default"], time.time(), time.time() + 5, 2).jobs
    (bad, bad_token, _, _), (good, good_token, _, _) = claimed
    corrupt_record(connection, bad, b"overwritten")
    deadline = time.time() + 60
    assert store.heartbeat("w", deadline, 90, [(bad, "default", bad_token), (good, "default", good_token)]) == ([], [])
    started = keys.of_queue("default").registry("started")
    assert connection.zscore(started, good) == connection.zscore(started, bad) == pytest.approx(deadline)
    assert connection.zscore(keys.WORKERS, "w") == pytest.approx(deadline)


# -- 2. a string at a queued job's bucket ------------------------------------------------------------


def test_a_bucket_overwritten_while_its_jobs_wait_costs_only_those_jobs(connection, workers):
    jobs = [fault_tasks.work.delay(i) for i in range(6)]
    scheduled = fault_tasks.work.apply_async((9,), countdown=0.3)
    lost = {bucket(connection, jobs[1].id), bucket(connection, scheduled.id)}
    for key in lost:
        connection.set(key, "overwritten")  # every job recorded there is gone with it
    victims = [job for job in [*jobs, scheduled] if bucket(connection, job.id) in lost]
    time.sleep(0.4)
    burst = workers(*FAST, "--burst")
    assert burst.wait() == 0
    for i, job in enumerate(jobs):
        if job not in victims:
            assert (status(job.id), Job.fetch(job.id).result) == (JobStatus.FINISHED, i)
    for job in victims:
        failed_as_corrupt(job.id, "waited")
    assert re.search(r"failed \d job\(s\) as corrupt", burst.output())
    assert_nothing_held(connection)


# -- 3. a packed entry with far too many values; no unbounded unpack() -----------------------------------


def test_a_packed_entry_with_thousands_of_values_is_failed_as_corrupt(connection, workers):
    before = fault_tasks.work.delay(1)
    huge = fault_tasks.work.delay(2)
    corrupt_record(connection, huge.id, msgpack.packb(["f"] * 8000, use_bin_type=False))
    after = fault_tasks.work.delay(3)
    assert workers(*FAST, "--burst").wait() == 0
    assert Job.fetch(before.id).result == 1 and Job.fetch(after.id).result == 3
    assert field(connection, huge.id, keys.Field.STATUS) == b"failed"
    assert huge.id in Queue().failed_job_registry
    assert_nothing_held(connection)


def test_claims_and_records_of_thousands_of_jobs_stay_within_lua_limits(connection, queue):
    """Lua's unpack() stops near 8,000 values: a claim of 5,000 jobs gives 10,000 lease
    values, and recording them as many registry entries."""
    total = 5000
    queue.enqueue_many([queue.prepare_data(fault_tasks.work, (i,)) for i in range(total)])
    store, now = Store.of(connection), time.time()
    claimed = store.claim("w", ["default"], now, now + 60, total).jobs
    assert len(claimed) == total and connection.zcard(keys.of_queue("default").registry("started")) == total
    records = [Record(job_id, "default", token, "finished", b"", 60) for job_id, token, _, _ in claimed]
    assert store.finish("w", records, now) == [1] * total
    assert connection.zcard(keys.of_queue("default").registry("finished")) == total
    assert_nothing_held(connection)


# -- 4. periodic ticks and the isolation of the maintenance step -----------------------------------------


def test_an_unreadable_last_tick_is_replaced_and_the_tick_enqueued(connection, caplog):
    entry = periodic(fault_tasks.work, 60, args=[1], name="corrupt-tick", queue="ticks")
    try:
        for corrupt in ("not a number", "nan", "inf", "9e10"):
            connection.set(periodic_key("corrupt-tick", "ticks"), corrupt)
            tick_job = entry.job_id(entry.schedule.previous(time.time()))
            tagged = keys.of_queue("ticks").tagged
            connection.delete(tagged.job(tick_job))
            connection.hdel(tagged.bucket(tick_job), tick_job)
            connection.hdel(tagged.state, tick_job)
            jobs = enqueue_due(connection, queues=["ticks"])
            assert [job.id for job in jobs] == [entry.job_id(entry.schedule.previous(time.time()))], corrupt
            assert float(connection.get(periodic_key("corrupt-tick", "ticks"))) == entry.schedule.previous(time.time())
        connection.delete(periodic_key("corrupt-tick", "ticks"))
        connection.hset(periodic_key("corrupt-tick", "ticks"), "a", "hash")
        assert enqueue_due(connection, queues=["ticks"]) == []  # its job exists: replaced, not enqueued twice
        assert "was unreadable; replaced" in caplog.text
        assert connection.type(periodic_key("corrupt-tick", "ticks")) == b"string"
    finally:
        unregister("corrupt-tick")


def test_a_tick_refused_by_redis_does_not_stop_the_other_ticks(connection, caplog):
    periodic(fault_tasks.work, 60, args=[1], name="tick-a", queue="broken")
    periodic(fault_tasks.work, 60, args=[2], name="tick-b", queue="fine")
    try:
        connection.set(periodic_key("tick-a", "broken"), "0")
        connection.set(periodic_key("tick-b", "fine"), "0")
        connection.set(keys.of_queue("broken").queue, "not a list")
        jobs = enqueue_due(connection, queues=["broken", "fine"])
        assert [job.origin for job in jobs] == ["fine"]
        assert "periodic task tick-a: cannot enqueue" in caplog.text
        assert f"{keys.of_queue('broken').queue} is a string" in caplog.text
        assert connection.get(periodic_key("tick-a", "broken")) == b"0"  # refused before anything was written
    finally:
        unregister("tick-a")
        unregister("tick-b")


def test_a_corrupt_last_tick_does_not_stop_recovery(connection, workers):
    connection.set(periodic_key("every-minute", "ticks"), "garbage")
    job = fault_tasks.work.delay(7)
    assert workers(*FAST, crash_at="after_claim").wait() == -signal.SIGKILL  # holds the job, dead
    rescuer = workers("periodic_tasks", *FAST, "-q", "default", "-q", "ticks")
    wait_until(lambda: status(job.id) == JobStatus.FINISHED, what="the dead worker's job to be recovered")
    assert Job.fetch(job.id).attempts == 2
    assert "was unreadable; replaced" in rescuer.output()
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0


def test_one_failing_part_of_the_maintenance_step_does_not_stop_the_others(connection, workers):
    """A stray claim whose queue field is not UTF-8 makes the step's stray part fail; recovery
    still runs, and the worker lives on."""
    job = fault_tasks.work.delay(7)
    assert workers(*FAST, crash_at="after_claim").wait() == -signal.SIGKILL
    write_job(connection, "stray", {"f": "fault_tasks.work", "s": "started", "w": "iso", "n": "1", "q": b"\xff"})
    connection.rpush(inflight("iso"), "stray")
    rescuer = workers(*FAST, "-n", "iso")
    wait_until(lambda: status(job.id) == JobStatus.FINISHED, what="the dead worker's job to be recovered")
    assert rescuer.alive()
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait() == 0


# -- 5. queue names that are not queue names ----------------------------------------------------------


def test_unreadable_queue_names_are_skipped_everywhere_and_reported(connection, workers, cli_env):
    job = fault_tasks.work.delay(1)
    connection.sadd(keys.QUEUES, b"\xff\xfe", "bad name!")
    assert [q.name for q in Queue.all()] == ["default"]
    shown = subprocess.run(taskit_command("info"), env=cli_env, capture_output=True, text=True, timeout=30, check=False)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "default" in shown.stdout and "2 unreadable queue name(s) skipped" in shown.stdout, shown.stdout
    worker = workers(*FAST, "--burst")
    assert worker.wait() == 0
    assert status(job.id) == JobStatus.FINISHED
    assert "dropped 2 member(s) of the queue set" in worker.output()
    assert connection.smembers(keys.QUEUES) <= {b"default"}


# -- 6. the supervisor and a queue field that is not UTF-8 ---------------------------------------------


def test_a_garbled_queue_field_on_a_dying_job_does_not_crash_the_supervisor(connection, workers):
    garbled = fault_tasks.garble_my_queue_and_die.delay()
    parent = workers(*FAST, "-c", "1")
    wait_until(lambda: "ended (signal SIGKILL)" in parent.output(), what="the child to die")
    # left to its lease: the maintenance step recovers it through its started registry, and the
    # next claim fails it as unreadable; it is never lost
    wait_until(lambda: field(connection, garbled.id, keys.Field.STATUS) == b"failed",
               what="the garbled job to end")
    assert garbled.id in Queue().failed_job_registry
    later = fault_tasks.work.delay(2)
    wait_until(lambda: status(later.id) == JobStatus.FINISHED, what="the supervised pool to go on")
    assert parent.alive() and "Traceback" not in parent.output()
    parent.signal(signal.SIGTERM)
    assert parent.wait() == 0


# -- 7. signal keys are repaired; data keys of the wrong type are refused before any write ---------------


def test_a_wake_list_overwritten_is_repaired_and_the_job_runs(connection, queue):
    connection.set(keys.of_queue("default").wake, "not a list")
    job = queue.enqueue(fault_tasks.work, 1)  # no error: the signal key is recreated
    assert connection.type(keys.of_queue("default").wake) == b"list"
    assert Worker([queue]).work(burst=True) == 1 and Job.fetch(job.id).result == 1


@pytest.mark.parametrize("key", ["queue", "scheduled", "bucket", "state", "expiry", "job"])
def test_enqueue_refuses_a_data_key_of_the_wrong_type_and_writes_nothing(connection, queue, key):
    place = keys.of_queue("default")
    key = {
        "queue": place.queue, "scheduled": place.scheduled, "bucket": place.tagged.bucket("fixed-id"),
        "state": place.tagged.state, "expiry": place.tagged.expiry, "job": place.tagged.job("fixed-id"),
    }[key]
    connection.set(key, "not what it should be")
    before = connection.dbsize()
    options = {"ttl": 60} if key == place.tagged.expiry else {}  # (only a job with a ttl goes there)
    with pytest.raises(StorageError, match=f"WRONGTYPE taskit: {key} is a string"):
        queue.enqueue(fault_tasks.work, 1, job_id="fixed-id", **options)
    with pytest.raises(StorageError, match=f"WRONGTYPE taskit: {key} is a string"):
        queue.enqueue_in(60, fault_tasks.work, 1, job_id="fixed-id", **options)
    assert connection.dbsize() == before


def test_a_registry_overwritten_fails_the_jobs_it_should_hold_and_the_worker_goes_on(connection, queue):
    connection.set(keys.of_queue("default").registry("finished"), "not a zset")
    connection.set(keys.of_queue("other").registry("started"), "not a zset")
    stuck = Queue("other").enqueue(fault_tasks.work, 9)
    jobs = [queue.enqueue(fault_tasks.work, i) for i in range(3)]
    assert Worker([queue, Queue("other")], lease=5).work(burst=True) == 3  # `other` is passed over
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FAILED and job.result == job.args[0]
        assert f"could not be recorded as finished: {keys.of_queue('default').finished} is a string" in job.exc_info
        assert job.id in queue.failed_job_registry
    assert Job.fetch(stuck.id).get_status() == JobStatus.QUEUED


def test_api_scripts_refuse_a_key_of_the_wrong_type_before_writing(connection, queue):
    job = queue.enqueue(fault_tasks.work, 1)
    connection.set(keys.of_queue("default").registry("canceled"), "not a zset")
    with pytest.raises(StorageError, match=re.escape(f"{keys.of_queue('default').canceled} is a string")):
        job.cancel()
    assert Job.fetch(job.id).get_status() == JobStatus.QUEUED and connection.hexists(bucket(connection, job.id), job.id)
    tag = keys.queue_tag("default")
    connection.set(keys.directory("stringy"), tag)
    connection.set(keys.job(tag, "stringy"), "overwritten")
    for call in (lambda: Job.fetch("stringy"), lambda: Store.of(connection).update("stringy", {"m": b"x"})):
        with pytest.raises(StorageError, match=re.escape(keys.job(tag, "stringy"))):
            call()
    assert connection.get(keys.job(tag, "stringy")) == b"overwritten"


# -- 8. durations out of range in a stored record -------------------------------------------------------


def test_out_of_range_durations_in_a_record_never_abort_a_batch(connection, queue):
    forever = queue.enqueue(fault_tasks.work, 1)
    set_fields(connection, forever.id, {keys.Field.RESULT_TTL: str(sys.maxsize)})
    failing = queue.enqueue("fault_tasks.no_such_function")
    set_fields(connection, failing.id, {keys.Field.FAILURE_TTL: str(sys.maxsize)})
    assert Worker([queue]).work(burst=True) == 2
    assert Job.fetch(forever.id).result == 1 and ttl(connection, forever.id) == -1
    assert connection.zscore(keys.of_queue("default").registry("finished"), forever.id) == float("inf")
    assert failing.id in queue.failed_job_registry and Job.fetch(failing.id).get_status() == JobStatus.FAILED


def test_a_recovered_job_with_an_absurd_failure_ttl_is_abandoned_cleanly(connection):
    job = fault_tasks.work.delay(1)
    store, now = Store.of(connection), time.time()
    for _ in range(3):
        store.claim("gone", ["default"], now, now, 1)
        set_fields(connection, job.id, {keys.Field.FAILURE_TTL: "9" * 30, "al": "1"})
        store.reap("gone", now, 3, 60, ["default"])
    assert Job.fetch(job.id).get_status() == JobStatus.FAILED and "abandoned" in Job.fetch(job.id).exc_info
    assert connection.zscore(keys.of_queue("default").registry("failed"), job.id) == float("inf")


# -- 10. a lost enqueue reply --------------------------------------------------------------------------


def _through_proxy(redis_server, marker: bytes, client_retries: bool) -> tuple[redis.Redis, threading.Event]:
    """A client whose first reply holding `marker` is lost: the connection is cut after Redis
    ran the command. redis-py's default client then retries on its own; taskit's (retries
    off, config.connect) leaves the retry to the Store."""
    port, dropped = _reply_dropping_proxy(redis_server.port, marker)
    client = redis.Redis(port=port) if client_retries else redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
    for name in scripts.NAMES:  # loaded already: the first reply to the enqueue is its own
        client.script_load(scripts.source(name))
    return client, dropped


@pytest.mark.parametrize("client_retries", [False, True], ids=["store-retries", "client-retries"])
def test_a_retry_after_a_lost_reply_counts_its_own_write_as_written(connection, redis_server, client_retries):
    client, dropped = _through_proxy(redis_server, b":1\r\n", client_retries)
    job = Queue(connection=client).enqueue(fault_tasks.work, 1, job_id="mine")
    assert dropped.is_set()  # the reply of the write was lost; the retry found the job
    assert job.id == "mine" and Job.fetch("mine").args == (1,) and Queue().count == 1


@pytest.mark.parametrize("client_retries", [False, True], ids=["store-retries", "client-retries"])
def test_a_retry_after_a_lost_reply_still_reports_an_older_job_with_the_same_id(connection, redis_server, client_retries):
    Queue().enqueue(fault_tasks.work, 1, job_id="taken")
    client, dropped = _through_proxy(redis_server, b":0\r\n", client_retries)
    with pytest.raises(DuplicateJobError):
        Queue(connection=client).enqueue(fault_tasks.work, 2, job_id="taken")
    assert dropped.is_set()
    assert Job.fetch("taken").args == (1,) and Queue().count == 1


def test_the_same_job_enqueued_twice_at_once_is_still_a_duplicate(connection, queue):
    """Within one millisecond, a second enqueue of the same job finds what a retry of the
    first would find (the very job); this Store knows it was told the first was written."""
    for i in range(50):
        job = Job.create(func=fault_tasks.work, args=(i,), id=f"twice-{i}", connection=connection)
        queue.enqueue_job(job)
        with pytest.raises(DuplicateJobError):
            queue.enqueue_job(job)


def test_the_scripts_bound_durations_as_the_api_does():
    """A record's duration over the API's bound reads as forever in Lua: the two bounds are one."""
    from taskit.schedule import MAX_SECONDS
    from taskit.storage.scripts import source

    assert f"local MAX_SECONDS = {MAX_SECONDS}" in source("finish")
