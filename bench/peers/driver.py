"""Measure one library in one phase, in a process of its own; print one JSON line.

    python -m bench.peers.driver --peer taskit --phase enqueue --url redis://127.0.0.1:PORT/0 ...

`bench/run.py` starts this once per (library, phase) against a Redis it has just
flushed, so no state (connections, declared queues, cached scripts on the client side)
carries over between phases. The phases:

* enqueue  -- N jobs one by one, then N more through the library's bulk path (if any).
             Jobs/s, Redis round trips and commands per job, Redis bytes per queued job
             (used_memory delta over the one-by-one jobs, no worker running).
* process  -- M jobs are queued, then P worker processes are started. Jobs/s from the
             first job's start to the moment the last job is finished (every job
             started and the library shows nothing queued or in flight), so process
             start-up is not counted. Round trips and commands per job over that span.
* latency  -- one idle worker; enqueue one job, wait for it to start, wait until the
             worker is idle again, repeat. Latency = task start time - time before the
             enqueue call.
* io       -- the I/O-bound workload (`io_work.py`: each job waits 50 ms), run by one
             of IO_MODES: M jobs are queued, then the mode's workers are started.
             Jobs/s from the first job's start to the last job's end (and the library
             showing nothing queued or in flight). `--peer` names the I/O mode.

How things are counted (see bench/README.md):
* Every task appends its start time to a file (`marks.py`): the driver learns what
  started without sending Redis a single command.
* Round trips = the server's `total_reads_processed` delta: one read event per request
  the server receives (a pipeline is one read while it fits Redis's 16 KB read buffer).
* Commands = `total_commands_processed` delta, which counts commands run inside Lua
  scripts too: the work Redis does per job, not the round trips.
* The driver's own polling goes through a connection class that counts what it sends,
  and is subtracted.

A peer module (`taskit_peer.py`, `rq_peer.py`, ...) provides a class with:
    label, bulk (bool: has a bulk enqueue path), slow (optional: processes only --process-cap jobs)
    connect(url)                   build the producer side
    enqueue_one()                  enqueue one no-op job
    enqueue_bulk(n)                enqueue n no-op jobs through the bulk path
    worker_commands(url, procs)    argv lists that start `procs` worker processes
    idle(client)                   True when nothing is queued or in flight
and, for the I/O workload:
    enqueue_io(n, pool)            enqueue n I/O jobs (the async task where pool is "async")
    io_workers(url, pool, processes, concurrency)
                                   (argv lists that start the workers, the flags to show)
    io_missing(pool)               optional: why this install cannot run that pool, or None
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import redis

from . import marks
from .tools import guarded

ROOT = Path(__file__).resolve().parents[2]

#: mode -> (module, options for its Peer class)
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "taskit": ("bench.peers.taskit_peer", {}),
    "rq": ("bench.peers.rq_peer", {"worker_class": "rq.Worker"}),
    "rq-simple": ("bench.peers.rq_peer", {"worker_class": "rq.SimpleWorker"}),
    "celery": ("bench.peers.celery_peer", {}),
    "dramatiq": ("bench.peers.dramatiq_peer", {}),
    "huey": ("bench.peers.huey_peer", {}),
}

BULK_CHUNK = 1000  # jobs per bulk call, the same for every library that has a bulk path


class IoMode(NamedTuple):
    """One way to run the I/O workload: a library, the kind of worker pool, its size."""

    module: str
    options: dict[str, Any]
    pool: str  # "defaults" (no flags), "processes" (a job at a time each), "threads" or "async"
    processes: int  # worker processes; 0: as many as --processes (default: the cores)
    concurrency: int  # jobs at once in each process


_TASKIT, _CELERY, _DRAMATIQ = "bench.peers.taskit_peer", "bench.peers.celery_peer", "bench.peers.dramatiq_peer"
#: the I/O workload's modes, in the order of its table: taskit's, then each peer's defaults and
#: I/O settings. arq is absent: it pins redis<6, which would downgrade everyone's client.
IO_MODES: dict[str, IoMode] = {
    "taskit": IoMode(_TASKIT, {}, "processes", 0, 1),
    "taskit-threads": IoMode(_TASKIT, {}, "threads", 0, 32),
    "taskit-async": IoMode(_TASKIT, {}, "async", 0, 500),
    "rq": IoMode("bench.peers.rq_peer", {"worker_class": "rq.Worker"}, "processes", 0, 1),
    "celery": IoMode(_CELERY, {}, "defaults", 0, 1),
    "celery-threads": IoMode(_CELERY, {}, "threads", 1, 32),
    "dramatiq": IoMode(_DRAMATIQ, {}, "defaults", 0, 8),
    "dramatiq-threads": IoMode(_DRAMATIQ, {}, "threads", 0, 32),
    "huey-threads": IoMode("bench.peers.huey_peer", {}, "threads", 1, 32),
    "saq-async": IoMode("bench.peers.saq_peer", {}, "async", 0, 500),
}


def io_size(mode: IoMode, processes: int) -> tuple[int, int]:
    """(worker processes, jobs at once in each) of an I/O mode; a library's defaults use the cores."""
    if mode.pool == "defaults":
        return os.cpu_count() or 1, mode.concurrency
    return mode.processes or processes, mode.concurrency


