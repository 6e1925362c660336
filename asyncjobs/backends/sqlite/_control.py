"""Operator actions, seen by every process sharing the file: cancel, retry dead, pause,
prune, delete and purge.

Deleting a job frees its key, a throttle window's too, and drops its attempt
history: the delete triggers of schemas 5 and 6 do that, whichever statement
deletes the row. Cancelling or deleting a job releases the jobs waiting behind
it (the triggers of schema 7, see ``_keys.py``); this object's waiters wake then.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

from ..._models import FINISHED_STATES, Job, JobState
from ._codec import to_job
from ._database import Database
from ._keys import holders, take_key
from ._statements import JOB_COLUMNS, Row, all_rows, first_row, job_filters
from ._wakeups import Wakeups, bump
from ._writer import Tx

__all__ = ["cancel", "delete_job", "pause_queue", "prune", "purge", "retry_dead"]

# Rows deleted per prune transaction, so a big prune never holds the write lock long.
_PRUNE_BATCH = 5000


async def cancel(db: Database, wakeups: Wakeups, job_id: str) -> Job | None:
    """Cancel a queued job at once, or flag a running one for its worker."""

    def body(conn: sqlite3.Connection, tx: Tx) -> tuple[Job | None, bool]:
        row = first_row(conn, f"SELECT {JOB_COLUMNS} FROM asyncjobs_jobs WHERE id = ?", (job_id,))
        if row is None:
            return None, False
        job = to_job(row)
        released = False
        if job.state is JobState.QUEUED:
            # A holder queued between attempts: cancelling it releases the job behind it.
            released = job.key is not None and bool(
                first_row(conn, "SELECT 1 FROM asyncjobs_jobs WHERE waits_for = ?", (job_id,))
            )
            sql = (
                "UPDATE asyncjobs_jobs SET state = 'cancelled', finished_at = ?,"
                " lease_token = NULL, lease_expires_at = NULL WHERE id = ?"
                f" RETURNING {JOB_COLUMNS}"
            )
            row = first_row(conn, sql, (tx.now, job_id))
        elif job.state is JobState.RUNNING:
            sql = (
                "UPDATE asyncjobs_jobs SET cancel_requested = 1 WHERE id = ?"
                f" RETURNING {JOB_COLUMNS}"
            )
            row = first_row(conn, sql, (job_id,))
        else:
            return job, False
        assert row is not None
        return to_job(row), released

    job, released = await db.write("cancel", body, bounded=True)
    if released:
        wakeups.notify()
    return job


async def retry_dead(db: Database, wakeups: Wakeups, job_id: str, due_at: float) -> Job | None:
    """Queue a dead job again at *due_at*, unless another job holds its ``key`` meanwhile."""

    def body(conn: sqlite3.Connection, tx: Tx) -> tuple[Job | None, bool]:
        row = first_row(conn, f"SELECT {JOB_COLUMNS} FROM asyncjobs_jobs WHERE id = ?", (job_id,))
        if row is None:
            return None, False
        job = to_job(row)
        if job.state is not JobState.DEAD:
            return job, False
        rescope = ""
        if job.key is not None:
            hold = holders(conn, [job.key], tx.now).get(job.key)
            if hold is not None and hold.job.id != job.id:
                return job, False  # another job holds the key: reviving would break dedup
            if hold is None:
                # Revived, it holds its key while active, whatever scope it had; a
                # job still inside its own throttle window keeps that window.
                take_key(conn, job.key, job.id)
                rescope = ", key_scope = NULL"
        row = first_row(
            conn,
            "UPDATE asyncjobs_jobs SET state = 'queued', attempts = 0, finished_at = NULL,"
            " due_at = ?, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,"
            f" cancel_requested = 0{rescope} WHERE id = ? RETURNING {JOB_COLUMNS}",
            (due_at, job_id),
        )
        assert row is not None
        bump(conn, [job.queue])
        return to_job(row), True

    job, revived = await db.write("retry_dead", body, bounded=True)
    if revived:
        wakeups.notify()
    return job


async def pause_queue(db: Database, wakeups: Wakeups, queue: str, paused: bool) -> None:
    """Pause or resume *queue* for every process sharing the file."""
    if paused:
        sql = (
            "INSERT INTO asyncjobs_queues (name, paused) VALUES (?, 1)"
            " ON CONFLICT (name) DO UPDATE SET paused = 1"
        )
    else:
        # Resuming is new work for the queue's waiters, in every process.
        sql = (
            "INSERT INTO asyncjobs_queues (name, paused, wake_seq) VALUES (?, 0, 1)"
            " ON CONFLICT (name) DO UPDATE SET paused = 0, wake_seq = wake_seq + 1"
        )

    def body(conn: sqlite3.Connection, tx: Tx) -> None:
        conn.execute(sql, (queue,))

    await db.write("pause_queue", body, bounded=True, single=True)
    if not paused:
        wakeups.notify()


async def prune(db: Database, cutoffs: Mapping[JobState, float]) -> int:
    """Delete finished jobs older than their state's cutoff, a batch per statement."""
    deleted = 0
    for state in sorted(FINISHED_STATES & cutoffs.keys()):

        def body(
            conn: sqlite3.Connection,
            tx: Tx,
            state: JobState = state,
            cutoff: float = cutoffs[state],
        ) -> int:
            return len(
                all_rows(
                    conn,
                    "DELETE FROM asyncjobs_jobs WHERE seq IN ("
                    " SELECT seq FROM asyncjobs_jobs"
                    " WHERE state IN ('complete', 'dead', 'cancelled')"
                    " AND state = ? AND finished_at < ? LIMIT ?) RETURNING seq",
                    (state, cutoff, _PRUNE_BATCH),
                )
            )

        while True:
            # Small batches keep each write short: claims in other processes
            # never wait long behind a big prune.
            count = await db.write("prune", body, single=True)
            deleted += count
            if count < _PRUNE_BATCH:
                break
    return deleted


