"""Prometheus metrics, read from Redis at scrape time (`pip install '/path/to/taskit[dashboard]'`).

One scrape covers every worker on every host, since everything comes from Redis:

    taskit_queue_jobs{queue,state}                 jobs waiting (state="queued") and in each registry
    taskit_queue_oldest_job_age_seconds{queue}     age of the job at the head of the queue (0: none)
    taskit_jobs_total{queue,task,outcome}          jobs finished, failed or retried, since the start
                                                   (jobs a worker refused to run: task="(refused)")
    taskit_job_duration_seconds{queue,task}        run time histogram (recorded by the workers)
    taskit_workers                                 workers whose lease has not expired
    taskit_unreadable_keys                         keys (or parts) that could not be read at this
                                                   scrape, each named in a warning in the log

Expose them on the dashboard (`/metrics`), with `taskit metrics --port 9808`, or in your
own app: `make_asgi_app(connection)` (an ASGI app) or `generate_latest(connection)` (text).
"""

from __future__ import annotations

import logging
import math
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from . import config
from .connections import Client
from .exceptions import ConfigurationError, RedisUnavailableError, TaskitError
from .overview import live_workers, read_queues
from .queue import Queue
from .storage.store import Store

try:
    import prometheus_client
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError:  # pragma: no cover (the extra is installed in the tests)
    raise ConfigurationError(
        "taskit's metrics need prometheus_client: pip install '/path/to/taskit[dashboard]' from your copy of "
        "taskit (taskit is not on PyPI; a 'taskit' there is another project), or pip install prometheus_client"
    ) from None

log = logging.getLogger("taskit.metrics")

#: stats outcome code (lua/lib/stats.lua) -> the `outcome` label
OUTCOMES = {"d": "finished", "f": "failed", "r": "retried"}


class TaskitCollector(Collector):
    """A prometheus_client collector that reads taskit's state from Redis on each scrape."""

    def __init__(self, connection: Client | None = None) -> None:
        self._connection = connection

    def describe(self) -> list[Metric]:
        return []  # registering must not read Redis

    def collect(self) -> Iterator[Metric]:
        store = Store.of(config.get_connection(self._connection))
        now = time.time()
        names = [q.name for q in Queue.all(store.redis)]
        problems: list[str] = []  # a key that cannot be read leaves its series out, and is logged
        jobs = GaugeMetricFamily("taskit_queue_jobs", "Jobs waiting (queued) and in each registry.", labels=["queue", "state"])
        oldest = GaugeMetricFamily(
            "taskit_queue_oldest_job_age_seconds", "Age of the job at the head of the queue (0 when none waits).",
            labels=["queue"],
        )
        for state in read_queues(store, names, now, problems):
            for kind, count in state.counts.items():
                if count is not None:
                    jobs.add_metric([state.name, kind], count)
            oldest.add_metric([state.name], state.oldest_age(now) or 0.0)
        yield jobs
        yield oldest
        yield from _task_metrics(names, store.task_totals(names, problems))
        workers = GaugeMetricFamily("taskit_workers", "Workers whose lease has not expired.")
        workers.add_metric([], live_workers(store, now, problems)[0])
        yield workers
        problems = list(dict.fromkeys(problems))  # (a key read twice is said once)
        for problem in problems:
            log.warning("scrape: left out: %s", problem)
        unreadable = GaugeMetricFamily(
            "taskit_unreadable_keys", "Keys, or parts of keys, this scrape could not read (each named in the log)."
        )
        unreadable.add_metric([], len(problems))
        yield unreadable


def _task_metrics(queues: list[str], totals: list[dict[str, dict[str, int]]]) -> Iterator[Metric]:
    counts = CounterMetricFamily(
        "taskit_jobs", "Jobs finished, failed or retried (a failed attempt run again), per task.",
        labels=["queue", "task", "outcome"],
    )
    durations = HistogramMetricFamily(
        "taskit_job_duration_seconds", "How long jobs ran, per task.", labels=["queue", "task"]
    )
    # every series gets the same buckets: all the bounds the workers have written
    bounds = sorted({_bound(kind) for tasks in totals for fields in tasks.values() for kind in fields if kind[:1] == "h"})
    for queue, tasks in zip(queues, totals):
        for task, fields in sorted(tasks.items()):
            for code, outcome in OUTCOMES.items():
                if code in fields:
                    counts.add_metric([queue, task, outcome], fields[code])
            runs = {_bound(kind): n for kind, n in fields.items() if kind[:1] == "h"}
            if not runs:
                continue
            cumulative, buckets = 0, []
            for bound in bounds:
                cumulative += runs.get(bound, 0)
                buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
            if not bounds or not math.isinf(bounds[-1]):
                buckets.append(("+Inf", cumulative))
            durations.add_metric([queue, task], buckets, fields.get("us", 0) / 1_000_000)
    yield counts
    yield durations


def _bound(kind: str) -> float:
    """'h0.25' -> 0.25; 'h+Inf' -> inf (an unreadable bound counts as inf)."""
    try:
        return float(kind[1:])
    except ValueError:
        return math.inf


def registry(connection: Client | None = None) -> CollectorRegistry:
    """A registry holding only taskit's collector (not the process metrics of the scraper)."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(TaskitCollector(connection))
    return collectors


def generate_latest(connection: Client | None = None) -> bytes:
    """The metrics in Prometheus text format, read now."""
    return prometheus_client.generate_latest(registry(connection))


def make_asgi_app(connection: Client | None = None) -> Any:
    """An ASGI app serving the metrics: mount it where Prometheus scrapes."""
    return prometheus_client.make_asgi_app(registry(connection))


def make_wsgi_app(connection: Client | None = None) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving the metrics. A scrape that cannot read Redis is answered 503 (500 for
    another taskit error, such as a key of the wrong type) with the reason, logged in one line:
    the server would print a traceback on every scrape while Redis is down."""
    metrics_app = prometheus_client.make_wsgi_app(registry(connection))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            return metrics_app(environ, start_response)
        except TaskitError as exc:
            log.error("%s %s: %s", environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"), exc)
            unavailable = isinstance(exc, RedisUnavailableError)
            start_response("503 Service Unavailable" if unavailable else "500 Internal Server Error",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{exc}\n".encode()]

    return app


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold up the exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request: Prometheus scrapes every few seconds."""


def serve(host: str, port: int, connection: Client | None = None) -> tuple[WSGIServer, threading.Thread]:
    """Serve the metrics over HTTP from a background thread; returns (server, thread).
    Raises OSError when HOST:PORT cannot be listened on."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("MetricsServer", (_Server,), {"address_family": family})
    server: WSGIServer = make_server(host, port, make_wsgi_app(connection), server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="taskit-metrics", daemon=True)
    thread.start()
    return server, thread
