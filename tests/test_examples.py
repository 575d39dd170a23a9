"""The demos in examples/ run as the README and docs/ say, against the suite's private Redis.

Each runs as a user runs it (`python examples/...py`, TASKIT_REDIS_URL set), and its output is
checked against what it promises: which jobs finished, which failed on purpose and for how long
it is kept, the requeue hint only where the jobs outlive the demo; and a Redis URL with a
secret in it is never printed, however it is malformed.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import records
import redis
from conftest import ROOT, RedisServer, free_port

from taskit.storage import keys

SECRET = "S3cr3tPa55"


def run_example(name: str, env: dict[str, str], url: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python examples/NAME` with TASKIT_REDIS_URL=url; stdout and stderr as one text."""
    return subprocess.run([sys.executable, str(ROOT / "examples" / name)], check=False, env={**env, "TASKIT_REDIS_URL": url},
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def result_line(output: str, description: str) -> str:
    """The results line of the job `description` (the demos print one per job)."""
    lines = [line for line in output.splitlines() if line.strip().startswith(description)]
    assert len(lines) == 1, output
    return lines[0]


def check_demo_results(output: str) -> str:
    """Every job of examples/demo.py ended as it should; the failing job's id."""
    expected = {
        "examples.tasks.add(2, 3)": r"finished\s+attempts=1\s+5$",
        "examples.tasks.count_words(": r"finished\s+attempts=1\s+9$",
        "examples.tasks.slow_square(7)": r"finished\s+attempts=1\s+49$",
        "examples.tasks.divide(1, 0)": r"failed\s+attempts=1\s+ZeroDivisionError: division by zero$",
        "examples.tasks.flaky(succeed_on=2)": r"finished\s+attempts=2\s+2$",  # retried once by its policy
    }
    for description, outcome in expected.items():
        assert re.search(outcome, result_line(output, description)), output
    found = re.search(r"in the failed registry of 'examples'.*: (\S+)$", output, re.MULTILINE)
    assert found, output
    return found[1]


def test_demo_on_the_configured_redis(connection: redis.Redis, redis_server: RedisServer, cli_env: dict[str, str]) -> None:
    """On a Redis that answers: says which, runs every job, keeps the failed one 10 minutes
    (not a year) on that Redis, and says how to requeue it."""
    done = run_example("demo.py", cli_env, redis_server.url)
    assert done.returncode == 0, done.stdout
    assert f"demo: using the Redis at {redis_server.url} (TASKIT_REDIS_URL)" in done.stdout
    failed_id = check_demo_results(done.stdout)
    assert "in the failed registry of 'examples' for 10 minutes" in done.stdout
    assert "requeue them with: taskit requeue --queue examples --all" in done.stdout
    assert connection.zscore(keys.of_queue("examples").failed, failed_id) is not None
    assert 590 <= records.ttl(connection, failed_id) <= 600


def test_demo_with_no_redis_answering_uses_a_private_one_and_hides_the_password(
    connection: redis.Redis, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Nothing listens at the URL: the demo names it without its password, runs on a private
    redis-server that it stops (leaving no directory behind), and gives no requeue hint for
    jobs that are gone with it."""
    port = free_port()
    done = run_example("demo.py", {**cli_env, "TMPDIR": str(tmp_path)}, f"redis://:{SECRET}@127.0.0.1:{port}/0")
    assert done.returncode == 0, done.stdout
    assert SECRET not in done.stdout
    assert f"demo: no Redis answers at redis://***@127.0.0.1:{port}/0 (TASKIT_REDIS_URL: ConnectionError)" in done.stdout
    assert "using a private redis-server" in done.stdout
    check_demo_results(done.stdout)
    assert "requeue" not in done.stdout
    assert "for 10 minutes" not in done.stdout
    private = re.search(r"private redis-server at (redis://\S+),", done.stdout)
    assert private, done.stdout
    with pytest.raises(redis.ConnectionError):  # stopped, with every job of the demo
        redis.Redis.from_url(private[1], socket_connect_timeout=1).ping()
    assert connection.keys("*") == []  # the suite's Redis was not used
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", [
    SECRET,  # the password given where the URL goes
    "redis://:" + SECRET[:5] + "/" + SECRET[5:] + "@127.0.0.1:{port}/0",  # an unencoded / in the password
    "redis://:" + SECRET + "@127.0.0.1:{port}/0#" + SECRET,  # a #fragment
    "redis://127.0.0.1:{port}/" + SECRET,  # a database that is not a number
    "redis://:" + SECRET + "@127.0.0.1:" + SECRET + "/0",  # the password where the port goes
    "redis://127.0.0.1:{port}/0?pasword=" + SECRET,  # a misspelled option, quoted in its refusal
], ids=["bare", "slash", "fragment", "database", "port", "option"])
def test_demo_refuses_a_bad_url_without_printing_its_secret(url: str, redis_server: RedisServer, cli_env: dict[str, str]) -> None:
    """taskit's one redaction names the URL: the demo stops with one line, no secret, no traceback."""
    url = url.replace("{port}", str(redis_server.port))  # were it accepted, the suite's Redis would answer
    done = run_example("demo.py", cli_env, url, timeout=60)
    assert done.returncode == 1, done.stdout
    assert "bad Redis URL" in done.stdout, done.stdout
    for piece in (SECRET, SECRET[:5], SECRET[5:]):
        assert piece not in done.stdout
    assert "Traceback" not in done.stdout


def test_async_demo(connection: redis.Redis, redis_server: RedisServer, cli_env: dict[str, str]) -> None:
    """docs/concurrency.md: 300 async jobs of half a second each finish in about a second in one
    worker process, beside sync jobs of the same module, with a start hook that opens a client
    (and a stop hook that closes it), and a job canceled while it runs."""
    started = time.monotonic()
    done = run_example("async_demo.py", cli_env, redis_server.url)
    assert done.returncode == 0, done.stdout
    out = done.stdout
    assert f"demo: using the Redis at {redis_server.url} (TASKIT_REDIS_URL)" in out
    assert len(re.findall(r"worker process \d+: client opened", out)) == 1, out
    took = re.search(r"demo: 300 fetches done ([\d.]+)s after the worker started", out)
    assert took, out
    # one after the other they would take 150 s; the bound leaves room for a loaded machine
    assert float(took[1]) < 5, out
    assert "page 7's title is 'https://example.com/7'; its meta: {'bytes': 36}" in out
    assert f"checksums from the sync task: {[sum(b'taskit'), sum(b'async')]}" in out
    assert re.search(r"job [\w.]+ \(examples\.async_tasks\.slow_report\) was canceled while it ran: not needed after all", out), out
    assert "in the canceled registry of 'examples': True" in out
    assert re.search(r"worker process \d+: client closed after 300 requests", out), out
    assert time.monotonic() - started < 30  # the 30 s report did not run to its end


def test_periodic_demo(connection: redis.Redis, redis_server: RedisServer, cli_env: dict[str, str]) -> None:
    """examples/periodic_demo.py: delayed jobs run, retries follow their policies, and the
    periodic task fires every two seconds, each tick once however many workers run."""
    done = run_example("periodic_demo.py", cli_env, redis_server.url)
    assert done.returncode == 0, done.stdout
    out = done.stdout
    for text in ("in three seconds", "at a given time", "after a timedelta"):
        assert re.search(rf"finished\s+attempts=1 result='{text}'$", result_line(out, f"examples.periodic.remind('{text}')")), out
    assert re.search(r"finished\s+attempts=3 result=3$", result_line(out, "examples.periodic.fetch(succeed_on=3)")), out
    assert re.search(r"finished\s+attempts=\d+ result='report ready'$", result_line(out, "examples.periodic.wait_for_report(")), out
    ticks = re.search(r"periodic ticks, each run once by one of the two workers: \[(.*)\]$", out, re.MULTILINE)
    assert ticks, out
    times = [int(t) for t in re.findall(r"'periodic:examples\.periodic\.tick:(\d+)'", ticks[1])]
    assert len(times) >= 2 and len(set(times)) == len(times), out
    assert all(b - a == 2 for a, b in itertools.pairwise(times)), out  # every tick of 2 s, none skipped or doubled
    assert connection.exists("examples:ticks") == 0  # the demo removes its own list

