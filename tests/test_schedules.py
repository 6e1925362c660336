"""Cron and interval schedules through the runtime, on every backend, with a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from asyncjobs import (
    CronTrigger,
    FixedBackoff,
    InvalidScheduleError,
    JobArgumentsError,
    JobContext,
    JobRuntime,
    JobState,
    ManualClock,
    ScheduleFired,
    ScheduleNotFound,
    UnknownQueueError,
)
from asyncjobs.testing import drain, wait_schedules
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """Start on a Monday at noon UTC."""
    return ManualClock(START)


async def fired_jobs(runtime: JobRuntime, schedule: str) -> list[float]:
    """The due times of the jobs *schedule* enqueued, oldest first."""
    return sorted(job.due_at for job in await runtime.list_jobs(schedule=schedule, limit=1000))


def ts(hour: int, minute: int, second: int = 0) -> float:
    return START.replace(hour=hour, minute=minute, second=second).timestamp()


async def test_cron_fires_each_tick_once(make_runtime: RuntimeFactory, clock: ManualClock) -> None:
    runtime = make_runtime()
    ran: list[float] = []

    @runtime.cron("*/5 * * * *")
    async def tick() -> None:
        ran.append(clock.now())

    with runtime.events.subscribe(ScheduleFired) as fired:
        async with runtime:
            [schedule] = await runtime.schedules.list()
            assert schedule.next_fire_at == ts(12, 5)
            for minute in (5, 10, 15):
                clock.set(ts(12, minute))
                event = await fired.wait_for(ScheduleFired)
                assert event.fire_at == ts(12, minute)
                await drain(runtime)
            assert await fired_jobs(runtime, schedule.name) == [ts(12, 5), ts(12, 10), ts(12, 15)]
    assert ran == [ts(12, 5), ts(12, 10), ts(12, 15)]


async def test_a_run_knows_its_tick_through_retries_and_a_manual_trigger(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime()
    seen: list[tuple[int, float | None, float]] = []

    @runtime.cron("*/5 * * * *", name="report")
    @runtime.job(max_attempts=2, backoff=FixedBackoff(10))
    async def report(ctx: JobContext) -> None:
        seen.append((ctx.attempt, ctx.fire_at, ctx.job.due_at))
        if ctx.attempt == 1 and ctx.fire_at == ts(12, 5):
            raise ConnectionError("flaky")

    @runtime.job()
    async def plain(ctx: JobContext) -> float | None:
        return ctx.fire_at

    async with runtime:
        clock.set(ts(12, 5))
        await drain(runtime)
        clock.advance(10)
        await drain(runtime)
        # The retry is due 10 s later, and still for the 12:05 tick.
        assert seen == [(1, ts(12, 5), ts(12, 5)), (2, ts(12, 5), ts(12, 5) + 10)]

        clock.set(ts(12, 7))
        handle = await runtime.schedules.trigger("report")
        await handle.result(timeout=10)
        assert seen[-1] == (1, ts(12, 7), ts(12, 7))
        assert (await handle.refresh()).fire_at == ts(12, 7)
        assert await (await plain.enqueue()).result(timeout=10) is None


async def test_seconds_field_and_interval(make_runtime: RuntimeFactory, clock: ManualClock) -> None:
    runtime = make_runtime()

    @runtime.cron("*/20 * * * * *", name="fast")
    async def fast() -> None:
        pass

    @runtime.every(timedelta(minutes=1), name="minutely")
    async def minutely() -> None:
        pass

    async with runtime:
        for step in range(1, 7):
            clock.set(START.timestamp() + 20 * step)
            await _settle(runtime)
        assert await fired_jobs(runtime, "fast") == [
            START.timestamp() + 20 * s for s in range(1, 7)
        ]
        assert await fired_jobs(runtime, "minutely") == [ts(12, 1), ts(12, 2)]


async def _settle(runtime: JobRuntime) -> None:
    """Let the scheduler loop finish its turn and the jobs run."""
    await drain(runtime)


async def test_many_runtimes_fire_each_tick_once(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtimes = [make_runtime() for _ in range(3)]
    for runtime in runtimes:

        @runtime.cron("* * * * *", name="shared")
        async def shared() -> None:
            pass

    async with runtimes[0], runtimes[1], runtimes[2]:
        for minute in range(1, 6):
            clock.set(ts(12, minute))
            for runtime in runtimes:
                await _settle(runtime)
        assert await fired_jobs(runtimes[0], "shared") == [ts(12, m) for m in range(1, 6)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("skip", []),
        ("once", [ts(12, 1)]),
        ("all", [ts(12, m) for m in range(1, 11)]),
    ],
)
async def test_misfire_policy_after_downtime(
    make_runtime: RuntimeFactory, clock: ManualClock, policy: str, expected: list[float]
) -> None:
    def build() -> JobRuntime:
        runtime = make_runtime()

        @runtime.cron("* * * * *", name="minutely", misfire=policy, grace=30)
        async def minutely() -> None:
            pass

        return runtime

    async with build():
        pass  # stores the schedule: next fire 12:01
    clock.set(ts(12, 10, 45))  # down for ten ticks, the last one 45 s ago (> grace)
    runtime = build()
    async with runtime:
        await _settle(runtime)
        assert await fired_jobs(runtime, "minutely") == expected
        [schedule] = await runtime.schedules.list()
        assert schedule.next_fire_at == ts(12, 11)


async def test_recent_tick_within_grace_runs_on_restart(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    def build() -> JobRuntime:
        runtime = make_runtime()

        @runtime.cron("0 * * * *", name="hourly", misfire="skip", grace=120)
        async def hourly() -> None:
            pass

        return runtime

    async with build():
        pass
    clock.set(ts(13, 1))  # the 13:00 tick is 60 s late: within grace, so it runs
    runtime = build()
    async with runtime:
        await _settle(runtime)
        assert await fired_jobs(runtime, "hourly") == [ts(13, 0)]


async def test_no_overlap_skips_ticks_while_the_last_run_is_active(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    # The clock jumps minutes at a time: a lease longer than the jumps keeps the
    # running job's claim (a heartbeat round could otherwise straddle a jump).
    runtime = make_runtime(lease=3600)
    release = anyio.Event()
    started = anyio.Event()

    @runtime.cron("* * * * *", name="slow", overlap=False)
    async def slow() -> None:
        started.set()
        await release.wait()

    async with runtime:
        clock.set(ts(12, 1))
        with anyio.fail_after(10):
            await started.wait()
        for minute in (2, 3):
            clock.set(ts(12, minute))
            await wait_schedules(runtime)
        jobs = await runtime.list_jobs(schedule="slow")
        assert [job.state for job in jobs] == [JobState.RUNNING]
        release.set()
        await drain(runtime)
        clock.set(ts(12, 4))
        await _settle(runtime)
        assert len(await runtime.list_jobs(schedule="slow")) == 2


async def test_dynamic_schedules_are_shared_and_operable(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    first = make_runtime()
    second = make_runtime()
    greeted: list[str] = []
    for runtime in (first, second):

        @runtime.job(name="greet")
        async def greet(who: str) -> None:
            greeted.append(who)

    async with first, second:
        schedule = await first.schedules.add(
            "greet", "0 9 * * *", timezone="Europe/Berlin", name="morning", args=("team",)
        )
        assert schedule.next_fire_at == datetime(2026, 3, 3, 8, 0, tzinfo=UTC).timestamp()
        seen = await second.schedules.get("morning")
        assert seen.next_fire_at == schedule.next_fire_at

        await second.schedules.pause("morning")
        clock.set(datetime(2026, 3, 3, 8, 0, 30, tzinfo=UTC))
        await _settle(first)
        await _settle(second)
        assert greeted == []

        await first.schedules.resume("morning")  # 30 s late, within the 60 s grace
        await _settle(first)
        await _settle(second)
        assert greeted == ["team"]

        handle = await second.schedules.trigger("morning")
        await handle.result(timeout=10)
        runs = await first.schedules.runs("morning")
        assert [run.state for run in runs] == [JobState.COMPLETE, JobState.COMPLETE]
        assert all(run.finished_at is not None and run.started_at is not None for run in runs)

        await first.schedules.remove("morning")
        assert await second.schedules.list() == []
        with pytest.raises(ScheduleNotFound, match="no schedule named 'morning'"):
            await second.schedules.pause("morning")


async def test_redeclaring_keeps_timing_and_a_new_trigger_replaces_it(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    def build(expression: str) -> JobRuntime:
        runtime = make_runtime()

        @runtime.cron(expression, name="report")
        async def report() -> None:
            pass

        return runtime

    async with build("0 * * * *") as runtime:
        [schedule] = await runtime.schedules.list()
        assert schedule.next_fire_at == ts(13, 0)
    clock.set(ts(12, 30))
    async with build("0 * * * *") as runtime:
        [schedule] = await runtime.schedules.list()
        assert schedule.next_fire_at == ts(13, 0)
    async with build("15 * * * *") as runtime:
        [schedule] = await runtime.schedules.list()
        assert schedule.next_fire_at == ts(13, 15)


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("61 * * * *", None, "out of range"),
        ("0 0 31 2 *", None, "can never fire"),
        ("* * *", None, "has 3 fields: expected 5"),
        ("0 9 * * *", "Mars/Olympus", "Mars/Olympus"),
    ],
)
async def test_bad_schedules_fail_at_declaration(
    expression: str, timezone: str | None, message: str
) -> None:
    runtime = JobRuntime()
    with pytest.raises(InvalidScheduleError, match=message):
        runtime.cron(expression, timezone=timezone)


async def test_bad_schedule_options() -> None:
    runtime = JobRuntime()
    with pytest.raises(InvalidScheduleError, match="misfire must be one of all, once, skip"):
        runtime.cron("* * * * *", misfire="sometimes")
    with pytest.raises(InvalidScheduleError, match="timezone= goes with a cron expression"):
        runtime.cron(CronTrigger("* * * * *"), timezone="UTC")
    with pytest.raises(InvalidScheduleError):
        runtime.every(0)
    with pytest.raises(UnknownQueueError):
        runtime.cron("* * * * *", queue="nope")

    with pytest.raises(JobArgumentsError, match="missing a required argument: 'who'"):

        @runtime.cron("* * * * *")
        async def needs_an_argument(who: str) -> None:
            pass
