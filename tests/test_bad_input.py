"""Every bad input fails at the call that caused it, with a specific error, and stores nothing."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from asyncjobs import (
    AsyncJobsError,
    ConfigurationError,
    DuplicateJobError,
    InvalidOptionError,
    InvalidScheduleError,
    JobArgumentsError,
    JobFunction,
    JobNotFound,
    JobRegistry,
    JobRuntime,
    NotRunningError,
    PayloadTooLarge,
    Queue,
    RateLimit,
    SerializationError,
    UnknownJobError,
    UnknownQueueError,
)
from asyncjobs.backends import from_url

pytestmark = pytest.mark.anyio


@pytest.fixture
async def runtime() -> AsyncIterator[JobRuntime]:
    """A started memory runtime with a small payload limit."""
    runtime = JobRuntime(queues={"default": 2}, max_payload_bytes=1024, role="enqueue")
    async with runtime:
        yield runtime


def register_send(runtime: JobRuntime) -> JobFunction[..., str]:
    @runtime.job(name="send")
    async def send(to: str, subject: str) -> str:
        return to

    return send


async def assert_store_empty(runtime: JobRuntime) -> None:
    assert await runtime.list_jobs() == []


async def test_unknown_job_name(runtime: JobRuntime) -> None:
    register_send(runtime)
    with pytest.raises(
        UnknownJobError, match=r"no job is registered as 'nope' \(registered: send\)"
    ):
        await runtime.enqueue("nope", 1)
    await assert_store_empty(runtime)


async def test_arguments_that_do_not_bind(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    with pytest.raises(
        JobArgumentsError,
        match=r"do not match send\(to, subject\): missing a required argument: 'subject'",
    ):
        await send.enqueue("a@example.com")
    with pytest.raises(TypeError, match="unexpected keyword argument 'body'"):
        await send.enqueue("a@example.com", subject="hi", body="x")
    await assert_store_empty(runtime)


async def test_arguments_that_do_not_serialize(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    with pytest.raises(
        SerializationError, match=r"arguments of job .send. cannot be encoded: .*object"
    ):
        await send.enqueue("a@example.com", subject=object())
    with pytest.raises(TypeError):
        await send.enqueue("a@example.com", subject={1, 2})
    await assert_store_empty(runtime)


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        (-1, "delay must not be negative"),
        (timedelta(seconds=-5), "delay must not be negative"),
        (math.nan, "delay must be a finite number"),
        (math.inf, "delay must be a finite number"),
        ("soon", "delay must be seconds"),
    ],
)
async def test_bad_delay(runtime: JobRuntime, delay: Any, message: str) -> None:
    send = register_send(runtime)
    with pytest.raises(InvalidOptionError, match=message):
        send.options(delay=delay)
    await assert_store_empty(runtime)


async def test_naive_at(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    with pytest.raises(InvalidOptionError, match="naive datetime: give it a time zone"):
        send.options(at=datetime(2030, 1, 1, 12, 0))
    await assert_store_empty(runtime)


async def test_delay_and_at_together(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    with pytest.raises(InvalidOptionError, match="either delay or at"):
        send.options(delay=5, at=datetime.fromisoformat("2030-01-01T00:00:00+00:00"))


@pytest.mark.parametrize("attempts", [0, -3, 1.5, True])
async def test_max_attempts_below_one(runtime: JobRuntime, attempts: Any) -> None:
    send = register_send(runtime)
    with pytest.raises(InvalidOptionError, match="max_attempts must be an int of at least 1"):
        send.options(max_attempts=attempts)
    with pytest.raises(InvalidOptionError, match="max_attempts must be an int of at least 1"):
        runtime.job(max_attempts=attempts)
    await assert_store_empty(runtime)


async def test_bad_timeout(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    with pytest.raises(InvalidOptionError, match="timeout must be more than 0"):
        send.options(timeout=0)
    with pytest.raises(InvalidOptionError, match="timeout must not be negative"):
        runtime.job(timeout=-1)


async def test_unknown_queue_at_registration() -> None:
    runtime = JobRuntime(queues={"default": 1})
    with pytest.raises(
        UnknownQueueError, match=r"queue 'mail' is not configured \(configured: default\)"
    ):
        runtime.job(queue="mail")
    assert isinstance(UnknownQueueError("x"), ValueError)


async def test_unknown_queue_in_an_included_registry() -> None:
    jobs = JobRegistry()

    @jobs.job(queue="reports")
    async def build() -> None:
        pass

    runtime = JobRuntime(queues={"default": 1})
    with pytest.raises(UnknownQueueError, match="'reports' is not configured"):
        runtime.include(jobs)


async def test_payload_over_the_size_limit(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    with pytest.raises(PayloadTooLarge, match=r"encode to \d+ bytes, over the limit of 1024"):
        await send.enqueue("a@example.com", subject="x" * 2000)
    await assert_store_empty(runtime)


async def test_enqueue_many_is_all_or_nothing(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    good = send.call("a@example.com", "hi")
    bad = send.call("b@example.com", "x" * 5000)
    with pytest.raises(PayloadTooLarge):
        await runtime.enqueue_many([good, bad])
    await assert_store_empty(runtime)


async def test_duplicate_job_name() -> None:
    runtime = JobRuntime()

    @runtime.job(name="same")
    async def first() -> None:
        pass

    with pytest.raises(ConfigurationError, match="job name 'same' is already registered"):

        @runtime.job(name="same")
        async def second() -> None:
            pass


async def test_enqueue_before_start() -> None:
    runtime = JobRuntime()
    send = register_send(runtime)
    with pytest.raises(NotRunningError, match="the runtime is not started"):
        await send.enqueue("a@example.com", "hi")


async def test_registry_not_included() -> None:
    jobs = JobRegistry()

    @jobs.job()
    async def orphan() -> None:
        pass

    with pytest.raises(NotRunningError, match=r"call runtime.include\(registry\)"):
        await orphan.enqueue()


async def test_unknown_job_ids(runtime: JobRuntime) -> None:
    with pytest.raises(JobNotFound):
        await runtime.cancel("missing")
    with pytest.raises(JobNotFound):
        await runtime.retry("missing")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queues": {"default": 0}}, "concurrency limit of at least 1"),
        ({"role": "boss"}, "role must be 'all', 'enqueue' or 'worker'"),
        ({"lease": 0}, "lease must be more than 0"),
        ({"max_concurrency": 0}, "max_concurrency must be an int of at least 1"),
        ({"retention": {"queued": 5}}, "retention applies to finished states only"),
        ({"backend": 42}, "backend must be a Backend"),
    ],
)
async def test_bad_runtime_configuration(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        JobRuntime(**kwargs)


async def test_unknown_backend_url_hides_the_password() -> None:
    with pytest.raises(ConfigurationError, match="unknown backend URL scheme 'mysql'") as raised:
        from_url("mysql://user:secret@db/jobs")
    assert "secret" not in str(raised.value)


async def test_every_error_derives_from_the_base() -> None:
    for error in (UnknownJobError, JobArgumentsError, SerializationError, PayloadTooLarge):
        assert issubclass(error, AsyncJobsError)
    assert issubclass(JobArgumentsError, TypeError)
    assert issubclass(InvalidOptionError, ValueError)


# -- flow control -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Queue(weight=-1), "weight must be a number above 0"),
        (lambda: Queue(weight=0), "weight must be a number above 0"),
        (lambda: Queue(weight=math.nan), "weight must be a number above 0"),
        (lambda: Queue(concurrency=0), "concurrency must be an int of at least 1"),
        (lambda: Queue(global_concurrency=0), "global_concurrency must be an int of at least 1"),
        (lambda: Queue(global_concurrency=-3), "global_concurrency must be an int of at least 1"),
        (
            lambda: Queue(partition_concurrency=0),
            "partition_concurrency must be an int of at least 1",
        ),
        (lambda: Queue(max_attempts=0), "max_attempts must be an int of at least 1"),
        (lambda: Queue(timeout=0), "timeout must be more than 0"),
        (lambda: Queue(rate_limit=10), "rate_limit must be a RateLimit"),  # type: ignore[arg-type]
        (lambda: RateLimit(0, per=1), "RateLimit limit must be an int of at least 1"),
        (lambda: RateLimit(-5, per=1), "RateLimit limit must be an int of at least 1"),
        (lambda: RateLimit(5, per=0), "RateLimit per must be more than 0 seconds"),
        (lambda: RateLimit(5, per=-1), "must not be negative"),
        (lambda: RateLimit(5, per=timedelta(0)), "RateLimit per must be more than 0 seconds"),
    ],
)
async def test_bad_flow_control_settings(make: Any, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        make()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "k", "key_scope": "forever"}, "key_scope must be 'queued', 'active' or a"),
        ({"key": "k", "key_scope": timedelta(0)}, "a key_scope window must be positive"),
        ({"key": "k", "on_conflict": "ignore"}, "on_conflict must be 'return', 'replace' or"),
        ({"on_conflict": "raise"}, "on_conflict needs a key"),
        ({"key_scope": "queued"}, "key_scope needs a key"),
        ({"partition": ""}, "partition must be a non-empty str"),
        ({"partition": 42}, "partition must be a non-empty str"),
        ({"partition": "t" * 129}, "of at most 128 characters"),
    ],
)
async def test_bad_flow_control_options(
    runtime: JobRuntime, options: dict[str, Any], message: str
) -> None:
    send = register_send(runtime)
    with pytest.raises(InvalidOptionError, match=message):
        await send.options(**options).enqueue("a@example.com", "hi")
    await assert_store_empty(runtime)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue_selection": "random"}, "queue_selection must be 'weighted' or 'strict'"),
        ({"heartbeat": 30}, "heartbeat must be more than 0 and less than the lease"),
        ({"heartbeat": 0}, "heartbeat must be more than 0 and less than the lease"),
        ({"queues": {"default": "fast"}}, "must be a Queue"),
        ({"queues": {}}, "queues must name at least one queue"),
    ],
)
async def test_bad_flow_control_configuration(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        JobRuntime(**kwargs)


async def test_a_duplicate_raise_stores_nothing_of_the_batch(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    holder = await send.options(key="welcome").enqueue("a@example.com", "hi")
    with pytest.raises(DuplicateJobError, match=f"job {holder.id} already holds the key"):
        await runtime.enqueue_many(
            [
                send.call("b@example.com", "hi"),
                send.options(key="welcome", on_conflict="raise").call("c@example.com", "hi"),
            ]
        )
    assert [job.id for job in await runtime.list_jobs()] == [holder.id]
    error = DuplicateJobError("welcome", holder.id)
    assert "c@example.com" not in str(error)


async def test_an_unknown_keyword_argument_is_named(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    with pytest.raises(JobArgumentsError, match="unexpected keyword argument 'cc'"):
        await send.enqueue("a@example.com", "hi", cc="b@example.com")
    await assert_store_empty(runtime)


async def test_a_negative_interval_is_reported_in_seconds(runtime: JobRuntime) -> None:
    with pytest.raises(InvalidScheduleError, match=r"every must be positive, got -5 seconds"):
        runtime.every(-5)
    with pytest.raises(InvalidScheduleError, match=r"got -90 seconds"):
        runtime.every(timedelta(seconds=-90))


async def test_a_negative_result_timeout_is_an_invalid_option(runtime: JobRuntime) -> None:
    send = register_send(runtime)
    handle = await send.enqueue("a@example.com", "hi")
    with pytest.raises(InvalidOptionError, match="timeout must be None or at least 0"):
        await handle.result(timeout=-1)
