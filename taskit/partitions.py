"""Partitioned queues: one queue over N hash tags, so that one hot queue spans every master.

    taskit.declare_queue("emails", partitions=3)

The declaration is kept in Redis (storage/keys.py PARTITIONS) so that every producer and
worker agrees. A producer reads it along with an enqueue (in the same round trip) every
storage/partitions.py REFRESH_SECONDS: the jobs of a process's first enqueue, before it
knows, go to the first partition (a declare_queue in the process reads it at once). A
worker reads it once, when it starts: restart workers after declaring. Producers spread new jobs over the partitions round
robin (per process), or by a stable hash of `partition_key=`; jobs of one key then run in
the order they were enqueued. Order is kept within a partition only. A job with a custom
id goes to the first partition (and refuses a partition key there).

Redeclaring with another number of partitions is refused while a partition that the
change would abandon (any but the first) holds a job in any state (waiting, scheduled,
running, or kept in a registry); the first partition is the same for every N.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import config
from .connections import Client
from .exceptions import ConfigurationError
from .storage import keys
from .storage.store import Store

if TYPE_CHECKING:
    from .job import Job

#: most partitions a queue may have
MAX_PARTITIONS = 1024


def declare_queue(name: str, partitions: int, connection: Client | None = None) -> None:
    """Declare `name` as a queue of `partitions` partitions (1: not partitioned)."""
    from .job import validate_id

    name = validate_id(name, "queue name")
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise ConfigurationError(f"partitions must be a whole number from 1 to {MAX_PARTITIONS}, not {partitions!r}")
    store = Store.of(config.get_connection(connection))
    current = store.partitions.declared(refresh=True).get(name, 1)
    if current == partitions:
        return
    held = store.partition_jobs(name, keys.partition_tags(name, current)[1:]) if current > 1 else 0
    if held:
        raise ConfigurationError(
            f"queue {name!r} has {current} partitions and {held} job(s) in those a change to {partitions} would "
            "leave (waiting, scheduled, running or kept in a registry); empty them first"
        )
    store.declare_partitions(name, partitions)
    store.partitions.declared(refresh=True)


def place(store: Store, queue: str, jobs: Sequence[Job]) -> None:
    """Give each new job with an id made by taskit the tag of its partition (see the module)."""
    if len(store.partitions.known_tags(queue)) == 1:
        return
    from .job import JobStatus, new_id

    for job in jobs:
        key = job._partition_key
        if not job._generated:
            if key is not None:
                raise ConfigurationError(
                    f"job {job.id!r}: a job with a custom id goes to the first partition of queue {queue!r}; "
                    "give a partition_key or a job_id, not both"
                )
            continue
        if job._status is JobStatus.CREATED:
            tag = store.partitions.tag_for(queue, key)
            if tag is not None and keys.tag_of(job.id) != tag:
                job.id = job._made_id = new_id(tag)
