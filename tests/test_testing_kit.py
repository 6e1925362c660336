"""asyncjobs.testing: the manual clock drives everything; advance, eager/manual modes, assertions.

The timed tests print their durations (``pytest -s``): the done-when of the
testing kit is a week of cron, a five-attempt retry chain and a crashed
worker's recovery each under 100 ms on the memory store.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette

from asyncjobs import (
    JobContext,
    JobRegistry,
    JobRuntime,
    JobState,
    ManualClock,
    Queue,
    RateLimit,
    Retry,
)
from asyncjobs.backends.memory import MemoryBackend
from asyncjobs.lifespan import combine
from asyncjobs.testing import Harness, advance

pytestmark = pytest.mark.anyio

MONDAY = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday, 00:00 UTC


@contextmanager
def timed(label: str, budget: float) -> Iterator[None]:
    started = time.perf_counter()
    yield
    took = time.perf_counter() - started
    print(f"\n{label}: {took * 1000:.1f} ms")
    # The target is 100 ms; the bound leaves room for a loaded shared machine.
    assert took < budget, f"{label} took {took:.3f} s"


def runtime_on(clock: ManualClock, **kwargs: Any) -> JobRuntime:
    kwargs.setdefault("shutdown_grace", 0.05)
    return JobRuntime(clock=clock, **kwargs)


# -- the three timings of the done-when ----------------------------------------------------


async def test_a_week_of_cron_runs_in_milliseconds() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)
    fired: dict[str, list[datetime]] = {"nightly": [], "weekly": [], "sync": []}

    @runtime.cron("0 2 * * *", name="nightly")
    async def nightly(ctx: JobContext) -> None:
        fired["nightly"].append(datetime.fromtimestamp(ctx.fire_at or 0, UTC))

    @runtime.cron("0 1 * * 0", name="weekly")
    async def weekly(ctx: JobContext) -> None:
        fired["weekly"].append(datetime.fromtimestamp(ctx.fire_at or 0, UTC))

    @runtime.cron("0 */6 * * *", name="sync")
    async def sync(ctx: JobContext) -> None:
        fired["sync"].append(datetime.fromtimestamp(ctx.fire_at or 0, UTC))

    async with Harness(runtime) as harness:
        with timed("seven days of cron (7 + 1 + 28 runs)", budget=1.0):
            await harness.advance(timedelta(days=7))
        assert len(fired["nightly"]) == 7
        assert fired["weekly"] == [datetime(2026, 6, 7, 1, tzinfo=UTC)]
        assert len(fired["sync"]) == 28
        assert fired["sync"][0] == datetime(2026, 6, 1, 6, tzinfo=UTC)
        assert fired["sync"][-1] == datetime(2026, 6, 8, 0, tzinfo=UTC)
        assert fired["nightly"] == [MONDAY + timedelta(days=d, hours=2) for d in range(7)]
        harness.assert_ran(sync, ["complete"] * 28)
        await harness.assert_next_fire("nightly", datetime(2026, 6, 8, 2, tzinfo=UTC))
        await harness.assert_next_fire("weekly", datetime(2026, 6, 14, 1, tzinfo=UTC))


async def test_a_five_attempt_retry_chain_runs_in_milliseconds() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)
    attempts: list[datetime] = []

    @runtime.job(name="flaky", max_attempts=5, backoff=timedelta(minutes=1))
    async def flaky(ctx: JobContext) -> str:
        attempts.append(datetime.fromtimestamp(clock.now(), UTC))
        if not ctx.is_last_attempt:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        return "done"

    async with Harness(runtime) as harness:
        with timed("a five-attempt retry chain", budget=1.0):
            handle = await flaky.enqueue()
            await harness.advance(timedelta(hours=1))
        assert await handle.result(timeout=1) == "done"
        runs = harness.assert_ran(flaky, ["retrying"] * 4 + ["complete"])
        assert [run.attempt for run in runs] == [1, 2, 3, 4, 5]
        assert runs[0].error_type == "ConnectionError"
        assert attempts == [MONDAY + timedelta(minutes=m) for m in range(5)]


async def test_a_crashed_workers_job_is_recovered_in_milliseconds() -> None:
    clock = ManualClock(MONDAY)
    store = MemoryBackend()
    jobs = JobRegistry()
    ran: list[int] = []

    @jobs.job(name="report")
    async def report(n: int) -> None:
        ran.append(n)

    worker = runtime_on(clock, backend=store, lease=30)
    worker.include(jobs)
    web = runtime_on(clock, backend=store, role="enqueue")
    web.include(jobs)  # the last include enqueues: report.enqueue() goes through the web process
    async with web:
        handle = await report.enqueue(7)
        # A worker claims it and dies (its process is gone: no heartbeat, no outcome).
        [claimed] = await store.claim("default", 1, "crashed-worker", 30.0)
        assert claimed.id == handle.id
        async with Harness(worker) as harness:
            with timed("recovery of a crashed worker's job", budget=1.0):
                await advance([web, worker], timedelta(minutes=1))
            job = await handle.refresh()
            assert job.state is JobState.COMPLETE
            assert job.attempts == 2
            assert ran == [7]
            [run] = harness.assert_ran(report, ["complete"])
            # Recovered at the first heartbeat after the lease ran out (30 s, every 10 s).
            assert run.at == MONDAY + timedelta(seconds=30)


# -- the clock drives everything ----------------------------------------------------------


async def test_delays_run_at_their_time_and_jobs_enqueued_on_the_way_too() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)
    ran: list[tuple[str, datetime]] = []

    @runtime.job(name="reminder")
    async def reminder(to: str) -> None:
        ran.append((to, datetime.fromtimestamp(clock.now(), UTC)))
        if to == "first":
            await reminder.options(delay=timedelta(hours=2)).enqueue("second")

    async with Harness(runtime):
        await reminder.options(delay=timedelta(minutes=30)).enqueue("first")
        await advance(runtime, timedelta(minutes=29))
        assert ran == []
        await advance(runtime, timedelta(hours=3))
    assert ran == [
        ("first", MONDAY + timedelta(minutes=30)),
        ("second", MONDAY + timedelta(hours=2, minutes=30)),
    ]


async def test_explicit_retry_delays_and_exponential_backoff_follow_the_clock() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)
    seen: list[float] = []

    @runtime.job(name="snoozer", max_attempts=3)
    async def snoozer(ctx: JobContext) -> None:
        seen.append(clock.now() - MONDAY.timestamp())
        if ctx.attempt < 3:
            raise Retry(delay=timedelta(minutes=10 * ctx.attempt))

    async with Harness(runtime) as harness:
        await snoozer.enqueue()
        await harness.advance(timedelta(hours=1))
    assert seen == [0, 600, 1800]


async def test_interval_schedules_fire_on_the_clock() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)
    fires: list[float] = []

    @runtime.every(timedelta(minutes=15), start=MONDAY, name="poll")
    async def poll(ctx: JobContext) -> None:
        fires.append((ctx.fire_at or 0) - MONDAY.timestamp())

    async with Harness(runtime) as harness:
        await harness.advance(timedelta(hours=1))
        await harness.assert_next_fire("poll", MONDAY + timedelta(minutes=75))
    assert fires == [900, 1800, 2700, 3600]


async def test_heartbeats_renew_the_lease_of_a_long_job() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock, lease=30)
    release = anyio.Event()
    starts: list[float] = []

    @runtime.job(name="long")
    async def long() -> None:
        starts.append(clock.now())
        await release.wait()

    async with Harness(runtime) as harness:
        handle = await long.enqueue()
        steps = await harness.advance(timedelta(minutes=5), wait_for_jobs=False)
        assert steps >= 30  # every heartbeat while the job holds its lease
        job = await handle.refresh()
        assert job.state is JobState.RUNNING
        assert job.lease_expires_at is not None
        assert job.lease_expires_at > clock.now()  # renewed, not left to expire
        release.set()
        await harness.run_until_idle()
        assert (await handle.refresh()).state is JobState.COMPLETE
    assert len(starts) == 1  # never recovered and run twice


async def test_finished_jobs_are_pruned_after_their_retention() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock, retention={"complete": timedelta(hours=1)})

    @runtime.job(name="tiny")
    async def tiny() -> None: ...

    async with Harness(runtime) as harness:
        handle = await tiny.enqueue()
        await harness.run_until_idle()
        assert (await handle.refresh()).state is JobState.COMPLETE
        await harness.advance(timedelta(minutes=59))
        assert await runtime.get_job(handle.id) is not None
        await harness.advance(timedelta(minutes=2))
        assert await runtime.get_job(handle.id) is None


async def test_rate_limit_windows_open_on_the_clock() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(
        clock, queues={"partner": Queue(rate_limit=RateLimit(2, per=timedelta(minutes=1)))}
    )
    starts: list[float] = []

    @runtime.job(name="call_partner", queue="partner")
    async def call_partner(n: int) -> None:
        starts.append(clock.now() - MONDAY.timestamp())

    async with Harness(runtime) as harness:
        await runtime.enqueue_many([call_partner.call(n) for n in range(5)])
        await harness.advance(timedelta(minutes=5))
    assert starts == [0, 0, 60, 60, 120]


async def test_a_cancel_sent_from_another_runtime_reaches_the_worker_at_its_heartbeat() -> None:
    clock = ManualClock(MONDAY)
    store = MemoryBackend()
    worker = runtime_on(clock, backend=store, lease=30)
    web = runtime_on(clock, backend=store, role="enqueue")
    started = anyio.Event()

    @worker.job(name="stuck")
    async def stuck() -> None:
        started.set()
        await anyio.sleep_forever()

    web.include(worker._registry)
    async with Harness(worker) as harness, web:
        handle = await stuck.enqueue()
        await harness.advance(0, wait_for_jobs=False)
        assert started.is_set()
        await web.cancel(handle.id)  # another process: only the store knows
        assert (await handle.refresh()).state is JobState.RUNNING
        await advance([worker, web], timedelta(seconds=10), wait_for_jobs=False)
        assert (await handle.refresh()).state is JobState.CANCELLED
        harness.assert_ran(stuck, ["cancelled"])


# -- eager and manual modes ---------------------------------------------------------------


async def test_eager_mode_runs_the_handler_inside_enqueue() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)

    @runtime.job(name="double")
    async def double(n: int) -> int:
        return 2 * n

    @runtime.job(name="broken", max_attempts=2, backoff=60)
    async def broken() -> None:
        raise ValueError("nope")

    async with Harness(runtime, mode="eager") as harness:
        handle = await double.enqueue(21)
        assert handle.job.state is JobState.COMPLETE
        assert await handle.result(timeout=1) == 42
        failing = await broken.enqueue()
        assert failing.job.state is JobState.QUEUED  # waiting for its retry
        assert failing.job.due_at == clock.now() + 60
        await harness.advance(60)
        assert (await failing.refresh()).state is JobState.DEAD
        harness.assert_ran(broken, ["retrying", "dead"])


async def test_manual_mode_runs_nothing_until_run_until_idle() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)
    sent: list[str] = []

    @runtime.job(name="send")
    async def send(to: str, *, subject: str) -> None:
        sent.append(to)

    async with Harness(runtime, mode="manual") as harness:
        await send.enqueue("a@example.com", subject="hi")
        await send.options(priority=5).enqueue("b@example.com", subject="yo")
        await harness.advance(timedelta(minutes=5))
        assert sent == []
        await harness.assert_enqueued(send, "a@example.com", subject="hi")
        await harness.assert_enqueued(send.options(priority=5), to="b@example.com", subject="yo")
        await harness.run_until_idle()
        assert sorted(sent) == ["a@example.com", "b@example.com"]
        await send.enqueue("c@example.com", subject="later")
        assert len(sent) == 2


# -- assertions and their messages --------------------------------------------------------


async def test_assertion_messages_say_what_was_expected_and_what_there_is() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)

    @runtime.job(name="send")
    async def send(to: str) -> None: ...

    @runtime.cron("0 2 * * *", name="nightly")
    async def nightly() -> None: ...

    async with Harness(runtime, mode="manual") as harness:
        await send.options(delay=60).enqueue("a@example.com")
        with pytest.raises(AssertionError) as caught:
            await harness.assert_enqueued(send, "b@example.com")
        message = str(caught.value)
        assert "expected send('b@example.com') to be enqueued at least once, found 0" in message
        assert "- send('a@example.com') [state=queued, queue='default', delay=60]" in message
        with pytest.raises(AssertionError, match=r"with delay=30\.0 to be enqueued"):
            await harness.assert_enqueued(send.options(delay=30), "a@example.com")
        await harness.assert_enqueued(send.options(delay=60), "a@example.com", count=1)
        with pytest.raises(AssertionError, match=r"expected no send job, found 1"):
            await harness.assert_not_enqueued(send)
        with pytest.raises(AssertionError, match=r"expected send to run, got \[\]"):
            harness.assert_ran(send)
        with pytest.raises(
            AssertionError,
            match=r"expected schedule 'nightly' to fire next at 2026-06-02T02:00:00\+00:00, "
            r"but it fires 2026-06-01T02:00:00\+00:00",
        ):
            await harness.assert_next_fire("nightly", datetime(2026, 6, 2, 2, tzinfo=UTC))
        with pytest.raises(AssertionError, match=r"no schedule 'hourly' is stored"):
            await harness.assert_next_fire("hourly", None)
        [entry] = await harness.enqueued(send)
        assert entry.args == ("a@example.com",)


async def test_advance_refuses_a_clock_it_cannot_move() -> None:
    runtime = JobRuntime()
    async with runtime:
        with pytest.raises(ValueError, match="ManualClock"):
            await advance(runtime, 5)
    clocked = runtime_on(ManualClock())
    async with clocked:
        with pytest.raises(ValueError, match="forward"):
            await advance(clocked, -1)


# -- app resources ------------------------------------------------------------------------


async def test_handlers_read_the_apps_resources_as_ctx_state() -> None:
    clock = ManualClock(MONDAY)
    pool = {"dsn": "postgres://app"}
    runtime = runtime_on(clock, state=pool)
    seen: list[object] = []

    @runtime.job(name="uses_pool")
    async def uses_pool(ctx: JobContext) -> None:
        seen.append(ctx.state)

    async with Harness(runtime, mode="eager"):
        await uses_pool.enqueue()
    assert seen == [pool]


async def test_the_asgi_lifespan_state_is_ctx_state_too() -> None:
    clock = ManualClock(MONDAY)
    runtime = runtime_on(clock)
    seen: list[object] = []

    @runtime.job(name="uses_client")
    async def uses_client(ctx: JobContext) -> None:
        seen.append(ctx.state["client"])

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"client": "http-client"}

    app = Starlette(lifespan=combine(runtime, app_lifespan))
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        assert state["asyncjobs"] is runtime
        await uses_client.enqueue()
        await advance(runtime, 0)
    assert seen == ["http-client"]


# -- the pytest plugin --------------------------------------------------------------------


async def test_the_plugin_fixtures(
    asyncjobs_runtime: JobRuntime,
    asyncjobs_sqlite_runtime: JobRuntime,
    asyncjobs_clock: ManualClock,
    asyncjobs_anyio_backend: str,
) -> None:
    assert asyncjobs_anyio_backend == "asyncio"
    for runtime in (asyncjobs_runtime, asyncjobs_sqlite_runtime):
        assert runtime.clock is asyncjobs_clock

        @runtime.job(name="echo", max_attempts=2, backoff=5)
        async def echo(ctx: JobContext, word: str) -> str:
            if ctx.attempt == 1:
                raise ConnectionError("first try")
            return word

        async with Harness(runtime) as harness:
            handle = await echo.enqueue("hi")
            await harness.advance(10)
            assert await handle.result(timeout=5) == "hi"
            harness.assert_ran(echo, ["retrying", "complete"])
