"""taskit against its peers on one private Redis: one command, two tables.

    pip install -e '.[bench]' && python bench/run.py            # about 11 minutes
    python bench/run.py --quick                                  # a smoke run, under 2 minutes
    python bench/run.py --only taskit,rq-simple --jobs 20000
    python bench/run.py --only-io                                # the I/O workload alone

Starts its own redis-server (free port, temporary directory, no persistence), then for
each library and each phase starts `python -m bench.peers.driver` (one process per
library and phase, against a freshly flushed database), and prints the machine and two
Markdown tables: the no-op workload (each phase run --repeats times, in rounds over the
libraries, each figure the median), then the I/O-bound one (jobs that wait 50 ms, each
mode run --io-repeats times, the median shown). What each column means and how it is
measured: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis

from bench.peers.driver import IO_MODES, MODES, io_size
from bench.peers.io_work import WAIT
from bench.peers.tools import guarded

#: modes whose enqueue path is another mode's (same library, other worker): measured once
SAME_ENQUEUE = {"rq-simple": "rq"}
DISTRIBUTIONS = ["taskit", "rq", "celery", "kombu", "dramatiq", "huey", "saq", "redis", "hiredis"]


class RedisServer:
    """A redis-server of our own on a free port; never one we did not start."""

    def __init__(self, directory: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            guarded([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(directory), "--logfile", str(directory / "redis.log"), *extra]),
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal is ours to handle: Redis stays up until we stop it
        )
        self.client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(200):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.025)
        self.stop()
        sys.exit(f"redis-server did not start on port {self.port}; see {directory / 'redis.log'}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def machine(server: RedisServer) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "redis_server": server.client.info("server")["redis_version"],
        "versions": versions,
        "taskit_commit": commit,
        "load_before": os.getloadavg()[0],
    }


def run_phase(server: RedisServer, mode: str, phase: str, args: argparse.Namespace, workdir: Path,
              processes: int = 1, jobs: int = 0, note: str = "") -> dict[str, Any]:
    server.client.flushall()
    command = [
        sys.executable, "-m", "bench.peers.driver", "--peer", mode, "--phase", phase, "--url", server.url,
        "--jobs", str(jobs or args.jobs), "--processes", str(processes), "--samples", str(args.samples),
        "--timeout", str(args.timeout), "--process-cap", str(args.fork_jobs), "--workdir", str(workdir),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    started = time.monotonic()
    process = subprocess.Popen(guarded(command), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        out, err = process.communicate(timeout=args.timeout + 180)
    except BaseException:  # Ctrl-C or a hung phase: let the driver stop its workers, then make sure
        process.terminate()
        try:
            process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        raise
    note = f"  {mode:16} {phase:8}{'' if phase != 'process' else f' x{processes}'}{note}"
    if process.returncode != 0 or not out.strip():
        print(f"{note}  FAILED ({time.monotonic() - started:.0f}s)\n{err.strip()[-3000:]}", file=sys.stderr)
        return {"error": (err.strip().splitlines() or ["no output"])[-1]}
    result = json.loads(out.strip().splitlines()[-1])
    outcome = f"skipped: {result['skipped']}" if "skipped" in result else f"done ({time.monotonic() - started:.0f}s)"
    print(f"{note}  {outcome}", file=sys.stderr)
    return result


PHASES = ("enqueue", "process1", "processN", "latency")


def run_noop(server: RedisServer, modes: list[str], args: argparse.Namespace, tmp: Path,
             results: dict[str, dict[str, Any]]) -> None:
    """Every phase of each mode --repeats times into `results`, in rounds (every mode once,
    then again), so that a noisy minute on the machine is spread over the modes; each figure
    shown is the median of its runs (`median_run`). The runs are kept under "runs"."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for repeat in range(1, args.repeats + 1):
        note = f" run {repeat}/{args.repeats}" if args.repeats > 1 else ""
        for mode in modes:
            run: dict[str, Any] = {}
            workdir = tmp / mode
            if mode in SAME_ENQUEUE and SAME_ENQUEUE[mode] in runs:
                run["enqueue"] = runs[SAME_ENQUEUE[mode]][-1]["enqueue"]
            else:
                run["enqueue"] = run_phase(server, mode, "enqueue", args, workdir, note=note)
            run["process1"] = run_phase(server, mode, "process", args, workdir, 1, note=note)
            run["processN"] = run_phase(server, mode, "process", args, workdir, args.processes, note=note)
            run["latency"] = run_phase(server, mode, "latency", args, workdir, note=note)
            runs[mode].append(run)
            result: dict[str, Any] = {"jobs": args.jobs, **{phase: median_run([r[phase] for r in runs[mode]])
                                                             for phase in PHASES}}
            result["label"] = next((result[p]["label"] for p in ("process1", "latency", "processN", "enqueue")
                                    if "label" in result[p]), mode)
            result["runs"] = runs[mode]
            results[mode] = result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's runs as one: each number the median of the runs that have it, nested
    results alike; a failed run (its "error") makes the phase failed, as one run would."""
    failed = next((run for run in runs if "error" in run), None)
    if failed is not None:
        return failed
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for run in runs for k in run):
        values = [run[key] for run in runs if key in run]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            merged[key] = statistics.median(values)
        elif all(isinstance(v, dict) for v in values):
            merged[key] = median_run(values)
        else:
            merged[key] = values[-1]
    return merged


def run_io(server: RedisServer, modes: list[str], args: argparse.Namespace, tmp: Path,
           results: dict[str, dict[str, Any]]) -> None:
    """Each I/O mode --io-repeats times into `results`, in rounds (every mode once, then again)
    so that a noisy minute on the machine is spread over the modes; the median run counts."""
    for repeat in range(1, args.io_repeats + 1):
        for mode in modes:
            entry = results.setdefault(mode, {"runs": []})
            if "skipped" in entry or "error" in entry:
                continue
            processes, concurrency = io_size(IO_MODES[mode], args.processes)
            jobs = min(args.io_jobs, args.io_rounds * processes * concurrency)
            run = run_phase(server, mode, "io", args, tmp / f"io-{mode}", args.processes, jobs,
                            note=f" run {repeat}/{args.io_repeats}, {jobs:,} jobs")
            entry.update({k: run[k] for k in ("label", "processes", "concurrency", "skipped", "error") if k in run})
            entry["jobs"] = jobs
            if "jobs_per_s" in run:
                entry["runs"].append(run)
                entry["jobs_per_s"] = statistics.median(r["jobs_per_s"] for r in entry["runs"])


# -- the table -----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _small(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _lead(text: str, mine: float | None, theirs: float | None, higher_is_better: bool, is_taskit: bool) -> str:
    """Append taskit's lead: how many times better taskit is than this row (>1: taskit leads)."""
    if is_taskit or mine is None or theirs is None or text == "—" or not mine or not theirs:
        return text
    ratio = mine / theirs if higher_is_better else theirs / mine
    shown = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.1f}" if ratio >= 0.1 else f"{ratio:.2f}"
    return f"{text} ({shown}x)"


