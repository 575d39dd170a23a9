"""The Job record in Redis: create, fetch, fetch_many, refresh, status, meta, cancel, delete, ttl."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
import uuid

import pytest
from records import bucket, delete_field, exists, set_fields, stored, ttl
from roundtrips import commands_run, counting_client

import taskit
from taskit import (
    Job,
    JobStatus,
    NoSuchJobError,
    Queue,
    SerializationError,
    TaskitError,
    Worker,
    get_current_job,
)
from taskit.exceptions import (
    ConfigurationError,
    InvalidJobIdError,
    InvalidOperationError,
    StorageError,
)
from taskit.job import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL, DEFAULT_TIMEOUT
from taskit.storage import keys
from taskit.storage.keys import FIELDS

UTC = dt.timezone.utc
RAN: list[object] = []


# Plain module-level functions: a worker in this process may run them because this
# process enqueued them.
def add(x, y):
    return x + y


def record(value):
    RAN.append(value)
    return value


def fail(message="boom"):
    raise ValueError(message)


def inside():
    """What a running job sees about itself."""
    job = get_current_job()
    return {
        "status": job.get_status().value,
        "is_started": job.is_started,
        "is_queued": job.is_queued,
        "started": job.started_at is not None,
        "ended": job.ended_at is not None,
    }


def cancel_self():
    """Cancels itself, then goes on: the worker stops it (within about a second)."""
    get_current_job().cancel("changed my mind")
    time.sleep(10)
    return "not stopped"


def run_all(queue: Queue) -> int:
    return Worker([queue]).work(burst=True)


def near_now(value: dt.datetime | None, within: float = 5.0) -> bool:
    assert value is not None
    return value.tzinfo is not None and value.utcoffset() == dt.timedelta(0) and abs(
        (dt.datetime.now(UTC) - value).total_seconds()
    ) < within


@pytest.fixture(autouse=True)
def _clear_ran():
    RAN.clear()


# -- imports and statuses ------------------------------------------------------------------


def test_public_imports():
    from taskit import Job as Top
    from taskit import JobStatus as TopStatus
    from taskit import Queue as TopQueue
    from taskit import task as top_task
    from taskit.job import Job as Deep
    from taskit.job import JobStatus as DeepStatus

    assert Top is Deep and TopStatus is DeepStatus
    assert TopQueue is sys.modules["taskit.queue"].Queue and top_task is sys.modules["taskit.task"].task


def test_status_is_a_str_enum_with_the_issue_values():
    assert {s.value for s in JobStatus} >= {
        "created", "queued", "scheduled", "started", "finished", "failed", "canceled"
    }
    assert JobStatus.QUEUED == "queued" and isinstance(JobStatus.QUEUED, str)
    assert JobStatus("finished") is JobStatus.FINISHED
    assert str(JobStatus.FAILED) == "failed" and f"{JobStatus.CANCELED}" == "canceled"


# -- Job.create -------------------------------------------------------------------------------


def test_create_writes_nothing_and_sends_nothing(redis_server, connection):
    client, trips = counting_client(redis_server)
    job = Job.create(func=add, args=[1, 2], kwargs={"z": 3}, ttl=43, connection=client)
    assert trips.trips == 0
    assert connection.dbsize() == 0
    assert job.get_status(refresh=False) == "created"
    assert job.is_created
    client.close()


def test_created_job_reports_created_until_enqueued(connection, queue):
    job = Job.create(func=add, args=(1, 2), connection=connection)
    assert job.get_status() == JobStatus.CREATED  # not in Redis yet: still "created", not an error
    queue.enqueue_job(job)
    assert job.get_status() == "queued" and job.is_queued


def test_create_sets_every_attribute_of_the_issue(connection):
    job = Job.create(func=add, args=[1, 2], kwargs={"z": 3}, ttl=43, connection=connection)
    tag, dot, rest = job.id.partition(".")  # its queue's tag, then 22 random characters
    assert tag == keys.queue_tag("default") and dot and len(rest) == 22 and rest.isalnum()
    assert job.func_name == "test_job.add"
    assert job.args == (1, 2) and type(job.args) is tuple
    assert job.kwargs == {"z": 3}
    assert job.result is None and job.exc_info is None
    assert job.meta == {}
    assert job.origin == "default"
    assert near_now(job.created_at)
    assert job.enqueued_at is None and job.started_at is None and job.ended_at is None
    assert job.ttl == 43
    assert job.result_ttl == DEFAULT_RESULT_TTL == 500
    assert job.failure_ttl == DEFAULT_FAILURE_TTL == 31_536_000
    assert job.timeout == DEFAULT_TIMEOUT == 180
    assert job.description == "test_job.add(1, 2, z=3)"


def test_create_seed_example():
    # the seed: `job = Job.create(func=say_hello, ttl=43)` (no Redis needed to build it)
    job = Job.create(func=record, ttl=43)
    assert job.ttl == 43 and job.func_name == "test_job.record"


def test_create_copies_its_inputs():
    args, kwargs, meta = [1], {"a": [2]}, {"m": 1}
    job = Job.create(func=add, args=args, kwargs=kwargs, meta=meta)
    args.append(9)
    kwargs["b"] = 1
    meta["n"] = 2
    assert job.args == (1,) and job.kwargs == {"a": [2]} and job.meta == {"m": 1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"args": "12"}, "args must be a list or tuple"),
        ({"args": {"x": 1}}, "args must be a list or tuple"),
        ({"args": 5}, "args must be a list or tuple"),
        ({"kwargs": [1]}, "kwargs must be a dict"),
        ({"kwargs": {1: 2}}, "string keys"),
        ({"ttl": 0}, "ttl must be"),
        ({"ttl": -5}, "ttl must be"),
        ({"ttl": 1.5}, "whole number"),
        ({"ttl": "10"}, "whole number"),
        ({"result_ttl": -2}, "result_ttl must be"),
        ({"failure_ttl": True}, "whole number"),
        ({"timeout": 0}, "timeout must be"),
        ({"meta": [1]}, "meta must be a dict"),
        ({"description": 5}, "description must be a string"),
        ({"origin": "no spaces"}, "queue name"),
        ({"connection": "redis://x"}, "redis.Redis"),
    ],
)
def test_create_refuses_bad_options(options, message):
    with pytest.raises(ConfigurationError, match=message):
        Job.create(func=add, **options)


def test_create_accepts_timedeltas_and_forever():
    job = Job.create(
        func=add, ttl=dt.timedelta(minutes=2), result_ttl=-1, failure_ttl=None, timeout=None
    )
    assert (job.ttl, job.result_ttl, job.failure_ttl, job.timeout) == (120, -1, -1, None)


def test_created_at_is_stored_apart_only_for_a_job_made_well_before_it_was_enqueued(connection, queue):
    early = Job.create(add, args=(1, 2))
    early.created_at -= dt.timedelta(seconds=90)  # as if made a while ago
    queue.enqueue_job(early)
    soon = queue.prepare_data(add, (1, 2))
    queue.enqueue_many([soon])
    fields = {job.id: stored(connection, job.id) for job in (early, soon)}
    assert FIELDS["created_at"] in fields[early.id] and FIELDS["created_at"] not in fields[soon.id]
    assert 89 < (Job.fetch(early.id).enqueued_at - Job.fetch(early.id).created_at).total_seconds() < 91
    assert soon.created_at == soon.enqueued_at  # as a fetch reads it back (to the millisecond)
    assert abs((Job.fetch(soon.id).created_at - soon.created_at).total_seconds()) < 0.001


# -- fetch --------------------------------------------------------------------------------------


def test_fetch_from_another_client_sees_every_attribute(redis_server, connection, queue):
    when = dt.datetime(2024, 2, 29, 12, 0, tzinfo=UTC)
    job = queue.enqueue(
        add, 1, (2, 3), when=when, ttl=600, result_ttl=60, failure_ttl=120, job_timeout=30,
        meta={"who": "me", "at": when}, description="adding",
    )
    other = redis_server.client()
    fetched = Job.fetch(job.id, connection=other)
    assert fetched == job and fetched is not job
    assert fetched.func_name == "test_job.add"
    assert fetched.args == (1, (2, 3)) and fetched.kwargs == {"when": when}
    assert fetched.result is None and fetched.exc_info is None
    assert fetched.meta == {"who": "me", "at": when}
    assert fetched.origin == "default"
    assert fetched.get_status() == "queued" and fetched.status == JobStatus.QUEUED
    assert (fetched.ttl, fetched.result_ttl, fetched.failure_ttl, fetched.timeout) == (600, 60, 120, 30)
    assert fetched.description == "adding"
    for name in ("created_at", "enqueued_at"):
        value = getattr(fetched, name)
        assert near_now(value), name
        assert abs((value - getattr(job, name)).total_seconds()) < 0.001, name
    assert fetched.created_at <= fetched.enqueued_at
    assert fetched.started_at is None and fetched.ended_at is None
    other.close()


def test_fetch_defaults_of_a_plain_enqueue(connection, queue):
    job = Job.fetch(queue.enqueue(add, 1, 2).id)
    assert (job.ttl, job.result_ttl, job.failure_ttl, job.timeout) == (None, 500, 31_536_000, 180)
    assert job.description == "test_job.add(1, 2)"
    assert job.meta == {}


def test_fetch_unknown_id_raises_no_such_job(connection):
    with pytest.raises(NoSuchJobError, match="no job 'nope'") as info:
        Job.fetch("nope")
    assert isinstance(info.value, LookupError) and isinstance(info.value, TaskitError)


def test_fetch_refuses_a_malformed_id(connection):
    with pytest.raises(InvalidJobIdError):
        Job.fetch("has space")


#: what reading jobs runs in Redis (lua/read.lua and the commands it calls): no writes
READS = {"evalsha", "type", "exists", "hgetall", "hget", "zscore", "get"}


def test_fetch_is_a_read(redis_server, connection, queue):
    job = queue.enqueue(add, 1, 2)
    before = stored(connection, job.id)
    with commands_run(redis_server) as ran:
        fetched = Job.fetch(job.id)
        assert fetched.result is None and fetched.get_status() == "queued"
    assert set(ran) <= READS, ran
    assert stored(connection, job.id) == before


def test_fetch_many_is_one_round_trip_with_none_for_missing(redis_server, connection, queue):
    jobs = [queue.enqueue(add, i, i) for i in range(5)]
    missing = [Job.create(add).id for _ in range(2)]  # ids of the queue's tag, never enqueued
    ids = [jobs[0].id, missing[0], jobs[1].id, jobs[2].id, missing[1], jobs[3].id, jobs[4].id]
    client, trips = counting_client(redis_server)
    with commands_run(redis_server) as ran:
        fetched = Job.fetch_many(ids, connection=client)
    assert trips.trips == 1
    assert ran["evalsha"] == 1 and set(ran) <= READS, ran  # one script reads them all (lua/read.lua)
    assert [j.id if j else None for j in fetched] == [
        jobs[0].id, None, jobs[1].id, jobs[2].id, None, jobs[3].id, jobs[4].id
    ]
    assert [j.args for j in fetched if j] == [(i, i) for i in range(5)]
    # an id that carries no tag (a custom one) costs one more round trip: its directory entry
    custom = queue.enqueue(add, 9, 9, job_id="custom-9")
    trips.reset()
    assert [j.id if j else None for j in Job.fetch_many([custom.id, "missing-3", jobs[0].id], connection=client)] == [
        custom.id, None, jobs[0].id
    ]
    assert trips.trips == 2
    client.close()


def test_fetch_many_seed_example(connection, queue):
    queue.enqueue(add, 1, 2, job_id="foo_id")
    queue.enqueue(record, 3, job_id="bar_id")
    jobs = Job.fetch_many(["foo_id", "bar_id"], connection=connection)
    assert [(job.id, job.func_name) for job in jobs] == [("foo_id", "test_job.add"), ("bar_id", "test_job.record")]


def test_fetch_many_edge_cases(redis_server, connection):
    client, trips = counting_client(redis_server)
    assert Job.fetch_many([], connection=client) == []
    assert trips.trips == 0
    assert Job.fetch_many(iter(["nope"]), connection=client) == [None]
    assert trips.trips == 1
    with pytest.raises(ConfigurationError, match="list of job ids"):
        Job.fetch_many("abc", connection=client)
    with pytest.raises(InvalidJobIdError):
        Job.fetch_many(["ok", "not ok"], connection=client)
    client.close()


# -- status and lifecycle ------------------------------------------------------------------------


def flags(job: Job) -> dict[str, bool]:
    return {
        name: getattr(job, f"is_{name}")
        for name in ("queued", "scheduled", "started", "finished", "failed", "canceled")
    }


def only(name: str) -> dict[str, bool]:
    return {n: n == name for n in ("queued", "scheduled", "started", "finished", "failed", "canceled")}


def test_lifecycle_of_a_finished_job(connection, queue):
    job = queue.enqueue(add, 2, 3)
    assert job.get_status() == "queued" and flags(job) == only("queued")
    assert near_now(job.enqueued_at)
    assert run_all(queue) == 1
    assert job.get_status() == "finished" and flags(job) == only("finished")
    assert job.result == 5  # read from Redis on first use: this object was built before the run
    job.refresh()
    assert job.result == 5 and job.exc_info is None
    assert job.created_at <= job.enqueued_at <= job.started_at <= job.ended_at
    assert all(near_now(t) for t in (job.created_at, job.enqueued_at, job.started_at, job.ended_at))


def test_lifecycle_of_a_failed_job(connection, queue):
    job = queue.enqueue(fail, "it broke")
    run_all(queue)
    fetched = Job.fetch(job.id)
    assert fetched.get_status() == "failed" and flags(fetched) == only("failed")
    assert "ValueError: it broke" in fetched.exc_info
    assert "Traceback" in fetched.exc_info
    assert fetched.result is None
    assert near_now(fetched.ended_at)


def test_started_status_seen_from_inside_the_job(connection, queue):
    job = queue.enqueue(inside)
    run_all(queue)
    assert Job.fetch(job.id).result == {
        "status": "started", "is_started": True, "is_queued": False, "started": True, "ended": False,
    }


def test_scheduled_status(connection, queue):
    job = queue.enqueue_in(dt.timedelta(hours=1), add, 1, 2)
    assert job.get_status() == "scheduled" and flags(job) == only("scheduled")
    assert run_all(queue) == 0
    assert Job.fetch(job.id).is_scheduled


def test_get_status_reads_fresh_but_status_is_the_loaded_one(redis_server, connection, queue):
    job = queue.enqueue(add, 1, 2)
    Job.fetch(job.id, connection=redis_server.client()).cancel()
    assert job.status == JobStatus.QUEUED  # as loaded
    assert job.get_status(refresh=False) == "queued"
    assert job.get_status() == "canceled"
    assert job.status == JobStatus.CANCELED


def test_get_status_of_a_deleted_job_raises(connection, queue):
    job = queue.enqueue(add, 1, 2)
    job.delete()
    with pytest.raises(NoSuchJobError):
        job.get_status()


def test_refresh_reloads_every_field(redis_server, connection, queue):
    job = queue.enqueue(add, 20, 22)
    stale = Job.fetch(job.id, connection=redis_server.client())
    run_all(queue)
    assert stale.status == JobStatus.QUEUED and stale.ended_at is None
    stale.refresh()
    assert stale.status == JobStatus.FINISHED and stale.result == 42
    assert stale.started_at is not None and stale.ended_at is not None


def test_refresh_resets_what_a_field_gone_since_held(connection, queue):
    # (loading reads only the fields a record has: a refresh must reset the rest)
    job = queue.enqueue(add, 1, 2, ttl=60, timeout=5, description="d", meta={"k": 1})
    for name in ("ttl", "timeout", "description", "meta", "args"):
        delete_field(connection, job.id, FIELDS[name])
    job.refresh()
    assert (job.ttl, job.timeout, job.meta, job.args, job.kwargs) == (None, DEFAULT_TIMEOUT, {}, (), {})
    assert job.description == f"{job.func_name}()"


def test_refresh_of_a_deleted_job_raises(connection, queue):
    job = queue.enqueue(add, 1, 2)
    Job.fetch(job.id).delete()
    with pytest.raises(NoSuchJobError):
        job.refresh()


# -- meta -------------------------------------------------------------------------------------------


def test_save_meta_writes_only_meta(redis_server, connection, queue):
    job = queue.enqueue(add, 1, 2, description="original")
    before = stored(connection, job.id)
    job.meta["progress"] = 0.5
    job.meta["when"] = dt.datetime(2024, 1, 1, tzinfo=UTC)
    job.timeout = 1  # local changes to other attributes must not be written
    job.origin = "elsewhere"
    job.func_name = "os.system"
    with commands_run(redis_server) as ran:
        job.save_meta()
    # one script: its keys checked (TYPE), no hash of an ended job (EXISTS), its record and
    # state read (HGET), meta written into its state entry (HSET); its record is untouched
    record = connection.hget(bucket(connection, job.id), job.id)
    assert ran == {"evalsha": 1, "type": 2, "exists": 1, "hget": 2, "hset": 1}, ran
    after = stored(connection, job.id)
    assert set(after) == set(before) | {FIELDS["meta"]}
    assert {k: v for k, v in after.items() if k != FIELDS["meta"]} == before
    assert connection.hget(bucket(connection, job.id), job.id) == record
    with commands_run(redis_server) as ran:
        job.save_meta()
    assert ran == {"evalsha": 1, "type": 2, "exists": 1, "hget": 2, "hset": 1}, ran
    assert ttl(connection, job.id) == -1
    other = redis_server.client()
    assert Job.fetch(job.id, connection=other).meta == {"progress": 0.5, "when": dt.datetime(2024, 1, 1, tzinfo=UTC)}
    other.close()


def test_save_meta_from_a_stale_job_does_not_undo_other_changes(redis_server, connection, queue):
    job = queue.enqueue(add, 1, 2)
    stale = Job.fetch(job.id, connection=redis_server.client())
    job.cancel()
    stale.meta["note"] = "late"
    stale.save_meta()
    fresh = Job.fetch(job.id)
    assert fresh.get_status() == "canceled" and fresh.meta == {"note": "late"}
    assert queue.count == 0


def test_save_meta_seed_example(connection, queue):
    def_job = queue.enqueue(sample_meta_task)
    run_all(queue)
    job = Job.fetch(def_job.id)
    assert job.meta["handled_by"] == "test-host"
    assert job.result == 3


def sample_meta_task():
    job = get_current_job()
    job.meta["handled_by"] = "test-host"
    job.save_meta()
    return 1 + 2


def test_save_meta_refuses_unserializable_meta_and_writes_nothing(connection, queue):
    job = queue.enqueue(add, 1, 2, meta={"ok": 1})
    before = stored(connection, job.id)
    job.meta["bad"] = object()
    with pytest.raises(SerializationError, match=r"meta\['bad'\] is an object"):
        job.save_meta()
    assert stored(connection, job.id) == before


def test_save_meta_of_a_deleted_job_raises_and_does_not_resurrect_it(connection, queue):
    job = queue.enqueue(add, 1, 2)
    job.delete()
    job.meta["x"] = 1
    with pytest.raises(NoSuchJobError):
        job.save_meta()
    assert not exists(connection, job.id)


# -- cancel and delete ----------------------------------------------------------------------------


def test_cancel_a_queued_job(connection, queue):
    job = queue.enqueue(record, "never")
    keep = queue.enqueue(record, "kept")
    job.cancel()
    assert job.get_status() == "canceled" and job.is_canceled
    assert queue.job_ids == [keep.id]
    assert job.id in queue.canceled_job_registry
    assert near_now(Job.fetch(job.id).ended_at)
    assert 0 < ttl(connection, job.id) <= DEFAULT_FAILURE_TTL
    run_all(queue)
    assert RAN == ["kept"]


def test_a_canceled_job_can_be_requeued(connection, queue):
    job = queue.enqueue(record, "after all")
    job.cancel()
    queue.canceled_job_registry.requeue(job)
    assert job.get_status() == "queued" and queue.job_ids == [job.id]
    assert ttl(connection, job.id) == -1  # no longer on its way out
    run_all(queue)
    assert RAN == ["after all"]


def test_cancel_a_scheduled_job(connection, queue):
    job = queue.enqueue_in(dt.timedelta(seconds=3600), record, "never")
    job.cancel()
    assert job.get_status() == "canceled"
    assert job.id not in queue.scheduled_job_registry
    assert connection.zcard(keys.of_queue("default").scheduled) == 0


def test_cancel_a_running_job_stops_it(connection, queue):
    job = queue.enqueue(cancel_self)
    started = time.monotonic()
    run_all(queue)
    assert time.monotonic() - started < 8, "stopped by the cancel, not by the end of its sleep"
    job.refresh()
    assert job.get_status() == "canceled" and job.id in queue.canceled_job_registry
    assert job.exc_info.rstrip().endswith("JobCanceledError: canceled while it ran: changed my mind")
    assert job.result is None and job.retries == 0


def test_cancel_a_finished_job_is_refused(connection, queue):
    job = queue.enqueue(add, 1, 2)
    run_all(queue)
    with pytest.raises(InvalidOperationError, match="finished"):
        job.cancel()
    assert job.get_status() == "finished" and job.id in queue.finished_job_registry


def test_cancel_twice_and_cancel_unknown(connection, queue):
    job = queue.enqueue(add, 1, 2)
    job.cancel()
    with pytest.raises(InvalidOperationError, match="canceled"):
        job.cancel()
    job.delete()
    with pytest.raises(NoSuchJobError):
        job.cancel()


def test_delete_a_queued_job(connection, queue):
    job = queue.enqueue(record, "never")
    job.delete()
    assert not exists(connection, job.id)
    assert queue.count == 0 and queue.job_ids == []
    with pytest.raises(NoSuchJobError):
        Job.fetch(job.id)
    assert run_all(queue) == 0 and RAN == []


@pytest.mark.parametrize("kind", ["finished", "failed", "canceled", "scheduled"])
def test_delete_removes_the_job_from_its_registry(connection, queue, kind):
    if kind == "scheduled":
        job = queue.enqueue_in(3600, add, 1, 2)
    elif kind == "canceled":
        job = queue.enqueue(add, 1, 2)
        job.cancel()
    else:
        job = queue.enqueue(add, 1, 2) if kind == "finished" else queue.enqueue(fail)
        run_all(queue)
    registry = getattr(queue, f"{kind}_job_registry")
    assert job.id in registry
    job.delete()
    assert connection.zscore(keys.of_queue("default").registry(kind), job.id) is None
    assert not exists(connection, job.id)


# -- custom ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id", ["a", "order-42", "user@example.com", "v1.2:retry_3", "A" * 128, "0", uuid.uuid4().hex, "-._:@"]
)
def test_valid_custom_ids(connection, queue, job_id):
    job = queue.enqueue(add, 1, 2, job_id=job_id)
    assert job.id == job_id
    assert Job.fetch(job_id).id == job_id
    assert queue.job_ids == [job_id]


@pytest.mark.parametrize(
    "job_id",
    ["", "A" * 129, "has space", "slash/y", "tab\there", "new\nline", "trailing\n", "été", "star*", "a{b}", "'q'"],
)
def test_invalid_custom_ids_are_refused_before_redis(connection, queue, job_id):
    with pytest.raises(InvalidJobIdError, match="is invalid: use 1 to 128") as info:
        queue.enqueue(add, 1, 2, job_id=job_id)
    assert isinstance(info.value, ConfigurationError) and isinstance(info.value, ValueError)
    assert repr(job_id)[:40] in str(info.value)
    with pytest.raises(InvalidJobIdError):
        Job.create(func=add, id=job_id)
    assert connection.dbsize() == 0


DOTS = [".", "..", "...", "." * 128]


@pytest.mark.parametrize("job_id", DOTS)
def test_ids_made_only_of_dots_are_refused_at_every_entry_point(connection, queue, job_id):
    """/jobs/.. is / to a browser or a proxy: such a job could never be shown (issue 11)."""
    import sample_tasks

    from taskit.registry import FailedJobRegistry

    calls = {
        "enqueue": lambda: queue.enqueue(add, 1, 2, job_id=job_id),
        "enqueue_in": lambda: queue.enqueue_in(60, add, 1, 2, job_id=job_id),
        "apply_async": lambda: sample_tasks.add.apply_async((1, 2), job_id=job_id),
        "Job.create": lambda: Job.create(func=add, id=job_id),
        "Job.fetch": lambda: Job.fetch(job_id),
        "Job.fetch_many": lambda: Job.fetch_many(["fine", job_id]),
        "Queue.fetch_job": lambda: queue.fetch_job(job_id),
        "requeue": lambda: FailedJobRegistry(connection=connection).requeue(job_id),
        "Queue": lambda: Queue(job_id),
        "Worker": lambda: Worker([queue], name=job_id),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidJobIdError, match="made only of dots") as info:
            call()
        assert repr(job_id)[:40] in str(info.value), name
    assert connection.dbsize() == 0
    for fine in (".a", "a.", "a..b"):
        assert queue.enqueue(add, 1, 2, job_id=fine).id == Job.fetch(fine).id == fine


def test_the_cli_refuses_ids_made_only_of_dots(connection, cli_env):
    from test_cli import one_error_line, taskit

    for args in (["job", ".."], ["enqueue", "sample_tasks.add", "1", "2", "--job-id", ".."],
                 ["worker", "sample_tasks", "--burst", "-q", ".."]):
        assert "made only of dots" in one_error_line(taskit(cli_env, *args)), args
    for args in (["cancel", ".."], ["requeue", "."]):  # each id named on its own line, the others still done
        done = taskit(cli_env, *args)
        assert done.returncode == 1 and "made only of dots" in done.stderr and "Traceback" not in done.stderr, args
    assert connection.dbsize() == 0


@pytest.mark.parametrize("job_id", [42, b"bytes", 1.5, ["x"]])
def test_non_string_ids_are_refused(connection, queue, job_id):
    with pytest.raises(InvalidJobIdError, match="must be a string"):
        queue.enqueue(add, 1, 2, job_id=job_id)
    assert connection.dbsize() == 0


# -- ttl, result_ttl, failure_ttl ------------------------------------------------------------------------


def test_ttl_sets_an_expiry_only_until_the_job_starts(connection, queue):
    job = queue.enqueue(add, 1, 2, ttl=30)
    assert 0 < ttl(connection, job.id) <= 30
    no_ttl = queue.enqueue(add, 1, 2)
    assert ttl(connection, no_ttl.id) == -1 and stored(connection, no_ttl.id)  # no expiry
    run_all(queue)
    # started: the ttl no longer applies; the finished record lives for result_ttl
    assert 30 < ttl(connection, job.id) <= DEFAULT_RESULT_TTL


def stop_the_worker():
    os.kill(os.getpid(), signal.SIGTERM)  # an in-process worker: it finishes this job, then stops


def test_a_job_claimed_but_handed_back_unrun_gets_its_ttl_again(connection, queue):
    queue.enqueue(add, 0, 0)  # a short job first: the next claim takes the two below together
    queue.enqueue(stop_the_worker)
    job = queue.enqueue(add, 1, 2, ttl=30)
    assert run_all(queue) == 2
    assert Job.fetch(job.id).get_status() == JobStatus.QUEUED and queue.job_ids == [job.id]
    assert Job.fetch(job.id).attempts == 0  # handed back, not run
    assert 0 < ttl(connection, job.id) <= 30


def nap(seconds):
    time.sleep(seconds)
    return "woke"


def test_a_started_job_outlives_its_ttl(connection, queue):
    job = queue.enqueue(nap, 1.3, ttl=1)  # runs longer than its ttl: the ttl stops at the start
    assert Worker([queue]).work(burst=True) == 1
    job.refresh()
    assert job.get_status() == "finished" and job.result == "woke"


def test_a_job_past_its_ttl_is_never_run(connection, queue):
    job = queue.enqueue(record, "too late", ttl=1)
    assert 0 < ttl(connection, job.id) <= 1
    deadline = time.monotonic() + 5
    while exists(connection, job.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not exists(connection, job.id), "the job did not expire within 5 s"
    assert queue.jobs == []
    assert run_all(queue) == 0
    assert RAN == []
    assert queue.count == 0
    for kind in ("started", "finished", "failed"):
        assert connection.zcard(keys.of_queue("default").registry(kind)) == 0
    with pytest.raises(NoSuchJobError):
        Job.fetch(job.id)


def test_result_ttl(connection, queue):
    default = queue.enqueue(add, 1, 1)
    short = queue.enqueue(add, 1, 2, result_ttl=60)
    forever = queue.enqueue(add, 1, 3, result_ttl=-1)
    dropped = queue.enqueue(add, 1, 4, result_ttl=0)
    assert run_all(queue) == 4
    assert 60 < ttl(connection, default.id) <= 500
    assert 0 < ttl(connection, short.id) <= 60
    assert ttl(connection, forever.id) == -1 and Job.fetch(forever.id).result == 4
    assert not exists(connection, dropped.id)
    assert queue.finished_job_registry.get_expiration_time(forever) is None


def test_failure_ttl(connection, queue):
    default = queue.enqueue(fail)
    short = queue.enqueue(fail, failure_ttl=300)
    run_all(queue)
    assert 300 < ttl(connection, default.id) <= DEFAULT_FAILURE_TTL
    assert 0 < ttl(connection, short.id) <= 300
    assert {default.id, short.id} == set(queue.failed_job_registry.get_job_ids())


# -- corrupt records ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "garbage"),
    [
        ("meta", b"\xc1not msgpack"),
        ("status", b"exploded"),
        ("created_at", b"yesterday"),
        ("enqueued_at", b"\xff\xfe"),
        ("ttl", b"ten"),
        ("timeout", b"1.5"),
        ("result_ttl", b""),
        ("description", b"\xff\xfe"),
    ],
)
def test_fetch_of_a_corrupt_field_names_the_field(connection, queue, field, garbage):
    job = queue.enqueue(add, 1, 2, ttl=60, description="d")
    set_fields(connection, job.id, {FIELDS[field]: garbage})
    with pytest.raises(SerializationError, match=f"job {job.id} is corrupt: field '{field}' is unreadable"):
        Job.fetch(job.id)


def test_fetch_of_a_corrupt_result_names_the_field(connection, queue):
    job = queue.enqueue(add, 1, 2)
    run_all(queue)
    set_fields(connection, job.id, {FIELDS["result"]: b"\xc1"})
    with pytest.raises(SerializationError, match="field 'result' is unreadable"):
        Job.fetch(job.id)


@pytest.mark.parametrize(("field", "ended"), [("func", False), ("func", True), ("status", True)])
def test_fetch_of_a_record_missing_a_field_says_so(connection, queue, field, ended):
    # (a job not ended always has a status: 'queued' unless its state says otherwise)
    job = queue.enqueue(add, 1, 2)
    if ended:
        run_all(queue)
    delete_field(connection, job.id, FIELDS[field])
    with pytest.raises(SerializationError, match=f"field '{field}' is missing"):
        Job.fetch(job.id)


def test_corrupt_args_are_named_when_read(connection, queue):
    job = queue.enqueue(add, 1, 2)
    set_fields(connection, job.id, {FIELDS["args"]: b"\x93garbage"})
    fetched = Job.fetch(job.id)  # args are unpacked on first use
    with pytest.raises(SerializationError, match=f"job {job.id} is corrupt: field 'args' is unreadable"):
        _ = fetched.args
    with pytest.raises(SerializationError, match="field 'args'"):
        _ = fetched.kwargs
    assert fetched.description == "test_job.add(<unreadable arguments>)"


def test_args_that_are_valid_msgpack_but_not_a_call_are_corrupt(connection, queue):
    job = queue.enqueue(add, 1, 2)
    set_fields(connection, job.id, {FIELDS["args"]: taskit.serialization.dumps(42)})
    with pytest.raises(SerializationError, match="field 'args' is unreadable"):
        _ = Job.fetch(job.id).args


def test_a_key_of_the_wrong_type_is_a_storage_error(connection):
    tag = keys.queue_tag("default")
    connection.set(keys.directory("wrong"), tag)
    connection.set(keys.job(tag, "wrong"), "a string, not a hash")
    with pytest.raises(StorageError, match="WRONGTYPE"):
        Job.fetch("wrong")


# -- identity ------------------------------------------------------------------------------------------------


def test_jobs_compare_by_id(connection, queue):
    job = queue.enqueue(add, 1, 2)
    fetched = Job.fetch(job.id)
    assert fetched == job and hash(fetched) == hash(job) and len({job, fetched}) == 1
    assert job != Job.create(func=add)
    assert job.id in repr(job) and "test_job.add" in repr(job)


@taskit.task(name="job_create_options", timeout=7, result_ttl=60, ttl=30)
def with_options():
    return 1


def test_job_create_takes_the_tasks_own_options(connection):
    job = Job.create(with_options)
    assert (job.timeout, job.result_ttl, job.ttl, job.failure_ttl) == (7, 60, 30, DEFAULT_FAILURE_TTL)
    job = Job.create(with_options, timeout=9, result_ttl=DEFAULT_RESULT_TTL)  # given wins, even a default
    assert (job.timeout, job.result_ttl, job.ttl) == (9, DEFAULT_RESULT_TTL, 30)


def test_exc_info_and_result_of_an_enqueued_job_read_redis_until_it_ends(connection):
    failing = Queue().enqueue(divide, 1, 0)
    working = Queue().enqueue(divide, 6, 3)
    assert failing.exc_info is None and working.result is None  # not run yet
    taskit.Worker(["default"]).work(burst=True)
    assert "ZeroDivisionError" in failing.exc_info  # no refresh() needed, as in RQ
    assert working.result == 2


def divide(x, y):
    return x / y


def test_a_refresh_that_finds_a_corrupt_field_leaves_the_job_as_it_was(connection):
    """All or none: a refresh that raises SerializationError leaves the held Job as it was
    (else a later save_meta() would write an emptied meta over the stored one)."""
    from taskit.storage.keys import FIELDS

    queue = Queue("q", connection=connection)
    job = queue.enqueue(add, 1, 2, meta={"k": 1}, ttl=600)
    set_fields(connection, job.id, {FIELDS["ttl"]: "not a number"})
    with pytest.raises(SerializationError):
        job.refresh()
    assert job.meta == {"k": 1} and job.ttl == 600
