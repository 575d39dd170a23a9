"""Redis clients for every topology, built from URLs, and named without their secrets.

    redis://[[user]:password@]host[:port][/db][?option=value&...]     one Redis
    rediss://...                                                      one Redis over TLS
    unix://[[user]:password@]/path/to/redis.sock[?db=N&...]           one Redis on a Unix socket
    redis+cluster://[[user]:password@]host:port[,host:port...][?...]  Redis Cluster (seed nodes)
    rediss+cluster://...                                              Redis Cluster over TLS
    redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db][?...]
                                                                      the master Sentinel knows as SERVICE
    rediss+sentinel://...                                             TLS to the sentinels and the master

The user name and password are the data nodes' (the master's, for Sentinel); sentinels that
ask for a password of their own take `sentinel_username` / `sentinel_password`. Every other
query option is redis-py's connection keyword of that name (`socket_timeout`, `ssl_ca_certs`,
...), and the same options can be given as keyword arguments (`connect(url, ssl_ca_certs=...)`,
`taskit.configure(...)`); an option redis-py would not use is refused, not ignored.

Whatever the topology, a client gets taskit's timeouts and no retries of its own: taskit's
Store retries a failed call within one time budget (storage/store.py), and a client that
retried too would stretch it.

This module is also the one place that turns a Redis URL or client into text (`redact_url`,
`describe`): every error, log line and help text that names a Redis goes through them, so a
password is never printed, not even one typed in the wrong place (where the URL, the port or
the database goes, after a #, or in the query: a query value is shown only when it cannot be a
secret, and an option's name only when it is one that exists or a misspelling of one).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import REDIS_ALLOWED_KEYS, ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from .exceptions import ConfigurationError, RedisUnavailableError

#: a client taskit can use: one Redis (plain, TLS, Unix socket or a Sentinel-managed master) or a cluster
Client: TypeAlias = "redis.Redis | RedisCluster"  # a string: redis-py's stubs make Redis generic

CONNECT_TIMEOUT = 2.0  # seconds; a dead Redis must fail fast, not hang a producer
#: seconds a reply may take. Shorter than a producer's retry budget (storage.store.RETRY_SECONDS),
#: so that a frozen Redis, which makes every attempt last this long, is reported within that
#: budget; twice any block taskit asks of Redis (storage.store.Store.block_seconds).
SOCKET_TIMEOUT = 4.0
#: what a user name or password is shown as
REDACTED = "***"

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
#: options for the sentinels themselves (the others go to the data nodes)
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
#: options whose value is a secret
SECRET_OPTIONS = ("username", "password", "ssl_password", *SENTINEL_OPTIONS)

#: how a URL begins; a text without it is not shown at all (it may be a password given for the URL)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: everything from the scheme up to the last "@": a password may hold an unencoded / ? # or @
_USER_INFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<user_info>.*)@", re.DOTALL)
#: query options whose value names a file: shown, whatever it is
PATH_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
#: a query value that cannot be a secret, whatever option it is given to: a number, a flag, a
#: TLS setting. Any other value (?db=S3CRET, ?client_name=...) is shown as ***
_PLAIN_VALUE = re.compile(r"-?\d+(?:\.\d+)?|true|false|yes|no|on|off|none|optional|required|tlsv1[._][0-3]",
                          re.IGNORECASE)
#: how close an unknown option's name must be to a known one to be shown (as a misspelling of it)
_CLOSE = 0.8


#: connections a pool may open: no cap in practice (redis-py's own default was unbounded
#: before 8.0); the threads and async jobs a worker runs at once set how many it uses
MAX_CONNECTIONS = 2**31 - 1


def _taskit_settings() -> dict[str, Any]:
    """What every connection taskit makes is built with, unless the URL says otherwise."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
    }


