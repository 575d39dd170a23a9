"""Redis URLs of every topology (issue 12), without a network: parsed, checked, and named
without their secrets; and which errors the Store treats as a failover.

The topologies themselves (TLS, Sentinel, Cluster, the ACL user) are exercised live in
tests/test_topologies.py.
"""

from __future__ import annotations

import gc
import re
import subprocess
import weakref
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
from conftest import ROOT, taskit_command
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.sentinel import SentinelManagedSSLConnection

import taskit
from taskit import config
from taskit.connections import CONNECT_TIMEOUT, SOCKET_TIMEOUT
from taskit.exceptions import ConfigurationError, RedisUnavailableError
from taskit.storage import acl
from taskit.storage.store import Store, transient

SECRET = "S3cr3tPa55"

#: (URL, how `describe` names its client); {s} is a secret
FORMS = [
    ("redis://:{s}@host:6379/1", "redis://***@host:6379/1"),
    ("rediss://user:{s}@host:6380/2?ssl_ca_certs=/etc/ssl/ca.pem", "rediss://***@host:6380/2"),
    ("unix://:{s}@/run/redis.sock?db=3", "unix://***@/run/redis.sock?db=3"),
    ("redis+sentinel://:{s}@s1:26379,s2:26380,s3/mymaster", "redis+sentinel://***@s1:26379,s2:26380,s3:26379/mymaster/0"),
    ("redis+sentinel://s1,[::1]:5000/mymaster/4?sentinel_password={s}", "redis+sentinel://***@s1:26379,[::1]:5000/mymaster/4"),
    ("rediss+sentinel://u:{s}@s1/mymaster?ssl_ca_certs=/etc/ssl/ca.pem&sentinel_username=u2&sentinel_password={s}",
     "rediss+sentinel://***@s1:26379/mymaster/0"),
    ("redis+sentinel://s1:26379,s2:26379/mymaster/0", "redis+sentinel://s1:26379,s2:26379/mymaster/0"),
]


@pytest.mark.parametrize(("url", "described"), FORMS)
def test_each_url_form_builds_a_client_named_without_its_secrets(url: str, described: str) -> None:
    url = url.format(s=SECRET)
    client = config.connect(url)  # one Redis and Sentinel clients connect at their first command
    assert config.describe(client) == described
    assert Store(client).where == described
    assert SECRET not in config.redact_url(url)
    client.close()


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis+cluster://admin:{s}@h1:7000,h2:7001,h3:7002", "redis+cluster://***@h1:7000,h2:7001,h3:7002"),
        ("rediss+cluster://:{s}@h1:7000?ssl_password={s}", "rediss+cluster://***@h1:7000?ssl_password=***"),
        ("redis+sentinel://s1:26379,s2:26379/mymaster/0?sentinel_username=sam&sentinel_password={s}",
         "redis+sentinel://s1:26379,s2:26379/mymaster/0?sentinel_username=***&sentinel_password=***"),
        ("rediss+sentinel://u:{s}@s1,s2/mymaster", "rediss+sentinel://***@s1,s2/mymaster"),
    ],
)
def test_redact_url_hides_every_secret_of_many_host_urls(url: str, redacted: str) -> None:
    assert config.redact_url(url.format(s=SECRET)) == redacted


def _no_retries(kwargs: dict[str, object]) -> bool:
    retry = kwargs["retry"]
    assert isinstance(retry, redis.retry.Retry)
    return retry._retries == 0  # get_retries() is redis-py 6+


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h:1/0", "unix:///run/r.sock", "redis+sentinel://s:1/svc", "rediss+sentinel://s:1/svc"])
def test_every_topology_keeps_taskits_timeouts_and_leaves_retries_to_the_store(url: str) -> None:
    client = config.connect(url)
    kwargs = client.get_connection_kwargs()
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (CONNECT_TIMEOUT, SOCKET_TIMEOUT)
    assert _no_retries(kwargs)
    if "sentinel" in url:  # the sentinels too
        sentinel_kwargs = client.connection_pool.sentinel_manager.sentinel_kwargs
        assert (sentinel_kwargs["socket_connect_timeout"], sentinel_kwargs["socket_timeout"]) == (CONNECT_TIMEOUT, SOCKET_TIMEOUT)
        assert _no_retries(sentinel_kwargs)
    # the URL's own settings win
    tuned = config.connect(url + ("&" if "?" in url else "?") + "socket_timeout=3&socket_connect_timeout=1")
    assert (tuned.get_connection_kwargs()["socket_timeout"], tuned.get_connection_kwargs()["socket_connect_timeout"]) == (3, 1)


