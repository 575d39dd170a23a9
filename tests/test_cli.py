"""The `taskit` command (issue 3): `taskit worker`, `taskit requeue`, and clean errors.

Every command runs as a real subprocess (`python -m taskit ...`) against the private
redis-server of conftest.py.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import redis
import sample_tasks
from conftest import free_port, registered_worker, taskit_command
from records import key

from taskit import Job, JobStatus, Queue, Worker
from taskit.storage import keys


def taskit(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        taskit_command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exactly one line on stderr and no traceback; return it."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def failed_jobs(queue: Queue, count: int) -> list[str]:
    ids = [queue.enqueue(sample_tasks.fail, f"failure {i}").id for i in range(count)]
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    assert len(queue.failed_job_registry) == count
    return ids


# -- taskit worker ---------------------------------------------------------------------------


def test_worker_lists_its_tasks_and_runs_them(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    add = sample_tasks.add.delay(2, 3)
    fail = sample_tasks.fail.delay("bad")
    proc = ok(taskit(cli_env, "worker", "sample_tasks", "--burst"))
    first = proc.stderr.splitlines()[0]
    assert "started; queues: default;" in first
    for name in ("sample_tasks.add", "sample_tasks.fail", "sample_tasks.whoami", "sample_tasks.sleep"):
        assert name in first
    assert Job.fetch(add.id).result == 5
    assert Job.fetch(fail.id).get_status() == JobStatus.FAILED
    assert "sample_tasks.add(2, 3) finished in" in proc.stderr
    assert f"sample_tasks.fail('bad') failed: ValueError: bad (job {fail.id}, attempt 1)" in proc.stderr
    assert "stopped after 2 job(s)" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("order", [("high", "low"), ("low", "high")])
def test_queue_priority(connection: redis.Redis, cli_env: dict[str, str], order: tuple[str, str]) -> None:
    high, low = Queue("high", connection=connection), Queue("low", connection=connection)
    for i in range(3):  # the low jobs are older
        low.enqueue(sample_tasks.log_order, f"low{i}")
    for i in range(3):
        high.enqueue(sample_tasks.log_order, f"high{i}")
    args = [x for name in order for x in ("-q", name)]
    proc = ok(taskit(cli_env, "worker", "sample_tasks", *args, "--burst"))
    assert f"queues: {order[0]}, {order[1]};" in proc.stderr
    ran = [tag.decode() for tag in connection.lrange("test:order", 0, -1)]
    first, second = order
    assert ran == [f"{first}{i}" for i in range(3)] + [f"{second}{i}" for i in range(3)]


def test_max_jobs(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    jobs = [sample_tasks.add.delay(i, i) for i in range(5)]
    proc = ok(taskit(cli_env, "worker", "sample_tasks", "--max-jobs", "2"))  # no --burst: it exits on its own
    assert [Job.fetch(j.id).get_status() for j in jobs] == ["finished"] * 2 + ["queued"] * 3
    assert Queue(connection=connection).count == 3
    assert "stopped after 2 job(s)" in proc.stderr


def test_path_option_and_current_directory(connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path) -> None:
    name = f"cli_tasks_{uuid.uuid4().hex[:8]}"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(
        "from taskit import task\n\n@task\ndef greet(who):\n    return 'hello ' + who\n\n"
        "def shout(who):\n    return who.upper()\n"
    )
    queue = Queue(connection=connection)
    jobs = [queue.enqueue(f"{name}.greet", "path"), queue.enqueue(f"{name}.shout", "plain")]
    proc = ok(taskit(cli_env, "worker", name, "-P", str(tmp_path / "mods"), "--burst", cwd=tmp_path))
    assert f"{name}.greet" in proc.stderr.splitlines()[0]
    assert [Job.fetch(j.id).result for j in jobs] == ["hello path", "PLAIN"]

    relative = queue.enqueue(f"{name}.greet", "relative")
    ok(taskit(cli_env, "worker", name, "--path", "mods", "--burst", cwd=tmp_path))
    assert Job.fetch(relative.id).result == "hello relative"

    in_cwd = queue.enqueue(f"{name}.greet", "cwd")  # like `python -m`, the current directory is importable
    ok(taskit(cli_env, "worker", name, "--burst", cwd=tmp_path / "mods"))
    assert Job.fetch(in_cwd.id).result == "hello cwd"

    proc = taskit(cli_env, "worker", name, "--burst", cwd=tmp_path)  # neither: not importable
    assert one_error_line(proc) == f"Error: cannot import module {name!r}: ModuleNotFoundError: No module named {name!r}"


def test_name_option(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    job = sample_tasks.add.delay(1, 1)
    proc = ok(taskit(cli_env, "worker", "sample_tasks", "-n", "billing-1", "--burst"))
    assert Job.fetch(job.id).worker_name == "billing-1"
    assert "worker billing-1 started" in proc.stderr
    bad = taskit(cli_env, "worker", "sample_tasks", "--name", "no spaces please", "--burst")
    assert "worker name 'no spaces please' is invalid" in one_error_line(bad)


def test_url_option_wins_and_is_used_inside_jobs(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = dict(cli_env, TASKIT_REDIS_URL=dead)  # only -u names the live server
    job = sample_tasks.enqueue_followup.delay(4)
    ok(taskit(env, "worker", "sample_tasks", "-u", cli_env["TASKIT_REDIS_URL"], "--burst"))
    followup = Job.fetch(Job.fetch(job.id).result)
    assert followup.func_name == "sample_tasks.add" and followup.result == 8  # enqueued and run on the same Redis


def test_log_level(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    ok_job, bad_job = sample_tasks.add.delay(1, 1), sample_tasks.fail.delay()
    proc = ok(taskit(cli_env, "worker", "sample_tasks", "--burst", "--log-level", "warning"))
    assert "started" not in proc.stderr and "finished in" not in proc.stderr  # INFO lines hidden
    assert f"ERROR taskit.worker: default: sample_tasks.fail() failed: ValueError: boom (job {bad_job.id}" in proc.stderr
    assert Job.fetch(ok_job.id).result == 2


# -- taskit requeue ---------------------------------------------------------------------------


def test_requeue_ids_as_in_the_seed(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    queue = Queue("myqueue", connection=connection)
    foo, bar, other = failed_jobs(queue, 3)
    proc = ok(taskit(cli_env, "requeue", "--queue", "myqueue", "-u", cli_env["TASKIT_REDIS_URL"], foo, bar))
    assert proc.stdout.splitlines() == [f"requeued {foo}", f"requeued {bar}", "Requeued 2 of 2 job(s) on queue 'myqueue'."]
    assert proc.stderr == ""
    assert queue.job_ids == [foo, bar]
    assert queue.failed_job_registry.get_job_ids() == [other]
    assert Job.fetch(foo).get_status() == JobStatus.QUEUED and Job.fetch(foo).exc_info is None


def test_requeue_all_as_in_the_seed(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    queue = Queue("myqueue", connection=connection)
    ids = failed_jobs(queue, 3)
    untouched = failed_jobs(Queue("elsewhere", connection=connection), 1)
    proc = ok(taskit(cli_env, "requeue", "--queue", "myqueue", "-u", cli_env["TASKIT_REDIS_URL"], "--all"))
    assert sorted(proc.stdout.splitlines()[:-1]) == sorted(f"requeued {i}" for i in ids)
    assert proc.stdout.splitlines()[-1] == "Requeued 3 failed job(s) on queue 'myqueue'."
    assert sorted(queue.job_ids) == sorted(ids) and len(queue.failed_job_registry) == 0
    assert Queue("elsewhere", connection=connection).failed_job_registry.get_job_ids() == untouched
    again = ok(taskit(cli_env, "requeue", "--queue", "myqueue", "--all"))
    assert again.stdout == "Queue 'myqueue' has no failed jobs: nothing to requeue.\n"


def test_requeue_all_of_an_unknown_queue_says_so(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    failed_jobs(Queue("myqueue", connection=connection), 1)
    Queue("other", connection=connection).enqueue(sample_tasks.add, 1, 1)
    line = one_error_line(taskit(cli_env, "requeue", "--queue", "myqeue", "--all"))
    assert line == ("Error: unknown queue 'myqeue': no job waits on it or is in its registries "
                    "(known queues: 'myqueue', 'other')")
    # a queue whose name was forgotten but whose registries hold jobs is known
    connection.delete(keys.QUEUES)
    done = ok(taskit(cli_env, "requeue", "--queue", "myqueue", "--all"))
    assert done.stdout.splitlines()[-1] == "Requeued 1 failed job(s) on queue 'myqueue'."
    assert ok(taskit(cli_env, "requeue", "--queue", "other", "--all")).stdout.endswith("nothing to requeue.\n")


def test_requeue_names_each_id_it_could_not_requeue(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    queue = Queue("myqueue", connection=connection)
    good, expired = failed_jobs(queue, 2)
    connection.delete(key(connection, expired))  # its record expired; the registry entry remains
    finished = queue.enqueue(sample_tasks.add, 1, 1)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    (elsewhere,) = failed_jobs(Queue("other", connection=connection), 1)
    proc = taskit(cli_env, "requeue", "-q", "myqueue", "unknown-id", expired, good, finished.id, elsewhere, "bad id!")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"requeued {good}", "Requeued 1 of 6 job(s) on queue 'myqueue'."]
    assert proc.stderr.splitlines() == [
        "not requeued: unknown-id: no such job (never enqueued, or expired)",
        f"not requeued: {expired}: expired (its failed record is gone)",
        f"not requeued: {finished.id}: not failed (it is finished)",
        f"not requeued: {elsewhere}: belongs to queue 'other', not 'myqueue'",
        "not requeued: bad id!: job id 'bad id!' is invalid: use 1 to 128 letters, digits or the characters _ . : @ -",
    ]
    assert queue.job_ids == [good]  # the good id was requeued all the same
    assert Job.fetch(finished.id).get_status() == JobStatus.FINISHED


def test_requeue_usage_errors(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    for args in ([], ["--all", "some-id"]):
        proc = taskit(cli_env, "requeue", *args)
        assert proc.returncode == 2
        assert "Error: give job ids or --all (not both)" in proc.stderr
        assert "Traceback" not in proc.stderr


# -- clean errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["worker", "sample_tasks", "--burst"], ["requeue", "--all"], ["info"]])
def test_unreachable_redis(cli_env: dict[str, str], command: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    line = one_error_line(taskit(cli_env, *command, "-u", url, timeout=30))
    assert line.startswith(f"Error: cannot reach Redis at {url}: ")
    assert "Connection refused" in line


@pytest.mark.parametrize(("url", "shown"), [("foo://localhost", "foo://localhost"), ("not a url", "***"),
                                            ("redis://localhost:port/0", "redis://localhost:***/0")])
def test_bad_url(cli_env: dict[str, str], url: str, shown: str) -> None:
    for command in (["worker", "sample_tasks", "--burst"], ["requeue", "x"], ["info"]):
        line = one_error_line(taskit(cli_env, *command, "-u", url))
        assert line.startswith(f"Error: bad Redis URL {shown!r}: ")


def test_bad_url_from_the_environment(cli_env: dict[str, str]) -> None:
    line = one_error_line(taskit(dict(cli_env, TASKIT_REDIS_URL="http://example.com"), "info"))
    assert line.startswith("Error: bad Redis URL 'http://example.com': ")


def test_module_that_does_not_import(cli_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "broken_tasks.py").write_text("import taskit\n1 / 0\n")
    line = one_error_line(taskit(cli_env, "worker", "no_such_tasks_module", "--burst"))
    assert line == "Error: cannot import module 'no_such_tasks_module': ModuleNotFoundError: No module named 'no_such_tasks_module'"
    line = one_error_line(taskit(cli_env, "worker", "broken_tasks", "-P", str(tmp_path), "--burst"))
    assert line == "Error: cannot import module 'broken_tasks': ZeroDivisionError: division by zero"


def test_bad_queue_name_and_max_jobs(cli_env: dict[str, str]) -> None:
    line = one_error_line(taskit(cli_env, "worker", "sample_tasks", "-q", "no spaces", "--burst"))
    assert "queue name 'no spaces' is invalid" in line
    proc = taskit(cli_env, "worker", "sample_tasks", "--max-jobs", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--max-jobs" in proc.stderr


# -- help ---------------------------------------------------------------------------------------


def test_help(cli_env: dict[str, str]) -> None:
    top = ok(taskit(cli_env, "--help")).stdout
    assert top.startswith("Usage: taskit [OPTIONS] COMMAND [ARGS]...")
    for text in ("taskit worker myapp.tasks", "taskit requeue --queue default --all", "TASKIT_REDIS_URL",
                 "worker ", "requeue ", "info "):
        assert text in top
    worker = " ".join(ok(taskit(cli_env, "worker", "--help")).stdout.split(" "))
    flat = " ".join(worker.split())
    assert worker.startswith("Usage: taskit worker [OPTIONS] [MODULES]...")
    for option in ("-q, --queue NAME", "-u, --url URL", "-b, --burst", "-n, --name", "--max-jobs", "-P, --path",
                   "--log-level", "TASKIT_REDIS_URL", "-q high -q low"):
        assert option in worker
    assert "anything else fails, naming the function and the reason, and runs nothing" in flat
    requeue = ok(taskit(cli_env, "requeue", "-h")).stdout
    assert "taskit requeue --queue myqueue -u redis://localhost:6379 foo_job_id bar_job_id" in requeue
    assert "--all" in requeue


def test_info_lists_queues_and_live_workers(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    sample_tasks.add.delay(1, 2)
    with registered_worker(cli_env, connection, "info-worker", "-q", "other") as worker:
        out = taskit(cli_env, "info")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"Redis at {cli_env['TASKIT_REDIS_URL']}"
    default = next(line for line in out.stdout.splitlines() if line.startswith("default "))
    assert default.split()[1] == "1"  # one job queued
    assert "1 worker(s):" in out.stdout
    line = next(line for line in out.stdout.splitlines() if "info-worker" in line)
    assert f"pid {worker.pid}" in line and "queues other" in line and "holding 0 job(s)" in line and "s left" in line
