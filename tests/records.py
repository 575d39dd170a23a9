"""A job's stored record, packed or not, for tests that look beneath the API.

A job enqueued to run now is packed into a bucket hash (storage/keys.py `packed`) until
something needs its own hash; these helpers let a test read it either way, or give it
its own hash first so that the test can edit (or corrupt) one field.
"""

from __future__ import annotations

import redis

from taskit.storage import keys, scripts
from taskit.storage.store import Fields, Store


def stored(client: redis.Redis, job_id: str) -> Fields | None:
    """Every stored field of a job, wherever it is kept (None if it does not exist)."""
    return Store.of(client).fetch([job_id])[0]


def own_hash(client: redis.Redis, job_id: str) -> str:
    """Give a packed job its own hash, as the claim that starts it would; return the key."""
    source = scripts._read("lib/packed.lua") + "\nunpack_job(KEYS[1], KEYS[2], ARGV[1])"
    client.eval(source, 2, keys.job(job_id), keys.packed(job_id), job_id)
    return keys.job(job_id)
