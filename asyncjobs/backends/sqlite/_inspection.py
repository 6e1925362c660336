"""Reads for the console, the CLI and tools, on the read connection: never on the hot path.

(A job's attempt history is read in ``_history.py``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..._models import Job, JobState, QueueStats
from ._codec import to_job
from ._database import Database
from ._statements import JOB_COLUMNS, job_filters

__all__ = ["get_job", "list_jobs", "queue_stats"]

# Counts per queue and state, with the delayed (queued, due later) and the
# claimed (running, handler not started) among them. Without a partition every
# count but the claimed one comes from an index: queued from the claim index,
# finished ones from the prune index; the running jobs (few) are read through
# the lease index. Paused queues come from their table.
_QUEUE_STATS_SQL: Final = """
    SELECT queue, 'queued', COUNT(*), SUM(due_at > ?) FROM asyncjobs_jobs
    WHERE state = 'queued'{partition} GROUP BY queue
    UNION ALL
    SELECT queue, 'running', COUNT(*), SUM(started_at IS NULL) FROM asyncjobs_jobs
    WHERE state = 'running'{partition} GROUP BY queue
    UNION ALL
    SELECT queue, state, COUNT(*), 0 FROM asyncjobs_jobs
    WHERE state IN ('complete', 'dead', 'cancelled'){partition} GROUP BY queue, state
    UNION ALL
    SELECT name, NULL, 0, 0 FROM asyncjobs_queues WHERE paused = 1
"""


async def get_job(db: Database, job_id: str) -> Job | None:
    """Return one job, or ``None``."""
    rows = await db.read(
        "get_job", f"SELECT {JOB_COLUMNS} FROM asyncjobs_jobs WHERE id = ?", (job_id,)
    )
    return to_job(rows[0]) if rows else None


async def list_jobs(
    db: Database,
    *,
    queue: str | None = None,
    state: JobState | None = None,
    name: str | None = None,
    schedule: str | None = None,
    partition: str | None = None,
    tags: Mapping[str, str] | None = None,
    enqueued_after: float | None = None,
    enqueued_before: float | None = None,
    limit: int = 100,
    offset: int = 0,
    after: str | None = None,
) -> list[Job]:
    """Return a page of jobs matching every given filter, newest enqueued first.

    *after* is the id of the last job of the previous page: the page goes on
    from that job's place in enqueue order (an unknown id matches nothing).
    """
    clauses, params = job_filters(
        tags,
        queue=queue,
        state=None if state is None else str(state),
        name=name,
        schedule=schedule,
        partition=partition,
    )
    if enqueued_after is not None:
        clauses.append("enqueued_at >= ?")
        params.append(enqueued_after)
    if enqueued_before is not None:
        clauses.append("enqueued_at < ?")
        params.append(enqueued_before)
    if after is not None:
        clauses.append("seq < (SELECT seq FROM asyncjobs_jobs WHERE id = ?)")
        params.append(after)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await db.read(
        "list_jobs",
        f"SELECT {JOB_COLUMNS} FROM asyncjobs_jobs{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
        (*params, max(0, limit), max(0, offset)),
    )
    return [to_job(row) for row in rows]


async def queue_stats(db: Database, *, partition: str | None = None) -> list[QueueStats]:
    """Count jobs per queue and state (of one *partition*, when given), in one snapshot."""
    now = db.clock.now()
    parameters: list[Any]
    if partition is None:
        sql, parameters = _QUEUE_STATS_SQL.format(partition=""), [now]
    else:
        sql = _QUEUE_STATS_SQL.format(partition=" AND partition = ?")
        parameters = [now, partition, partition, partition]
    counts: dict[str, dict[JobState, int]] = {}
    paused: set[str] = set()
    # Of the queued count, the delayed; of the running count, the claimed.
    split: dict[tuple[str, str], int] = {}
    for queue, state, count, part in await db.read("queue_stats", sql, parameters):
        per_state = counts.setdefault(queue, {})
        if state is None:
            paused.add(queue)
        else:
            per_state[JobState(state)] = count
            split[queue, state] = int(part or 0)
    return [
        QueueStats(
            queue=queue,
            counts=per_state,
            paused=queue in paused,
            claimed=split.get((queue, "running"), 0),
            delayed=split.get((queue, "queued"), 0),
        )
        for queue, per_state in sorted(counts.items())
    ]
