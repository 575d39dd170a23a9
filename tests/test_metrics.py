"""The Prometheus metrics (issue 14): read from Redis, parsed with prometheus_client's own parser."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import records
import redis
import sample_tasks
from conftest import free_port, registered_worker, taskit_command
from prometheus_client.parser import text_string_to_metric_families

from taskit import Queue, Worker, metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a metrics text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def known_state(connection: redis.Redis) -> None:
    """default: 3 finished add, 2 failed fail, 1 waiting (enqueued a second ago); emails: 2 waiting."""
    queue = Queue(connection=connection)
    for i in range(3):
        queue.enqueue(sample_tasks.add, i, i)
    for _ in range(2):
        queue.enqueue(sample_tasks.fail)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    queue.enqueue(sample_tasks.add, 9, 9)
    emails = Queue("emails", connection=connection)
    emails.enqueue(sample_tasks.add, 1, 2)
    emails.enqueue(sample_tasks.add, 3, 4)
    time.sleep(1.1)


def check_known_counts(found: dict) -> None:
    def value(name: str, **labels: str) -> float:
        return found[(name, tuple(sorted(labels.items())))]

    assert value("taskit_queue_jobs", queue="default", state="queued") == 1
    assert value("taskit_queue_jobs", queue="default", state="finished") == 3
    assert value("taskit_queue_jobs", queue="default", state="failed") == 2
    assert value("taskit_queue_jobs", queue="default", state="started") == 0
    assert value("taskit_queue_jobs", queue="emails", state="queued") == 2
    assert 1 <= value("taskit_queue_oldest_job_age_seconds", queue="default") < 60
    assert value("taskit_jobs_total", queue="default", task="sample_tasks.add", outcome="finished") == 3
    assert value("taskit_jobs_total", queue="default", task="sample_tasks.fail", outcome="failed") == 2
    assert value("taskit_job_duration_seconds_count", queue="default", task="sample_tasks.add") == 3
    assert value("taskit_job_duration_seconds_bucket", queue="default", task="sample_tasks.add", le="+Inf") == 3
    assert value("taskit_job_duration_seconds_bucket", queue="default", task="sample_tasks.add", le="0.005") == 3
    assert 0 <= value("taskit_job_duration_seconds_sum", queue="default", task="sample_tasks.fail") < 1
    assert value("taskit_workers") == 0


def test_metrics_text_has_the_known_counts(connection: redis.Redis) -> None:
    known_state(connection)
    check_known_counts(samples(metrics.generate_latest(connection).decode()))


@contextmanager
def metrics_server(cli_env: dict[str, str], stderr: list[str] | None = None) -> Iterator[str]:
    """A `taskit metrics` process; its /metrics URL once it answers. It must exit cleanly;
    its stderr is appended to `stderr`, if given, once it has."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    server = subprocess.Popen(taskit_command("metrics", "--port", str(port)), env=cli_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"taskit metrics did not answer: {server.communicate(timeout=5)}")
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert server.returncode == 0, err
    assert "Traceback" not in out + err, err
    if stderr is not None:
        stderr.append(err)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return samples(reply.read().decode())


def test_taskit_metrics_serves_them_without_the_dashboard(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    known_state(connection)
    with metrics_server(cli_env) as url:
        check_known_counts(scrape(url))


def test_live_workers_and_retries_through_metrics(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    """A real worker is counted while its lease runs; a job retried twice by its policy shows
    in the outcome="retried" series, on `taskit metrics` and on the dashboard's /metrics."""
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    job = sample_tasks.flaky.delay("retried-twice")
    with registered_worker(cli_env, connection, "metrics-worker"), metrics_server(cli_env) as url:
        assert job.wait(timeout=30) == 3
        dashboard = TestClient(create_app(connection), base_url="http://localhost").get("/metrics")
        assert dashboard.status_code == 200
        for found in (scrape(url), samples(dashboard.text)):
            assert found[("taskit_workers", ())] == 1
            flaky = (("queue", "default"), ("task", "sample_tasks.flaky"))
            assert found[("taskit_jobs_total", tuple(sorted((*flaky, ("outcome", "retried")))))] == 2
            assert found[("taskit_jobs_total", tuple(sorted((*flaky, ("outcome", "finished")))))] == 1
            assert ("taskit_jobs_total", tuple(sorted((*flaky, ("outcome", "failed"))))) not in found
            assert found[("taskit_job_duration_seconds_count", flaky)] == 3  # every attempt ran


def test_taskit_metrics_with_redis_down_answers_503_and_logs_one_line_per_scrape(
    connection: redis.Redis, cli_env: dict[str, str], redis_server
) -> None:
    """Not a traceback on every scrape (the server's default for an app that raises)."""
    stderr: list[str] = []
    with metrics_server(cli_env, stderr) as url:
        redis_server.stop()  # the `connection` fixture restarts it for the next test
        for _ in range(2):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url, timeout=30)
            assert refused.value.code == 503
            assert refused.value.read().decode().startswith("cannot reach Redis at redis://127.0.0.1:")
    err = stderr[0]
    lines = [line for line in err.splitlines() if "cannot reach Redis" in line]
    assert len(lines) == 2 and all(" ERROR taskit.metrics: GET /metrics: cannot reach Redis at " in x for x in lines), err


def test_jobs_naming_made_up_functions_add_one_series_not_one_each(connection: redis.Redis) -> None:
    """A hostile producer or a typo: 1,000 distinct names the worker cannot run, a function it
    may not run, and a record it cannot read, all count under task="(refused)"."""
    from taskit.storage import keys

    queue = Queue(connection=connection)
    queue.enqueue_many([queue.prepare_data(f"nowhere.made_up_{i}", (i,)) for i in range(1000)])
    queue.enqueue("os.system", "true")  # not a module the worker was given
    unreadable = queue.enqueue(sample_tasks.add, 1, 2, ttl=600)
    records.set_fields(connection, unreadable.id, {keys.Field.FUNC: "garbled_7", keys.Field.ARGS: b"\xc1"})
    queue.enqueue(sample_tasks.add, 1, 2)
    assert Worker([queue], modules=("sample_tasks",)).work(burst=True) == 1003
    found = samples(metrics.generate_latest(connection).decode())
    tasks = {dict(labels)["task"] for name, labels in found if name.startswith(("taskit_jobs", "taskit_job_duration"))}
    assert tasks == {"(refused)", "sample_tasks.add"}
    refused = (("outcome", "failed"), ("queue", "default"), ("task", "(refused)"))
    assert found[("taskit_jobs_total", refused)] == 1002
    assert found[("taskit_jobs_total", (("outcome", "finished"), ("queue", "default"), ("task", "sample_tasks.add")))] == 1
    series = [key for key in found if key[0].startswith(("taskit_jobs", "taskit_job_duration"))]
    assert len(series) < 40, len(series)  # (it was 2,000 and more: two per made-up name)


def test_the_refused_task_name_is_the_same_in_python_and_lua() -> None:
    from taskit.storage.scripts import source
    from taskit.storage.store import REFUSED_TASK

    assert f"local REFUSED_TASK = '{REFUSED_TASK}'" in source("finish")