# A deleted keyed job may have had jobs waiting behind it (released by a trigger):
# the statement stays one (no count before and after, see ``_keys.waiting_count``)
# at the price of a spurious wake-up now and then.
_DELETED_KEYED: Final = "RETURNING key IS NOT NULL"


async def delete_job(db: Database, wakeups: Wakeups, job_id: str) -> bool:
    """Delete a job that is not running; ``False`` when there is none such."""

    def body(conn: sqlite3.Connection, tx: Tx) -> list[Row]:
        return all_rows(
            conn,
            f"DELETE FROM asyncjobs_jobs WHERE id = ? AND state <> 'running' {_DELETED_KEYED}",
            (job_id,),
        )

    rows = await db.write("delete_job", body, bounded=True, single=True)
    if any(keyed for (keyed,) in rows):
        wakeups.notify()
    return bool(rows)


async def purge(
    db: Database,
    wakeups: Wakeups,
    *,
    queue: str | None = None,
    state: JobState | None = None,
    name: str | None = None,
    partition: str | None = None,
    tags: Mapping[str, str] | None = None,
    finished_before: float | None = None,
) -> int:
    """Delete every job matching all given filters but running ones, a batch per statement."""
    if state is JobState.RUNNING:
        return 0
    clauses, params = job_filters(
        tags,
        queue=queue,
        state=None if state is None else str(state),
        name=name,
        partition=partition,
    )
    if finished_before is not None:
        clauses.append("finished_at < ?")
        params.append(finished_before)
    where = " AND ".join(["state <> 'running'", *clauses])
    sql = (
        "DELETE FROM asyncjobs_jobs WHERE seq IN"
        f" (SELECT seq FROM asyncjobs_jobs WHERE {where} LIMIT ?) {_DELETED_KEYED}"
    )

    def body(conn: sqlite3.Connection, tx: Tx) -> list[Row]:
        return all_rows(conn, sql, (*params, _PRUNE_BATCH))

    deleted = 0
    while True:
        # Batches, as for prune: claims elsewhere never wait long behind a big purge.
        rows = await db.write("purge", body, bounded=True, single=True)
        deleted += len(rows)
        if any(keyed for (keyed,) in rows):
            wakeups.notify()
        if len(rows) < _PRUNE_BATCH:
            return deleted
