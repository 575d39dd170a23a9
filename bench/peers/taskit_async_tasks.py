"""taskit's `async def` task for the I/O workload's async mode, in a module of its own.

Only the async mode's workers import it: a worker whose modules define an async task runs
its sync jobs on a thread (so that its loop goes on claiming and recording async jobs), and
the no-op workload measures the path of a worker given sync tasks only.
"""

from __future__ import annotations

from taskit import task

from . import io_work

QUEUE = "bench"


@task(queue=QUEUE)
async def wait_io_async() -> None:
    await io_work.async_wait()