def test_a_sentinel_url_gives_the_master_and_the_sentinels_their_own_credentials_and_tls() -> None:
    client = config.connect(
        f"rediss+sentinel://app:{SECRET}@s1:26379,s2:26380/orders/2?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem"
        f"&ssl_keyfile=/c.key&sentinel_username=watcher&sentinel_password=other-{SECRET}"
    )
    pool = client.connection_pool
    assert pool.service_name == "orders" and pool.connection_class is SentinelManagedSSLConnection
    master = pool.connection_kwargs
    assert (master["username"], master["password"], master["db"]) == ("app", SECRET, 2)
    assert (master["ssl_ca_certs"], master["ssl_certfile"], master["ssl_keyfile"]) == ("/ca.pem", "/c.pem", "/c.key")
    manager = pool.sentinel_manager
    assert [(s.get_connection_kwargs()["host"], s.get_connection_kwargs()["port"]) for s in manager.sentinels] == [("s1", 26379), ("s2", 26380)]
    sentinel = manager.sentinel_kwargs
    assert (sentinel["username"], sentinel["password"]) == ("watcher", f"other-{SECRET}")
    assert sentinel["ssl"] is True and sentinel["ssl_ca_certs"] == "/ca.pem" and sentinel["ssl_certfile"] == "/c.pem"
    # without TLS and sentinel credentials: the sentinels get none of the master's
    plain = config.connect(f"redis+sentinel://:{SECRET}@s1/orders").connection_pool.sentinel_manager.sentinel_kwargs
    assert "password" not in plain and "ssl" not in plain


#: every TLS option docs/scaling.md documents, with a value as a URL writes it and as a keyword does
TLS_OPTIONS = {
    "ssl_ca_certs": ("/etc/ssl/taskit/ca.pem", "/etc/ssl/taskit/ca.pem"),
    "ssl_ca_path": ("/etc/ssl/certs", "/etc/ssl/certs"),
    "ssl_certfile": ("/etc/ssl/taskit/client.pem", "/etc/ssl/taskit/client.pem"),
    "ssl_keyfile": ("/etc/ssl/taskit/client.key", "/etc/ssl/taskit/client.key"),
    "ssl_password": (SECRET, SECRET),
    "ssl_cert_reqs": ("required", "required"),
    "ssl_check_hostname": ("false", False),
    "ssl_min_version": ("TLSv1_3", "TLSv1_3"),
    "ssl_ciphers": ("ECDHE+AESGCM", "ECDHE+AESGCM"),
}


def test_tls_options_are_the_same_in_the_url_and_as_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    query = urlencode({name: in_url for name, (in_url, _) in TLS_OPTIONS.items()})  # '+' as %2B
    from_url = config.connect(f"rediss://h:6380/0?{query}").get_connection_kwargs()
    keywords = {name: value for name, (_, value) in TLS_OPTIONS.items()}
    from_keywords = config.connect("rediss://h:6380/0", **keywords).get_connection_kwargs()
    for name in TLS_OPTIONS:
        assert from_url[name] == from_keywords[name], name
    assert from_url["ssl_check_hostname"] is False and from_url["ssl_min_version"] == 772  # TLSv1_3
    docs = (ROOT / "docs" / "scaling.md").read_text()
    assert all(f"`{name}`" in docs for name in TLS_OPTIONS), "docs/scaling.md documents each TLS option"

    # configure() takes them too: with a url, or for TASKIT_REDIS_URL
    try:
        taskit.configure(url="rediss://h:6380/0", **keywords)
        assert config.get_connection().get_connection_kwargs()["ssl_certfile"] == "/etc/ssl/taskit/client.pem"
        monkeypatch.setenv("TASKIT_REDIS_URL", "rediss://other:6380/0")
        taskit.configure(ssl_ca_certs="/etc/ssl/taskit/ca.pem")
        assert config.describe(config.get_connection()) == "rediss://other:6380/0"
        assert config.get_connection().get_connection_kwargs()["ssl_ca_certs"] == "/etc/ssl/taskit/ca.pem"
        with pytest.raises(ConfigurationError, match=r"configure\(\) takes ssl_ca_certs with a url, not with a connection"):
            taskit.configure(connection=redis.Redis(), ssl_ca_certs="/ca.pem")
    finally:
        taskit.configure()


