"""The Lua scripts in taskit/lua, read once and registered per Redis client.

Each script does one atomic operation; its header documents KEYS and ARGV.
redis-py sends EVALSHA and loads the script on a NOSCRIPT reply, so a restarted
Redis costs one extra round trip, not an error.
"""

from __future__ import annotations

import functools
from importlib import resources

from redis.commands.core import Script

from ..connections import Client

NAMES = (
    "enqueue", "claim", "finish", "heartbeat", "next_queues", "maintain", "requeue", "cancel", "update", "wait",
    "empty", "periodic", "reap", "renew", "settle", "read", "withdraw", "peek",
)


@functools.cache
def source(name: str) -> str:
    """A script's text, with `--#include lib` lines replaced by lua/lib/<lib>.lua."""
    lines = []
    for line in _read(f"{name}.lua").splitlines():
        if line.startswith("--#include "):
            line = _read(f"lib/{line.split()[1]}.lua")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _read(path: str) -> str:
    return (resources.files("taskit") / "lua" / path).read_text()


class Scripts:
    """The scripts bound to one client; build one per connection and keep it."""

    def __init__(self, connection: Client) -> None:
        for name in NAMES:
            setattr(self, name, connection.register_script(source(name)))

    enqueue: Script
    claim: Script
    finish: Script
    heartbeat: Script
    next_queues: Script
    maintain: Script
    requeue: Script
    cancel: Script
    update: Script
    wait: Script
    empty: Script
    periodic: Script
    reap: Script
    renew: Script
    settle: Script
    read: Script
    withdraw: Script
    peek: Script
