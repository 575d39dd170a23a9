"""One bad job never stops a worker (issue 11): whatever goes wrong with a job's data fails
that job, with the reason in its exc_info, and the worker goes on with the next one.

The jobs are made through the public API where it lets them through, and written into
Redis by hand where it does not (anyone who can write to Redis can write a job). Workers
are real `taskit worker` processes: before these fixes, each of these jobs killed one.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import fault_tasks
import hostile_tasks
import msgpack
import pytest
import redis
import sample_tasks
from records import field, inflight_keys, own_key, set_fields, write_job
from test_cli import one_error_line, taskit
from test_faults import WorkerProcess, assert_nothing_held

from taskit import (
    Job,
    JobStatus,
    Queue,
    SerializationError,
    Worker,
    display,
    functions,
    serialization,
)
from taskit.retry import _resolve_exception
from taskit.storage import keys


def lists(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def tuples_and_lists(depth: int) -> object:
    value: object = 0
    for i in range(depth):
        value = (value,) if i % 2 else [value]
    return value


def run_hostile_worker(cli_env: dict[str, str], tmp_path: Path, *args: str) -> str:
    """`taskit worker fault_tasks hostile_tasks --burst ARGS`: it must exit 0 without a traceback."""
    worker = WorkerProcess(cli_env, tmp_path, "hostile_tasks", "--burst", *args)
    code = worker.wait(timeout=120)
    log = worker.output()
    assert code == 0, log
    assert "Traceback" not in log, log
    return log


def failure(job_id: str) -> str:
    job = Job.fetch(job_id)
    assert job.get_status() == JobStatus.FAILED
    assert job.id in Queue(job.origin).failed_job_registry
    assert job.exc_info is not None
    return job.exc_info


# -- data that reaches the worker through the public API --------------------------------------


def test_arguments_nested_1000_deep_run_once_under_a_supervisor(connection, cli_env, tmp_path):
    side_effects = tmp_path / "side-effects"
    deep = hostile_tasks.swallow.delay(lists(1000))  # repr() of it raises RecursionError
    after = fault_tasks.work.delay(1)
    run_hostile_worker(dict(cli_env, TASKIT_SIDE_EFFECTS=str(side_effects)), tmp_path, "-c", "1")
    job = Job.fetch(deep.id)
    assert (job.get_status(), job.result, job.attempts, job.recoveries) == (JobStatus.FINISHED, 1, 1, 0)
    assert side_effects.read_text() == "ran\n"  # once: the worker did not die after running it
    assert Job.fetch(after.id).result == 1
    assert_nothing_held(connection)


def test_arguments_nested_too_deep_for_a_reader_are_refused_at_delay(connection):
    # 400 levels of tuples in lists: a 1 KB blob whose unpacking overflowed the C stack
    # (a segfault); 1,800 levels: RecursionError out of .delay()
    for depth in (400, 1800):
        with pytest.raises(SerializationError, match="nested more than 16 deep"):
            hostile_tasks.swallow.delay(tuples_and_lists(depth))
    assert Queue().count == 0
    fine = hostile_tasks.swallow.delay(tuples_and_lists(2 * serialization.MAX_NESTING))  # the limit itself is fine
    assert Job.fetch(fine.id).args == (tuples_and_lists(2 * serialization.MAX_NESTING),)


def test_a_name_that_walks_through_a_proxy_fails_its_job(connection, cli_env, tmp_path):
    q = Queue()
    through = q.enqueue("hostile_tasks.current_app.send_mail", 1)  # getattr raised RuntimeError
    proxy = q.enqueue("hostile_tasks.current_app", 1)
    after = fault_tasks.work.delay(2)
    run_hostile_worker(cli_env, tmp_path)
    assert "TaskNotAllowedError" in failure(through.id) and "defines no function 'current_app.send_mail'" in failure(through.id)
    assert "defines no function 'current_app'" in failure(proxy.id)
    assert Job.fetch(after.id).result == 2


# -- records written by hand ----------------------------------------------------------------------


def nested_stop_policy(levels: int) -> bytes:
    """A stored retry policy {'stop': stop_any(stop_any(...))} `levels` deep, a tuple every 10
    levels so that msgpack's own nesting limit does not refuse it first."""
    blob = msgpack.packb(["stop_never", None])
    for i in range(levels):
        inner = b"\x91" + blob
        if i % 10 == 0:
            inner = msgpack.packb(msgpack.ExtType(7, inner))
        blob = b"\x92" + msgpack.packb("stop_any") + inner
    return b"\x81" + msgpack.packb("stop") + blob


