"""Every example of the seed document (shared/seed/000_0a1d15ebd77d6cd7.txt, RQ's "jobs"
page), written with taskit's names, works as written.

The seed's `Redis()` / `StrictRedis()` would reach localhost:6379; here they reach the
private test server instead. Nothing else is changed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from conftest import taskit_command
from records import exists, ttl

from taskit import Job, JobStatus, Queue, Worker, get_current_job

# -- the seed's functions, at module level so that a worker can find them by name ----------------


def add(x, y):  # "访问当前任务": get_current_job() inside a job
    job = get_current_job()
    print("Current job: %s" % (job.id,))  # noqa: UP031 (as in the seed)
    return x + y


def add_with_meta(x, y):  # "在任务上存储任意数据": meta + save_meta
    job = get_current_job()
    job.meta["handled_by"] = socket.gethostname()
    job.save_meta()

    # do more work
    time.sleep(1)
    return x + y


def say_hello(name="world"):
    return f"hello {name}"


def count_words_at_url(url):  # never run here: the tests must not reach the network
    raise AssertionError("count_words_at_url must not run in the tests")


def foo_job():
    raise RuntimeError("foo failed")


# -- 从Redis检索任务: Job.fetch and its attributes --------------------------------------------------


def test_job_fetch_and_its_attributes(connection: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    queue = Queue(connection=connection)
    queue.enqueue(say_hello, "seed", job_id="my_job_id")
    queue.enqueue(foo_job, job_id="my_failing_job")
    Worker([queue]).work(burst=True)

    redis_client = connection  # the seed: redis = Redis()
    job = Job.fetch("my_job_id", connection=redis_client)
    print("Status: %s" % job.get_status())  # noqa: UP031 (as in the seed)
    assert capsys.readouterr().out == "Status: finished\n"

    assert job.get_status() == JobStatus.FINISHED
    assert job.func_name == "test_seed.say_hello"
    assert job.args == ("seed",)
    assert job.kwargs == {}
    assert job.result == "hello seed"
    assert job.enqueued_at <= job.started_at <= job.ended_at
    assert job.exc_info is None

    failed = Job.fetch("my_failing_job", connection=redis_client)
    assert failed.get_status() == JobStatus.FAILED
    assert failed.result is None
    assert "RuntimeError: foo failed" in failed.exc_info


def test_job_fetch_many(connection: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    queue = Queue(connection=connection)
    queue.enqueue(say_hello, job_id="foo_id")
    queue.enqueue(add, 1, 2, job_id="bar_id")

    jobs = Job.fetch_many(["foo_id", "bar_id"], connection=connection)
    for job in jobs:
        print("Job %s: %s" % (job.id, job.func_name))  # noqa: UP031 (as in the seed)

    assert capsys.readouterr().out == "Job foo_id: test_seed.say_hello\nJob bar_id: test_seed.add\n"
    assert Job.fetch_many(["foo_id", "missing_id"], connection=connection)[1] is None


# -- 访问“当前”任务: get_current_job ----------------------------------------------------------------


def test_get_current_job_inside_add(connection: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(add, 2, 3)
    Worker([queue]).work(burst=True)
    assert f"Current job: {job.id}\n" in capsys.readouterr().out
    assert Job.fetch(job.id).result == 5


# -- 在任务上存储任意数据: meta and save_meta ---------------------------------------------------------


def test_meta_and_save_meta(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(add_with_meta, 2, 3)
    seen: list[dict[str, object]] = []

    def watch() -> None:  # someone else reads the job while it sleeps
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            other = Job.fetch(job.id, connection=redis.Redis(port=connection.connection_pool.connection_kwargs["port"]))
            if other.meta:
                seen.append({"status": other.get_status(refresh=False).value, **other.meta})
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    Worker([queue]).work(burst=True)
    watcher.join()
    assert seen == [{"status": "started", "handled_by": socket.gethostname()}]
    done = Job.fetch(job.id)
    assert done.result == 5 and done.meta == {"handled_by": socket.gethostname()}


# -- 在队列中工作的时间: ttl -----------------------------------------------------------------------


def test_ttl_examples(connection: redis.Redis) -> None:
    # 创建任务时:
    job = Job.create(func=say_hello, ttl=43)
    assert job.ttl == 43 and job.func_name == "test_seed.say_hello"
    assert job.get_status(refresh=False) == JobStatus.CREATED

    # 或者排队时:
    q = Queue(connection=connection)
    job = q.enqueue(count_words_at_url, "http://nvie.com", ttl=43)
    assert job.ttl == 43 and Job.fetch(job.id).ttl == 43
    assert 40 < ttl(connection, job.id) <= 43  # it is dropped if no worker starts it in time
    assert Job.fetch(job.id).args == ("http://nvie.com",)

    created = q.enqueue_job(Job.create(func=say_hello, ttl=43))
    assert 40 < ttl(connection, created.id) <= 43


def test_ttl_expired_job_never_runs(connection: redis.Redis) -> None:
    q = Queue(connection=connection)
    job = q.enqueue(count_words_at_url, "http://nvie.com", ttl=1)
    deadline = time.monotonic() + 5
    while exists(connection, job.id):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert Worker([q]).work(burst=True) == 0  # count_words_at_url would raise if it ran
    assert q.count == 0


# -- 失败任务: the failed-jobs script, run as a plain script ---------------------------------------------

FAILED_JOBS_SCRIPT = """\
import os

