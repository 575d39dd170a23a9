"""taskit on one Redis and on a local 3-master Redis Cluster: the same no-op workload.

    python bench/cluster.py                       # 20,000 jobs, 2 worker processes, about a minute
    python bench/cluster.py --jobs 50000 --processes 4

Starts its own redis-servers from the `redis-server` binary (free ports, temporary
directories, no persistence): one plain server, then 3 masters joined with
`redis-cli --cluster create` (no replicas). On each, the no-op task of bench/peers/taskit_peer.py
is enqueued (batches of --batch jobs, one round trip each), then --processes
`taskit worker --burst` processes run every job. The jobs go to a 3-partition queue if this
taskit has `taskit.declare_queue` (issue 12), else to 3 queues whose tags sit on the 3
masters, given to every worker in turn; the output says which.

Printed per target: enqueue and processing jobs/s, and per master the share of the jobs it
held (counted on the node itself, before the workers start) and the Redis CPU it spent
(used_cpu_sys + used_cpu_user, INFO cpu, from before the enqueue to the end) per job of the
whole run and per job it held. A separate script, not a mode of run.py: run.py drives one
server and its peers through bench.peers.driver, which is single-node throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import taskit
from bench.peers.tools import guarded
from bench.run import RedisServer

TASKS = "bench.peers.taskit_peer"
QUEUE = "bench"  # the no-op task's own queue (taskit_peer.QUEUE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} is not installed (apt-get install redis-server)")
    return found


class Server(RedisServer):
    """bench/run.py's redis-server (a free port, no persistence), with `extra` options."""

    def __init__(self, directory: Path, *extra: str) -> None:
        directory.mkdir(parents=True)
        super().__init__(directory, *extra)

    def cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def start_cluster(directory: Path, masters: int = 3) -> list[Server]:
    nodes = [Server(directory / f"node-{i}", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(free_port())) for i in range(masters)]
    create = subprocess.run([binary("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                             "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60,
                            check=False)
    if create.returncode != 0:
        sys.exit(f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}")
    deadline = time.monotonic() + 60
    while not all(n.client.cluster("info").get("cluster_state") == "ok" for n in nodes):
        if time.monotonic() > deadline:
            sys.exit("the cluster did not become ok")
        time.sleep(0.1)
    return nodes


def queues_on(nodes: list[Server], client: Any) -> tuple[list[str], str]:
    """The queues of the workload and how they were chosen."""
    if hasattr(taskit, "declare_queue"):
        taskit.declare_queue(QUEUE, len(nodes), connection=client)
        return [QUEUE], f"one queue {QUEUE!r} of {len(nodes)} partitions (taskit.declare_queue)"
    from taskit.storage import keys

    if len(nodes) == 1:
        names = [f"{QUEUE}{i}" for i in range(3)]
    else:  # the first names whose tag is on each master
        ports, names = set(), []
        for i in range(1000):
            port = client.get_node_from_key(keys.of_queue(f"{QUEUE}{i}").queue).port
            if port not in ports:
                ports.add(port)
                names.append(f"{QUEUE}{i}")
            if len(names) == len(nodes):
                break
    where = "one tag on each master" if len(nodes) > 1 else "on the one server"
    return names, f"3 queues {', '.join(names)} (no taskit.declare_queue in this tree), {where}"


def waiting_on(node: Server) -> int:
    """The jobs waiting in the queues this node holds (counted on the node itself)."""
    return sum(node.client.llen(key) for key in node.client.scan_iter(match="*:queue:*", count=1000)
               if node.client.type(key) == b"list")


def run(name: str, url: str, nodes: list[Server], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.peers.taskit_peer import noop

    client = taskit.config.connect(url)
    taskit.configure(connection=client)
    queues, how = queues_on(nodes, client)
    cpu_before = [n.cpu() for n in nodes]
    started = time.perf_counter()
    for done in range(0, args.jobs, args.batch):
        noop.map([()] * min(args.batch, args.jobs - done), queue=queues[(done // args.batch) % len(queues)])
    enqueue_s = time.perf_counter() - started
    held = [waiting_on(n) for n in nodes]
    assert sum(held) == args.jobs, (held, args.jobs)
    env = dict(os.environ, BENCH_MARKS=str(workdir / f"{name}.marks"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    command = [sys.executable, "-m", "taskit", "worker", TASKS, *(a for q in queues for a in ("-q", q)),
               "-u", url, "--burst", "--log-level", "warning"]
    started = time.perf_counter()
    workers = [subprocess.Popen(guarded(command), cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
               for _ in range(args.processes)]
    errors = [w.communicate(timeout=args.timeout)[1] for w in workers]
    failed = [err for w, err in zip(workers, errors) if w.returncode != 0]
    process_s = time.perf_counter() - started
    if failed:
        sys.exit(f"a worker failed on {name}:\n{failed[0][-3000:]}")
    ran = (workdir / f"{name}.marks").stat().st_size // 18
    assert ran == args.jobs, (ran, args.jobs)
    cpu = [n.cpu() - before for n, before in zip(nodes, cpu_before)]
    # a cluster client that cannot tell a command's keys asks the node: one round trip each
    getkeys = sum(int(n.client.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0)) for n in nodes)
    taskit.configure()
    client.close()
    return {
        "target": name, "queues": how, "jobs": args.jobs, "processes": args.processes,
        "enqueue_jobs_per_s": args.jobs / enqueue_s, "process_jobs_per_s": args.jobs / process_s,
        "masters": [{"port": n.port, "share": h / args.jobs, "cpu_us_per_job": c / args.jobs * 1e6,
                     "cpu_us_per_job_held": c / h * 1e6 if h else None} for n, h, c in zip(nodes, held, cpu)],
        "cpu_us_per_job_all_masters": sum(cpu) / args.jobs * 1e6, "command_getkeys_calls": getkeys,
    }


def report(result: dict[str, Any]) -> str:
    lines = [(f"## {result['target']}: {result['jobs']:,} no-op jobs, {result['processes']} worker processes; "
              f"{result['queues']}"),
             (f"enqueue {result['enqueue_jobs_per_s']:,.0f} jobs/s, processing {result['process_jobs_per_s']:,.0f} "
              f"jobs/s (workers' start included); Redis CPU {result['cpu_us_per_job_all_masters']:.1f} µs per job, "
              f"all masters; {result['command_getkeys_calls']:,} COMMAND GETKEYS calls"),
             "| master | share of jobs | Redis CPU µs per job (all jobs) | µs per job it held |",
             "|---|---:|---:|---:|"]
    for m in result["masters"]:
        held = f"{m['cpu_us_per_job_held']:.1f}" if m["cpu_us_per_job_held"] is not None else "-"
        lines.append(f"| :{m['port']} | {m['share']:.1%} | {m['cpu_us_per_job']:.1f} | {held} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="taskit's no-op workload on one Redis and on a 3-master cluster.")
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per target (default 20000)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--batch", type=int, default=500, help="jobs per enqueue round trip (default 500)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the workers may take")
    parser.add_argument("--only", choices=("single", "cluster"), help="one target only")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="taskit-bench-cluster-") as tmp:
        workdir = Path(tmp)
        if args.only != "cluster":
            server = Server(workdir / "single")
            try:
                results.append(run("single", f"redis://127.0.0.1:{server.port}/0", [server], args, workdir))
            finally:
                server.stop()
            print(report(results[-1]), flush=True)
        if args.only != "single":
            nodes = start_cluster(workdir / "cluster")
            try:
                url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
                results.append(run("cluster", url, nodes, args, workdir))
            finally:
                for node in nodes:
                    node.stop()
            print(report(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
