"""The `taskit` command: run workers, requeue failed jobs, look at queues.

Every mistake an operator can make (a bad URL, a module that does not import, a Redis
that does not answer, an unknown job id) ends in one readable line and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import click
import redis

from . import config, functions
from .exceptions import (
    InvalidJobIdError,
    InvalidOperationError,
    NoSuchJobError,
    TaskitError,
)
from .job import Job, validate_id
from .queue import Queue
from .registry import FailedJobRegistry
from .storage import keys
from .storage.keys import MAX_NAME_LENGTH
from .storage.store import Store


def url_in_effect() -> str:
    """The Redis URL a command uses without -u, redacted, and where it comes from."""
    from_env = os.environ.get("TASKIT_REDIS_URL")
    if from_env:
        return f"{config.redact_url(from_env)} (from TASKIT_REDIS_URL)"
    return f"{config.DEFAULT_URL} (the default; TASKIT_REDIS_URL is not set)"


class _UrlOption(click.Option):
    """-u/--url: its help names the URL in effect when the help is shown, not the one
    in effect when this module was imported."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = f"Redis URL. Without it: {url_in_effect()}."
        return super().get_help_record(ctx)


url_option = click.option(
    "-u",
    "--url",
    cls=_UrlOption,
    envvar="TASKIT_REDIS_URL",
    default=config.DEFAULT_URL,
    metavar="URL",
)


class _TaskitGroup(click.Group):
    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(f"Redis URL now: {url_in_effect()}.")


