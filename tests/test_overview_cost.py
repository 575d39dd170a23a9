"""What the dashboard's overview and /metrics cost with many queues (the review of issue 14).

With 2,000 queues one load of `/` sent ~72,000 commands (the day chart read 25 hashes per
queue, every queue's counts were read) and returned 1.4 MB of HTML. Counted here with the
server's INFO commandstats (never timed: bench/overview_cost.py measures the time).
"""

from __future__ import annotations

import re
import time
from typing import Any

import redis
import sample_tasks
from roundtrips import commands_run

from taskit import Queue, Worker, metrics
from taskit.dashboard.app import QUEUES_PER_PAGE
from taskit.storage import keys

QUEUES = 120


def _client(connection: redis.Redis) -> Any:
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    return TestClient(create_app(connection), base_url="http://localhost")


def _fill(connection: redis.Redis, names: list[str], hours_ago: tuple[int, ...] = (3, 2)) -> int:
    """One job waiting per queue, and 2 finished + 1 failed per queue in each of the past
    hours given; how many finished jobs that makes."""
    hour = int(time.time() // 3600)
    pipe = connection.pipeline(transaction=False)
    for name in names:
        for ago in hours_ago:
            pipe.hset(keys.of_queue(name).stats(hour - ago), mapping={f"d:{(hour - ago) * 60 + 5}": 2,
                                                              f"f:{(hour - ago) * 60 + 9}": 1})
    pipe.execute()
    for name in names:
        Queue(name, connection).enqueue(sample_tasks.add, 1, 2)
    return 2 * len(names) * len(hours_ago)


def _day_totals(html: str) -> tuple[int, int]:
    caption = re.search(r"Every queue, last day, per minute: <span class=\"done\">(\d+) finished</span>, "
                        r"<span class=\"failed\">(\d+) failed</span>", html)
    assert caption, html[-3000:]
    return int(caption[1]), int(caption[2])


def test_an_overview_load_costs_a_page_of_queues_and_the_hours_not_over(connection, redis_server) -> None:
    names = [f"q{i:04d}" for i in range(QUEUES)]
    finished = _fill(connection, names)
    Worker([Queue(names[0], connection)], connection, modules=("sample_tasks",)).work(burst=True)  # live hour: 1
    client = _client(connection)
    client.get("/")  # the past hours are read once, and kept
    with commands_run(redis_server) as ran:
        page = client.get("/")
    assert page.status_code == 200
    assert page.text.count('<td><a href="/queues/') == QUEUES_PER_PAGE  # a page of queues, not all
    # the charts: the hours still being written, one or two hashes per queue, not 25
    assert ran["hgetall"] <= 2 * QUEUES, ran
    # the counts: a page of queues (a list and 5 registries each; the head of a waiting queue)
    assert ran["zcount"] == 5 * QUEUES_PER_PAGE and ran["llen"] == QUEUES_PER_PAGE, ran
    assert sum(ran.values()) - ran["hgetall"] <= 10 * QUEUES_PER_PAGE, ran
    # and they still count every queue: the kept hours, once, and the live one
    assert _day_totals(page.text) == (finished + 1, finished // 2)


def test_the_charts_count_a_queue_that_appears_later_and_nothing_twice(connection) -> None:
    names = [f"q{i:04d}" for i in range(10)]
    finished = _fill(connection, names)
    client = _client(connection)
    assert _day_totals(client.get("/").text) == (finished, finished // 2)
    later = _fill(connection, ["late-queue"])
    assert _day_totals(client.get("/").text) == (finished + later, (finished + later) // 2)
    assert _day_totals(client.get("/?match=q0001").text) == (finished + later, (finished + later) // 2)


def test_the_overview_pages_and_filters_queues(connection) -> None:
    names = [f"q{i:04d}" for i in range(QUEUES)]
    _fill(connection, names, ())
    client = _client(connection)
    first = client.get("/").text
    assert "q0000" in first and f"q{QUEUES_PER_PAGE - 1:04d}" in first and f"q{QUEUES_PER_PAGE:04d}" not in first
    assert f"{QUEUES} queue(s), {QUEUES_PER_PAGE} a page" in first and "next page" in first
    last = client.get("/?page=3").text
    assert f"q{QUEUES - 1:04d}" in last and "next page" not in last and "previous page" in last
    matched = client.get("/?match=q001").text
    assert matched.count('<td><a href="/queues/') == 10 and f"10 of {QUEUES} queue(s)" in matched
    assert "No queue name contains nothing-like-this" in client.get("/?match=nothing-like-this").text


def test_a_queue_page_has_its_own_charts(connection) -> None:
    _fill(connection, ["emails", "other"])
    page = _client(connection).get("/queues/emails").text
    assert 'Queue emails, last day, per minute: <span class="done">4 finished</span>' in page


def test_metrics_read_the_head_of_a_queue_only_when_a_job_waits(connection, redis_server) -> None:
    """The series are all there; the head of an empty queue is not read (it has none)."""
    names = [f"q{i:04d}" for i in range(30)]
    for name in names:
        Queue(name, connection).enqueue(sample_tasks.add, 1, 2)
    Worker([Queue(name, connection) for name in names], connection, modules=("sample_tasks",)).work(burst=True)
    Queue(names[0], connection).enqueue(sample_tasks.add, 3, 4)
    with commands_run(redis_server) as ran:
        text = metrics.generate_latest(connection).decode()
    assert ran["lindex"] == 1, ran
    assert text.count("taskit_queue_oldest_job_age_seconds{") == 30
    assert text.count('state="finished"} 1.0') == 30
