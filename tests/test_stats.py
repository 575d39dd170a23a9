"""The per-minute and per-task counters the finish step keeps (issue 14; lua/lib/stats.lua).

They feed the dashboard's charts and the Prometheus metrics: written by the same script call
that records a batch, counting only outcomes that were really recorded.
"""

from __future__ import annotations

import time

import redis
import sample_tasks

from taskit import Queue, Worker
from taskit.storage import keys
from taskit.storage.store import Record, Store


def minute_now() -> int:
    return int(time.time() // 60)


def test_a_worker_counts_what_it_finished_failed_and_retried(connection: redis.Redis, queue: Queue) -> None:
    for i in range(3):
        queue.enqueue(sample_tasks.add, i, 1)
    for _ in range(2):
        queue.enqueue(sample_tasks.fail)
    queue.enqueue(sample_tasks.flaky, "k")  # fails twice (two retries), then finishes
    Worker([queue], modules=("sample_tasks",)).work(burst=True)

    store = Store.of(connection)
    now = minute_now()
    (minutes,) = store.minute_counts(["default"], now - 60, now)
    assert sum(minutes["d"].values()) == 4
    assert sum(minutes["f"].values()) == 2
    assert sum(minutes["r"].values()) == 2
    (tasks,) = store.task_totals(["default"])
    assert tasks["sample_tasks.add"]["d"] == 3
    assert tasks["sample_tasks.fail"]["f"] == 2
    assert (tasks["sample_tasks.flaky"]["r"], tasks["sample_tasks.flaky"]["d"]) == (2, 1)
    for name, counts in tasks.items():  # every run landed in exactly one duration bucket
        runs = sum(n for kind, n in counts.items() if kind.startswith("h"))
        assert runs == counts.get("d", 0) + counts.get("f", 0) + counts.get("r", 0), name
        assert counts["us"] >= 0
    # the hour's counters expire a day or so after their hour
    ttl = connection.ttl(keys.of_queue("default").stats(int(time.time() // 3600)))
    assert 86_400 < ttl <= 26 * 3600


def test_a_slow_job_lands_in_a_slower_bucket(connection: redis.Redis, queue: Queue) -> None:
    queue.enqueue(sample_tasks.sleep, 0.3)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    (tasks,) = Store.of(connection).task_totals(["default"])
    counts = tasks["sample_tasks.sleep"]
    assert counts["h0.5"] == 1 and counts["us"] >= 300_000


def test_a_record_of_a_lost_claim_or_a_released_job_is_not_counted(connection: redis.Redis, queue: Queue) -> None:
    for i in range(3):
        queue.enqueue(sample_tasks.add, i, i)
    store = Store.of(connection)
    now = time.time()
    claimed = store.claim("w1", ["default"], now, now + 30, 3).jobs
    (first, token, _, _), (second, token2, _, _), (third, token3, _, _) = claimed
    lost = Record(first, "default", token + 1, "finished", b"", 500, micros=1000)
    released = Record(second, "default", token2, "released")
    recorded = Record(third, "default", token3, "finished", b"", 500, micros=20)
    assert store.finish("w1", [lost, released, recorded], now) == [0, 1, 1]
    (tasks,) = store.task_totals(["default"])
    assert tasks == {"sample_tasks.add": {"d": 1, "us": 20, "h0.005": 1}}
    (minutes,) = store.minute_counts(["default"], minute_now() - 1, minute_now() + 1)
    assert minutes == {"d": {int(now // 60): 1}, "f": {}, "r": {}}


def test_a_damaged_stats_key_never_stops_outcomes_from_being_recorded(connection: redis.Redis, queue: Queue) -> None:
    connection.set(keys.of_queue("default").totals, "not a hash")
    connection.set(keys.of_queue("default").stats(int(time.time() // 3600)), "not a hash either")
    job = queue.enqueue(sample_tasks.add, 2, 3)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    assert job.return_value(refresh=True) == 5
    assert job.id in queue.finished_job_registry