def _get(result: dict[str, Any], *path: str) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) else None


COLUMNS: list[tuple[str, tuple[str, ...], Any, bool | None]] = [
    # header, path into the mode's results, formatter, higher is better (None: no ratio)
    ("enqueue/s 1-by-1", ("enqueue", "one", "jobs_per_s"), _num, True),
    ("enqueue/s bulk", ("enqueue", "bulk", "jobs_per_s"), _num, True),
    ("process/s 1 proc", ("process1", "jobs_per_s"), _num, True),
    ("process/s {P} procs", ("processN", "jobs_per_s"), _num, True),
    ("latency p50 ms", ("latency", "p50_ms"), _ms, False),
    ("latency p99 ms", ("latency", "p99_ms"), _ms, False),
    ("Redis bytes/job", ("enqueue", "bytes_per_job"), _num, False),
    ("round trips/job enqueue", ("enqueue", "one", "round_trips"), _small, False),
    ("round trips/job process", ("process1", "round_trips"), _small, False),
    ("commands/job enqueue", ("enqueue", "one", "commands"), _small, None),
    ("commands/job process", ("process1", "commands"), _small, None),
    ("Redis CPU µs/job process", ("process1", "redis_cpu_us"), _num, None),
]


def table(results: dict[str, dict[str, Any]], processes: int) -> str:
    headers = ["library"] + [c[0].format(P=processes) for c in COLUMNS]
    base = results.get("taskit", {})
    rows = []
    for mode, result in results.items():
        label = result.get("label", mode)
        if _get(result, "process1", "jobs") is not None and result["process1"].get("jobs", 0) < result.get("jobs", 0):
            label += f" ({result['process1']['jobs']:,} jobs)"
        row = [label]
        for _, path, fmt, higher in COLUMNS:
            value = _get(result, *path)
            text = fmt(value)
            if path[0].startswith("process") and result.get(path[0], {}).get("cut_off"):
                text += " (cut off)"
            if higher is not None:
                text = _lead(text, _get(base, *path), value, higher, mode == "taskit")
            row.append(text)
        rows.append(row)
    return markdown(headers, rows)


