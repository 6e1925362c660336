"""How the ``asyncjobs`` store commands show records as text (``--json``: :mod:`._cli_json`).

Jobs list as one row of text per job (a table on a terminal, tab-separated
values when piped); the other records as rich tables or key/value views,
laid out to fit 80 columns and to read without colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._explain import Explanation
from ._models import Job, JobState, Schedule
from ._operating import AuditEntry, Health, JobDetail, Percentiles, QueueOverview, WorkerInfo
from ._snapshot import describe_trigger, format_duration

_JOB_COLUMNS = ("id", "name", "queue", "state", "attempts", "when", "detail")
_STATE_STYLES = {
    JobState.QUEUED.value: "yellow",
    JobState.RUNNING.value: "cyan",
    JobState.COMPLETE.value: "green",
    JobState.DEAD.value: "red",
    JobState.CANCELLED.value: "dim",
}


def _job_row(job: Job, now: float) -> tuple[str, ...]:
    return (
        job.id,
        job.name,
        job.queue,
        job.state.value,
        f"{job.attempts}/{job.max_attempts}",
        _when(job, now),
        _detail(job),
    )


def _jobs_table(rows: Sequence[tuple[str, ...]]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="dim",
    )
    table.add_column("id", no_wrap=True, min_width=32)  # whole: retry and cancel take it
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("queue", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("when", justify="right", no_wrap=True)
    # The one column that wraps, so a narrow terminal folds the detail, not the id.
    table.add_column("detail", overflow="fold")
    for row in rows:
        state = row[3]
        table.add_row(*row[:3], Text(state, style=_STATE_STYLES[state]), *row[4:])
    return table


def _when(job: Job, now: float) -> str:
    if job.state is JobState.QUEUED:
        wait = job.due_at - now
        return f"in {format_duration(wait)}" if wait > 0 else "due now"
    if job.state is JobState.RUNNING and job.started_at is not None:
        return f"for {format_duration(now - job.started_at)}"
    if job.finished_at is not None:
        return f"{format_duration(now - job.finished_at)} ago"
    return ""


def _detail(job: Job) -> str:
    if job.state is JobState.RUNNING and job.cancel_requested:
        return "cancel requested"
    if job.state is JobState.RUNNING and job.progress is not None:
        message = f" {job.progress_message}" if job.progress_message else ""
        return f"{job.progress * 100:.0f}%{message}"
    if job.error is not None and job.state is not JobState.COMPLETE:
        # A queued job with an error is waiting to retry after it.
        prefix = "last error: " if job.state is JobState.QUEUED else ""
        return f"{prefix}{job.error.type}: {job.error.message}"
    return ""


# --------------------------------------------------------------------------- text views


def _table(*, title: str | None = None) -> Table:
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="dim",
    )


def _moment(moment: float | None, now: float) -> str:
    """``2026-11-23 16:13:01 UTC (12s ago)``, or ``-``."""
    if moment is None:
        return "-"
    text = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = moment - now
    relative = f"in {format_duration(delta)}" if delta > 0 else f"{format_duration(-delta)} ago"
    return f"{text} ({relative})"


def _clock(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S")


def _record(rows: Sequence[tuple[str, RenderableType]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def detail_view(detail: JobDetail, now: float) -> Group:
    """``asyncjobs jobs show``: the record, then the attempt history."""
    job = detail.job
    state = Text(job.state.value, style=_STATE_STYLES[job.state.value])
    if job.cancel_requested and job.state is JobState.RUNNING:
        state.append(" (cancel requested)")
    rows: list[tuple[str, RenderableType]] = [
        ("id", job.id),
        ("name", Text(job.name, style="bold")),
        ("queue", job.queue),
        ("state", state),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("priority", str(job.priority)),
        ("enqueued", _moment(job.enqueued_at, now)),
        ("due", _moment(job.due_at, now)),
    ]
    if job.started_at is not None:
        rows.append(("started", _moment(job.started_at, now)))
    if job.finished_at is not None:
        rows.append(("finished", _moment(job.finished_at, now)))
    if job.state is JobState.RUNNING:
        rows.append(("worker", job.worker_id or "?"))
        rows.append(("lease until", _moment(job.lease_expires_at, now)))
    if job.progress is not None:
        message = f" {job.progress_message}" if job.progress_message else ""
        rows.append(("progress", f"{job.progress * 100:.0f}%{message}"))
    if job.timeout is not None:
        rows.append(("timeout", format_duration(job.timeout)))
    for label, value in (
        ("key", job.key),
        ("waits for", job.waits_for),
        ("partition", job.partition),
    ):
        if value is not None:
            rows.append((label, value))
    if job.schedule is not None:
        rows.append(("schedule", f"{job.schedule} (tick {_moment(job.fire_at, now)})"))
    if job.tags:
        rows.append(
            ("tags", ", ".join(f"{key}={value}" for key, value in sorted(job.tags.items())))
        )
    if job.error is not None:
        label = "error" if job.state is not JobState.QUEUED else "last error"
        rows.append((label, Text(f"{job.error.type}: {job.error.message}", style="red")))
    parts: list[RenderableType] = [_record(rows), Text()]
    if not detail.attempts:
        parts.append(Text("no attempt has ended yet", style="dim"))
        return Group(*parts)
    table = _table(title=f"attempts ({len(detail.attempts)})")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("worker", overflow="fold")
    table.add_column("error", overflow="fold")
    for attempt in detail.attempts:
        took = (
            "-"
            if attempt.started_at is None
            else format_duration(attempt.finished_at - attempt.started_at)
        )
        error = ""
        if attempt.error_type is not None:
            error = attempt.error_type.rpartition(".")[2]
            if attempt.error_message:
                error += f": {attempt.error_message}"
        table.add_row(
            str(attempt.number),
            Text(attempt.outcome, style=_OUTCOME_STYLES.get(attempt.outcome, "")),
            _clock(attempt.started_at),
            took,
            attempt.worker_id or "-",
            error,
        )
    parts.append(table)
    return Group(*parts)


_OUTCOME_STYLES = {"complete": "green", "dead": "red", "retry": "yellow", "cancelled": "dim"}


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def queues_table(queues: Sequence[QueueOverview], window: float) -> Group:
    """``asyncjobs queues list``: counts, then rates and timings (two tables, to fit 80 columns)."""
    counts = _table()
    counts.add_column("queue", style="bold", no_wrap=True)
    for header in ("waiting", "later", "running", "claimed", "complete", "dead", "cancelled"):
        counts.add_column(header, justify="right", no_wrap=True)
    timings = _table(title=f"last {format_duration(window)}")
    timings.add_column("queue", style="bold", no_wrap=True)
    for header in ("done/min", "failed", "wait p50", "p95", "run p50", "p95", "oldest"):
        timings.add_column(header, justify="right", no_wrap=True)
    for queue in queues:
        name = Text(queue.queue)
        if queue.paused:
            name.append(" paused", style="bold yellow")
        elif queue.held_by:
            name.append(f" held: {queue.held_by}", style="yellow")
        dead = queue.counts.get(JobState.DEAD, 0)
        counts.add_row(
            name,
            str(queue.waiting),
            str(queue.delayed),
            str(queue.running),
            str(queue.claimed),
            str(queue.counts.get(JobState.COMPLETE, 0)),
            Text(str(dead), style="red" if dead else ""),
            str(queue.counts.get(JobState.CANCELLED, 0)),
        )
        timings.add_row(
            queue.queue,
            f"{queue.completed_per_minute:.1f}",
            "-" if queue.failure_rate is None else f"{queue.failure_rate * 100:.0f}%",
            *_timing(queue.wait),
            *_timing(queue.run),
            _seconds(queue.oldest_waiting),
        )
    return Group(counts, Text(), timings)


def _timing(value: Percentiles | None) -> tuple[str, str]:
    if value is None:
        return ("-", "-")
    return (format_duration(value.p50), format_duration(value.p95))


def _next_fire(schedule: Schedule, now: float) -> str:
    if schedule.paused:
        return "paused"
    if schedule.next_fire_at is None:
        return "never"
    delta = schedule.next_fire_at - now
    return f"in {format_duration(delta)}" if delta >= 0 else f"{format_duration(-delta)} late"


def _last_run(runs: Sequence[Job], now: float) -> Text:
    if not runs:
        return Text("-")
    last = runs[0]
    text = Text(last.state.value, style=_STATE_STYLES[last.state.value])
    text.append(f" {format_duration(now - (last.fire_at or last.enqueued_at))} ago")
    return text


def schedules_table(schedules: Sequence[tuple[Schedule, Sequence[Job]]], now: float) -> Table:
    """``asyncjobs schedules list``."""
    table = _table()
    show_job = any(schedule.job_name != schedule.name for schedule, _ in schedules)
    # Queues and exact times are in `schedules show`: this has to fit 80 columns.
    table.add_column("schedule", style="bold", no_wrap=True)
    if show_job:
        table.add_column("job", overflow="fold")
    table.add_column("trigger", overflow="fold")
    table.add_column("next fire", no_wrap=True)
    table.add_column("last run", no_wrap=True)
    for schedule, runs in schedules:
        cells: list[RenderableType] = [schedule.name]
        if show_job:
            cells.append(schedule.job_name)
        cells += [
            describe_trigger(schedule.trigger),
            _next_fire(schedule, now),
            _last_run(runs, now),
        ]
        table.add_row(*cells)
    return table


def schedule_view(schedule: Schedule, runs: Sequence[Job], now: float) -> Group:
    """``asyncjobs schedules show``: the schedule, then its recent runs."""
    rows: list[tuple[str, RenderableType]] = [
        ("schedule", Text(schedule.name, style="bold")),
        ("job", schedule.job_name),
        ("queue", schedule.queue),
        ("trigger", describe_trigger(schedule.trigger)),
        ("state", "paused" if schedule.paused else "active"),
        (
            "next fire",
            "never" if schedule.next_fire_at is None else _moment(schedule.next_fire_at, now),
        ),
        ("last fire", _moment(schedule.last_fire_at, now)),
        ("misfire", f"{schedule.misfire} (grace {format_duration(schedule.grace)})"),
        ("overlap", "allowed" if schedule.overlap else "not while a run is active"),
    ]
    parts: list[RenderableType] = [_record(rows), Text()]
    if runs:
        parts.append(Text(f"recent runs ({len(runs)})", style="bold"))
        parts.append(_jobs_table([_job_row(job, now) for job in runs]))
    else:
        parts.append(Text("no runs in the store", style="dim"))
    return Group(*parts)


def workers_table(workers: Sequence[WorkerInfo], now: float) -> Table:
    """``asyncjobs workers``."""
    table = _table()
    table.add_column("worker", style="bold", overflow="fold")
    table.add_column("role", no_wrap=True)
    table.add_column("queues", overflow="fold")
    table.add_column("running", justify="right", no_wrap=True)
    table.add_column("jobs", justify="right", no_wrap=True)
    table.add_column("up", justify="right", no_wrap=True)
    table.add_column("seen", justify="right", no_wrap=True)
    for worker in workers:
        queues = " ".join(f"{name}={limit}" for name, limit in worker.queues.items()) or "-"
        running = f"{worker.running}/{worker.pool}" if worker.pool else str(worker.running)
        table.add_row(
            worker.id,
            worker.role,
            queues,
            running,
            str(len(worker.jobs)),
            format_duration(now - worker.started_at) if worker.started_at else "-",
            f"{format_duration(now - worker.last_seen)} ago",
        )
    return table


def explanation_view(explanation: Explanation, now: float) -> Table:
    """``asyncjobs explain``: the sentence first, then the facts behind it."""
    rows: list[tuple[str, RenderableType]] = [
        ("job", explanation.job_id),
        ("why", Text(explanation.message, style="bold")),
        ("reason", explanation.reason),
    ]
    if explanation.until is not None:
        rows.append(("until", _moment(explanation.until, now)))
    rows.extend((key, value) for key, value in explanation.details.items())
    return _record(rows)


def health_view(health: Health) -> Group:
    """``asyncjobs health``: the verdict, each check, and the reasons."""
    verdict = (
        Text("healthy", style="bold green")
        if health.healthy
        else Text("unhealthy", style="bold red")
    )
    rows: list[tuple[str, RenderableType]] = [
        (name, Text("ok", style="green") if passed else Text("FAIL", style="bold red"))
        for name, passed in health.checks.items()
    ]
    parts: list[RenderableType] = [verdict, _record(rows)]
    parts.extend(Text(f"- {reason}", style="red") for reason in health.reasons)
    return Group(*parts)


def audit_lines(entries: Sequence[AuditEntry]) -> Text:
    """``asyncjobs audit``: one line an action, like a log (targets are whole, for copying)."""
    text = Text()
    actor_width = max(len(entry.actor) for entry in entries)
    action_width = max(len(entry.action) for entry in entries)
    for entry in entries:
        text.append(datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
        text.append(f"  {entry.actor:<{actor_width}}  ")
        text.append(f"{entry.action:<{action_width}}", style="bold")
        text.append(f"  {entry.target}  ")
        text.append(entry.outcome, style="green" if entry.outcome.startswith("ok") else "yellow")
        text.append("\n")
    text.rstrip()
    return text
