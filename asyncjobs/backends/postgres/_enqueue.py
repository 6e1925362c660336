"""New jobs: the insert statements, dedup keys and their conflict rules, partition rounds,
and handing a new job to an idle worker.

- A plain enqueue (no key, no partition) is one statement: an ``INSERT`` (of a
  batch: ``SELECT FROM unnest(...)`` of one array per column) whose result
  calls ``pg_notify`` once per queue. Notifications are delivered at commit,
  so a job enqueued in a caller's transaction wakes workers when (and only
  if) that transaction commits.
- Jobs with a key or a partition go through :func:`insert_jobs`, in one
  transaction that first takes a transaction-level advisory lock per key and
  per partition (in sorted order, so two batches never deadlock): however
  many processes race one key, they take turns, and each finds the holder the
  previous one left. The key's holder is judged by its scope (``queued``,
  ``active``, ``window``) from its row; ``keys`` names the job that took each
  key last. A ``replace`` that meets a running holder inserts the new job
  waiting for it (``waits_for``, ``due_at`` parked at infinity, see
  ``_schema.py``), the holder's row share-locked so it cannot finish unseen.
- A handoff (one due job, no key or partition) inserts the job already
  claimed when its queue is not paused and holds no due job a claim would
  take first, in the same single statement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import asyncpg
import attrs

from ..._exceptions import DuplicateJobError
from ..._models import Handoff, Job, JobState, KeyScope, NewJob, OnConflict
from ._codec import prefixed, tags_json, to_job
from ._database import NOW, Database

__all__ = ["enqueue", "insert_jobs", "server_now", "wake"]

_COLUMNS: Final = (
    "id, name, queue, payload, due_at, enqueued_at, priority, max_attempts, timeout,"
    " schedule, fire_at, tags"
)
_TYPES: Final = (
    "text[]", "text[]", "text[]", "bytea[]", "float8[]", "float8[]", "int4[]", "int4[]",
    "float8[]", "text[]", "float8[]", "jsonb[]",
)  # fmt: skip
# The ``due_at`` of a job waiting for its key's running holder: never due, never claimed.
_PARKED: Final = math.inf
_FULL_COLUMNS: Final = (
    _COLUMNS + ", key, partition, round, key_scope, key_expires_at, waits_for, parked_due_at"
)
_FULL_TYPES: Final = (
    *_TYPES, "text[]", "text[]", "int8[]", "text[]", "float8[]", "text[]", "float8[]",
)  # fmt: skip


def _unnest(types: Sequence[str], first: int) -> str:
    return ", ".join(f"${first + i}::{kind}" for i, kind in enumerate(types))


def _row(new: NewJob, due_at: float | None = None) -> tuple[Any, ...]:
    return (
        new.id,
        new.name,
        new.queue,
        new.payload,
        new.due_at if due_at is None else due_at,
        new.enqueued_at,
        new.priority,
        new.max_attempts,
        new.timeout,
        new.schedule,
        new.fire_at,
        tags_json(new.tags),
    )


def _queued(new: NewJob, waits: Mapping[str, str]) -> Job:
    """The record of *new* as inserted (queued behind the job *waits* names, if any)."""
    return attrs.evolve(new.queued(), waits_for=waits.get(new.id))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


class Statements:
    """The enqueue statements of one schema."""

    def __init__(self, q: str) -> None:
        values = ", ".join(f"${i}" for i in range(2, 14))
        self.insert_one = (
            f"INSERT INTO {q}.jobs ({_COLUMNS}, state) VALUES ({values}, 'queued')"
            " RETURNING pg_notify($1, queue) IS NULL"
        )
        self.insert_many = (
            f"WITH ins AS (INSERT INTO {q}.jobs ({_COLUMNS}, state)"
            f" SELECT *, 'queued' FROM unnest({_unnest(_TYPES, 2)}) RETURNING queue)"
            " SELECT pg_notify($1, queue) IS NULL FROM (SELECT DISTINCT queue FROM ins) AS w"
        )
        self.insert_full = (
            f"INSERT INTO {q}.jobs ({_FULL_COLUMNS}, state)"
            f" SELECT *, 'queued' FROM unnest({_unnest(_FULL_TYPES, 1)})"
        )
        claimed = ", ".join(f"${i}" for i in range(5, 17))
        # $1 now, $2 channel, $3 lease, $4 worker, $5.. the job's columns.
        self.insert_claimed = f"""
            WITH {NOW}, gate AS (
                SELECT NOT EXISTS (SELECT 1 FROM {q}.queues WHERE name = $7 AND paused)
                AND NOT EXISTS (
                    SELECT 1 FROM {q}.jobs
                    WHERE state = 'queued' AND queue = $7 AND priority <= $11
                    AND due_at <= (SELECT now FROM t)
                ) AS ok
            )
            INSERT INTO {q}.jobs ({_COLUMNS}, state, attempts, lease_token,
                lease_expires_at, worker_id)
            SELECT {claimed}, CASE WHEN ok THEN 'running' ELSE 'queued' END, ok::int,
                CASE WHEN ok THEN replace(gen_random_uuid()::text, '-', '') END,
                CASE WHEN ok THEN (SELECT now FROM t) + $3 END, CASE WHEN ok THEN $4 END
            FROM gate
            RETURNING state, lease_token, lease_expires_at,
                CASE WHEN state = 'queued' THEN pg_notify($2, queue) IS NULL END
        """
        # Advisory locks in the order given (the caller sorts them).
        self.lock = (
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k"
        )
        self.holders = (
            f"SELECT k.key AS held_key, j.key_scope, j.key_expires_at, {prefixed('j')}"
            f" FROM {q}.keys AS k JOIN {q}.jobs AS j ON j.id = k.job_id"
            " WHERE k.key = ANY($1::text[])"
        )
        # FOR SHARE conflicts with every write that could finish or delete the
        # holder, so it stays as read until the job queued behind it commits.
        self.lock_holders = self.holders + " FOR SHARE OF j"
        self.take_keys = (
            f"INSERT INTO {q}.keys (key, job_id) SELECT * FROM unnest($1::text[], $2::text[])"
            " ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id"
        )
        # A waiting job's due time stays parked: judged on the row as it is when
        # updated, since its holder may have finished since it was read.
        self.replace = (
            f"UPDATE {q}.jobs AS j SET payload = r.payload,"
            " due_at = CASE WHEN j.waits_for IS NULL THEN r.due_at ELSE 'infinity' END,"
            " parked_due_at = CASE WHEN j.waits_for IS NULL THEN NULL ELSE r.due_at END"
            " FROM unnest($1::text[], $2::bytea[], $3::float8[]) AS r(id, payload, due_at)"
            " WHERE j.id = r.id AND j.state = 'queued' RETURNING j.id, j.waits_for"
        )
        self.rounds = (
            f"SELECT p.partition, p.last_round FROM {q}.partitions AS p"
            " WHERE p.queue = $1 AND p.partition = ANY($2::text[])"
        )
        self.queue_round = f"SELECT round FROM {q}.queues WHERE name = $1"
        self.save_rounds = (
            f"INSERT INTO {q}.partitions (queue, partition, last_round)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])"
            " ON CONFLICT (queue, partition) DO UPDATE SET last_round = excluded.last_round"
        )
        self.wake = (
            f"WITH w AS (INSERT INTO {q}.queues (name, wake_seq) SELECT unnest($2::text[]), 1"
            f" ON CONFLICT (name) DO UPDATE SET wake_seq = {q}.queues.wake_seq + 1"
            " RETURNING name) SELECT pg_notify($1, name) IS NULL FROM w"
        )
        self.now = "SELECT coalesce($1::float8, extract(epoch FROM clock_timestamp())::float8)"


async def server_now(conn: asyncpg.Connection, db: Database) -> float:
    """The store's time, read on *conn* (inside its transaction: after its locks)."""
    value: float = await conn.fetchval(db.statements.enqueue.now, db.now_arg())
    return value


