"""OpenTelemetry traces, optional (`pip install '/path/to/taskit[otel]'`), off until `instrument()`.

    import taskit.tracing
    taskit.tracing.instrument()        # after setting up the OpenTelemetry SDK

Call it in every process that should trace: producers (where jobs are enqueued) and workers
(in a module the worker imports, e.g. your tasks module). Then each enqueue makes a PRODUCER
span ("send <queue>") whose context rides in the job record (field `tc`, the propagator's
carrier), and each run is a CONSUMER span ("process <queue>") that continues that trace: the
request that enqueued a job and the job's run show up as one trace, with the spans your task
makes inside the run under it. A failed run marks its span as an error with the exception.
Tracing never changes what happens to a job: if OpenTelemetry itself fails (a span processor
or propagator that raises), that is logged and the enqueue or the run goes on without it.

Not instrumented, taskit never imports opentelemetry, writes no trace field and wraps
nothing: the hooks in `Queue.enqueue_many` and the worker check one module attribute.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("taskit.tracing")


def instrument(tracer_provider: Any = None) -> None:
    """Trace enqueues and runs from now on, with `tracer_provider` (default: the global one)."""
    global tracer
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigurationError(
            "tracing needs OpenTelemetry: pip install opentelemetry-api (or '/path/to/taskit[otel]' from your copy "
            "of taskit; taskit is not on PyPI, where a 'taskit' is another project)"
        ) from None
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

    def start(job: Job) -> tuple[Any, dict[str, str]]:
        span = tracer.start_span(f"send {job.origin}", kind=trace.SpanKind.PRODUCER, attributes=_attributes(job, "send"))
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier

    spans = []
    for job, job_fields in zip(jobs, fields):
        started = _safely("starting a send span", start, job)
        if started is None:
            continue
        span, carrier = started
        job_fields[Field.TRACE] = serialization.dumps(carrier, "trace context")
        spans.append(span)
    try:
        yield
    except BaseException as exc:
        for span in spans:
            _safely("recording an error on a span", _mark_failed, span, exc, str(exc))
        raise
    finally:
        for span in spans:
            _safely("ending a span", span.end)


@contextmanager
def consumer_span(job: Job) -> Iterator[Callable[[Any], None]]:
    """A CONSUMER span that continues the job's trace, around its run (sync, on a thread or
    in a coroutine: the span is current in that context). Call the function it yields with
    the run's outcome (taskit.worker.execution.Outcome): a failed run marks the span.
    OpenTelemetry failing (a processor or propagator that raises) is logged and the job runs
    on without the span: tracing never changes what happens to a job."""
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    try:
        parent = extract(_carrier(job.trace_context))
        opened = tracer.start_as_current_span(
            f"process {job.origin}", context=parent, kind=trace.SpanKind.CONSUMER,
            attributes={**_attributes(job, "process"), "messaging.taskit.attempt": job.attempts},
            record_exception=False, set_status_on_exception=False,
        )
        span = opened.__enter__()
    except Exception as exc:  # noqa: BLE001 (see the docstring)
        _log_failure("starting a process span", exc)
        yield lambda outcome: None
        return

    def ended(outcome: Any) -> None:
        if outcome.error is not None:
            _safely("recording an error on a span", _mark_failed, span, outcome.error, outcome.summary)

    try:
        yield ended
    except BaseException as exc:  # the run itself failed: the worker's to handle, not tracing's
        _safely("ending a span", opened.__exit__, type(exc), exc, exc.__traceback__)
        raise
    _safely("ending a span", opened.__exit__, None, None, None)


def _mark_failed(span: Any, error: BaseException, summary: str) -> None:
    from opentelemetry import trace

    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, summary))


def _safely(what: str, action: Callable[..., Any], *args: Any) -> Any:
    """`action(*args)`, a call into OpenTelemetry; None if it raised (logged)."""
    try:
        return action(*args)
    except Exception as exc:  # noqa: BLE001 (a broken processor or propagator must not fail a job)
        _log_failure(what, exc)
        return None


def _log_failure(what: str, exc: Exception) -> None:
    log.warning("tracing: %s failed (%s: %s); the job goes on without it", what, type(exc).__name__, exc)


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
