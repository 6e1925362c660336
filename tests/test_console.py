"""Snapshots from the store, rate arithmetic, and the rich rendering of both."""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from asyncjobs import (
    JobCompleted,
    JobContext,
    JobDied,
    JobProgress,
    JobRuntime,
    JobState,
    ManualClock,
)
from asyncjobs._snapshot import (
    RateTracker,
    Snapshot,
    describe_trigger,
    format_duration,
    take_snapshot,
)
from asyncjobs._triggers import CronTrigger, IntervalTrigger
from asyncjobs.backends.sqlite import SQLiteBackend
from asyncjobs.console import live, render

pytestmark = pytest.mark.anyio

QUEUES = {"default": 2, "reports": 1, "emails": 3}


def text_of(snapshot: Snapshot, width: int = 120) -> str:
    """Render *snapshot* the way a terminal of *width* columns shows it, as plain text."""
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(snapshot))
    return console.export_text()


class Busy:
    """A runtime with jobs in every state, and a report job held running until released."""

    def __init__(self, runtime: JobRuntime, clock: ManualClock) -> None:
        self.runtime = runtime
        self.clock = clock
        self.release = anyio.Event()
        self.report_id = ""
        self.dead_id = ""
        self.delayed_id = ""


@pytest.fixture
async def busy(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Busy]:
    runtime = JobRuntime(
        SQLiteBackend(tmp_path / "jobs.db"),
        queues=QUEUES,
        clock=clock,
        shutdown_grace=0.05,
        worker_id="test-worker",
    )
    state = Busy(runtime, clock)

    @runtime.job(name="build_report", queue="reports")
    async def build_report(ctx: JobContext, pages: int) -> int:
        await ctx.progress(0.4, "rendering page 2")
        await state.release.wait()
        return pages

    @runtime.job(name="charge_card", max_attempts=1)
    async def charge_card(order: int) -> None:
        raise ValueError(f"order {order}: card declined")

    @runtime.job(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    runtime.cron("0 2 * * *", timezone="Europe/Berlin", name="nightly-cleanup", args=(1, 1))(add)

    @runtime.job(name="send_email", queue="emails")
    async def send_email(to: str) -> None:
        raise AssertionError("the emails queue is paused")

    async with runtime:
        await runtime.pause("emails")
        with runtime.events.subscribe() as events:
            report = await build_report.enqueue(pages=3)
            await events.wait_for(JobProgress, lambda e: e.job_id == report.id)
            with anyio.fail_after(10):
                # The worker reports a handler's start within a moment of it.
                while (await report.refresh()).started_at is None:
                    await anyio.sleep(0.01)
            dead = await charge_card.enqueue(42)
            await events.wait_for(JobDied, lambda e: e.job_id == dead.id)
            pending = {(await add.enqueue(n, 1)).id for n in range(3)}
            while pending:
                pending.discard((await events.wait_for(JobCompleted)).job_id)
        delayed = await add.options(delay=3600).enqueue(1, 2)
        await send_email.enqueue("a@example.com")
        await send_email.enqueue("b@example.com")
        cancelled = await add.options(delay=60).enqueue(5, 5)
        await runtime.cancel(cancelled.id)
        state.report_id, state.dead_id, state.delayed_id = report.id, dead.id, delayed.id
        try:
            yield state
        finally:
            state.release.set()


async def test_snapshot_reads_every_state_from_the_store(busy: Busy) -> None:
    clock = busy.clock
    clock.advance(2.5)  # the report has been running 2.5 s
    snapshot = await take_snapshot(busy.runtime)

    assert snapshot.taken_at == clock.now()
    assert snapshot.worker_id == "test-worker"
    assert [queue.name for queue in snapshot.queues] == ["default", "emails", "reports"]
    default, emails, reports = snapshot.queues
    assert default.limit == 2
    assert default.count(JobState.COMPLETE) == 3
    assert default.count(JobState.DEAD) == 1
    assert default.count(JobState.CANCELLED) == 1
    assert (default.count(JobState.QUEUED), default.due, default.delayed) == (1, 0, 1)
    assert emails.paused
    assert (emails.count(JobState.QUEUED), emails.due, emails.delayed) == (2, 2, 0)
    assert not reports.paused
    assert reports.count(JobState.RUNNING) == 1
    assert snapshot.total(JobState.COMPLETE) == 3

    assert snapshot.running_total == 1
    [running] = snapshot.running
    assert running.id == busy.report_id
    assert (running.name, running.queue, running.worker_id) == (
        "build_report",
        "reports",
        "test-worker",
    )
    assert (running.attempt, running.max_attempts) == (1, 3)
    assert (running.progress, running.progress_message) == (0.4, "rendering page 2")
    assert running.elapsed == 2.5

    [dead] = snapshot.dead
    assert dead.id == busy.dead_id
    assert (dead.error_type, dead.error_message) == ("ValueError", "order 42: card declined")
    assert dead.attempts == 1

    [schedule] = snapshot.schedules
    assert schedule.name == "nightly-cleanup"
    assert schedule.trigger == "cron '0 2 * * *' Europe/Berlin"
    assert schedule.job_name == "add"
    # 02:00 in Berlin is 01:00 UTC in winter: an hour after the clock's start.
    assert schedule.next_fire_at == clock.now() - 2.5 + 3600
    assert schedule.last_fire_at is None

    # The manual clock stood still while the jobs ran: no wait, no run time.
    assert snapshot.latency is not None
    assert (snapshot.latency.wait_median, snapshot.latency.run_median) == (0.0, 0.0)
    assert snapshot.latency.sample == 3
    assert snapshot.rates is None


# A second connection to a file in use warns on SQLite builds with the WAL-reset bug.
@pytest.mark.filterwarnings("ignore::asyncjobs.backends.sqlite.UnsafeSQLiteWarning")
async def test_snapshot_from_an_enqueue_runtime_sharing_the_store(
    busy: Busy, tmp_path: Path, clock: ManualClock
) -> None:
    # What `asyncjobs status` sees from another process: the same store, no limits.
    observer = JobRuntime(SQLiteBackend(tmp_path / "jobs.db"), role="enqueue", clock=clock)
    async with observer:
        mine = await take_snapshot(busy.runtime)
        theirs = await take_snapshot(observer)
    assert theirs.worker_id is None
    assert [queue.limit for queue in theirs.queues] == [None, None, None]
    assert [dict(q.counts) for q in theirs.queues] == [dict(q.counts) for q in mine.queues]
    assert [job.id for job in theirs.running] == [busy.report_id]
    assert "running" in text_of(theirs)


async def test_render_shows_queues_running_jobs_schedules_and_failures(busy: Busy) -> None:
    busy.clock.advance(2.5)
    tracker = RateTracker()
    await take_snapshot(busy.runtime, rates=tracker)
    busy.clock.advance(2.0)
    text = text_of(await take_snapshot(busy.runtime, rates=tracker))

    lines = text.splitlines()
    assert "1 running   3 queued   3 complete   1 dead   1 cancelled" in text
    assert "0.0 completed/s   0.0 failed/s   over 2s" in text
    assert "wait p50 0ms  max 0ms   run p50 0ms   (last 3 complete)" in text
    [default_row] = [line for line in lines if line.startswith("default ")]
    assert default_row.split()[1:] == ["────────", "0/2", "1", "1", "3", "1", "1", "0.0", "0.0"]
    [emails_row] = [line for line in lines if line.startswith("emails")]
    assert emails_row.split()[:4] == ["emails", "paused", "────────", "0/3"]
    [reports_row] = [line for line in lines if line.startswith("reports")]
    assert "━━━━━━━━ 1/1" in reports_row
    [report_row] = [line for line in lines if line.startswith("build_report")]
    assert "…" + busy.report_id[-8:] in report_row
    # Without colour the filled part still shows: heavy glyphs, then light ones.
    assert "━━━───── " in report_row
    assert "40%" in report_row
    assert "rendering page 2" in report_row
    assert report_row.rstrip().endswith("4.5s")
    assert "worker" not in report_row  # all jobs run here: no worker column
    [schedule_row] = [line for line in lines if line.startswith("nightly-cleanup")]
    assert "cron '0 2 * * *' Europe/Berlin" in schedule_row
    assert schedule_row.split()[1] == "add"
    assert schedule_row.split()[-4:] == ["01:00:00", "(in", "59m55s)", "-"]
    assert "recent failures (dead)" in text
    assert f"charge_card  {busy.dead_id}  default  1 attempt  4.5s ago" in text
    assert "  ValueError: order 42: card declined" in text


async def test_render_fits_80_columns(busy: Busy) -> None:
    text = text_of(await take_snapshot(busy.runtime), width=80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    # Queue names stay whole on one line at 80 columns.
    assert any(line.startswith("default ") for line in lines)
    assert any(line.startswith("reports ") for line in lines)


async def test_render_of_an_empty_store(tmp_path: Path, clock: ManualClock) -> None:
    async with JobRuntime(
        SQLiteBackend(tmp_path / "empty.db"), role="enqueue", clock=clock
    ) as runtime:
        snapshot = await take_snapshot(runtime)
    assert snapshot.queues == ()
    assert snapshot.running == ()
    assert snapshot.dead == ()
    assert snapshot.latency is None
    text = text_of(snapshot)
    assert "no jobs yet" in text
    assert "rates: measuring…" in text
    assert "recent failures" not in text


async def test_live_draws_frames_until_its_time_is_up(busy: Busy) -> None:
    console = Console(record=True, width=120, force_terminal=False, file=io.StringIO())
    await live(busy.runtime, refresh=0.01, seconds=0.1, console=console)
    text = console.export_text()
    assert "build_report" in text
    assert "ValueError: order 42: card declined" in text


async def test_live_rejects_a_bad_refresh(busy: Busy) -> None:
    with pytest.raises(ValueError, match="refresh must be positive"):
        await live(busy.runtime, refresh=0)


async def test_importing_asyncjobs_does_not_import_rich() -> None:
    code = "import sys, asyncjobs, asyncjobs.backends; sys.exit('rich' in sys.modules)"
    result = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert result.returncode == 0


def test_rate_tracker_needs_two_observations() -> None:
    tracker = RateTracker(window=10)
    assert tracker.observe(100.0, {"done": 5}) is None
    assert tracker.elapsed() == 0.0
    assert tracker.observe(102.0, {"done": 9}) == {"done": 2.0}
    assert tracker.elapsed() == 2.0


def test_rate_tracker_averages_over_its_window() -> None:
    tracker = RateTracker(window=10)
    tracker.observe(0.0, {"done": 0})
    tracker.observe(5.0, {"done": 50})
    assert tracker.observe(10.0, {"done": 60}) == {"done": 6.0}
    # At 20 the observation at 10 is the base: (60 -> 80) over 10 s.
    assert tracker.observe(20.0, {"done": 80}) == {"done": 2.0}
    assert tracker.elapsed() == 10.0


def test_rate_tracker_never_reports_negative_rates() -> None:
    # Pruning deletes completed jobs and a retry moves a job out of dead: counts fall.
    tracker = RateTracker(window=60)
    tracker.observe(0.0, {"done": 100, "dead": 4})
    tracker.observe(1.0, {"done": 10, "dead": 3})  # 100 pruned, one dead retried
    assert tracker.observe(2.0, {"done": 14, "dead": 3}) == {"done": 2.0, "dead": 0.0}


def test_rate_tracker_counters_may_appear_later() -> None:
    tracker = RateTracker()
    tracker.observe(0.0, {})
    assert tracker.observe(4.0, {"complete:new": 8}) == {"complete:new": 2.0}


def test_rate_tracker_ignores_a_repeated_time() -> None:
    tracker = RateTracker()
    tracker.observe(1.0, {"done": 1})
    assert tracker.observe(1.0, {"done": 3}) is None


def test_rate_tracker_rejects_a_bad_window() -> None:
    with pytest.raises(ValueError, match="window must be positive"):
        RateTracker(window=0)


def test_describe_trigger() -> None:
    assert describe_trigger(CronTrigger("*/5 * * * *").to_json()) == "cron '*/5 * * * *'"
    assert describe_trigger(IntervalTrigger(90).to_json()) == "every 1m30s"
    assert describe_trigger("not json") == "not json"
    assert describe_trigger('{"type": "other"}') == '{"type": "other"}'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0123, "12ms"),
        (-3, "0ms"),
        (4.25, "4.2s"),
        (30, "30s"),
        (185, "3m05s"),
        (7620, "2h07m"),
        (273_600, "3d04h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
