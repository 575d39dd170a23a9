"""Where taskit finds Redis: an explicit connection, `configure()`, or `TASKIT_REDIS_URL`.

The URL forms (one Redis, TLS, Unix socket, Sentinel, Cluster), the clients built from them
and their redacted names live in `taskit.connections`; the names used across taskit
(`connect`, `describe`, `redact_url`, `check_connection`) are re-exported here.
"""

from __future__ import annotations

import os
import threading
from typing import Any

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

__all__ = [
    "CONNECT_TIMEOUT", "DEFAULT_URL", "REDACTED", "SOCKET_TIMEOUT", "Client", "check_connection", "configure",
    "connect", "describe", "get_connection", "redact_url", "redis_url",
]

DEFAULT_URL = "redis://localhost:6379/0"

_lock = threading.Lock()
_url: str | None = None
_connection: Client | None = None


def redis_url() -> str:
    return _url or os.environ.get("TASKIT_REDIS_URL") or DEFAULT_URL


def configure(url: str | None = None, connection: Client | None = None, **options: Any) -> None:
    """Set the default Redis for tasks and queues built without `connection=`.

    `options` are the URL's query options given as keywords, such as the TLS files:
    `configure(url="rediss://redis.internal:6380/0", ssl_ca_certs="/etc/ssl/ca.pem")`;
    without `url` they apply to TASKIT_REDIS_URL. `configure()` with no argument forgets
    the default (back to TASKIT_REDIS_URL). A bad argument raises and leaves the previous
    default in place.
    """
    global _url, _connection
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
    with _lock:
        _url, _connection = url, chosen


def get_connection(connection: Client | None = None) -> Client:
    """The connection to use: the one given, else the configured default (built once)."""
    global _connection
    if connection is not None:
        return check_connection(connection)
    with _lock:
        if _connection is None:
            _connection = connect(redis_url())
        return _connection
