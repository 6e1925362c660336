"""Dedup keys: which job holds a key, judged by the holder's scope, and taking a key.

``asyncjobs_keys`` names, per key, the job that took it last, with that job's
``key_scope`` and ``key_expires_at``. Its primary key is what makes one job
the holder however many processes race a key: the lookup and the take run in
the same write transaction (the writer's ``BEGIN IMMEDIATE``). Whether the
named job still holds the key is judged from its row when the key is next
wanted, so claiming or finishing a job writes nothing here:

- ``queued``: while the job waits for its first claim (queued, no attempt);
- ``active``: while it is queued or running;
- ``window``: until ``expires_at``, whatever its state. Pruning the job ends
  the hold (the delete trigger of schema 5 drops its row).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable
from typing import Final

import attrs

from ..._models import Job, JobState, KeyScope
from ._codec import to_job
from ._statements import JOB_COLUMNS, all_rows, chunked, marks

__all__ = ["HOLDERS_SQL", "KeyHold", "holders", "take_keys"]

_JOB_COLUMNS_OF_J: Final = ", ".join(f"j.{column.strip()}" for column in JOB_COLUMNS.split(","))
#: The stored takers of some keys (``{marks}``: one ``?`` per key), with their jobs.
HOLDERS_SQL: Final = (
    f"SELECT k.scope, k.expires_at, {_JOB_COLUMNS_OF_J}"
    " FROM asyncjobs_keys AS k JOIN asyncjobs_jobs AS j ON j.id = k.job_id"
    " WHERE k.key IN ({marks})"
)
_TAKE_SQL: Final = """
    INSERT INTO asyncjobs_keys (key, job_id, scope, expires_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET
        job_id = excluded.job_id, scope = excluded.scope, expires_at = excluded.expires_at
"""


@attrs.frozen
class KeyHold:
    """A key's last taker, as stored: it holds the key while :meth:`holds` says so."""

    job: Job
    scope: KeyScope
    expires_at: float | None

    def holds(self, now: float) -> bool:
        """Whether :attr:`job` still holds its key at *now*."""
        if self.scope is KeyScope.WINDOW:
            return self.expires_at is not None and self.expires_at > now
        if self.scope is KeyScope.QUEUED:
            return self.job.state is JobState.QUEUED and self.job.attempts == 0
        return self.job.state in (JobState.QUEUED, JobState.RUNNING)


def holders(conn: sqlite3.Connection, keys: Collection[str], now: float) -> dict[str, KeyHold]:
    """The jobs holding *keys* at *now* (inside the caller's write transaction)."""
    found: dict[str, KeyHold] = {}
    for chunk in chunked(sorted(keys)):
        rows = all_rows(conn, HOLDERS_SQL.format(marks=marks(len(chunk))), chunk)
        for scope, expires_at, *job_row in rows:
            hold = KeyHold(to_job(tuple(job_row)), KeyScope(scope), expires_at)
            if hold.job.key is not None and hold.holds(now):
                found[hold.job.key] = hold
    return found


def take_keys(
    conn: sqlite3.Connection, takes: Iterable[tuple[str, str, KeyScope, float | None]]
) -> None:
    """Record ``(key, job_id, scope, expires_at)`` takes, in order (a later one wins)."""
    conn.executemany(
        _TAKE_SQL, [(key, job_id, str(scope), expires) for key, job_id, scope, expires in takes]
    )
