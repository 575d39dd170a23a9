"""The `taskit` command: run workers, requeue failed jobs, look at queues.

Every mistake an operator can make (a bad URL, a module that does not import, a Redis
that does not answer, an unknown job id) ends in one readable line and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
import redis

from . import config, display, functions
from .exceptions import (
    InvalidJobIdError,
    InvalidOperationError,
    NoSuchJobError,
    NotReplicatedError,
    SerializationError,
    StorageError,
    TaskitError,
)
from .job import Job, JobStatus, validate_id
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


def _log_to_stderr(level: str = "INFO") -> None:
    """Log lines of `level` and above on stderr, with their time and origin."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _say(text: str) -> None:
    """Print a line that shows job or worker data, which anyone who can write to Redis (or
    make a task raise) chose: its control characters are shown as escapes."""
    click.echo(display.terminal_safe(text))


def _echo_json(document: Any) -> None:
    """Print one JSON document (what every --json prints). A number that is not finite (inf or
    nan: a lease, a timeout or a time someone set in Redis) is null: JSON has no Infinity, and
    a strict parser refuses the whole document."""
    click.echo(json.dumps(_finite(document), allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


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
      taskit worker myapp.tasks --threads 32     32 jobs at once (see docs/concurrency.md)
      taskit requeue --queue default --all       retry every failed job
      taskit cancel JOB_ID                       stop a job, even a running one
      taskit info -i 1                           queues and workers, refreshed
      taskit failed                              failed jobs and their errors
      taskit job ID                              one job in full
      taskit enqueue myapp.tasks.add 2 3         a job from the shell
      taskit empty QUEUE                         drop the jobs waiting on QUEUE
      taskit dashboard myapp.tasks               the web dashboard
      taskit metrics                             Prometheus metrics
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
#: the options given in seconds, and the range of each
_SECONDS_RANGE = {
    "interval": (0.1, 86_400.0),  # taskit info -i
    "lease": (0.1, 86_400.0),
    "maintenance_interval": (0.1, 86_400.0),
    "shutdown_timeout": (0.0, 86_400.0),
}


def check_worker_options(modules: Sequence[str], queues: Sequence[str], name: str | None, concurrency: int | None,
                         *, counts: Mapping[str, int], max_memory: float | None, **seconds: float) -> None:
    """Refuse a bad `taskit worker` command line before anything is imported, forked or
    started: under -c N, a worker process that cannot start is restarted, again and again.
    `counts`: the options that are a number of jobs at once (--threads, --async-tasks)."""
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
    for option, value in seconds.items():
        check_seconds(option, value)
    for option, count in counts.items():
        if count < 1:
            raise UsageError(f"--{_flag(option)} must be at least 1, not {count}")
    if max_memory is not None and not (math.isfinite(max_memory) and max_memory >= 1):
        raise UsageError(f"--max-memory must be a number of megabytes, at least 1, not {max_memory:g}")


def check_seconds(option: str, value: float) -> None:
    """Refuse a number of seconds outside the option's _SECONDS_RANGE (nan and inf too, which
    click's FloatRange lets through and time.sleep() then refuses with a traceback)."""
    low, high = _SECONDS_RANGE[option]
    if not (math.isfinite(value) and low <= value <= high):
        raise UsageError(f"--{_flag(option)} must be from {low:g} to {high:g} seconds, not {value:g}")


def _flag(option: str) -> str:
    return option.replace("_", "-")


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
@click.option("--threads", type=int, default=1, show_default=True, metavar="N",
              help="Sync jobs run at once per process, on N threads (1: in the worker's own thread). "
                   "For I/O-bound tasks; see docs/concurrency.md.")
@click.option("--async-tasks", type=int, default=10, show_default=True, metavar="N",
              help="`async def` jobs run at once per process, on its event loop.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), metavar="N",
              help="Run N worker processes under a supervising parent, which restarts them if they die "
                   "and kills one whose job is stuck past its timeout. Default: one process, no parent.")
@click.option("--max-jobs", type=click.IntRange(min=1),
              help="Stop after running this many jobs (per process; under -c N the process is replaced).")
@click.option("--max-memory", type=float, metavar="MB",
              help="Stop after the job that takes the process past MB megabytes of resident memory "
                   "(under -c N it is replaced).")
@click.option("--shutdown-timeout", type=float, default=30.0, show_default=True, metavar="S",
              help="On SIGTERM, seconds running jobs may finish before they are interrupted and go back on their queues.")
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
           threads: int, async_tasks: int, concurrency: int | None, max_jobs: int | None, max_memory: float | None,
           shutdown_timeout: float, paths: tuple[str, ...], lease: float,
           maintenance_interval: float, max_deaths: int, prefetch: int, log_level: str) -> None:
    """Run jobs from Redis, using the tasks defined in MODULES.

    \b
    Examples:
      taskit worker myapp.tasks                  queue 'default' and the tasks' queues
      taskit worker myapp.tasks -q high -q low   every 'high' job before any 'low' one
      taskit worker myapp.tasks --burst          exit once no job is due
      taskit worker tasks -P src -n w1           import src/tasks.py; call the worker w1
      taskit worker myapp.tasks --threads 32     32 sync jobs at once (I/O-bound tasks)
      taskit worker myapp.tasks -c 4 --async-tasks 500   4 processes, 500 async jobs each

    MODULES are imported at start (the current directory is importable, as with
    `python -m`) and the tasks found are listed. Only registered @task functions and
    functions defined in MODULES (or their imported submodules) run; a job naming
    anything else fails, naming the function and the reason, and runs nothing.

    SIGTERM or Ctrl-C lets running jobs finish (up to --shutdown-timeout) and exits; a
    second one stops them at once and puts them back on their queues.
    """
    check_worker_options(modules, queues, name, concurrency, counts={"threads": threads, "async_tasks": async_tasks},
                         max_memory=max_memory, lease=lease, maintenance_interval=maintenance_interval,
                         shutdown_timeout=shutdown_timeout)
    _log_to_stderr(log_level.upper())
    import_modules(modules, paths)
    connection = _connect(url)
    from .worker import Worker, default_worker_name

    settings: dict[str, Any] = {"modules": modules, "lease": lease, "maintenance_interval": maintenance_interval,
                                "max_deaths": max_deaths, "prefetch": prefetch, "threads": threads,
                                "async_tasks": async_tasks, "shutdown_timeout": shutdown_timeout,
                                "max_memory": max_memory}
    if concurrency is None:
        Worker(worker_queues(queues), connection, name, **settings).work(burst=burst, max_jobs=max_jobs)
        return
    from .worker.supervisor import Supervisor

    def make_worker(child_name: str, monitor: object, parent_pid: int) -> Worker:
        return Worker(worker_queues(queues), config.connect(url), child_name, monitor=monitor,
                      parent_pid=parent_pid, **settings)

    supervisor = Supervisor(concurrency, make_worker, Store.of(connection), name=name or default_worker_name(),
                            slots=threads + async_tasks, burst=burst, max_jobs=max_jobs, max_deaths=max_deaths)
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


@main.command(short_help="Show queues and workers with their jobs (-i N: refresh).")
@url_option
@click.option("-i", "--interval", type=float, metavar="SECONDS",
              help="Refresh in place every SECONDS until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --interval: one document per line and refresh).")
@_fail_cleanly
def info(url: str, interval: float | None, as_json: bool) -> None:
    """Show queues (waiting, scheduled, running, finished, failed, canceled, and how long the
    oldest job has waited) and workers with the job each is running.

    \b
    Examples:
      taskit info              once
      taskit info -i 1         refresh every second until Ctrl-C
      taskit info --json       for scripts
    """
    from .overview import read_overview

    if interval is not None:
        check_seconds("interval", interval)
    connection = _connect(url)
    try:
        while True:
            overview = read_overview(connection)
            if as_json:
                _echo_json(overview.to_json())
            else:
                if interval is not None:
                    click.clear()
                _print_overview(overview)
            if interval is None:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _print_overview(overview: Any) -> None:
    from .jobview import ago

    now = overview.at
    click.echo(f"Redis at {overview.redis}")
    click.echo(f"{'queue':20} {'queued':>8} {'started':>8} {'scheduled':>10} {'failed':>8} {'finished':>9} "
               f"{'canceled':>9}  oldest waiting")
    for q in overview.queues:
        c = {state: "?" if count is None else count for state, count in q.counts.items()}  # ?: see the problems
        click.echo(
            f"{q.name:20} {c['queued']:>8} {c['started']:>8} {c['scheduled']:>10} {c['failed']:>8} "
            f"{c['finished']:>9} {c['canceled']:>9}  {ago(q.oldest_age(now))}"
        )
    if overview.unreadable_queues:
        click.echo(f"({overview.unreadable_queues} unreadable queue name(s) skipped: not valid queue names)")
    for problem in overview.problems:
        _say(f"(left out: {problem})")
    workers = overview.workers
    click.echo(f"{len(workers)} worker(s)" + (":" if workers else ""))
    for w in workers:
        where = f"pid {w.pid} on {w.host}"
        lease = w.lease_deadline - now
        state = f"lease {lease:.0f}s left" if lease > 0 else f"lease expired {-lease:.0f}s ago (presumed dead)"
        beat = w.heartbeat_age(now)
        heartbeat = "" if beat is None else f"  heartbeat {ago(beat)} ago"
        _say(f"  {w.name}  {where}  queues {','.join(w.queues) or '?'}  holding {w.held} job(s)  {state}{heartbeat}")
        for job in w.jobs:
            if job.running:
                seconds = job.running_seconds(now)
                _say(f"      running {job.task} (job {job.id})" + ("" if seconds is None else f" for {ago(seconds)}"))
            elif job.waiting:
                _say(f"      waiting {job.task} (job {job.id}): claimed, in the worker's backlog for a free slot")
            else:
                _say(f"      {job.status} {job.task} (job {job.id})")
        if w.held > len(w.jobs):
            _say(f"      (+{w.held - len(w.jobs)} more held)")


@main.command("job", short_help="Show one job: arguments, result or traceback, timeline.")
@click.argument("job_id")
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_fail_cleanly
def job_command(job_id: str, url: str, as_json: bool) -> None:
    """Show one job: status, task, arguments, result or traceback, and its timeline.

    \b
    Example:
      taskit job 6VnE3sdyT0Q9nRA1cUZkHb
    """
    from .jobview import details, read_job

    connection = _connect(url)
    job, raw = read_job(validate_id(job_id), connection)
    if isinstance(job, SerializationError):  # what can be read of it is shown, then why not all
        if as_json:
            _echo_json({"id": job_id, "status": "corrupt", "error": str(job), "fields": raw})
        else:
            _say(f"{'id':12} {job_id}\n{'status':12} corrupt (the record below, as stored)")
            for name, value in raw.items():
                _say(f"{name.replace('_', ' '):12} {value}")
        raise job
    shown = details(job)
    if as_json:
        _echo_json(shown)
        return
    traceback = shown.pop("traceback")
    result = shown.pop("result")
    for name, value in shown.items():
        if name in ("error", "description") or value is None or value == {}:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value) if value else "(none)"
        _say(f"{name.replace('_', ' '):12} {value}")
    if result is not None:
        _say(f"{'result':12} {result}")
    if traceback:
        click.echo("traceback:")
        _say(traceback.rstrip())


