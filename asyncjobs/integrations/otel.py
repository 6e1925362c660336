"""OpenTelemetry spans of a runtime: one per enqueue, one per attempt, linked.

Install the extra (``pip install 'asyncjobs[otel]'``) and set up a tracer
provider as usual, then::

    tracing = instrument(runtime)       # the global tracer provider, or pass one
    with tracing:                       # or `async with tracing:`
        async with runtime:
            ...

What it records, after the OpenTelemetry messaging conventions:

- a ``send {job name}`` span (kind ``PRODUCER``) when the store accepts a
  job, a child of whatever span was current where ``enqueue`` was called (an
  HTTP request's, say);
- a ``process {job name}`` span (kind ``CONSUMER``) per attempt, from the
  handler's start to the attempt's outcome, in a trace of its own with a
  link to the enqueue's span (``as_child=True`` puts it in the enqueue's
  trace instead). A failed attempt's span has an error status and
  ``error.type`` (the exception's class name; never its message, which may
  quote arguments).

Attributes: ``messaging.system`` (``"asyncjobs"``), ``messaging.destination.name``
(the queue), ``messaging.message.id`` (the job id), ``messaging.operation.type``
and ``messaging.operation.name`` (``"send"`` / ``"process"``; also as the older
``messaging.operation``), ``asyncjobs.job.name``, ``asyncjobs.job.attempt`` and
``asyncjobs.job.outcome``.

The spans are made from the runtime's events, as they are published. The
link from an attempt to its enqueue is found in this process (the enqueue's
span context, kept per job id, the most recent 10,000), so it holds when the
process that enqueues also runs the job (role ``"all"``). Across processes
the context travels in the job's tags: enqueue with
``options(tags=trace_tags())`` and the attempt links to the W3C
``traceparent`` found there.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._context import current_job
from .._events import (
    Event,
    JobCompleted,
    JobDied,
    JobEnqueued,
    JobEvent,
    JobLeaseLost,
    JobReleased,
    JobRetrying,
    JobStarted,
    JobWasCancelled,
)
from .._exceptions import ConfigurationError, NotRunningError
from ._attempts import Attempts
from ._listen import listen

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError(
        "asyncjobs.integrations.otel needs opentelemetry-api: pip install 'asyncjobs[otel]'"
    ) from exc

if TYPE_CHECKING:
    from .._runtime import JobRuntime

__all__ = ["Tracing", "instrument", "trace_tags"]

logger = logging.getLogger("asyncjobs")

#: Enqueue span contexts kept for linking attempts to them.
_MAX_ENQUEUED = 10_000
#: Attempt spans open at once; past this the oldest are ended (an outcome event lost).
_MAX_RUNNING = 100_000
_PROPAGATOR = TraceContextTextMapPropagator()
_OUTCOMES: dict[type[JobEvent], str] = {
    JobCompleted: "complete",
    JobRetrying: "retry",
    JobReleased: "released",
    JobDied: "dead",
    JobWasCancelled: "cancelled",
    JobLeaseLost: "lease_lost",
}
#: Outcomes after which the job runs no more attempts: its enqueue context is dropped.
_FINAL = (JobCompleted, JobDied, JobWasCancelled)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def trace_tags() -> dict[str, str]:
    """Return the current trace context as job tags (``traceparent``, maybe ``tracestate``).

    Enqueue with them (``job.options(tags=trace_tags()).enqueue(...)``) so a
    worker in another process links the attempt's span to the caller's.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


