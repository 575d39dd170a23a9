"""The one thing every benchmark task does: append the time it started to a file.

Kept tiny (imports only os and time) because every worker process imports it. One
fixed-width line per job, appended with O_APPEND (atomic for short writes, so threads
and processes can share the file), so the driver counts started jobs from the file size
without asking Redis anything. The I/O workload's tasks also record when they end
(`done`, in a second file), so its runs end at the last job's end, not at its start.
"""

from __future__ import annotations

import os
import time

LINE = 18  # b"%17.6f\n" for Unix times until the year 2286
_fd = -1
_pid = -1
_done_fd = -1
_done_pid = -1


def mark() -> None:
    """Record that a job starts now (about 2 µs: one write system call)."""
    global _fd, _pid
    if _pid != os.getpid():  # first call in this process, or a forked child (RQ's work horse)
        _fd = _open("BENCH_MARKS")
        _pid = os.getpid()
    os.write(_fd, b"%17.6f\n" % time.time())


def done() -> None:
    """Record that a job ends now (the I/O workload only; the no-op task records no end)."""
    global _done_fd, _done_pid
    if _done_pid != os.getpid():
        _done_fd = _open("BENCH_DONE")
        _done_pid = os.getpid()
    os.write(_done_fd, b"%17.6f\n" % time.time())


def _open(variable: str) -> int:
    return os.open(os.environ[variable], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def read(path: str) -> list[float]:
    with open(path, "rb") as f:
        data = f.read()
    return [float(data[i : i + LINE]) for i in range(0, len(data) - len(data) % LINE, LINE)]


def count(path: str) -> int:
    try:
        return os.stat(path).st_size // LINE
    except FileNotFoundError:
        return 0