@main.command(short_help="Cancel jobs; running ones are stopped.")
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@url_option
@click.option("-r", "--reason", help="Why; kept with the job in the canceled registry.")
@_fail_cleanly
def cancel(job_ids: tuple[str, ...], url: str, reason: str | None) -> None:
    """Cancel jobs: queued or scheduled ones never run, running ones are stopped.

    \b
    Examples:
      taskit cancel 74k25w6xkpeXVNFxhD3j0H
      taskit cancel ID1 ID2 --reason "customer left"

    A running job is stopped by its worker within about a second (see
    docs/concurrency.md); every canceled job goes to the canceled registry and is never
    retried. An id that cannot be canceled (unknown, or already ended) is named on
    stderr, and the exit status is 1; the other ids are still canceled.
    """
    _connect(url)
    problems = []
    for job_id in dict.fromkeys(job_ids):  # each id once, in the order given
        try:
            job = Job.fetch(job_id)
        except (InvalidJobIdError, NoSuchJobError) as exc:
            problems.append(f"{job_id}: {exc}")
            continue
        try:
            job.cancel(reason)
        except (NoSuchJobError, InvalidOperationError):
            problems.append(f"{job_id}: already {job.status} (only a job that has not ended can be canceled)")
        else:
            if job.status == JobStatus.STARTED:
                click.echo(f"stopping {job_id} (running on {job.worker_name})")
            else:
                click.echo(f"canceled {job_id}")
    for line in problems:
        click.echo(f"not canceled: {line}", err=True)
    if problems:
        sys.exit(1)


