"""The day-one commands (issue 14): info -i/--json, job, failed, empty, enqueue, as subprocesses."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import records
import redis
import sample_tasks
from conftest import taskit_command
from records import set_fields
from test_cli import failed_jobs, ok, one_error_line, taskit

from taskit import Job, JobStatus, Queue, Worker
from taskit.exceptions import SerializationError
from taskit.storage import keys


@pytest.fixture
def busy_worker(connection: redis.Redis, cli_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, Job]]:
    """A `taskit worker` running a job that waits until the test releases it."""
    job = sample_tasks.meta_then_wait.delay("k", "v", "test:release", 60)
    worker = subprocess.Popen(taskit_command("worker", "sample_tasks", "-n", "busy-worker"), env=cli_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while job.get_status() != JobStatus.STARTED:
        assert time.monotonic() < deadline, "the worker did not start the job"
        time.sleep(0.05)
    yield worker, job
    connection.rpush("test:release", 1)
    worker.terminate()
    worker.wait(timeout=30)


def test_info_json_shows_counts_and_the_job_each_worker_runs(connection, cli_env, busy_worker) -> None:
    worker, job = busy_worker
    failed_jobs(Queue(connection=connection), 2)
    time.sleep(0.2)
    shown = json.loads(ok(taskit(cli_env, "info", "--json")).stdout)
    (default,) = [q for q in shown["queues"] if q["name"] == "default"]
    assert (default["queued"], default["started"], default["failed"]) == (0, 1, 2)
    (busy,) = [w for w in shown["workers"] if w["name"] == "busy-worker"]
    assert busy["pid"] == str(worker.pid) and busy["alive"] and busy["heartbeat_age_seconds"] >= 0
    (running,) = busy["jobs"]
    assert (running["id"], running["task"], running["status"]) == (job.id, "sample_tasks.meta_then_wait", "started")
    assert running["running_seconds"] > 0


class Backlogged:
    """A real `taskit worker concurrency_tasks --threads 4` running 4 gated jobs, with more of
    them claimed behind, waiting in its backlog. A worker hands its backlog back to the queue
    after a second (worker.HAND_BACK_AFTER); this one keeps it for ten minutes, so that what
    readers show of it can be checked at leisure."""

    THREADS = 4
    KEEP_BACKLOG = ("import sys, taskit.worker.worker as w; w.HAND_BACK_AFTER = 600; "
                    "from taskit.cli import main; sys.argv[0] = 'taskit'; main()")

    def __init__(self, connection: redis.Redis, env: dict[str, str], gate: Path, name: str = "backlogged") -> None:
        import concurrency_tasks as ct

        from taskit.storage import keys

        self.name = name
        queue = Queue(connection=connection)
        # short jobs first: the worker learns that jobs are short, and keeps a backlog
        queue.enqueue_many([queue.prepare_data(ct.span, (0.005,)) for _ in range(60)])
        self.gated = queue.enqueue_many([queue.prepare_data(ct.gated, (str(gate),)) for _ in range(12)])
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.KEEP_BACKLOG, "worker", "concurrency_tasks", "--threads", str(self.THREADS),
             "-n", name, "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        try:
            while True:
                self.running = {i.decode() for i in connection.lrange(ct.GATED_STARTED, 0, -1)}
                self.held = [i.decode() for i in connection.lrange(records.inflight(name), 0, -1)]
                self.waiting = [i for i in self.held if i not in self.running]
                shown = (connection.hget(keys.worker(name), keys.WORKER_WAITING) or b"").decode().split()
                if len(self.running) == self.THREADS and self.waiting and shown == self.waiting:
                    break  # 4 running, a backlog, and the worker's hash says which wait
                assert time.monotonic() < deadline and self.process.poll() is None, (self.running, self.held, shown)
                time.sleep(0.05)
        except BaseException:
            self.stop(gate)
            raise

    def stop(self, gate: Path) -> None:
        gate.touch()
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def backlogged(connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path) -> Iterator[Backlogged]:
    worker = Backlogged(connection, cli_env, tmp_path / "gate")
    yield worker
    worker.stop(tmp_path / "gate")


def test_info_shows_every_running_job_and_the_backlog(cli_env, backlogged) -> None:
    """--threads 4: each running job with its running time; those claimed ahead and not
    started as waiting in the worker's backlog (the claim marks them started too)."""
    shown = json.loads(ok(taskit(cli_env, "info", "--json")).stdout)
    (worker,) = [w for w in shown["workers"] if w["name"] == backlogged.name]
    jobs = {j["id"]: j for j in worker["jobs"]}
    assert worker["held"] == len(backlogged.held) and list(jobs) == backlogged.held[:5]
    for job_id, job in jobs.items():
        assert job["status"] == "started"  # as Redis has it, running or not
        if job_id in backlogged.running:
            assert not job["waiting"] and job["running_seconds"] > 0, job
        else:
            assert job["waiting"] and job["running_seconds"] is None, job
    assert sum(not j["waiting"] for j in jobs.values()) == Backlogged.THREADS

    out = ok(taskit(cli_env, "info")).stdout
    running = re.findall(r"running concurrency_tasks\.gated \(job (\S+)\) for \d", out)
    waiting = re.findall(r"waiting concurrency_tasks\.gated \(job (\S+)\): claimed, in the worker's backlog", out)
    assert set(running) == backlogged.running and waiting == backlogged.waiting[:5 - Backlogged.THREADS]
    assert f"(+{len(backlogged.held) - 5} more held)" in out