async def wake(conn: asyncpg.Connection, db: Database, queues: Sequence[str]) -> None:
    """Tell every process's waiters that *queues* got work (at commit): NOTIFY, and the
    wake counters that ``listen=False`` backends poll."""
    if queues:
        await conn.fetch(db.statements.enqueue.wake, db.channel, sorted(set(queues)))


@attrs.frozen
class _Hold:
    job: Job
    scope: KeyScope
    expires_at: float | None

    def holds(self, now: float) -> bool:
        if self.scope is KeyScope.WINDOW:
            return self.expires_at is not None and self.expires_at > now
        if self.scope is KeyScope.QUEUED:
            return self.job.state is JobState.QUEUED and self.job.attempts == 0
        return self.job.state in (JobState.QUEUED, JobState.RUNNING)


async def holders(
    conn: asyncpg.Connection, db: Database, keys: Sequence[str], *, lock: bool = False
) -> dict[str, _Hold]:
    """The last takers of *keys*, as stored (whether each still holds is :meth:`_Hold.holds`).

    :param lock: share-lock the takers' rows to the end of the transaction (read
        again after any write in flight commits), so none finishes meanwhile.
    """
    statements = db.statements.enqueue
    sql = statements.lock_holders if lock else statements.holders
    found: dict[str, _Hold] = {}
    for row in await conn.fetch(sql, list(keys)):
        found[row["held_key"]] = _Hold(
            to_job(row), KeyScope(row["key_scope"] or KeyScope.ACTIVE), row["key_expires_at"]
        )
    return found


