"""A job's stored record, wherever it is kept, for tests that look beneath the API.

A job not ended has a record in one of its tag's buckets and, once anything changed, a
state entry that overrides it; an ended job has a hash of its own (storage/keys.py,
lua/lib/records.lua). These helpers let a test read a job either way, change or corrupt
one field, and name the keys of a job or queue, without knowing the layout.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import redis

from taskit.storage import keys
from taskit.storage.store import Fields, Store


def stored(client: redis.Redis, job_id: str) -> Fields | None:
    """Every stored field of a job, wherever it is kept (None if it does not exist)."""
    return Store.of(client).fetch([job_id])[0]


def field(client: redis.Redis, job_id: str, name: str) -> bytes | None:
    """One stored field of a job (None if it or the job does not exist)."""
    return (stored(client, job_id) or {}).get(name)


def tag(client: redis.Redis, job_id: str) -> str:
    """The tag of a job: carried by its id, or read from its directory entry."""
    found = keys.tag_of(job_id) or (client.get(keys.directory(job_id)) or b"").decode()
    assert found, f"job {job_id} has no tag"
    return found


def key(client: redis.Redis, job_id: str) -> str:
    """The key of a job's own hash (which an ended job has)."""
    return keys.job(tag(client, job_id), job_id)


def bucket(client: redis.Redis, job_id: str) -> str:
    """The bucket that holds the record of a job not ended."""
    return keys.tag_keys(tag(client, job_id)).bucket(job_id)


def state_key(client: redis.Redis, job_id: str) -> str:
    return keys.tag_keys(tag(client, job_id)).state


def done_key(client: redis.Redis, job_id: str) -> str:
    return keys.done(tag(client, job_id), job_id)


def has_own_hash(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(key(client, job_id)))


def exists(client: redis.Redis, job_id: str) -> bool:
    """Whether a job's record is anywhere (a queued job whose ttl ran out is not)."""
    return stored(client, job_id) is not None


def ttl(client: redis.Redis, job_id: str) -> float:
    """Seconds before a job expires, as Redis's TTL says it: its own hash's expiry if it has
    ended, else its ttl in the tag's expiry zset; -1 never, -2 no such job."""
    if has_own_hash(client, job_id):
        return client.ttl(key(client, job_id))
    if not exists(client, job_id):
        return -2
    until = client.zscore(keys.tag_keys(tag(client, job_id)).expiry, job_id)
    return -1 if until is None else round(until - time.time())  # (as Redis rounds a TTL; the enqueue time is rounded to the ms)


def _parts(client: redis.Redis, job_id: str) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
    bucket_key, state = bucket(client, job_id), state_key(client, job_id)
    record, changes = client.hget(bucket_key, job_id), client.hget(state, job_id)
    as_map = lambda blob: dict(zip(msgpack.unpackb(blob, raw=True)[0::2], msgpack.unpackb(blob, raw=True)[1::2]))
    return (as_map(record) if record else {}), (as_map(changes) if changes else {})


def set_fields(client: redis.Redis, job_id: str, mapping: dict[str, Any]) -> None:
    """Change fields of a job as a script would: in its own hash if it has ended, else in its
    state entry (which overrides its record)."""
    if has_own_hash(client, job_id):
        client.hset(key(client, job_id), mapping=mapping)
        return
    _, changes = _parts(client, job_id)
    for name, value in mapping.items():
        changes[name.encode()] = value if isinstance(value, bytes) else str(value).encode()
    _write(client, state_key(client, job_id), job_id, changes)


def delete_field(client: redis.Redis, job_id: str, name: str) -> None:
    """Remove a field from a job, wherever it is kept."""
    if has_own_hash(client, job_id):  # a field of its own, or of its record, packed in 'p'
        own = key(client, job_id)
        client.hdel(own, name)
        blob = client.hget(own, "p")
        if blob is not None:
            flat = msgpack.unpackb(blob, raw=True)
            record = {k: v for k, v in zip(flat[0::2], flat[1::2]) if k != name.encode()}
            client.hset(own, "p", msgpack.packb([x for pair in record.items() for x in pair], use_bin_type=False))
        return
    record, changes = _parts(client, job_id)
    record.pop(name.encode(), None)
    changes.pop(name.encode(), None)
    _write(client, bucket(client, job_id), job_id, record)
    if changes:
        _write(client, state_key(client, job_id), job_id, changes)


def corrupt_record(client: redis.Redis, job_id: str, blob: bytes) -> None:
    """Overwrite the packed record of a job not ended with `blob`. (Records are msgpack
    without its bin type, which Redis's Lua cannot read: pack with use_bin_type=False.)"""
    client.hset(bucket(client, job_id), job_id, blob)


def _write(client: redis.Redis, hash_key: str, job_id: str, fields: dict[bytes, Any]) -> None:
    client.hset(hash_key, job_id, msgpack.packb([x for pair in fields.items() for x in pair], use_bin_type=False))


def place(queue: str = keys.DEFAULT_QUEUE) -> keys.QueueKeys:
    """The keys of a queue."""
    return keys.of_queue(queue)


def inflight(worker: str, queue: str = keys.DEFAULT_QUEUE) -> str:
    """A worker's in-flight list in the tag of `queue`."""
    return keys.inflight(keys.queue_tag(queue), worker)


def inflight_keys(client: redis.Redis) -> list[bytes]:
    """Every in-flight list in Redis."""
    return list(client.scan_iter(f"{keys.PREFIX}:{{*}}:inflight:*"))


def periodic_key(name: str, queue: str = keys.DEFAULT_QUEUE) -> str:
    return keys.periodic(keys.queue_tag(queue), name)


def write_job(client: redis.Redis, job_id: str | bytes, fields: dict[str, Any], queue: str = keys.DEFAULT_QUEUE) -> None:
    """Write a job's record by hand, as anyone who can write to Redis could, in the tag of
    `queue` (a custom id gets its directory entry); it is not pushed anywhere."""
    tagged = keys.of_queue(queue).tagged
    raw = job_id if isinstance(job_id, bytes) else job_id.encode()
    flat = [x for name, value in fields.items() if name != keys.Field.STATUS or value != "queued" for x in (name, value)]
    client.hset(tagged.bucket(raw.decode("utf-8", "surrogateescape")), raw, msgpack.packb(flat, use_bin_type=False))
    client.set(f"{keys.PREFIX}:{{".encode() + raw + b"}:home", tagged.tag)


def own_key(job_id: bytes, queue: str = keys.DEFAULT_QUEUE) -> bytes:
    """The own hash of an ended job with a custom id (bytes: any id) on `queue`."""
    return f"{keys.of_queue(queue).tagged.prefix}job:".encode() + job_id


def forget(client: redis.Redis, job_id: str) -> None:
    """Drop a job's record, state and ttl, as the maintenance step does when its ttl runs
    out (its id stays wherever it is listed)."""
    tagged = keys.tag_keys(tag(client, job_id))
    client.hdel(tagged.bucket(job_id), job_id)
    client.hdel(tagged.state, job_id)
    client.zrem(tagged.expiry, job_id)


def held_by(client: redis.Redis, worker: str) -> list[bytes]:
    """Every id in any in-flight list of `worker`."""
    return [i for key in client.scan_iter(f"{keys.PREFIX}:{{*}}:inflight:{worker}") for i in client.lrange(key, 0, -1)]
