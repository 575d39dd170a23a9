"""Round trips per operation, counted on the wire (DESIGN.md principle 3).

Enqueue is covered in test_enqueue.py; here: claim, finish, finish+claim, heartbeat, and a
worker's whole run. A change that adds a round trip to any of them fails here.
"""

from __future__ import annotations

import time

import sample_tasks
from roundtrips import counting_client

from taskit import Queue, Worker
from taskit.storage.store import Record, Store


def test_claim_finish_and_heartbeat_are_one_round_trip_each(redis_server, connection):
    client, trips = counting_client(redis_server)
    store = Store(client)
    Queue(connection=client).enqueue_many([Queue(connection=client).prepare_data(sample_tasks.add, (i, 1)) for i in range(10)])
    now = time.time()

    trips.reset()
    claimed = store.claim("w1", ["default"], now, now + 30, 5).jobs
    assert (len(claimed), trips.trips) == (5, 1)

    trips.reset()
    renewed = store.heartbeat("w1", now + 60, 90, [(job_id, "default", token) for job_id, token, _, _ in claimed])
    assert (renewed, trips.trips) == (([], []), 1)

    records = [Record(job_id, "default", token, "finished", b"\x01", 500) for job_id, token, _, _ in claimed]
    trips.reset()
    recorded, more = store.finish_and_claim("w1", records[:3], now, ["default"], now + 30, 5, (False, None))
    assert (recorded, len(more.jobs), trips.trips) == ([1, 1, 1], 5, 1)

    trips.reset()
    assert store.finish("w1", records[3:], now) == [1, 1]
    assert trips.trips == 1


def test_a_worker_needs_a_few_round_trips_per_hundred_jobs(redis_server, connection):
    client, trips = counting_client(redis_server)
    queue = Queue(connection=client)
    total = 1000
    queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, 1)) for i in range(total)])
    trips.reset()
    worker = Worker([queue], lease=600)  # no heartbeat during the run
    assert worker.work(burst=True) == total
    # start-up (register, maintenance: 2) + claims of up to 64 jobs, each recording the
    # last batch in the same round trip + the final claim and sign-off
    assert trips.trips <= 6 + total / 64 * 2, trips.trips
    print(f"{trips.trips} round trips for {total} jobs")
