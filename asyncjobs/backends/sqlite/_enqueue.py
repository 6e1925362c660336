"""New jobs: the insert statements, dedup keys and their conflict rules, partition rounds,
and handing a new job to an idle worker.

A plain enqueue (no key, no partition) is one multi-row ``INSERT`` (its
trigger bumps the queue's wake counter), so one trip to the writer thread.
Jobs with a key or a partition go through :func:`insert_jobs`, inside the
writer's exclusive transaction: the key's holder is looked up and the key
taken there (``_keys.py``), so however many processes race one key, one job
takes it; and each partitioned job gets its round there (see
``JobLifecycle.claim``: the round after its partition's last one, never
before the queue's current round).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from typing import Final, NamedTuple

import attrs

from ..._exceptions import DuplicateJobError
from ..._models import Handoff, Job, JobState, KeyScope, NewJob, OnConflict
from ._codec import insert_row
from ._database import Database
from ._keys import KeyHold, holders
from ._statements import NOW_CTE, Row, all_rows, first_row
from ._wakeups import Wakeups, bump
from ._writer import Tx

__all__ = ["enqueue", "insert_jobs"]

_INSERT_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')"
_INSERT_HEAD: Final = """
    INSERT INTO asyncjobs_jobs
        (id, name, queue, payload, due_at, enqueued_at, priority,
         max_attempts, timeout, key, schedule, fire_at, tags, state)
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
         max_attempts, timeout, key, schedule, fire_at, tags, state, attempts,
         lease_token, lease_expires_at, worker_id)
    SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
        CASE WHEN ok THEN 'running' ELSE 'queued' END, ok,
        CASE WHEN ok THEN lower(hex(randomblob(16))) END,
        CASE WHEN ok THEN (SELECT now FROM t) + ? END, CASE WHEN ok THEN ? END
    FROM gate
    RETURNING state, lease_token, lease_expires_at
"""
#: The most jobs one multi-row INSERT binds (SQLite caps a statement's parameters).
_MAX_INSERT_ROWS: Final = 500


# A job with a partition (or a key) names every column it sets.
_INSERT_FULL_SQL: Final = """
    INSERT INTO asyncjobs_jobs
        (id, name, queue, payload, due_at, enqueued_at, priority,
         max_attempts, timeout, key, schedule, fire_at, tags, partition, round,
         key_scope, key_expires_at, waits_for, parked_due_at, state)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')
"""
# A holder waiting behind another job keeps waiting: its new due time is parked
# (judged in SQL, from the row the update sees).
_REPLACE_SQL: Final = """
    UPDATE asyncjobs_jobs SET payload = ?1,
        due_at = CASE WHEN waits_for IS NULL THEN ?2 ELSE due_at END,
        parked_due_at = CASE WHEN waits_for IS NULL THEN NULL ELSE ?2 END
    WHERE id = ?3 AND state = 'queued'
"""
_LAST_ROUND_SQL: Final = """
    INSERT INTO asyncjobs_partitions (queue, partition, last_round) VALUES (?, ?, ?)
    ON CONFLICT (queue, partition) DO UPDATE SET last_round = excluded.last_round
"""


class _Rounds:
    """Partition rounds handed out in one transaction, written back by :meth:`save`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._current: dict[str, int] = {}
        self._last: dict[tuple[str, str], int] = {}

    def next(self, queue: str, partition: str | None) -> int:
        """The round of a new job of *partition* in *queue* (0 without a partition)."""
        if partition is None:
            return 0
        current = self._current.get(queue)
        if current is None:
            row = first_row(
                self._conn, "SELECT round FROM asyncjobs_queues WHERE name = ?", (queue,)
            )
            current = self._current[queue] = 0 if row is None else int(row[0])
        slot = (queue, partition)
        last = self._last.get(slot)
        if last is None:
            row = first_row(
                self._conn,
                "SELECT last_round FROM asyncjobs_partitions WHERE queue = ? AND partition = ?",
                slot,
            )
            last = -1 if row is None else int(row[0])
        round_ = self._last[slot] = max(last + 1, current)
        return round_

    def save(self) -> None:
        """Store each partition's last round."""
        if self._last:
            self._conn.executemany(
                _LAST_ROUND_SQL, [(queue, part, last) for (queue, part), last in self._last.items()]
            )


def _key_columns(new: NewJob) -> tuple[str | None, float | None]:
    """``key_scope`` and ``key_expires_at`` of a new job (NULL for the default scope)."""
    if new.key is None or new.key_scope is KeyScope.ACTIVE:
        return None, None
    return str(new.key_scope), new.key_expires_at


