"""A corrupt key costs its own job (or queue) only: issue 11.

Redis does not roll back a Lua script that raises halfway, so every script checks what it
reads before it writes (taskit/lua/lib/guard.lua). Here each kind of corruption found by
the review is made by hand, with real `taskit worker` processes where the defect was a
worker that stalled or crashed.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import fault_tasks
import msgpack
import pytest
import records
import redis
from conftest import taskit_command, taskit_env
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
from taskit.exceptions import DuplicateJobError, NoSuchJobError, StorageError
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


# -- 3. a packed record of another shape, or far too long; no unbounded unpack() -----------------------


@pytest.mark.parametrize("spoil", ["thousands of values", "a map", "a float at its end", "a list for its function"])
def test_a_record_packed_otherwise_fails_its_job_whole(connection, workers, spoil):
    """A record that is not a list of text values (the enqueue time an integer), or far too
    long a one (no unbounded unpack()), is read as none: its job fails as corrupt, never
    runs with the part read before the fault, and the worker goes on (a map crashed the
    claim's reader; a float ran the job anyway)."""
    before = fault_tasks.work.delay(1)
    spoiled = fault_tasks.work.delay(2)
    flat = msgpack.unpackb(connection.hget(bucket(connection, spoiled.id), spoiled.id), raw=True)
    pairs = dict(zip(flat[0::2], flat[1::2]))
    # (a list of the function name's bytes was read as those bytes: the job ran)
    spoilt = {"thousands of values": ["f"] * 8000, "a map": pairs, "a float at its end": [*flat, b"x", 1.5],
              "a list for its function": [x for k, v in pairs.items() for x in (k, list(v) if k == b"f" else v)]}
    corrupt_record(connection, spoiled.id, msgpack.packb(spoilt[spoil], use_bin_type=False))
    after = fault_tasks.work.delay(3)
    assert workers(*FAST, "--burst").wait() == 0
    assert Job.fetch(before.id).result == 1 and Job.fetch(after.id).result == 3
    assert field(connection, spoiled.id, keys.Field.STATUS) == b"failed"
    assert spoiled.id in Queue().failed_job_registry
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


@pytest.mark.parametrize("queue_usable", [True, False])
def test_a_claim_repairs_the_wake_list_and_expiry_zset_it_finds_overwritten(connection, queue, queue_usable):
    """claim.lua checks the expiry zset's type with the count it reads anyway, and a usable
    queue's wake list at its end (wake_one or DEL); an unusable queue's wake list at once."""
    job = queue.enqueue(fault_tasks.work, 1)
    place = keys.of_queue("default")
    if not queue_usable:
        connection.set(place.queue, "not a list")
    connection.set(place.wake, "not a list")
    connection.set(place.tagged.expiry, "not a zset")
    claimed = Store.of(connection).claim("w", ["default"], time.time(), time.time() + 30, 5).jobs
    assert [job_id for job_id, *_ in claimed] == ([job.id] if queue_usable else [])
    assert connection.type(place.wake) == b"none" and connection.type(place.tagged.expiry) == b"none"


@pytest.mark.parametrize("due", [False, True], ids=["queued", "scheduled-due"])
def test_a_claim_repairs_a_state_hash_it_finds_overwritten_and_claims_the_job(connection, queue, due):
    """claim.lua asks no TYPE of the state hash: its read of the state entries (HMGET) is
    the check; the promotion of due jobs, which reads it first, repairs it first."""
    job = queue.enqueue_in(0.01, fault_tasks.work, 1) if due else queue.enqueue(fault_tasks.work, 1)
    state = keys.of_queue("default").tagged.state
    connection.set(state, "not a hash")
    later = time.time() + 1
    claimed = Store.of(connection).claim("w", ["default"], later, later + 30, 5).jobs
    assert [job_id for job_id, *_ in claimed] == [job.id]
    assert connection.type(state) == b"hash"


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
    if key != place.scheduled:  # (a job that runs now never touches it: see the next test)
        with pytest.raises(StorageError, match=f"WRONGTYPE taskit: {key} is a string"):
            queue.enqueue(fault_tasks.work, 1, job_id="fixed-id", **options)
    with pytest.raises(StorageError, match=f"WRONGTYPE taskit: {key} is a string"):
        queue.enqueue_in(60, fault_tasks.work, 1, job_id="fixed-id", **options)
    assert connection.dbsize() == before


def test_a_job_that_runs_now_is_not_refused_for_a_broken_scheduled_zset_and_runs(connection, queue):
    """It is never written there; a claim passes the broken key over, and the maintenance
    step reports it."""
    place = keys.of_queue("default")
    connection.set(place.scheduled, "not a zset")
    job = queue.enqueue(fault_tasks.work, 4)
    assert Worker([queue]).work(burst=True) == 1 and Job.fetch(job.id).result == 4
    assert connection.get(place.scheduled) == b"not a zset"


def test_a_global_queue_set_of_the_wrong_type_is_rebuilt_and_the_enqueue_goes_on(connection, queue, caplog):
    """The set is an index (the enqueue writes it in the same round trip as the job): a
    refusal there must not report as failed a job that was written."""
    connection.set(keys.QUEUES, "not a set")
    job = Queue("fresh").enqueue(fault_tasks.work, 1)
    assert connection.type(keys.QUEUES) == b"set" and connection.smembers(keys.QUEUES) == {b"fresh"}
    assert f"{keys.QUEUES} was a string, not a set of queue names" in caplog.text
    assert Worker([Queue("fresh")]).work(burst=True) == 1 and Job.fetch(job.id).result == 1


def test_a_directory_entry_of_the_wrong_type_refuses_the_custom_id_and_leaves_nothing(connection, queue):
    connection.rpush(keys.directory("report-7"), "not a string")
    with pytest.raises(StorageError, match=re.escape(f"refused to write {keys.directory('report-7')}: it is a list")):
        queue.enqueue(fault_tasks.work, 1, job_id="report-7")
    assert queue.count == 0 and queue.job_ids == []
    connection.delete(keys.directory("report-7"))
    with pytest.raises(NoSuchJobError):
        Job.fetch("report-7")
    job = queue.enqueue(fault_tasks.work, 2, job_id="report-7")  # the key repaired: the id works
    assert Worker([queue]).work(burst=True) == 1 and Job.fetch(job.id).result == 2


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


def test_a_retry_after_a_lost_reply_finds_its_job_ended_meanwhile_and_does_not_write_it_again(connection, redis_server):
    """A job whose id taskit made is not looked up in the state hash, but it is among ended
    jobs: the job, run and ended by a worker between a lost reply and the retry, is not
    written a second time."""
    def run_it() -> None:
        subprocess.run(taskit_command("worker", "fault_tasks", "--burst", "-u", redis_server.url), check=True,
                       env=taskit_env(redis_server.url), timeout=60, capture_output=True)

    port, dropped = _reply_dropping_proxy(redis_server.port, b":1\r\n", meanwhile=run_it, passed=1)
    client = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
    for name in scripts.NAMES:
        client.script_load(scripts.source(name))
    first = fault_tasks.work.apply_async((2,), connection=client)  # (and the queue's first SADD: one reply read)
    job = fault_tasks.work.apply_async((3,), connection=client)
    assert dropped.is_set()
    assert Job.fetch(first.id).result == 2 and Job.fetch(job.id).result == 3 and Queue().count == 0
    assert not connection.hexists(keys.of_queue("default").tagged.bucket(job.id), job.id)


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


# -- 11. reads: the dashboard, `taskit info` / `job` / `failed` and /metrics show the rest --------------
#
# A key of another type where a queue, registry, record, worker or counter hash should be, an id
# that is not UTF-8, a counter that is not a number: each page and command still answers, shows
# what it can, and names the key it could not read (on the page or its output, else in the log).

#: the pages of the dashboard (JOB: the failed job's page), each with a text the page shows whatever is corrupt
PAGES = {
    "/": 'href="/queues/other"',
    **{f"/queues/default?registry={state}": "<h1>Queue default</h1>" for state in ("queued", *keys.REGISTRIES)},
    "/workers": "<h1>Workers</h1>",
    "/periodic": "nightly_cleanup",
    "JOB": "dashboard_tasks.no_such",
}
#: the surfaces that read everything a queue holds (counts, the head's age)
QUEUE_READERS = {"/", *(p for p in PAGES if p.startswith("/queues/")), "/metrics", "info"}


def _corrupt_scene(connection: redis.Redis) -> dict[str, str]:
    """Queue default: a finished job, a failed one, a scheduled one, one held by worker w1, and
    one waiting (with a hash of its own); queue other: one waiting."""
    import dashboard_tasks

    queue = Queue(connection=connection)
    queue.enqueue(dashboard_tasks.echo, 1)
    failed = queue.enqueue("dashboard_tasks.no_such")
    Worker([queue], modules=("dashboard_tasks",)).work(burst=True)
    queue.enqueue_in(600, dashboard_tasks.echo, 2)
    held = queue.enqueue(dashboard_tasks.echo, 3)
    store, now = Store.of(connection), time.time()
    store.register_worker("w1", {"host": "h", "pid": "1", "queues": "default", "lease": "20"}, now + 60, 60)
    store.claim("w1", ["default"], now, now + 60, 1)
    waiting = queue.enqueue(dashboard_tasks.echo, 4, ttl=600)
    while keys.bucket_index(waiting.id) == keys.bucket_index(held.id):  # (1 in 64: spoiling one would spoil both)
        waiting.delete()
        waiting = queue.enqueue(dashboard_tasks.echo, 4, ttl=600)
    Queue("other", connection=connection).enqueue(dashboard_tasks.echo, 5)
    return {"failed": failed.id, "held": held.id, "waiting": waiting.id}


def _replaced(connection: redis.Redis, key: str) -> str:
    connection.delete(key)
    connection.set(key, "not what taskit keeps here")
    return key


def _hour() -> int:
    return int(time.time() // 3600)


def _replaced_registry(kind: str, connection: redis.Redis, _: dict[str, str]) -> str:
    return _replaced(connection, keys.of_queue("default").registry(kind))


def _then(_: object, key: str) -> str:
    """`key`, after the write that spoiled it."""
    return key


_DEFAULT = keys.of_queue("default")

#: corruption -> (make it: returns the key it spoiled, the surfaces that read that key and must name it)
READ_CORRUPTIONS: dict[str, tuple[Any, set[str]]] = {
    "queue list": (lambda c, s: _replaced(c, _DEFAULT.queue), QUEUE_READERS),
    **{
        f"{kind} registry": (functools.partial(_replaced_registry, kind), QUEUE_READERS | ({"failed"} if kind == "failed" else set()))
        for kind in keys.REGISTRIES
    },
    # (the waiting job's bucket is read for the head's age)
    "waiting record": (lambda c, s: _replaced(c, records.bucket(c, s["waiting"])), QUEUE_READERS),
    "state hash": (lambda c, s: _replaced(c, records.state_key(c, s["waiting"])), QUEUE_READERS | {"/workers", "info"}),
    "enqueue time": (lambda c, s: _then(records.set_fields(c, s["waiting"], {"e": "soon"}), records.bucket(c, s["waiting"])),
                     QUEUE_READERS),
    "held record": (lambda c, s: _replaced(c, records.bucket(c, s["held"])), {"/workers", "info"}),
    "in-flight list": (lambda c, s: _replaced(c, records.inflight("w1")), {"/workers", "info"}),
    "workers zset": (lambda c, s: _replaced(c, keys.WORKERS), {"/", "/workers", "/metrics", "info"}),
    "worker hash": (lambda c, s: _replaced(c, keys.worker("w1")), {"/workers", "info"}),
    "stats hash": (lambda c, s: _replaced(c, _DEFAULT.stats(_hour())), {"/", *(p for p in PAGES if p.startswith("/queues/"))}),
    "totals hash": (lambda c, s: _replaced(c, _DEFAULT.totals), {"/metrics"}),
    "queue member": (lambda c, s: _then(c.lpush(_DEFAULT.queue, b"\xff\xfe"), _DEFAULT.queue), QUEUE_READERS),
    "registry member": (lambda c, s: _then(c.zadd(_DEFAULT.failed, {b"\xff\xfe": "+inf"}), _DEFAULT.failed),
                        {"/queues/default?registry=failed", "failed"}),
    "in-flight member": (lambda c, s: _then(c.rpush(records.inflight("w1"), b"\xff\xfe"), records.inflight("w1")),
                         {"/workers", "info"}),
    "stats fields": (lambda c, s: _then(c.hset(_DEFAULT.stats(_hour()), mapping={b"\xff:1": "1", f"d:{int(time.time() // 60)}": "many", "f:soon": "1"}),
                                       _DEFAULT.stats(_hour())), {"/", *(p for p in PAGES if p.startswith("/queues/"))}),
    "totals fields": (lambda c, s: _then(c.hset(_DEFAULT.totals, mapping={b"d:\xff\xfe": "3", "d:dashboard_tasks.echo": "many", "nocolon": "1"}),
                                        _DEFAULT.totals), {"/metrics"}),
    "held fields": (lambda c, s: _then(records.set_fields(c, s["held"], {"st": "soon", "f": b"\xff", "q": b"\xfe"}), ""), set()),
}


@pytest.fixture(params=list(READ_CORRUPTIONS))
def corrupted(request, connection) -> tuple[dict[str, str], str, set[str]]:
    """(the scene's ids, the key spoiled, the surfaces that must name it); the scene's ids also
    name the corruption ("corruption")."""
    scene = _corrupt_scene(connection)
    make, readers = READ_CORRUPTIONS[request.param]
    return {**scene, "corruption": request.param}, make(connection, scene), readers


def test_every_dashboard_page_shows_the_rest_and_names_a_corrupt_key(connection, corrupted, caplog):
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    scene, key, readers = corrupted
    client = TestClient(create_app(connection), base_url="http://localhost")
    for path, rest in PAGES.items():
        caplog.clear()
        url = f"/jobs/{scene['failed']}" if path == "JOB" else path
        page = client.get(url)
        assert page.status_code == 200 and rest in page.text, (path, page.status_code, page.text[-500:])
        if path in readers:
            assert key in page.text and key in caplog.text, path  # on the page, and in the log


def test_an_ended_job_is_shown_whatever_its_tags_bucket_holds(connection):
    """An ended job lives in its own hash: a spoiled record bucket of its tag (which waiting
    jobs share with it by the hash of their ids) does not hide it."""
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    scene = _corrupt_scene(connection)
    _replaced(connection, records.bucket(connection, scene["failed"]))
    page = TestClient(create_app(connection), base_url="http://localhost").get(f"/jobs/{scene['failed']}")
    assert page.status_code == 200 and "dashboard_tasks.no_such" in page.text, page.text[-500:]


def test_metrics_show_the_rest_and_log_a_corrupt_key(connection, corrupted, caplog):
    from prometheus_client.parser import text_string_to_metric_families

    from taskit import metrics

    _, key, readers = corrupted
    text = metrics.generate_latest(connection).decode()
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert found[("taskit_queue_jobs", (("queue", "other"), ("state", "queued")))] == 1
    if "/metrics" in readers:
        assert key in caplog.text and found[("taskit_unreadable_keys", ())] >= 1
    elif key:
        assert found[("taskit_unreadable_keys", ())] == 0


def test_info_job_and_failed_show_the_rest_and_name_a_corrupt_key(connection, corrupted, cli_env):
    scene, key, readers = corrupted
    commands = {"info": ["info"], "info --json": ["info", "--json"], "job": ["job", scene["failed"]], "failed": ["failed"]}
    running = {name: subprocess.Popen(taskit_command(*args), env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, args in commands.items()}  # (at once: each is a Python start-up)
    for name, process in running.items():
        out, err = process.communicate(timeout=60)
        assert "Traceback" not in out + err, (name, err)
        refused = name == "failed" and scene["corruption"] == "failed registry"  # what it lists: named, exit 1
        assert process.returncode == (1 if refused else 0), (name, err)
        if name.startswith("info"):
            assert "other" in out, name
        if name == "info --json":
            document = json.loads(out)
            assert [q["name"] for q in document["queues"]] == ["default", "other"]
            assert any(key in problem for problem in document["problems"]) == (key != "" and "info" in readers)
        if name == "job":
            assert "status       failed" in out
        if name == "failed" and not refused:
            assert scene["failed"] in out
        if name.split()[0] in readers:
            assert key in out + err, name


def test_a_corrupt_record_is_shown_as_stored_by_taskit_job_and_its_page(connection, cli_env):
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    job_id = _corrupt_scene(connection)["failed"]
    connection.hset(records.key(connection, job_id), mapping={"f": b"\xff\xfe", "n": "many"})
    why = f"job {job_id} is corrupt: field 'func' is unreadable"
    shown = subprocess.run(taskit_command("job", job_id), env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 1 and "Traceback" not in shown.stdout + shown.stderr, shown.stderr
    assert shown.stderr.startswith(f"Error: {why}") and len(shown.stderr.splitlines()) == 1
    for line in ("status       corrupt", "func         b'\\xff\\xfe'", "attempts     many", "status       failed",
                 "exc info     taskit.exceptions.TaskNotAllowedError: 'dashboard_tasks.no_such'"):
        assert line in shown.stdout, (line, shown.stdout)
    as_json = subprocess.run(taskit_command("job", job_id, "--json"), env=cli_env, capture_output=True, text=True, timeout=60, check=False)
    document = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and document["status"] == "corrupt" and document["fields"]["attempts"] == "many"
    assert document["error"].startswith(why)
    page = TestClient(create_app(connection), base_url="http://localhost").get(f"/jobs/{job_id}")
    assert page.status_code == 200 and why.replace("'", "&#39;") in page.text and "<dd><pre class=\"value\">many</pre>" in page.text
