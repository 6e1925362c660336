"""The runtime end to end: enqueue -> claim -> run -> settle, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from asyncjobs import (
    FixedBackoff,
    JobCancelled,
    JobCompleted,
    JobContext,
    JobDead,
    JobDied,
    JobNotFound,
    JobReleased,
    JobRetrying,
    JobStarted,
    JobState,
    JobStateError,
    JobTimeout,
    ManualClock,
    Permanent,
    Retry,
    current_job,
)
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


async def test_result_round_trip(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job()
    async def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    async with runtime:
        handle = await add.enqueue(2, b=3)
        assert await handle.result(timeout=10) == {"sum": 5}
        job = await handle.refresh()
        assert job.state is JobState.COMPLETE
        assert job.attempts == 1
        assert await handle.status() is JobState.COMPLETE


async def test_sync_handler_runs_in_a_thread(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job()
    def square(x: int) -> int:
        return x * x

    async with runtime:
        handle = await square.enqueue(7)
        assert await handle.result(timeout=10) == 49


async def test_context_is_injected_and_current(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    seen: list[tuple[str, int, str]] = []

    @runtime.job(queue="default")
    async def report(ctx: JobContext, report_id: int) -> str:
        assert current_job() is ctx
        seen.append((ctx.job_id, ctx.attempt, ctx.queue))
        await ctx.progress(0.5, "half way")
        stored = await runtime.get_job(ctx.job_id)
        assert stored is not None
        assert stored.progress == 0.5
        assert stored.progress_message == "half way"
        return f"report {report_id}"

    async with runtime:
        handle = await report.enqueue(report_id=9)
        assert await handle.result(timeout=10) == "report 9"
    assert seen == [(handle.id, 1, "default")]


async def test_delay_waits_for_the_clock(make_runtime: RuntimeFactory, clock: ManualClock) -> None:
    runtime = make_runtime()
    ran = anyio.Event()

    @runtime.job()
    async def later() -> None:
        ran.set()

    async with runtime:
        handle = await later.options(delay=timedelta(minutes=5)).enqueue()
        assert handle.job.due_at == clock.now() + 300
        await anyio.wait_all_tasks_blocked()
        assert not ran.is_set()
        clock.advance(299)
        await anyio.wait_all_tasks_blocked()
        assert not ran.is_set()
        clock.advance(1)
        with anyio.fail_after(10):
            await ran.wait()
        await handle.wait(timeout=10)


async def test_at_schedules_an_absolute_time(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime()

    @runtime.job()
    async def noop() -> None:
        pass

    async with runtime:
        when = datetime.fromtimestamp(clock.now() + 60, UTC)
        handle = await noop.options(at=when).enqueue()
        assert handle.job.due_at == when.timestamp()
        clock.advance(60)
        await handle.result(timeout=10)


async def test_priority_order(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(queues={"default": 1})
    order: list[int] = []

    @runtime.job()
    async def record(priority: int) -> None:
        order.append(priority)

    async with runtime:
        await runtime.pause("default")
        handles = [
            await record.options(priority=priority).enqueue(priority)
            for priority in (5, 1, 3, 1, 0)
        ]
        await runtime.resume("default")
        for handle in handles:
            await handle.wait(timeout=10)
    assert order == [0, 1, 1, 3, 5]


class ConcurrencyProbe:
    """Counts handlers running at once; they hold until :meth:`release`."""

    def __init__(self, expected: int) -> None:
        self.running = 0
        self.peak = 0
        self._expected = expected
        self.reached = anyio.Event()
        self._gate = anyio.Event()

    async def hold(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running == self._expected:
            self.reached.set()
        await self._gate.wait()
        self.running -= 1

    def release(self) -> None:
        self._gate.set()


async def test_queue_limit_is_never_exceeded(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(queues={"default": 3, "other": 2})
    probe = ConcurrencyProbe(expected=3)

    @runtime.job()
    async def busy() -> None:
        await probe.hold()

    async with runtime:
        handles = await runtime.enqueue_many([busy.call() for _ in range(12)])
        with anyio.fail_after(10):
            await probe.reached.wait()
        await anyio.wait_all_tasks_blocked()
        assert probe.running == 3
        probe.release()
        for handle in handles:
            await handle.wait(timeout=10)
    assert probe.peak == 3


async def test_global_cap_limits_all_queues(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(queues={"default": 3, "other": 3}, max_concurrency=2)
    probe = ConcurrencyProbe(expected=2)

    @runtime.job()
    async def one() -> None:
        await probe.hold()

    @runtime.job(queue="other")
    async def two() -> None:
        await probe.hold()

    async with runtime:
        handles = await runtime.enqueue_many(
            [one.call() for _ in range(4)] + [two.call() for _ in range(4)]
        )
        with anyio.fail_after(10):
            await probe.reached.wait()
        await anyio.wait_all_tasks_blocked()
        assert probe.running == 2
        probe.release()
        for handle in handles:
            await handle.wait(timeout=10)
    assert probe.peak == 2


async def test_retries_with_attempt_numbers_then_success(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime()
    attempts: list[int] = []

    @runtime.job(max_attempts=3, backoff=FixedBackoff(10))
    async def flaky(ctx: JobContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        return ctx.attempt

    with runtime.events.subscribe(JobRetrying) as retries:
        async with runtime:
            handle = await flaky.enqueue()
            for attempt in (1, 2):
                event = await retries.wait_for(JobRetrying)
                assert event.attempt == attempt
                assert event.due_at == clock.now() + 10
                assert event.error.type == "ConnectionError"
                job = await handle.refresh()
                assert job.state is JobState.QUEUED
                assert job.error is not None
                assert job.error.message == f"attempt {attempt} failed"
                clock.advance(10)
            assert await handle.result(timeout=10) == 3
    assert attempts == [1, 2, 3]


async def test_exhausted_attempts_go_dead_and_retry_revives(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime()
    fail = True

    @runtime.job(max_attempts=2, backoff=0)
    async def fragile() -> str:
        if fail:
            raise ValueError("broken input")
        return "fixed"

    async with runtime:
        handle = await fragile.enqueue()
        with pytest.raises(JobDead) as raised:
            await handle.result(timeout=10)
        assert raised.value.error_type == "ValueError"
        assert raised.value.error_message == "broken input"
        assert raised.value.traceback is not None
        assert "raise ValueError" in raised.value.traceback
        job = await handle.refresh()
        assert job.state is JobState.DEAD
        assert job.attempts == 2

        fail = False
        revived = await runtime.retry(handle.id)
        assert revived.state in (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETE)
        assert await handle.result(timeout=10) == "fixed"
        with pytest.raises(JobStateError, match="not dead"):
            await runtime.retry(handle.id)


async def test_retry_exception_sets_the_delay(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime()

    @runtime.job(max_attempts=5)
    async def wait_for_data(ctx: JobContext) -> int:
        if ctx.attempt == 1:
            raise Retry(delay=timedelta(seconds=30))
        return ctx.attempt

    with runtime.events.subscribe(JobRetrying) as events:
        async with runtime:
            handle = await wait_for_data.enqueue()
            event = await events.wait_for(JobRetrying)
            assert event.due_at == clock.now() + 30
            clock.advance(30)
            assert await handle.result(timeout=10) == 2


async def test_snooze_does_not_use_an_attempt(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime()
    calls = 0

    @runtime.job(max_attempts=1)
    async def not_ready(ctx: JobContext) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Retry(delay=5, snooze=True)
        return ctx.attempt

    with runtime.events.subscribe(JobReleased) as events:
        async with runtime:
            handle = await not_ready.enqueue()
            for _ in range(2):
                await events.wait_for(JobReleased)
                clock.advance(5)
            # max_attempts=1, yet it ran three times: snoozes are not attempts.
            assert await handle.result(timeout=10) == 1


async def test_permanent_goes_straight_to_dead(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job(max_attempts=10)
    async def hopeless() -> None:
        raise Permanent("account closed")

    async with runtime:
        handle = await hopeless.enqueue()
        with pytest.raises(JobDead, match="account closed"):
            await handle.result(timeout=10)
        assert (await handle.refresh()).attempts == 1


async def test_base_exception_fails_the_job_not_the_runtime(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job(max_attempts=1)
    async def exits() -> None:
        raise SystemExit(3)

    @runtime.job()
    async def fine() -> str:
        return "still running"

    async with runtime:
        handle = await exits.enqueue()
        with pytest.raises(JobDead) as raised:
            await handle.result(timeout=10)
        assert raised.value.error_type == "SystemExit"
        assert await (await fine.enqueue()).result(timeout=10) == "still running"


async def test_timeout_fails_the_attempt(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job(max_attempts=1, timeout=0.05)
    async def stuck() -> None:
        await anyio.Event().wait()

    async with runtime:
        handle = await stuck.enqueue()
        with pytest.raises(JobDead, match="timeout"):
            await handle.result(timeout=10)


async def test_per_enqueue_timeout_overrides(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job(max_attempts=1)
    async def stuck() -> None:
        await anyio.Event().wait()

    async with runtime:
        handle = await stuck.options(timeout=0.05).enqueue()
        with pytest.raises(JobDead):
            await handle.result(timeout=10)


async def test_cancel_queued_job(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    ran = False

    @runtime.job()
    async def never() -> None:
        nonlocal ran
        ran = True

    async with runtime:
        handle = await never.options(delay=60).enqueue()
        cancelled = await runtime.cancel(handle.id)
        assert cancelled.state is JobState.CANCELLED
        with pytest.raises(JobCancelled):
            await handle.result(timeout=10)
    assert not ran


async def test_cancel_running_job(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    started = anyio.Event()
    cleaned_up = anyio.Event()

    @runtime.job()
    async def long_running() -> None:
        started.set()
        try:
            await anyio.Event().wait()
        finally:
            cleaned_up.set()

    async with runtime:
        handle = await long_running.enqueue()
        with anyio.fail_after(10):
            await started.wait()
        await handle.cancel()
        with pytest.raises(JobCancelled):
            await handle.result(timeout=10)
        assert cleaned_up.is_set()
        assert (await handle.refresh()).state is JobState.CANCELLED


async def test_dedup_key_returns_the_active_job(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job()
    async def welcome(user_id: int) -> int:
        return user_id

    async with runtime:
        await runtime.pause("default")
        first = await welcome.options(key="welcome:42").enqueue(42)
        second = await welcome.options(key="welcome:42").enqueue(42)
        assert second.id == first.id
        assert second.deduplicated
        assert not first.deduplicated
        assert len(await runtime.list_jobs()) == 1
        await runtime.resume("default")
        assert await first.result(timeout=10) == 42
        third = await welcome.options(key="welcome:42").enqueue(42)
        assert third.id != first.id


async def test_graceful_shutdown_hands_running_jobs_back(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(shutdown_grace=0.05)
    started = anyio.Event()

    @runtime.job()
    async def forever() -> None:
        started.set()
        await anyio.Event().wait()

    with runtime.events.subscribe(JobReleased) as events:
        async with runtime:
            handle = await forever.enqueue()
            with anyio.fail_after(10):
                await started.wait()
        released = await events.wait_for(JobReleased)
    assert released.job_id == handle.id

    # A second runtime on the same store sees the job queued, its attempt not used.
    observer = make_runtime(role="enqueue")
    async with observer:
        job = await observer.get_job(handle.id)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.attempts == 0


async def test_graceful_shutdown_lets_short_jobs_finish(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(shutdown_grace=10)
    started = anyio.Event()

    @runtime.job()
    async def short() -> str:
        started.set()
        await anyio.sleep(0.05)  # the workload itself, still running when shutdown begins
        return "done"

    with runtime.events.subscribe(JobCompleted, JobReleased) as events:
        async with runtime:
            handle = await short.enqueue()
            with anyio.fail_after(10):
                await started.wait()
        outcome = await events.receive()
    assert isinstance(outcome, JobCompleted)
    assert outcome.job_id == handle.id


async def test_enqueue_only_role_does_not_run_jobs(make_runtime: RuntimeFactory) -> None:
    web = make_runtime(role="enqueue")
    worker = make_runtime(role="worker")

    @web.job(name="shared.job")
    async def on_web(x: int) -> int:
        return x

    @worker.job(name="shared.job")
    async def on_worker(x: int) -> int:
        return x + 1

    async with web:
        handle = await on_web.enqueue(1)
        await anyio.wait_all_tasks_blocked()
        assert await handle.status() is JobState.QUEUED
        async with worker:
            assert await handle.result(timeout=10) == 2


async def test_events_for_every_state_change(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job(max_attempts=1)
    async def boom() -> None:
        raise RuntimeError("x")

    with runtime.events.subscribe() as events:
        async with runtime:
            handle = await boom.enqueue()
            started = await events.wait_for(JobStarted)
            died = await events.wait_for(JobDied)
    assert started.job_id == died.job_id == handle.id
    assert died.error.type == "RuntimeError"


async def test_handle_result_timeout(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job()
    async def slow() -> None:
        await anyio.Event().wait()

    async with runtime:
        handle = await slow.options(delay=3600).enqueue()
        with pytest.raises(JobTimeout):
            await handle.result(timeout=0.05)


async def test_queue_stats_and_list_jobs(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(queues={"default": 2, "mail": 1})

    @runtime.job(queue="mail")
    async def send(to: str) -> None:
        pass

    async with runtime:
        await runtime.pause("mail")
        await runtime.enqueue_many([send.call(f"user{i}@example.com") for i in range(3)])
        stats = {s.queue: s for s in await runtime.queue_stats()}
        assert stats["mail"].count(JobState.QUEUED) == 3
        assert stats["mail"].paused
        jobs = await runtime.list_jobs(queue="mail", state="queued", limit=2)
        assert len(jobs) == 2


async def test_cancel_during_a_failing_attempt_is_not_undone_by_a_retry(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    started = anyio.Event()

    @runtime.job(max_attempts=5, backoff=0)
    async def stubborn() -> None:
        started.set()
        try:
            await anyio.Event().wait()
        finally:
            # Cleanup that fails as the job is being cancelled.
            raise RuntimeError("cleanup failed")

    async with runtime:
        handle = await stubborn.enqueue()
        with anyio.fail_after(10):
            await started.wait()
        await handle.cancel()
        with pytest.raises(JobCancelled):
            await handle.result(timeout=10)
        assert (await handle.refresh()).attempts == 1


async def test_a_handle_by_id_reads_the_result_later(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()

    @runtime.job()
    async def add(a: int, b: int) -> int:
        return a + b

    async with runtime:
        job_id = (await add.enqueue(2, 3)).id
        later = await runtime.handle(job_id)  # e.g. in a later request
        assert await later.result(timeout=10) == 5
        with pytest.raises(JobNotFound):
            await runtime.handle("missing")
