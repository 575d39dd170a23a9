"""Worker hooks, sync and async, that note in Redis when each worker process runs them.

Imported only by `taskit worker ... hook_tasks` subprocesses (hooks apply to every worker of
the process that imports them)."""

from __future__ import annotations

import asyncio
import os

from taskit import config, on_worker_start, on_worker_stop, task

KEY = "test:hooks"
#: set by the async start hook, on the worker's event loop; used by `loop_is_the_hooks`
_loop: list[asyncio.AbstractEventLoop] = []


def _note(what: str) -> None:
    config.get_connection().rpush(KEY, f"{what}:{os.getpid()}")


@on_worker_start
def sync_start() -> None:
    _note("start-sync")


@on_worker_start
async def async_start() -> None:
    _loop.append(asyncio.get_running_loop())
    _note("start-async")


@on_worker_stop
def sync_stop() -> None:
    _note("stop-sync")


@on_worker_stop
async def async_stop() -> None:
    await asyncio.sleep(0)
    _note("stop-async")


@task
async def loop_is_the_hooks() -> bool:
    """An async task runs on the loop the async start hook ran on (so a pool made there works)."""
    return bool(_loop) and _loop[0] is asyncio.get_running_loop()
