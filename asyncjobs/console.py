"""The rich status view: renders a :class:`~asyncjobs._snapshot.Snapshot`, nothing else.

:func:`render` turns one snapshot into a rich renderable (queues, running
jobs, schedules, recent failures, rates); :func:`live` keeps one on screen,
taking a fresh snapshot from the store at every refresh. The snapshot is read
from the backend, so the view is the same from any process sharing it::

    from asyncjobs.console import live

    async with runtime:
        await live(runtime, seconds=30)

This module imports rich; ``import asyncjobs`` does not import it.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime

import anyio
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ._models import JobState
from ._runtime import JobRuntime
from ._snapshot import (
    DeadJob,
    QueueSnapshot,
    RateTracker,
    RunningJob,
    ScheduleSnapshot,
    Snapshot,
    format_duration,
    store_unreachable,
    take_snapshot,
)

__all__ = ["RateTracker", "Snapshot", "live", "render", "take_snapshot"]

_BAR_WIDTH = 8
_ID_WIDTH = 8  # job ids are 32 hex digits; the tail is the random, telling part


def render(snapshot: Snapshot) -> RenderableType:
    """Render *snapshot* as a rich renderable; reads nothing but the snapshot.

    :param snapshot: what to show, from :func:`take_snapshot`.
    :returns: a group of a summary panel and tables (queues always; running
        jobs, schedules and failures when there are any).
    """
    parts: list[RenderableType] = [_summary(snapshot), _queues_table(snapshot)]
    if snapshot.running:
        parts += [Text(), _running_table(snapshot)]
    if snapshot.schedules:
        parts += [Text(), _schedules_table(snapshot)]
    if snapshot.dead:
        parts += [Text(), _dead_section(snapshot)]
    return Group(*parts)


async def live(
    runtime: JobRuntime,
    refresh: float = 0.5,
    seconds: float | None = None,
    *,
    console: Console | None = None,
) -> None:
    """Show the status of *runtime*'s store, refreshed every *refresh* seconds.

    Runs until cancelled, or until *seconds* have passed. On a terminal the
    view is redrawn in place; elsewhere (a pipe, a file) only the last frame
    is printed when it ends.

    :param runtime: a started runtime, of any role.
    :param refresh: seconds between snapshots.
    :param seconds: stop after this many seconds; ``None`` runs until cancelled.
    :param console: where to draw (default: a new console on stdout).
    :raises ValueError: when *refresh* is not positive.
    """
    if not refresh > 0:
        raise ValueError(f"refresh must be positive seconds, not {refresh!r}")
    console = console if console is not None else Console()
    tracker = RateTracker()
    deadline = anyio.move_on_after(seconds) if seconds is not None else nullcontext()
    try:
        # auto_refresh=False: every frame is drawn right after its snapshot, so no
        # background thread redraws a stale frame.
        with Live(console=console, auto_refresh=False) as view, deadline:
            snapshot: Snapshot | None = None
            while True:
                try:
                    snapshot = await take_snapshot(runtime, rates=tracker)
                except Exception as exc:
                    # The store is away: keep showing the last figures, marked as such.
                    snapshot = store_unreachable(runtime, exc, snapshot)
                view.update(render(snapshot), refresh=True)
                await anyio.sleep(refresh)
    finally:
        if not console.is_terminal:
            # Off a terminal Live prints its last frame without a final newline.
            console.line()


# --------------------------------------------------------------------------- parts


def _summary(snapshot: Snapshot) -> Panel:
    counts = Text()
    counts.append(_clock_time(snapshot.taken_at) + " UTC", style="bold")
    counts.append("   ")
    _figure(counts, "running", snapshot.running_total, "cyan")
    _figure(counts, "queued", snapshot.total(JobState.QUEUED), "yellow")
    _figure(counts, "complete", snapshot.total(JobState.COMPLETE), "green")
    _figure(counts, "dead", snapshot.total(JobState.DEAD), "red")
    _figure(counts, "cancelled", snapshot.total(JobState.CANCELLED), "dim")
    rates = Text()
    if snapshot.rates is not None:
        rates.append(f"{snapshot.rates.completed:.1f}", style="bold green")
        rates.append(" completed/s   ")
        failed_style = "bold red" if snapshot.rates.failed else "dim"
        rates.append(f"{snapshot.rates.failed:.1f}", style=failed_style)
        rates.append(f" failed/s   over {format_duration(snapshot.rates.window)}")
    else:
        rates.append("rates: measuring…", style="dim")
    lines: list[RenderableType] = [counts, rates]
    store = snapshot.store
    if not store.reachable:
        warning = Text("store unreachable", style="bold red")
        if store.unreachable_since is not None:
            warning.append(f" since {_clock_time(store.unreachable_since)} UTC", style="red")
        if store.last_error:
            warning.append(f" ({store.last_error})", style="dim")
        warning.append(" · figures from the last read; workers retry", style="dim")
        lines.append(warning)
    if snapshot.latency is not None:
        latency = snapshot.latency
        lines.append(
            Text(
                f"wait p50 {format_duration(latency.wait_median)}"
                f"  max {format_duration(latency.wait_max)}"
                f"   run p50 {format_duration(latency.run_median)}"
                f"   (last {latency.sample} complete)"
            )
        )
    title = f"asyncjobs · {snapshot.backend}"
    if snapshot.worker_id is not None:
        title += f" · worker {snapshot.worker_id}"
    return Panel(Group(*lines), title=title, title_align="left", box=box.ROUNDED)


def _figure(line: Text, label: str, value: int, style: str) -> None:
    line.append(f"{value}", style=f"bold {style}" if value else "dim")
    line.append(f" {label}   ")


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        # One space and the divider between columns: 80 columns must hold the queues table.
        collapse_padding=True,
        header_style="dim",
    )


def _queues_table(snapshot: Snapshot) -> Table:
    table = _table("queues")
    table.add_column("queue", style="bold", overflow="fold", min_width=5)
    table.add_column("running", no_wrap=True)
    for header in ("queued", "later", "done", "dead", "cancel", "done/s", "dead/s"):
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    if not snapshot.queues:
        table.add_row(Text("no jobs yet", style="dim"))
    for queue in snapshot.queues:
        name = Text(queue.name)
        if queue.paused:
            name.append(" paused", style="bold yellow")
        elif queue.held_by:
            name.append(f" {_HELD.get(queue.held_by, queue.held_by)}", style="yellow")
        dead = queue.count(JobState.DEAD)
        table.add_row(
            name,
            _usage(queue),
            str(queue.count(JobState.QUEUED)),
            "?" if queue.delayed is None else str(queue.delayed),
            str(queue.count(JobState.COMPLETE)),
            Text(str(dead), style="red" if dead else ""),
            str(queue.count(JobState.CANCELLED)),
            _rate(snapshot, queue.name, failed=False),
            _rate(snapshot, queue.name, failed=True),
        )
    return table


#: How the queues table names the limit that holds a queue back.
_HELD = {
    "global_concurrency": "at global cap",
    "partition_concurrency": "partitions full",
    "rate_limit": "rate limited",
    "job_rate_limit": "job rate limited",
}


def _usage(queue: QueueSnapshot) -> Text:
    running = queue.running
    if queue.limit:
        text = _bar(running / queue.limit)
        text.append(f" {running}/{queue.limit}")
    else:
        # No limit known here (another process runs the queue): the count alone.
        text = Text(str(running))
    if queue.claimed:
        # Claimed ahead for a worker that is still busy: held, not running.
        text.append(f" +{queue.claimed}", style="dim")
    return text


def _bar(fraction: float, width: int = _BAR_WIDTH) -> Text:
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    # A sliver of progress still shows: a bar that reads "nothing" would mislead.
    if fraction > 0 and filled == 0:
        filled = 1
    text = Text()
    # Heavy for the filled part, light for the rest: the bar reads without colour too.
    text.append("━" * filled, style="green" if fraction >= 1 else "cyan")
    text.append("─" * (width - filled), style="grey23")
    return text


def _rate(snapshot: Snapshot, queue: str, *, failed: bool) -> str:
    if snapshot.rates is None:
        return "-"
    by_queue = snapshot.rates.failed_by_queue if failed else snapshot.rates.completed_by_queue
    return f"{by_queue.get(queue, 0.0):.1f}"


def _running_table(snapshot: Snapshot) -> Table:
    title = "running"
    if snapshot.running_total > len(snapshot.running):
        title += f" (longest {len(snapshot.running)} of {snapshot.running_total})"
    table = _table(title)
    # The worker column only tells something when another process runs some of the jobs.
    show_worker = any(job.worker_id != snapshot.worker_id for job in snapshot.running)
    table.add_column("job", style="bold", overflow="fold", min_width=8)
    table.add_column("id", style="dim", no_wrap=True)
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("", overflow="ellipsis", no_wrap=True, max_width=24)
    table.add_column("for", justify="right", no_wrap=True)
    if show_worker:
        table.add_column("worker", style="dim", overflow="fold")
    for job in snapshot.running:
        cells: list[RenderableType] = [
            job.name,
            _short_id(job.id),
            f"{job.attempt}/{job.max_attempts}",
            _progress(job),
            job.progress_message or "",
            "?" if job.elapsed is None else format_duration(job.elapsed),
        ]
        if show_worker:
            cells.append(job.worker_id or "?")
        table.add_row(*cells)
    return table


def _progress(job: RunningJob) -> Text:
    if job.progress is None:
        return Text("·" * _BAR_WIDTH + "    ", style="dim")
    text = _bar(job.progress)
    text.append(f" {job.progress * 100:3.0f}%")
    return text


def _schedules_table(snapshot: Snapshot) -> Table:
    table = _table("schedules")
    # A schedule is usually named after its job: then one column says both.
    show_job = any(schedule.job_name != schedule.name for schedule in snapshot.schedules)
    table.add_column("schedule", style="bold", overflow="fold")
    if show_job:
        table.add_column("job", overflow="fold")
    table.add_column("trigger", overflow="fold")
    table.add_column("next fire (UTC)", no_wrap=True)
    table.add_column("last fire", justify="right", no_wrap=True)
    for schedule in snapshot.schedules:
        cells: list[RenderableType] = [schedule.name]
        if show_job:
            cells.append(schedule.job_name)
        cells += [
            schedule.trigger,
            _next_fire(schedule, snapshot.taken_at),
            _ago(schedule.last_fire_at, snapshot.taken_at),
        ]
        table.add_row(*cells)
    return table


def _next_fire(schedule: ScheduleSnapshot, now: float) -> Text:
    if schedule.paused:
        return Text("paused", style="yellow")
    if schedule.next_fire_at is None:
        return Text("never", style="dim")
    delta = schedule.next_fire_at - now
    when = f"in {format_duration(delta)}" if delta >= 0 else f"{format_duration(-delta)} late"
    return Text(f"{_clock_time(schedule.next_fire_at)} ({when})")


def _ago(moment: float | None, now: float) -> str:
    return "-" if moment is None else f"{format_duration(now - moment)} ago"


def _dead_section(snapshot: Snapshot) -> Group:
    # Two lines a job, not a table: error messages are long, and a table column
    # squeezed into what is left of 80 characters folds them into a tall ribbon.
    lines: list[RenderableType] = [Text("recent failures (dead)", style="bold")]
    for job in snapshot.dead:
        head = Text(job.name, style="bold")
        head.append(f"  {job.id}", style="dim")
        attempts = f"{job.attempts} attempt" + ("" if job.attempts == 1 else "s")
        head.append(f"  {job.queue}  {attempts}  {_ago(job.finished_at, snapshot.taken_at)}")
        head.no_wrap = True
        head.overflow = "ellipsis"
        error = Text("  " + _error_text(job), style="red", no_wrap=True, overflow="ellipsis")
        lines.extend([head, error])
    return Group(*lines)


def _error_text(job: DeadJob) -> str:
    # The module path of the error type is noise at a glance; `asyncjobs jobs` shows it.
    short_type = None if job.error_type is None else job.error_type.rpartition(".")[2]
    if short_type is None:
        return job.error_message or "?"
    return f"{short_type}: {job.error_message}" if job.error_message else short_type


def _short_id(job_id: str) -> str:
    return job_id if len(job_id) <= _ID_WIDTH else "…" + job_id[-_ID_WIDTH:]


def _clock_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S")