@pytest.mark.parametrize("levels", [40, 1000])
def test_a_deeply_nested_retry_policy_fails_its_job_and_is_named_when_read(connection, cli_env, tmp_path, levels):
    job = hostile_tasks.swallow.delay(1)
    set_fields(connection, job.id, {keys.Field.RETRY: nested_stop_policy(levels)})
    after = fault_tasks.work.delay(3)
    run_hostile_worker(cli_env, tmp_path)
    with pytest.raises(SerializationError, match=f"job {job.id} is corrupt: field 'retry' is unreadable"):
        Job.fetch(job.id)
    assert field(connection, job.id, keys.Field.STATUS) == b"failed"
    assert "field 'retry' is unreadable" in field(connection, job.id, keys.Field.EXC_INFO).decode()
    assert job.id in Queue().failed_job_registry
    assert Job.fetch(after.id).result == 3
    line = one_error_line(taskit(cli_env, "requeue", job.id))
    assert f"job {job.id} is corrupt: field 'retry' is unreadable" in line


def test_keyword_arguments_stored_as_a_list_fail_their_job(connection, cli_env, tmp_path):
    job = hostile_tasks.swallow.delay(1)
    set_fields(connection, job.id, {keys.Field.ARGS: msgpack.packb([[1], [2]])})
    bad_key = hostile_tasks.swallow.delay(1)
    set_fields(connection, bad_key.id, {keys.Field.ARGS: msgpack.packb([[], {1: 2}])})
    too_deep = hostile_tasks.swallow.delay(1)
    blob = msgpack.packb(0)
    for _ in range(400):  # tuples in tuples: used to crash the reader's process (no Python error at all)
        blob = msgpack.packb(msgpack.ExtType(7, b"\x91" + blob))
    set_fields(connection, too_deep.id, {keys.Field.ARGS: blob})
    after = fault_tasks.work.delay(4)
    run_hostile_worker(cli_env, tmp_path)
    assert "the arguments are not [args list, kwargs dict] but a list of 2: [list, list]" in failure(job.id)
    assert "a key that is not a string" in failure(bad_key.id)
    assert "nested more than 16 deep" in failure(too_deep.id)
    assert Job.fetch(after.id).result == 4
    for broken in (job, bad_key, too_deep):
        with pytest.raises(SerializationError, match="field 'args' is unreadable"):
            _ = Job.fetch(broken.id).args


def test_a_job_id_that_is_not_utf8_fails_that_job(connection, cli_env, tmp_path):
    raw_id = b"\xff\xfe-not-utf8"
    write_job(connection, raw_id, {keys.Field.FUNC: "hostile_tasks.swallow", keys.Field.STATUS: "queued"})
    connection.rpush(keys.of_queue("default").queue, raw_id)
    after = fault_tasks.work.delay(5)
    log = run_hostile_worker(cli_env, tmp_path)
    assert connection.hget(own_key(raw_id), keys.Field.STATUS) == b"failed"
    reason = connection.hget(own_key(raw_id), keys.Field.EXC_INFO).decode()
    assert "SerializationError" in reason and "not an id taskit writes" in reason
    assert connection.zscore(keys.of_queue("default").registry("failed"), raw_id) is not None
    assert r"refused job '\udcff\udcfe-not-utf8'" in log
    assert Job.fetch(after.id).result == 5
    assert connection.zcard(keys.of_queue("default").registry("started")) == connection.llen(keys.of_queue("default").queue) == 0
    assert all(connection.llen(key) == 0 for key in inflight_keys(connection))


