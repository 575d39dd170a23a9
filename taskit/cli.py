"""The `taskit` command: run workers, requeue failed jobs, look at queues.

Every mistake an operator can make (a bad URL, a module that does not import, a Redis
that does not answer, an unknown job id) ends in one readable line and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from . import config, functions
from .exceptions import TaskitError
from .queue import Queue
from .registry import FailedJobRegistry

url_option = click.option(
    "-u",
    "--url",
    envvar="TASKIT_REDIS_URL",
    default=config.DEFAULT_URL,
    show_default=True,
    help="Redis URL (env: TASKIT_REDIS_URL).",
)


def _connect(url: str) -> Any:
    connection = config.connect(url)
    from .storage.store import Store

    Store.of(connection).ping()
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskit")
def main() -> None:
    """taskit: background jobs in Redis."""


def import_modules(modules: Sequence[str], paths: Sequence[str]) -> None:
    """Import the task modules, with the current directory and --path dirs importable."""
    for path in [*paths, os.getcwd()]:
        if path not in sys.path:
            sys.path.insert(0, path)
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import-time error is the operator's to fix, in one line
            raise click.ClickException(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from None


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
@click.option("--max-jobs", type=click.IntRange(min=1), help="Exit after running this many jobs.")
@click.option("-P", "--path", "paths", multiple=True, type=click.Path(file_okay=False),
              help="Directory to import MODULES from (the current directory always is).")
@click.option("--lease", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Seconds a claim lives without a heartbeat; a dead worker's jobs return about this long after it dies.")
@click.option("--maintenance-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between maintenance steps (recovering jobs of dead workers, promoting, cleaning).")
@click.option("--max-deaths", type=click.IntRange(min=1), default=3, show_default=True,
              help="Times a job may kill its worker before it is failed as abandoned.")
@click.option("--prefetch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most jobs claimed in one round trip (only short jobs are claimed in bulk).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
@_fail_cleanly
def worker(modules: tuple[str, ...], queues: tuple[str, ...], url: str, burst: bool, name: str | None,
           max_jobs: int | None, paths: tuple[str, ...], lease: float, maintenance_interval: float,
           max_deaths: int, prefetch: int, log_level: str) -> None:
    """Run jobs from Redis, using the tasks defined in MODULES.

    \b
    Example:
      taskit worker myapp.tasks -q high -q default

    Only functions from MODULES (and their submodules) and registered @task functions
    run; a job naming anything else fails with the reason. SIGTERM or Ctrl-C finishes the
    current job and exits; a second one stops at once and puts the job back on its queue.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    connection = _connect(url)
    import_modules(modules, paths)
    from .worker import Worker

    w = Worker(
        worker_queues(queues), connection, name, modules=modules, lease=lease,
        maintenance_interval=maintenance_interval, max_deaths=max_deaths, prefetch=prefetch,
    )
    w.work(burst=burst, max_jobs=max_jobs)


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("-q", "--queue", default="default", show_default=True, help="Queue whose failed jobs to requeue.")
@url_option
@click.option("-a", "--all", "requeue_all", is_flag=True, help="Requeue every failed job of the queue.")
@_fail_cleanly
def requeue(job_ids: tuple[str, ...], queue: str, url: str, requeue_all: bool) -> None:
    """Put failed jobs back on their queue.

    \b
    Examples:
      taskit requeue --queue myqueue -u redis://localhost:6379 foo_job_id bar_job_id
      taskit requeue --queue myqueue --all
    """
    if bool(job_ids) == requeue_all:
        raise click.UsageError("give job ids or --all (not both)")
    registry = FailedJobRegistry(queue, _connect(url))
    if requeue_all:
        done = registry.requeue_all()
        click.echo(f"Requeued {len(done)} failed job(s) on queue {queue!r}.")
        return
    done, problems = [], []
    for job_id in job_ids:
        try:
            registry.requeue(job_id)
            done.append(job_id)
        except TaskitError as exc:
            problems.append(str(exc))
    click.echo(f"Requeued {len(done)} of {len(job_ids)} job(s) on queue {queue!r}.")
    for line in problems:
        click.echo(f"  not requeued: {line}", err=True)
    if problems:
        sys.exit(1)


@main.command()
@url_option
@_fail_cleanly
def info(url: str) -> None:
    """Show queues (waiting, running, scheduled, failed) and live workers."""
    connection = _connect(url)
    queues = Queue.all(connection)
    click.echo(f"{'queue':20} {'queued':>8} {'started':>8} {'scheduled':>10} {'failed':>8} {'finished':>9}")
    for q in queues:
        click.echo(
            f"{q.name:20} {q.count:>8} {q.started_job_registry.count:>8} {q.scheduled_job_registry.count:>10} "
            f"{q.failed_job_registry.count:>8} {q.finished_job_registry.count:>9}"
        )
    from .storage.store import Store

    workers = Store.of(connection).workers()
    click.echo(f"{len(workers)} worker(s)" + (": " + ", ".join(name for name, _ in workers) if workers else ""))
