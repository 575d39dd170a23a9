"""What an enqueue's wait for a replica (`replicas=1`, Redis WAIT) costs on one machine.

    python bench/replica_wait.py               # 5,000 enqueues each way
    python bench/replica_wait.py --jobs 20000

Starts its own master and replica (two redis-servers on free ports, no persistence; never
another Redis), then enqueues JOBS jobs one call at a time without a wait and with
`replicas=1`, and JOBS jobs in `map()` batches of 1,000, and prints each way's jobs/s and
the median and 99th percentile of one call's time. Both servers share this machine's cores
with the producer: on a LAN, add the network's round trip to the replica.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import taskit
from bench.run import RedisServer
from taskit import Queue, config


@taskit.task
def noop() -> None:
    """What the jobs would run (no worker runs here)."""


def one_by_one(queue: Queue, jobs: int, replicas: int) -> list[float]:
    times = []
    for _ in range(jobs):
        started = time.perf_counter()
        noop.apply_async(connection=queue.connection, queue=queue.name, replicas=replicas)
        times.append(time.perf_counter() - started)
    return times


def batches(queue: Queue, jobs: int, replicas: int, size: int = 1000) -> list[float]:
    times = []
    for _ in range(max(1, jobs // size)):
        started = time.perf_counter()
        noop.map([()] * size, connection=queue.connection, queue=queue.name, replicas=replicas)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as master_dir, tempfile.TemporaryDirectory() as replica_dir:
        master, replica = RedisServer(Path(master_dir)), RedisServer(Path(replica_dir))
        try:
            replica.client.execute_command("REPLICAOF", "127.0.0.1", str(master.port))
            while replica.client.info("replication").get("master_link_status") != "up":
                time.sleep(0.05)
            client = config.connect(master.url)
            queue = Queue("bench", client)
            print(f"master on port {master.port}, replica on port {replica.port}; {options.jobs:,} jobs each way")
            print(f"{'way':<26} {'jobs/s':>9} {'median call':>12} {'p99 call':>10}")
            for label, measure, per_call in [("1 by 1, no wait", one_by_one, 1), ("1 by 1, replicas=1", one_by_one, 1),
                                             ("map(1000), no wait", batches, 1000),
                                             ("map(1000), replicas=1", batches, 1000)]:
                replicas = 1 if "replicas" in label else 0
                measure(queue, min(options.jobs, 2000), replicas)  # warm up: scripts, connections
                client.flushdb()
                times = measure(queue, options.jobs, replicas)
                ordered = sorted(times)
                p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                rate = len(times) * per_call / sum(times)
                print(f"{label:<26} {rate:>9,.0f} {statistics.median(times) * 1e3:>10.3f}ms {p99 * 1e3:>8.3f}ms")
                client.flushdb()
        finally:
            replica.stop()
            master.stop()


if __name__ == "__main__":
    main()