@main.command()
@click.option("-q", "--queue", "queues", multiple=True, metavar="NAME",
              help="Queue whose failed jobs to list; repeat for more. Default: every queue.")
@url_option
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Most jobs to list per queue (newest failures last).")
@_fail_cleanly
def failed(queues: tuple[str, ...], url: str, limit: int) -> None:
    """List failed jobs with their last error line.

    \b
    Examples:
      taskit failed                  every queue
      taskit failed -q emails        one queue
    Then `taskit job ID` shows one in full and `taskit requeue -q Q ID` runs it again.
    """
    from .jobview import call_text, last_error_line, read_jobs

    connection = _connect(url)
    names = list(dict.fromkeys(queues)) or [q.name for q in Queue.all(connection)]
    shown = total = 0
    unreadable = []
    for name in names:
        registry = FailedJobRegistry(name, connection)
        try:
            count = registry.count
            ids = registry.get_job_ids(0, limit - 1)
        except StorageError as exc:  # (a key of another type) named below; the other queues are listed
            unreadable.append(f"queue {name!r}: {exc}")
            continue
        if not count and queues:
            _check_queue_known(Store.of(connection), name)
        total += count
        for job_id, job in read_jobs(ids, connection):
            shown += 1
            if not isinstance(job, Job):  # corrupt: named, and the others still listed
                click.echo(f"{job_id}  {name}  -  (unreadable)")
                _say(f"    {job}")
                continue
            ended = f"{job.ended_at:%Y-%m-%d %H:%M:%S}" if job.ended_at else "-"
            _say(f"{job.id}  {name}  {ended}  {call_text(job, 60)}")
            _say(f"    {last_error_line(job.exc_info) or '(no traceback)'}")
    click.echo(f"{total} failed job(s)" + (f", {shown} shown" if shown < total else "")
               + f" on {', '.join(repr(n) for n in names) or 'no queue'}.")
    for line in unreadable:
        click.echo(display.terminal_safe(f"cannot list the failed jobs of {line}"), err=True)
    if unreadable:
        sys.exit(1)


