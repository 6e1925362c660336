"""OpenTelemetry spans from real runtimes on every store, read from an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asyncjobs import JobContext, JobDead, JobRuntime
from asyncjobs.integrations.otel import instrument, trace_tags
from asyncjobs.testing import drain
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_enqueue_and_attempt_spans_are_linked(
    make_runtime: RuntimeFactory, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    runtime = make_runtime()

    @runtime.job(name="send_email")
    async def send_email(to: str) -> str:
        return "sent"

    tracer = provider.get_tracer("app")
    with instrument(runtime, provider):
        async with runtime:
            with tracer.start_as_current_span("POST /signup") as request:
                handle = await send_email.enqueue("secret@example.com")
            assert await handle.result(timeout=10) == "sent"
            await drain(runtime)

    (send,) = spans(exporter, "send send_email")
    (process,) = spans(exporter, "process send_email")
    # The enqueue span is the request's child; the attempt is its own trace, linked.
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.context.trace_id == request.get_span_context().trace_id
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is None
    assert process.context.trace_id != send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert dict(send.attributes or {}) == {
        "messaging.system": "asyncjobs",
        "messaging.destination.name": "default",
        "messaging.message.id": handle.id,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.operation": "send",
        "asyncjobs.job.name": "send_email",
    }
    attributes = dict(process.attributes or {})
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.message.id"] == handle.id
    assert attributes["asyncjobs.job.attempt"] == 1
    assert attributes["asyncjobs.job.outcome"] == "complete"
    assert process.status.status_code is StatusCode.UNSET
    assert process.start_time is not None
    assert process.end_time is not None
    assert process.start_time <= process.end_time
    for span in exporter.get_finished_spans():
        assert "secret@example.com" not in str(span.to_json())


async def test_each_attempt_has_a_span_and_failures_carry_the_error_type(
    make_runtime: RuntimeFactory, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    runtime = make_runtime()

    @runtime.job(name="charge", max_attempts=2, backoff=0)
    async def charge(card: str) -> None:
        raise ValueError(f"card {card} declined")

    with instrument(runtime, provider):
        async with runtime:
            handle = await charge.enqueue("4111-secret")
            with pytest.raises(JobDead):
                await handle.result(timeout=10)

    (send,) = spans(exporter, "send charge")
    first, second = sorted(
        spans(exporter, "process charge"),
        key=lambda span: str((span.attributes or {})["asyncjobs.job.attempt"]),
    )
    for span, attempt, outcome in ((first, 1, "retry"), (second, 2, "dead")):
        attributes = dict(span.attributes or {})
        assert attributes["asyncjobs.job.attempt"] == attempt
        assert attributes["asyncjobs.job.outcome"] == outcome
        assert attributes["error.type"] == "ValueError"
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError"  # never the message: it may hold secrets
        assert [link.context.span_id for link in span.links] == [send.context.span_id]
        assert "4111-secret" not in str(span.to_json())


async def test_as_child_puts_the_attempt_in_the_enqueue_trace(
    make_runtime: RuntimeFactory, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    runtime = make_runtime()

    @runtime.job(name="resize")
    async def resize() -> None: ...

    with instrument(runtime, provider, as_child=True):
        async with runtime:
            await resize.enqueue()
            await drain(runtime)

    (send,) = spans(exporter, "send resize")
    (process,) = spans(exporter, "process resize")
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id


async def test_the_handler_nests_its_spans_under_the_attempt(
    exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    runtime = JobRuntime()
    tracing = instrument(runtime, provider)
    tracer = provider.get_tracer("app")

    @runtime.job(name="sync_account")
    async def sync_account(ctx: JobContext) -> None:
        assert tracing.span_of(ctx.job_id) is not None
        with tracing.use_job_span() as span:
            assert span is not None
            with tracer.start_as_current_span("GET /account"):
                pass

    async with tracing, runtime:
        await (await sync_account.enqueue()).result(timeout=10)
        await drain(runtime)
    with tracing.use_job_span() as outside:
        assert outside is None

    (process,) = spans(exporter, "process sync_account")
    (inner,) = spans(exporter, "GET /account")
    assert inner.parent is not None
    assert inner.parent.span_id == process.context.span_id


async def test_a_traceparent_tag_links_an_attempt_enqueued_elsewhere(
    make_runtime: RuntimeFactory, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    # Two processes: a web app enqueues (untraced here), a worker runs.
    web = make_runtime(role="enqueue")
    worker = make_runtime(role="worker")

    @web.job(name="notify")
    async def notify_stub() -> None: ...

    @worker.job(name="notify")
    async def notify() -> None: ...

    tracer = provider.get_tracer("app")
    async with web:
        with tracer.start_as_current_span("POST /orders") as request:
            tags = trace_tags()
            await notify_stub.options(tags=tags).enqueue()
    assert set(tags) >= {"traceparent"}
    with instrument(worker, provider):
        async with worker:
            await drain(worker)

    (process,) = spans(exporter, "process notify")
    assert [link.context.span_id for link in process.links] == [request.get_span_context().span_id]
    assert process.links[0].context.trace_id == request.get_span_context().trace_id


async def test_spans_stop_when_tracing_is_left(
    exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    runtime = JobRuntime()

    @runtime.job(name="noop")
    async def noop() -> None: ...

    async with runtime:
        with instrument(runtime, provider):
            await (await noop.enqueue()).result(timeout=10)
            await drain(runtime)
        count = len(exporter.get_finished_spans())
        await (await noop.enqueue()).result(timeout=10)
    assert count == 2
    assert len(exporter.get_finished_spans()) == 2
    assert not trace_tags()  # no current span: nothing to carry


async def test_a_span_left_open_by_a_lost_outcome_is_ended_on_exit(
    exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    runtime = JobRuntime(shutdown_grace=0.05)
    started = anyio.Event()

    @runtime.job(name="stuck")
    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    tracing = instrument(runtime, provider)
    async with runtime:
        with tracing:
            await stuck.enqueue()
            with anyio.fail_after(10):
                await started.wait()
    (process,) = spans(exporter, "process stuck")
    assert (process.attributes or {})["asyncjobs.job.outcome"] == "unknown"
    assert trace.get_current_span() is trace.INVALID_SPAN
