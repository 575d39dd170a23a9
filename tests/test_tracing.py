"""OpenTelemetry traces (issue 14): a producer span at enqueue, a consumer span around the
run, one trace, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
import sample_tasks
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from records import stored

from taskit import Queue, Worker, task, tracing
from taskit.storage import keys

provider = TracerProvider()
exporter = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(exporter))


@task
def traced_child_span() -> str:
    with provider.get_tracer("tests").start_as_current_span("inside the task"):
        return "done"


@task
async def traced_coroutine() -> str:
    await asyncio.sleep(0)
    with provider.get_tracer("tests").start_as_current_span("inside the coroutine"):
        await asyncio.sleep(0)
        return "awaited"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    tracing.instrument(provider)
    yield exporter
    tracing.uninstrument()


def by_name(found, name):
    return [s for s in found.get_finished_spans() if s.name == name]


def test_enqueue_and_run_are_one_trace(connection: redis.Redis, queue: Queue, spans) -> None:
    with provider.get_tracer("tests").start_as_current_span("web request") as request:
        job = traced_child_span.delay()
    Worker([queue], modules=("test_tracing",)).work(burst=True)
    assert job.return_value(refresh=True) == "done"

    (send,) = by_name(spans, "send default")
    (process,) = by_name(spans, "process default")
    (inner,) = by_name(spans, "inside the task")
    assert send.kind == trace.SpanKind.PRODUCER and process.kind == trace.SpanKind.CONSUMER
    trace_id = request.get_span_context().trace_id
    assert send.context.trace_id == process.context.trace_id == inner.context.trace_id == trace_id
    assert send.parent.span_id == request.get_span_context().span_id
    assert process.parent.span_id == send.context.span_id  # the context carried in the job record
    assert inner.parent.span_id == process.context.span_id
    assert process.attributes["messaging.message.id"] == job.id
    assert process.attributes["messaging.taskit.task"] == "test_tracing.traced_child_span"
    assert process.status.is_ok


def test_a_failed_run_is_an_error_span(connection: redis.Redis, queue: Queue, spans) -> None:
    queue.enqueue(sample_tasks.fail, "bad input")
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    (process,) = by_name(spans, "process default")
    assert process.status.status_code == trace.StatusCode.ERROR
    assert process.status.description == "ValueError: bad input"
    assert process.events[0].name == "exception"


def test_not_instrumented_writes_no_trace_field(connection: redis.Redis, queue: Queue) -> None:
    exporter.clear()
    job = queue.enqueue(sample_tasks.add, 1, 2, ttl=60)  # a ttl: the job gets a hash of its own
    assert keys.Field.TRACE not in stored(connection, job.id)
    Worker([queue], modules=("sample_tasks",)).work(burst=True)
    assert exporter.get_finished_spans() == ()


def test_runs_on_threads_and_on_the_event_loop_are_spans_of_their_own_jobs(connection: redis.Redis, queue: Queue,
                                                                        spans) -> None:
    """Many jobs at once (issue 10): each run's span is current in that job's own context, on a
    pool thread or in its coroutine, so what the task makes is under its own run."""
    with provider.get_tracer("tests").start_as_current_span("web request"):
        jobs = [traced_child_span.delay() for _ in range(3)] + [traced_coroutine.delay() for _ in range(3)]
    Worker([queue], modules=("test_tracing",), threads=3).work(burst=True)
    assert [job.return_value(refresh=True) for job in jobs] == ["done"] * 3 + ["awaited"] * 3
    processes = {span.context.span_id: span for span in by_name(spans, "process default")}
    runs = {span.attributes["messaging.message.id"] for span in processes.values()}
    assert runs == {job.id for job in jobs}
    inner = by_name(spans, "inside the task") + by_name(spans, "inside the coroutine")
    assert len(inner) == 6 and len({span.parent.span_id for span in inner}) == 6
    assert all(span.parent.span_id in processes for span in inner)


class _Broken(SpanProcessor):
    """A span processor that raises where it is told to: on_start or on_end."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span, parent_context=None) -> None:
        if self.where == "start":
            raise RuntimeError("processor broken on start")

    def on_end(self, span) -> None:
        if self.where == "end":
            raise RuntimeError("processor broken on end")


@pytest.mark.parametrize("where", ["start", "end"])
def test_a_broken_span_processor_changes_nothing_for_the_job(connection: redis.Redis, queue: Queue, where,
                                                              caplog) -> None:
    """Before, on_end raising made `.delay()` raise after the job was written (a retry would
    enqueue it twice) and made a job that ran and succeeded be recorded as failed."""
    broken = TracerProvider()
    broken.add_span_processor(_Broken(where))
    tracing.instrument(broken)
    try:
        job = queue.enqueue(sample_tasks.add, 2, 3)
        assert queue.count == 1
        Worker([queue], modules=("sample_tasks",)).work(burst=True)
    finally:
        tracing.uninstrument()
    assert job.return_value(refresh=True) == 5
    assert f"processor broken on {where}" in caplog.text and "the job goes on without it" in caplog.text