def _strict_json(text: str) -> object:
    """JSON as a strict parser reads it: Infinity, -Infinity and NaN are not JSON."""
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_info_json_is_valid_json_when_redis_holds_infinite_or_nan_numbers(connection, cli_env) -> None:
    from taskit.storage import keys

    connection.zadd(keys.WORKERS, {"w-inf": float("inf")})
    connection.hset(keys.worker("w-inf"), mapping={"host": "h", "pid": "1", "queues": "default", "lease": "inf",
                                                   "started_at": "nan"})
    job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2, ttl=600)  # (a hash of its own)
    set_fields(connection, job.id, {"e": "-inf"})
    shown = _strict_json(ok(taskit(cli_env, "info", "--json")).stdout)
    (worker,) = shown["workers"]
    assert (worker["lease_left_seconds"], worker["started_at"], worker["alive"]) == (None, None, True)
    (queue,) = shown["queues"]
    assert (queue["queued"], queue["oldest_waiting_seconds"]) == (1, None)


def test_info_text_names_the_running_job(connection, cli_env, busy_worker) -> None:
    _, job = busy_worker
    out = ok(taskit(cli_env, "info")).stdout
    assert f"running sample_tasks.meta_then_wait (job {job.id}) for " in out
    assert "heartbeat" in out