@pytest.mark.parametrize(
    ("url", "options", "why"),
    [
        ("redis+cluster://h:1/3", {}, "a cluster has only database 0: drop the path from the URL"),
        ("redis+cluster://h:1?db=2", {}, "a cluster has only database 0"),
        ("redis+cluster://:{s}@h:1,h:x", {}, "Port could not be cast to integer value as '***'"),
        ("redis+cluster://h:1,,h:2", {}, "a host is missing in 'h:1,,h:2'"),
        ("rediss+cluster://h:1", {"ssl_min_version": "TLSv1_2"}, "option 'ssl_min_version' is not passed on to the nodes by redis-py's cluster client"),
        ("redis+cluster://h:1?timeout=5", {}, "unknown option 'timeout'"),
        ("redis+sentinel://:{s}@s1:26379", {}, "write the service Sentinel monitors after the sentinels"),
        ("redis+sentinel://s1/svc/0/extra", {}, "write the service Sentinel monitors after the sentinels"),
        ("redis+sentinel://s1/svc?sentinel_pasword={s}", {}, "unknown option 'sentinel_pasword'"),
        ("redis://:{s}@h:1/0?ssl_ca_certs=/ca.pem", {}, "unknown option 'ssl_ca_certs' (TLS options need a rediss:// URL)"),
        ("redis://h:1/0", {"ssl_certfile": "/c.pem"}, "unknown option 'ssl_certfile' (TLS options need a rediss:// URL)"),
        ("rediss://h:1/0?ssl_ca_certs=/a.pem", {"ssl_ca_certs": "/b.pem"}, "option 'ssl_ca_certs' is given in the URL and as an argument: give it once"),
        ("rediss://h:1/0", {"ssl_min_version": "TLSv9"}, "ssl_min_version must be TLSv1_2 or TLSv1_3, not 'TLSv9'"),
        # a value in the URL that is not what its option takes may be a secret typed there: not quoted
        ("rediss://h:1/0?ssl_check_hostname=maybe", {}, "ssl_check_hostname must be true or false, not '***'"),
        ("rediss://h:1/0", {"ssl_cert_reqs": "sometimes"}, "Invalid SSL Certificate Requirements Flag: sometimes"),
        ("rediss://h:1/0", {"ssl_password": SECRET, "ssl_pasword": SECRET}, "unknown option 'ssl_pasword'"),
        ("redis+clusters://h:1", {}, "Redis URL must specify one of the following schemes (redis://, rediss://, unix://, redis+cluster://"),
    ],
)
def test_a_url_that_cannot_work_is_refused_in_one_line_without_its_secrets(url: str, options: dict[str, str], why: str) -> None:
    url = url.format(s=SECRET)
    with pytest.raises(ConfigurationError) as refused:
        config.connect(url, **options)
    message = str(refused.value)
    assert message == f"bad Redis URL {config.redact_url(url)!r}: {message.split(': ', 1)[1]}"
    assert why in message and SECRET not in message


def test_a_cluster_url_that_reaches_no_node_is_an_unavailable_redis() -> None:
    with pytest.raises(RedisUnavailableError, match=r"^cannot reach Redis at redis\+cluster://\*\*\*@127\.0\.0\.1:1: "):
        config.connect(f"redis+cluster://:{SECRET}@127.0.0.1:1")


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("lost"),
        redis.TimeoutError("timed out"),
        ReadOnlyError("You can't write against a read only replica."),
        ClusterDownError("The cluster is down"),
        MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ClusterError("TTL exhausted."),
        SlotNotCoveredError('Slot "42" is not covered by the cluster.'),
    ],
    ids=lambda e: type(e).__name__,
)
def test_failover_errors_are_transient(error: Exception) -> None:
    assert transient(error)


