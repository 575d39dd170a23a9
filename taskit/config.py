"""Where taskit finds Redis: an explicit connection, `configure()`, or `TASKIT_REDIS_URL`."""

from __future__ import annotations

import os
import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .exceptions import ConfigurationError

DEFAULT_URL = "redis://localhost:6379/0"
CONNECT_TIMEOUT = 2.0  # seconds; a dead Redis must fail fast, not hang a producer
SOCKET_TIMEOUT = 10.0  # longer than any blocking command taskit issues (see storage.BLOCK_SECONDS)

_lock = threading.Lock()
_url: str | None = None
_connection: redis.Redis | None = None


def redis_url() -> str:
    return _url or os.environ.get("TASKIT_REDIS_URL") or DEFAULT_URL


def connect(url: str) -> redis.Redis:
    """A client for `url` with timeouts that turn a dead Redis into an error within seconds."""
    if not isinstance(url, str):
        raise ConfigurationError(f"the Redis URL must be a string, not {type(url).__name__}")
    try:
        # redis-py's own retries are turned off: taskit's Store retries within one budget
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from None


def configure(url: str | None = None, connection: redis.Redis | None = None) -> None:
    """Set the default Redis for tasks and queues built without `connection=`."""
    global _url, _connection
    if url is not None and connection is not None:
        raise ConfigurationError("give configure() a url or a connection, not both")
    with _lock:
        _url = url
        _connection = check_connection(connection) if connection is not None else (connect(url) if url else None)


def get_connection(connection: redis.Redis | None = None) -> redis.Redis:
    """The connection to use: the one given, else the configured default (built once)."""
    global _connection
    if connection is not None:
        return check_connection(connection)
    with _lock:
        if _connection is None:
            _connection = connect(redis_url())
        return _connection


def check_connection(connection: object) -> redis.Redis:
    if not isinstance(connection, redis.Redis):
        raise ConfigurationError(f"connection must be a redis.Redis, not {type(connection).__name__}")
    if connection.get_encoder().decode_responses:
        raise ConfigurationError(
            "taskit stores binary msgpack data: pass a redis.Redis built without decode_responses=True"
        )
    return connection
