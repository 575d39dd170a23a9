"""Where taskit finds Redis: an explicit connection, `configure()`, or `TASKIT_REDIS_URL`.

Also the one place that turns a Redis URL or client into text (`redact_url`, `describe`):
every error, log line and help text that names a Redis goes through them, so a password
is never printed.
"""

from __future__ import annotations

import os
import re
import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .exceptions import ConfigurationError

DEFAULT_URL = "redis://localhost:6379/0"
CONNECT_TIMEOUT = 2.0  # seconds; a dead Redis must fail fast, not hang a producer
SOCKET_TIMEOUT = 10.0  # longer than any blocking command taskit issues (see storage.BLOCK_SECONDS)
#: what a user name or password is shown as
REDACTED = "***"

_lock = threading.Lock()
_url: str | None = None
_connection: redis.Redis | None = None

#: everything from the scheme up to the last "@": a password may hold an unencoded / ? # or @
_USER_INFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<user_info>.*)@", re.DOTALL)
#: credentials given as query parameters (redis-py reads ?password= and ?username=)
_QUERY_CREDENTIAL = re.compile(r"(?P<name>[?&;](?:password|username)=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its user name and password replaced by ***: 'redis://***@host:6379/0'."""
    url = _USER_INFO.sub(lambda m: f"{m['scheme'] or ''}{REDACTED}@", url, count=1)
    return _QUERY_CREDENTIAL.sub(lambda m: m["name"] + REDACTED, url)


def describe(connection: redis.Redis) -> str:
    """Where a client points, as a URL without its secrets: 'rediss://***@host:6380/0',
    'unix:///run/redis.sock?db=0'."""
    pool = connection.connection_pool
    kw = pool.connection_kwargs
    secret = any(kw.get(name) is not None for name in ("username", "password", "credential_provider"))
    user_info = f"{REDACTED}@" if secret else ""
    if kw.get("path") or issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return f"unix://{user_info}{kw.get('path', '')}?db={kw.get('db', 0)}"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    host = str(kw.get("host", "localhost"))
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{scheme}://{user_info}{host}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def redis_url() -> str:
    return _url or os.environ.get("TASKIT_REDIS_URL") or DEFAULT_URL


def connect(url: str) -> redis.Redis:
    """A client for `url` with timeouts that turn a dead Redis into an error within seconds.

    A URL that cannot work is refused here, named without its secrets, instead of at the
    first command.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"the Redis URL must be a string, not {type(url).__name__}")
    try:
        return _client(url)
    except (ValueError, TypeError):
        raise ConfigurationError(f"bad Redis URL {redact_url(url)!r}: {_why_refused(url)}") from None


def _client(url: str) -> redis.Redis:
    # redis-py's own retries are turned off: taskit's Store retries within one budget
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )
    # an unknown query parameter (?timeout=5) would raise TypeError at the first command
    pool = client.connection_pool
    pool.connection_class(**pool.connection_kwargs)
    return client


def _why_refused(url: str) -> str:
    """Why redis-py refuses `url`, in words that cannot hold a secret: its redacted form is
    parsed again, since the error of the original may quote a piece of the password."""
    try:
        _client(redact_url(url)).close()
    except TypeError as exc:  # redis-py's words: "__init__() got an unexpected keyword argument 'x'"
        unknown = re.search(r"argument '(\w+)'", str(exc))
        return f"unknown option {unknown[1]!r}" if unknown else str(exc)
    except ValueError as exc:
        return str(exc)
    return "it does not parse as written; percent-encode any / ? # @ : in the user name or password"


def configure(url: str | None = None, connection: redis.Redis | None = None) -> None:
    """Set the default Redis for tasks and queues built without `connection=`.

    `configure()` with no argument forgets it (back to TASKIT_REDIS_URL). A bad argument
    raises and leaves the previous default in place.
    """
    global _url, _connection
    if url is not None and connection is not None:
        raise ConfigurationError("give configure() a url or a connection, not both")
    if connection is not None:
        chosen: redis.Redis | None = check_connection(connection)
    else:
        chosen = connect(url) if url is not None else None
    with _lock:
        _url, _connection = url, chosen


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