def lock_names(
    db: Database, keys: Iterable[str | None], partitions: Iterable[tuple[str, str | None]]
) -> list[str]:
    """The advisory locks, in the order to take them: one per key and per (queue, partition)."""
    names = {f"{db.schema}:key:{key}" for key in keys if key is not None}
    names |= {
        f"{db.schema}:partition:{queue}:{partition}"
        for queue, partition in partitions
        if partition is not None
    }
    return sorted(names)


async def _rounds(
    conn: asyncpg.Connection, db: Database, inserts: Sequence[NewJob]
) -> dict[str, int]:
    """The partition round of each new partitioned job (by id); saves each partition's last."""
    rounds: dict[str, int] = {}
    by_queue: dict[str, list[NewJob]] = {}
    for new in inserts:
        if new.partition is not None:
            by_queue.setdefault(new.queue, []).append(new)
    statements = db.statements.enqueue
    saved: list[tuple[str, str, int]] = []
    for queue, news in by_queue.items():
        current = await conn.fetchval(statements.queue_round, queue) or 0
        partitions = sorted({new.partition for new in news if new.partition is not None})
        last = {
            row["partition"]: row["last_round"]
            for row in await conn.fetch(statements.rounds, queue, partitions)
        }
        for new in news:
            assert new.partition is not None
            round_ = max(last.get(new.partition, -1) + 1, current)
            last[new.partition] = rounds[new.id] = round_
        saved += [(queue, partition, last[partition]) for partition in partitions]
    if saved:
        await conn.execute(statements.save_rounds, *_columns(saved, 3))
    return rounds


async def _lock_running_holders(
    conn: asyncpg.Connection,
    db: Database,
    jobs: Sequence[NewJob],
    held: dict[str, _Hold],
    now: float,
) -> None:
    """Share-lock the running holders a replace in *jobs* would queue a job behind, and
    read them again into *held*.

    Without the lock, a holder finishing in a transaction that commits after
    it was read here, but before the new job commits, would release nothing
    (the new job is not visible to its trigger yet), and the new job would
    wait forever. With it, that finish waits for this transaction, then its
    trigger sees the new job; a finish that committed first is read here.
    """
    keys = sorted(
        {
            new.key
            for new in jobs
            if new.key is not None
            and new.on_conflict is OnConflict.REPLACE
            and (hold := held.get(new.key)) is not None
            and hold.job.state is JobState.RUNNING
        }
    )
    if not keys:
        return
    fresh = await holders(conn, db, keys, lock=True)
    for key in keys:
        hold = fresh.get(key)
        if hold is None:
            held.pop(key, None)  # deleted meanwhile (with its key)
        else:
            held[key] = hold