@main.command(short_help="Delete the jobs waiting on a queue.")
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
@url_option
@_fail_cleanly
def empty(queues: tuple[str, ...], url: str) -> None:
    """Delete every job waiting on QUEUE (running, scheduled and ended jobs stay).

    \b
    Example:
      taskit empty default
    """
    connection = _connect(url)
    targets = [Queue(name, connection) for name in dict.fromkeys(queues)]  # every name checked first
    for queue in targets:
        removed = queue.empty()
        if not removed:
            _check_queue_known(Store.of(connection), queue.name)
        click.echo(f"Removed {removed} job(s) from queue {queue.name!r}.")


@main.command("declare-queue", short_help="Declare a queue's number of partitions.")
@click.argument("queue", metavar="QUEUE")
@click.option("-p", "--partitions", type=click.IntRange(min=1), required=True, metavar="N",
              help="Partitions (hash tags) the queue spreads its jobs over; 1: not partitioned.")
@url_option
@_fail_cleanly
def declare_queue(queue: str, partitions: int, url: str) -> None:
    """Declare QUEUE with N partitions, for every producer and worker (restart workers).

    \b
    Example:
      taskit declare-queue emails --partitions 3
    """
    from .partitions import declare_queue as declare

    declare(queue, partitions, _connect(url))
    click.echo(f"Queue {queue!r} has {partitions} partition(s).")


def _parse_value(text: str) -> Any:
    """A JSON value ('3', '[1, 2]', '{"a": 1}', 'true', 'null', '"3"'), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class _EnqueueCommand(click.Command):
    """`taskit enqueue`: an ARG may be a negative number (-1, -2.5), which click would take for
    an option; anything else that looks like an option and is not one (a typo such as
    --countdwn) is refused, instead of being enqueued as an argument of the function."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {opt: not param.is_flag for param in self.get_params(ctx) if isinstance(param, click.Option)
                       for opt in param.opts}
        tokens = iter(args)
        for arg in tokens:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if name in takes_value:
                if takes_value[name] and "=" not in arg:
                    next(tokens, None)  # its value, whatever it looks like
            elif arg.startswith("-") and len(arg) > 1 and arg[:2] not in takes_value \
                    and not isinstance(_parse_value(arg), (int, float)):
                raise click.UsageError(
                    f"no such option: {arg} (an argument that starts with '-' goes after '--': "
                    f"taskit enqueue FUNCTION -- {arg})", ctx)
        return super().parse_args(ctx, args)