# -- the log line -------------------------------------------------------------------------------------


def test_a_log_line_shows_a_bounded_part_of_huge_arguments(connection):
    big = "x" * (20 << 20)
    job = Job.create(hostile_tasks.swallow, (big, b"y" * (20 << 20)), {"key": [big, big], "deep": lists(900)})
    tracemalloc.start()
    try:
        text = display.call(job)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(text) <= display.LIMIT and text.startswith("hostile_tasks.swallow('xxx")
    assert peak < 100_000, f"showing 80 characters took {peak} bytes"
    assert display.shown(lists(5000)) == "[[[[...]]]]"
    assert display.shown({i: i for i in range(10**6)}) == "{0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, ...}"
    assert display.shown((1,)) == "(1,)" and display.shown(set()) == "set()" and display.shown(10**5000) == "<int of 16610 bits>"


# -- names are looked up without running code ------------------------------------------------------


def test_job_names_set_off_no_module_getattr_no_descriptor_and_no_import(connection):
    q = Queue()
    imported_before = "xmlrpc.client" in sys.modules
    hostile_tasks.LAZY_LOOKUPS.clear()
    refused = {
        "hostile_tasks.xmlrpc.client.ServerProxy": "defines no function 'xmlrpc.client.ServerProxy'",
        "hostile_tasks.concurrent.futures.ProcessPoolExecutor": "defines no function",
        "hostile_tasks.Holder": "defines no function 'Holder'",  # a class: calling it is not calling a function
        "hostile_tasks.Holder.trap": "defines no function",
        "hostile_tasks.Holder.prop": "defines no function",
        "hostile_tasks.current_app.run": "defines no function",
        "hostile_tasks.importlib.import_module": "defines no function",
    }
    jobs = {name: q.enqueue(name, "os") for name in refused}
    runs = {
        "hostile_tasks.plain": (q.enqueue("hostile_tasks.plain", 1), 2),
        "hostile_tasks.Holder.double": (q.enqueue("hostile_tasks.Holder.double", 4), 8),
        "hostile_tasks.Holder.name_of": (q.enqueue("hostile_tasks.Holder.name_of"), "Holder"),
    }
    Worker([q], modules=("hostile_tasks",)).work(burst=True)
    for name, reason in refused.items():
        text = failure(jobs[name].id)
        assert "TaskNotAllowedError" in text and reason in text, (name, text)
    for name, (job, result) in runs.items():
        assert Job.fetch(job.id).result == result, name
    assert hostile_tasks.LAZY_LOOKUPS == [] and hostile_tasks.DESCRIPTOR_RUNS == []
    assert ("xmlrpc.client" in sys.modules) == imported_before
    assert _resolve_exception("hostile_tasks.json.JSONDecodeError") is None  # retry policies too
    assert hostile_tasks.LAZY_LOOKUPS == []
    assert functions.lookup("hostile_tasks.Holder.double") is not None


def test_the_bad_jobs_above_are_refused_in_one_line_each(connection: redis.Redis, cli_env, tmp_path):
    q = Queue()
    q.enqueue("hostile_tasks.current_app.send_mail", "x" * 10_000)
    q.enqueue("hostile_tasks." + "a" * 100_000, 1)
    log = run_hostile_worker(cli_env, tmp_path)
    refusals = [line for line in log.splitlines() if "refused job" in line]
    assert len(refusals) == 2 and all(len(line) < 500 for line in refusals), refusals


def test_a_log_line_shows_control_characters_of_job_data_as_escapes(connection, caplog):
    """An error message with an escape sequence or a newline: the worker's log line neither
    sends it to the terminal that shows the log nor splits into a forged second line."""
    queue = Queue(connection=connection)
    queue.enqueue(sample_tasks.fail, "\x1b]0;retitled\x07\n2026-01-01 00:00:00 INFO taskit.worker: all good")
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    (line,) = [r.getMessage() for r in caplog.records if "failed: ValueError" in r.getMessage()]
    assert "\x1b" not in line and "\n" not in line and "\\x1b]0;retitled\\x07\\n2026-01-01" in line
