"""Code that runs once in each worker process, when it starts and when it stops.

    from taskit import on_worker_start, on_worker_stop

    @on_worker_start
    async def open_pool():            # async: runs on the event loop the async tasks run on
        global pool
        pool = await asyncpg.create_pool(DSN)

    @on_worker_stop
    async def close_pool():
        await pool.close()

Sync hooks run in the worker's main thread. Under `taskit worker -c N` each of the N
processes runs them (the supervising parent does not), so whatever a hook opens belongs
to the process that uses it. Start hooks run in the order they were registered, before the
first job is claimed; stop hooks in reverse order, after the last job has ended. A start
hook that raises stops the worker (`HookError` names it); a stop hook that raises is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..exceptions import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])

_start: list[Callable[[], Any]] = []
_stop: list[Callable[[], Any]] = []


def _register(hooks: list[Callable[[], Any]], fn: F, what: str) -> F:
    if not callable(fn):
        raise ConfigurationError(f"@{what} decorates a function, not {type(fn).__name__}")
    if fn not in hooks:
        hooks.append(fn)
    return fn


def on_worker_start(fn: F) -> F:
    """Run `fn()` (sync or async) once in each worker process, before it claims a job."""
    return _register(_start, fn, "on_worker_start")


def on_worker_stop(fn: F) -> F:
    """Run `fn()` (sync or async) once in each worker process, after its last job ended."""
    return _register(_stop, fn, "on_worker_stop")


def start_hooks() -> list[Callable[[], Any]]:
    return list(_start)


def stop_hooks() -> list[Callable[[], Any]]:
    return list(reversed(_stop))


def name_of(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