@main.command("enqueue", cls=_EnqueueCommand, context_settings={"ignore_unknown_options": True},
              short_help="Enqueue a job from the shell.")
@click.argument("function")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-k", "--kwarg", "kwargs", multiple=True, metavar="NAME=VALUE",
              help="A keyword argument; VALUE is read as ARGS are. Repeat for more.")
@click.option("-q", "--queue", metavar="NAME", help="Queue (default: the task's own, else 'default').")
@url_option
@click.option("--countdown", type=click.FloatRange(min=0), metavar="SECONDS", help="Run no sooner than SECONDS from now.")
@click.option("--job-id", metavar="ID", help="The job's id (default: a random one).")
@click.option("--replicas", type=int, default=0, show_default=True, metavar="N",
              help="Return only once N replicas have the job (Redis WAIT); exit 1 if fewer confirm it in time.")
@click.option("--replica-timeout", type=float, default=1.0, show_default=True, metavar="SECONDS",
              help="How long --replicas waits.")
@click.option("--no-import", is_flag=True,
              help="Do not import FUNCTION's module here; enqueue the name as given (a worker resolves it).")
@click.option("-P", "--path", "paths", multiple=True, type=click.Path(file_okay=False),
              help="Directory to import FUNCTION's module from (the current directory always is).")
@_fail_cleanly
def enqueue(function: str, args: tuple[str, ...], kwargs: tuple[str, ...], queue: str | None, url: str,
            countdown: float | None, job_id: str | None, replicas: int, replica_timeout: float, no_import: bool,
            paths: tuple[str, ...]) -> None:
    """Enqueue FUNCTION(ARGS...) from the shell and print the job's id.

    \b
    Examples:
      taskit enqueue myapp.tasks.add 2 3                 add(2, 3)
      taskit enqueue myapp.tasks.send bob -k urgent=true send('bob', urgent=True)
      taskit enqueue myapp.tasks.greet '"42"'            greet('42'): a JSON string

    Each ARG (and each -k VALUE) is read as JSON when it is valid JSON (numbers, true,
    false, null, "strings", [lists], {objects}) and as a plain string otherwise.
    FUNCTION's module is imported here (so a @task's own queue and options apply) unless
    --no-import is given; either way a worker runs it only if it may (see `taskit worker`).
    """
    keywords = {}
    for item in kwargs:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise click.UsageError(f"-k takes NAME=VALUE, not {item!r}")
        keywords[name] = _parse_value(value)
    target: Any = function
    if not no_import:
        target = _import_function(function, paths)
    connection = _connect(url)
    values = [_parse_value(arg) for arg in args]
    options: dict[str, Any] = {} if job_id is None else {"job_id": job_id}
    from .schedule import run_at
    from .task import Task

    name = queue or (target.queue if isinstance(target, Task) else "default")
    destination = Queue(name, connection, replicas=replicas, replica_timeout=replica_timeout)
    job = destination.prepare_data(target, values, keywords, **options)
    try:
        destination.enqueue_job(job, run_at=None if countdown is None else run_at(countdown=countdown))
    except NotReplicatedError:
        click.echo(job.id)  # enqueued all the same: its id is printed as always, the error below it
        raise
    click.echo(job.id)
    from .jobview import call_text

    when = "" if countdown is None else f", to run in {countdown:g}s"
    click.echo(f"Enqueued {call_text(job)} on queue {name!r}{when}.", err=True)


