"""Enqueueing: @task / delay / apply_async, Queue.enqueue*, round trips, bad inputs, connections."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import redis.backoff
import redis.retry
from conftest import free_port
from records import stored, ttl
from roundtrips import commands_run, counting_client

import taskit
from taskit import Job, Queue, SerializationError, Task, Worker, config, task
from taskit.config import DEFAULT_URL, redis_url
from taskit.exceptions import (
    ConfigurationError,
    DuplicateJobError,
    InvalidJobIdError,
    RedisUnavailableError,
)
from taskit.storage import keys, store

RAN: list[object] = []


@task
def multiply(x, y):
    """Multiply two numbers."""
    return x * y


@task(queue="emails", timeout=30, ttl=600, result_ttl=60, failure_ttl=120, name="mail.send")
def send(to, subject=""):
    return f"sent {subject!r} to {to}"


def plain(x, y=0):
    RAN.append((x, y))
    return x - y


def by_name_only(x):
    """Enqueued only by its dotted name: a worker runs it only if given this module."""
    return x * 10


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


class User:
    pass


@pytest.fixture(autouse=True)
def _clear_ran():
    RAN.clear()


# -- @task ------------------------------------------------------------------------------------


def test_task_bare_and_with_options_still_run_when_called():
    assert isinstance(multiply, Task) and isinstance(send, Task)
    assert multiply(3, 4) == 12
    assert send("ann", subject="hi") == "sent 'hi' to ann"
    assert multiply.__name__ == "multiply" and multiply.__doc__ == "Multiply two numbers."
    assert multiply.__wrapped__(2, 5) == 10
    assert multiply.name == "test_enqueue.multiply" and send.name == "mail.send"


def test_task_refuses_bad_options_at_decoration():
    with pytest.raises(ConfigurationError, match="timeout"):
        task(timeout=0)(plain)
    with pytest.raises(ConfigurationError, match="ttl"):
        task(ttl="soon")(plain)
    with pytest.raises(InvalidJobIdError, match="queue name"):
        task(queue="no spaces")(plain)
    with pytest.raises(ConfigurationError, match="decorates a function"):
        task(5)


def test_delay_returns_a_queued_job(connection):
    job = multiply.delay(6, 7)
    assert isinstance(job, Job)
    assert job.get_status() == "queued" and job.origin == "default"
    assert job.func_name == "test_enqueue.multiply" and job.args == (6, 7) and job.kwargs == {}
    assert Queue("default").job_ids == [job.id]
    assert Worker(["default"]).work(burst=True) == 1
    assert Job.fetch(job.id).result == 42


def test_delay_uses_the_task_options(connection):
    job = send.delay("bob", subject="news")
    fetched = Job.fetch(job.id)
    assert fetched.origin == "emails" and fetched.func_name == "mail.send"
    assert (fetched.timeout, fetched.ttl, fetched.result_ttl, fetched.failure_ttl) == (30, 600, 60, 120)
    assert fetched.kwargs == {"subject": "news"}
    assert Queue("emails").count == 1 and Queue("default").count == 0
    Worker(["emails"]).work(burst=True)
    assert Job.fetch(job.id).result == "sent 'news' to bob"


def test_apply_async_with_every_option(connection):
    job = send.apply_async(
        ("carol",), {"subject": "x"}, queue="urgent", job_id="mail-1", ttl=90, result_ttl=-1,
        failure_ttl=5, timeout=7, meta={"campaign": 3}, description="one mail",
    )
    assert job.id == "mail-1"
    fetched = Job.fetch("mail-1")
    assert fetched.origin == "urgent" and Queue("urgent").job_ids == ["mail-1"]
    assert fetched.args == ("carol",) and fetched.kwargs == {"subject": "x"}
    assert (fetched.ttl, fetched.result_ttl, fetched.failure_ttl, fetched.timeout) == (90, -1, 5, 7)
    assert fetched.meta == {"campaign": 3} and fetched.description == "one mail"


def test_apply_async_defaults_and_explicit_connection(redis_server, connection):
    other = redis_server.client(db=1)
    job = multiply.apply_async([2, 3], connection=other)
    assert stored(other, job.id) and stored(connection, job.id) is None
    assert Job.fetch(job.id, connection=other).args == (2, 3)
    other.close()


def test_apply_async_refuses_unknown_options_and_bad_args(connection):
    with pytest.raises(ConfigurationError, match="unknown enqueue option colour"):
        multiply.apply_async((1, 2), colour="red")
    with pytest.raises(ConfigurationError, match="args must be a list or tuple"):
        multiply.apply_async("12")
    with pytest.raises(ConfigurationError, match="kwargs must be a dict"):
        multiply.apply_async((1,), [2])
    assert connection.dbsize() == 0


def test_task_enqueue_and_call_types_are_checked_by_mypy(tmp_path, request):
    """The ParamSpec on Task lets a type checker catch wrong `.delay()` arguments."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent("""
        from taskit import task

        @task
        def add(x: int, y: int) -> int:
            return x + y

        @task(queue="q", timeout=5)
        def greet(name: str, *, loud: bool = False) -> str:
            return name

        add.delay(1, 2)
        greet.delay("ann", loud=True)
        add.delay("a", 2)        # line 14: wrong type
        add.delay(1)             # line 15: missing argument
        greet.delay("b", shout=1)  # line 16: unknown keyword
        result: str = add(1, 2)  # line 17: calling a task returns the function's type
    """))
    cache_provider = getattr(request.config, "cache", None)  # reused across runs: ~0.5 s instead of ~5 s
    cache = cache_provider.mkdir("mypy") if cache_provider is not None else tmp_path / "mypy-cache"
    env = {"MYPYPATH": str(request.config.rootpath), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--follow-imports=silent",
         "--no-error-summary", "--hide-error-context", str(snippet)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    ).stdout
    error_lines = sorted(int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line)
    assert error_lines == [14, 15, 16, 17], out


# -- Queue.enqueue ---------------------------------------------------------------------------------


def test_enqueue_a_task_a_function_and_a_dotted_name(connection, queue):
    by_task = queue.enqueue(multiply, 2, 3)
    by_function = queue.enqueue(plain, 5, y=1)
    by_name = queue.enqueue("sample_tasks.add", 1, 1)
    assert [j.func_name for j in (by_task, by_function, by_name)] == [
        "test_enqueue.multiply", "test_enqueue.plain", "sample_tasks.add"
    ]
    import sample_tasks  # noqa: F401  (the worker runs registered tasks; this registers sample_tasks.add)

    assert Worker([queue]).work(burst=True) == 3
    assert [Job.fetch(j.id).result for j in (by_task, by_function, by_name)] == [6, 4, 2]
    assert RAN == [(5, 1)]


def test_enqueue_by_name_runs_only_what_the_worker_was_given(connection, queue):
    job = queue.enqueue("test_enqueue.by_name_only", 4)
    Worker([queue]).work(burst=True)  # not told about this module: refuses, runs nothing
    job.refresh()
    assert job.get_status() == "failed" and "not a registered task" in job.exc_info
    again = queue.enqueue("test_enqueue.by_name_only", 5)
    Worker([queue], modules=["test_enqueue"]).work(burst=True)
    assert Job.fetch(again.id).result == 50


@pytest.mark.parametrize("name", ["add", "", "1abc.def", "os.system; rm -rf", "a..b/c", ".leading"])
def test_enqueue_refuses_a_bad_dotted_name(connection, queue, name):
    with pytest.raises(ConfigurationError, match="dotted 'module.function' path"):
        queue.enqueue(name)
    assert connection.dbsize() == 0


def test_enqueue_refuses_non_callables(connection, queue):
    with pytest.raises(ConfigurationError, match="expected a task, a function or a dotted name"):
        queue.enqueue(42)


def test_enqueue_takes_the_options_out_of_kwargs(connection, queue):
    first = queue.enqueue(plain, 0)
    job = queue.enqueue(
        echo, 1, keep=True, ttl=43, result_ttl=10, failure_ttl=300, job_timeout=30, job_id="opts",
        meta={"m": 1}, description="echo it", at_front=True,
    )
    assert job.args == (1,) and job.kwargs == {"keep": True}
    fetched = Job.fetch("opts")
    assert fetched.kwargs == {"keep": True}
    assert (fetched.ttl, fetched.result_ttl, fetched.failure_ttl, fetched.timeout) == (43, 10, 300, 30)
    assert fetched.meta == {"m": 1} and fetched.description == "echo it"
    assert queue.job_ids == ["opts", first.id]  # at_front


def test_enqueue_seed_ttl_example(connection, queue):
    job = queue.enqueue(plain, "http://nvie.com", ttl=43)
    assert job.ttl == 43 and job.args == ("http://nvie.com",)
    assert 0 < ttl(connection, job.id) <= 43


def test_enqueue_call_keeps_call_arguments_and_options_apart(connection, queue):
    job = queue.enqueue_call(echo, args=[1, 2], kwargs={"ttl": "mine", "job_id": "also mine"}, ttl=60, job_id="c1")
    assert job.id == "c1" and job.ttl == 60
    assert job.args == (1, 2) and job.kwargs == {"ttl": "mine", "job_id": "also mine"}
    Worker([queue]).work(burst=True)
    assert Job.fetch("c1").result == {"args": [1, 2], "kwargs": {"ttl": "mine", "job_id": "also mine"}}


def test_enqueue_call_defaults_and_unknown_options(connection, queue):
    job = queue.enqueue_call(echo)
    assert job.args == () and job.kwargs == {}
    with pytest.raises(ConfigurationError, match="unknown enqueue option nope"):
        queue.enqueue_call(echo, nope=1)


def test_enqueue_job(connection):
    job = Job.create(func=plain, args=(9,), ttl=43, connection=connection)
    queue = Queue("jobs", connection=connection)
    assert queue.enqueue_job(job) is job
    assert job.get_status() == "queued" and job.origin == "jobs" and job.enqueued_at is not None
    assert queue.job_ids == [job.id] and Job.fetch(job.id).origin == "jobs"
    with pytest.raises(DuplicateJobError):
        queue.enqueue_job(job)
    assert queue.job_ids == [job.id]


def test_an_id_set_by_hand_on_a_created_job_is_enqueued_as_that_custom_id(connection):
    """Job.create made an id; the caller then set one. The enqueue takes the job's tag from
    its id only for an id taskit made (storage/store.py), so this one is a custom id."""
    queue = Queue("jobs", connection=connection)
    job = Job.create(func=plain, args=(1,), connection=connection)
    job.id = "set-by-hand"
    queue.enqueue_job(job)
    assert queue.job_ids == ["set-by-hand"] and Job.fetch("set-by-hand").origin == "jobs"
    again = Job.create(func=plain, args=(2,), connection=connection)
    again.id = "set-by-hand"
    with pytest.raises(DuplicateJobError):
        queue.enqueue_job(again)
    assert Worker([queue], connection=connection).work(burst=True)
    assert Job.fetch("set-by-hand").result == 1 and RAN[-1] == (1, 0)


def test_task_options_fill_in_what_enqueue_does_not_give(connection):
    queue = Queue("elsewhere", connection=connection)
    job = queue.enqueue(send, "dan", ttl=99)
    fetched = Job.fetch(job.id)
    assert fetched.origin == "elsewhere"  # the queue enqueued to, not the task's default
    assert (fetched.ttl, fetched.timeout, fetched.result_ttl, fetched.failure_ttl) == (99, 30, 60, 120)


def test_an_enqueue_onto_an_empty_queue_wakes_a_worker_with_one_push(redis_server, connection):
    """The wake list's LPUSH is its type check and says whether a token was there: no TYPE
    and no LTRIM when an idle worker took the last one (lib/queueing.lua wake_one)."""
    queue = Queue("woken", connection=connection)
    queue.enqueue(plain, 0)  # (loads the script, indexes the queue)
    connection.delete(keys.of_queue("woken").queue, keys.of_queue("woken").wake)
    with commands_run(redis_server) as ran:
        queue.enqueue(plain, 1)
    assert dict(ran) == {"evalsha": 1, "exists": 1, "hsetnx": 1, "rpush": 1, "lpush": 1, "sadd": 1}, ran
    assert connection.lrange(keys.of_queue("woken").wake, 0, -1) == [b"1"]


def test_enqueue_many_is_one_round_trip(redis_server, connection):
    client, trips = counting_client(redis_server)
    queue = Queue("many", connection=client)
    jobs = [queue.prepare_data(plain, (i,), None) for i in range(20)]
    jobs.append(queue.prepare_data(multiply, (2, 2), None, job_id="custom", meta={"n": 1}))
    assert trips.trips == 0
    with commands_run(redis_server) as ran:
        enqueued = queue.enqueue_many(jobs)
    assert trips.trips == 1
    assert ran["evalsha"] == 21
    assert enqueued == jobs and all(j.get_status(refresh=False) == "queued" for j in jobs)
    assert queue.job_ids == [j.id for j in jobs]
    assert Job.fetch("custom", connection=client).meta == {"n": 1}
    assert queue.enqueue_many([]) == []
    client.close()


def test_enqueue_many_with_a_taken_id(connection, queue):
    first = queue.enqueue(plain, 1, job_id="taken")
    before = stored(connection, "taken")
    jobs = [queue.prepare_data(plain, (2,)), queue.prepare_data(plain, (3,), job_id="taken")]
    with pytest.raises(DuplicateJobError, match="taken already exists.*the others were enqueued"):
        queue.enqueue_many(jobs)
    assert queue.job_ids == [first.id, jobs[0].id]
    assert stored(connection, "taken") == before


def test_enqueue_many_refuses_what_is_not_a_job(connection, queue):
    with pytest.raises(ConfigurationError, match="prepare_data"):
        queue.enqueue_many([plain])


def test_enqueue_works_after_redis_forgot_the_scripts(redis_server, connection, queue):
    connection.script_flush()
    one = queue.enqueue(plain, 1)
    connection.script_flush()
    many = queue.enqueue_many([queue.prepare_data(plain, (i,)) for i in range(3)])
    assert queue.job_ids == [one.id] + [j.id for j in many]


# -- looking at a queue ----------------------------------------------------------------------------


def test_count_len_job_ids_jobs_and_empty(connection, queue):
    assert queue.count == 0 and len(queue) == 0 and queue.job_ids == [] and queue.jobs == []
    jobs = [queue.enqueue(plain, i) for i in range(3)]
    other = Queue("other", connection=connection)
    other.enqueue(plain, 99)
    assert queue.count == 3 and len(queue) == 3
    assert queue.job_ids == [j.id for j in jobs]
    assert [j.args for j in queue.jobs] == [(0,), (1,), (2,)]
    assert queue.get_job_ids(1, 1) == [jobs[1].id]
    assert queue.fetch_job(jobs[0].id) == jobs[0] and queue.fetch_job("nope") is None
    assert queue.empty() == 3
    assert queue.count == 0 and queue.job_ids == []
    assert all(stored(connection, j.id) is None for j in jobs)
    assert other.count == 1  # other queues untouched


def test_queue_reads_are_reads(redis_server, connection, queue):
    queue.enqueue(plain, 1)
    with commands_run(redis_server) as ran:
        assert queue.count == 1 and len(queue) == 1 and len(queue.job_ids) == 1 and len(queue.jobs) == 1
    # (reads of jobs go through lua/read.lua: the commands it runs are counted too)
    assert set(ran) <= {"llen", "lrange", "hgetall", "hget", "evalsha", "type", "exists", "zscore"}, ran


def test_at_front_ordering(connection, queue):
    a = queue.enqueue(plain, "a")
    b = queue.enqueue(plain, "b")
    c = queue.enqueue(plain, "c", at_front=True)
    d = queue.enqueue_call(plain, ("d",), at_front=True)
    e = multiply.apply_async((1, 1), at_front=True)
    assert queue.job_ids == [e.id, d.id, c.id, a.id, b.id]
    Worker([queue]).work(burst=True)
    assert [x for x, _ in RAN] == ["d", "c", "a", "b"]


def test_queue_names_are_recorded(connection, target, masters_of):
    Queue("alpha", connection=connection).enqueue(plain, 1)
    multiply.apply_async((1, 2), queue="beta")
    multiply.delay(1, 2)
    assert [q.name for q in Queue.all(connection=connection)] == ["alpha", "beta", "default"]
    # on the cluster, the suites' queues (different names, so different tags) span its masters
    assert len(masters_of("alpha", "beta", "default", "emails", "urgent")) == (3 if target[0] == "cluster" else 1)


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 129])
def test_bad_queue_names_are_refused(name):
    with pytest.raises(ConfigurationError, match="queue name"):
        Queue(name)


# -- one round trip ---------------------------------------------------------------------------------


def test_enqueue_is_one_round_trip_and_one_script(redis_server, connection):
    client, trips = counting_client(redis_server)
    queue = Queue("rt", connection=client)
    with commands_run(redis_server) as ran:
        queue.enqueue(plain, 1, meta={"a": 1}, ttl=60)
    assert trips.trips == 1
    assert ran["evalsha"] == 1
    assert {"hsetnx", "rpush", "sadd", "zadd"} <= set(ran)  # inside the script: written in one step (zadd: the ttl)
    trips.reset()
    multiply.apply_async((1, 2), connection=client)
    assert trips.trips == 1
    trips.reset()
    queue.enqueue_in(60, plain, 2)
    assert trips.trips == 1
    client.close()


# -- functions defined in __main__ -----------------------------------------------------------------


SCRIPT = '''
import json
import os
from taskit import Job, Queue, Worker, task


def shout(word):
    return word.upper() + "!"


@task
def double(x):
    return 2 * x


if __name__ == "__main__":
    queue = Queue("scripts")          # the default connection: TASKIT_REDIS_URL
    plain_job = queue.enqueue(shout, "hello")
    task_job = double.apply_async((21,), queue="scripts")
    ran = Worker([queue]).work(burst=True)
    print(json.dumps({
        "names": [plain_job.func_name, task_job.func_name],
        "ran": ran,
        "results": [Job.fetch(plain_job.id).result, Job.fetch(task_job.id).result],
        "statuses": [plain_job.get_status().value, task_job.get_status().value],
    }))
'''


def test_functions_defined_in_main_run_in_an_in_process_worker(connection, cli_env, tmp_path):
    script = tmp_path / "myscript.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "names": ["__main__.shout", "__main__.double"],
        "ran": 2,
        "results": ["HELLO!", 42],
        "statuses": ["finished", "finished"],
    }


def test_a_main_function_is_refused_by_a_worker_that_did_not_enqueue_it(connection, queue):
    # a name in __main__ that this process never enqueued: job data must not choose code
    job = queue.enqueue("__main__.shout", "x")
    Worker([queue]).work(burst=True)
    job.refresh()
    assert job.get_status() == "failed" and "__main__.shout" in job.exc_info


# -- bad inputs: nothing written ---------------------------------------------------------------------


def assert_nothing_written(connection: redis.Redis, trips=None) -> None:
    assert connection.dbsize() == 0
    if trips is not None:
        assert trips.trips == 0


def test_unserializable_args_are_refused_and_nothing_is_written(redis_server, connection):
    client, trips = counting_client(redis_server)
    queue = Queue(connection=client)
    calls = {
        "delay": lambda: multiply.apply_async((1, User()), connection=client),
        "enqueue": lambda: queue.enqueue(plain, 1, y={"k": [object()]}),
        "enqueue_call": lambda: queue.enqueue_call(plain, [(1, User())]),
        "meta": lambda: queue.enqueue(plain, 1, meta={"who": User()}),
        "prepare_data": lambda: queue.enqueue_many([queue.prepare_data(plain, (1,)), queue.prepare_data(plain, (User(),))]),
    }
    messages = {}
    for name, call in calls.items():
        with pytest.raises(SerializationError) as info:
            call()
        messages[name] = str(info.value)
    assert messages["delay"].startswith("args[1] is a test_enqueue.User")
    assert messages["enqueue"].startswith("kwargs['y']['k'][0] is an object")
    assert messages["enqueue_call"].startswith("args[0][1] is a test_enqueue.User")
    assert messages["meta"].startswith("meta['who'] is a test_enqueue.User")
    assert messages["prepare_data"].startswith("args[0] is a test_enqueue.User")
    assert_nothing_written(connection, trips)
    client.close()


def test_delay_of_an_unserializable_kwarg(connection):
    with pytest.raises(SerializationError, match=r"^kwargs\['subject'\] is a test_enqueue.User"):
        send.delay("x", subject=User())
    with pytest.raises(TypeError):
        send.delay("x", subject={1, 2, User()})
    assert connection.dbsize() == 0


def test_a_duplicate_job_id_is_refused_and_the_first_job_is_untouched(connection, queue):
    first = queue.enqueue(plain, 1, job_id="dup", meta={"v": 1})
    before = stored(connection, "dup")
    with pytest.raises(DuplicateJobError, match="a job with id dup already exists"):
        queue.enqueue(multiply, 7, 8, job_id="dup", ttl=5, meta={"v": 2})
    with pytest.raises(DuplicateJobError):
        multiply.apply_async((1, 2), job_id="dup", queue="other")
    assert stored(connection, "dup") == before
    assert ttl(connection, "dup") == -1  # packed: no ttl
    assert queue.job_ids == [first.id] and Queue("other").count == 0
    assert Job.fetch("dup").args == (1,)


def test_lambdas_and_nested_functions_are_refused(connection, queue):
    def nested(x):
        return x

    for func in (lambda x: x, nested):
        with pytest.raises(ConfigurationError, match="module level"):
            queue.enqueue(func, 1)
    with pytest.raises(ConfigurationError, match="module level"):
        task(nested)
    with pytest.raises(ConfigurationError, match="module level"):
        Job.create(func=nested)
    assert connection.dbsize() == 0


class Mailer:
    def send(self, to):
        return to

    @classmethod
    def build(cls, name):
        return name

    @staticmethod
    def check(address):
        return "@" in address


def test_methods_bound_to_an_instance_are_refused(connection, queue):
    """A job stores a name only: the instance would be lost and the arguments shifted."""
    with pytest.raises(ConfigurationError, match="test_enqueue.Mailer.send is a method bound to an instance"):
        queue.enqueue(Mailer().send, "a@b.c")
    assert connection.dbsize() == 0
    by_class = queue.enqueue(Mailer.build, "x")
    by_static = queue.enqueue(Mailer.check, "a@b.c")
    assert (by_class.func_name, by_static.func_name) == ("test_enqueue.Mailer.build", "test_enqueue.Mailer.check")
    Worker([queue], modules=["test_enqueue"]).work(burst=True)
    assert Job.fetch(by_class.id).result == "x" and Job.fetch(by_static.id).result is True


def test_a_decoding_connection_is_refused_clearly(redis_server, connection):
    decoding = redis_server.client(decode_responses=True)
    for call in (
        lambda: Queue(connection=decoding),
        lambda: multiply.apply_async((1, 2), connection=decoding),
        lambda: Job.fetch("x", connection=decoding),
        lambda: Job.create(func=plain, connection=decoding),
        lambda: taskit.configure(connection=decoding),
    ):
        with pytest.raises(ConfigurationError, match="decode_responses=True"):
            call()
    with pytest.raises(ConfigurationError, match="must be a redis.Redis"):
        Queue(connection="redis://localhost")
    decoding.close()
    assert connection.dbsize() == 0


# -- connections ------------------------------------------------------------------------------------


def attempt(call) -> tuple[str, float]:
    """(the RedisUnavailableError message or "no error", seconds taken)."""
    began = time.monotonic()
    try:
        call()
    except RedisUnavailableError as exc:
        return str(exc), time.monotonic() - began
    return "no error", time.monotonic() - began


@pytest.mark.timeout(60)
def test_a_dead_redis_raises_redis_unavailable_within_seconds(redis_server, connection):
    dead_port = free_port()
    taskit.configure(url=f"redis://127.0.0.1:{dead_port}/0")  # the default now points at nothing
    stopped = config.connect(redis_server.url)  # a client as taskit builds them, to a server we stop
    queue = Queue(connection=stopped)
    assert queue.count == 0
    redis_server.stop()  # the `connection` fixture restarts it for the next test
    operations = {
        "enqueue": lambda: queue.enqueue(plain, 1),
        "fetch": lambda: Job.fetch("x", connection=stopped),
        "count": lambda: queue.count,
        "delay to default": lambda: multiply.delay(1, 2),
        "fetch_many from default": lambda: Job.fetch_many(["a", "b"]),
    }
    with ThreadPoolExecutor(len(operations)) as pool:  # concurrently: the retry budget is paid once
        outcomes = dict(zip(operations, pool.map(attempt, operations.values())))
    for name, (message, took) in outcomes.items():
        assert message.startswith("cannot reach Redis at redis://127.0.0.1:"), (name, message)
        assert took < 15, (name, took)
    assert f":{redis_server.port}/0" in outcomes["enqueue"][0]
    assert f":{dead_port}/0" in outcomes["delay to default"][0]
    stopped.close()


@pytest.mark.timeout(60)
def test_a_dead_redis_behind_a_retrying_client_is_reported_within_the_retry_budget(connection):
    # the client's own retries make each attempt last ~3 s (redis-py 8's default: ~5 s)
    own_retries = redis.retry.Retry(redis.backoff.ConstantBackoff(1.0), 3)
    client = redis.Redis(host="127.0.0.1", port=free_port(), retry=own_retries)
    message, took = attempt(lambda: Queue(connection=client).enqueue(plain, 1))
    assert message.startswith("cannot reach Redis"), message
    assert took < store.RETRY_SECONDS + 2.5, f"took {took:.1f}s: {message}"


def test_redis_unavailable_is_a_taskit_error():
    assert issubclass(RedisUnavailableError, taskit.TaskitError)


def test_configure_url_sets_the_default_connection(redis_server, connection):
    taskit.configure(url=redis_server.url.rsplit("/", 1)[0] + "/2")
    job = multiply.delay(1, 2)
    Queue().enqueue(plain, 3)
    db2 = redis_server.client(db=2)
    assert stored(db2, job.id) and stored(connection, job.id) is None
    assert Job.fetch(job.id).args == (1, 2)
    assert Queue().count == 2
    db2.close()


def test_taskit_redis_url_is_the_fallback(redis_server, connection, monkeypatch):
    taskit.configure()  # forget the fixture's default
    monkeypatch.setenv("TASKIT_REDIS_URL", redis_server.url.rsplit("/", 1)[0] + "/3")
    job = multiply.delay(2, 2)
    db3 = redis_server.client(db=3)
    assert stored(db3, job.id) and stored(connection, job.id) is None
    db3.close()


def test_the_default_url(monkeypatch):
    monkeypatch.delenv("TASKIT_REDIS_URL", raising=False)
    taskit.configure()
    assert redis_url() == DEFAULT_URL == "redis://localhost:6379/0"  # read only: never connected to
    monkeypatch.setenv("TASKIT_REDIS_URL", "redis://example:1/4")
    assert redis_url() == "redis://example:1/4"
    taskit.configure(url="redis://other:2/5")
    assert redis_url() == "redis://other:2/5"  # configure() wins over the environment
    taskit.configure()


def test_an_explicit_connection_wins_over_the_default(redis_server, connection):
    taskit.configure(url=redis_server.url.rsplit("/", 1)[0] + "/4")
    job = Queue(connection=connection).enqueue(plain, 1)
    assert stored(connection, job.id)


def test_configure_refuses_bad_input():
    with pytest.raises(ConfigurationError, match="not both"):
        taskit.configure(url="redis://x", connection=redis.Redis())
    with pytest.raises(ConfigurationError, match="bad Redis URL"):
        taskit.configure(url="http://not-redis")
    with pytest.raises(ConfigurationError, match="must be a string, not int"):
        taskit.configure(url=1234)  # type: ignore[arg-type]
    taskit.configure()


# -- the producer's own path (storage/store.py `_Direct`, `pack_record`) ------------------------------


def test_a_plain_client_sends_its_scripts_itself_and_others_go_through_redis_py(redis_server, connection):
    own = redis.Redis(port=redis_server.port, client_name="own-path")
    assert store.Store(own)._direct is not None
    queue = Queue(connection=own)
    for i in range(3):  # the connection it holds between enqueues is given back before any other command
        assert Job.fetch(queue.enqueue(plain, i).id, connection=own).args == (i,) and queue.count == i + 1
    admin = redis.Redis(port=redis_server.port)
    assert [c["name"] for c in admin.client_list()].count("own-path") == 1  # one connection, as with redis-py's path
    admin.close()
    for other in (
        redis.Redis(port=redis_server.port, single_connection_client=True),
        redis.Redis(connection_pool=redis.BlockingConnectionPool(port=redis_server.port)),
    ):
        assert store.Store(other)._direct is None
        job = Queue(connection=other).enqueue(plain, 1)  # the ordinary path still enqueues
        assert Job.fetch(job.id, connection=own).args == (1,)
        other.close()
    own.close()


def test_clients_made_per_request_give_their_held_connection_back(redis_server, connection):
    """A client freed with its Store leaves no connection checked out of a shared pool, and a
    small pool (max_connections) is left whole to the application."""
    pool = redis.ConnectionPool(port=redis_server.port)
    for i in range(30):
        client = redis.Redis(connection_pool=pool)
        Queue("per-request", connection=client).enqueue(plain, i)
        Queue("per-request", connection=client).enqueue(plain, i)
        del client
    gc.collect()
    assert len(pool._in_use_connections) == 0 and Queue("per-request").count == 60
    pool.disconnect()
    small = redis.Redis(port=redis_server.port, max_connections=1)
    assert store.Store(small)._direct is None
    for i in range(2):
        Queue(connection=small).enqueue(plain, i)
    assert small.ping()  # the only connection is the application's between enqueues
    small.close()


def test_the_own_path_survives_a_restart_and_lost_scripts(redis_server, connection):
    client = config.connect(redis_server.url)
    queue = Queue(connection=client)
    first = queue.enqueue(plain, 1)
    connection.script_flush()  # NOSCRIPT: the script is loaded and that call run again
    second = queue.enqueue(plain, 2)
    assert queue.job_ids == [first.id, second.id] and Job.fetch(second.id, connection=client).args == (2,)
    redis_server.stop()
    redis_server.start()  # (no persistence: empty) the pooled connection is dead, the Store's retry reconnects
    third = queue.enqueue(plain, 3)
    assert queue.job_ids == [third.id] and Job.fetch(third.id, connection=client).args == (3,)
    client.close()


def test_the_own_path_loads_a_lost_script_once_and_runs_the_calls_again_together(redis_server, connection):
    """After a restart (scripts lost), an enqueue_many of many jobs loads the script once
    and re-runs its calls in one round trip, not a SCRIPT LOAD and a round trip per job."""
    client = config.connect(redis_server.url)
    queue = Queue(connection=client)
    queue.enqueue(plain, 0)
    connection.script_flush()
    with commands_run(redis_server) as ran:
        jobs = queue.enqueue_many([queue.prepare_data(plain, (i,)) for i in range(20)])
    assert ran["script|load"] == 1 and ran["evalsha"] == 40  # (20 refused with NOSCRIPT, 20 run)
    assert queue.job_ids == [queue.job_ids[0], *(job.id for job in jobs)]
    client.close()


#: commands whose replies take every shape a reply can (RESP2 and RESP3), errors in place
_EVERY_SHAPE = [
    ("PING",), ("SET", "s", "x" * 200_000), ("GET", "s"), ("GET", "none"), ("INCR", "n"), ("RPUSH", "l", "a", "b"),
    ("LRANGE", "l", 0, -1), ("HSET", "h", "f", "v"), ("HGETALL", "h"), ("SADD", "set", "m"), ("SMEMBERS", "set"),
    ("GET", "l"), ("EVALSHA", "0" * 40, 0), ("ZADD", "z", 1.5, "m"), ("ZSCORE", "z", "m"), ("LPOS", "l", "x"),
    ("EVAL", "return {1, 'two', {3, {}}, redis.error_reply('ERR nested'), false}", 0), ("CONFIG", "GET", "maxmemory-policy"),
    ("EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", 1, "h"),
    ("EVAL", "redis.setresp(3); return {double = 2.5}", 0), ("EVAL", "return true", 0),
    ("RPUSH", "wake", "t"), ("BLPOP", "wake", 0.05), ("BLPOP", "wake", 0.01), ("ECHO", b"a\r\nb"),
]


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_own_path_reads_every_reply_as_redis_py_does(redis_server, connection, protocol):
    """The held connection's replies are read off its socket (storage/resp.py): as
    redis-py's reader gives them, a refusal in its place, several at once, one past many
    recv()s (200 kB)."""
    client = redis.Redis(port=redis_server.port, protocol=protocol)
    own = store._Direct.of(client)
    assert own is not None
    got = own.send(_EVERY_SHAPE)
    connection.flushall()
    by_redis_py = client.connection_pool.get_connection()
    by_redis_py.send_packed_command(by_redis_py.pack_commands(_EVERY_SHAPE))
    expected = [store._response_of(by_redis_py) for _ in _EVERY_SHAPE]
    assert [repr(reply) for reply in got] == [repr(reply) for reply in expected]
    assert isinstance(got[11], redis.ResponseError) and "WRONGTYPE" in str(got[11])
    assert isinstance(got[12], redis.exceptions.NoScriptError) and got[2] == b"x" * 200_000
    assert own.send([("PING",)]) == [b"PONG"]  # nothing was left unread
    client.close()


class _BytesKind(bytes):
    pass


def test_the_own_path_packs_values_as_redis_py_does_and_refuses_what_it_refuses(redis_server, connection):
    own = store._Direct.of(redis.Redis(port=redis_server.port))
    assert own is not None
    encoder = redis.connection.Encoder("utf-8", "strict", False)
    for value in [b"x", "é", 3, -2.5, 10**20, _BytesKind(b"sub"), memoryview(b"mv"), bytearray(b"ba")]:
        encoded = bytes(encoder.encode(value))
        assert own._pack([value]) == b"$%d\r\n%b\r\n" % (len(encoded), encoded)
    for value in [True, None, object()]:
        with pytest.raises(redis.DataError):
            encoder.encode(value)
        with pytest.raises(redis.DataError):
            own._pack([value])


def test_the_own_path_works_in_a_forked_child(redis_server, connection):
    client = config.connect(redis_server.url)
    queue = Queue(connection=client)
    queue.enqueue(plain, 0)
    before = queue.enqueue(plain, 1)
    own = store.Store.of(client)._direct
    assert own is not None and own.cell[0] is not None  # held between enqueues: the child must not use it
    pid = os.fork()
    if pid == 0:  # the child: its pool gives it a connection of its own
        try:
            job = queue.enqueue(plain, 2)
            assert own.cell[0] is not None and own.cell[0].pid == os.getpid()  # not the parent's
            code = 0 if Job.fetch(job.id, connection=client).args == (2,) else 1
        except BaseException:  # noqa: BLE001  (a forked child exits, whatever happened)
            code = 2
        os._exit(code)
    _, status_code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status_code) == 0
    after = queue.enqueue(plain, 3)  # the parent's connection was left alone
    assert queue.count == 4 and queue.job_ids[1] == before.id and queue.job_ids[-1] == after.id
    client.close()


def test_a_prepared_job_a_forked_child_enqueues_after_its_parent_ran_it_is_refused(redis_server, connection):
    """A child inherits its parent's Jobs: one it enqueues may have been sent by the parent
    (and run, and left its bucket), so its enqueue finds the id among ended jobs."""
    client = config.connect(redis_server.url)
    queue = Queue(connection=client)
    queue.enqueue(plain, 0)  # (the queue indexed by this Store: the next enqueues go on the held connection)
    job = queue.prepare_data(plain, (1,))
    ran, done = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.read(ran, 1)  # the parent enqueued the job and a worker ran it
            try:
                queue.enqueue_job(job)
                code = 1
            except DuplicateJobError:
                code = 0
        except BaseException:  # noqa: BLE001  (a forked child exits, whatever happened)
            code = 2
        os._exit(code)
    queue.enqueue_job(job)
    assert Worker([queue], modules=["test_enqueue"]).work(burst=True) == 2 and Job.fetch(job.id, client).result == 1
    os.write(done, b"x")
    _, status_code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status_code) == 0
    assert queue.count == 0
    client.close()


@pytest.mark.parametrize("fields", [
    {"f": "m.f", "s": "queued", "e": 1_700_000_000_123},
    {"f": "m." + "f" * 40, "s": "scheduled", "e": 1_700_000_000_123, "a": bytes(range(256)) * 2, "to": 30,
     "tl": 60, "q": "x" * 300, "c": 1_699_999_000_000, "de": "é" * 20, "m": b"\x81\xa1k\xc4\x01v"},
])
def test_a_record_is_packed_as_lua_packed_it(connection, fields):
    """store.pack_record writes what lib/records.lua's pack_new_job wrote from the same
    fields sent as arguments (Lua's cmsgpack), byte for byte."""
    flat = [x for pair in fields.items() for x in pair]
    lua = connection.eval(
        "local t = {} for i = 1, #ARGV, 2 do if ARGV[i] ~= 's' or ARGV[i + 1] ~= 'queued' then "
        "t[#t + 1] = ARGV[i]; t[#t + 1] = ARGV[i] == 'e' and tonumber(ARGV[i + 1]) or ARGV[i + 1] end end "
        "return cmsgpack.pack(t)", 0, *flat)
    assert store.pack_record(fields) == lua


def test_a_tasks_queue_and_options_changed_after_decoration_are_used(connection):
    changed = Task(plain, queue="first", timeout=30)
    changed.queue = "second"
    changed.job_options["timeout"] = 77
    job = changed.delay(1)
    assert job.origin == "second" and Job.fetch(job.id).timeout == 77
    changed.job_options["timeout"] = "soon"
    with pytest.raises(ConfigurationError):
        changed.delay(1)


def test_a_process_keeps_the_scripts_it_started_with_when_its_package_is_replaced(redis_server, tmp_path):
    """A long-running process (a web app, a worker) whose installed package is replaced under
    it (`pip install -U` before its restart, an old release's directory removed) never mixes
    Lua read from the new files with its own Python, nor fails for want of the old files: the
    scripts' text is read when its first Store is made, as the rest of its code was imported."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(Path(store.__file__).resolve().parent.parent, site / "taskit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent(f"""
        import shutil
        import redis
        import sample_tasks
        import taskit
        from taskit import Queue
        assert taskit.__file__.startswith({str(site)!r}), taskit.__file__
        queue = Queue(connection=redis.Redis(port={redis_server.port}))
        job = queue.enqueue(sample_tasks.add, 1, 2)
        shutil.rmtree({str(site / "taskit" / "lua")!r})  # the upgrade: these files are gone or replaced
        job.cancel()
        print(job.get_status())
    """)
    tests = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(tests)]))
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "canceled"


@pytest.mark.parametrize("duplicate", ["copy", "pickle"])
def test_a_copy_of_a_prepared_job_is_refused_once_the_original_ran(connection, queue, duplicate):
    """A copy carries the original's id: once the original was enqueued (and ran, and left
    its bucket), the copy's enqueue must find that id taken, not run the job a second time."""
    import copy
    import pickle

    import sample_tasks

    job = Queue().prepare_data(sample_tasks.add, (1, 2))  # (the default connection: it pickles)
    twin = copy.copy(job) if duplicate == "copy" else pickle.loads(pickle.dumps(job))
    queue.enqueue_job(job)
    assert Worker([queue]).work(burst=True) == 1 and Job.fetch(job.id).result == 3
    with pytest.raises(DuplicateJobError):
        queue.enqueue_job(twin)
    assert queue.count == 0 and Worker([queue]).work(burst=True) == 0


