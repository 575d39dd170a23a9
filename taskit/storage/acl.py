"""The least privilege taskit needs in Redis, as one `ACL SETUSER` line.

The user may touch only keys and channels under taskit's prefix and run only the commands
taskit sends: those of store.py, those of the Lua scripts in taskit/lua (a script runs its
commands under the caller's ACL, so they count too), and those redis-py sends when it
connects. `taskit acl` prints the line; docs/scaling.md shows it; tests/test_topologies.py
runs taskit through a user made with it and checks that Redis denied nothing.
"""

from __future__ import annotations

from . import keys

#: every command taskit sends, and where from
COMMANDS = (
    # redis-py when it connects and checks a pooled connection (AUTH and HELLO need no grant)
    "ping", "select",
    # store.py: transactions, scripts (EVALSHA; SCRIPT LOAD when Redis lost a script), blocking waits,
    # an enqueue's wait for its replicas (replicas=N)
    "multi", "exec", "evalsha", "script|load", "blpop", "blmove", "wait",
    # store.py and the scripts: keys
    "del", "exists", "expire", "mget", "persist", "pttl", "rename", "type", "get", "set",
    "hdel", "hexists", "hget", "hgetall", "hlen", "hmget", "hset", "hsetnx", "hstrlen",
    "lindex", "llen", "lmove", "lpush", "lrange", "lrem", "ltrim", "rpush",
    "sadd", "smembers", "srem", "sscan", "sismember",
    "zadd", "zcard", "zcount", "zrange", "zrangebyscore", "zrem", "zremrangebyscore", "zscore", "zmscore",
    # the scripts: Redis's clock (lib/verdicts.lua; an idle worker's claim, lua/claim.lua); the dashboard's history (lib/stats.lua)
    "time", "hincrby", "expireat",
    # the cancel of a running job: lua/cancel.lua publishes it; each worker subscribes to its channel
    "publish", "subscribe",
)

#: what redis-py's cluster client sends besides: the slot map, the commands' key positions,
#: and ASKING when a slot is being moved
CLUSTER_COMMANDS = ("cluster|slots", "command", "asking")

#: the password placeholder `taskit acl` prints: replace it before running the line
PASSWORD_PLACEHOLDER = "CHANGE-ME"


def rules(cluster: bool = False, prefix: str = keys.PREFIX) -> str:
    """The user's access rules: what a managed service's user "access string" takes.

    `resetchannels` comes first so that no channel is allowed beyond `&prefix:*`, even where
    acl-pubsub-default is allchannels (Redis 6.2's default).
    """
    commands = COMMANDS + (CLUSTER_COMMANDS if cluster else ())
    return " ".join(["on", f"~{prefix}:*", "resetchannels", f"&{prefix}:*", "-@all", *(f"+{c}" for c in commands)])


def setuser(user: str = "taskit", password: str = PASSWORD_PLACEHOLDER, cluster: bool = False, prefix: str = keys.PREFIX) -> str:
    """The `ACL SETUSER` line that makes `user` taskit's least-privilege user (on a cluster,
    run the `cluster=True` line on every node).

    `reset` first: running the line again gives the same user, whatever it had before.
    """
    return f"ACL SETUSER {user} reset >{password} {rules(cluster, prefix)}"