# -- text -------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """`url` with its user name and password replaced by ***: 'redis://***@host:6379/0'.

    What may be a secret typed in the wrong place is hidden too: a #fragment, a port or a
    database that is not a number ('redis://host/***'), and the whole text when it is not a
    URL at all ('***': a password given where the URL goes)."""
    if not _SCHEME.match(url):
        return url and REDACTED  # ('' shows as itself: nothing to hide)
    url = _USER_INFO.sub(lambda m: f"{m['scheme'] or ''}{REDACTED}@", url, count=1)
    scheme, _, rest = url.partition("://")
    rest, fragment, _ = rest.partition("#")
    parts = _AFTER_SCHEME.match(rest)
    assert parts is not None  # (every text matches)
    netloc = ",".join(_hide_port(node) for node in parts["netloc"].split(","))
    path = parts["path"] if scheme.lower() == "unix" else _hide_database(scheme.lower(), parts["path"])
    return f"{scheme}://{netloc}{path}{_hide_query(parts['query'])}" + (f"#{REDACTED}" if fragment else "")


#: what follows the scheme (user info already redacted): host(s), path, query
_AFTER_SCHEME = re.compile(r"(?P<netloc>[^/?]*)(?P<path>[^?]*)(?P<query>.*)", re.DOTALL)


def _hide_port(node: str) -> str:
    """'host:6379' as it is; 'host:S3CRET' -> 'host:***'."""
    host, colon, port = node.rpartition(":")
    if not colon or node.endswith("]") or port.isdigit() or not port:
        return node
    return f"{host}:{REDACTED}"


def _hide_database(scheme: str, path: str) -> str:
    """The path of a URL that is not a socket's: '/0' as it is, '/S3CRET' -> '/***' (the
    service a Sentinel URL names first is kept)."""
    segments = path.split("/")
    keep = 2 if scheme in SENTINEL_SCHEMES else 1  # '' before the first /, and the service
    return "/".join(s if i < keep or not s or s.isdigit() else REDACTED for i, s in enumerate(segments))


def _hide_query(query: str) -> str:
    """'?db=0&password=***': each option of a query ('?...') as it may be shown. A value is
    shown only when it cannot be a secret (a number, a flag, a TLS setting, a file's path)
    and its option's name only when it is one redis-py or taskit knows, or a misspelling of
    one; anything else is *** (?db=S3CRET -> ?db=***, a bare ?S3CRET -> ?***)."""
    if not query:
        return query
    shown = []
    for item in re.split(r"([&;])", query[1:]):
        name, equals, value = item.partition("=")
        name = unquote_plus(name)
        if item in ("", "&", ";"):
            shown.append(item)
        elif not equals or _option_shown(name) is None:
            shown.append(REDACTED)
        elif name in _known_options() and name not in SECRET_OPTIONS and _plain(name, unquote_plus(value)):
            shown.append(item)
        else:
            shown.append(f"{name}={REDACTED}")
    return "?" + "".join(shown)


def _plain(option: str, value: str) -> bool:
    """Whether a value of a (known, not secret) option can be shown: see `_hide_query`."""
    return option in PATH_OPTIONS or bool(_PLAIN_VALUE.fullmatch(value))


@functools.cache
def _known_options() -> frozenset[str]:
    """Every option a URL's query may name: redis-py's connection keywords (of every kind of
    connection, and of the pool), the ones it reads from a URL, and taskit's own."""
    from redis import connection as connections

    names = set(getattr(connections, "URL_QUERY_ARGUMENT_PARSERS", {}))
    for kind in (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection, redis.ConnectionPool):
        for cls in kind.__mro__:
            init = vars(cls).get("__init__")
            if init is not None:
                names.update(p.name for p in inspect.signature(init).parameters.values()
                             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    names.discard("self")
    return frozenset(names | set(SECRET_OPTIONS) | set(_TYPED_OPTIONS))


def _option_shown(name: str) -> str | None:
    """`name` if it may be shown: an option taskit or redis-py knows, or one so close to a
    known one that it is a misspelling of it (?sentinel_pasword=); None for any other name,
    which may be a secret typed in the wrong place."""
    if name in _known_options():
        return name
    return name if difflib.get_close_matches(name, _known_options(), n=1, cutoff=_CLOSE) else None


def _check_query(url: str) -> None:
    """Refuse what redis-py would silently drop or misread in a URL's query, in words that
    never quote a secret: an item without a value (?S3CRET), an option given twice (redis-py
    reads the first), and an option no one knows (named only when it is a misspelling of
    one that exists)."""
    query = urlsplit(_USER_INFO.sub(lambda m: m["scheme"] or "", url, count=1)).query
    seen = set()
    for item in re.split(r"[&;]", query):
        name, equals, value = item.partition("=")
        name = unquote_plus(name)
        if not item:
            continue
        if not equals or not name:
            raise ValueError("the query holds an item that is not option=value (not shown, in case it is a secret)")
        shown = _option_shown(name)
        if shown is None:
            raise ValueError("the query names an option that redis-py does not know (not shown, in case it is a "
                             "secret): options are redis-py's connection keywords, such as socket_timeout")
        if name not in _known_options():
            match = difflib.get_close_matches(name, _known_options(), n=1, cutoff=_CLOSE)[0]
            raise ValueError(f"unknown option {shown!r} (did you mean {match!r}?)")
        if name in seen:
            raise ValueError(f"option {name!r} is given twice: give it once")
        if not value:
            raise ValueError(f"option {name!r} has no value: give one, or leave the option out")
        seen.add(name)


def describe(connection: Client) -> str:
    """Where a client points, as a URL without its secrets: 'rediss://***@host:6380/0',
    'unix:///run/redis.sock?db=0', 'redis+cluster://***@10.0.0.1:6379,10.0.0.2:6379',
    'redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/mymaster/0'."""
    kw = connection.get_connection_kwargs()
    if isinstance(connection, RedisCluster):
        nodes = getattr(connection, "startup_nodes", None) or connection.nodes_manager.startup_nodes.values()
        hosts = ",".join(_host_port(node.host, node.port) for node in nodes)
        return f"{_scheme(_is_tls(kw))}+cluster://{_user_info(kw)}{hosts}"
    pool = connection.connection_pool
    tls = issubclass(pool.connection_class, redis.SSLConnection)
    if isinstance(pool, SentinelConnectionPool):
        manager = pool.sentinel_manager
        sentinels = [s.get_connection_kwargs() for s in manager.sentinels]
        hosts = ",".join(_host_port(s.get("host", ""), s.get("port", DEFAULT_SENTINEL_PORT)) for s in sentinels)
        user_info = _user_info(kw) or _user_info(manager.sentinel_kwargs)
        return f"{_scheme(tls)}+sentinel://{user_info}{hosts}/{pool.service_name}/{kw.get('db', 0)}"
    if kw.get("path") or issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return f"unix://{_user_info(kw)}{kw.get('path', '')}?db={kw.get('db', 0)}"
    host_port = _host_port(str(kw.get("host", "localhost")), kw.get("port", DEFAULT_PORT))
    return f"{_scheme(tls)}://{_user_info(kw)}{host_port}/{kw.get('db', 0)}"


def _scheme(tls: bool) -> str:
    return "rediss" if tls else "redis"


def _user_info(kw: Mapping[str, Any]) -> str:
    secret = any(kw.get(name) is not None for name in ("username", "password", "credential_provider"))
    return f"{REDACTED}@" if secret else ""


def _host_port(host: str, port: object) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address in brackets


def _is_tls(kw: Mapping[str, Any]) -> bool:
    connection_class = kw.get("connection_class")
    return bool(kw.get("ssl")) or (isinstance(connection_class, type) and issubclass(connection_class, redis.SSLConnection))


# -- clients ----------------------------------------------------------------------------------


def connect(url: str, **options: Any) -> Client:
    """A client for `url` (and the query `options` given as keywords) with taskit's timeouts.

    A URL that cannot work is refused here, named without its secrets, instead of at the
    first command. One Redis and Sentinel clients connect at their first command; a cluster
    client asks a seed node for the cluster's slot map now, so an unreachable cluster raises
    RedisUnavailableError here.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"the Redis URL must be a string, not {type(url).__name__}")
    try:
        build = _plan(url, options)
    except (ValueError, TypeError, redis.RedisError):
        raise ConfigurationError(f"bad Redis URL {redact_url(url)!r}: {_why_refused(url, options)}") from None
    try:
        return build()
    except (redis.RedisError, RedisClusterException) as exc:
        # only a cluster client talks to Redis when built: name its seed nodes, not the error's
        where = redact_url(url)
        cause = exc.__cause__ if isinstance(exc, RedisClusterException) else exc
        if isinstance(cause, (redis.ConnectionError, redis.TimeoutError)):
            raise RedisUnavailableError(f"cannot reach Redis at {where}: {exc}") from None
        raise ConfigurationError(f"cannot use Redis at {where}: {exc}") from None


def check_connection(connection: object) -> Client:
    """`connection` if taskit can use it, else a ConfigurationError saying why."""
    if not isinstance(connection, (redis.Redis, RedisCluster)):
        raise ConfigurationError(
            f"connection must be a redis.Redis or a redis.cluster.RedisCluster, not {type(connection).__name__}"
        )
    if connection.get_encoder().decode_responses:
        raise ConfigurationError(
            f"taskit stores binary msgpack data: pass a {type(connection).__name__} built without decode_responses=True"
        )
    return connection


def _plan(url: str, options: Mapping[str, Any]) -> Callable[[], Client]:
    """Parse and check `url` and `options` without any network: the client's constructor.

    Raises ValueError, TypeError or RedisError (redis-py's, for a bad port, an unknown
    option or a bad TLS setting) when they cannot work.
    """
    if not _SCHEME.match(url):
        what = "it is not a URL (not shown, in case it is a password)" if url else "it is empty"
        raise ValueError(f"{what}: write redis://[[user]:password@]host[:port][/db] "
                         "or another form of docs/jobs.md#the-connection")
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise ValueError(f"Redis URL must specify one of the following schemes ({', '.join(s + '://' for s in SCHEMES)})")
    if "#" in url:
        raise ValueError("a Redis URL has no #fragment, so what follows a # would be ignored: "
                         "write a # in a user name or password as %23")
    _check_query(url)
    if scheme in CLUSTER_SCHEMES:
        return _cluster_plan(url, CLUSTER_SCHEMES[scheme], options)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_plan(url, SENTINEL_SCHEMES[scheme], options)
    if scheme != "unix":
        _check_database(urlsplit(url).path.strip("/"), "redis://host:6379/0")
    connection_class, kwargs = _connection_settings(url, options)

    # redis-py 8 caps a pool at 100 connections and raises past them; a worker's jobs share
    # its pool (`job.connection`), and `--threads 200` runs 200 of them at once
    kwargs.setdefault("max_connections", MAX_CONNECTIONS)

    def one_redis() -> redis.Redis:
        client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))
        client.auto_close_connection_pool = True  # close() closes its connections, as with Redis.from_url
        return client

    return one_redis


def _check_database(db: str, example: str) -> None:
    """Refuse a database that is not a number (redis-py would use database 0 instead)."""
    if db and not db.isdigit():
        raise ValueError(f"the database in the URL's path must be a number, as in {example}")


def _connection_settings(url: str, options: Mapping[str, Any]) -> tuple[type[redis.Connection], dict[str, Any]]:
    """(connection class, its keyword arguments) for a one-node URL of redis-py's own schemes,
    the options given as keywords and taskit's settings, checked by building one connection."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for name, _ in query:
        if name in options:
            raise ValueError(f"option {name!r} is given in the URL and as an argument: give it once")
    if any(name in _TYPED_OPTIONS for name, _ in query):
        # redis-py passes these on as text from a URL (some versions): taskit reads them
        options = {**options, **{name: value for name, value in query if name in _TYPED_OPTIONS}}
        url = parts._replace(query=urlencode([(n, v) for n, v in query if n not in _TYPED_OPTIONS])).geturl()
    options = {name: _TYPED_OPTIONS[name](value) if name in _TYPED_OPTIONS else value for name, value in options.items()}
    # the query wins over taskit's settings, as in redis-py
    pool = redis.ConnectionPool.from_url(url, **{**_taskit_settings(), **options})
    # an unknown option (?timeout=5) would raise TypeError only at the first command
    pool.connection_class(**pool.connection_kwargs).disconnect()
    return pool.connection_class, dict(pool.connection_kwargs)


def _tls_version(value: object) -> int:
    """A minimum TLS version: a TLSVersion, its number, or its name ('TLSv1_2', 'TLSv1_3')."""
    if isinstance(value, int):
        return int(value)
    name = str(value).replace(".", "_")
    if name.isdigit():
        return int(name)
    try:
        return int(ssl.TLSVersion[name])
    except KeyError:
        raise ValueError(f"ssl_min_version must be TLSv1_2 or TLSv1_3, not {value!r}") from None


def _check_hostname(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in ("true", "yes", "1", "false", "no", "0"):
        raise ValueError(f"ssl_check_hostname must be true or false, not {value!r}")
    return text in ("true", "yes", "1")


#: options whose text in a URL taskit turns into their type (the same as given as keywords)
_TYPED_OPTIONS: dict[str, Callable[[object], Any]] = {"ssl_min_version": _tls_version, "ssl_check_hostname": _check_hostname}


def _nodes(url: str, default_port: int) -> tuple[str, list[tuple[str, int]], str]:
    """(user info with its '@', [(host, port), ...], query) of a many-host URL."""
    parts = urlsplit(url)
    user_info, at, hosts = parts.netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        node = urlsplit(f"//{item}")
        if not node.hostname:
            raise ValueError(f"a host is missing in {hosts!r}: write host:port[,host:port...]")
        nodes.append((node.hostname, node.port or default_port))
    return user_info + at, nodes, parts.query


def _node_settings(base: str, url: str, default_port: int, db: str, options: Mapping[str, Any]) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The nodes of a many-host URL and the connection settings for its data nodes, as
    redis-py would read them from a one-host URL of the `base` scheme."""
    user_info, nodes, query = _nodes(url, default_port)
    host, port = nodes[0]
    connection_class, kwargs = _connection_settings(f"{base}://{user_info}{_host_port(host, port)}/{db}?{query}", options)
    for name in ("host", "port"):
        kwargs.pop(name, None)
    if issubclass(connection_class, redis.SSLConnection):
        kwargs["ssl"] = True
    return nodes, kwargs


def _cluster_plan(url: str, base: str, options: Mapping[str, Any]) -> Callable[[], Client]:
    path = urlsplit(url).path
    if path.strip("/") not in ("", "0"):
        raise ValueError("a cluster has only database 0: drop the path from the URL")
    nodes, kwargs = _node_settings(base, url, DEFAULT_PORT, "", options)
    if kwargs.pop("db", 0) != 0:
        raise ValueError("a cluster has only database 0: drop ?db= from the URL")
    given = {name for name, _ in parse_qsl(urlsplit(url).query)} | set(options)
    dropped = sorted(given - set(REDIS_ALLOWED_KEYS))
    if dropped:
        raise ValueError(f"option {dropped[0]!r} is not passed on to the nodes by redis-py's cluster client")
    # RedisCluster takes `retry` apart from the nodes' settings, and drops what it does not pass on
    kwargs = {name: value for name, value in kwargs.items() if name in REDIS_ALLOWED_KEYS and name != "retry"}
    kwargs.setdefault("max_connections", MAX_CONNECTIONS)  # per node, as for one Redis
    startup_nodes = [ClusterNode(host, port) for host, port in nodes]

    def cluster() -> RedisCluster:
        client = RedisCluster(startup_nodes=startup_nodes, retry=Retry(NoBackoff(), 0), **kwargs)
        if not hasattr(client, "startup_nodes"):  # redis-py < 6 keeps only the nodes it found: `describe` names the seeds
            client.startup_nodes = startup_nodes
        return client

    return cluster


def _sentinel_plan(url: str, base: str, options: Mapping[str, Any]) -> Callable[[], Client]:
    segments = urlsplit(url).path.strip("/").split("/")
    if not segments[0] or len(segments) > 2:
        raise ValueError("write the service Sentinel monitors after the sentinels: redis+sentinel://host:port[,host:port...]/SERVICE[/db]")
    service, db = segments[0], (segments[1] if len(segments) == 2 else "0")
    _check_database(db, "redis+sentinel://host:26379/SERVICE/0")
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    sentinel_auth = {name.removeprefix("sentinel_"): value for name, value in query if name in SENTINEL_OPTIONS}
    sentinel_auth.update({name.removeprefix("sentinel_"): options[name] for name in SENTINEL_OPTIONS if name in options})
    url = urlsplit(url)._replace(query=urlencode([(n, v) for n, v in query if n not in SENTINEL_OPTIONS])).geturl()
    options = {name: value for name, value in options.items() if name not in SENTINEL_OPTIONS}
    sentinels, kwargs = _node_settings(base, url, DEFAULT_SENTINEL_PORT, db, options)
    # the sentinels get the data nodes' timeouts and TLS settings, and credentials of their own
    sentinel_kwargs = {name: value for name, value in kwargs.items() if name.startswith(("socket_", "ssl"))}
    sentinel_kwargs.update(sentinel_auth, retry=Retry(NoBackoff(), 0))
    kwargs.setdefault("max_connections", MAX_CONNECTIONS)  # the master's pool, as for one Redis
    return lambda: Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs).master_for(service, redis_class=redis.Redis, **kwargs)


def _why_refused(url: str, options: Mapping[str, Any]) -> str:
    """Why `url` is refused, in words that cannot hold a secret: its redacted form is parsed
    again, since the error of the original may quote a piece of the password."""
    shown = {name: REDACTED if name in SECRET_OPTIONS else value for name, value in options.items()}
    try:
        if _SCHEME.match(url) and "#" not in url:
            _check_query(url)  # (its words never quote a secret; the redacted URL's query reads otherwise)
        _plan(redact_url(url), shown)
    except TypeError as exc:  # redis-py's words: "__init__() got an unexpected keyword argument 'x'"
        unknown = re.search(r"argument '(\w+)'", str(exc))
        if not unknown:
            return str(exc)
        if unknown[1].startswith("ssl") and not url.lower().startswith("rediss"):
            return f"unknown option {unknown[1]!r} (TLS options need a rediss:// URL)"
        return f"unknown option {unknown[1]!r}"
    except (ValueError, redis.RedisError) as exc:
        return str(exc)
    return "it does not parse as written; percent-encode any / ? # @ : in the user name or password"
