"""Async tasks, and worker hooks that open and close a per-process resource.

    taskit worker examples.async_tasks -q examples --async-tasks 200     (see examples/async_demo.py)

A real app would open an HTTP client or a database pool in the start hook
(`httpx.AsyncClient()`, `await asyncpg.create_pool(dsn)`); this one makes a small stand-in
with the standard library, so that the example runs anywhere.
"""

from __future__ import annotations

import asyncio
import os
import time

from taskit import get_current_job, on_worker_start, on_worker_stop, task


class FakeClient:
    """Stands in for an async HTTP client: at most `limit` requests at once, each `latency` s."""

    def __init__(self, limit: int, latency: float) -> None:
        self.slots = asyncio.Semaphore(limit)
        self.latency = latency
        self.requests = 0

    async def get(self, url: str) -> str:
        async with self.slots:
            await asyncio.sleep(self.latency)
            self.requests += 1
            return f"<title>{url}</title>"


#: one client per worker process, made by the start hook on that process's event loop
clients: dict[str, FakeClient] = {}


@on_worker_start
async def open_client() -> None:
    clients["http"] = FakeClient(limit=500, latency=0.5)
    print(f"worker process {os.getpid()}: client opened", flush=True)


@on_worker_stop
async def close_client() -> None:
    client = clients.pop("http")
    print(f"worker process {os.getpid()}: client closed after {client.requests} requests", flush=True)


@task(queue="examples", timeout=10)
async def fetch_title(url: str) -> str:
    """Waits half a second on the network: hundreds of them run at once on one event loop."""
    job = get_current_job()  # each coroutine sees its own job
    page = await clients["http"].get(url)
    if job is not None:
        job.meta["bytes"] = len(page)
        job.save_meta()
    return page.removeprefix("<title>").removesuffix("</title>")


@task(queue="examples", timeout=60)
async def slow_report(seconds: float) -> str:
    """Long enough to be canceled while it runs (the demo does)."""
    await asyncio.sleep(seconds)
    return "report ready"


@task(queue="examples")
def checksum(text: str) -> int:
    """A sync task in the same module: it runs on a thread of its own, beside the loop."""
    time.sleep(0.1)
    return sum(text.encode())
