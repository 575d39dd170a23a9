"""The worker's start, stop and bookkeeping (issue 11): the command line checked before
anything starts, a loud warning when a worker can run nothing, true log lines and counts,
and outcomes the heartbeat thread hands back never lost."""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any

import fault_tasks
import hostile_tasks
import pytest
import redis
from test_cli import one_error_line, taskit
from test_faults import FAST, WorkerProcess, status, wait_until

from taskit import Job, JobStatus, Queue, Worker
from taskit.exceptions import ConfigurationError, RedisUnavailableError
from taskit.storage import keys
from taskit.worker import worker as worker_module

# -- the command line is checked before anything starts ----------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-c", "2", "-q", "bad q"], "queue name 'bad q' is invalid"),
        (["-c", "2", "-n", "bad name"], "worker name 'bad name' is invalid"),
        (["-c", "2", "-n", "w" * 121], "is too long for -c: its processes are named NAME.1, NAME.2, ..., so use at most 120"),
        (["-c", "2", "--lease", "nan"], "--lease must be from 0.1 to 86400 seconds, not nan"),
        (["--lease", "nan"], "--lease must be from 0.1 to 86400 seconds, not nan"),
        (["--lease", "0"], "--lease must be from 0.1 to 86400 seconds, not 0"),
        (["--maintenance-interval", "inf"], "--maintenance-interval must be from 0.1 to 86400 seconds, not inf"),
        # the options of many jobs at once (issue 10): refused before forking too
        (["-c", "2", "--shutdown-timeout", "nan"], "--shutdown-timeout must be from 0 to 86400 seconds, not nan"),
        (["--shutdown-timeout", "inf"], "--shutdown-timeout must be from 0 to 86400 seconds, not inf"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout must be from 0 to 86400 seconds, not -1"),
        (["-c", "2", "--max-memory", "inf"], "--max-memory must be a number of megabytes, at least 1, not inf"),
        (["--max-memory", "nan"], "--max-memory must be a number of megabytes, at least 1, not nan"),
        (["-c", "2", "--threads", "0"], "--threads must be at least 1, not 0"),
        (["--async-tasks", "-3"], "--async-tasks must be at least 1, not -3"),
    ],
)
def test_bad_worker_options_end_in_one_line_before_anything_starts(cli_env, args, says):
    # the module does not exist: an error about it would mean it was imported first
    proc = taskit(cli_env, "worker", "no_such_module_here", *args, timeout=30)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc)
    assert line.startswith("Error: ") and says in line, line


def test_a_name_of_120_characters_is_fine_under_c(connection, cli_env, tmp_path):
    fault_tasks.work.delay(1)
    worker = WorkerProcess(cli_env, tmp_path, "-c", "1", "-n", "w" * 120, "--burst")
    assert worker.wait(timeout=60) == 0, worker.output()
    assert "w" * 120 + ".1" in worker.output()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0])
def test_worker_refuses_non_finite_and_non_positive_seconds(connection, bad):
    for option in ("lease", "maintenance_interval", "heartbeat_interval"):
        with pytest.raises(ConfigurationError, match=option):
            Worker(["default"], **{option: bad})


def test_taskit_worker_without_modules_says_how_to_name_them(cli_env):
    proc = taskit(cli_env, "worker", "--burst")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "name the modules that define your tasks, e.g. `taskit worker myapp.tasks`" in line


def test_modules_that_register_no_task_get_a_loud_warning(connection, cli_env, tmp_path):
    (tmp_path / "helpers_only.py").write_text("def tidy(x):\n    return x\n")
    proc = taskit(cli_env, "worker", "helpers_only", "-P", str(tmp_path), "--burst")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert warning and "module helpers_only registers no @task" in warning[0], proc.stderr
    assert "a job naming any other function fails with TaskNotAllowedError" in warning[0]
    assert "give that module instead (taskit worker myapp.tasks)" in warning[0]


# -- true counts and log lines ---------------------------------------------------------------------


def test_a_cold_shutdown_does_not_count_the_handed_back_job_as_run(connection, cli_env, tmp_path):
    job = fault_tasks.sleep_then_pid.delay(30)
    worker = WorkerProcess(cli_env, tmp_path, *FAST)
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert status(job.id) == JobStatus.QUEUED
    assert "stopped after 0 job(s)" in worker.output(), worker.output()


def test_workers_under_a_supervisor_say_why_they_stop(connection, cli_env, tmp_path):
    job = fault_tasks.sleep_then_pid.delay(1)
    parent = WorkerProcess(cli_env, tmp_path, "-c", "2")
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    wait_until(lambda: connection.zcard(keys.WORKERS) == 2, what="both workers to register")
    parent.signal(signal.SIGINT)  # what Ctrl-C sends
    assert parent.wait(timeout=30) == 0
    log = parent.output()
    assert log.count("the supervising process got SIGINT and asked this worker to stop") == 2, log
    assert "SIGTERM" not in log, log
    assert status(job.id) == JobStatus.FINISHED