def load_peer(mode: str, phase: str = "") -> Any:
    module, options = IO_MODES[mode][:2] if phase == "io" else MODES[mode]
    return importlib.import_module(module).Peer(**options)


# -- counting our own traffic -------------------------------------------------------------


class CountingConnection(redis.Connection):
    """A connection that counts the round trips and commands it sends (ours, to subtract)."""

    round_trips = 0
    commands = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.commands += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        commands = list(commands)
        CountingConnection.commands += len(commands)
        return super().pack_commands(commands)


def own_client(url: str) -> redis.Redis:
    return redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, connection_class=CountingConnection))


class Snapshot:
    """Server counters at one instant, with our own traffic so far."""

    def __init__(self, client: redis.Redis) -> None:
        info = client.info("stats", "memory", "cpu")
        self.at = time.time()
        self.reads = int(info["total_reads_processed"])
        self.commands = int(info["total_commands_processed"])
        self.memory = int(info["used_memory"])
        self.cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        self.own_trips = CountingConnection.round_trips
        self.own_commands = CountingConnection.commands

    def per_job(self, later: Snapshot, jobs: int) -> dict[str, float]:
        """Round trips, commands, Redis CPU (µs) per job between this snapshot and `later`."""
        jobs = max(jobs, 1)
        trips = later.reads - self.reads - (later.own_trips - self.own_trips)
        commands = later.commands - self.commands - (later.own_commands - self.own_commands)
        return {
            "round_trips": trips / jobs,
            "commands": commands / jobs,
            "redis_cpu_us": (later.cpu - self.cpu) * 1e6 / jobs,
        }


# -- worker processes ---------------------------------------------------------------------


