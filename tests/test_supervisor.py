"""`taskit worker -c N`: a parent supervising N real worker processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fault_tasks
import pytest
from test_faults import WorkerProcess, status, wait_until

from taskit import Job, JobCanceledError, JobStatus, Queue
from taskit.storage import keys


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def test_two_processes_share_the_work(connection, cli_env, tmp_path):
    jobs = Queue().enqueue_many([Queue().prepare_data(fault_tasks.sleep_then_pid, (0.05,)) for _ in range(40)])
    parent = WorkerProcess(cli_env, tmp_path, "-c", "2", "--burst")
    assert parent.wait(timeout=60) == 0
    pids = {Job.fetch(j.id).result for j in jobs}
    assert len(pids) == 2 and parent.pid not in pids


def test_a_killed_worker_process_is_replaced_and_its_job_recovered_at_once(connection, cli_env, tmp_path):
    job = fault_tasks.slow_first_attempt.delay(60)
    parent = WorkerProcess(cli_env, tmp_path, "-c", "1")  # default 20 s lease
    try:
        wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
        [child] = children_of(parent.pid)
        killed_at = time.monotonic()
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: status(job.id) == JobStatus.FINISHED, timeout=15, what="the job to be re-run")
        took = time.monotonic() - killed_at
        print(f"supervised recovery took {took:.2f}s")
        assert took < 10, "recovered by the parent, not by the 20 s lease"
        job.refresh()
        assert (job.recoveries, job.attempts) == (1, 2)
        assert job.result["pid"] != child
        assert "back on their queues" in parent.output()
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0


def test_a_job_stuck_past_its_timeout_is_killed_and_failed(connection, cli_env, tmp_path):
    stuck = fault_tasks.stuck.delay(60)
    after = fault_tasks.work.delay(5)
    parent = WorkerProcess(cli_env, tmp_path, "-c", "1")
    try:
        wait_until(lambda: status(after.id) == JobStatus.FINISHED, timeout=30, what="the next job, after the kill")
        stuck.refresh()
        assert stuck.get_status() == JobStatus.FAILED
        assert "JobTimeoutError" in stuck.exc_info and "was killed" in stuck.exc_info
        assert stuck.id in Queue().failed_job_registry
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0


def test_sigterm_to_the_parent_stops_every_worker(connection, cli_env, tmp_path):
    job = fault_tasks.sleep_then_pid.delay(1)
    parent = WorkerProcess(cli_env, tmp_path, "-c", "2")
    wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
    children = children_of(parent.pid)
    parent.signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 0
    assert status(job.id) == JobStatus.FINISHED
    assert all(not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
               for pid in children)
    assert connection.zcard(keys.WORKERS) == 0


def test_workers_stop_when_the_parent_dies(connection, cli_env, tmp_path):
    parent = WorkerProcess(cli_env, tmp_path, "-c", "2", "--lease", "1")
    wait_until(lambda: connection.zcard(keys.WORKERS) == 2, what="two workers to register")
    children = children_of(parent.pid)
    parent.signal(signal.SIGKILL)
    parent.wait()
    wait_until(lambda: connection.zcard(keys.WORKERS) == 0, timeout=15, what="the orphans to sign off")
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), timeout=10,
               what="the orphans to exit")


def test_a_job_killed_for_its_timeout_follows_its_retry_policy(connection, cli_env, tmp_path):
    job = fault_tasks.stuck_once.delay()
    parent = WorkerProcess(cli_env, tmp_path, "-c", "1")
    try:
        wait_until(lambda: status(job.id) == JobStatus.FINISHED, timeout=30, what="the retry after the kill")
        job.refresh()
        assert (job.result, job.attempts, job.retries) == ("ok", 2, 1)
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0


# -- many jobs per process (issue 10) -------------------------------------------------------


def _start(cli_env, tmp_path, *args: str) -> WorkerProcess:
    return WorkerProcess(cli_env, tmp_path, *args, modules=("concurrency_tasks", "fault_tasks"))


def test_a_thread_job_that_ignores_its_timeout_gets_its_process_killed_and_replaced(connection, cli_env, tmp_path):
    import concurrency_tasks as ct

    stubborn = ct.ignores_timeout.delay(60)  # timeout=1
    bystanders = [fault_tasks.slow_first_attempt.delay(60) for _ in range(3)]
    parent = _start(cli_env, tmp_path, "-c", "1", "--threads", "4")
    try:
        wait_until(lambda: all(status(j.id) == JobStatus.STARTED for j in [stubborn, *bystanders]), what="all to start")
        [child] = children_of(parent.pid)
        wait_until(lambda: status(stubborn.id) == JobStatus.FAILED, timeout=20, what="the stubborn job to be failed")
        assert "was killed" in Job.fetch(stubborn.id).exc_info
        # the others ran again in the new process, unblamed
        wait_until(lambda: all(status(j.id) == JobStatus.FINISHED for j in bystanders), timeout=30,
                   what="the bystanders to re-run")
        for job in bystanders:
            job.refresh()
            assert job.result["pid"] != child and (job.attempts, job.recoveries) == (2, 0)
        assert children_of(parent.pid) != [child]
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0


def test_a_canceled_job_that_does_not_stop_gets_its_process_killed(connection, cli_env, tmp_path):
    import concurrency_tasks as ct

    job = ct.stuck_in_c.delay(60)
    parent = _start(cli_env, tmp_path, "-c", "1", "--threads", "2")
    try:
        wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
        [child] = children_of(parent.pid)
        job.cancel("stop it")
        with pytest.raises(JobCanceledError, match="its worker process .* was killed"):
            job.wait(timeout=20)
        assert Job.fetch(job.id).retries == 0
        wait_until(lambda: children_of(parent.pid) and children_of(parent.pid) != [child], what="a new process")
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0


def test_max_jobs_recycles_worker_processes(connection, cli_env, tmp_path):
    import concurrency_tasks as ct

    jobs = [ct.pid.delay() for _ in range(12)]
    parent = _start(cli_env, tmp_path, "-c", "2", "--max-jobs", "3")
    try:
        wait_until(lambda: all(status(j.id) == JobStatus.FINISHED for j in jobs), timeout=60, what="every job")
        pids = [Job.fetch(j.id).result for j in jobs]
        assert max(pids.count(pid) for pid in set(pids)) <= 3 and len(set(pids)) >= 4
        wait_until(lambda: "stopped to be replaced" in parent.output(), what="the log line")
        more = [ct.pid.delay() for _ in range(2)]  # and new processes took their places
        wait_until(lambda: all(status(j.id) == JobStatus.FINISHED for j in more), timeout=30, what="more jobs")
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0


def test_max_memory_recycles_a_worker_process(connection, cli_env, tmp_path):
    import concurrency_tasks as ct

    parent = _start(cli_env, tmp_path, "-c", "1", "--max-memory", "150")
    try:
        first = ct.grow.delay(200)  # takes the process past 150 MB
        wait_until(lambda: status(first.id) == JobStatus.FINISHED, what="the big job")
        second = ct.pid.delay()
        wait_until(lambda: status(second.id) == JobStatus.FINISHED, timeout=30, what="a job after it")
        assert Job.fetch(second.id).result != Job.fetch(first.id).result  # a new process ran it
        assert "past --max-memory 150 MB" in parent.output()
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0



def live_workers(connection, parent: WorkerProcess, started: int) -> set[str]:
    """Names of the registered workers, once every child of the parent has registered and
    `started` worker loops in all have said so (a child killed a moment before that counts
    as one that could not start)."""
    if parent.output().count("started; queues") < started:
        return set()
    names = {name.decode() for name in connection.zrange(keys.WORKERS, 0, -1)}
    return names if len(names) == len(children_of(parent.pid)) else set()


def test_killed_workers_are_replaced_at_once_however_often(connection, cli_env, tmp_path):
    job = fault_tasks.slow_first_attempt.delay(60)
    parent = WorkerProcess(cli_env, tmp_path, "-c", "2")  # default 20 s lease: the parent recovers the job
    try:
        wait_until(lambda: status(job.id) == JobStatus.STARTED, what="the job to start")
        wait_until(lambda: len(live_workers(connection, parent, 2)) == 2, what="two workers")
        for kill in range(5):  # the OOM killer, say, or an operator: each time at every worker
            before = live_workers(connection, parent, 2 * (kill + 1))
            for child in children_of(parent.pid):
                os.kill(child, signal.SIGKILL if kill < 4 else signal.SIGTERM)
            # replaced at once (it was 1, 2, 4, 8, 16 s, and so no worker at all most of the time)
            wait_until(lambda old=before, k=kill: len(live_workers(connection, parent, 2 * (k + 2)) - old) == 2,
                       timeout=6, what=f"two new workers after kill {kill + 1}")
        wait_until(lambda: status(job.id) == JobStatus.FINISHED, what="the job killed mid-run to run again")
        log = parent.output()
        assert log.count("starting a new one now") == 10, log
        assert "it was asked to stop, but not by this process" in log  # (the SIGTERM round)
        assert "trying again in" not in log
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0


def test_a_worker_that_cannot_start_is_restarted_with_backoff(connection, cli_env, tmp_path, redis_server):
    parent = WorkerProcess(cli_env, tmp_path, "-c", "1")
    try:
        wait_until(lambda: len(live_workers(connection, parent, 1)) == 1, what="the worker")
        redis_server.stop()
        [child] = children_of(parent.pid)
        os.kill(child, signal.SIGKILL)  # its replacement cannot connect: a crash at start-up
        wait_until(lambda: "trying again in 2s" in parent.output(), timeout=30, what="a second, longer delay")
        log = parent.output()
        assert "starting a new one now" in log, log  # the killed worker had been running
        assert "could not start (exit status 1); trying again in 1s" in log
        assert "Traceback" not in log and "cannot reach Redis" in log
        redis_server.start()
        fresh = redis_server.client()
        wait_until(lambda: fresh.zcard(keys.WORKERS) == 1, timeout=30, what="a worker once Redis is back")
        fresh.close()
    finally:
        parent.signal(signal.SIGTERM)
        assert parent.wait() == 0
