"""A Redis password is never printed (issue 11): errors, logs, `taskit info`, `--help`.

Every path that can name a Redis goes through `config.redact_url` (a URL string) or
`config.describe` (a client). Each is tried with a password alone (`:secret@`) and with a
user name and password (`user:secret@`); the secret must appear nowhere in what is shown.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis
import sample_tasks
from conftest import free_port, taskit_command

import taskit
from taskit import Job, Queue, config
from taskit.exceptions import ConfigurationError, RedisUnavailableError, StorageError
from taskit.storage import keys
from taskit.storage.store import Store

SECRET = "S3cr3tPa55"
#: (user info as written in a URL, how it is shown)
CREDENTIALS = [(f":{SECRET}", "***"), (f"admin:{SECRET}", "***")]


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(taskit_command(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False)


def shown(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stdout + proc.stderr
    assert SECRET not in text and SECRET[:4] not in text, text
    assert "Traceback" not in text, text
    return text


def refusals(url: str) -> list[str]:
    """The errors of `connect` and `configure` refusing `url`, checked to hold no piece of SECRET."""
    messages = []
    for call in (lambda: config.connect(url), lambda: taskit.configure(url=url)):
        with pytest.raises(ConfigurationError) as caught:
            call()
        message = str(caught.value)
        assert SECRET not in message and SECRET[:4] not in message and SECRET.lower() not in message.lower(), message
        messages.append(message)
    return messages


@pytest.mark.parametrize(("user_info", "masked"), CREDENTIALS)
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("redis://{}@host:6379/0", "redis://{}@host:6379/0"),
        ("rediss://{}@host:6380/2", "rediss://{}@host:6380/2"),
        ("unix://{}@/run/redis.sock?db=3", "unix://{}@/run/redis.sock?db=3"),
        ("redis://{}@host:notaport/0", "redis://{}@host:***/0"),  # a port that is not a number may be a secret
        # unencoded / ? # @ in a password: urllib would split the URL inside the secret
        ("redis://{}/x?y#z@w@host:1/0", "redis://{}@host:1/0"),
        ("{}@host", "***"),  # no scheme: not a URL, and not shown (it may be a password)
    ],
)
def test_redact_url_hides_the_user_info(template: str, expected: str, user_info: str, masked: str) -> None:
    assert config.redact_url(template.format(user_info)) == expected.format(masked)


def test_redact_url_hides_credentials_given_as_query_parameters() -> None:
    url = f"redis://host:1/0?username=admin&password={SECRET}&db=2"
    assert config.redact_url(url) == "redis://host:1/0?username=***&password=***&db=2"
    assert config.redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


@pytest.mark.parametrize(("user_info", "_"), CREDENTIALS)
def test_describe_names_the_scheme_and_hides_the_credentials(user_info: str, _: str) -> None:
    cases = {
        f"redis://{user_info}@host:6379/1": "redis://***@host:6379/1",
        f"rediss://{user_info}@host:6380/2": "rediss://***@host:6380/2",  # TLS is shown as such
        f"unix://{user_info}@/run/redis.sock?db=3": "unix://***@/run/redis.sock?db=3",
        f"redis://host:1/0?password={SECRET}": "redis://***@host:1/0",
        "rediss://host:6380/0": "rediss://host:6380/0",
        "unix:///run/redis.sock": "unix:///run/redis.sock?db=0",
        "redis://[::1]:6379/0": "redis://[::1]:6379/0",
    }
    for url, expected in cases.items():
        client = config.connect(url)  # builds a client; nothing is connected
        assert config.describe(client) == expected
        assert Store(client).where == expected
        client.close()


@pytest.mark.parametrize(("user_info", "_"), CREDENTIALS)
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis://{}@host:notaport/0", "Port could not be cast to integer value as '***'"),
        ("http://{}@host:6379/0", "Redis URL must specify one of the following schemes"),
        ("redis://{}@host:6379/0?timeout=5", "unknown option 'timeout'"),
        ("redis://{}/x@host:1/0", "percent-encode any / ? # @ : in the user name or password"),
    ],
)
def test_configure_and_connect_refuse_a_bad_url_without_printing_its_secret(
    connection: redis.Redis, url: str, why: str, user_info: str, _: str
) -> None:
    url = url.format(user_info)
    for call in (lambda: config.connect(url), lambda: taskit.configure(url=url)):
        with pytest.raises(ConfigurationError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"bad Redis URL {config.redact_url(url)!r}: ") and why in message
        assert SECRET not in message and SECRET[:4] not in message
    assert Queue().count == 0  # the refused URL did not replace the default
    assert config.redis_url() != url


@pytest.mark.parametrize(
    ("url", "shown_as", "why"),
    [
        # a password given where the URL goes: not a URL, so nothing of it can be shown
        (SECRET, "***", "it is not a URL (not shown, in case it is a password)"),
        ("", "", "it is empty: write redis://"),
        # a database that is not a number (redis-py would have used database 0)
        (f"redis://host:6379/{SECRET}", "redis://host:6379/***", "the database in the URL's path must be a number"),
        ("redis://host:6379/1/2", "redis://host:6379/1/2", "the database in the URL's path must be a number"),
        (f"rediss://host:6380/{SECRET}?ssl_ca_certs=/ca.pem", "rediss://host:6380/***?ssl_ca_certs=/ca.pem",
         "the database in the URL's path must be a number"),
        (f"redis+sentinel://s1:26379/mymaster/{SECRET}", "redis+sentinel://s1:26379/mymaster/***",
         "the database in the URL's path must be a number"),
        (f"redis+cluster://h1:7000/{SECRET}", "redis+cluster://h1:7000/***", "a cluster has only database 0"),
        # a fragment (redis-py would have ignored it)
        (f"redis://host:6379/0#password={SECRET}", "redis://host:6379/0#***", "a Redis URL has no #fragment"),
        (f"unix:///run/redis.sock?db=1#{SECRET}", "unix:///run/redis.sock?db=1#***", "a Redis URL has no #fragment"),
        # a password where the host and port go (no @host after it)
        (f"redis://:{SECRET}", "redis://:***", "Port could not be cast to integer value as '***'"),
    ],
)
def test_a_secret_in_the_wrong_place_is_refused_and_not_shown(
    connection: redis.Redis, cli_env: dict[str, str], url: str, shown_as: str, why: str
) -> None:
    for message in refusals(url):
        assert message.startswith(f"bad Redis URL {shown_as!r}: {why}"), message
    assert config.redact_url(url) == shown_as
    out = shown(run(cli_env, "info", "-u", url))
    assert out.startswith(f"Error: bad Redis URL {shown_as!r}: {why}") and len(out.splitlines()) == 1, out


@pytest.mark.parametrize(
    ("url", "shown_as", "why"),
    [
        # a secret typed as the value of an option, which refuses it: the value is not quoted
        (f"redis://host:6379/0?db={SECRET}", "redis://host:6379/0?db=***", "Invalid value for 'db'"),
        (f"redis://host/0?socket_timeout={SECRET}", "redis://host/0?socket_timeout=***", "Invalid value for 'socket_timeout'"),
        (f"rediss://host/0?ssl_cert_reqs={SECRET}", "rediss://host/0?ssl_cert_reqs=***", "Certificate Requirements"),
        (f"rediss://host/0?ssl_min_version={SECRET}", "rediss://host/0?ssl_min_version=***", "not '***'"),
        (f"unix:///run/redis.sock?db={SECRET}", "unix:///run/redis.sock?db=***", "Invalid value for 'db'"),
        (f"redis+cluster://h:7000?db={SECRET}", "redis+cluster://h:7000?db=***", "Invalid value for 'db'"),
        (f"redis://host/0?password=pw&db={SECRET}", "redis://host/0?password=***&db=***", "Invalid value for 'db'"),
        # a bare token, or one as an option's name: neither is shown (redis-py would drop them)
        (f"redis://host:6379/0?{SECRET}", "redis://host:6379/0?***", "not option=value (not shown"),
        (f"redis://host/0?db=1&{SECRET}", "redis://host/0?db=1&***", "not option=value (not shown"),
        (f"redis://host/0?{SECRET}=", "redis://host/0?***", "that redis-py does not know (not shown"),
        (f"redis+sentinel://s1/svc/0?{SECRET}=1", "redis+sentinel://s1/svc/0?***", "that redis-py does not know"),
        (f"redis://host/0?pw={SECRET}", "redis://host/0?***", "that redis-py does not know (not shown"),
        # the second of two values would have been ignored; a value that may be a secret is not shown
        (f"redis://host/0?db=1&db={SECRET}", "redis://host/0?db=1&db=***", "option 'db' is given twice"),
        # a misspelled option is named, to be fixed; its value is not shown
        (f"redis://host/0?pasword={SECRET}", "redis://host/0?pasword=***", "unknown option 'pasword' (did you mean 'password'?)"),
    ],
)
def test_a_secret_in_the_query_is_never_quoted_by_an_error(
    connection: redis.Redis, cli_env: dict[str, str], url: str, shown_as: str, why: str
) -> None:
    assert config.redact_url(url) == shown_as
    for message in refusals(url):
        assert message.startswith(f"bad Redis URL {shown_as!r}: ") and why in message, message


def test_a_secret_in_the_query_is_not_shown_by_the_cli_nor_its_help(cli_env: dict[str, str]) -> None:
    for url in (f"redis://127.0.0.1:1/0?db={SECRET}", f"redis://127.0.0.1:1/0?{SECRET}"):
        out = shown(run(cli_env, "info", "-u", url))
        assert out.startswith("Error: bad Redis URL 'redis://127.0.0.1:1/0?") and len(out.splitlines()) == 1, out
        assert "redis://127.0.0.1:1/0?" in shown(run({**cli_env, "TASKIT_REDIS_URL": url}, "info", "--help"))


def test_a_bad_url_in_the_environment_is_reported_without_its_secret(
    connection: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    taskit.configure()  # no default: taskit reads TASKIT_REDIS_URL
    monkeypatch.setenv("TASKIT_REDIS_URL", f"redis://admin:{SECRET}@host:notaport/0")
    with pytest.raises(ConfigurationError, match=r"^bad Redis URL 'redis://\*\*\*@host:\*\*\*/0': Port") as caught:
        Queue().count  # noqa: B018 (the property reads Redis)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("user_info", "_"), CREDENTIALS)
def test_storage_errors_name_redis_without_the_secret(redis_server, connection: redis.Redis, user_info: str, _: str) -> None:
    dead = config.connect(f"redis://{user_info}@127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailableError) as unreachable:
        Store(dead, retry_seconds=0.2).ping()
    assert str(unreachable.value).startswith("cannot reach Redis at redis://***@127.0.0.1:")
    live = config.connect(f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0")  # the server has no password
    tag = keys.queue_tag("default")
    connection.set(keys.directory("wrong-type"), tag)
    connection.set(keys.job(tag, "wrong-type"), "a string")
    with pytest.raises(StorageError) as refused:
        Job.fetch("wrong-type", connection=live)
    assert str(refused.value).startswith(f"Redis at redis://***@127.0.0.1:{redis_server.port}/0 refused ")
    for message in (str(unreachable.value), str(refused.value)):
        assert SECRET not in message
    dead.close()
    live.close()


@pytest.mark.parametrize(("user_info", "_"), CREDENTIALS)
@pytest.mark.parametrize("command", [["worker", "sample_tasks", "--burst"], ["requeue", "--all"], ["info"]])
def test_cli_errors_hide_the_secret(cli_env: dict[str, str], command: list[str], user_info: str, _: str) -> None:
    bad = shown(run(cli_env, *command, "-u", f"redis://{user_info}@host:notaport/0"))
    assert bad.strip() == "Error: bad Redis URL 'redis://***@host:***/0': Port could not be cast to integer value as '***'"
    from_env = shown(run(dict(cli_env, TASKIT_REDIS_URL=f"redis://{user_info}@host:notaport/0"), *command))
    assert from_env == bad
    dead = shown(run(cli_env, *command, "-u", f"redis://{user_info}@127.0.0.1:{free_port()}/0", timeout=30))
    assert dead.startswith("Error: cannot reach Redis at redis://***@127.0.0.1:") and "Connection refused" in dead


def test_a_refused_login_is_reported_without_the_secret(redis_server, connection: redis.Redis, cli_env: dict[str, str]) -> None:
    port = redis_server.port
    out = shown(run(cli_env, "info", "-u", f"redis://nobody:{SECRET}@127.0.0.1:{port}"))
    assert out.startswith(f"Error: cannot reach Redis at redis://***@127.0.0.1:{port}/0: ")
    assert "invalid username-password pair" in out


def test_info_and_worker_logs_name_redis_without_the_secret(connection: redis.Redis, cli_env: dict[str, str]) -> None:
    # the test server has no password: redis-py then sends none, so a password-only URL works
    url = cli_env["TASKIT_REDIS_URL"].replace("redis://", f"redis://:{SECRET}@")
    job = sample_tasks.add.delay(1, 2)
    worker = shown(run(cli_env, "worker", "sample_tasks", "--burst", "-u", url))
    assert Job.fetch(job.id).result == 3, worker
    info = shown(run(dict(cli_env, TASKIT_REDIS_URL=url), "info"))
    assert info.splitlines()[0] == "Redis at " + cli_env["TASKIT_REDIS_URL"].replace("redis://", "redis://***@")


@pytest.mark.parametrize(("user_info", "_"), CREDENTIALS)
def test_help_shows_the_url_in_effect_without_the_secret(cli_env: dict[str, str], tmp_path: Path, user_info: str, _: str) -> None:
    env = dict(cli_env, TASKIT_REDIS_URL=f"redis://{user_info}@redis.internal:6380/2")
    for command in ([], ["worker"], ["requeue"], ["info"]):
        text = " ".join(shown(run(env, *command, "--help")).split())
        assert "redis://***@redis.internal:6380/2 (from TASKIT_REDIS_URL)" in text, text
        assert "default: redis://localhost:6379/0" not in text
    env.pop("TASKIT_REDIS_URL")
    for command in ([], ["info"]):
        text = " ".join(shown(run(env, *command, "--help")).split())
        assert "redis://localhost:6379/0 (the default; TASKIT_REDIS_URL is not set)" in text, text
