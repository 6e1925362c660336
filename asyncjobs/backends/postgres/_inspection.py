"""Reads for the console, the CLI and tools (never the hot path), and the next due time.

Each is one statement on a pooled connection, so it reads one snapshot.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..._models import Attempt, Job, JobState, QueueStats
from ._codec import JOB_COLUMNS, tags_json, to_attempts, to_job
from ._database import NOW, Database

__all__ = ["Statements", "get_attempts", "get_job", "list_jobs", "next_due_at", "queue_stats"]


class Statements:
    """The inspection statements of one schema."""

    def __init__(self, q: str) -> None:
        self.q = q
        self.get = f"SELECT {JOB_COLUMNS} FROM {q}.jobs WHERE id = $1"
        self.attempts = f"SELECT history FROM {q}.jobs WHERE id = $1"
        # Counts per queue and state, with the delayed (queued, due later) and the
        # claimed (running, handler not started) among them; paused queues too.
        # A job waiting for its key's holder is delayed by its own due time only,
        # as in the other stores.
        self.stats = f"""
            WITH {NOW}
            SELECT queue, state, count(*) AS n,
                count(*) FILTER (WHERE state = 'queued'
                    AND coalesce(parked_due_at, due_at) > (SELECT now FROM t)) AS delayed,
                count(*) FILTER (WHERE state = 'running' AND started_at IS NULL) AS claimed
            FROM {q}.jobs WHERE ($2::text IS NULL OR partition = $2) GROUP BY queue, state
            UNION ALL
            SELECT name, NULL, 0, 0, 0 FROM {q}.queues WHERE paused
        """
        # One index probe (jobs_due) per unpaused queue; the jobs waiting for their
        # key's holder (due at infinity) are not due until it lets them go.
        self.next_due = f"""
            SELECT min(d.due_at) FROM unnest($1::text[]) AS n(queue)
            CROSS JOIN LATERAL (
                SELECT due_at FROM {q}.jobs
                WHERE state = 'queued' AND queue = n.queue AND due_at < 'infinity'
                ORDER BY due_at LIMIT 1
            ) AS d
            WHERE NOT EXISTS (SELECT 1 FROM {q}.queues WHERE name = n.queue AND paused)
        """


async def get_job(db: Database, job_id: str) -> Job | None:
    """Return one job, or ``None``."""
    row = await db.fetchrow("get_job", db.statements.inspection.get, job_id)
    return None if row is None else to_job(row)


async def get_attempts(db: Database, job_id: str) -> list[Attempt]:
    """Return a job's attempt history, oldest first."""
    row = await db.fetchrow("get_attempts", db.statements.inspection.attempts, job_id)
    return [] if row is None else to_attempts(row["history"])


async def list_jobs(
    db: Database,
    *,
    queue: str | None,
    state: JobState | None,
    name: str | None,
    schedule: str | None,
    partition: str | None,
    tags: Mapping[str, str] | None,
    enqueued_after: float | None,
    enqueued_before: float | None,
    limit: int,
    offset: int,
    after: str | None,
) -> list[Job]:
    """Return a page of jobs matching every given filter, newest enqueued first."""
    q = db.statements.inspection.q
    clauses: list[str] = []
    params: list[Any] = []

    def where(clause: str, value: Any) -> None:
        params.append(value)
        clauses.append(clause.format(f"${len(params)}"))

    for column, value in (
        ("queue", queue),
        ("state", None if state is None else str(state)),
        ("name", name),
        ("schedule", schedule),
        ("partition", partition),
    ):
        if value is not None:
            where(f"{column} = {{}}", value)
    if tags:
        where("tags @> {}::jsonb", tags_json(tags))
    if enqueued_after is not None:
        where("enqueued_at >= {}", enqueued_after)
    if enqueued_before is not None:
        where("enqueued_at < {}", enqueued_before)
    if after is not None:
        # An unknown cursor compares with NULL: an empty page.
        where(f"seq < (SELECT seq FROM {q}.jobs WHERE id = {{}})", after)
    sql = f"SELECT {JOB_COLUMNS} FROM {q}.jobs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    params += [max(0, limit), max(0, offset)]
    sql += f" ORDER BY seq DESC LIMIT ${len(params) - 1} OFFSET ${len(params)}"
    return [to_job(row) for row in await db.fetch("list_jobs", sql, *params)]


async def queue_stats(db: Database, *, partition: str | None) -> list[QueueStats]:
    """Count jobs per queue and state (of one *partition*, when given), in one snapshot."""
    rows = await db.fetch("queue_stats", db.statements.inspection.stats, db.now_arg(), partition)
    counts: dict[str, dict[JobState, int]] = {}
    paused: set[str] = set()
    claimed: dict[str, int] = {}
    delayed: dict[str, int] = {}
    for row in rows:
        queue, state = row["queue"], row["state"]
        per_state = counts.setdefault(queue, {})
        if state is None:
            paused.add(queue)
            continue
        per_state[JobState(state)] = int(row["n"])
        claimed[queue] = claimed.get(queue, 0) + int(row["claimed"])
        delayed[queue] = delayed.get(queue, 0) + int(row["delayed"])
    return [
        QueueStats(
            queue=queue,
            counts=per_state,
            paused=queue in paused,
            claimed=claimed.get(queue, 0),
            delayed=delayed.get(queue, 0),
        )
        for queue, per_state in sorted(counts.items())
    ]


async def next_due_at(db: Database, queues: Collection[str]) -> float | None:
    """Return the earliest ``due_at`` of queued jobs in the unpaused *queues*."""
    if not queues:
        return None
    rows = await db.fetch("next_due_at", db.statements.inspection.next_due, sorted(set(queues)))
    value: float | None = rows[0][0] if rows else None
    return value