from redis import StrictRedis
from taskit import Queue, Worker
from taskit.job import Job


def div_by_zero(x):
    return x / 0


connection = StrictRedis.from_url(os.environ["TASKIT_REDIS_URL"])  # the seed: StrictRedis()
queue = Queue(connection=connection)
job = queue.enqueue(div_by_zero, 1)
registry = queue.failed_job_registry

worker = Worker([queue])
worker.work(burst=True)

assert len(registry) == 1  # 失败任务被保存在FailedJobRegistry
assert job.is_failed

registry.requeue(job)  # 重新入队

assert len(registry) == 0

assert queue.count == 1
print(job.id)
"""


def test_failed_jobs_script(connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "failed_jobs.py"
    script.write_text(FAILED_JOBS_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    job = Job.fetch(proc.stdout.strip())
    assert job.func_name == "__main__.div_by_zero"
    assert job.get_status() == JobStatus.QUEUED and job.exc_info is None
    assert Queue(connection=connection).job_ids == [job.id]
    assert "ZeroDivisionError: division by zero" in proc.stderr  # the worker's log line


def test_failed_jobs_example_in_process(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(foo_job)
    registry = queue.failed_job_registry
    worker = Worker([queue])
    worker.work(burst=True)
    assert len(registry) == 1
    assert job.is_failed
    registry.requeue(job)
    assert len(registry) == 0
    assert queue.count == 1


def test_failure_ttl(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(foo_job, failure_ttl=300)  # 5 minutes in seconds
    default = queue.enqueue(foo_job)  # 默认情况下，失败的任务将保留1年
    Worker([queue]).work(burst=True)
    assert 290 < ttl(connection, job.id) <= 300
    ended = Job.fetch(job.id).ended_at.timestamp()
    assert queue.failed_job_registry.get_expiration_time(job).timestamp() == pytest.approx(ended + 300, abs=0.01)
    year = 365 * 24 * 3600
    assert year - 10 < ttl(connection, default.id) <= year


# -- 重新排队失败的任务: taskit requeue ---------------------------------------------------------------


def test_taskit_requeue_commands(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    queue = Queue("myqueue", connection=connection)
    for job_id in ("foo_job_id", "bar_job_id", "baz_job_id"):
        queue.enqueue(foo_job, job_id=job_id)
    Worker([queue]).work(burst=True)
    assert len(queue.failed_job_registry) == 3
    url = cli_env["TASKIT_REDIS_URL"]

    # 将重新排队foo_job_id和bar_job_id
    proc = subprocess.run(
        taskit_command("requeue", "--queue", "myqueue", "-u", url, "foo_job_id", "bar_job_id"),
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert queue.job_ids == ["foo_job_id", "bar_job_id"]
    assert queue.failed_job_registry.get_job_ids() == ["baz_job_id"]

    # 将重新排队所有任务
    proc = subprocess.run(
        taskit_command("requeue", "--queue", "myqueue", "-u", url, "--all"),
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert queue.job_ids == ["foo_job_id", "bar_job_id", "baz_job_id"]
    assert len(queue.failed_job_registry) == 0
    assert "Requeued 1 failed job(s) on queue 'myqueue'." in proc.stdout