def test_after_a_redis_restart_the_worker_registers_again(connection, cli_env, tmp_path, redis_server):
    worker = WorkerProcess(cli_env, tmp_path, *FAST, "-n", "comes-back")
    wait_until(lambda: connection.hget(keys.worker("comes-back"), "pid") is not None, what="the worker to register")
    redis_server.stop()  # persistence is off: the registration is lost with everything else
    time.sleep(3)
    redis_server.start()
    fresh = redis_server.client()
    wait_until(lambda: fresh.hget(keys.worker("comes-back"), "pid") == str(worker.pid).encode(), timeout=30,
               what="the worker to register again")
    info = taskit(cli_env, "info")
    assert f"comes-back  pid {worker.pid} on " in info.stdout, info.stdout
    log = worker.output()
    assert "cannot reach Redis" in log and "gave up" not in log, log  # (it was still trying)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    fresh.close()


# -- the heartbeat thread's hand-back, when its round trip fails ---------------------------------------


def test_outcomes_handed_back_by_the_heartbeat_thread_are_never_lost(connection: redis.Redis, monkeypatch, tmp_path):
    """The heartbeat thread takes the outcomes waiting to be sent while a slow job runs; if
    sending them fails, it puts them back. Here it does so just as the main loop, the slow job
    done, sends its own: the outcome put back must still be recorded, and its job not re-run."""
    side_effects = tmp_path / "side-effects"
    monkeypatch.setenv("TASKIT_SIDE_EFFECTS", str(side_effects))
    q = Queue()
    fast, slow, waiting = hostile_tasks.swallow.delay(1), fault_tasks.work.delay(2, 2.5), fault_tasks.work.delay(3)
    w = Worker([q], modules=("fault_tasks", "hostile_tasks"), lease=20)
    # claim the three together: the fast one's outcome waits behind the slow one
    first_claim, real_limit = iter([3]), worker_module.ClaimPolicy.limit
    monkeypatch.setattr(worker_module.ClaimPolicy, "limit", lambda self, *args: next(first_claim, 0) or real_limit(self, *args))
    monkeypatch.setattr(worker_module, "FLUSH_AFTER", 60.0)  # ...until the next claim
    monkeypatch.setattr(worker_module, "HAND_BACK_AFTER", 0.5)
    main_sent = threading.Event()
    real_finish, real_finish_and_claim = w.store.finish, w.store.finish_and_claim

    def heartbeat_finish(*args: Any) -> list[int]:  # the heartbeat thread's hand-back round trip fails...
        if threading.current_thread() is threading.main_thread():
            return real_finish(*args)
        assert main_sent.wait(20)  # ...just after the main loop sent the slow job's outcome
        raise RedisUnavailableError("cannot reach Redis (in this test)")

    def main_finish_and_claim(*args: Any) -> Any:
        result = real_finish_and_claim(*args)
        if not main_sent.is_set():
            main_sent.set()
            wait_until(lambda: any(r.job_id == fast.id for r in w._inflight.pending), timeout=20,
                       what="the heartbeat thread to put the fast job's outcome back")
        return result

    monkeypatch.setattr(w.store, "finish", heartbeat_finish)
    monkeypatch.setattr(w.store, "finish_and_claim", main_finish_and_claim)
    w.work(burst=True)
    assert main_sent.is_set(), "the scenario did not happen: the heartbeat thread never handed back"
    Worker([q], modules=("fault_tasks",)).work(burst=True)  # runs the job handed back at shutdown
    assert side_effects.read_text() == "ran\n", "the fast job ran twice: its outcome was lost"
    for job, result in ((fast, 1), (slow, 2), (waiting, 3)):
        job = Job.fetch(job.id)
        assert (job.get_status(), job.result) == (JobStatus.FINISHED, result), job


def test_a_job_whose_stall_check_finds_redis_away_still_runs(connection: redis.Redis, monkeypatch):
    """After a stall a worker renews its claims before the next job; if Redis is away just
    then, that job waits for Redis with the others instead of being dropped (held, never run)."""
    jobs = [fault_tasks.work.delay(i) for i in range(3)]
    ticks = iter(range(10**6))
    w = Worker([Queue()], modules=("fault_tasks",), lease=20, clock=lambda: 1e9 + 11.0 * next(ticks))  # every look, a stall
    real_heartbeat, failed = w.store.heartbeat, threading.Event()

    def heartbeat(*args: Any) -> list[str]:
        if threading.current_thread() is threading.main_thread() and not failed.is_set():
            failed.set()
            raise RedisUnavailableError("cannot reach Redis (in this test)")
        return real_heartbeat(*args)

    monkeypatch.setattr(w.store, "heartbeat", heartbeat)
    w.work(burst=True)
    assert failed.is_set()
    for i, job in enumerate(jobs):
        job = Job.fetch(job.id)
        assert (job.get_status(), job.result) == (JobStatus.FINISHED, i), job


def test_a_beat_under_way_at_shutdown_does_not_bring_the_worker_back(connection: redis.Redis, monkeypatch):
    w = Worker([Queue()], lease=1, name="signing-off")  # a beat every 0.25 s
    real_heartbeat, beating = w.store.heartbeat, threading.Event()

    def slow_heartbeat(*args: Any) -> list[str]:
        beating.set()
        time.sleep(1.5)  # the loop stops meanwhile, and the worker signs off...
        return real_heartbeat(*args)  # ...before this puts it back on the list of live workers

    monkeypatch.setattr(w.store, "heartbeat", slow_heartbeat)
    stopper = threading.Thread(target=lambda: beating.wait(10) and w.request_stop())
    stopper.start()
    w.work()
    stopper.join()
    time.sleep(2)  # (longer than the beat takes)
    assert connection.zscore(keys.WORKERS, "signing-off") is None