class Tracing:
    """Makes spans from one runtime's events while it is entered (``with`` or ``async with``).

    Made by :func:`instrument`.
    """

    def __init__(
        self,
        runtime: JobRuntime,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        as_child: bool = False,
    ) -> None:
        self._runtime = runtime
        self._tracer = trace.get_tracer("asyncjobs", tracer_provider=tracer_provider)
        self._as_child = as_child
        self._enqueued: OrderedDict[str, SpanContext] = OrderedDict()
        self._running: Attempts[Span] = Attempts(_MAX_RUNNING)
        self._stop: Any = None

    def __repr__(self) -> str:
        return f"<Tracing of {self._runtime!r}, {len(self._running)} attempt span(s) open>"

    def __enter__(self) -> Tracing:
        if self._stop is not None:
            raise ConfigurationError("this Tracing is already entered")
        self._stop = listen(self._runtime.events, self._on_event)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()
        # Attempts still open end here, marked as not seen to an outcome.
        for span in self._running.drain():
            span.set_attribute("asyncjobs.job.outcome", "unknown")
            span.end()

    async def __aenter__(self) -> Tracing:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def span_of(self, job_id: str) -> Span | None:
        """Return the span of the attempt of *job_id* running in this process, or ``None``."""
        return self._running.latest(job_id)

    @contextmanager
    def use_job_span(self) -> Iterator[Span | None]:
        """Inside a handler: make its attempt's span current, so spans made within are children.

        ::

            @runtime.job()
            async def sync_account(account_id: int) -> None:
                with tracing.use_job_span():
                    await http.get(...)          # an instrumented client's span nests here

        Yields the span (``None`` outside a job, or when it has none).
        """
        try:
            job_id = current_job().job_id
        except NotRunningError:
            yield None
            return
        span = self._running.latest(job_id)
        if span is None:
            yield None
            return
        with trace.use_span(span, end_on_exit=False):
            yield span

    # -- events --------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, JobEnqueued):
            self._enqueue_span(event)
        elif isinstance(event, JobStarted):
            self._start_attempt(event)
        elif isinstance(event, JobEvent) and type(event) in _OUTCOMES:
            self._end_attempt(event, _OUTCOMES[type(event)])

    def _attributes(self, event: JobEvent, operation: str) -> dict[str, str | int]:
        return {
            "messaging.system": "asyncjobs",
            "messaging.destination.name": event.queue,
            "messaging.message.id": event.job_id,
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
            "messaging.operation": operation,
            "asyncjobs.job.name": event.job_name,
        }

    def _enqueue_span(self, event: JobEnqueued) -> None:
        # Called in the enqueuing task: the current context is the caller's.
        span = self._tracer.start_span(
            f"send {event.job_name}",
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(event, "send"),
            start_time=_ns(event.timestamp),
        )
        span.end(end_time=_ns(event.timestamp))
        self._enqueued[event.job_id] = span.get_span_context()
        while len(self._enqueued) > _MAX_ENQUEUED:
            self._enqueued.popitem(last=False)

    def _origin(self, job_id: str) -> SpanContext | None:
        """The enqueue's span context: kept in this process, or carried in the job's tags."""
        origin = self._enqueued.get(job_id)
        if origin is not None:
            return origin
        try:
            job = current_job().job  # JobStarted is published in the job's own task
        except NotRunningError:
            return None
        tags = job.tags
        if job.id != job_id or "traceparent" not in tags:
            return None
        carried = trace.get_current_span(_PROPAGATOR.extract(dict(tags))).get_span_context()
        return carried if carried.is_valid else None

    def _start_attempt(self, event: JobStarted) -> None:
        origin = self._origin(event.job_id)
        if self._as_child and origin is not None:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(origin))
        else:
            # A trace of its own, whatever context the worker task holds.
            parent = otel_context.Context()
        attributes = self._attributes(event, "process")
        attributes["asyncjobs.job.attempt"] = event.attempt
        span = self._tracer.start_span(
            f"process {event.job_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=[Link(origin)] if origin is not None else None,
            start_time=_ns(event.timestamp),
        )
        for stale in self._running.add(event.job_id, event.attempt, span):
            stale.end()  # its outcome never came

    def _end_attempt(self, event: JobEvent, outcome: str) -> None:
        if isinstance(event, _FINAL):
            self._enqueued.pop(event.job_id, None)
        span = self._running.pop(event.job_id, getattr(event, "attempt", None))
        if span is None:  # cancelled while queued, or the attempt ran elsewhere
            return
        span.set_attribute("asyncjobs.job.outcome", outcome)
        if isinstance(event, JobRetrying | JobDied):
            span.set_attribute("error.type", event.error.type)
            span.set_status(Status(StatusCode.ERROR, event.error.type))
        elif isinstance(event, JobLeaseLost):
            span.set_attribute("error.type", "LeaseLost")
            span.set_status(Status(StatusCode.ERROR, "lease lost"))
        span.end(end_time=_ns(event.timestamp))


def instrument(
    runtime: JobRuntime,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    as_child: bool = False,
) -> Tracing:
    """Trace *runtime*'s enqueues and attempts while the result is entered.

    :param tracer_provider: where the spans go (default: the global provider).
    :param as_child: make each attempt's span a child of its enqueue's span
        (one trace per job) instead of the root of a trace linked to it.
    """
    return Tracing(runtime, tracer_provider, as_child=as_child)