class Workers:
    """Worker processes, each in its own session so its whole tree can be killed at once."""

    def __init__(self, commands: list[list[str]], url: str, marks_path: str, log_dir: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["BENCH_REDIS_URL"] = url
        env["BENCH_MARKS"] = marks_path
        env["PYTHONUNBUFFERED"] = "1"
        self.logs = [log_dir / f"worker-{i}.log" for i in range(len(commands))]
        self.processes: list[subprocess.Popen[bytes]] = []
        for command, log in zip(commands, self.logs):
            with open(log, "wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        guarded(command), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def stop(self) -> None:
        for p in self.processes:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 1.5
        for p in self.processes:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.processes:  # whatever is left, children included
            _signal_group(p, signal.SIGKILL)
            p.wait()

    def log_tail(self, lines: int = 15) -> str:
        text = []
        for log in self.logs:
            content = log.read_text(errors="replace").strip().splitlines()
            if content:
                text.append(f"--- {log.name}\n" + "\n".join(content[-lines:]))
        return "\n".join(text)


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- phases ---------------------------------------------------------------------------------


def phase_enqueue(peer: Any, client: redis.Redis, jobs: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    # bytes per job: the memory added by the last 90 % of the jobs, so one-time allocations
    # (the queue's keys, a script's first load) do not count
    warm = jobs // 10
    memory_at_warm = 0
    before = Snapshot(client)
    started = time.perf_counter()
    for i in range(jobs):
        if i == warm:
            memory_at_warm = int(client.info("memory")["used_memory"])  # our own round trip: subtracted
        peer.enqueue_one()
    seconds = time.perf_counter() - started
    after = Snapshot(client)
    result["one"] = {"jobs_per_s": jobs / seconds, **before.per_job(after, jobs)}
    result["bytes_per_job"] = (after.memory - memory_at_warm) / (jobs - warm)
    if peer.bulk:
        before = Snapshot(client)
        started = time.perf_counter()
        left = jobs
        while left:
            peer.enqueue_bulk(min(BULK_CHUNK, left))
            left -= min(BULK_CHUNK, left)
        seconds = time.perf_counter() - started
        after = Snapshot(client)
        result["bulk"] = {"jobs_per_s": jobs / seconds, **before.per_job(after, jobs)}
    return result


def _fill(peer: Any, jobs: int) -> None:
    if peer.bulk:
        while jobs:
            peer.enqueue_bulk(min(BULK_CHUNK, jobs))
            jobs -= min(BULK_CHUNK, jobs)
    else:
        for _ in range(jobs):
            peer.enqueue_one()


def _wait_for(condition: Any, timeout: float, pause: float, workers: Workers | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (workers is not None and not workers.alive()):
            return False
        time.sleep(pause)
    return True


def phase_process(
    peer: Any, client: redis.Redis, url: str, jobs: int, processes: int, timeout: float, marks_path: str,
    log_dir: Path, cap: int = 0,
) -> dict[str, Any]:
    if cap and getattr(peer, "slow", False):
        jobs = min(jobs, cap)
    _fill(peer, jobs)
    out = _run_workers(peer, client, url, jobs, peer.worker_commands(url, processes), timeout, marks_path, log_dir)
    out["processes"] = processes
    return out


def phase_io(
    peer: Any, mode: IoMode, client: redis.Redis, url: str, jobs: int, processes: int, timeout: float,
    marks_path: str, done_path: str, log_dir: Path,
) -> dict[str, Any]:
    processes, concurrency = io_size(mode, processes)
    commands, flags = peer.io_workers(url, mode.pool, processes, concurrency)
    shown = {"label": f"{peer.dist} {flags}", "processes": processes, "concurrency": concurrency}
    missing = getattr(peer, "io_missing", lambda pool: None)(mode.pool)
    if missing:
        return {"skipped": missing, **shown}
    left = jobs
    while left:
        peer.enqueue_io(min(BULK_CHUNK, left), mode.pool)
        left -= min(BULK_CHUNK, left)
    out = _run_workers(peer, client, url, jobs, commands, timeout, marks_path, log_dir, done_path)
    return {**out, **shown}


def _run_workers(
    peer: Any, client: redis.Redis, url: str, jobs: int, commands: list[list[str]], timeout: float,
    marks_path: str, log_dir: Path, done_path: str = "",
) -> dict[str, Any]:
    """Start the workers on `jobs` queued jobs; the rate from the first start to the last end.

    A job ends at its start (the no-op task) or at its `marks.done` line (`done_path`).
    """
    ended = done_path or marks_path
    workers = Workers(commands, url, marks_path, log_dir)
    try:
        if not _wait_for(lambda: marks.count(marks_path) >= 1, 60, 0.002, workers):
            raise RuntimeError("no job started within 60 s of starting the workers\n" + workers.log_tail())
        first = Snapshot(client)
        early = marks.count(marks_path)
        complete = _wait_for(lambda: marks.count(ended) >= jobs, timeout, 0.005, workers)
        finished_at = None
        if complete and _wait_for(lambda: peer.idle(client), 30, 0.001):
            finished_at = time.time()
        last = Snapshot(client)
        if not workers.alive():
            raise RuntimeError("the workers exited\n" + workers.log_tail())
    finally:
        workers.stop()
    times = sorted(marks.read(marks_path))
    ends = sorted(marks.read(done_path)) if done_path else times
    started = len(times)
    out: dict[str, Any] = {"jobs": jobs, "started": started}
    if done_path:
        out["done"] = len(ends)
    if finished_at is not None:
        out["jobs_per_s"] = len(ends) / (max(finished_at, ends[-1]) - times[0])
    else:  # cut off by the time limit: the rate at which jobs were ending
        out["jobs_per_s"] = (len(ends) - 1) / (ends[-1] - times[0]) if len(ends) > 1 else 0.0
        out["cut_off"] = True
    lo, hi = int(started * 0.05), int(started * 0.95) - 1
    if hi > lo:
        out["steady_jobs_per_s"] = (hi - lo) / (times[hi] - times[lo])
    out.update(first.per_job(last, started - early + 1))
    return out


def phase_latency(
    peer: Any, client: redis.Redis, url: str, samples: int, marks_path: str, log_dir: Path
) -> dict[str, Any]:
    workers = Workers(peer.worker_commands(url, 1), url, marks_path, log_dir)
    waits: list[float] = []
    try:
        for i in range(3 + samples):  # the first 3 warm the worker up
            if not _wait_for(lambda: peer.idle(client), 30, 0.0005, workers):
                raise RuntimeError("the worker did not become idle\n" + workers.log_tail())
            time.sleep(random.uniform(0.004, 0.010))  # let the worker settle into its idle wait
            seen = marks.count(marks_path)
            before = time.time()
            peer.enqueue_one()
            if not _wait_for(lambda n=seen: marks.count(marks_path) > n, 60 if i == 0 else 10, 0.0002, workers):
                raise RuntimeError(f"job {i} did not start\n" + workers.log_tail())
            if i >= 3:
                waits.append(marks.read(marks_path)[seen] - before)
    finally:
        workers.stop()
    waits.sort()

    def pct(p: float) -> float:
        return waits[min(len(waits) - 1, round(p / 100 * (len(waits) - 1)))]

    return {"samples": len(waits), "p50_ms": pct(50) * 1e3, "p99_ms": pct(99) * 1e3, "max_ms": waits[-1] * 1e3}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", required=True, choices=sorted(set(MODES) | set(IO_MODES)),
                        help="a mode; with --phase io, an I/O mode")
    parser.add_argument("--phase", required=True, choices=["enqueue", "process", "latency", "io"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--process-cap", type=int, default=0)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    if args.peer not in (IO_MODES if args.phase == "io" else MODES):
        parser.error(f"{args.peer} is not a mode of the {args.phase} phase")

    # a SIGTERM from bench/run.py unwinds like Ctrl-C, so the workers are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marks_path = str(workdir / "marks")
    done_path = str(workdir / "done")
    Path(marks_path).write_bytes(b"")
    Path(done_path).write_bytes(b"")
    os.environ["BENCH_REDIS_URL"] = args.url
    os.environ["BENCH_MARKS"] = marks_path
    os.environ["BENCH_DONE"] = done_path

    peer = load_peer(args.peer, args.phase)
    peer.connect(args.url)
    client = own_client(args.url)
    if args.phase == "enqueue":
        result = phase_enqueue(peer, client, args.jobs)
    elif args.phase == "process":
        result = phase_process(
            peer, client, args.url, args.jobs, args.processes, args.timeout, marks_path, workdir, args.process_cap
        )
    elif args.phase == "io":
        result = phase_io(peer, IO_MODES[args.peer], client, args.url, args.jobs, args.processes, args.timeout,
                          marks_path, done_path, workdir)
    else:
        result = phase_latency(peer, client, args.url, args.samples, marks_path, workdir)
    result.setdefault("label", peer.label)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
