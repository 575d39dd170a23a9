"""taskit against its peers on one private Redis: one command, one table.

    pip install -e '.[bench]' && python bench/run.py            # about 3 minutes
    python bench/run.py --quick                                  # a smoke run, under a minute
    python bench/run.py --only taskit,rq-simple --jobs 20000

Starts its own redis-server (free port, temporary directory, no persistence), then for
each library and each phase starts `python -m bench.peers.driver` (one process per
library and phase, against a freshly flushed database), and prints the machine and one
Markdown table. What each column means and how it is measured: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
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

from bench.peers.driver import MODES
from bench.peers.tools import guarded

#: modes whose enqueue path is another mode's (same library, other worker): measured once
SAME_ENQUEUE = {"rq-simple": "rq"}
DISTRIBUTIONS = ["taskit", "rq", "celery", "kombu", "dramatiq", "huey", "redis", "hiredis"]


class RedisServer:
    """A redis-server of our own on a free port; never one we did not start."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            guarded([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(directory), "--logfile", str(directory / "redis.log")]),
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
              processes: int = 1) -> dict[str, Any]:
    server.client.flushall()
    command = [
        sys.executable, "-m", "bench.peers.driver", "--peer", mode, "--phase", phase, "--url", server.url,
        "--jobs", str(args.jobs), "--processes", str(processes), "--samples", str(args.samples),
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
    note = f"  {mode:10} {phase:8}{'' if phase != 'process' else f' x{processes}'}"
    if process.returncode != 0 or not out.strip():
        print(f"{note}  FAILED ({time.monotonic() - started:.0f}s)\n{err.strip()[-3000:]}", file=sys.stderr)
        return {"error": (err.strip().splitlines() or ["no output"])[-1]}
    print(f"{note}  done ({time.monotonic() - started:.0f}s)", file=sys.stderr)
    return json.loads(out.strip().splitlines()[-1])


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
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
              for r in rows]
    return "\n".join(lines)


def errors(results: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{mode} {phase}: {part['error']}" for mode, result in results.items()
            for phase, part in result.items() if isinstance(part, dict) and "error" in part]


def report(info: dict[str, Any], results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v != "not installed")
    machine_line = (
        f"Machine: {info['cpu']}, {info['cores']} cores; {info['os']}; Python {info['python']}; "
        f"Redis server {info['redis_server']}; load average {info['load_before']:.2f} before, "
        f"{info['load_after']:.2f} after"
    )
    workload = (
        f"Workload: a no-op task; {args.jobs:,} jobs per run (RQ's forking Worker: {args.fork_jobs:,}); "
        f"latency over {args.samples} jobs; {info['seconds']:.0f} s in all."
    )
    legend = (
        "(N.Nx) = taskit's lead on that column: how many times better taskit is than that library "
        "(more jobs/s; fewer ms, bytes or round trips). Above 1, taskit leads; below 1, it trails."
    )
    lines = [
        machine_line,
        f"Libraries: {versions} (taskit at {info['taskit_commit'] or 'unknown commit'})",
        workload,
        "",
        table(results, args.processes),
        "",
        legend,
    ]
    problems = errors(results)
    if problems:
        lines += ["", "Failures:"] + [f"  {p}" for p in problems]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark taskit against RQ, Celery, Dramatiq and Huey.")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per enqueue and processing run (default 5000)")
    parser.add_argument("--samples", type=int, default=200, help="jobs in the latency run (default 200)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="worker processes for the multi-process run (default: the cores)")
    parser.add_argument("--fork-jobs", type=int, default=300,
                        help="jobs for RQ's forking Worker, which runs tens of jobs/s (default 300)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a processing run may take; past it the rate so far is reported")
    parser.add_argument("--only", help=f"comma-separated modes, from: {', '.join(MODES)}")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 jobs, 30 latency samples")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.samples, args.fork_jobs, args.timeout = 500, 30, 50, 20.0
    modes = list(MODES) if not args.only else [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode {', '.join(unknown)}; choose from {', '.join(MODES)}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind (and clean up) like Ctrl-C
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="taskit-bench-") as tmp:
        server = RedisServer(Path(tmp))
        results: dict[str, dict[str, Any]] = {}
        try:
            info = machine(server)
            print(f"redis-server on port {server.port}; {', '.join(modes)}", file=sys.stderr)
            for mode in modes:
                result: dict[str, Any] = {"jobs": args.jobs}
                workdir = Path(tmp) / mode
                if mode in SAME_ENQUEUE and SAME_ENQUEUE[mode] in results:
                    result["enqueue"] = results[SAME_ENQUEUE[mode]]["enqueue"]
                else:
                    result["enqueue"] = run_phase(server, mode, "enqueue", args, workdir)
                result["process1"] = run_phase(server, mode, "process", args, workdir, 1)
                result["processN"] = run_phase(server, mode, "process", args, workdir, args.processes)
                result["latency"] = run_phase(server, mode, "latency", args, workdir)
                result["label"] = next((result[p]["label"] for p in ("process1", "latency", "processN", "enqueue")
                                        if "label" in result[p]), mode)
                results[mode] = result
        except KeyboardInterrupt:
            print("\ninterrupted; workers and redis-server stopped", file=sys.stderr)
            if not results:
                sys.exit(130)
        except redis.RedisError as exc:
            print(f"\nthe benchmark's redis-server failed ({exc}); stopping", file=sys.stderr)
            if not results:
                sys.exit(1)
        finally:
            server.stop()
    info["load_after"] = os.getloadavg()[0]
    info["seconds"] = time.monotonic() - started
    text = report(info, results, args)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results, "jobs": args.jobs}, indent=2) + "\n")
    if errors(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