def test_info_interval_refreshes_until_ctrl_c(connection, cli_env) -> None:
    sample_tasks.add.delay(1, 2)
    process = subprocess.Popen(taskit_command("info", "-i", "0.2"), env=cli_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    headers = 0
    deadline = time.monotonic() + 30
    while headers < 3:
        line = process.stdout.readline()
        assert line and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        headers += line.startswith("queue ")
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err, err


def test_job_shows_a_failed_job_and_a_finished_one(connection, cli_env) -> None:
    queue = Queue(connection=connection)
    (failed_id,) = failed_jobs(queue, 1)
    shown_failed = taskit(cli_env, "job", failed_id)  # its output holds the job's own traceback
    assert shown_failed.returncode == 0 and shown_failed.stderr == ""
    out = shown_failed.stdout
    assert "status       failed" in out and "task         sample_tasks.fail" in out
    assert "args         'failure 0'" in out
    assert out.rstrip().endswith("ValueError: failure 0") and "traceback:" in out
    done = queue.enqueue(sample_tasks.add, 2, 3)
    Worker([queue]).work(burst=True)
    out = ok(taskit(cli_env, "job", done.id)).stdout
    assert "result       5" in out and "traceback" not in out
    shown = json.loads(ok(taskit(cli_env, "job", done.id, "--json")).stdout)
    assert (shown["status"], shown["result"], shown["args"]) == ("finished", "5", ["2", "3"])
    line = one_error_line(taskit(cli_env, "job", "nope"))
    assert line == "Error: no job 'nope' (never enqueued, expired, or deleted)"


def test_failed_lists_failed_jobs_with_their_last_error_line(connection, cli_env) -> None:
    ids = failed_jobs(Queue(connection=connection), 2)
    failed_jobs(Queue("other", connection=connection), 1)
    out = ok(taskit(cli_env, "failed", "-q", "default")).stdout
    for i, job_id in enumerate(ids):
        assert f"{job_id}  default  " in out and f"    ValueError: failure {i}" in out
    assert out.strip().endswith("2 failed job(s) on 'default'.")
    everywhere = ok(taskit(cli_env, "failed", "--limit", "1")).stdout
    assert everywhere.strip().endswith("3 failed job(s), 2 shown on 'default', 'other'.")


def test_empty_removes_the_waiting_jobs(connection, cli_env) -> None:
    queue = Queue("emails", connection=connection)
    for i in range(3):
        queue.enqueue(sample_tasks.add, i, i)
    assert ok(taskit(cli_env, "empty", "emails")).stdout == "Removed 3 job(s) from queue 'emails'.\n"
    assert queue.count == 0
    assert "queue name 'no spaces' is invalid" in one_error_line(taskit(cli_env, "empty", "no spaces"))


def test_enqueue_from_the_shell(connection, cli_env) -> None:
    proc = ok(taskit(cli_env, "enqueue", "sample_tasks.add", "2", "3"))
    job = Job.fetch(proc.stdout.strip())
    assert (job.args, job.origin) == ((2, 3), "default")
    assert proc.stderr == "Enqueued sample_tasks.add(2, 3) on queue 'default'.\n"
    Worker([Queue(connection=connection)]).work(burst=True)
    assert job.return_value(refresh=True) == 5

    values = Job.fetch(ok(taskit(cli_env, "enqueue", "sample_tasks.add", '"4"', "x y", "-k", "extra=[1, null]",
                                 "-q", "q2")).stdout.strip())
    assert (values.args, values.kwargs, values.origin) == (("4", "x y"), {"extra": [1, None]}, "q2")
    later = Job.fetch(ok(taskit(cli_env, "enqueue", "sample_tasks.add", "1", "1", "--countdown", "60")).stdout.strip())
    assert later.get_status() == JobStatus.SCHEDULED
    named = Job.fetch(ok(taskit(cli_env, "enqueue", "myapp.send", "-1", "--no-import", "--job-id", "j1")).stdout.strip())
    assert (named.id, named.func_name, named.args) == ("j1", "myapp.send", (-1,))


def test_enqueue_errors_are_one_line(connection, cli_env) -> None:
    assert one_error_line(taskit(cli_env, "enqueue", "no_such_module.f")).startswith(
        "Error: cannot import module 'no_such_module': ModuleNotFoundError")
    assert one_error_line(taskit(cli_env, "enqueue", "sample_tasks.nothing")) == (
        "Error: module 'sample_tasks' has no function 'nothing' (use --no-import to enqueue the name as given)")
    usage = taskit(cli_env, "enqueue", "sample_tasks.add", "-k", "oops")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert usage.stderr.strip().endswith("Error: -k takes NAME=VALUE, not 'oops'")
    ok(taskit(cli_env, "enqueue", "sample_tasks.add", "--job-id", "same"))
    assert "already exists" in one_error_line(taskit(cli_env, "enqueue", "sample_tasks.add", "--job-id", "same"))


def test_help_lists_the_new_commands(cli_env) -> None:
    top = ok(taskit(cli_env, "--help")).stdout
    for name in ("dashboard ", "metrics ", "job ", "failed ", "empty ", "enqueue ", "taskit info -i 1"):
        assert name in top
    enqueue = " ".join(ok(taskit(cli_env, "enqueue", "--help")).stdout.split())
    assert "read as JSON when it is valid JSON" in enqueue


@pytest.mark.parametrize("stamp", ["inf", "nan", "1e20", "-99999999999999"])
def test_a_stored_time_no_datetime_can_hold_makes_the_job_corrupt_not_a_traceback(connection, cli_env, stamp) -> None:
    (job_id,) = failed_jobs(Queue(connection=connection), 1)
    set_fields(connection, job_id, {"en": stamp})
    line = one_error_line(taskit(cli_env, "job", job_id))
    assert line.startswith(f"Error: job {job_id} is corrupt: field 'ended_at' is unreadable ("), line
    with pytest.raises(SerializationError):
        Job.fetch(job_id, connection)


def test_failed_lists_the_other_jobs_when_one_is_corrupt(connection, cli_env) -> None:
    first, corrupt, last = failed_jobs(Queue(connection=connection), 3)
    set_fields(connection, corrupt, {"n": "not a number"})
    out = ok(taskit(cli_env, "failed", "-q", "default")).stdout
    assert f"{first}  default  " in out and f"{last}  default  " in out
    assert f"{corrupt}  default  -  (unreadable)\n    job {corrupt} is corrupt: field 'attempts'" in out
    assert out.strip().endswith("3 failed job(s) on 'default'.")


def test_failed_and_empty_name_a_queue_taskit_does_not_know(connection, cli_env) -> None:
    """As `requeue --all` does: a typo is not 'nothing to do'."""
    failed_jobs(Queue(connection=connection), 1)
    for command in (("failed", "-q", "defualt"), ("empty", "defualt")):
        line = one_error_line(taskit(cli_env, *command))
        assert line.startswith("Error: unknown queue 'defualt': no job waits on it or is in its registries"), line
        assert "'default'" in line
    assert ok(taskit(cli_env, "empty", "default")).stdout == "Removed 0 job(s) from queue 'default'.\n"
    assert ok(taskit(cli_env, "failed", "-q", "default")).stdout.strip().endswith("1 failed job(s) on 'default'.")


@pytest.mark.parametrize("interval", ["nan", "inf", "1e300", "0", "-1"])
def test_info_refuses_an_interval_it_cannot_sleep_in_one_line(cli_env, interval) -> None:
    proc = taskit(cli_env, "info", "-i", interval)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == f"Error: --interval must be from 0.1 to 86400 seconds, not {float(interval):g}"


def test_enqueue_refuses_a_mistyped_option_instead_of_passing_it_to_the_function(connection, cli_env) -> None:
    for typo in ("--countdwn", "--job_id", "-x"):
        proc = taskit(cli_env, "enqueue", "sample_tasks.add", "1", typo, "5")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().endswith(f"Error: no such option: {typo} (an argument that starts with '-' goes "
                                            f"after '--': taskit enqueue FUNCTION -- {typo})")
    assert Queue(connection=connection).count == 0
    negative = Job.fetch(ok(taskit(cli_env, "enqueue", "sample_tasks.add", "-1", "-2.5")).stdout.strip())
    dashes = Job.fetch(ok(taskit(cli_env, "enqueue", "sample_tasks.add", "-q", "-q-", "--", "-x", "--y")).stdout.strip())
    assert (negative.args, dashes.args, dashes.origin) == ((-1, -2.5), ("-x", "--y"), "-q-")


def test_job_data_cannot_drive_the_terminal_that_shows_it(connection, cli_env) -> None:
    """An exception message (or a worker name in Redis) with escape sequences: `taskit job`,
    `failed` and `info` show them as text, never send them to the terminal."""
    attack = "\x1b]0;retitled\x07\x1b[2J\x1b]52;c;cHduZWQ=\x07"
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail, attack)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    connection.zadd(keys.WORKERS, {"w1": time.time() + 60})
    connection.hset(keys.worker("w1"), mapping={"host": attack, "pid": "1", "queues": "default"})
    for command in (("job", job.id), ("failed",), ("info",)):
        shown = taskit(cli_env, *command)  # (`taskit job` shows the job's own traceback)
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        out = shown.stdout
        assert "\x1b" not in out and "\x07" not in out, command
        assert "\\x1b]0;retitled\\x07" in out, command
