"""Operator actions, seen by every process sharing the database: cancel, retry a dead job,
pause a queue, prune, delete and purge.

Pruning deletes in bounded batches (``_PRUNE_BATCH`` rows a statement, each its
own transaction), so a big prune never holds locks long nor bloats one
transaction; a deleted job lets go of its key in the same statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..._models import FINISHED_STATES, Job, JobState
from ._codec import JOB_COLUMNS, tags_json, to_job
from ._database import NOW, Database
from ._enqueue import holders, lock_names, server_now, wake

__all__ = [
    "Statements",
    "cancel",
    "delete_job",
    "pause_queue",
    "prune",
    "purge",
    "retry_dead",
]

_PRUNE_BATCH: Final = 5000


class Statements:
    """The queue-control statements of one schema."""

    def __init__(self, q: str) -> None:
        self.get = f"SELECT {JOB_COLUMNS} FROM {q}.jobs WHERE id = $1"
        self.get_locked = f"SELECT {JOB_COLUMNS} FROM {q}.jobs WHERE id = $1 FOR UPDATE"
        self.cancel = f"""
            WITH {NOW}
            UPDATE {q}.jobs SET
                state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                finished_at = CASE WHEN state = 'queued' THEN (SELECT now FROM t)
                    ELSE finished_at END,
                cancel_requested = CASE WHEN state = 'running' THEN true
                    ELSE cancel_requested END
            WHERE id = $2 AND state IN ('queued', 'running')
            RETURNING {JOB_COLUMNS}
        """
        self.revive = f"""
            UPDATE {q}.jobs SET state = 'queued', attempts = 0, finished_at = NULL,
                due_at = $2, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                cancel_requested = false,
                key_scope = CASE WHEN $3 THEN NULL ELSE key_scope END
            WHERE id = $1 RETURNING {JOB_COLUMNS}
        """
        self.take_key = (
            f"INSERT INTO {q}.keys (key, job_id) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id"
        )
        self.pause = (
            f"INSERT INTO {q}.queues (name, paused) VALUES ($1, true)"
            " ON CONFLICT (name) DO UPDATE SET paused = true"
        )
        self.resume = (
            f"WITH w AS (INSERT INTO {q}.queues (name, paused, wake_seq) VALUES ($1, false, 1)"
            f" ON CONFLICT (name) DO UPDATE SET paused = false,"
            f" wake_seq = {q}.queues.wake_seq + 1 RETURNING name)"
            " SELECT pg_notify($2, name) IS NULL FROM w"
        )
        # A deleted job lets go of the key it took (a window key too).
        drop_keys = (
            f"DELETE FROM {q}.keys USING d WHERE {q}.keys.key = d.key AND {q}.keys.job_id = d.id"
        )
        self.prune = f"""
            WITH d AS (
                DELETE FROM {q}.jobs WHERE seq IN (
                    SELECT seq FROM {q}.jobs
                    WHERE state IN ('complete', 'dead', 'cancelled')
                    AND state = $1 AND finished_at < $2 LIMIT $3
                ) RETURNING id, key
            ), k AS ({drop_keys})
            SELECT count(*) FROM d
        """
        self.delete = f"""
            WITH d AS (
                DELETE FROM {q}.jobs WHERE id = $1 AND state <> 'running' RETURNING id, key
            ), k AS ({drop_keys})
            SELECT count(*) FROM d
        """
        self.purge = f"""
            WITH d AS (
                DELETE FROM {q}.jobs WHERE seq IN (
                    SELECT seq FROM {q}.jobs WHERE state <> 'running'
                    AND ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR state = $2)
                    AND ($3::text IS NULL OR name = $3) AND ($4::text IS NULL OR partition = $4)
                    AND ($5::jsonb IS NULL OR tags @> $5)
                    AND ($6::float8 IS NULL OR finished_at < $6)
                    LIMIT $7
                ) RETURNING id, key
            ), k AS ({drop_keys})
            SELECT count(*) FROM d
        """


async def cancel(db: Database, job_id: str) -> Job | None:
    """Cancel a queued job at once, or flag a running one for its worker."""
    statements = db.statements.control
    row = await db.fetchrow("cancel", statements.cancel, db.now_arg(), job_id)
    if row is None:  # finished or unknown: as it is
        row = await db.fetchrow("cancel", statements.get, job_id)
    return None if row is None else to_job(row)


async def retry_dead(db: Database, job_id: str, due_at: float) -> Job | None:
    """Queue a dead job again at *due_at*, unless another job holds its ``key`` meanwhile."""
    statements = db.statements.control
    async with db.transaction("retry_dead") as conn:
        row = await conn.fetchrow(statements.get, job_id)
        if row is None:
            return None
        job = to_job(row)
        if job.state is not JobState.DEAD:
            return job
        if job.key is not None:
            # The key's lock first (as enqueue takes it), then the row.
            await conn.execute(db.statements.enqueue.lock, lock_names(db, [job.key], []))
        row = await conn.fetchrow(statements.get_locked, job_id)
        if row is None:
            return None
        job = to_job(row)
        if job.state is not JobState.DEAD:
            return job
        rescope = False
        if job.key is not None:
            hold = (await holders(conn, db, [job.key])).get(job.key)
            if hold is not None and not hold.holds(await server_now(conn, db)):
                hold = None
            if hold is not None and hold.job.id != job.id:
                return job  # another job holds the key: reviving would break dedup
            if hold is None:
                # Revived, it holds its key while active, whatever scope it had; a
                # job still inside its own throttle window keeps that window.
                await conn.execute(statements.take_key, job.key, job.id)
                rescope = True
        row = await conn.fetchrow(statements.revive, job_id, due_at, rescope)
        assert row is not None
        await wake(conn, db, [job.queue])
        return to_job(row)


async def pause_queue(db: Database, queue: str, paused: bool) -> None:
    """Pause or resume *queue* for every process; resuming wakes its waiters."""
    statements = db.statements.control
    if paused:
        await db.execute("pause_queue", statements.pause, queue)
    else:
        await db.fetch("pause_queue", statements.resume, queue, db.channel)


async def prune(db: Database, cutoffs: Mapping[JobState, float]) -> int:
    """Delete finished jobs older than their state's cutoff, a batch per statement."""
    deleted = 0
    for state in sorted(FINISHED_STATES & cutoffs.keys()):
        while True:
            rows = await db.fetch(
                "prune", db.statements.control.prune, str(state), cutoffs[state], _PRUNE_BATCH
            )
            count = int(rows[0][0])
            deleted += count
            if count < _PRUNE_BATCH:
                break
    return deleted


async def delete_job(db: Database, job_id: str) -> bool:
    """Delete a job that is not running; ``False`` when there is none or it runs."""
    rows = await db.fetch("delete_job", db.statements.control.delete, job_id)
    return int(rows[0][0]) > 0


async def purge(
    db: Database,
    *,
    queue: str | None,
    state: JobState | None,
    name: str | None,
    partition: str | None,
    tags: Mapping[str, str] | None,
    finished_before: float | None,
) -> int:
    """Delete every matching job that is not running, a batch per statement."""
    deleted = 0
    while True:
        rows = await db.fetch(
            "purge",
            db.statements.control.purge,
            queue,
            None if state is None else str(state),
            name,
            partition,
            tags_json(tags) if tags else None,
            finished_before,
            _PRUNE_BATCH,
        )
        count = int(rows[0][0])
        deleted += count
        if count < _PRUNE_BATCH:
            return deleted
