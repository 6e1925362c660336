"""New jobs: the insert statements, dedup by ``key``, and handing a new job to an idle worker.

Dedup is enforced by a unique partial index on ``key`` over queued and running
jobs (``_schema.py``), checked inside the writer's exclusive transaction:
however many processes race one key, one job is created. A plain enqueue
without keys is one multi-row ``INSERT`` (its trigger bumps the queue's wake
counter), so one trip to the writer thread.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from typing import Final

import attrs

from ..._models import Handoff, Job, JobState, NewJob
from ._codec import insert_row, to_job
from ._database import Database
from ._statements import JOB_COLUMNS, NOW_CTE, Row, all_rows, chunked, marks
from ._wakeups import Wakeups
from ._writer import Tx

__all__ = ["enqueue", "insert_jobs"]

_INSERT_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')"
_INSERT_HEAD: Final = """
    INSERT INTO asyncjobs_jobs
        (id, name, queue, payload, due_at, enqueued_at, priority,
         max_attempts, timeout, key, schedule, fire_at, state)
    VALUES """
_INSERT_SQL: Final = _INSERT_HEAD + _INSERT_ROW
# A new job handed to an idle worker of the enqueueing process: inserted already
# claimed when its queue is not paused and holds no due job that a claim would
# take first (same priority or better: those are also earlier in due time or
# order), else inserted queued as usual. One statement either way.
_INSERT_CLAIMED_SQL: Final = f"""
    WITH {NOW_CTE}, gate(ok) AS (
        SELECT NOT EXISTS (SELECT 1 FROM asyncjobs_queues WHERE name = ? AND paused = 1)
        AND NOT EXISTS (
            SELECT 1 FROM asyncjobs_jobs INDEXED BY asyncjobs_jobs_claim
            WHERE state = 'queued' AND queue = ? AND priority <= ?
            AND due_at <= (SELECT now FROM t)
        )
    )
    INSERT INTO asyncjobs_jobs
        (id, name, queue, payload, due_at, enqueued_at, priority,
         max_attempts, timeout, key, schedule, fire_at, state, attempts,
         lease_token, lease_expires_at, worker_id, started_at)
    SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
        CASE WHEN ok THEN 'running' ELSE 'queued' END, ok,
        CASE WHEN ok THEN lower(hex(randomblob(16))) END,
        CASE WHEN ok THEN (SELECT now FROM t) + ? END, CASE WHEN ok THEN ? END,
        CASE WHEN ok THEN (SELECT now FROM t) END
    FROM gate
    RETURNING state, lease_token, lease_expires_at, started_at
"""
#: The most jobs one multi-row INSERT binds (SQLite caps a statement's parameters).
_MAX_INSERT_ROWS: Final = 500


def insert_jobs(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert *jobs* inside the caller's transaction, returning active key matches."""
    by_key: dict[str, Job] = {}
    keys = sorted({new.key for new in jobs if new.key is not None})
    for chunk in chunked(keys):
        rows = all_rows(
            conn,
            f"SELECT {JOB_COLUMNS} FROM asyncjobs_jobs"
            " WHERE key IS NOT NULL AND state IN ('queued', 'running')"
            f" AND key IN ({marks(len(chunk))})",
            chunk,
        )
        by_key.update((job.key, job) for job in map(to_job, rows) if job.key is not None)
    stored: list[Job] = []
    rows_to_insert: list[Row] = []
    for new in jobs:
        if new.key is not None:
            existing = by_key.get(new.key)
            if existing is not None:
                stored.append(existing)
                continue
        job = new.queued()
        if new.key is not None:
            by_key[new.key] = job
        stored.append(job)
        rows_to_insert.append(insert_row(new))
    if len(rows_to_insert) == 1:
        conn.execute(_INSERT_SQL, rows_to_insert[0])
    elif rows_to_insert:
        # The insert trigger bumps the queues' wake counters.
        conn.executemany(_INSERT_SQL, rows_to_insert)
    return stored


async def enqueue(
    db: Database, wakeups: Wakeups, jobs: Sequence[NewJob], handoff: Handoff | None
) -> list[Job]:
    """Insert *jobs* in one transaction; a matching active ``key`` returns that job."""
    if not jobs:
        return []

    [first, *others] = jobs
    now = db.clock.now()
    if (
        handoff is not None
        and not others
        and first.key is None
        and first.due_at <= now
        and handoff.limits.get(first.queue, 0) > 0
    ):
        job = await _insert_claimed(db, first, handoff)
        if job.state is JobState.QUEUED:
            wakeups.notify()
        return [job]
    if len(jobs) <= _MAX_INSERT_ROWS and all(new.key is None for new in jobs):
        # Nothing to look up first: one INSERT statement. The parameters are a
        # tuple, never an iterator, so the statement can run again.
        sql = _INSERT_HEAD + ", ".join([_INSERT_ROW] * len(jobs))
        parameters = tuple(itertools.chain.from_iterable(map(insert_row, jobs)))

        def insert(conn: sqlite3.Connection, tx: Tx) -> list[Job]:
            conn.execute(sql, parameters)
            return [new.queued() for new in jobs]

        stored = await db.write("enqueue", insert, bounded=True, single=True)
    else:

        def body(conn: sqlite3.Connection, tx: Tx) -> list[Job]:
            return insert_jobs(conn, jobs)

        stored = await db.write("enqueue", body, bounded=True)
    wakeups.notify()
    return stored


async def _insert_claimed(db: Database, new: NewJob, handoff: Handoff) -> Job:
    """Insert *new*, claimed for the handoff's worker when it is next in line."""
    db.stalls.note_lease(handoff.lease)

    def body(conn: sqlite3.Connection, tx: Tx) -> Job:
        # The lease starts when the lock is held (asyncjobs_now() in the SQL).
        parameters = (
            new.queue,
            new.queue,
            new.priority,
            *insert_row(new),
            handoff.lease,
            handoff.worker_id,
        )
        [(state, token, expires, started)] = all_rows(conn, _INSERT_CLAIMED_SQL, parameters)
        job = new.queued()
        if state != JobState.RUNNING:
            return job
        return attrs.evolve(
            job,
            state=JobState.RUNNING,
            attempts=1,
            lease_token=token,
            lease_expires_at=expires,
            worker_id=handoff.worker_id,
            started_at=started,
        )

    return await db.write("enqueue", body, bounded=True, single=True)
