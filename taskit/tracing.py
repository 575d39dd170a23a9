"""OpenTelemetry traces, optional (`pip install 'taskit[otel]'`), off until `instrument()`.

    import taskit.tracing
    taskit.tracing.instrument()        # after setting up the OpenTelemetry SDK

Call it in every process that should trace: producers (where jobs are enqueued) and workers
(in a module the worker imports, e.g. your tasks module). Then each enqueue makes a PRODUCER
span ("send <queue>") whose context rides in the job record (field `tc`, the propagator's
carrier), and each run is a CONSUMER span ("process <queue>") that continues that trace: the
request that enqueued a job and the job's run show up as one trace, with the spans your task
makes inside the run under it. A failed run marks its span as an error with the exception.

Not instrumented, taskit never imports opentelemetry, writes no trace field and wraps
nothing: the hooks in `Queue.enqueue_many` and the worker check one module attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import serialization
from .exceptions import ConfigurationError, SerializationError
from .storage.keys import Field

if TYPE_CHECKING:
    from .job import Job

#: the OpenTelemetry tracer while instrumented, else None (what the hooks check)
tracer: Any = None

SYSTEM = "taskit"


def instrument(tracer_provider: Any = None) -> None:
    """Trace enqueues and runs from now on, with `tracer_provider` (default: the global one)."""
    global tracer
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigurationError("tracing needs OpenTelemetry: pip install 'taskit[otel]'") from None
    from . import __version__

    tracer = trace.get_tracer("taskit", __version__, tracer_provider=tracer_provider)


def uninstrument() -> None:
    """Stop tracing (jobs already enqueued keep their trace context)."""
    global tracer
    tracer = None


@contextmanager
def producer_spans(jobs: Sequence[Job], fields: Sequence[dict[str, Any]]) -> Iterator[None]:
    """One PRODUCER span per job around the write; each job's fields get its span's context."""
    from opentelemetry import trace
    from opentelemetry.propagate import inject

    spans = []
    for job, job_fields in zip(jobs, fields):
        span = tracer.start_span(f"send {job.origin}", kind=trace.SpanKind.PRODUCER, attributes=_attributes(job, "send"))
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        job_fields[Field.TRACE] = serialization.dumps(carrier, "trace context")
        spans.append(span)
    try:
        yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
        raise
    finally:
        for span in spans:
            span.end()


@contextmanager
def consumer_span(job: Job) -> Iterator[Callable[[Any], None]]:
    """A CONSUMER span that continues the job's trace, around its run (sync, on a thread or
    in a coroutine: the span is current in that context). Call the function it yields with
    the run's outcome (taskit.worker.execution.Outcome): a failed run marks the span."""
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    parent = extract(_carrier(job.trace_context))
    with tracer.start_as_current_span(
        f"process {job.origin}", context=parent, kind=trace.SpanKind.CONSUMER,
        attributes={**_attributes(job, "process"), "messaging.taskit.attempt": job.attempts},
        record_exception=False, set_status_on_exception=False,
    ) as span:

        def ended(outcome: Any) -> None:
            if outcome.error is not None:
                span.record_exception(outcome.error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.summary))

        yield ended


def _attributes(job: Job, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.destination.name": job.origin,
        "messaging.message.id": job.id,
        "messaging.taskit.task": job.func_name,
    }


def _carrier(raw: bytes | None) -> dict[str, str]:
    """The stored carrier; an unreadable one starts a new trace rather than failing the run."""
    if raw is None:
        return {}
    try:
        carrier = serialization.loads(raw)
    except SerializationError:
        return {}
    if not isinstance(carrier, dict):
        return {}
    return {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