def _connect(url: str) -> Any:
    """A client for `url` that answered a PING, made taskit's default for this process.

    One attempt (with the client's connect timeout), so that a wrong URL or a Redis that
    is down is reported at once instead of after a retry budget.
    """
    connection = config.connect(url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot reach Redis at {config.describe(connection)}: {exc}") from None
    # code run here (a task enqueuing another job, Queue() without connection=) uses it too
    config.configure(connection=connection)
    return connection


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn taskit's errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TaskitError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(cls=_TaskitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskit")
def main() -> None:
    """taskit: background jobs in Redis.

    \b
    Examples:
      taskit worker myapp.tasks                  run the tasks of myapp.tasks
      taskit worker myapp.tasks -q high -q low   high-priority queue first
      taskit worker myapp.tasks --burst          exit when no job is left
      taskit requeue --queue default --all       retry every failed job
      taskit info                                queues, registries, workers
      taskit acl                                 the ACL line for a least-privilege user

    The Redis URL comes from -u/--url, else TASKIT_REDIS_URL, else
    redis://localhost:6379/0. Run `taskit COMMAND --help` for a command's options.
    """


def import_modules(modules: Sequence[str], paths: Sequence[str]) -> None:
    """Import the task modules, with the current directory and --path dirs importable."""
    for path in [*(os.path.abspath(p) for p in paths), os.getcwd()]:
        if path not in sys.path:
            sys.path.insert(0, path)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (any import-time error is the operator's to fix, in one line)
            raise click.ClickException(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from None


class UsageError(click.ClickException):
    """A bad command line, said in one line (click's own usage errors print the usage too)."""

    exit_code = 2


#: the -c N processes are named NAME.1, NAME.2, ...: room for the dot and 7 digits of restarts
_CHILD_SUFFIX = 8
#: --lease and --maintenance-interval, in seconds
_SECONDS_RANGE = (0.1, 86_400.0)


def check_worker_options(modules: Sequence[str], queues: Sequence[str], name: str | None, concurrency: int | None,
                         **seconds: float) -> None:
    """Refuse a bad `taskit worker` command line before anything is imported, forked or
    started: under -c N, a worker process that cannot start is restarted, again and again."""
    if not modules:
        raise UsageError(
            "name the modules that define your tasks, e.g. `taskit worker myapp.tasks`: "
            "a worker runs only functions from the modules it imports"
        )
    try:
        for queue in queues:
            validate_id(queue, "queue name")
        if name is not None:
            validate_id(name, "worker name")
    except InvalidJobIdError as exc:
        raise UsageError(str(exc)) from None
    if name is not None and concurrency is not None and len(name) + _CHILD_SUFFIX > MAX_NAME_LENGTH:
        raise UsageError(
            f"worker name {name[:20]!r}... is too long for -c: its processes are named NAME.1, NAME.2, ..., "
            f"so use at most {MAX_NAME_LENGTH - _CHILD_SUFFIX} characters"
        )
    low, high = _SECONDS_RANGE
    for option, value in seconds.items():
        if not (math.isfinite(value) and low <= value <= high):
            raise UsageError(f"--{option.replace('_', '-')} must be from {low:g} to {high:g} seconds, not {value:g}")


def worker_queues(given: Sequence[str]) -> list[str]:
    """The -q queues; without any, 'default' and every queue a discovered task names."""
    if given:
        return list(given)
    names = ["default"]
    for target in functions.registered_tasks().values():
        queue = getattr(target, "queue", None)
        if isinstance(queue, str) and queue not in names:
            names.append(queue)
    return names


@main.command()
@click.argument("modules", nargs=-1)
@click.option("-q", "--queue", "queues", multiple=True, metavar="NAME",
              help="Queue to work on, highest priority first; repeat for more. "
                   "Default: 'default' and the queues the tasks name.")
@url_option
@click.option("-b", "--burst", is_flag=True, help="Exit when no job is due instead of waiting for more.")
@click.option("-n", "--name", help="Worker name (default: host.pid.random).")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after running this many jobs (per process).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), metavar="N",
              help="Run N worker processes under a supervising parent, which restarts them if they die "
                   "and kills one whose job is stuck past its timeout. Default: one process, no parent.")
@click.option("-P", "--path", "paths", multiple=True, type=click.Path(file_okay=False),
              help="Directory to import MODULES from (the current directory always is).")
@click.option("--lease", type=float, default=20.0, show_default=True,
              help="Seconds a claim lives without a heartbeat; a dead worker's jobs return about this long after it dies.")
@click.option("--maintenance-interval", type=float, default=5.0, show_default=True,
              help="Seconds between maintenance steps (recovering jobs of dead workers, promoting, cleaning).")
@click.option("--max-deaths", type=click.IntRange(min=1), default=3, show_default=True,
              help="Times a job may kill its worker before it is failed as abandoned.")
@click.option("--prefetch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most jobs claimed in one round trip (only short jobs are claimed in bulk).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True, help="Least severe log line to print (on stderr).")
@_fail_cleanly
def worker(modules: tuple[str, ...], queues: tuple[str, ...], url: str, burst: bool, name: str | None,
           max_jobs: int | None, concurrency: int | None, paths: tuple[str, ...], lease: float,
           maintenance_interval: float, max_deaths: int, prefetch: int, log_level: str) -> None:
    """Run jobs from Redis, using the tasks defined in MODULES.

    \b
    Examples:
      taskit worker myapp.tasks                  queue 'default' and the tasks' queues
      taskit worker myapp.tasks -q high -q low   every 'high' job before any 'low' one
      taskit worker myapp.tasks --burst          exit once no job is due
      taskit worker tasks -P src -n w1           import src/tasks.py; call the worker w1

    MODULES are imported at start (the current directory is importable, as with
    `python -m`) and the tasks found are listed. Only registered @task functions and
    functions defined in MODULES (or their imported submodules) run; a job naming
    anything else fails, naming the function and the reason, and runs nothing.

    SIGTERM or Ctrl-C finishes the current job and exits; a second one stops at once and
    puts the job back on its queue.
    """
    check_worker_options(modules, queues, name, concurrency, lease=lease, maintenance_interval=maintenance_interval)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import_modules(modules, paths)
    connection = _connect(url)
    from .worker import Worker, default_worker_name

    settings: dict[str, Any] = {"modules": modules, "lease": lease, "maintenance_interval": maintenance_interval,
                                "max_deaths": max_deaths, "prefetch": prefetch}
    if concurrency is None:
        Worker(worker_queues(queues), connection, name, **settings).work(burst=burst, max_jobs=max_jobs)
        return
    from .storage.store import Store
    from .worker.supervisor import Supervisor

    def make_worker(child_name: str, monitor: object, parent_pid: int) -> Worker:
        return Worker(worker_queues(queues), config.connect(url), child_name, monitor=monitor,
                      parent_pid=parent_pid, **settings)

    supervisor = Supervisor(concurrency, make_worker, Store.of(connection), name=name or default_worker_name(),
                            burst=burst, max_jobs=max_jobs, max_deaths=max_deaths)
    sys.exit(supervisor.run())


@main.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("-q", "--queue", default="default", show_default=True, metavar="NAME",
              help="Queue whose failed jobs to requeue.")
@url_option
@click.option("-a", "--all", "requeue_all", is_flag=True, help="Requeue every failed job of the queue.")
@_fail_cleanly
def requeue(job_ids: tuple[str, ...], queue: str, url: str, requeue_all: bool) -> None:
    """Put failed jobs back on their queue.

    \b
    Examples:
      taskit requeue --queue myqueue -u redis://localhost:6379 foo_job_id bar_job_id
      taskit requeue --queue myqueue --all

    Each requeued id is printed on stdout. An id that cannot be requeued (unknown,
    expired, not failed, or on another queue) is named on stderr, one line each, and the
    exit status is 1; the other ids are still requeued.
    """
    if bool(job_ids) == requeue_all:
        raise click.UsageError("give job ids or --all (not both)")
    connection = _connect(url)
    registry = FailedJobRegistry(queue, connection)
    if requeue_all:
        done = registry.requeue_all()
        for job_id in done:
            click.echo(f"requeued {job_id}")
        if not done:
            _check_queue_known(Store.of(connection), queue)
            click.echo(f"Queue {queue!r} has no failed jobs: nothing to requeue.")
            return
        click.echo(f"Requeued {len(done)} failed job(s) on queue {queue!r}.")
        return
    done, problems = [], []
    for job_id in dict.fromkeys(job_ids):  # each id once, in the order given
        try:
            registry.requeue(job_id)
        except InvalidJobIdError as exc:
            problems.append(f"{job_id}: {exc}")
        except NoSuchJobError:
            problems.append(f"{job_id}: expired (its failed record is gone)")
        except InvalidOperationError:
            problems.append(f"{job_id}: {_why_not_failed(job_id, queue)}")
        else:
            done.append(job_id)
            click.echo(f"requeued {job_id}")
    click.echo(f"Requeued {len(done)} of {len(job_ids)} job(s) on queue {queue!r}.")
    for line in problems:
        click.echo(f"not requeued: {line}", err=True)
    if problems:
        sys.exit(1)


def _check_queue_known(store: Store, queue: str) -> None:
    """Fail when `queue` is a name taskit does not know (a typo, most likely): not among
    the queue names, and no job waiting on it or in any of its registries."""
    names = store.queue_names()
    if queue in names or store.queue_count(queue) or any(store.registry_count(kind, queue) for kind in keys.REGISTRIES):
        return
    known = ", ".join(repr(name) for name in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    raise click.ClickException(
        f"unknown queue {queue!r}: no job waits on it or is in its registries (known queues: {known or 'none'})"
    )


def _why_not_failed(job_id: str, queue: str) -> str:
    """Why a job is not in the failed registry of `queue`, for one line of output."""
    job = Job.fetch_many([job_id])[0]
    if job is None:
        return "no such job (never enqueued, or expired)"
    if job.origin != queue:
        return f"belongs to queue {job.origin!r}, not {queue!r}"
    return f"not failed (it is {job.get_status(refresh=False)})"


@main.command()
@url_option
@_fail_cleanly
def info(url: str) -> None:
    """Show queues (waiting, running, scheduled, failed) and live workers."""
    connection = _connect(url)
    queues = Queue.all(connection)
    click.echo(f"Redis at {config.describe(connection)}")
    click.echo(f"{'queue':20} {'queued':>8} {'started':>8} {'scheduled':>10} {'failed':>8} {'finished':>9}")
    for q in queues:
        click.echo(
            f"{q.name:20} {q.count:>8} {q.started_job_registry.count:>8} {q.scheduled_job_registry.count:>10} "
            f"{q.failed_job_registry.count:>8} {q.finished_job_registry.count:>9}"
        )
    unreadable = Store.of(connection).read_queue_names()[1]
    if unreadable:
        click.echo(f"({unreadable} unreadable queue name(s) skipped: not valid queue names)")
    workers = Store.of(connection).worker_details()
    click.echo(f"{len(workers)} worker(s)" + (":" if workers else ""))
    now = time.time()
    for name, deadline, registered, held in workers:
        where = f"pid {registered.get('pid', '?')} on {registered.get('host', '?')}"
        lease = f"lease {deadline - now:.0f}s left" if deadline > now else f"lease expired {now - deadline:.0f}s ago (presumed dead)"
        click.echo(f"  {name}  {where}  queues {registered.get('queues', '?')}  holding {held} job(s)  {lease}")


@main.command()
@click.option("--user", default="taskit", show_default=True, metavar="NAME", help="The user's name.")
@click.option("--cluster", is_flag=True, help="Add what redis-py's cluster client sends (for Redis Cluster).")
@click.option("--rules", "rules_only", is_flag=True,
              help="Print only the access rules (a managed service's user 'access string').")
def acl(user: str, cluster: bool, rules_only: bool) -> None:
    """Print the ACL SETUSER line for a least-privilege taskit user.

    \b
    Examples:
      taskit acl                      the line for user 'taskit'
      taskit acl --cluster            the line for a cluster (run it on every node)
      taskit acl --user jobs --rules  only the rules, for a managed service

    The user may touch only keys and channels under the prefix (TASKIT_PREFIX, default
    'taskit') and run only the commands taskit sends. Replace CHANGE-ME with its password,
    run the line as an administrator (redis-cli, on every node of a cluster; ACL SAVE or
    CONFIG REWRITE to keep it), then give taskit redis://taskit:PASSWORD@host:6379/0.
    """
    from .storage import acl as acl_rules

    if not user or any(c.isspace() for c in user):
        raise click.BadParameter(f"{user!r} is not a user name (no spaces)", param_hint="--user")
    click.echo(acl_rules.rules(cluster) if rules_only else acl_rules.setuser(user, cluster=cluster))