async def insert_jobs(conn: asyncpg.Connection, db: Database, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert *jobs* inside the caller's transaction on *conn*, with the key conflict rules.

    :raises DuplicateJobError: for an ``on_conflict="raise"`` job whose key is
        held (by a stored job or an earlier one of *jobs*); nothing is written.
    """
    statements = db.statements.enqueue
    locks = lock_names(db, [new.key for new in jobs], [(new.queue, new.partition) for new in jobs])
    if locks:
        await conn.execute(statements.lock, locks)
    keys = sorted({new.key for new in jobs if new.key is not None})
    held = await holders(conn, db, keys) if keys else {}
    now = await server_now(conn, db) if keys else 0.0
    await _lock_running_holders(conn, db, jobs, held, now)
    stored: list[Job] = []
    inserts: dict[str, NewJob] = {}
    # The new jobs queued behind a running holder: id -> the holder's id.
    waits: dict[str, str] = {}
    replaced: dict[str, Job] = {}
    for new in jobs:
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
                        inserts[holder.id] = attrs.evolve(
                            pending, payload=new.payload, due_at=new.due_at
                        )
                    stored.append(holder)
                    continue
                if (
                    new.on_conflict is not OnConflict.REPLACE
                    or holder.state is not JobState.RUNNING
                ):
                    stored.append(holder)
                    continue
                # Replace with a running holder: the new job queues behind it, taking the key.
                waits[new.id] = holder.id
            held[new.key] = _Hold(_queued(new, waits), new.key_scope, new.key_expires_at)
        inserts[new.id] = new
        stored.append(_queued(new, waits))
    if replaced:
        values = [(job.id, job.payload, job.due_at) for job in replaced.values()]
        for row in await conn.fetch(statements.replace, *_columns(values, 3)):
            replaced[row["id"]] = attrs.evolve(replaced[row["id"]], waits_for=row["waits_for"])
    if inserts:
        rounds = await _rounds(conn, db, list(inserts.values()))
        rows = [
            (
                *_row(new, _PARKED if new.id in waits else new.due_at),
                new.key,
                new.partition,
                rounds.get(new.id, 0),
                None if new.key is None or new.key_scope is KeyScope.ACTIVE else str(new.key_scope),
                None if new.key is None or new.key_scope is KeyScope.ACTIVE else new.key_expires_at,
                waits.get(new.id),
                new.due_at if new.id in waits else None,
            )
            for new in inserts.values()
        ]
        await conn.execute(statements.insert_full, *_columns(rows, len(_FULL_TYPES)))
        taken = {new.key: new.id for new in inserts.values() if new.key is not None}
        if taken:
            await conn.execute(statements.take_keys, list(taken), list(taken.values()))
    await wake(
        conn, db, [new.queue for new in inserts.values()] + [j.queue for j in replaced.values()]
    )
    # A job replaced later in the batch is returned as it was stored in the end.
    final = {job_id: _queued(new, waits) for job_id, new in inserts.items()}
    final.update(replaced)
    return [final.get(job.id, job) for job in stored]


async def enqueue(db: Database, jobs: Sequence[NewJob], handoff: Handoff | None) -> list[Job]:
    """Insert *jobs* atomically, with the key conflict rules and partition rounds."""
    if not jobs:
        return []
    statements = db.statements.enqueue
    [first, *others] = jobs
    plain = all(new.key is None and new.partition is None for new in jobs)
    if (
        handoff is not None
        and not others
        and plain
        and first.due_at <= db.clock.now()
        and handoff.limits.get(first.queue, 0) > 0
    ):
        return [await _insert_claimed(db, first, handoff)]
    if plain and not others:
        await db.fetch("enqueue", statements.insert_one, db.channel, *_row(first))
        return [first.queued()]
    if plain:
        columns = _columns([_row(new) for new in jobs], len(_TYPES))
        await db.fetch("enqueue", statements.insert_many, db.channel, *columns)
        return [new.queued() for new in jobs]
    async with db.transaction("enqueue") as conn:
        return await insert_jobs(conn, db, jobs)


async def _insert_claimed(db: Database, new: NewJob, handoff: Handoff) -> Job:
    """Insert *new*, claimed for the handoff's worker when it is next in line."""
    row = await db.fetchrow(
        "enqueue",
        db.statements.enqueue.insert_claimed,
        db.now_arg(),
        db.channel,
        handoff.lease,
        handoff.worker_id,
        *_row(new),
    )
    assert row is not None
    job = new.queued()
    if row["state"] != JobState.RUNNING:
        return job
    return attrs.evolve(
        job,
        state=JobState.RUNNING,
        attempts=1,
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        worker_id=handoff.worker_id,
    )