class _Insert(NamedTuple):
    """A new job of the batch to insert: its partition round and the job it waits for."""

    new: NewJob
    round: int
    waits_for: str | None

    def row(self) -> Row:
        """The parameters of its row in ``_INSERT_FULL_SQL``."""
        new, waiting = self.new, self.waits_for is not None
        return (
            *insert_row(new, waiting=waiting),
            new.partition,
            self.round,
            *_key_columns(new),
            self.waits_for,
            new.due_at if waiting else None,
        )

    def job(self) -> Job:
        """The record of the job once inserted."""
        job = self.new.queued()
        return job if self.waits_for is None else attrs.evolve(job, waits_for=self.waits_for)


def insert_jobs(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]:
    """Insert *jobs* inside the caller's transaction, applying the key conflict rules at *now*.

    A ``"replace"`` job whose key a running job holds is inserted waiting for
    that job (``waits_for``, its due time parked: see ``_keys.py``).

    :raises DuplicateJobError: for an ``on_conflict="raise"`` job whose key is
        held (by a stored job or an earlier one of *jobs*); nothing is written.
    """
    held: dict[str, KeyHold] = holders(conn, {new.key for new in jobs if new.key}, now)
    rounds = _Rounds(conn)
    stored: list[Job] = []
    inserts: dict[str, _Insert] = {}
    replaced: dict[str, Job] = {}
    # New jobs of this batch that a later one of it replaced (debounced).
    rebuilt: set[str] = set()
    for new in jobs:
        behind: str | None = None
        if new.key is not None:
            hold = held.get(new.key)
            if hold is not None and not hold.holds(now):
                hold = None
            if hold is not None:
                holder = hold.job
                if new.on_conflict is OnConflict.RAISE:
                    raise DuplicateJobError(new.key, holder.id)
                if new.on_conflict is OnConflict.REPLACE and holder.state is JobState.QUEUED:
                    # Debounce: the holder takes the new payload and due time.
                    holder = attrs.evolve(holder, payload=new.payload, due_at=new.due_at)
                    held[new.key] = attrs.evolve(hold, job=holder)
                    pending = inserts.get(holder.id)
                    if pending is None:
                        replaced[holder.id] = holder
                    else:
                        changed = attrs.evolve(pending.new, payload=new.payload, due_at=new.due_at)
                        inserts[holder.id] = pending._replace(new=changed)
                        rebuilt.add(holder.id)
                    stored.append(holder)
                    continue
                if (
                    new.on_conflict is not OnConflict.REPLACE
                    or holder.state is not JobState.RUNNING
                ):
                    stored.append(holder)
                    continue
                # Replace with a running holder: the new job queues behind it, taking the key.
                behind = holder.id
        insert = inserts[new.id] = _Insert(new, rounds.next(new.queue, new.partition), behind)
        job = insert.job()
        if new.key is not None:
            held[new.key] = KeyHold(job, new.key_scope, new.key_expires_at)
        stored.append(job)
    if replaced:
        conn.executemany(
            _REPLACE_SQL, [(job.payload, job.due_at, job.id) for job in replaced.values()]
        )
        # A due time moved earlier is work for the queue's waiters in other processes.
        bump(conn, {job.queue for job in replaced.values()})
    rows: list[Row] = [insert.row() for insert in inserts.values()]
    # The insert triggers bump the queues' wake counters and take the keys.
    if len(rows) == 1:
        conn.execute(_INSERT_FULL_SQL, rows[0])
    elif rows:
        conn.executemany(_INSERT_FULL_SQL, rows)
    rounds.save()
    if not replaced and not rebuilt:
        return stored
    # A job replaced later in the batch is returned as it was stored in the end.
    return [
        replaced.get(job.id) or (inserts[job.id].job() if job.id in rebuilt else job)
        for job in stored
    ]


async def enqueue(
    db: Database, wakeups: Wakeups, jobs: Sequence[NewJob], handoff: Handoff | None
) -> list[Job]:
    """Insert *jobs* in one transaction, with the key conflict rules and partition rounds."""
    if not jobs:
        return []

    [first, *others] = jobs
    now = db.clock.now()
    if (
        handoff is not None
        and not others
        and first.key is None
        and first.partition is None
        and first.due_at <= now
        and handoff.limits.get(first.queue, 0) > 0
    ):
        job = await _insert_claimed(db, first, handoff)
        if job.state is JobState.QUEUED:
            wakeups.notify()
        return [job]
    if len(jobs) <= _MAX_INSERT_ROWS and all(
        new.key is None and new.partition is None for new in jobs
    ):
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
            return insert_jobs(conn, jobs, tx.now)

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
        [(state, token, expires)] = all_rows(conn, _INSERT_CLAIMED_SQL, parameters)
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
        )

    return await db.write("enqueue", body, bounded=True, single=True)
