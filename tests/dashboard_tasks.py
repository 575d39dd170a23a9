"""Tasks for the dashboard tests (issue 14); imported by `taskit worker dashboard_tasks`."""

from __future__ import annotations

from taskit import get_current_job, task

FIXED_KEY = "test:dashboard:fixed"


@task
def fails_until_fixed(order: str) -> str:
    """Fails until the test sets FIXED_KEY: a failed job that a requeue can then finish."""
    if not get_current_job().connection.exists(FIXED_KEY):
        raise RuntimeError(f"order {order} cannot ship yet")
    return f"shipped {order}"


@task
def echo(value):
    return value


@task(schedule="*/5 * * * *", queue="dashboard-periodic")
def nightly_cleanup() -> None:
    """A periodic task, for the periodic page; on a queue of its own, so that the other
    tests' in-process workers on 'default' (this module is imported by the test run) do
    not enqueue its ticks."""
