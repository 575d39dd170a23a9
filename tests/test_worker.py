"""The worker (issue 3): status flow, results and failures, the job context, timeouts,
job.wait(), and which functions a worker agrees to run.

Workers run in-process (`Worker(...).work(burst=True)`) and as real `taskit worker`
subprocesses. Everything talks to the private redis-server of conftest.py.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sample_tasks
from conftest import taskit_command
from records import exists, field, key, set_fields, stored, ttl, write_job

import taskit
from taskit import Job, JobStatus, Queue, Worker, get_current_job, task
from taskit.exceptions import (
    JobFailedError,
    NoSuchJobError,
    TaskitError,
    WaitTimeoutError,
)
from taskit.storage import keys

DAY = 86_400


def work(queue: Queue, **kwargs: object) -> int:
    """Run an in-process burst worker that was given the sample_tasks module."""
    return Worker([queue], modules=("sample_tasks",), **kwargs).work(burst=True)  # type: ignore[arg-type]


def run_worker(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`taskit worker ARGS` as a subprocess; fails the test if it does not exit cleanly."""
    proc = subprocess.run(
        taskit_command("worker", *args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@contextlib.contextmanager
def worker_process(env: dict[str, str], tmp_path: Path, name: str) -> Iterator[subprocess.Popen[str]]:
    """`taskit worker sample_tasks -n NAME` in the background; SIGTERM (and a clean exit) after."""
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(taskit_command("worker", "sample_tasks", "-n", name), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
        assert "Traceback" not in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def background_worker(connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A long-running `taskit worker sample_tasks` subprocess, registered before the test runs."""
    with worker_process(cli_env, tmp_path, "bg-worker") as proc:
        deadline = time.monotonic() + 20
        while connection.zscore(keys.WORKERS, "bg-worker") is None:  # registered: it is about to claim
            assert proc.poll() is None, (tmp_path / "bg-worker.log").read_text()
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.02)
        yield proc


def poll(predicate, timeout: float = 10.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Call `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)


# functions defined in this module and enqueued by this process: an in-process worker runs them
def double(x: int) -> int:
    return x * 2


def current_job_id() -> str | None:
    job = get_current_job()
    return None if job is None else job.id


@task(timeout=1)
def sleepy_task(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# -- status flow -------------------------------------------------------------------------


def test_status_flow_queued_started_finished(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.job_state)
    assert job.get_status() == JobStatus.QUEUED
    fetched = Job.fetch(job.id)
    assert fetched.started_at is None and fetched.ended_at is None and fetched.worker_name is None
    assert fetched.enqueued_at is not None

    Worker([queue], name="flow-worker").work(burst=True)

    job = Job.fetch(job.id)
    inside = job.result
    assert inside["status"] == "started"  # what Redis said while the job ran
    assert inside["worker"] == "flow-worker"
    assert inside["started_at"] is not None and inside["ended_at"] is None
    assert job.get_status() == JobStatus.FINISHED
    assert job.worker_name == "flow-worker"
    assert job.enqueued_at <= job.started_at <= job.ended_at
    assert job.started_at.timestamp() == pytest.approx(inside["started_at"])
    assert job.exc_info is None


def test_status_flow_to_failed(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail, "kaput")
    Worker([queue], name="fail-worker").work(burst=True)

    job = Job.fetch(job.id)
    assert job.get_status() == JobStatus.FAILED
    assert job.is_failed and not job.is_finished
    assert job.worker_name == "fail-worker"
    assert job.started_at is not None and job.ended_at is not None and job.started_at <= job.ended_at
    assert job.exc_info.startswith("Traceback (most recent call last):")
    assert 'sample_tasks.py", line' in job.exc_info and "raise ValueError(message)" in job.exc_info
    assert job.exc_info.rstrip().endswith("ValueError: kaput")
    assert job.result is None
    assert job.id in queue.failed_job_registry
    assert job.id not in queue.finished_job_registry
    assert job.id not in queue.started_job_registry
    # kept for the default failure_ttl of one year
    assert 365 * DAY - 10 < ttl(connection, job.id) <= 365 * DAY


# -- results and result_ttl --------------------------------------------------------------


def test_result_is_stored_and_kept_for_result_ttl(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    default = queue.enqueue(sample_tasks.add, 1, 2)
    short = queue.enqueue(sample_tasks.add, 2, 3, result_ttl=100)
    work(queue)

    assert Job.fetch(default.id).result == 3
    assert 490 < ttl(connection, default.id) <= 500  # the default result_ttl
    job = Job.fetch(short.id)
    assert job.result == 5
    assert 90 < ttl(connection, short.id) <= 100
    registry = queue.finished_job_registry
    assert short.id in registry and default.id in registry
    expires = registry.get_expiration_time(short.id)
    assert expires.timestamp() == pytest.approx(job.ended_at.timestamp() + 100, abs=1)


def test_result_ttl_zero_drops_the_job_at_once(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.add, 1, 2, result_ttl=0)
    work(queue)
    assert not exists(connection, job.id)
    with pytest.raises(NoSuchJobError):
        Job.fetch(job.id)
    assert job.id not in queue.finished_job_registry
    assert connection.zcard(keys.of_queue("default").registry("finished")) == 0


def test_result_ttl_minus_one_keeps_the_job_forever(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.add, 1, 2, result_ttl=-1, ttl=60)  # ttl applies only before it starts
    work(queue)
    assert ttl(connection, job.id) == -1
    assert Job.fetch(job.id).result == 3
    assert job.id in queue.finished_job_registry
    assert queue.finished_job_registry.get_expiration_time(job) is None


# -- failures ------------------------------------------------------------------------------


def test_failure_ttl_expiry(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail, failure_ttl=1)
    work(queue, maintenance_interval=0.1)  # holds the maintenance lock only 0.1 s
    registry = queue.failed_job_registry
    assert job.id in registry and len(registry) == 1
    assert 0 < connection.pttl(key(connection, job.id)) <= 1000

    poll(lambda: not exists(connection, job.id), timeout=5)
    assert job.id not in registry
    assert len(registry) == 0 and registry.get_job_ids() == []
    with pytest.raises(NoSuchJobError):
        Job.fetch(job.id)
    # reads left the expired entry alone; a worker's maintenance step drops it
    assert connection.zcard(keys.of_queue("default").registry("failed")) == 1
    work(queue, maintenance_interval=0.1)
    assert connection.zcard(keys.of_queue("default").registry("failed")) == 0


def test_failure_ttl_minus_one_keeps_the_failure_forever(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail, failure_ttl=-1)
    work(queue)
    assert ttl(connection, job.id) == -1
    assert queue.failed_job_registry.get_expiration_time(job) is None


# -- the job context -----------------------------------------------------------------------


def test_get_current_job_inside_and_outside(connection: redis.Redis) -> None:
    assert get_current_job() is None
    queue = Queue(connection=connection)
    plain = queue.enqueue(current_job_id)
    tasked = queue.enqueue(sample_tasks.record_meta, "k", "v")
    Worker([queue]).work(burst=True)
    assert Job.fetch(plain.id).result == plain.id
    assert Job.fetch(tasked.id).result == tasked.id
    assert Job.fetch(tasked.id).meta == {"k": "v"}
    assert get_current_job() is None  # reset after the jobs ran


def test_bind_true_passes_the_job_first(connection: redis.Redis) -> None:
    job = sample_tasks.whoami.delay()
    work(Queue(connection=connection))
    assert Job.fetch(job.id).result == job.id


def test_meta_is_visible_to_another_process_while_the_job_runs(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    release = f"test:release:{uuid.uuid4().hex}"
    job = sample_tasks.meta_then_wait.delay("progress", "half", release)
    worker = subprocess.Popen(
        taskit_command("worker", "sample_tasks", "--burst"), env=cli_env, stderr=subprocess.PIPE, text=True
    )
    try:
        # this test process is the other process: it reads what the worker's job saved
        seen = poll(lambda: Job.fetch(job.id) if Job.fetch(job.id).meta.get("progress") else None)
        assert seen.get_status() == JobStatus.STARTED
        assert seen.meta == {"progress": "half"}
        # another writer adds to meta while the job runs ...
        seen.meta["note"] = "from the test"
        seen.save_meta()
        connection.rpush(release, "go")
        _, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr
    done = Job.fetch(job.id)
    assert done.get_status() == JobStatus.FINISHED and done.result is True
    # ... and the worker's final write did not overwrite meta
    assert done.meta == {"progress": "half", "note": "from the test"}


# -- timeouts --------------------------------------------------------------------------


def test_timeout_fails_the_job_and_the_worker_goes_on(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    slow = queue.enqueue(sample_tasks.sleep, 30, job_timeout=1)
    fast = queue.enqueue(sample_tasks.add, 1, 2)
    started = time.monotonic()
    assert work(queue) == 2
    assert time.monotonic() - started < 10  # stopped after ~1 s, not after 30
    slow = Job.fetch(slow.id)
    assert slow.get_status() == JobStatus.FAILED
    assert "taskit.exceptions.JobTimeoutError: job exceeded its timeout of 1s" in slow.exc_info
    assert slow.id in queue.failed_job_registry
    assert Job.fetch(fast.id).result == 3


def test_task_timeout_option_and_no_timeout(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    slow = sleepy_task.delay(30)  # @task(timeout=1)
    unlimited = queue.enqueue(sample_tasks.sleep, 1.2, job_timeout=-1)
    assert Job.fetch(unlimited.id).timeout is None
    Worker([queue]).work(burst=True)
    assert "JobTimeoutError" in Job.fetch(slow.id).exc_info
    assert Job.fetch(unlimited.id).result == 1.2


def test_timeout_in_a_subprocess_worker(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    queue = Queue(connection=connection)
    slow = queue.enqueue(sample_tasks.sleep, 30, job_timeout=1)
    fast = queue.enqueue(sample_tasks.add, 2, 2)
    proc = run_worker(cli_env, "sample_tasks", "--burst", timeout=30)
    assert "JobTimeoutError" in Job.fetch(slow.id).exc_info
    assert Job.fetch(fast.id).result == 4
    assert f"failed: JobTimeoutError: job exceeded its timeout of 1s and was stopped (job {slow.id}" in proc.stderr


def test_alarm_restores_the_previous_sigalrm_handler(connection: redis.Redis) -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        queue = Queue(connection=connection)
        queue.enqueue(sample_tasks.add, 1, 1, job_timeout=5)
        work(queue)
        assert signal.getsignal(signal.SIGALRM) is mine
    finally:
        signal.signal(signal.SIGALRM, previous)


# -- results msgpack cannot store -----------------------------------------------------------


def test_unserializable_result_fails_the_job_and_the_worker_goes_on(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    bad = queue.enqueue(sample_tasks.unserializable_result)
    good = queue.enqueue(sample_tasks.add, 1, 2)
    assert work(queue) == 2
    bad = Job.fetch(bad.id)
    assert bad.get_status() == JobStatus.FAILED
    assert "SerializationError" in bad.exc_info
    assert "the task returned a value it cannot store" in bad.exc_info
    assert "result is an object, which taskit cannot serialize" in bad.exc_info
    assert Job.fetch(good.id).result == 3


def test_unserializable_result_in_a_subprocess_worker(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    bad = sample_tasks.unserializable_result.delay()
    good = sample_tasks.add.delay(3, 4)
    run_worker(cli_env, "sample_tasks", "--burst", timeout=30)
    assert "cannot store" in Job.fetch(bad.id).exc_info
    assert Job.fetch(good.id).result == 7


# -- job.wait() / job.get() -------------------------------------------------------------------


def test_wait_returns_the_result(connection: redis.Redis, background_worker: subprocess.Popen[str]) -> None:
    job = sample_tasks.add.delay(20, 22)
    assert job.wait(timeout=20) == 42
    assert sample_tasks.add.delay(1, 1).get(timeout=20) == 2


def test_wait_raises_job_failed_error(connection: redis.Redis, background_worker: subprocess.Popen[str]) -> None:
    job = sample_tasks.fail.delay("nope")
    with pytest.raises(JobFailedError) as info:
        job.wait(timeout=20)
    assert "ValueError: nope" in str(info.value)
    assert "Traceback" in info.value.exc_info


def test_wait_timeout(connection: redis.Redis) -> None:
    job = sample_tasks.add.delay(1, 2)  # no worker runs it
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError):
        job.wait(timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert job.get_status() == JobStatus.QUEUED


def _blocking_calls(connection: redis.Redis) -> int:
    stats = connection.info("commandstats")
    return int(stats.get("cmdstat_blmove", {}).get("calls", 0))


def _all_calls(connection: redis.Redis) -> int:
    return sum(int(v["calls"]) for v in connection.info("commandstats").values())


@pytest.mark.single_only("reads CLIENT LIST and INFO commandstats of one node")
def test_wait_blocks_on_redis(connection: redis.Redis, background_worker: subprocess.Popen[str]) -> None:
    release = f"test:release:{uuid.uuid4().hex}"
    job = sample_tasks.meta_then_wait.delay("k", "v", release)
    poll(lambda: Job.fetch(job.id).meta)  # the job runs and now waits for our release

    # while job.wait() is blocked, Redis shows this process's client blocked in BLMOVE
    releaser_saw: list[str] = []

    def release_when_blocked() -> None:
        other = redis.Redis(port=connection.connection_pool.connection_kwargs["port"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            blocked = [c for c in other.client_list() if c.get("cmd") == "blmove" and "b" in c.get("flags", "")]
            if blocked:
                releaser_saw.append("blocked")
                break
            time.sleep(0.01)
        other.rpush(release, "go")
        other.close()

    connection.config_resetstat()
    thread = threading.Thread(target=release_when_blocked)
    thread.start()
    assert job.wait(timeout=20) is True
    returned = time.time()
    thread.join()
    assert releaser_saw == ["blocked"]
    assert 1 <= _blocking_calls(connection) <= 3  # one blocking call, not a polling loop
    # and it returned promptly once the job ended (generous bound; see bench/ for timings)
    assert returned - Job.fetch(job.id).ended_at.timestamp() < 2.0


@pytest.mark.single_only("counts the calls in one node's INFO commandstats")
def test_wait_on_a_requeued_job_still_blocks(connection: redis.Redis) -> None:
    """A waiter's earlier 'failed' signal must not make a later wait spin."""
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail)
    outcome: list[TaskitError] = []

    def wait_for_it() -> None:
        try:
            job.wait(timeout=20)
        except TaskitError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    poll(lambda: field(connection, job.id, keys.Field.WAITED))
    work(queue)
    waiter.join()
    assert len(outcome) == 1 and isinstance(outcome[0], JobFailedError)
    queue.failed_job_registry.requeue(job)

    connection.config_resetstat()
    with pytest.raises(WaitTimeoutError):
        job.wait(timeout=0.5)
    assert _all_calls(connection) < 20, connection.info("commandstats")


# -- which functions run -----------------------------------------------------------------------


def _refused_names(marker: Path) -> list[tuple[str, list[object]]]:
    """Job names a worker given only `sample_tasks` must refuse; each would create `marker` if run."""
    touch = f"touch {marker}"
    opener = f"open({str(marker)!r}, 'w').close()"
    return [
        ("os.system", [touch]),
        ("posix.system", [touch]),
        ("builtins.eval", [opener]),
        ("builtins.exec", [opener]),
        ("subprocess.call", [touch]),
        ("sample_tasks.os.system", [touch]),  # attribute traversal through a module it imports
        ("sample_tasks.os.path.join", ["a", "b"]),
        ("sample_tasks.time.sleep", [0]),
        ("sample_tasks.get_current_job", []),  # imported into sample_tasks, defined elsewhere
        ("sample_tasks.does_not_exist", []),
        ("no_such_module_anywhere.run", []),
    ]


REASONS = {
    "os.system": "module 'os' is not one the worker was given",
    "posix.system": "module 'posix' is not one the worker was given",
    "builtins.eval": "module 'builtins' is not one the worker was given",
    "sample_tasks.os.system": "module 'sample_tasks' defines no function 'os.system'",
    "sample_tasks.does_not_exist": "module 'sample_tasks' defines no function 'does_not_exist'",
    "no_such_module_anywhere.run": "is not a registered task, and no imported module defines it",
}


def _check_refused(job_id: str, name: str, marker: Path) -> None:
    job = Job.fetch(job_id)
    assert job.get_status() == JobStatus.FAILED, name
    assert "TaskNotAllowedError" in job.exc_info, job.exc_info
    assert repr(name) in job.exc_info, job.exc_info  # the reason names the function
    assert name not in REASONS or REASONS[name] in job.exc_info, job.exc_info
    assert not marker.exists(), f"{name} ran"


@pytest.mark.parametrize("index", range(len(_refused_names(Path("x")))))
def test_in_process_worker_refuses_unregistered_functions(connection: redis.Redis, tmp_path: Path, index: int) -> None:
    marker = tmp_path / "ran"
    name, args = _refused_names(marker)[index]
    queue = Queue(connection=connection)
    job = queue.enqueue(name, *args)  # by name: this process never enqueued the function itself
    after = queue.enqueue(sample_tasks.add, 1, 1)
    assert work(queue) == 2
    _check_refused(job.id, name, marker)
    assert Job.fetch(after.id).result == 2  # and the worker went on


def test_subprocess_worker_refuses_unregistered_functions(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    queue = Queue(connection=connection)
    refused = [(queue.enqueue(name, *args).id, name) for name, args in _refused_names(marker)]
    good = queue.enqueue("sample_tasks.add", 2, 3)
    proc = run_worker(cli_env, "sample_tasks", "--burst")
    for job_id, name in refused:
        _check_refused(job_id, name, marker)
        assert f"refused job {job_id}: {name!r}" in proc.stderr
    assert Job.fetch(good.id).result == 5


def test_plain_function_of_a_given_module_runs(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    queue = Queue(connection=connection)
    in_subprocess = queue.enqueue("sample_tasks.triple", 5)
    run_worker(cli_env, "sample_tasks", "--burst")
    assert Job.fetch(in_subprocess.id).result == 15

    given = queue.enqueue("sample_tasks.triple", 2)
    work(queue)  # modules=("sample_tasks",)
    assert Job.fetch(given.id).result == 6

    not_given = queue.enqueue("sample_tasks.triple", 2)
    Worker([queue]).work(burst=True)  # no modules: sample_tasks.triple is neither a task nor enqueued here
    assert "module 'sample_tasks' is not one the worker was given" in Job.fetch(not_given.id).exc_info


def test_function_enqueued_by_this_process_runs_in_process(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(double, 21)
    Worker([queue]).work(burst=True)
    assert Job.fetch(job.id).result == 42


CANARY = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def run():
    Path({marker!r}).write_text("ran")
"""


def _canary(tmp_path: Path) -> tuple[str, Path]:
    name = f"taskit_canary_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "canary-imported"
    directory = tmp_path / "mods"
    directory.mkdir()
    (directory / f"{name}.py").write_text(CANARY.format(marker=str(marker)))
    return name, marker


def test_job_data_never_imports_a_module_in_process(
    connection: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, marker = _canary(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))  # importable, but nobody imports it
    queue = Queue(connection=connection)
    job = queue.enqueue(f"{name}.run")
    # even a worker told the module's name does not import it because a job asks
    Worker([queue], modules=("sample_tasks", name)).work(burst=True)
    assert name not in sys.modules
    assert not marker.exists()
    failed = Job.fetch(job.id)
    assert failed.get_status() == JobStatus.FAILED and f"'{name}.run'" in failed.exc_info


def test_job_data_never_imports_a_module_in_a_subprocess_worker(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    name, marker = _canary(tmp_path)
    queue = Queue(connection=connection)
    job = queue.enqueue(f"{name}.run")
    probe = queue.enqueue(sample_tasks.is_imported, name)
    control = queue.enqueue(sample_tasks.is_imported, "sample_tasks")
    run_worker(cli_env, "sample_tasks", "-P", str(tmp_path / "mods"), "--burst")
    assert Job.fetch(job.id).get_status() == JobStatus.FAILED
    assert f"'{name}.run'" in Job.fetch(job.id).exc_info
    assert Job.fetch(probe.id).result is False  # not in the worker's sys.modules
    assert Job.fetch(control.id).result is True
    assert not marker.exists()


def test_submodule_of_a_given_package_runs(connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path) -> None:
    package = tmp_path / "mods" / "canarypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from . import imported\n")
    (package / "imported.py").write_text("def hello(name):\n    return 'hello ' + name\n")
    (package / "lazy.py").write_text(f"open({str(tmp_path / 'lazy')!r}, 'w').close()\ndef hello(name):\n    return name\n")
    queue = Queue(connection=connection)
    ok = queue.enqueue("canarypkg.imported.hello", "world")
    lazy = queue.enqueue("canarypkg.lazy.hello", "world")
    run_worker(cli_env, "canarypkg", "-P", str(tmp_path / "mods"), "--burst")
    assert Job.fetch(ok.id).result == "hello world"
    assert Job.fetch(lazy.id).get_status() == JobStatus.FAILED  # a submodule nobody imported stays so
    assert not (tmp_path / "lazy").exists()


# -- tasks that misbehave, and job data written by hand ---------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def raise_unprintable() -> None:
    raise Unprintable()


def call_sys_exit() -> None:
    sys.exit(3)


def test_misbehaving_tasks_fail_their_job_and_the_worker_goes_on(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    unprintable = queue.enqueue(raise_unprintable)
    exiting = queue.enqueue(call_sys_exit)
    after = queue.enqueue(double, 4)
    assert Worker([queue]).work(burst=True) == 3
    assert Job.fetch(unprintable.id).get_status() == JobStatus.FAILED
    assert "Unprintable" in Job.fetch(unprintable.id).exc_info
    assert Job.fetch(exiting.id).get_status() == JobStatus.FAILED
    assert "SystemExit: 3" in Job.fetch(exiting.id).exc_info
    assert Job.fetch(after.id).result == 8


class _Pwn:
    """What a pickle-based queue would run on load: os.system(touch marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.marker}",))


def test_hand_written_job_data_runs_no_code(connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path) -> None:
    """Anyone who can write to Redis gets no code execution: a pickle payload is just bytes."""
    import pickle

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Pwn(marker))
    hand_written = {
        "pickled-args": {"func": "sample_tasks.add", "args": payload},
        "pickled-meta": {"func": "sample_tasks.add", "args": b"\x92\x92\x01\x02\x80", "meta": payload},
        "no-func": {"args": b"\x92\x90\x80"},
        "dotless": {"func": "sample_tasks", "args": b"\x92\x90\x80"},
    }
    for job_id, fields in hand_written.items():
        write_job(connection, job_id, {keys.FIELDS[name]: value for name, value in {"status": "queued", **fields}.items()})
        connection.rpush(keys.of_queue("default").queue, job_id)
    good = sample_tasks.add.delay(1, 2)
    run_worker(cli_env, "sample_tasks", "--burst")
    assert not marker.exists()
    for job_id in hand_written:
        job = stored(connection, job_id)
        assert job[keys.Field.STATUS] == b"failed", (job_id, job)
    assert b"is corrupt" in field(connection, "pickled-args", keys.Field.EXC_INFO)
    assert b"'sample_tasks'" in field(connection, "dotless", keys.Field.EXC_INFO)
    assert Job.fetch(good.id).result == 3


@pytest.mark.single_only("uses database 1, which a cluster does not have")
def test_worker_takes_its_connection_from_the_first_queue(connection: redis.Redis) -> None:
    port = connection.connection_pool.connection_kwargs["port"]
    other_db = redis.Redis(port=port, db=1)
    other_db.flushdb()
    try:
        queue = Queue(connection=other_db)
        job = queue.enqueue(double, 5)
        assert Queue(connection=connection).count == 0  # db 0, the default, has nothing
        Worker([queue]).work(burst=True)  # the seed's form: no connection given
        assert Job.fetch(job.id, connection=other_db).result == 10
        by_name = Queue(connection=connection).enqueue(double, 6)
        Worker(["default"]).work(burst=True)  # names use the default connection
        assert Job.fetch(by_name.id).result == 12
    finally:
        other_db.flushdb()
        other_db.close()


def test_timeout_settings_are_stored(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    assert Job.fetch(queue.enqueue(double, 1).id).timeout == 180  # the default
    assert Job.fetch(queue.enqueue(double, 1, job_timeout=None).id).timeout is None
    assert Job.fetch(queue.enqueue(double, 1, job_timeout=-1).id).timeout is None
    assert Job.fetch(queue.enqueue(double, 1, job_timeout=7).id).timeout == 7


def test_wait_wakes_when_the_job_is_canceled(connection: redis.Redis) -> None:
    job = sample_tasks.add.delay(1, 2)
    threading.Timer(0.3, lambda: Job.fetch(job.id).cancel()).start()
    started = time.monotonic()
    with pytest.raises(JobFailedError, match="canceled"):
        job.wait(timeout=30)
    assert time.monotonic() - started < 3, "woken by the cancel's signal, not by the 5 s re-check"


def test_each_job_gets_its_own_timeout_whatever_ran_before(connection: redis.Redis) -> None:
    """The timer is left armed between jobs; it must still stop each job at its own deadline."""
    queue = Queue(connection=connection)
    long_then_short = [queue.enqueue(sample_tasks.add, 1, 1, job_timeout=60), queue.enqueue(sample_tasks.sleep, 5, job_timeout=1)]
    short_then_long = [queue.enqueue(sample_tasks.add, 1, 1, job_timeout=1), queue.enqueue(sample_tasks.sleep, 5, job_timeout=2)]
    Worker([queue]).work(burst=True)
    stopped_early, stopped_late = long_then_short[1], short_then_long[1]
    for job in (stopped_early, stopped_late):
        job.refresh()
        assert job.get_status() == JobStatus.FAILED and "JobTimeoutError" in job.exc_info
    ran = (stopped_late.ended_at - stopped_late.started_at).total_seconds()
    assert ran >= 1.5, f"stopped after {ran:.2f}s: the previous job's 1 s timer was taken for this job's 2 s"
    assert (stopped_early.ended_at - stopped_early.started_at).total_seconds() < 4


def test_a_timer_going_off_as_a_job_starts_is_rearmed_for_it() -> None:
    """The timer left armed by the previous job may go off just as the next one starts;
    it must re-arm for the new job's deadline, never be lost and never stop it early."""
    from taskit.worker.execution import Alarm

    alarm = Alarm()
    try:
        alarm.start(3)
        alarm._fire(signal.SIGALRM, None)  # the previous job's timer, going off now
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 2 < left <= 3, f"re-armed for {left:.2f}s instead of the job's 3 s"
        alarm.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        alarm._fire(signal.SIGALRM, None)  # going off after the job: harmless, nothing re-armed
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    finally:
        alarm.close()


def test_unreadable_arguments_are_refused_not_retried(connection: redis.Redis) -> None:
    job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2, retry=taskit.Retry(max=2))
    set_fields(connection, job.id, {keys.Field.ARGS: b"\x80\x04pickled"})
    Worker(["default"], connection).work(burst=True)
    job.refresh()
    assert (job.get_status(), job.retries, job.attempts) == (JobStatus.FAILED, 0, 1)
    assert "SerializationError" in job.exc_info and "'args' is unreadable" in job.exc_info


def test_a_slow_job_holds_up_neither_the_results_before_it_nor_the_jobs_claimed_after_it(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Prefetch's head-of-line problem: one claim takes many short jobs and a slow one."""
    q = Queue(connection=connection)
    before = [q.enqueue(sample_tasks.add, i, i) for i in range(20)]  # short: the claim window grows
    slow = q.enqueue(sample_tasks.sleep, 6)
    after = [q.enqueue(sample_tasks.add, i, 100) for i in range(5)]

    def status(job: Job) -> JobStatus:
        return Job.fetch(job.id, connection=connection).get_status()

    with worker_process(cli_env, tmp_path, "first"):
        # claimed by "first" in the batch that holds the slow job
        poll(lambda: all(field(connection, j.id, keys.Field.WORKER) == b"first" for j in after))
        with worker_process(cli_env, tmp_path, "second"):
            # the results before the slow job are recorded while it runs, not after
            poll(lambda: all(status(j) == JobStatus.FINISHED for j in before), timeout=4)
            assert status(slow) == JobStatus.STARTED
            # the jobs claimed after it were handed back, and the idle worker ran them
            poll(lambda: all(status(j) == JobStatus.FINISHED for j in after), timeout=4)
            assert status(slow) == JobStatus.STARTED
            assert {Job.fetch(j.id).worker_name for j in after} == {"second"}
            assert [Job.fetch(j.id).attempts for j in after] == [1] * 5  # handed back, not counted as run
        poll(lambda: status(slow) == JobStatus.FINISHED, timeout=10)
    assert Job.fetch(slow.id).worker_name == "first"


def test_a_job_claimed_after_a_long_wait_starts_and_is_leased_from_when_it_came(connection: redis.Redis) -> None:
    """An idle worker's claim is sent with its wait (Store.wait_and_claim) and runs whenever
    the wait ends: its start time and lease count from then, by Redis's clock, not from
    when it was sent; and a job that comes due while it waits is promoted when it ends."""
    from taskit.storage.store import Store

    store = Store(connection)
    claims: list[object] = []

    def wait(seconds: float) -> threading.Thread:
        thread = threading.Thread(target=lambda: claims.append(store.wait_and_claim("w1", ["default"], seconds, 30, 5)))
        thread.start()
        return thread

    waiting = wait(5.0)
    time.sleep(1.5)
    pushed = time.time()
    job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2)
    waiting.join()
    (job_id, _, _, fields), = claims[0].jobs  # type: ignore[attr-defined]
    started = int(fields[keys.Field.STARTED]) / 1000
    assert job_id == job.id and pushed - 0.2 < started < time.time()  # not 1.5 s earlier
    assert Job.fetch(job.id).started_at.timestamp() == pytest.approx(started, abs=0.002)
    lease = connection.zscore(keys.of_queue("default").started, job.id)
    assert started + 30 - 0.002 <= lease <= started + 31  # (a lease of 10 s or more is rounded up to the second)

    later = Queue(connection=connection).enqueue_in(1.0, sample_tasks.add, 2, 3)
    sent = time.time()
    wait(1.5).join()  # nothing pushed: the wait times out, and the claim promotes the due job
    (job_id, _, _, fields), = claims[1].jobs  # type: ignore[attr-defined]
    assert job_id == later.id and int(fields[keys.Field.STARTED]) / 1000 >= sent + 1.4


def test_an_idle_wait_on_a_wake_list_of_another_type_repairs_it(connection: redis.Redis) -> None:
    """The wait's BLPOP is refused (WRONGTYPE), which is no error: the claim behind it runs
    all the same and repairs the key (lua/claim.lua), and the next wait waits."""
    from taskit.storage.store import Store

    store = Store(connection)
    wake = keys.of_queue("default").wake
    connection.set(wake, "not a list")
    assert store.wait_and_claim("w1", ["default"], 1.0, 30, 1).jobs == []
    assert connection.type(wake) == b"none"
    job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2)
    assert [j[0] for j in store.wait_and_claim("w1", ["default"], 1.0, 30, 1).jobs] == [job.id]
