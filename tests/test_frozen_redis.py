"""A producer against a frozen Redis (SIGSTOP: connections open, no answers), issue 11.

Its wait is bounded by the documented retry budget, one read timeout included; and since an
error cannot prove that the job was not written, a retry with the same job_id tells.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import sample_tasks

from taskit import Job, Queue, config
from taskit.exceptions import DuplicateJobError, RedisUnavailableError
from taskit.storage import store


@pytest.mark.timeout(120)
def test_enqueue_to_a_frozen_redis_gives_up_within_the_budget_and_job_id_makes_a_retry_safe(connection, redis_server):
    producer = config.connect(redis_server.url)  # a client as taskit builds them (its timeouts)
    queue = Queue(connection=producer)
    queue.enqueue(sample_tasks.add, 0, 0)  # connected, and the enqueue script loaded, before the freeze
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailableError, match="cannot reach Redis"):
            queue.enqueue(sample_tasks.add, 1, 2, job_id="order-42")
        took = time.monotonic() - started
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert took < store.RETRY_SECONDS + 0.5, f"gave up after {took:.1f}s, past the {store.RETRY_SECONDS}s budget"
    # the command reached Redis before it froze: the job was written after all
    assert Job.fetch("order-42").args == (1, 2)
    with pytest.raises(DuplicateJobError):
        queue.enqueue(sample_tasks.add, 1, 2, job_id="order-42")
    producer.close()


def test_blocking_waits_stay_shorter_than_the_socket_timeout(redis_server):
    client = config.connect(redis_server.url)
    assert config.SOCKET_TIMEOUT < store.RETRY_SECONDS
    assert store.Store.of(client).block_seconds <= config.SOCKET_TIMEOUT / 2
    client.close()