def test_a_cluster_that_reached_no_node_is_transient_and_a_refusal_is_not() -> None:
    try:
        raise RedisClusterException("Redis Cluster cannot be connected") from redis.ConnectionError("refused")
    except RedisClusterException as exc:
        assert transient(exc)
    assert not transient(RedisClusterException("Cluster mode is not enabled on this node"))
    for refusal in (redis.ResponseError("WRONGTYPE"), redis.exceptions.NoPermissionError("NOPERM"),
                    MovedError("3999 127.0.0.1:6381"), redis.DataError("bad value")):
        assert not transient(refusal), refusal


def test_taskit_acl_prints_the_documented_line() -> None:
    line = acl.setuser()
    assert line.startswith("ACL SETUSER taskit reset >CHANGE-ME on ~taskit:* resetchannels &taskit:* -@all +")
    printed = subprocess.run(taskit_command("acl"), capture_output=True, text=True, check=True, timeout=60).stdout
    assert printed == line + "\n"
    rules = subprocess.run(taskit_command("acl", "--user", "jobs", "--rules"), capture_output=True, text=True,
                           check=True, timeout=60).stdout
    assert rules == acl.rules() + "\n"
    assert line in (ROOT / "docs" / "scaling.md").read_text(), "docs/scaling.md shows `taskit acl`'s line verbatim"


def test_the_acl_names_every_command_the_lua_scripts_call() -> None:
    """A script runs its commands under the caller's ACL: a command added to a script must be
    added to the ACL line (the live test of the ACL user catches the Python side)."""
    called = set()
    for script in Path(taskit.__file__).parent.glob("lua/**/*.lua"):
        # redis.call('HGET', ...), redis.call(front and 'LPUSH' or 'RPUSH', ...), call_chunked('ZADD', ...)
        for call in re.findall(r"(?:redis\.p?call|call_chunked)\(([^,]+),", script.read_text()):
            called |= {name.lower() for name in re.findall(r"['\"](\w+)['\"]", call)}
    assert called, "the scripts were found"
    assert called <= set(acl.COMMANDS), sorted(called - set(acl.COMMANDS))


def test_the_acl_names_every_command_the_store_sends() -> None:
    """store.py is the one module that sends Redis commands: each redis-py method it calls
    on the client or a pipeline must be granted (named as Redis names the command)."""
    source = (Path(taskit.__file__).parent / "storage" / "store.py").read_text()
    not_commands = {"pipeline", "execute", "execute_command", "connection_pool", "get_node_from_key"}
    methods = set(re.findall(r"\b(?:self\.redis|pipe)\.(\w+)\b", source)) - not_commands
    methods |= {name.lower() for name in re.findall(r"execute_command\(\"(\w+)\"", source)}  # pipe.execute_command("EVALSHA", ...)
    methods |= {name.lower() for name in re.findall(r"\(\"([A-Z]+)\", ", source)}  # commands as tuples: ("BLPOP", *wake_keys, ...)
    methods |= set(re.findall(r"\(\"(\w+)\", keys\.", source))  # commands sent before scripts: ("sadd", keys.QUEUES, ...)
    redis_name = {"delete": "del", "script_load": "script|load"}
    sent = {redis_name.get(m, m) for m in methods}
    assert sent, "store.py's commands were found"
    assert sent <= set(acl.COMMANDS), sorted(sent - set(acl.COMMANDS))


def test_a_store_is_one_per_client_and_freed_with_it(redis_server) -> None:
    """A client made per request (`Queue(connection=redis.Redis(...))`) must not leave its
    Store (scripts, caches) behind for ever."""
    client = redis.Redis.from_url(redis_server.url)
    assert Store.of(client) is Store.of(client)
    stores = []
    for _ in range(20):
        client = redis.Redis.from_url(redis_server.url)
        Store.of(client).queue_count("default")
        stores.append(weakref.ref(Store.of(client)))
        client.close()
    del client
    gc.collect()
    assert [store() for store in stores] == [None] * 20
