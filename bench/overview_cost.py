"""What one load of the dashboard's overview and one /metrics scrape cost with many queues.

    python bench/overview_cost.py                   # 2,000 queues
    python bench/overview_cost.py --queues 10000

Starts its own redis-server (free port, no persistence; never another Redis), fills it with
QUEUES queues (one job waiting and one finished on each, and a day of per-minute counters;
--idle: none waiting),
then loads `/` and `/metrics` of the dashboard app in this process, several times each, and
prints for each: Redis commands per load (INFO commandstats of the private server, our
INFO and CONFIG left out), the size of the answer, and the time of the fastest load.
The first load of `/` is shown apart: it fills the dashboard's cache of the past hours of
the day chart (see taskit/overview.py, History).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import taskit
from bench.run import RedisServer
from taskit import Queue, Worker, config
from taskit.storage import keys


@taskit.task
def noop() -> None:
    """What the finished jobs ran."""


def fill(connection: object, queues: int, waiting: bool) -> None:
    """One finished job per queue, one waiting (unless not `waiting`); per-minute counters
    for the last day."""
    names = [f"queue-{i:05d}" for i in range(queues)]
    for name in names:
        Queue(name, connection).enqueue(noop)
    Worker([Queue(name, connection) for name in names], connection, modules=(__name__,)).work(burst=True)
    for name in names if waiting else []:
        Queue(name, connection).enqueue(noop)
    hour = int(time.time() // 3600)
    pipe = connection.pipeline(transaction=False)  # type: ignore[attr-defined]
    for name in names:
        for past in range(hour - 24, hour):
            minute = past * 60 + 7
            pipe.hset(keys.of_queue(name).stats(past), mapping={f"d:{minute}": 3, f"f:{minute + 20}": 1})
            pipe.expireat(keys.of_queue(name).stats(past), (hour + 26) * 3600)
        if len(pipe) > 10_000:
            pipe.execute()
    pipe.execute()


def commands(client: object) -> int:
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


def measure(client: object, http: object, path: str, loads: int) -> list[tuple[int, int, float]]:
    """(commands, bytes, seconds) of each load of `path`."""
    results = []
    for _ in range(loads):
        client.config_resetstat()  # type: ignore[attr-defined]
        started = time.perf_counter()
        answer = http.get(path)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - started
        assert answer.status_code == 200, answer.text[:500]
        results.append((commands(client), len(answer.content), seconds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=2000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--idle", action="store_true", help="no job waiting on any queue")
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        try:
            connection = config.connect(server.url)
            print(f"filling {args.queues} queues...", file=sys.stderr)
            fill(connection, args.queues, waiting=not args.idle)
            http = TestClient(create_app(connection), base_url="http://localhost")
            print(f"{args.queues} queues{' (idle)' if args.idle else '       '}   commands    bytes    fastest")
            for path in ("/", "/metrics"):
                runs = measure(server.client, http, path, args.loads)
                if path == "/":
                    first = runs.pop(0)
                    print(f"{'/ (first load)':22} {first[0]:9,} {first[1]:9,} {first[2]:8.3f}s")
                fastest = min(seconds for _, _, seconds in runs)
                print(f"{path:22} {max(c for c, _, _ in runs):9,} {runs[-1][1]:9,} {fastest:8.3f}s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
