"""Many jobs at once in one worker (issue 10): threads, async def tasks, timeouts and cancel in
each mode, and every guarantee kept for every job in flight.

Real `taskit worker` processes against the private Redis of conftest.py; overlap is proven from
the start and end times the jobs record, never from how long the test took.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import concurrency_tasks as ct
import fault_tasks
import pytest
from conftest import taskit_command
from records import field, held_by, set_fields
from test_faults import FAST, WorkerProcess, assert_nothing_held, status, wait_until

from taskit import Job, JobCanceledError, JobStatus, Queue
from taskit.storage import keys
from taskit.worker.claims import BACKLOG_SECONDS

MODULES = ("concurrency_tasks", "fault_tasks")


@pytest.fixture
def start(cli_env: dict[str, str], tmp_path: Path):
    """Start `taskit worker concurrency_tasks ARGS` processes; killed after the test if still up."""
    started: list[WorkerProcess] = []

    def run(*args: str, modules: tuple[str, ...] = MODULES) -> WorkerProcess:
        worker = WorkerProcess(cli_env, tmp_path, *args, modules=modules)
        started.append(worker)
        return worker

    yield run
    for worker in started:
        worker.stop()


def enqueue(task, calls: list[tuple]) -> list[Job]:
    queue = Queue()
    return queue.enqueue_many([queue.prepare_data(task, args) for args in calls])


def results(jobs: list[Job]) -> list:
    found = Job.fetch_many([j.id for j in jobs])
    assert all(j is not None and j.get_status(refresh=False) == JobStatus.FINISHED for j in found), [
        (j.id, j.get_status(refresh=False), j.exc_info) for j in found if j is not None
    ]
    return [j.result for j in found if j is not None]


def all_ended(jobs: list[Job]) -> bool:
    found = Job.fetch_many([j.id for j in jobs])
    return all(j is not None and j.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED) for j in found)


def stop(worker: WorkerProcess) -> None:
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert "Traceback" not in worker.output(), worker.output()


# -- jobs at once --------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "args"), [(ct.span, ("--threads", "8")), (ct.async_span, ("--async-tasks", "8"))])
def test_jobs_run_at_the_same_time(connection, start, task, args):
    jobs = enqueue(task, [(1.0,)] * 8)
    worker = start(*args, "--burst")
    assert worker.wait() == 0, worker.output()
    spans = results(jobs)
    assert len({s["pid"] for s in spans}) == 1
    # every job started before any ended: all eight ran at once, in one process
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)
    if task is ct.span:
        assert len({s["thread"] for s in spans}) == 8
    assert [s["id"] for s in spans] == [j.id for j in jobs]


def test_a_claim_takes_only_free_slots(connection, start):
    """Slow jobs are not prefetched past the free slots: they stay on the queue for others."""
    jobs = enqueue(fault_tasks.sleep_then_pid, [(1.0,)] * 8)
    worker = start("--threads", "4", "--burst", modules=("fault_tasks",))
    wait_until(lambda: Queue().started_job_registry.count == 4, what="four jobs to start")
    time.sleep(0.3)
    assert (Queue().started_job_registry.count, Queue().count) == (4, 4)
    assert worker.wait() == 0, worker.output()
    assert results(jobs) == [worker.pid] * 8


THREADS, SHORT = 8, 0.02
#: the most jobs a pool of THREADS keeps waiting behind them, for jobs of SHORT seconds or more
BACKLOG = int(BACKLOG_SECONDS * THREADS / SHORT)


def fill_with_gated_jobs(connection, start, gate: Path, name: str) -> tuple[WorkerProcess, list[Job], set[str]]:
    """Short jobs, then more gated ones than a pool of THREADS runs: the pool runs short jobs
    with a backlog, then holds THREADS gated ones, with the backlog claimed behind them.
    Returns the worker, the gated jobs and the ids of those claimed and not started."""
    enqueue(ct.span, [(SHORT,)] * 40)
    gated = enqueue(ct.gated, [(str(gate),)] * 16)
    worker = start("--threads", str(THREADS), "-n", name, *FAST)
    wait_until(lambda: connection.llen(ct.GATED_STARTED) == THREADS, what="every thread to hold a gated job")
    # (FIFO: every short job started before them, so what waits is gated; a job handed back
    # would take a second of waiting)
    started = {i.decode() for i in connection.lrange(ct.GATED_STARTED, 0, -1)}
    claimed = {i.decode() for i in held_by(connection, name)}
    return worker, gated, claimed & {j.id for j in gated} - started


def test_a_thread_pool_keeps_a_small_backlog_handed_back_behind_slow_jobs(connection, start, tmp_path):
    """Short jobs: a few more are claimed than threads are free (claims.py BACKLOG_SECONDS),
    so a freed thread starts the next at once, without a claim's round trip; never more than
    the threads free up in BACKLOG_SECONDS. Behind jobs that turn out slow, that backlog goes
    back to its queue for other workers after a second, and each job runs once."""
    gate = tmp_path / "gate"
    worker, gated, backlog = fill_with_gated_jobs(connection, start, gate, "pool")
    assert 1 <= len(backlog) <= BACKLOG, backlog
    wait_until(lambda: Queue().count == len(gated) - THREADS, what="the backlog to go back to its queue")
    assert "job(s) that waited 1.0s for a free slot" in worker.output()
    assert set(Queue().job_ids) >= backlog
    gate.touch()
    wait_until(lambda: all_ended(gated), what="every gated job")
    assert results(gated) == [j.id for j in gated]
    assert sorted(i.decode() for i in connection.lrange(ct.GATED_STARTED, 0, -1)) == sorted(j.id for j in gated)
    stop(worker)
    assert_nothing_held(connection)


def test_kill_9_recovers_the_backlog_without_blame(connection, start, tmp_path):
    """Jobs waiting in the backlog are claimed (in the worker's in-flight list), so a kill -9
    loses none: they come back and run once; being prefetched, none is blamed for the crash."""
    gate = tmp_path / "gate"
    doomed, gated, backlog = fill_with_gated_jobs(connection, start, gate, "doomed")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    assert backlog, "nothing was waiting behind the threads when the worker was killed"
    gate.touch()
    rescuer = start("--threads", str(THREADS), *FAST)
    wait_until(lambda: all_ended(gated), what="every gated job to be recovered and run")
    assert results(gated) == [j.id for j in gated]
    runs = [i.decode() for i in connection.lrange(ct.GATED_STARTED, 0, -1)]
    assert all(runs.count(job_id) == 1 for job_id in backlog), "a job of the backlog ran before the kill"
    assert {j.recoveries for j in Job.fetch_many([j.id for j in gated]) if j is not None} == {0}
    stop(rescuer)
    assert_nothing_held(connection)


@pytest.mark.parametrize(("task", "args"), [(ct.who_am_i, ("--threads", "100")), (ct.async_who_am_i, ("--async-tasks", "100"))])
def test_get_current_job_is_each_jobs_own(connection, start, task, args):
    jobs = enqueue(task, [(0.5,)] * 100)
    worker = start(*args, "--burst")
    assert worker.wait(timeout=60) == 0, worker.output()
    assert results(jobs) == [j.id for j in jobs]
    assert [j.meta for j in Job.fetch_many([j.id for j in jobs])] == [{"mine": j.id} for j in jobs]


def test_a_module_with_sync_and_async_tasks(connection, start):
    sync_jobs = enqueue(ct.span, [(0.5,)] * 4)
    async_jobs = enqueue(ct.async_span, [(0.5,)] * 4)
    bound = ct.async_bound.delay(7)
    worker = start("--threads", "4", "--async-tasks", "4", "--burst")
    assert worker.wait() == 0, worker.output()
    spans = results(sync_jobs + async_jobs)
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)
    assert Job.fetch(bound.id).result == [bound.id, 7]


def test_with_one_thread_a_sync_job_does_not_hold_up_async_ones(connection, start):
    """--threads 1 runs sync jobs in the loop's own thread until an async job comes; then on a
    thread, so that async jobs are claimed and recorded while a sync one runs (here also with
    an async start hook, which starts the event loop before any job)."""
    sync_job = ct.span.delay(3)
    worker = start("--threads", "1", *FAST, modules=(*MODULES, "hook_tasks"))
    wait_until(lambda: status(sync_job.id) == JobStatus.STARTED, what="the sync job to start")
    async_jobs = enqueue(ct.async_span, [(0.2,)] * 3)  # claimed, run and recorded meanwhile:
    wait_until(lambda: all_ended(async_jobs), timeout=2.5, what="the async jobs")
    assert status(sync_job.id) == JobStatus.STARTED
    stop(worker)


def test_calling_an_async_task_directly_gives_a_coroutine():
    import asyncio

    coroutine = ct.async_span(0)
    assert asyncio.iscoroutine(coroutine)
    coroutine.close()


# -- timeouts ------------------------------------------------------------------------------


def test_an_async_job_past_its_timeout_is_cancelled_and_retried_by_its_policy(connection, start):
    job = ct.async_too_slow.delay(30)  # timeout=1, Retry(max=1)
    other = ct.async_span.delay(0.1)
    worker = start("--burst")
    assert worker.wait(timeout=30) == 0, worker.output()
    job.refresh()
    assert (job.get_status(), job.retries, job.attempts) == (JobStatus.FAILED, 1, 2)
    assert job.exc_info.rstrip().endswith("JobTimeoutError: job exceeded its timeout of 1s and was stopped")
    assert "CancelledError" in job.exc_info  # where the coroutine was when it was cancelled
    assert results([other])[0]["id"] == other.id


def test_a_thread_job_past_its_timeout_gets_the_error_in_its_thread(connection, start):
    job = ct.too_slow.delay(30)  # timeout=1
    quick = ct.too_slow.delay(0)
    worker = start("--threads", "2", "--burst")
    assert worker.wait(timeout=20) == 0, worker.output()
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert job.exc_info.rstrip().endswith("JobTimeoutError: job exceeded its timeout of 1s and was stopped")
    assert "in too_slow" in job.exc_info  # raised in the task's own code
    assert Job.fetch(quick.id).result == "done"


def test_a_thread_job_that_ignores_its_timeout_is_failed_after_the_grace(connection, start):
    stubborn = ct.ignores_timeout.delay(20)
    worker = start("--threads", "2", *FAST)
    wait_until(lambda: status(stubborn.id) == JobStatus.FAILED, timeout=15, what="the stubborn job to be failed")
    stubborn.refresh()
    assert "did not stop within 3s, so its thread was abandoned" in stubborn.exc_info
    assert "it was stuck here" in stubborn.exc_info and "ignores_timeout" in stubborn.exc_info
    # the worker goes on, with a new thread in place of the abandoned one
    after = [ct.span.delay(0.2) for _ in range(2)]
    wait_until(lambda: all_ended(after), what="the next jobs")
    spans = results(after)
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)
    assert "did not stop within 3s" in worker.output()
    stop(worker)


def test_a_job_that_blocks_the_event_loop_is_reported(connection, start):
    job = ct.blocks_the_loop.delay(5)  # timeout=1
    worker = start(*FAST)
    wait_until(lambda: "the event loop has not answered" in worker.output(), timeout=15, what="the watchdog")
    assert "in blocks_the_loop" in worker.output()  # its stack names the culprit
    # its cancel cannot land while it blocks the loop: it is failed once the grace is over
    wait_until(lambda: status(job.id) == JobStatus.FAILED, timeout=15, what="the job to fail")
    assert "did not stop within 3s, so the worker stopped waiting for it" in Job.fetch(job.id).exc_info
    wait_until(lambda: "the event loop answers again" in worker.output(), timeout=15, what="the loop to answer")
    after = ct.async_span.delay(0)
    wait_until(lambda: all_ended([after]), what="a job after it")
    stop(worker)


# -- cancel a running job ------------------------------------------------------------------


CANCEL_MODES = {
    # (task, worker arguments): one job in the worker's own thread (a signal cuts its sleep
    # short), on a pool thread (waiting in small steps), and on the event loop. The default
    # lease (a heartbeat every 5 s): only the cancel message can stop a job within the bound
    "single-threaded": (fault_tasks.sleep_retried, (), ("fault_tasks",)),
    "threads": (ct.long_sync, ("--threads", "4"), MODULES),
    "async": (ct.long_async, (), MODULES),
}


@pytest.mark.parametrize("mode", list(CANCEL_MODES))
def test_cancel_a_running_job_from_another_process(connection, start, mode):
    task, args, modules = CANCEL_MODES[mode]
    job = task.delay(30)
    worker = start(*args, modules=modules)
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    time.sleep(0.3)
    asked = time.monotonic()
    Job.fetch(job.id).cancel("no longer needed")  # this test is the other process
    with pytest.raises(JobCanceledError, match=r"\) was canceled while it ran: no longer needed$"):
        job.wait(timeout=20)
    took = time.monotonic() - asked
    print(f"{mode}: stopped {took:.2f}s after the cancel")
    # issue 10: "within about a second" (measured: 0.00-0.04 s, two CPU burners beside it);
    # the margin is for a loaded 2-core CI machine
    assert took < 1.5, f"stopped after {took:.2f}s"
    job.refresh()
    assert job.get_status() == JobStatus.CANCELED and job.id in Queue().canceled_job_registry
    assert (job.retries, job.attempts, job.result) == (0, 1, None)  # not retried
    assert job.exc_info.rstrip().endswith("canceled while it ran: no longer needed")
    assert worker.alive()
    stop(worker)
    assert_nothing_held(connection)


def test_cancel_a_job_claimed_but_not_started(connection, start):
    """Prefetched behind a running job (one thread): dropped, never run."""
    blocker = ct.long_sync.delay(2)
    behind = ct.long_sync.delay(0)
    worker = start("--threads", "1", "--prefetch", "64", *FAST)
    wait_until(lambda: status(behind.id) == JobStatus.STARTED, what="both to be claimed")
    Job.fetch(behind.id).cancel()
    with pytest.raises(JobCanceledError, match="canceled before it started"):
        behind.wait(timeout=10)
    assert Job.fetch(blocker.id).wait(timeout=10) == "not canceled"
    stop(worker)


def test_a_thread_job_that_ignores_its_cancel_is_canceled_after_the_grace(connection, start):
    job = ct.stuck_in_c.delay(20)
    worker = start("--threads", "2", *FAST)
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    job.cancel()
    with pytest.raises(JobCanceledError, match="did not stop within 3s"):
        job.wait(timeout=15)
    assert Job.fetch(job.id).retries == 0
    stop(worker)


def test_a_cancel_requested_while_its_worker_is_dead_is_not_lost(connection, start):
    job = ct.long_async.delay(30)
    start(*FAST).kill_while_running(job.id)
    Job.fetch(job.id).cancel("while nobody ran it")  # no worker hears this one
    rescuer = start(*FAST)
    with pytest.raises(JobCanceledError, match="while nobody ran it .its worker died; not run again"):
        job.wait(timeout=20)  # recovered, then canceled by the worker that claimed it, unrun
    stop(rescuer)
    assert_nothing_held(connection)


def test_taskit_cancel(connection, start, cli_env):
    running = ct.long_async.delay(30)
    queued = ct.long_sync.apply_async([1], countdown=3600)
    done = ct.async_span.delay(0)
    worker = start()
    wait_until(lambda: status(running.id) == JobStatus.STARTED and status(done.id) == JobStatus.FINISHED,
               what="one job running, one finished")
    proc = subprocess.run(
        taskit_command("cancel", running.id, queued.id, done.id, "no-such-job", "--reason", "ops"),
        env=cli_env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 1, proc
    assert f"stopping {running.id} (running on " in proc.stdout
    assert f"canceled {queued.id}" in proc.stdout
    assert f"not canceled: {done.id}: already finished" in proc.stderr
    assert "not canceled: no-such-job: no job 'no-such-job'" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(JobCanceledError, match="ops"):
        running.wait(timeout=10)
    assert Job.fetch(queued.id).get_status() == JobStatus.CANCELED
    assert "canceled before it started: ops" in Job.fetch(queued.id).exc_info
    stop(worker)


# -- every job in flight keeps its guarantees ------------------------------------------------------


IN_FLIGHT = 200  # issue 10: "kill -9 of a process with 200 jobs in flight loses none of them"


@pytest.mark.parametrize(("task", "args"), [(ct.async_first_attempt_sleeps, ("--async-tasks", str(IN_FLIGHT))),
                                            (fault_tasks.slow_first_attempt, ("--threads", str(IN_FLIGHT)))])
def test_kill_9_with_many_jobs_in_flight_loses_none(connection, start, task, args):
    jobs = enqueue(task, [(60,)] * IN_FLIGHT)
    doomed = start(*args, *FAST)
    wait_until(lambda: Queue().started_job_registry.count == IN_FLIGHT and Queue().count == 0,
               what=f"all {IN_FLIGHT} to start")
    # each running, not only claimed (a claimed job waiting for a slot is recovered too, but proves less)
    wait_until(lambda: connection.scard(fault_tasks.FIRST_ATTEMPTS) == IN_FLIGHT, what=f"all {IN_FLIGHT} to run")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    rescuer = start(*args, *FAST)
    wait_until(lambda: all_ended(jobs), timeout=60, what="every job to be recovered and run")
    outcomes = results(jobs)
    assert {o["pid"] for o in outcomes} == {rescuer.pid} and {o["attempt"] for o in outcomes} == {2}
    found = Job.fetch_many([j.id for j in jobs])
    # one crash of a process running many jobs blames none of them
    assert {j.recoveries for j in found if j is not None} == {0}
    stop(rescuer)
    assert_nothing_held(connection)


def test_a_paused_worker_holding_many_jobs_cannot_record_them(connection, start):
    jobs = enqueue(ct.async_first_attempt_sleeps, [(4,)] * 50)
    zombie = start("--async-tasks", "50", *FAST)
    wait_until(lambda: Queue().started_job_registry.count == 50, what="all 50 to start")
    zombie.signal(signal.SIGSTOP)
    try:
        rescuer = start("--async-tasks", "50", *FAST)
        wait_until(lambda: all_ended(jobs), timeout=30, what="the re-runs")
    finally:
        zombie.signal(signal.SIGCONT)
    wait_until(lambda: zombie.output().count("was not recorded") == 50, timeout=20,
               what="the zombie to give up all 50 results")
    assert {o["pid"] for o in results(jobs)} == {rescuer.pid}
    stop(zombie)
    stop(rescuer)


# -- stopping the worker -------------------------------------------------------------------


def test_sigterm_lets_running_jobs_finish(connection, start):
    jobs = enqueue(ct.marked_span, [(1,)] * 4) + enqueue(ct.async_marked_span, [(1,)] * 4)
    worker = start("--threads", "4", *FAST)
    # running, not only claimed (a claimed job not started yet is handed back, as it should)
    wait_until(lambda: all(j is not None and j.meta.get("running") for j in Job.fetch_many([j.id for j in jobs])),
               what="all eight to run")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert len(results(jobs)) == 8
    assert connection.zcard(keys.WORKERS) == 0
    assert_nothing_held(connection)


def test_sigterm_hands_back_what_does_not_finish_in_the_shutdown_timeout(connection, start):
    slow = enqueue(ct.long_sync, [(30,)] * 2) + enqueue(ct.long_async, [(30,)] * 2) + enqueue(ct.stuck_in_c, [(30,)])
    quick = enqueue(ct.marked_span, [(0.5,)])
    worker = start("--threads", "4", "--shutdown-timeout", "1.5", *FAST)
    wait_until(lambda: Queue().started_job_registry.count == 6, what="all six to start")
    # the quick one running, not only claimed (a claimed job not started yet is handed back)
    wait_until(lambda: Job.fetch(quick[0].id).meta.get("running"), what="the quick one to run")
    stopped_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0, worker.output()
    took = time.monotonic() - stopped_at
    assert took < 10, f"stopped after {took:.1f}s"
    assert results(quick)[0]["pid"] == worker.pid
    # interrupted, not failed: back on the queue, to run again from the start
    assert [Job.fetch(j.id).get_status() for j in slow] == [JobStatus.QUEUED] * 5
    assert sorted(Queue().job_ids) == sorted(j.id for j in slow)
    assert [Job.fetch(j.id).retries for j in slow] == [0] * 5
    assert "interrupted by shutdown" in worker.output()
    assert_nothing_held(connection, queues=False)


# -- hooks ---------------------------------------------------------------------------------


def test_start_and_stop_hooks_run_once_per_process(connection, start):
    # by name: importing hook_tasks here would register its hooks for every in-process
    # Worker of the rest of the test session
    job = Queue().enqueue("hook_tasks.loop_is_the_hooks")
    parent = start("-c", "2", "--burst", modules=("hook_tasks",))
    assert parent.wait() == 0, parent.output()
    assert Job.fetch(job.id).result is True  # async tasks run on the loop the async hook ran on
    notes = [n.decode() for n in connection.lrange("test:hooks", 0, -1)]  # hook_tasks.KEY
    pids = {n.split(":")[1] for n in notes}
    assert len(pids) == 2 and str(parent.pid) not in pids
    for pid in pids:
        mine = [n.split(":")[0] for n in notes if n.endswith(f":{pid}")]
        assert mine == ["start-sync", "start-async", "stop-async", "stop-sync"]


def test_a_failing_start_hook_stops_the_worker_with_one_line(connection, cli_env, tmp_path):
    (tmp_path / "bad_hooks.py").write_text(
        "from taskit import on_worker_start\n\n@on_worker_start\ndef connect():\n    raise ConnectionError('db down')\n"
    )
    proc = subprocess.run(taskit_command("worker", "bad_hooks", "-P", str(tmp_path), "--burst"),
                          env=cli_env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "Error: on_worker_start hook bad_hooks.connect raised ConnectionError: db down; the worker cannot start" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- blame after a crash ---------------------------------------------------------------------


def test_a_job_that_kills_its_many_job_worker_is_found_and_abandoned(connection, start):
    """Crashes of processes running many jobs blame none; a job recovered twice then runs
    alone, so the one that kills its worker is blamed (and abandoned), the others are not."""
    killer = fault_tasks.kill_my_worker.delay()
    bystanders = enqueue(fault_tasks.work, [(i, 0.3) for i in range(6)])
    for _ in range(8):
        if status(killer.id) == JobStatus.FAILED:
            break
        worker = start("--threads", "4", "--burst", "--max-deaths", "2", *FAST, modules=("fault_tasks",))
        worker.wait(timeout=30)
        time.sleep(1.3)  # the lease runs out; the next worker's maintenance recovers the jobs
    start("--burst", *FAST, modules=("fault_tasks",)).wait(timeout=30)
    killer.refresh()
    assert killer.get_status() == JobStatus.FAILED, killer.get_status()
    assert "abandoned: worker died 2 times" in killer.exc_info
    assert killer.recoveries == 2  # blamed only for the deaths while it ran alone
    for i, job in enumerate(bystanders):
        job.refresh()
        assert (job.get_status(), job.result, job.recoveries) == (JobStatus.FINISHED, i, 0), "a bystander was blamed"
    assert_nothing_held(connection)


# -- in-process workers ------------------------------------------------------------------------


def test_a_worker_off_the_main_thread_still_stops_a_job_at_its_timeout(connection):
    """SIGALRM is the main thread's: elsewhere the timeout is raised in the job's thread."""
    import threading

    from taskit import Worker

    job = ct.too_slow.delay(30)  # timeout=1, waits in small steps
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(Worker(["default"], connection).work(burst=True)))
    thread.start()
    thread.join(timeout=20)
    assert done == [1]
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert "JobTimeoutError: job exceeded its timeout of 1s and was stopped" in job.exc_info


@pytest.mark.parametrize("options", [{"threads": 0}, {"async_tasks": 0}, {"threads": 2.5}, {"shutdown_timeout": -1},
                                     {"max_memory": 0}, {"max_memory": float("nan")}])
def test_bad_concurrency_options_are_refused(connection, options):
    from taskit import Worker
    from taskit.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=next(iter(options))):
        Worker(["default"], connection, **options)


def test_a_claim_marks_a_job_alone_only_while_it_runs_alone(connection):
    """lua/claim.lua: 'al' 1 for a job claimed alone by a worker that holds nothing; the next
    claim beside it clears it, in the same script, before it claims anything else."""
    from taskit.storage.store import Store

    store, now = Store(connection), time.time()
    first, second = enqueue(ct.span, [(0,)] * 2)
    [(job_id, token, _, _)] = store.claim("w1", ["default"], now, now + 30, 1, (True, None)).jobs
    assert job_id == first.id and field(connection, first.id, "al") == b"1"
    more = store.claim("w1", ["default"], now, now + 30, 5, (False, (job_id, token, "default"))).jobs
    assert [j[0] for j in more] == [second.id]
    assert field(connection, first.id, "al") == b"0"
    assert field(connection, second.id, "al") == b"0"  # claimed beside another


def test_a_quarantined_job_is_claimed_only_by_a_worker_holding_nothing(connection):
    from taskit.storage.store import Store

    store, now = Store(connection), time.time()
    suspect, after = enqueue(ct.span, [(0,)] * 2)
    set_fields(connection, suspect.id, {"ru": 2})  # recovered unblamed twice
    busy = store.claim("w1", ["default"], now, now + 30, 5, (False, None))
    assert (busy.jobs, busy.quarantine) == ([], "drain")  # left at the head for an idle worker
    idle = store.claim("w2", ["default"], now, now + 30, 5, (True, None))
    assert ([j[0] for j in idle.jobs], idle.quarantine) == ([suspect.id], "alone")
    assert field(connection, suspect.id, "al") == b"1"
    assert Queue().job_ids == [after.id]


def test_a_cancel_whose_message_was_missed_is_found_by_the_heartbeat(connection, start):
    """Pub/sub keeps nothing: the request written on the job is reported by the next heartbeat."""
    job = ct.long_async.delay(30)
    worker = start(*FAST)  # a heartbeat every 0.25 s
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    set_fields(connection, job.id, {keys.Field.CANCEL: "message lost"})  # as cancel.lua does, unpublished
    with pytest.raises(JobCanceledError, match="canceled while it ran: message lost"):
        job.wait(timeout=10)
    stop(worker)


def test_an_idle_worker_does_not_wait_in_redis_beside_its_work_watcher(connection, monkeypatch):
    """While jobs run on threads and the queues are empty, the work watcher waits in Redis for
    new work. When the worker then has nothing left, its loop must not wait in Redis on the
    same wake lists while the watcher does: a push leaves one wake-up, and one the watcher
    took was lost to the loop, which slept on until its own wait ended (each new job up to a
    second late). The loop waits in Redis itself (its claim behind its wait) only once the
    watcher has stopped."""
    import threading

    from taskit import Worker

    w = Worker([Queue()], modules=("fault_tasks",), threads=2)
    beside_the_watcher = []
    real_wait = w.store.wait_and_claim

    def wait_and_claim(*args, **kwargs):
        if threading.current_thread() is threading.main_thread() and w._watcher._blocking:
            beside_the_watcher.append(args)
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(w.store, "wait_and_claim", wait_and_claim)
    first = fault_tasks.work.delay(1, 0.5)  # runs on a thread while the watcher starts waiting

    def later() -> None:
        wait_until(lambda: status(first.id) == JobStatus.FINISHED, what="the first job")
        time.sleep(0.5)  # the worker idles
        second = fault_tasks.work.delay(2)
        wait_until(lambda: status(second.id) == JobStatus.FINISHED, what="the second job")
        w.request_stop()

    helper = threading.Thread(target=later)
    helper.start()
    w.work()
    helper.join()
    assert w.jobs_run == 2
    assert beside_the_watcher == []
