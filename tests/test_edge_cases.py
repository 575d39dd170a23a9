"""Edge cases a review of the core found broken, kept as regression tests: waiting on jobs
that drop their record, blocks against short socket timeouts, results not yet recorded,
lost claims, blame for a worker's death, corrupt counters, lost claim replies, fine
periodic schedules, the order of handed-back jobs, long queue names under `-c N`.

Tasks used by subprocess workers are defined here too (`taskit worker test_edge_cases`).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import fault_tasks
import pytest
import redis
import sample_tasks
from records import field, inflight_keys, set_fields
from test_faults import FAST, WorkerProcess, wait_until

import taskit
from taskit import Job, JobStatus, Queue, Retry, Worker, get_current_job, task
from taskit.exceptions import JobFailedError
from taskit.storage import keys
from taskit.storage.store import Store

# -- tasks ---------------------------------------------------------------------------------------


def _count(name: str) -> int:
    job = get_current_job()
    assert job is not None
    return int(job.connection.incr(f"review:calls:{name}"))


def calls(connection: redis.Redis, name: str) -> int:
    return int(connection.get(f"review:calls:{name}") or 0)


@task
def counted(name: str) -> str:
    _count(name)
    return name


@task
def counted_sleep(name: str, seconds: float) -> str:
    _count(name)
    time.sleep(seconds)
    return name


@task(retry=Retry(max=5, interval=2))
def slow_then_fail_then_ok(name: str) -> int:
    """Attempt 1 is slow, attempt 2 fails (retried 2 s later), later attempts succeed."""
    n = _count(name)
    job = get_current_job()
    if job.attempts == 1:
        time.sleep(4)
    elif job.attempts == 2:
        raise RuntimeError("attempt 2 fails")
    return n


def places(connection: redis.Redis, job_id: str, queue: str = "default") -> list[str]:
    """Every list or registry that holds `job_id`."""
    found = []
    if job_id.encode() in connection.lrange(keys.of_queue(queue).queue, 0, -1):
        found.append("queue")
    for kind in keys.REGISTRIES:
        if connection.zscore(keys.of_queue(queue).registry(kind), job_id) is not None:
            found.append(kind)
    for key in inflight_keys(connection):
        if job_id.encode() in connection.lrange(key, 0, -1):
            found.append(key.decode())
    return found


# -- 1. job.wait() and result_ttl=0 / failure_ttl=0 ----------------------------------------------


def _burst_later(queue: Queue, delay: float = 0.3) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        Worker([queue], modules=("sample_tasks",)).work(burst=True)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_wait_on_a_result_ttl_zero_job_returns(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.add, 1, 2, result_ttl=0)
    thread = _burst_later(queue)
    started = time.monotonic()
    try:
        # (timeout below the client's 5 s socket timeout: see test 2 for that bug)
        assert job.wait(timeout=3) is None  # Job.wait: "ended, and result_ttl=0 dropped the record"
    finally:
        thread.join()
    assert time.monotonic() - started < 2


def test_wait_on_a_failure_ttl_zero_job_raises_job_failed(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail, failure_ttl=0)
    thread = _burst_later(queue)
    try:
        with pytest.raises(JobFailedError):
            job.wait(timeout=3)  # raises NoSuchJobError after the full 3 s instead
    finally:
        thread.join()


# -- 2. job.wait() blocks as long as redis-py's default socket timeout ---------------------------


def test_wait_times_out_on_time_with_a_default_client(connection: redis.Redis) -> None:
    assert connection.connection_pool.connection_kwargs["socket_timeout"] == 5  # redis.Redis() as users build it
    job = Queue(connection=connection).enqueue(sample_tasks.add, 1, 2)  # nobody runs it
    started = time.monotonic()
    with pytest.raises(taskit.exceptions.WaitTimeoutError):  # today: RedisUnavailableError after ~60 s
        job.wait(timeout=12)
    assert time.monotonic() - started < 15


# -- 3. a job run but not yet recorded loses its lease --------------------------------------------


def test_a_finished_job_is_not_run_again_while_the_next_job_runs(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    queue.enqueue(counted, "warm")          # the first claim takes one job; then the batch grows
    fast = queue.enqueue(counted, "fast")
    queue.enqueue(counted_sleep, "slow", 3.0)  # claimed in the same batch as `fast`

    def another_worker() -> None:  # any other worker, 2 s later: its maintenance step sees fast's lease expired
        time.sleep(2.0)
        Worker([queue], name="other", lease=1, maintenance_interval=0.1).work(burst=True)

    thread = threading.Thread(target=another_worker)
    thread.start()
    Worker([queue], name="main", lease=1, maintenance_interval=0.1).work(burst=True)
    thread.join()
    job = Job.fetch(fast.id)
    assert calls(connection, "fast") == 1, "a job that had finished was recovered and run again"
    assert job.recoveries == 0


# -- 4. a claim lost once is never run by this worker again --------------------------------------


def test_a_worker_runs_a_job_it_lost_once_when_it_claims_it_again(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    job = slow_then_fail_then_ok.delay("x")
    a = WorkerProcess(cli_env, tmp_path, "test_edge_cases", *FAST, "-n", "A")
    try:
        wait_until(lambda: Job.fetch(job.id).get_status() == JobStatus.STARTED, what="attempt 1 to start on A")
        a.signal(signal.SIGSTOP)  # A stalls (GC pause, swapped out, ...) past its 1 s lease mid-job
        time.sleep(1.5)
        # another worker recovers the job and runs attempt 2, which fails: retried in 2 s
        Worker([Queue(connection=connection)], name="B", lease=1, maintenance_interval=0.1).work(burst=True)
        assert Job.fetch(job.id).get_status() == JobStatus.SCHEDULED
        a.signal(signal.SIGCONT)  # A's heartbeat now learns it lost attempt 1; later A claims the retry
        wait_until(lambda: Job.fetch(job.id).get_status() in (JobStatus.FINISHED, JobStatus.FAILED),
                   timeout=20, what="the job to end")
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED, (job.exc_info, a.output()[-3000:])
        assert calls(connection, "x") == 3
    finally:
        a.signal(signal.SIGCONT)
        a.stop()


# -- 5. prefetched jobs that never ran are blamed for their worker's death -------------------------


def test_prefetched_jobs_are_not_blamed_for_their_workers_death(connection: redis.Redis, cli_env, tmp_path) -> None:
    fault_tasks.work.delay(0)  # the first claim takes one job; after it the batch grows
    killer = fault_tasks.kill_my_worker.delay()
    bystanders = [fault_tasks.work.delay(i) for i in range(5)]  # claimed in the killer's batch
    for _ in range(4):  # workers until the killer is abandoned
        WorkerProcess(cli_env, tmp_path, *FAST, "--burst", "--max-deaths", "1").wait()
        if Job.fetch(killer.id).get_status() == JobStatus.FAILED:
            break
        time.sleep(1.3)  # the dead worker's lease runs out
    assert WorkerProcess(cli_env, tmp_path, *FAST, "--burst", "--max-deaths", "1").wait() == 0
    assert "abandoned" in Job.fetch(killer.id).exc_info
    for i, bystander in enumerate(bystanders):
        job = Job.fetch(bystander.id)
        assert (job.get_status(), job.exc_info) == (JobStatus.FINISHED, None), f"bystander {i} was blamed"


# -- 6. the supervisor fails a timed-out job on a truncated queue name ----------------------------


def test_a_job_killed_for_its_timeout_on_a_long_queue_lands_in_its_failed_registry(
    connection: redis.Redis, cli_env, tmp_path
) -> None:
    long_name = "q" * 80  # validate_id allows up to 128 characters
    stuck = fault_tasks.stuck.apply_async((60,), queue=long_name)
    parent = WorkerProcess(cli_env, tmp_path, "-q", long_name, "-c", "1")
    try:
        wait_until(lambda: Job.fetch(stuck.id).get_status() == JobStatus.FAILED, timeout=30, what="the kill")
        assert "was killed" in Job.fetch(stuck.id).exc_info
        found = places(connection, stuck.id, long_name)
        truncated = connection.zscore(keys.of_queue("q" * 64).registry("failed"), stuck.id) is not None
        assert "failed" in found, f"in {found} of its queue; in the failed registry of 'q'*64: {truncated}"
    finally:
        parent.signal(signal.SIGTERM)
        parent.wait()


# -- 7. a script error midway leaves partial writes: jobs lost from every list --------------------


def test_a_corrupt_attempts_field_loses_no_other_job(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    queue.enqueue(counted, "warm")
    good = [queue.enqueue(counted, f"good{i}") for i in range(3)]
    bad = queue.enqueue(counted, "bad")
    set_fields(connection, bad.id, {keys.Field.ATTEMPTS: b"not a number"})
    crashed = None
    try:
        Worker([queue], name="w").work(burst=True)
    except taskit.exceptions.TaskitError as exc:
        crashed = exc
    lost = {j.id: field(connection, j.id, keys.Field.STATUS) for j in [*good, bad] if not places(connection, j.id)}
    assert not lost, f"jobs in no queue, registry or in-flight list (hash kept): {lost}; worker raised {crashed!r}"
    assert crashed is None


def test_a_corrupt_recoveries_field_does_not_lose_the_job(connection: redis.Redis, cli_env, tmp_path) -> None:
    job = fault_tasks.work.delay(1)
    WorkerProcess(cli_env, tmp_path, *FAST, crash_at="after_claim").wait()  # claims it and dies
    set_fields(connection, job.id, {keys.Field.RECOVERIES: b"??"})
    time.sleep(1.2)  # its lease runs out
    crashed = None
    try:
        Worker([Queue(connection=connection)], name="m", lease=1, maintenance_interval=0.1).work(burst=True)
    except taskit.exceptions.TaskitError as exc:
        crashed = exc
    assert places(connection, job.id), f"job ({field(connection, job.id, keys.Field.STATUS)}) is in no place; worker raised {crashed!r}"
    assert crashed is None


# -- 8. a lost claim reply strands the claimed jobs ------------------------------------------------


def _reply_dropping_proxy(
    redis_port: int, marker: bytes, meanwhile: Callable[[], object] | None = None, passed: int = 0
) -> tuple[int, threading.Event]:
    """A TCP proxy to Redis that cuts the connection instead of delivering the first reply
    holding `marker` (after `passed` such replies delivered); `meanwhile` runs between (Redis
    ran the command, the client has not yet heard that the connection is gone)."""
    dropped, seen = threading.Event(), itertools.count()

    def pump(src: socket.socket, dst: socket.socket, watch: bool) -> None:
        try:
            while data := src.recv(65536):
                if watch and not dropped.is_set() and marker in data and next(seen) >= passed:
                    dropped.set()  # Redis ran the command; the client never hears back
                    if meanwhile is not None:
                        meanwhile()
                    break
                dst.sendall(data)
        except OSError:
            pass
        _close(src, dst)

    return _proxy(redis_port, pump, watch_requests=False), dropped


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        try:
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        except OSError:
            pass


def _proxy(redis_port: int, pump: Callable[[socket.socket, socket.socket, bool], None], watch_requests: bool) -> int:
    """A TCP proxy to Redis on a free port (returned): each connection's bytes moved by
    `pump(src, dst, watch)` in both directions, `watch` true for requests (`watch_requests`)
    or for replies."""
    from conftest import free_port

    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        while True:
            client, _ = listener.accept()
            server = socket.create_connection(("127.0.0.1", redis_port))
            threading.Thread(target=pump, args=(client, server, watch_requests), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, not watch_requests), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return port


def test_a_claim_whose_reply_is_lost_does_not_strand_its_jobs(connection: redis.Redis, redis_server) -> None:
    queue = Queue(connection=connection)
    victim = queue.enqueue(counted, "victim")
    queue.enqueue(counted, "other")
    port, dropped = _reply_dropping_proxy(redis_server.port, victim.id.encode())
    through_proxy = redis.Redis(port=port)
    Worker([Queue(connection=through_proxy)], name="w1", lease=1, maintenance_interval=0.1).work(burst=True)
    assert dropped.is_set()
    status = Job.fetch(victim.id).get_status()
    assert status in (JobStatus.FINISHED, JobStatus.QUEUED), f"victim left {status} by a worker that has exited"


def _request_delaying_proxy(
    redis_port: int, marker: bytes
) -> tuple[int, threading.Event, threading.Event, threading.Event]:
    """A TCP proxy to Redis that holds back the first request holding `marker` (as a network
    that drops its packets for a while, or a proxy with a slow upstream, does): the client
    hears nothing, gives up and closes; the request reaches Redis when `release` is set (as
    TCP delivers what was sent before a close). `held` is set once it is held, `ran` once
    Redis answered it."""
    held, release, ran = threading.Event(), threading.Event(), threading.Event()

    def pump(src: socket.socket, dst: socket.socket, watch: bool) -> None:
        late = b""
        try:
            while data := src.recv(65536):
                if watch and (late or (not held.is_set() and marker in data)):
                    late += data
                    held.set()
                    continue
                dst.sendall(data)
        except OSError:
            pass
        if late:  # (sent on a connection of its own here: what matters is that Redis runs it)
            release.wait(60)
            with socket.create_connection(("127.0.0.1", redis_port)) as upstream:
                upstream.sendall(late)
                upstream.recv(65536)
            ran.set()
        _close(src, dst)

    return _proxy(redis_port, pump, watch_requests=True), held, release, ran


def test_an_enqueue_that_reaches_redis_after_its_retry_and_the_job_ran_does_not_run_it_again(
    connection: redis.Redis, redis_server
) -> None:
    """The first send of an enqueue may reach Redis late, after the client timed out, its
    retry wrote the job and a worker ran it: it must find the job's id taken."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry as RedisRetry

    from taskit.storage import scripts

    for name in scripts.NAMES:
        connection.script_load(scripts.source(name))
    port, held, release, ran = _request_delaying_proxy(redis_server.port, b"EVALSHA")
    held.set()  # (not yet: the queue's first enqueue goes with its SADD)
    client = redis.Redis(port=port, socket_timeout=1, retry=RedisRetry(NoBackoff(), 0))
    queue = Queue(connection=client)
    first = queue.enqueue(sample_tasks.add, 1, 1)
    held.clear()
    job = queue.enqueue(sample_tasks.add, 2, 2)  # its first send is held; its retry goes through
    assert held.is_set()
    assert Worker([Queue(connection=connection)]).work(burst=True) == 2 and Job.fetch(job.id).result == 4
    release.set()
    assert ran.wait(30)
    assert Job.fetch(first.id).result == 2 and Queue(connection=connection).count == 0
    assert not connection.hexists(keys.of_queue("default").tagged.bucket(job.id), job.id)


