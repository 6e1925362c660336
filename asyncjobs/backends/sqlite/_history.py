"""Attempt history: each attempt that ended, kept per job in ``asyncjobs_attempts``.

Rows are keyed by the job's ``seq`` and a count of its recorded attempts (see
schema 6 in ``_schema.py``).

The write that ends an attempt records it in the same transaction: a settle
(one ``INSERT ... SELECT`` per batch of outcomes, run before the outcomes are
applied, so it reads the attempt's number and worker before a requeue clears
them, and judges the lease token as the outcome's ``UPDATE`` does) and a
lease sweep (one ``INSERT ... SELECT`` over the expired leases). ``seq``
counts a job's recorded attempts, so keeping the latest
:data:`~asyncjobs._models.MAX_ATTEMPT_HISTORY` is a range delete on the
primary key, run only for the jobs that went past it. A deleted job takes its
history with it (a trigger of schema 6).
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from ..._models import MAX_ATTEMPT_HISTORY, Attempt, ErrorInfo
from ._database import Database
from ._statements import Row, all_rows, chunked, rows_of

__all__ = ["get_attempts", "record_expired", "record_outcomes"]

_NEXT_SEQ: Final = (
    "coalesce((SELECT max(a.seq) FROM asyncjobs_attempts AS a WHERE a.job_seq = j.seq), 0) + 1"
)
_COLUMNS: Final = (
    "job_seq, seq, number, worker_id, started_at, finished_at, outcome, error_type, error_message"
)
# One row per outcome: (id, token, started_at, outcome, error_type, error_message).
_OUTCOMES_SQL: Final = (
    "WITH o(id, token, started_at, outcome, error_type, error_message) AS (VALUES {values})"
    f" INSERT INTO asyncjobs_attempts ({_COLUMNS})"
    f" SELECT j.seq, {_NEXT_SEQ}, j.attempts, j.worker_id, coalesce(o.started_at, j.started_at),"
    " ?, o.outcome, o.error_type, o.error_message"
    " FROM o JOIN asyncjobs_jobs AS j"
    " ON j.id = o.id AND j.lease_token = o.token AND j.state = 'running'"
    " RETURNING job_seq, seq"
)
_EXPIRED_SQL: Final = (
    f"INSERT INTO asyncjobs_attempts ({_COLUMNS})"
    f" SELECT j.seq, {_NEXT_SEQ}, j.attempts, j.worker_id, j.started_at, ?, 'lease_expired', ?, ?"
    " FROM asyncjobs_jobs AS j WHERE j.state = 'running' AND j.lease_expires_at <= ?"
    " RETURNING job_seq, seq"
)
_TRIM_SQL: Final = "DELETE FROM asyncjobs_attempts WHERE job_seq = ? AND seq <= ?"
_READ_SQL: Final = (
    "SELECT number, worker_id, started_at, finished_at, outcome, error_type, error_message"
    " FROM asyncjobs_attempts"
    " WHERE job_seq = (SELECT seq FROM asyncjobs_jobs WHERE id = ?) ORDER BY seq"
)


def record_outcomes(conn: sqlite3.Connection, attempts: Sequence[Row], now: float) -> None:
    """Record the attempts that *attempts* end, for the jobs whose lease they hold.

    Each row is ``(job_id, lease_token, started_at, outcome, error_type,
    error_message)``; run it before the outcomes' ``UPDATE``, in its transaction.
    """
    for chunk in chunked(attempts, per_item=6):
        sql = _outcomes_sql(len(chunk))
        _trim(conn, all_rows(conn, sql, [*itertools.chain.from_iterable(chunk), now]))


@functools.lru_cache(maxsize=64)
def _outcomes_sql(count: int) -> str:
    return _OUTCOMES_SQL.format(values=rows_of(6, count))


def record_expired(conn: sqlite3.Connection, now: float, error: ErrorInfo) -> None:
    """Record an attempt ``"lease_expired"`` for each running job whose lease ran out at *now*."""
    _trim(conn, all_rows(conn, _EXPIRED_SQL, (now, error.type, error.message, now)))


def _trim(conn: sqlite3.Connection, added: list[Row]) -> None:
    """Keep the latest attempts of the jobs that just went past the limit."""
    over: list[tuple[Any, ...]] = [
        (job_seq, seq - MAX_ATTEMPT_HISTORY) for job_seq, seq in added if seq > MAX_ATTEMPT_HISTORY
    ]
    if over:
        conn.executemany(_TRIM_SQL, over)


async def get_attempts(db: Database, job_id: str) -> list[Attempt]:
    """A job's attempt history, oldest first (empty for an unknown job)."""
    rows = await db.read("get_attempts", _READ_SQL, (job_id,))
    return [
        Attempt(
            number=number,
            worker_id=worker_id,
            started_at=started_at,
            finished_at=finished_at,
            outcome=outcome,
            error_type=error_type,
            error_message=error_message,
        )
        for number, worker_id, started_at, finished_at, outcome, error_type, error_message in rows
    ]