def _import_function(path: str, paths: Sequence[str]) -> Any:
    """The function or task at 'module.name', importing the module."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise click.UsageError(f"FUNCTION must be a dotted path 'module.function', not {path!r}")
    import_modules([module_name], paths)
    target = getattr(sys.modules[module_name], attribute, None)
    if not callable(target):
        raise click.ClickException(f"module {module_name!r} has no function {attribute!r} (use --no-import to enqueue the name as given)")
    return target


@main.command(short_help="Serve Prometheus metrics (also on the dashboard).")
@url_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=9808, show_default=True, help="Port to listen on.")
@_fail_cleanly
def metrics(url: str, host: str, port: int) -> None:
    """Serve Prometheus metrics at http://HOST:PORT/metrics, read from Redis at each scrape.

    \b
    Example:
      taskit metrics --port 9808
    Queue depths and the oldest job's age, jobs finished / failed / retried and run-time
    histograms per task, live workers: docs/dashboard.md lists them. The dashboard serves
    the same at /metrics.
    """
    from . import metrics as taskit_metrics

    _log_to_stderr()  # a scrape that cannot read Redis is one line here
    connection = _connect(url)
    try:
        taskit_metrics.serve(host, port, connection)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"Serving taskit metrics on http://{host}:{port}/metrics (Ctrl-C to stop)", err=True)
    _wait_for_stop()


def _wait_for_stop() -> None:
    """Block until SIGINT or SIGTERM, then return (exit status 0)."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(1):
        pass


@main.command(short_help="Serve the web dashboard (queues, jobs, workers, periodic).")
@click.argument("modules", nargs=-1)
@url_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any but a loopback one needs auth (or --insecure-no-auth).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=9181, show_default=True, help="Port to listen on.")
@click.option("--username", envvar="TASKIT_DASHBOARD_USERNAME", help="Basic auth user (env: TASKIT_DASHBOARD_USERNAME).")
@click.option("--password", envvar="TASKIT_DASHBOARD_PASSWORD",
              help="Basic auth password; prefer the environment, which `ps` does not show (env: TASKIT_DASHBOARD_PASSWORD).")
@click.option("--token", envvar="TASKIT_DASHBOARD_TOKEN",
              help="Accept `Authorization: Bearer TOKEN` (or TOKEN as the basic auth password) (env: TASKIT_DASHBOARD_TOKEN).")
@click.option("--read-only", is_flag=True, help="Show everything, change nothing (no requeue, cancel, delete, empty).")
@click.option("--insecure-no-auth", is_flag=True, help="Allow a non-loopback --host without auth.")
@click.option("-P", "--path", "paths", multiple=True, type=click.Path(file_okay=False),
              help="Directory to import MODULES from (the current directory always is).")
@_fail_cleanly
def dashboard(modules: tuple[str, ...], url: str, host: str, port: int, username: str | None, password: str | None,
              token: str | None, read_only: bool, insecure_no_auth: bool, paths: tuple[str, ...]) -> None:
    """Serve the web dashboard: queues, jobs, workers, periodic tasks, and /metrics.

    \b
    Examples:
      taskit dashboard                               http://127.0.0.1:9181
      taskit dashboard myapp.tasks                   also list myapp's periodic tasks
      TASKIT_DASHBOARD_PASSWORD=s3cret taskit dashboard --host 0.0.0.0 --username ops

    MODULES are imported to find the periodic tasks they register. Every change is a POST
    with a CSRF token; see docs/dashboard.md to mount the app in your own ASGI app.
    """
    from .dashboard.security import is_loopback

    if bool(username) != bool(password):
        raise click.UsageError("give --username and --password together (or neither)")
    secured = bool(password or token)
    if not secured and not is_loopback(host) and not insecure_no_auth:
        raise click.UsageError(
            f"refusing to serve the dashboard on {host} without auth: set --username/--password or --token "
            "(or pass --insecure-no-auth)"
        )
    _check_can_listen(host, port)
    _log_to_stderr("WARNING")  # a page that cannot be shown is one line here
    import_modules(modules, paths)
    connection = _connect(url)
    from .dashboard import create_app

    app = create_app(connection, username=username, password=password, token=token, read_only=read_only,
                     local_only=not secured and is_loopback(host))
    import uvicorn

    click.echo(f"taskit dashboard on http://{host}:{port}/ ({'read-only' if read_only else 'read-write'}, "
               f"{'auth required' if secured else 'no auth'}; Ctrl-C to stop)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except KeyboardInterrupt:  # Ctrl-C before uvicorn took over the signal
        return


def _check_can_listen(host: str, port: int) -> None:
    """Fail in one line, before announcing anything, when HOST:PORT cannot be listened on (uvicorn
    would log its own error after our 'serving' line and exit 3)."""
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


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
