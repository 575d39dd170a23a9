"""Ids set by hand on a job Job.create made an id for: a custom id, whatever its form (the
enqueue reads the tag of an id taskit made off its prefix: storage/store.py)."""

from __future__ import annotations

import pytest
from test_enqueue import plain

from taskit import Job, Queue, Worker
from taskit.exceptions import DuplicateJobError, TaskitError
from taskit.storage import keys


def test_custom_id_beginning_with_the_queue_tag_and_a_dot_is_found_by_fetch(connection):
    """Job.create made an id; the caller set 'q.1' on queue 'q' (whose tag is 'q'): it is a
    custom id (its directory entry written), not read as a made one's tag and a rest."""
    assert keys.queue_tag("q") == "q"
    queue = Queue("q", connection=connection)
    job = queue.prepare_data(plain, (1,))
    job.id = "q.1"
    queue.enqueue_job(job)
    assert Worker([queue], connection=connection).work(burst=True)
    assert job.result == 1
    assert Job.fetch("q.1", connection=connection).origin == "q"


def test_custom_id_beginning_with_the_queue_tag_and_a_dot_is_refused_when_taken(connection):
    """A duplicate of such an id is refused."""
    queue = Queue("q", connection=connection)
    first = Job.create(func=plain, args=(1,), id="q.2", connection=connection)
    queue.enqueue_job(first)
    again = queue.prepare_data(plain, (2,))
    again.id = "q.2"
    with pytest.raises(DuplicateJobError):
        queue.enqueue_job(again)


def test_custom_id_equal_to_the_queue_tag_is_enqueued(connection):
    """An id equal to the queue's tag, set on a created job, is a custom id like any."""
    queue = Queue("q", connection=connection)
    job = queue.prepare_data(plain, (1,))
    job.id = "q"
    queue.enqueue_job(job)
    assert Job.fetch("q", connection=connection).origin == "q"


def test_a_non_text_id_set_by_hand_is_a_clear_error(connection):
    """An id that is no text, set on a created job, is refused with taskit's error."""
    queue = Queue("q", connection=connection)
    job = queue.prepare_data(plain, (1,))
    job.id = 12
    with pytest.raises(TaskitError, match="job id must be a string"):
        queue.enqueue_job(job)


def test_a_hand_set_id_on_a_partitioned_queue_is_kept(connection):
    """An id set by hand in the form of a made one keeps its place on a partitioned queue:
    only an id taskit made is given a partition's tag (`partitions.place`)."""
    import taskit

    taskit.declare_queue("q", partitions=2, connection=connection)
    try:
        queue = Queue("q", connection=connection)
        job = queue.prepare_data(plain, (1,))
        job.id = "q.hand"
        queue.enqueue_job(job)
        assert job.id == "q.hand"
        assert Job.fetch("q.hand", connection=connection).origin == "q"
    finally:
        Queue("q", connection=connection).empty()
        taskit.declare_queue("q", partitions=1, connection=connection)