def markdown(headers: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """A Markdown table, padded to line up in a terminal; the first `text_columns` left-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" if i >= text_columns else "-" * (w + 2)
                            for i, w in enumerate(widths)) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths))) + " |"
              for r in rows]
    return "\n".join(lines)


def _ratio(value: float) -> str:
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x" if value >= 0.1 else f"{value:.2f}x"


def _best(io: dict[str, dict[str, Any]], pool: str | None = None) -> str | None:
    """The peer mode (not taskit's) with the most jobs/s; with `pool`, among that pool's modes."""
    peers = [m for m, r in io.items() if not m.startswith("taskit") and "jobs_per_s" in r
             and (pool is None or IO_MODES[m].pool == pool)]
    return max(peers, key=lambda m: io[m]["jobs_per_s"], default=None)


def io_table(io: dict[str, dict[str, Any]]) -> str:
    headers = ["I/O mode", "processes x concurrency", "ceiling", "jobs", "jobs/s", "runs min–max", "vs best peer"]
    best = _best(io)
    rows = []
    for mode, result in io.items():
        size = ceiling = "—"
        if "processes" in result:
            size = f"{result['processes']} x {result['concurrency']}"
            ceiling = _num(result["processes"] * result["concurrency"] / WAIT)
        rate = ratio = spread = "—"
        if "jobs_per_s" in result:
            rate = _num(result["jobs_per_s"])
            if any(r.get("cut_off") for r in result["runs"]):
                rate += " (cut off)"
            rates = [r["jobs_per_s"] for r in result["runs"]]
            spread = f"{_num(min(rates))}–{_num(max(rates))}" if len(rates) > 1 else "—"
            if best is not None and io[best]["jobs_per_s"]:
                ratio = _ratio(result["jobs_per_s"] / io[best]["jobs_per_s"])
        elif "skipped" in result:
            rate = "skipped"
        elif "error" in result:
            rate = "failed"
        jobs = _num(result.get("jobs")) if result["runs"] else "—"
        rows.append([result.get("label", mode), size, ceiling, jobs, rate, spread, ratio])
    return markdown(headers, rows, text_columns=2)


def io_notes(io: dict[str, dict[str, Any]]) -> list[str]:
    notes = []
    for name, pool in (("Best peer mode", None), ("Best thread-based peer (32 threads)", "threads")):
        best = _best(io, pool)
        if best is not None:
            notes.append(f"{name}: {io[best]['label']}, {_num(io[best]['jobs_per_s'])} jobs/s.")
    notes += [f"{result.get('label', mode)}: skipped: {result['skipped']}." for mode, result in io.items()
              if "skipped" in result]
    return notes


def errors(results: dict[str, dict[str, Any]], io: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{mode} {phase}: {part['error']}" for mode, result in results.items()
            for phase, part in result.items() if isinstance(part, dict) and "error" in part] + [
        f"{mode} io: {result['error']}" for mode, result in io.items() if "error" in result]


def io_report(info: dict[str, Any], io: dict[str, dict[str, Any]], args: argparse.Namespace,
              alone: bool) -> list[str]:
    runs = f"the median of {args.io_repeats} runs" if args.io_repeats > 1 else "one run"
    workload = (
        f"I/O workload: each job waits {WAIT * 1000:.0f} ms (time.sleep; asyncio.sleep in the async modes); "
        f"{args.io_jobs:,} jobs per run, or {args.io_rounds} rounds of a mode's processes x concurrency where that "
        f"is fewer (RQ, and every mode that runs few jobs at once); jobs/s from the first job's start to the last "
        f"job's end, {runs}; {info['io_seconds']:.0f} s{' in all' if alone else ''}."
    )
    legend = (
        f"ceiling = processes x concurrency / {WAIT * 1000:.0f} ms, the most jobs/s that many jobs at once can run; "
        "vs best peer = jobs/s divided by the best peer mode's (not taskit's) in this run."
    )
    return [workload, "", io_table(io), "", legend, *io_notes(io)]


def report(info: dict[str, Any], results: dict[str, dict[str, Any]], io: dict[str, dict[str, Any]],
           args: argparse.Namespace) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v != "not installed")
    machine_line = (
        f"Machine: {info['cpu']}, {info['cores']} cores; {info['os']}; Python {info['python']}; "
        f"Redis server {info['redis_server']}; load average {info['load_before']:.2f} before, "
        f"{info['load_after']:.2f} after"
    )
    workload = (
        f"Workload: a no-op task; {args.jobs:,} jobs per run (RQ's forking Worker: {args.fork_jobs:,}); "
        f"latency over {args.samples} jobs; "
        f"{f'each figure the median of {args.repeats} runs' if args.repeats > 1 else 'one run'}; "
        f"{info['seconds']:.0f} s in all."
    )
    legend = (
        "(N.Nx) = taskit's lead on that column: how many times better taskit is than that library "
        "(more jobs/s; fewer ms, bytes or round trips). Above 1, taskit leads; below 1, it trails."
    )
    lines = [
        machine_line,
        f"Libraries: {versions} (taskit at {info['taskit_commit'] or 'unknown commit'})",
    ]
    if results:
        lines += [workload, "", table(results, args.processes), "", legend]
    if io:
        lines += ([""] if results else []) + io_report(info, io, args, alone=not results)
    problems = errors(results, io)
    if problems:
        lines += ["", "Failures:"] + [f"  {p}" for p in problems]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark taskit against RQ, Celery, Dramatiq, Huey and (I/O workload) SAQ.")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per enqueue and processing run (default 5000)")
    parser.add_argument("--samples", type=int, default=200, help="jobs in the latency run (default 200)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="worker processes for the multi-process run and the I/O modes (default: the cores)")
    parser.add_argument("--fork-jobs", type=int, default=300,
                        help="jobs for RQ's forking Worker, which runs tens of jobs/s (default 300)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a processing run may take; past it the rate so far is reported")
    parser.add_argument("--only", help=f"comma-separated modes, from: {', '.join(MODES)}; and I/O modes, from: "
                        f"{', '.join(IO_MODES)} (a library's name selects all its I/O modes)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each no-op phase, in rounds over the modes; each figure is the median (default 3)")
    parser.add_argument("--io-jobs", type=int, default=10000, help="jobs per run of the I/O workload (default 10000)")
    parser.add_argument("--io-rounds", type=int, default=200,
                        help="at most this many rounds of a mode's processes x concurrency per I/O run "
                             "(default 200: a mode that runs 2 jobs at once gets 400 jobs, at least 10 s)")
    parser.add_argument("--io-repeats", type=int, default=3, help="runs of each I/O mode; the median is shown")
    workloads = parser.add_mutually_exclusive_group()
    workloads.add_argument("--only-io", action="store_true", help="run the I/O workload alone")
    workloads.add_argument("--skip-io", action="store_true", help="run the no-op workload alone")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 500 jobs, 30 latency samples; I/O: 1,000 jobs, 40 rounds, one run")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.samples, args.fork_jobs, args.timeout, args.repeats = 500, 30, 50, 20.0, 1
        args.io_jobs, args.io_rounds, args.io_repeats = 1000, 40, 1
    modes, io_modes = list(MODES), list(IO_MODES)
    if args.only:
        names = {m.strip() for m in args.only.split(",") if m.strip()}
        modes = [m for m in MODES if m in names]
        io_modes = [m for m in IO_MODES if m in names or m.split("-")[0] in names]
        unknown = names - set(modes) - set(io_modes) - {m.split("-")[0] for m in io_modes}
        if unknown:
            parser.error(f"unknown mode {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}, "
                         f"or the I/O modes {', '.join(IO_MODES)}")
    if args.only_io:
        modes = []
    if args.skip_io:
        io_modes = []
    if not modes and not io_modes:
        parser.error("nothing to run: --only names no mode of the selected workload")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind (and clean up) like Ctrl-C
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="taskit-bench-") as tmp:
        server = RedisServer(Path(tmp))
        results: dict[str, dict[str, Any]] = {}
        io: dict[str, dict[str, Any]] = {}
        try:
            info = machine(server)
            print(f"redis-server on port {server.port}; {', '.join(modes + [f'io:{m}' for m in io_modes])}",
                  file=sys.stderr)
            run_noop(server, modes, args, Path(tmp), results)
            io_started = time.monotonic()
            try:
                run_io(server, io_modes, args, Path(tmp), io)
            finally:
                info["io_seconds"] = time.monotonic() - io_started
        except KeyboardInterrupt:
            print("\ninterrupted; workers and redis-server stopped", file=sys.stderr)
            if not results and not io:
                sys.exit(130)
        except redis.RedisError as exc:
            print(f"\nthe benchmark's redis-server failed ({exc}); stopping", file=sys.stderr)
            if not results and not io:
                sys.exit(1)
        finally:
            server.stop()
    info["load_after"] = os.getloadavg()[0]
    info["seconds"] = time.monotonic() - started
    text = report(info, results, io, args)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results, "jobs": args.jobs, "io": io},
                                        indent=2) + "\n")
    if errors(results, io):
        sys.exit(1)


if __name__ == "__main__":
    main()