# -- 9. periodic ticks finer than the maintenance interval are skipped -----------------------------


def test_an_every_2s_schedule_runs_every_2s_with_live_workers(connection: redis.Redis) -> None:
    from taskit.periodic import enqueue_due, periodic, unregister

    periodic(counted, 2, name="every-2s", args=["tick"], queue="p-review")
    try:
        start = 1_800_000_000.0
        enqueued = []
        for step in range(13):  # a worker's maintenance step every 5 s (the default), for 60 s
            enqueued += enqueue_due(connection, start + 5 * step, queues=["p-review"], lookahead=5.0)
        ticks = sorted(int(job.id.rsplit(":", 1)[1]) for job in enqueued)
        gaps = {b - a for a, b in itertools.pairwise(ticks)}
        assert gaps == {2}, f"ticks enqueued: {[t - int(start) for t in ticks]}"
    finally:
        unregister("every-2s")


# -- 10. prefetched jobs handed back on stop come back in reverse order ---------------------------


@task
def stop_my_worker() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill <worker pid>` would, mid-batch


def test_released_prefetched_jobs_keep_their_queue_order(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    queue.enqueue(counted, "warm")  # the first claim takes one job; then the batch grows
    queue.enqueue(stop_my_worker)
    waiting = [queue.enqueue(counted, f"n{i}").id for i in range(5)]  # prefetched with stop_my_worker
    Worker([queue], name="w").work()  # stops after stop_my_worker, handing back the rest
    assert queue.job_ids == waiting


# -- a worker back from a stall does not run prefetched jobs recovered meanwhile ------------------


class SteppedClock:
    """A worker clock the test can move forward (a stall, as seen by the worker)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


STALL: dict[str, object] = {}


@task
def stall_and_be_recovered() -> None:
    """The worker stalls past its lease, and meanwhile its jobs are recovered (as another
    worker's maintenance, or the supervisor, would)."""
    clock, worker = STALL["clock"], STALL["worker"]
    clock.offset += 100  # type: ignore[attr-defined]
    job = get_current_job()
    assert job is not None
    Store.of(job.connection).reap(worker, clock(), 3, 31_536_000)  # type: ignore[arg-type, operator]


def test_a_worker_back_from_a_stall_skips_prefetched_jobs_recovered_meanwhile(connection: redis.Redis) -> None:
    queue = Queue(connection=connection)
    queue.enqueue(counted, "warm")  # the first claim takes one job; then the batch grows
    queue.enqueue(stall_and_be_recovered)
    victims = [queue.enqueue(counted, f"victim{i}") for i in range(3)]  # prefetched with the stall
    clock = SteppedClock()
    STALL.update(clock=clock, worker="stalled")
    Worker([queue], name="stalled", clock=clock).work(burst=True)
    for i, victim in enumerate(victims):
        assert calls(connection, f"victim{i}") == 1, f"victim{i} ran {calls(connection, f'victim{i}')} times"
        assert Job.fetch(victim.id).get_status() == JobStatus.FINISHED
