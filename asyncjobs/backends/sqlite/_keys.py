"""Dedup keys: which job holds a key, judged by the holder's scope.

``asyncjobs_keys`` names, per key, the job that took it last; the job's row
says for how long it holds it (``key_scope``, ``key_expires_at``). The table's
primary key is what makes one job the holder however many processes race a
key: the lookup here and the insert that takes the key (the insert trigger of
schema 5) run in the same write transaction (the writer's ``BEGIN
IMMEDIATE``). Whether the named job still holds the key is judged from its row
when the key is next wanted, so finishing a job writes nothing here:

- ``queued``: while the job waits for its first claim; the claim drops its row
  (a trigger of schema 6), so a job released back to the queue holds it no more;
- ``active`` (also a job stored before schema 5): while it is queued or running;
- ``window``: until ``key_expires_at``, whatever its state. Deleting the job
  (pruned, purged, deleted, removed at settle) ends the hold: the delete
  trigger of schema 5 drops its row.

The waiting rule: an ``on_conflict="replace"`` job meeting a running holder is
inserted anyway, taking the key, and waits for that job: ``waits_for`` names
it, and its due time is parked (``due_at`` is +infinity, the due time is in
``parked_due_at``: no claim, handoff or ``next_due_at`` reaches it, though it
counts as queued). A later replace updates the waiting job, which keeps waiting
(``_enqueue.py`` writes the parked column then). The holder may be retried any
number of times; once it is finished (complete, dead, cancelled) or its row is
deleted, the triggers of schema 7 clear ``waits_for``, give ``due_at`` back and
bump the wake counters, whatever statement ended it, in whichever process. A
write in this process that may have released a job also wakes this object's
waiters (:func:`waiting_count` tells).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Final

import attrs

from ..._models import Job, JobState, KeyScope
from ._codec import to_job
from ._statements import JOB_COLUMNS, all_rows, chunked, marks

__all__ = ["HOLDERS_SQL", "KeyHold", "holders", "take_key", "waiting_count"]

_JOB_COLUMNS_OF_J: Final = ", ".join(f"j.{column.strip()}" for column in JOB_COLUMNS.split(","))
#: The stored takers of some keys (``{marks}``: one ``?`` per key), with their jobs.
HOLDERS_SQL: Final = (
    f"SELECT j.key_scope, j.key_expires_at, {_JOB_COLUMNS_OF_J}"
    " FROM asyncjobs_keys AS k JOIN asyncjobs_jobs AS j ON j.id = k.job_id"
    " WHERE k.key IN ({marks})"
)
_ONE_HOLDER_SQL: Final = HOLDERS_SQL.format(marks="?")
_WAITING_SQL: Final = "SELECT COUNT(*) FROM asyncjobs_jobs WHERE waits_for IS NOT NULL"
_TAKE_SQL: Final = """
    INSERT INTO asyncjobs_keys (key, job_id) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id
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
        sql = _ONE_HOLDER_SQL if len(chunk) == 1 else HOLDERS_SQL.format(marks=marks(len(chunk)))
        rows = all_rows(conn, sql, chunk)
        for scope, expires_at, *job_row in rows:
            hold = KeyHold(to_job(tuple(job_row)), KeyScope(scope or KeyScope.ACTIVE), expires_at)
            if hold.job.key is not None and hold.holds(now):
                found[hold.job.key] = hold
    return found


def take_key(conn: sqlite3.Connection, key: str, job_id: str) -> None:
    """Make the stored job *job_id* the holder of *key* (a new job takes its key on insert)."""
    conn.execute(_TAKE_SQL, (key, job_id))


def waiting_count(conn: sqlite3.Connection) -> int:
    """How many stored jobs wait behind another; a write that lowers it released some.

    Read it inside the caller's write transaction, before and after the write:
    the release triggers leave no other trace. (Few jobs ever wait, and the
    partial index of schema 7 holds only them: one seek while none do.)
    """
    [(count,)] = all_rows(conn, _WAITING_SQL)
    return int(count)
