"""Where taskit finds Redis: an explicit connection, `configure()`, or `TASKIT_REDIS_URL`;
and how many replicas an enqueue waits for (`configure(replicas=...)`, see `ReplicaWait`).

The URL forms (one Redis, TLS, Unix socket, Sentinel, Cluster), the clients built from them
and their redacted names live in `taskit.connections`; the names used across taskit
(`connect`, `describe`, `redact_url`, `check_connection`) are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import threading
from typing import Any, NamedTuple

from .connections import (
    CONNECT_TIMEOUT,
    REDACTED,
    SOCKET_TIMEOUT,
    Client,
    check_connection,
    connect,
    describe,
    redact_url,
)
from .exceptions import ConfigurationError
from .storage.store import Store

__all__ = [
    "CONNECT_TIMEOUT", "DEFAULT_URL", "REDACTED", "REPLICA_TIMEOUT", "SOCKET_TIMEOUT", "Client", "ReplicaWait",
    "check_connection", "configure", "connect", "describe", "get_connection", "redact_url", "redis_url",
    "replica_wait",
]

DEFAULT_URL = "redis://localhost:6379/0"

#: how long an enqueue with `replicas=N` waits for them by default, in seconds
REPLICA_TIMEOUT = 1.0


class ReplicaWait(NamedTuple):
    """How many replicas must confirm an enqueue (Redis `WAIT`) before it returns, and for how
    long to wait for them (seconds); 0 replicas: no wait, the enqueue returns once the master has it."""

    replicas: int = 0
    timeout: float = REPLICA_TIMEOUT


_lock = threading.Lock()
_url: str | None = None
_connection: Client | None = None
_replica_wait = ReplicaWait()


def redis_url() -> str:
    return _url or os.environ.get("TASKIT_REDIS_URL") or DEFAULT_URL


def configure(
    url: str | None = None,
    connection: Client | None = None,
    *,
    replicas: int = 0,
    replica_timeout: float | dt.timedelta = REPLICA_TIMEOUT,
    **options: Any,
) -> None:
    """Set the default Redis for tasks and queues built without `connection=`, and how many
    replicas each enqueue waits for.

    `options` are the URL's query options given as keywords, such as the TLS files:
    `configure(url="rediss://redis.internal:6380/0", ssl_ca_certs="/etc/ssl/ca.pem")`;
    without `url` they apply to TASKIT_REDIS_URL. `replicas=N` makes every enqueue of this
    process (unless a Queue or the call says otherwise) wait until N replicas have it, up to
    `replica_timeout` seconds, else raise NotReplicatedError (see docs/scaling.md).
    Each call sets all of these: `configure()` with no argument forgets them (back to
    TASKIT_REDIS_URL, no replica wait). A bad argument raises and leaves the previous
    default in place.
    """
    global _url, _connection, _replica_wait
    wait = ReplicaWait(check_replicas(replicas), check_replica_timeout(replica_timeout))
    if url is not None and connection is not None:
        raise ConfigurationError("give configure() a url or a connection, not both")
    if connection is not None:
        if options:
            raise ConfigurationError(f"configure() takes {', '.join(sorted(options))} with a url, not with a connection")
        chosen: Client | None = check_connection(connection)
    elif url is not None or options:
        chosen = connect(url if url is not None else os.environ.get("TASKIT_REDIS_URL") or DEFAULT_URL, **options)
    else:
        chosen = None
    if chosen is not None and wait.replicas:
        Store.of(chosen).check_replica_wait(*wait)
    with _lock:
        _url, _connection, _replica_wait = url, chosen, wait


def get_connection(connection: Client | None = None) -> Client:
    """The connection to use: the one given, else the configured default (built once)."""
    global _connection
    if connection is not None:
        return check_connection(connection)
    if _connection is not None:  # (built: no lock to take, at each enqueue)
        return _connection
    with _lock:
        if _connection is None:
            _connection = connect(redis_url())
        return _connection


def replica_wait(replicas: int | None = None, timeout: float | dt.timedelta | None = None) -> ReplicaWait:
    """The replica wait of an enqueue: `replicas` and `timeout` checked, the process default
    (`configure`) for either one that is None."""
    default = _replica_wait
    if replicas is None and timeout is None:
        return default
    return ReplicaWait(
        default.replicas if replicas is None else check_replicas(replicas),
        default.timeout if timeout is None else check_replica_timeout(timeout),
    )


def check_replicas(replicas: object) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ConfigurationError(f"replicas must be a whole number of replicas (0: no wait), not {type(replicas).__name__}")
    if replicas < 0:
        raise ConfigurationError(f"replicas must be 0 or more, not {replicas}")
    return replicas


def check_replica_timeout(timeout: object) -> float:
    if isinstance(timeout, dt.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigurationError(f"replica_timeout must be seconds or a timedelta, not {type(timeout).__name__}")
    if not 0 < timeout < math.inf:  # also refuses NaN
        raise ConfigurationError(f"replica_timeout must be more than 0 seconds and finite, not {timeout}")
    return float(timeout)
