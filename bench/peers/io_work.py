"""The I/O-bound workload: a job that waits 50 ms, as a call to a slow service would.

Every library's I/O task calls one of these two, so they all do the same thing: record
its start (`marks.mark`), wait, record its end (`marks.done`). A thread waits in
`time.sleep` (the GIL is released, as it is in a socket read); a coroutine waits in
`asyncio.sleep` (the event loop runs the others meanwhile).
"""

from __future__ import annotations

import asyncio
import time

from .marks import done, mark

WAIT = 0.05  # seconds each job waits


def blocking_wait() -> None:
    mark()
    time.sleep(WAIT)
    done()


async def async_wait() -> None:
    mark()
    await asyncio.sleep(WAIT)
    done()
