"""Round trips per operation, counted on the wire (DESIGN.md principle 3).

Enqueue is covered in test_enqueue.py; here: claim, finish, finish+claim, heartbeat, an idle
worker's pickup of a new job, and a worker's whole run. A change that adds a round trip to any of them fails here.
"""

from __future__ import annotations

import threading
import time

import sample_tasks
from roundtrips import Trips, counting_client

from taskit import Queue, Worker, task
from taskit.storage.store import Record, Store
from taskit.worker import claims


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


def test_a_worker_needs_a_few_round_trips_per_hundred_jobs(redis_server, connection, monkeypatch):
    # claims always of `prefetch` jobs: their size follows the jobs' run time (worker/claims.py),
    # which a loaded machine stretches; what is counted here is the round trips per claim
    monkeypatch.setattr(claims, "BATCH_SECONDS", 60.0)
    client, trips = counting_client(redis_server)
    queue = Queue(connection=client)
    total = 1000
    queue.enqueue_many([queue.prepare_data(sample_tasks.add, (i, 1)) for i in range(total)])
    trips.reset()
    worker = Worker([queue], lease=600)  # no heartbeat during the run
    assert worker.work(burst=True) == total
    # start-up (register, maintenance: 2) + claims of up to 64 jobs, each recording the
    # last batch in the same round trip + the final claim and sign-off; + 4 for a run slowed
    # by a loaded machine (the worker's heartbeat, its background connection's handshake)
    assert trips.trips <= 10 + total / 64 * 2, trips.trips
    print(f"{trips.trips} round trips for {total} jobs")


#: the round trips the worker's client had made when `note_trips` started
_TRIPS_AT_START: list[int] = []
_TRIPS: list[Trips] = []


@task(queue="pickup")
def note_trips() -> None:
    _TRIPS_AT_START.append(_TRIPS[0].trips)


def test_an_idle_worker_picks_up_a_new_job_in_one_round_trip(redis_server, connection, monkeypatch):
    """Idle, the worker waits in Redis with its claim pipelined behind the wait
    (Store.wait_and_claim): the push ends the wait, whose reply brings the claimed job, and
    the job starts without another write to Redis (a wake-up and then a claim would be one
    more)."""
    from taskit.worker import worker as worker_module

    client, trips = counting_client(redis_server, socket_timeout=130)
    _TRIPS[:], _TRIPS_AT_START[:] = [trips], []
    monkeypatch.setattr(worker_module, "IDLE_BLOCK", 60.0)  # one wait lasts the whole test
    w = Worker([Queue("pickup", connection=client)], lease=600, maintenance_interval=600)
    w.store.block_seconds = 60.0
    thread = threading.Thread(target=w.work)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not any(c["cmd"] == "blpop" for c in connection.client_list()):
            assert time.monotonic() < deadline, "the worker never waited in Redis"
            time.sleep(0.01)
        trips.reset()
        Queue("pickup", connection=connection).enqueue(note_trips)  # (the producer's client: not counted)
        while not _TRIPS_AT_START and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _TRIPS_AT_START == [0]
    finally:
        w.request_stop()
        thread.join(10)


def test_an_idle_pickup_hands_its_connection_back_as_the_next_pickup_begins(redis_server, connection):
    """The pickup's connection goes back to the pool at the next pickup, before its wait,
    not between the claim's reply and the job's start (Store._send_and_read); the pool then
    checks it, so a connection Redis closed meanwhile is replaced without an error."""
    client, _ = counting_client(redis_server)
    pool = client.connection_pool
    store = Store(client)
    queue = Queue("pickup", connection=connection)  # (the producer's own client)
    queue.enqueue(sample_tasks.add, 1, 2)
    assert len(store.wait_and_claim("w1", ["pickup"], 1.0, 30.0, 1).jobs) == 1
    assert len(pool._in_use_connections) == 1  # held while the job would run

    held = next(iter(pool._in_use_connections))
    held.send_command("CLIENT", "ID")
    connection.client_kill_filter(_id=held.read_response())  # Redis closes it between pickups
    queue.enqueue(sample_tasks.add, 3, 4)
    assert len(store.wait_and_claim("w1", ["pickup"], 1.0, 30.0, 1).jobs) == 1
    assert len(pool._in_use_connections) == 1