def test_the_own_path_reads_a_long_string_whole_and_what_follows_it(redis_server, connection):
    """A string that takes many recv()s (storage/resp.py reads it on and joins it once; it
    was copied again at each, 70 s for 96 MB), then the replies after it, in their place."""
    import sample_tasks

    client = redis.Redis(port=redis_server.port)
    own = store._Direct.of(client)
    assert own is not None
    value = bytes(range(256)) * (24 << 12)  # 24 MB
    client.set("long", value)
    assert own.send([("GET", "long"), ("STRLEN", "long"), ("GET", "long"), ("PING",)]) == [value, len(value), value, b"PONG"]
    queue = Queue(connection=client)
    job = queue.enqueue(sample_tasks.add, value, b"!")  # (its claim's reply holds the 24 MB)
    assert Worker([queue]).work(burst=True) == 1 and Job.fetch(job.id, client).result == value + b"!"
    client.close()


def test_the_own_path_passes_over_a_push_as_redis_py_does(redis_server, connection):
    """A RESP3 push (here a tracking invalidation, on a connection someone turned tracking
    on for) is no reply to a command: read as one, every reply after it came one command
    late."""
    client = redis.Redis(port=redis_server.port, protocol=3)
    own = store._Direct.of(client)
    assert own is not None
    assert own.send([("CLIENT", "TRACKING", "ON"), ("GET", "watched")]) == [b"OK", None]
    connection.set("watched", 1)  # an invalidation is pushed to the held connection
    assert own.send([("PING",), ("INCR", "n")]) == [b"PONG", 1]
    assert own.send([("INCR", "n")]) == [2]
    client.close()
