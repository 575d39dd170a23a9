"""The Lua scripts in taskit/lua, read once and registered per Redis client.

Each script does one atomic operation; its header documents KEYS and ARGV.
redis-py sends EVALSHA and loads the script on a NOSCRIPT reply, so a restarted
Redis costs one extra round trip, not an error.
"""

from __future__ import annotations

import functools
from importlib import resources

import redis
from redis.commands.core import Script

NAMES = ("enqueue", "claim", "finish", "heartbeat", "maintain", "requeue", "cancel", "update", "wait", "empty", "periodic")


@functools.cache
def source(name: str) -> str:
    return resources.files("taskit").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """The scripts bound to one client; build one per connection and keep it."""

    def __init__(self, connection: redis.Redis) -> None:
        for name in NAMES:
            setattr(self, name, connection.register_script(source(name)))

    enqueue: Script
    claim: Script
    finish: Script
    heartbeat: Script
    maintain: Script
    requeue: Script
    cancel: Script
    update: Script
    wait: Script
    empty: Script
    periodic: Script
