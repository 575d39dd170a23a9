import subprocess

import sample_tasks
from conftest import taskit_command

from taskit import Job, Queue, Worker


def test_seed_failed_jobs_example(connection):
    def div_by_zero(x):
        return x / 0

    queue = Queue(connection=connection)
    job = queue.enqueue(sample_tasks.fail, "x")
    registry = queue.failed_job_registry
    Worker([queue]).work(burst=True)
    assert len(registry) == 1
    registry.requeue(job)
    assert len(registry) == 0
    assert queue.count == 1


def test_cli_worker_runs_a_job(connection, cli_env):
    job = sample_tasks.add.delay(2, 3)
    subprocess.run(taskit_command("worker", "sample_tasks", "--burst"), env=cli_env, check=True, timeout=60)
    assert Job.fetch(job.id).result == 5
