"""How ``asyncjobs jobs`` shows jobs: one row of text per job, and the terminal table."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from ._models import Job, JobState
from ._snapshot import format_duration

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
