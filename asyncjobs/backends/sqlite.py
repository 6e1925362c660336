"""The SQLite backend: one file, shared safely by several processes on one host.

Design (see ``DESIGN.md`` section 3):

- **WAL**, ``synchronous=FULL`` by default (``NORMAL`` and ``EXTRA`` allowed). One
  writer connection per backend object, used by one thread of its own; a
  second, ``query_only`` connection (aiosqlite) serves reads so they never
  queue behind writes.
- **Writes**: every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction
  that the writer thread runs whole, in one trip from the event loop: take
  the host's writer queue (below), begin, read the clock, run the statements,
  commit, let go of the queue. The event loop waits for the result only, so
  a busy loop never keeps the lock from other processes. Writes of this
  object that queue up meanwhile (up to 32) join the transaction once the
  lock is held, each in a savepoint of its own (one that fails rolls back
  alone): one commit and one turn of the queue for all of them. A cancelled
  write that has begun still lands (or rolls back) before the cancellation
  reaches its caller; one still waiting for the lock is dropped at once.
- **Claims** are one ``UPDATE ... WHERE seq IN (SELECT ... ORDER BY priority,
  due_at, seq LIMIT ?) RETURNING ...`` (the pause check included), all rows
  read before the statement ends. Partial covering indexes keep the cost of a
  claim, a lease sweep, a dedup check and a prune independent of how many
  finished jobs the file holds.
- **Outcomes** are one ``UPDATE ... FROM (VALUES ...) RETURNING id`` per kind:
  the lease-token check and the write in one statement.
- **Dedup** is enforced by a unique partial index on ``key`` over queued and
  running jobs, checked inside the writer's exclusive transaction: however
  many processes race one key, one job is created.
- **Leases** carry a random 128-bit token; heartbeats, progress and outcomes
  are applied only with the current one.
- **Wake-ups**: an enqueue or requeue through this object wakes its waiters at
  once (an in-process event). Work added by other processes is seen by
  polling a per-queue wake counter (``asyncjobs_queues.wake_seq``, bumped in the
  same transaction that adds work) on the read connection: every 5 ms after
  activity, doubling on each idle poll up to 500 ms (``poll_interval``).
  So another process's enqueue is noticed within 5 ms while busy and within
  0.5 s after a long idle spell. The poll sleeps on real time; the
  caller's deadline is honoured through the injected clock.
- **Throughput**, measured on a shared 2-core VM (ext4, fsync of a reused WAL
  about 0.1-0.5 ms, a trip to the database thread 0.05-0.5 ms depending on
  load), ``synchronous=FULL``, the backend alone: bulk enqueue 40,000-45,000
  jobs/s (one ``executemany`` transaction); one awaited enqueue about 0.33 ms;
  claim + settle of no-op jobs about 11,000 jobs/s in batches of 10 (two
  commits per batch). Eight processes enqueueing and working one file as fast
  as they can (``benchmarks/sqlite_contention.py``): enqueue p50 7-10 ms, p99
  about 23 ms, max under 0.2 s; the writer queue trades a little throughput
  (75-95 % of an unfair lock's) for that tail.

Contention (several processes writing one file):

- **A fair queue for the write lock.** SQLite's busy handler sleeps and polls,
  so a writer that has just committed beats one that has slept: under load
  some writers used to wait tens of seconds. Every asyncjobs writer on the
  host therefore first takes an exclusive ``flock`` on ``<database>-lock``
  (an empty file created beside the database and never removed; do not
  delete it while processes use the file). The kernel hands that lock to
  blocked writers in the order they came, at once, so writes take turns and
  SQLite's write lock is free whenever asyncjobs asks for it. On systems
  without ``flock`` (Windows) writers rely on the busy handler alone.
- **Waiting.** A write lock held outside that queue (another program, a
  process of an older asyncjobs, a long manual transaction) is waited for in
  SQLite's busy handler, ``busy_timeout`` (default 1 s) at a time, and tried
  again. The runtime's own loops (claim, heartbeat, settle, lease sweeps,
  progress, prune, cron ticks) wait as long as it takes, logging a warning
  every 10 s that names the process holding the lock. The calls an
  application makes (``enqueue``, ``cancel``, ``retry_dead``, pausing,
  schedule changes, ``open``) give up after ``write_timeout`` (default 60 s)
  with :class:`SQLiteBusyError`, which names that process too (from
  ``/proc/locks`` on Linux), and nothing of the call is stored.
- One enqueue call is one transaction, so a huge batch holds the write lock
  for its whole insert (about 1 s per 50,000 jobs on a slow disk).

Leases under contention:

- **A lease runs from when the write lock is held.** Claims, hand-offs and
  heartbeats read the clock inside their transaction, so a write that waited
  20 s for the lock still hands out, or extends to, ``now + lease``.
- **A lease is never lost to a wait alone.** A write whose call waited at
  least the *stall threshold* (1 s, or a quarter of the shortest lease this
  backend object handles, if less; measured on the store's clock and on the
  monotonic clock alike, so a clock step is not a stall) records, in the
  same transaction and before the queue passes on, that lease sweeps
  resume at ``now + 1 s + a third of the longest lease`` this object handles
  (``asyncjobs_lease_sweeps``, schema 4). :meth:`SQLiteBackend.recover_expired`
  does nothing before that time, and nothing when its own call waited the
  stall threshold. So after a write lock was held a long time, every worker
  whose heartbeat was held up with it gets one heartbeat interval to land
  before any lease is judged; a crashed worker's jobs are recovered that much
  later. While writes keep waiting longer than the threshold, sweeps stay
  paused: leases cannot be judged fairly then.

Start-up checks, each with a message that says what to do:

- SQLite older than 3.35 (no ``RETURNING``): :class:`SQLiteVersionError`.
- The WAL-reset bug (https://sqlite.org/wal.html#walresetbug): a race between
  two connections' checkpoints and a commit that can corrupt the file. It
  affects SQLite 3.7.0 through 3.51.2 and is fixed in 3.51.3, with backports
  in 3.44.6 and 3.50.7. It needs two connections writing one file, which one
  backend object alone never does (one writer; the reader never checkpoints
  because it is closed first), so :class:`UnsafeSQLiteWarning` is issued when
  an affected SQLite opens a file another connection already has open (its
  ``-wal`` file exists): the multi-process set-ups the bug can hit.
- ``journal_mode`` must really become ``wal`` (it does not for in-memory
  databases and on some network filesystems): :class:`SQLiteJournalModeError`.
- A missing or read-only directory, a file that is not a database, and a
  file written by a newer asyncjobs fail at :meth:`SQLiteBackend.open`
  without writing anything. A write-protected file (permissions, another
  user's file, ``chattr +i``, a read-only mount) opens for reading without a
  word from SQLite, so ``open`` makes a real write that changes nothing (it
  stores the schema version again) and fails with :class:`SQLitePathError`;
  the ``-wal`` and ``-shm`` files that open created are removed again.
- A full disk (or ``max_size``) fails the write that hit it with
  :class:`SQLiteFullError`, rolled back as a whole (also when SQLite could not
  grow its ``-shm`` file); the same backend object works again once space is
  freed.

Not supported: trio (aiosqlite needs asyncio), network filesystems.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import math
import os
import random
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Final, Generic, TypeVar

import aiosqlite
import anyio
import attrs

from .._clock import Clock, SystemClock
from .._exceptions import BackendError, ConfigurationError, SchemaVersionError
from .._models import (
    FINISHED_STATES,
    ErrorInfo,
    Handoff,
    Job,
    JobState,
    NewJob,
    Outcome,
    OutcomeKind,
    QueueStats,
    Schedule,
)
from . import HeartbeatReply

if sys.platform != "win32":
    import fcntl

__all__ = [
    "SCHEMA_VERSION",
    "SQLiteBackend",
    "SQLiteBusyError",
    "SQLiteFullError",
    "SQLiteJournalModeError",
    "SQLiteNotADatabaseError",
    "SQLitePathError",
    "SQLiteVersionError",
    "UnsafeSQLiteWarning",
]

logger = logging.getLogger("asyncjobs")

_T = TypeVar("_T")
_W = TypeVar("_W")
_Row = tuple[Any, ...]


# -- exceptions -----------------------------------------------------------------


class UnsafeSQLiteWarning(UserWarning):
    """The SQLite library has a known bug that can corrupt a file shared by processes."""


class SQLiteVersionError(BackendError):
    """The SQLite library is too old for this backend."""


class SQLitePathError(BackendError):
    """The database path cannot be opened or created (missing or read-only directory)."""


class SQLiteNotADatabaseError(BackendError):
    """The file at the path exists but is not a SQLite database."""


class SQLiteJournalModeError(BackendError):
    """SQLite could not put the file in WAL mode (in-memory database, network filesystem)."""


class SQLiteFullError(BackendError):
    """A write did not fit: the disk is full or the file reached ``max_size``."""


class SQLiteBusyError(BackendError):
    """Another process held the write lock for longer than ``write_timeout``.

    The message names the process when the system says which one it is.
    """


# -- schema -----------------------------------------------------------------------

# Each migration is the list of statements taking the schema from version i to
# i + 1. They run in order, in one BEGIN IMMEDIATE transaction, so a file is
# never left half-migrated and two processes opening a new file migrate it once.
# Append new steps; never edit a released one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE asyncjobs_jobs (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            queue TEXT NOT NULL,
            payload BLOB NOT NULL,
            state TEXT NOT NULL,
            due_at REAL NOT NULL,
            enqueued_at REAL NOT NULL,
            priority INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            timeout REAL,
            key TEXT,
            schedule TEXT,
            lease_token TEXT,
            lease_expires_at REAL,
            worker_id TEXT,
            started_at REAL,
            finished_at REAL,
            result BLOB,
            error_type TEXT,
            error_message TEXT,
            error_traceback TEXT,
            progress REAL,
            progress_message TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0
        )
        """,
        # Claim order within a queue; also the earliest due time (a skip-scan over
        # the few priorities in use) and the queued counts, so no second index on
        # queued jobs has to be kept up to date. The constant trailing ``state``
        # makes the partial indexes covering: without it SQLite reads every
        # scanned row from the table to re-check the state.
        """
        CREATE INDEX asyncjobs_jobs_claim
        ON asyncjobs_jobs (queue, priority, due_at, seq, state)
        WHERE state = 'queued'
        """,
        # Expired leases; running counts.
        """
        CREATE INDEX asyncjobs_jobs_lease ON asyncjobs_jobs (lease_expires_at, queue, state)
        WHERE state = 'running'
        """,
        # Dedup, enforced by the database itself.
        """
        CREATE UNIQUE INDEX asyncjobs_jobs_active_key ON asyncjobs_jobs (key)
        WHERE key IS NOT NULL AND state IN ('queued', 'running')
        """,
        # Prune by age, and count finished jobs per queue without reading rows.
        """
        CREATE INDEX asyncjobs_jobs_finished ON asyncjobs_jobs (state, finished_at, queue)
        WHERE state IN ('complete', 'dead', 'cancelled')
        """,
        """
        CREATE TABLE asyncjobs_queues (
            name TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0,
            wake_seq INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE asyncjobs_schedules (
            name TEXT PRIMARY KEY,
            job_name TEXT NOT NULL,
            queue TEXT NOT NULL,
            trigger TEXT NOT NULL,
            payload BLOB NOT NULL,
            next_fire_at REAL,
            last_fire_at REAL,
            misfire TEXT NOT NULL,
            grace REAL NOT NULL,
            overlap INTEGER NOT NULL,
            paused INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            timeout REAL
        )
        """,
        "CREATE TABLE asyncjobs_schema (version INTEGER NOT NULL)",
        "INSERT INTO asyncjobs_schema (version) VALUES (0)",
    ),
    # 2: a scheduled job keeps the fire time of its tick (retries and crash
    # recovery move due_at). Jobs written before it have none (NULL).
    ("ALTER TABLE asyncjobs_jobs ADD COLUMN fire_at REAL",),
    # 3: a new job bumps its queue's wake counter in the same statement, so a
    # plain enqueue is one statement (one trip to the database thread) and
    # other processes' polls still see it.
    (
        """
        CREATE TRIGGER asyncjobs_jobs_wake AFTER INSERT ON asyncjobs_jobs
        WHEN NEW.state = 'queued'
        BEGIN
            INSERT INTO asyncjobs_queues (name, wake_seq) VALUES (NEW.queue, 1)
            ON CONFLICT (name) DO UPDATE SET wake_seq = wake_seq + 1;
        END
        """,
    ),
    # 4: lease sweeps pause after a stalled write, until the heartbeats held up
    # with it have landed (see "Leases under contention" above).
    (
        """
        CREATE TABLE asyncjobs_lease_sweeps (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            resume_at REAL NOT NULL
        )
        """,
        "INSERT INTO asyncjobs_lease_sweeps (id, resume_at) VALUES (1, 0)",
    ),
)

#: The schema version this asyncjobs writes; files with a higher one are refused.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_JOB_COLUMNS = (
    "id, name, queue, payload, state, due_at, enqueued_at, priority, attempts,"
    " max_attempts, timeout, key, schedule, lease_token, lease_expires_at, worker_id,"
    " started_at, finished_at, result, error_type, error_message, error_traceback,"
    " progress, progress_message, cancel_requested, fire_at"
)
_SCHEDULE_COLUMNS = (
    "name, job_name, queue, trigger, payload, next_fire_at, last_fire_at, misfire, grace,"
    " overlap, paused, priority, max_attempts, timeout"
)

# Literal states in the WHERE clauses below are deliberate: SQLite only uses a
# partial index when the query repeats the index's condition, and a bound
# parameter never matches it. The claim pins its index: on a table without
# statistics the planner may prefer the due-time index plus a sort of every due
# job, which makes a claim cost grow with the backlog.
#
# The statements that set a lease read the clock through asyncjobs_now(), a
# function of the writer connection, in a materialized CTE: SQLite calls it once
# per statement, after it has taken the write lock, so a statement that waited
# for the lock still hands out a whole lease.
_NOW_CTE: Final = "t(now) AS MATERIALIZED (SELECT asyncjobs_now())"
_CLAIM_SQL: Final = f"""
    WITH {_NOW_CTE}
    UPDATE asyncjobs_jobs
    SET state = 'running', attempts = attempts + 1,
        lease_token = lower(hex(randomblob(16))), lease_expires_at = (SELECT now FROM t) + ?,
        worker_id = ?, started_at = (SELECT now FROM t), progress = NULL, progress_message = NULL
    WHERE seq IN (
        SELECT seq FROM asyncjobs_jobs INDEXED BY asyncjobs_jobs_claim
        WHERE state = 'queued' AND queue = ? AND due_at <= (SELECT now FROM t)
        AND NOT EXISTS (SELECT 1 FROM asyncjobs_queues WHERE name = ? AND paused = 1)
        ORDER BY priority, due_at, seq
        LIMIT ?
    )
    RETURNING {_JOB_COLUMNS}, seq
"""
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
    WITH {_NOW_CTE}, gate(ok) AS (
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
_WAKE_SQL: Final = """
    INSERT INTO asyncjobs_queues (name, wake_seq) VALUES (?, 1)
    ON CONFLICT (name) DO UPDATE SET wake_seq = wake_seq + 1
"""
# settle: UPDATE ... FROM (VALUES ...). The join on id and the current lease
# token applies each outcome and checks its token in one statement; RETURNING
# names the accepted jobs. Complete, dead and cancelled outcomes share one
# statement (``o.state`` says which); the trailing ``?`` is the settle time. A
# running job never has a result, so only a complete outcome sets one.
_SETTLE_FINISHED: Final = (
    "id, token, state, result, error_type, error_message, error_traceback",
    "state = o.state,"
    " result = CASE WHEN o.state = 'complete' THEN o.result ELSE asyncjobs_jobs.result END,"
    " error_type = o.error_type, error_message = o.error_message,"
    " error_traceback = o.error_traceback,"
    " finished_at = ?, lease_token = NULL, lease_expires_at = NULL",
)
_REQUEUED = (
    "state = 'queued', due_at = o.due_at, lease_token = NULL, lease_expires_at = NULL,"
    " worker_id = NULL, cancel_requested = 0"
)
_SETTLE_RETRY: Final = (
    "id, token, due_at, error_type, error_message, error_traceback",
    f"{_REQUEUED}, error_type = o.error_type, error_message = o.error_message,"
    " error_traceback = o.error_traceback",
)
_SETTLE_RELEASE: Final = ("id, token, due_at", f"{_REQUEUED}, attempts = max(0, attempts - 1)")
_FINISHED_STATE = {
    OutcomeKind.COMPLETE: "complete",
    OutcomeKind.DEAD: "dead",
    OutcomeKind.CANCELLED: "cancelled",
}


def _settle_sql(spec: tuple[str, str], count: int) -> str:
    columns, assignments = spec
    return (
        f"WITH o({columns}) AS (VALUES {_rows_of(columns.count(',') + 1, count)})"
        f" UPDATE asyncjobs_jobs SET {assignments} FROM o"
        " WHERE asyncjobs_jobs.id = o.id AND asyncjobs_jobs.lease_token = o.token"
        " AND asyncjobs_jobs.state = 'running'"
        " RETURNING asyncjobs_jobs.id, asyncjobs_jobs.queue"
    )


_EXPIRED_SQL: Final = """
    SELECT 1 FROM asyncjobs_jobs
    WHERE state = 'running' AND lease_expires_at <= ?
    AND NOT EXISTS (SELECT 1 FROM asyncjobs_lease_sweeps WHERE id = 1 AND resume_at > ?)
    LIMIT 1
"""
# The earliest due time per queue without an index on (queue, due_at): walk the
# distinct priorities of the queue's queued jobs (each step one seek in the claim
# index) and take the first due time of each.
_NEXT_DUE_SQL: Final = """
    WITH RECURSIVE
        q(name) AS (VALUES {values}),
        pr(queue, priority) AS (
            SELECT q.name, (SELECT MIN(priority) FROM asyncjobs_jobs
                            WHERE state = 'queued' AND queue = q.name)
            FROM q
            WHERE NOT EXISTS (
                SELECT 1 FROM asyncjobs_queues WHERE name = q.name AND paused = 1
            )
            UNION ALL
            SELECT pr.queue, (SELECT MIN(priority) FROM asyncjobs_jobs
                              WHERE state = 'queued' AND queue = pr.queue
                              AND priority > pr.priority)
            FROM pr WHERE pr.priority IS NOT NULL
        )
    SELECT MIN((SELECT MIN(due_at) FROM asyncjobs_jobs
                WHERE state = 'queued' AND queue = pr.queue AND priority = pr.priority))
    FROM pr WHERE pr.priority IS NOT NULL
"""
_QUEUE_STATS_SQL: Final = """
    SELECT queue, 'queued', COUNT(*) FROM asyncjobs_jobs
    WHERE state = 'queued' GROUP BY queue
    UNION ALL
    SELECT queue, 'running', COUNT(*) FROM asyncjobs_jobs
    WHERE state = 'running' GROUP BY queue
    UNION ALL
    SELECT queue, state, COUNT(*) FROM asyncjobs_jobs
    WHERE state IN ('complete', 'dead', 'cancelled') GROUP BY queue, state
    UNION ALL
    SELECT name, NULL, 0 FROM asyncjobs_queues WHERE paused = 1
"""

# Mirrors memory.py, so every backend reports a lost lease the same way.
_EXPIRED_ERROR = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)

# Pauses between attempts at a lock that SQLite's busy handler found held for a
# whole busy_timeout: only a connection outside asyncjobs' queue does that.
_BUSY_PAUSE = (0.005, 0.2)
# How often a loop's write that waits for the lock says so in the log.
_WAIT_LOG_PERIOD = 10.0
# A write that waited this long for the lock (or a quarter of the shortest lease
# this object handles, if less) is a stall; after one, lease sweeps pause for
# _STALL_GRACE plus a third of the longest lease (one heartbeat interval).
_STALL_AFTER = 1.0
_STALL_GRACE = 1.0
# Bound parameters per statement: the smallest limit any SQLite build may have
# (999; 32766 is the default since 3.32, but builds can lower it).
_MAX_PARAMS = 999
# Rows deleted per prune transaction, so a big prune never holds the write lock long.
_PRUNE_BATCH = 5000
_MIN_VERSION = (3, 35, 0)
_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


def _version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in [*version.split("."), "0", "0"][:3])
    return major, minor, patch


def _has_wal_reset_bug(version: tuple[int, int, int]) -> bool:
    """Whether SQLite *version* has the WAL-reset bug (3.7.0 to 3.51.2, minus backports)."""
    if version < (3, 7, 0) or version >= (3, 51, 3):
        return False
    backported = (3, 44, 6) <= version < (3, 45, 0) or (3, 50, 7) <= version < (3, 51, 0)
    return not backported


def _chunks(items: Sequence[_T], per_item: int = 1) -> Iterable[Sequence[_T]]:
    """Split *items* so a statement binding *per_item* parameters each stays in bounds."""
    size = (_MAX_PARAMS - 1) // per_item
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _rows_of(width: int, count: int) -> str:
    """``(?, ?), (?, ?), ...``: *count* VALUES rows of *width* parameters."""
    row = f"({_marks(width)})"
    return ", ".join([row] * count)


def _insert_row(new: NewJob) -> tuple[Any, ...]:
    """The ``_INSERT_SQL`` parameters of one new job."""
    return (
        new.id,
        new.name,
        new.queue,
        new.payload,
        new.due_at,
        new.enqueued_at,
        new.priority,
        new.max_attempts,
        new.timeout,
        new.key,
        new.schedule,
        new.fire_at,
    )


def _error_columns(error: ErrorInfo | None) -> tuple[str | None, str | None, str | None]:
    if error is None:
        return None, None, None
    return error.type, error.message, error.traceback


def _to_job(row: _Row) -> Job:
    (
        job_id,
        name,
        queue,
        payload,
        state,
        due_at,
        enqueued_at,
        priority,
        attempts,
        max_attempts,
        timeout,
        key,
        schedule,
        lease_token,
        lease_expires_at,
        worker_id,
        started_at,
        finished_at,
        result,
        error_type,
        error_message,
        error_traceback,
        progress,
        progress_message,
        cancel_requested,
        fire_at,
    ) = row[:26]
    return Job(
        id=job_id,
        name=name,
        queue=queue,
        payload=payload,
        state=JobState(state),
        due_at=due_at,
        enqueued_at=enqueued_at,
        priority=priority,
        attempts=attempts,
        max_attempts=max_attempts,
        timeout=timeout,
        key=key,
        schedule=schedule,
        fire_at=fire_at,
        lease_token=lease_token,
        lease_expires_at=lease_expires_at,
        worker_id=worker_id,
        started_at=started_at,
        finished_at=finished_at,
        result=result,
        error=None
        if error_type is None
        else ErrorInfo(type=error_type, message=error_message, traceback=error_traceback),
        progress=progress,
        progress_message=progress_message,
        cancel_requested=bool(cancel_requested),
    )


def _to_schedule(row: _Row) -> Schedule:
    (
        name,
        job_name,
        queue,
        trigger,
        payload,
        next_fire_at,
        last_fire_at,
        misfire,
        grace,
        overlap,
        paused,
        priority,
        max_attempts,
        timeout,
    ) = row
    return Schedule(
        name=name,
        job_name=job_name,
        queue=queue,
        trigger=trigger,
        payload=payload,
        next_fire_at=next_fire_at,
        last_fire_at=last_fire_at,
        misfire=misfire,
        grace=grace,
        overlap=bool(overlap),
        paused=bool(paused),
        priority=priority,
        max_attempts=max_attempts,
        timeout=timeout,
    )


def _schedule_row(schedule: Schedule) -> _Row:
    return (
        schedule.name,
        schedule.job_name,
        schedule.queue,
        schedule.trigger,
        schedule.payload,
        schedule.next_fire_at,
        schedule.last_fire_at,
        schedule.misfire,
        schedule.grace,
        int(schedule.overlap),
        int(schedule.paused),
        schedule.priority,
        schedule.max_attempts,
        schedule.timeout,
    )


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and _primary_code(exc) in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _is_full(exc: sqlite3.Error) -> bool:
    """Whether *exc* means the disk (or ``max_size``) is full.

    SQLite reports a failed append to the WAL as ``SQLITE_FULL``, but a
    ``-shm`` file it cannot grow as ``SQLITE_IOERR_SHMSIZE``.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    return _primary_code(exc) == _SQLITE_FULL or code == _SQLITE_IOERR_SHMSIZE


async def _fetchall(
    conn: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()
) -> list[_Row]:
    rows: Iterable[Any] = await conn.execute_fetchall(sql, tuple(parameters))
    return list(rows)


def _rows(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any] = ()) -> list[_Row]:
    """Run one statement on the writer and read every row before it ends."""
    return conn.execute(sql, parameters).fetchall()


def _row(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any] = ()) -> _Row | None:
    rows = _rows(conn, sql, parameters)
    return rows[0] if rows else None


def _lock_holder(path: str, *, flock: bool) -> str | None:
    """Name the process holding the write lock on *path*, from ``/proc/locks`` (Linux).

    With *flock*, the ``flock`` on the writers' queue file; otherwise SQLite's
    WAL write lock, a POSIX lock on byte 120 of the ``-shm`` file.
    """
    try:
        stat = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:
        # "3: POSIX  ADVISORY  WRITE 9810 fe:00:2146739 120 120"; a waiter has "->" after
        # the number, and is not the holder.
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->" or fields[3] != "WRITE" or fields[5] != device:
            continue
        if flock != (fields[1] == "FLOCK") or (not flock and fields[6] != "120"):
            continue
        pid = fields[4]
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        return f"process {pid} ({name})"
    return None


# -- the writer thread ----------------------------------------------------------------

_QUEUED, _WAITING, _RUNNING, _DONE, _ABANDONED = range(5)
# The most writes one transaction carries (see _Writer._transact).
_GROUP_LIMIT = 32


@attrs.frozen
class _Tx:
    """What a write body knows about its transaction.

    :ivar now: the store's clock, read once the write lock is held.
    :ivar stalled: the wait for the lock was long (see "Leases under contention").
    """

    now: float
    stalled: bool


class _Job(Generic[_T]):
    """One call into the writer thread, and its outcome."""

    __slots__ = (
        "delivered",
        "error",
        "fn",
        "loop",
        "requested",
        "result",
        "single",
        "state",
        "stop",
        "transaction",
        "waker",
    )

    def __init__(
        self,
        fn: Callable[..., _T],
        *,
        transaction: bool,
        requested: tuple[float, float],
        single: bool = False,
    ) -> None:
        #: ``fn(conn, tx)`` in a write transaction, or ``fn(conn)`` as it is.
        self.fn = fn
        self.transaction = transaction
        #: ``fn`` is one statement: alone, it runs in autocommit.
        self.single = single
        #: When the call was made: (the store's clock, monotonic seconds).
        self.requested = requested
        # aiosqlite (the reader) ties this backend to asyncio anyway: the writer
        # thread hands results back with call_soon_threadsafe, as aiosqlite does,
        # and the caller waits on a bare future (a cancel scope per write costs
        # more than the rest of the loop's side).
        self.loop = asyncio.get_running_loop()
        #: The outcome has reached the event loop (set there, by _deliver).
        self.delivered = False
        self.waker: asyncio.Future[None] | None = None
        #: Set when the caller gives up: a busy lock is not tried again.
        self.stop = False
        self.state = _QUEUED
        self.result: _T | None = None
        self.error: BaseException | None = None


def _deliver(job: _Job[Any]) -> None:
    """In the event loop: *job*'s outcome is in; wake its caller."""
    job.delivered = True
    _wake(job.waker)


def _wake(waker: asyncio.Future[None] | None) -> None:
    if waker is not None and not waker.done():
        waker.set_result(None)


async def _delivered(job: _Job[Any], timeout: float) -> bool:
    """Wait until *job*'s outcome is in, or *timeout* seconds; ``True`` if it is."""
    if job.delivered:
        return True
    loop = job.loop
    waker: asyncio.Future[None] = loop.create_future()
    job.waker = waker
    timer = loop.call_later(max(0.0, timeout), _wake, waker)
    try:
        await waker
    finally:
        timer.cancel()
        job.waker = None
    return job.delivered


class _Writer:
    """The backend's one writing connection, used by one thread of its own.

    A write runs there whole, in one trip from the event loop: take the host's
    write queue (an exclusive ``flock`` on ``<database>-lock``), ``BEGIN
    IMMEDIATE``, read the clock, run the body, ``COMMIT``, release. The queue
    is released by this thread as soon as the transaction ends, never later
    because the event loop is busy. Blocked ``flock`` callers are handed the
    lock in arrival order by the kernel; SQLite's own busy handler sleeps and
    polls, so a writer that has just committed would beat one that has slept.

    A caller that gives up (cancelled, or past its deadline) while its write
    still waits for the queue leaves at once: the thread, once it gets the
    lock, passes it to the next queued write or releases it. A write that has
    begun is always finished (or rolled back) before its caller returns.
    """

    def __init__(self, backend: SQLiteBackend, lock_fd: int) -> None:
        self._backend = backend
        self._fd = lock_fd
        # The state of every job and the queue change under this lock; the bell
        # (a C queue, far cheaper than a Condition) wakes the thread.
        self._mutex = threading.Lock()
        self._bell: SimpleQueue[None] = SimpleQueue()
        self._jobs: collections.deque[_Job[Any]] = collections.deque()
        self._current: _Job[Any] | None = None
        self._closing = False
        self._conn: sqlite3.Connection | None = None
        self._loop = asyncio.get_running_loop()
        self.exited = anyio.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"asyncjobs SQLite writer ({backend._path})", daemon=True
        )
        self._thread.start()

    # -- the event loop's side -----------------------------------------------------

    def submit(self, job: _Job[Any]) -> bool:
        """Queue *job*; ``False`` when the writer is closing."""
        with self._mutex:
            if self._closing:
                return False
            self._jobs.append(job)
        self._bell.put(None)
        return True

    def abandon(self, job: _Job[Any]) -> bool:
        """Drop *job* if it has not begun; ``False`` when it is running or done."""
        with self._mutex:
            if job.state in (_QUEUED, _WAITING):
                job.state = _ABANDONED
                return True
            return False

    def close(self) -> None:
        """Let the queued writes finish, then close the connection and end the thread."""
        with self._mutex:
            self._closing = True
        self._bell.put(None)

    def stuck(self) -> bool:
        """Whether the thread waits for the host's queue on behalf of no caller."""
        with self._mutex:
            current = self._current
            return (
                current is not None
                and current.state == _ABANDONED
                and not any(job.state == _QUEUED for job in self._jobs)
            )

    def abandon_all(self, error: BaseException) -> None:
        """Fail every write that has not begun (the writer is stuck behind the queue)."""
        with self._mutex:
            dropped = [job for job in self._jobs if job.state == _QUEUED]
            self._jobs.clear()
            current = self._current
            if current is not None and current.state == _WAITING:
                dropped.append(current)
            for job in dropped:
                job.state = _ABANDONED
                job.error = error
        for job in dropped:
            _deliver(job)

    # -- the thread's side ---------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None, "the writer thread has no connection"
        return self._conn

    def _run(self) -> None:
        failed: BaseException | None = None
        try:
            self._conn = self._backend._connect_writer()
        except Exception as exc:
            failed = exc
        while True:
            with self._mutex:
                job = self._jobs.popleft() if self._jobs else None
                if job is not None and job.state != _ABANDONED:
                    job.state = _WAITING if job.transaction else _RUNNING
                    self._current = job
                closing = self._closing
            if job is None:
                if closing:
                    break
                self._bell.get()  # rung by submit() and close()
                continue
            if job.state == _ABANDONED:
                continue
            if failed is not None:
                self._finish(job, None, failed)
                continue
            if not job.transaction:
                error: BaseException | None = None
                try:
                    result = self._until_free(job, functools.partial(job.fn, self.conn))
                except Exception as exc:
                    result, error = None, exc
                self._finish(job, result, error)
                continue
            taken = self._take_queue(job)
            if taken is None:
                continue
            try:
                finished = self._transact(taken)
            finally:
                self._release_queue()
            for done, result, error in finished:
                self._finish(done, result, error)
        with self._mutex:
            self._current = None
        if self._conn is not None:
            self._conn.close()
        if self._fd >= 0:
            os.close(self._fd)
        with contextlib.suppress(RuntimeError):  # the event loop is gone
            self._loop.call_soon_threadsafe(self.exited.set)

    def _finish(self, job: _Job[Any], result: Any, error: BaseException | None) -> None:
        with self._mutex:
            job.result, job.error = result, error
            job.state = _DONE
            self._current = None
        with contextlib.suppress(RuntimeError):  # the event loop is gone
            job.loop.call_soon_threadsafe(_deliver, job)

    def _take_queue(self, job: _Job[Any]) -> _Job[Any] | None:
        """Take the host's write queue for *job*, or for the write after it if it left."""
        if self._fd < 0:  # no flock on this platform: SQLite's busy handler alone
            with self._mutex:
                if job.state == _ABANDONED:
                    return None
                job.state = _RUNNING
            return job
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Behind other writers: the kernel wakes us when our turn comes.
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        taken: _Job[Any] | None = job
        with self._mutex:
            while taken is not None and taken.state == _ABANDONED:
                # Its caller gave up meanwhile: the next queued write keeps our place.
                while self._jobs and self._jobs[0].state == _ABANDONED:
                    self._jobs.popleft()
                taken = self._jobs.popleft() if self._jobs and self._jobs[0].transaction else None
            if taken is not None:
                taken.state = _RUNNING
            self._current = taken
        if taken is None:
            self._release_queue()
        return taken

    def _release_queue(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _transact(self, first: _Job[Any]) -> list[tuple[_Job[Any], Any, BaseException | None]]:
        """Run *first*, and the writes queued behind it, in one transaction.

        Every write queued in this process when the lock is held joins it (up to
        ``_GROUP_LIMIT``), each in a savepoint of its own: one failing rolls back
        only itself, and the group costs one commit and one turn of the host's
        queue instead of one each. Each write's outcome stands once ``COMMIT``
        has succeeded.
        """
        conn = self.conn
        backend = self._backend
        if first.single and not self._jobs:
            return [self._autocommit(first)]
        try:
            self._until_free(first, lambda: conn.execute("BEGIN IMMEDIATE"))
        except Exception as exc:
            return [(first, None, exc)]
        group = [first, *self._followers()]
        single = len(group) == 1
        finished: list[tuple[_Job[Any], Any, BaseException | None]] = []
        stalled: tuple[float, float] | None = None
        for index, job in enumerate(group):
            if not conn.in_transaction:
                # A failure ended the transaction (SQLite rolls back on its own after
                # some I/O errors): the rest wait for the next one.
                self._requeue(group[index:])
                break
            if backend._stalled(job.requested):
                stalled = min(stalled or job.requested, job.requested)
            tx = _Tx(now=backend._clock.now(), stalled=backend._stalled(job.requested))
            try:
                if not single:
                    conn.execute("SAVEPOINT asyncjobs_write")
                result = job.fn(conn, tx)
                if not single:
                    conn.execute("RELEASE asyncjobs_write")
            except Exception as exc:
                if not single and conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK TO asyncjobs_write")
                        conn.execute("RELEASE asyncjobs_write")
                finished.append((job, None, exc))
            else:
                finished.append((job, result, None))
        try:
            if any(error is None for _, _, error in finished):
                if stalled is not None or backend._stalled(first.requested):
                    backend._record_stall(conn, stalled or first.requested)
                conn.execute("COMMIT")
        except Exception as exc:
            finished = [(job, None, exc if error is None else error) for job, _, error in finished]
        finally:
            # No transaction stays open, whatever failed (SQLite may have rolled back
            # already after a full disk).
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        return finished

    def _autocommit(self, job: _Job[Any]) -> tuple[_Job[Any], Any, BaseException | None]:
        """Run a lone one-statement write in autocommit, the queue held."""
        conn = self.conn
        backend = self._backend

        def attempt() -> Any:
            tx = _Tx(now=backend._clock.now(), stalled=backend._stalled(job.requested))
            return job.fn(conn, tx)

        try:
            result = self._until_free(job, attempt)
        except Exception as exc:
            return job, None, exc
        if backend._stalled(job.requested):
            try:
                backend._record_stall(conn, job.requested)
            except sqlite3.Error as exc:  # the write itself has landed
                logger.warning("could not pause lease sweeps in %s: %s", backend._path, exc)
        return job, result, None

    def _followers(self) -> list[_Job[Any]]:
        """Take the writes queued behind the one that holds the lock now."""
        taken: list[_Job[Any]] = []
        if not self._jobs:  # the common case, without the lock
            return taken
        with self._mutex:
            while self._jobs and len(taken) < _GROUP_LIMIT - 1:
                job = self._jobs[0]
                if job.state == _ABANDONED:
                    self._jobs.popleft()
                    continue
                if not job.transaction:
                    break
                self._jobs.popleft()
                job.state = _RUNNING
                taken.append(job)
        return taken

    def _requeue(self, jobs: Sequence[_Job[Any]]) -> None:
        with self._mutex:
            for job in reversed(jobs):
                job.state = _QUEUED
                self._jobs.appendleft(job)

    def _until_free(self, job: _Job[Any], attempt: Callable[[], _T]) -> _T:
        """Run *attempt* until SQLite's lock is free, or its caller gives up."""
        pause = _BUSY_PAUSE[0]
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                # The busy handler has waited busy_timeout already; another connection
                # (not one queued here: another program, or a process of an older
                # asyncjobs) holds the lock.
                if not _is_busy(exc) or job.stop:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, _BUSY_PAUSE[1])


class SQLiteBackend:
    """Jobs in a SQLite file that several processes on one host may share.

    :param path: the database file; created with its schema on first use. Its
        directory must exist and be writable (SQLite creates ``-wal`` and
        ``-shm`` files next to it, and asyncjobs a ``-lock`` file).
    :param synchronous: ``"FULL"`` (default: a committed job survives power
        loss), ``"EXTRA"``, or ``"NORMAL"`` (survives a crash of the process,
        not of the machine; faster commits).
    :param busy_timeout: seconds one attempt waits in SQLite's busy handler
        for a write lock held outside asyncjobs' queue (another program, a
        long transaction) before it is tried again. It bounds how long a
        cancelled write can delay its caller.
    :param write_timeout: seconds a call an application makes (``enqueue``,
        ``cancel``, ``retry_dead``, pausing, schedule changes, and ``open``)
        waits for the write lock before :class:`SQLiteBusyError` names the
        process holding it. The runtime's own loops (claim, heartbeat, settle,
        lease sweeps, progress, prune, cron ticks) wait as long as it takes,
        with a warning in the log every 10 s.
    :param poll_interval: ``(shortest, longest)`` seconds between checks for
        work added by other processes; the interval starts at the shortest
        after activity and doubles while idle.
    :param max_size: cap the file at about this many bytes (``None``: no cap);
        a write past it fails with :class:`SQLiteFullError`, like a full disk.
    :raises ConfigurationError: for an option that cannot work.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 1.0,
        write_timeout: float = 60.0,
        poll_interval: tuple[float, float] = (0.005, 0.5),
        max_size: int | None = None,
    ) -> None:
        self._path = os.fspath(path)
        if not self._path:
            raise ConfigurationError("SQLiteBackend needs a file path, e.g. 'jobs.db'")
        self._synchronous = str(synchronous).upper()
        if self._synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not supported: use 'FULL' (default), "
                "'EXTRA' or 'NORMAL' (OFF can corrupt the file when the machine crashes)"
            )
        if not busy_timeout > 0:
            raise ConfigurationError(f"busy_timeout must be positive seconds, not {busy_timeout}")
        if not write_timeout > 0:
            raise ConfigurationError(f"write_timeout must be positive seconds, not {write_timeout}")
        shortest, longest = poll_interval
        if not 0 < shortest <= longest:
            raise ConfigurationError(
                f"poll_interval must be (shortest, longest) with 0 < shortest <= longest, "
                f"not {poll_interval!r}"
            )
        if max_size is not None and max_size <= 0:
            raise ConfigurationError(f"max_size must be a positive number of bytes, not {max_size}")
        self._busy_timeout = float(busy_timeout)
        self._write_timeout = float(write_timeout)
        self._poll_bounds = (float(shortest), float(longest))
        self._poll_delay = float(shortest)
        self._max_size = max_size
        self._clock: Clock = SystemClock()
        self._writer: _Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        # The leases this object has handed out or extended: they size the stall
        # threshold and the pause of lease sweeps after a stall.
        self._shortest_lease: float | None = None
        self._longest_lease = 0.0
        # One event per waiter: a clock may set a waiter's event as its deadline
        # timer (ManualClock does), which must not wake anyone else.
        self._waiters: set[anyio.Event] = set()
        # The wake counter of each queue as wait_for_work last saw it: a different
        # value in the store means work arrived since, even while nobody waited.
        self._seen: dict[str, int] = {}

    def __repr__(self) -> str:
        state = "open" if self._writer is not None else "closed"
        return f"SQLiteBackend({self._path!r}, {state})"

    # -- opening and closing ------------------------------------------------------

    async def open(self, clock: Clock) -> None:
        """Open the file, create or migrate its schema, and check it is safe to use.

        A file that fails a check is left as it was (a probe write that
        changes nothing shows that the file is writable).

        :param clock: where every due time and lease expiry comes from.
        :raises SQLiteVersionError: when the SQLite library is older than 3.35.
        :raises SQLitePathError: when the directory is missing or read-only, or
            the file is write-protected.
        :raises SQLiteNotADatabaseError: when the file is not a SQLite database.
        :raises SchemaVersionError: when a newer asyncjobs wrote the file.
        :raises SQLiteJournalModeError: when the file cannot use WAL.
        :raises SQLiteBusyError: when another process holds the write lock for
            longer than ``write_timeout``.
        :raises SQLiteFullError: when the disk is full.
        :raises BackendError: for any other reason SQLite refuses the file.
        """
        self._clock = clock
        if self._writer is not None:
            return
        version = _version_tuple(sqlite3.sqlite_version)
        if version < _MIN_VERSION:
            raise SQLiteVersionError(
                f"SQLite {sqlite3.sqlite_version} is too old for SQLiteBackend (it needs 3.35 "
                "or newer, for RETURNING): run Python linked against a newer SQLite"
            )
        shared = self._check_path()
        existed = self._side_files()
        writer: _Writer | None = None
        reader: aiosqlite.Connection | None = None
        try:
            writer = _Writer(self, self._open_queue_file())
            await self._call(writer, "open", _Job(self._schema_version, **self._raw()))
            await self._call(writer, "open", _Job(self._enable_wal, **self._raw()))
            await self._call(writer, "open", self._job(self._migrate), bounded=True)
            if self._max_size is not None:
                await self._call(writer, "open", _Job(self._cap_size, **self._raw()))
            reader = await self._connect_reader()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if reader is not None:
                    await reader.close()
                if writer is not None:
                    await self._close_writer(writer)
            self._remove_strays(existed)
            raise
        self._writer, self._reader = writer, reader
        self._seen.clear()
        self._poll_delay = self._poll_bounds[0]
        if shared and _has_wal_reset_bug(version):
            warnings.warn(
                UnsafeSQLiteWarning(
                    f"SQLite {sqlite3.sqlite_version} has the WAL-reset bug (SQLite 3.7.0 "
                    "through 3.51.2; fixed in 3.51.3, 3.50.7 and 3.44.6), which can corrupt "
                    f"{self._path} when several connections write it at once, as this "
                    "one and another open connection will: run Python linked against "
                    "SQLite 3.51.3 or newer (see https://sqlite.org/wal.html#walresetbug)"
                ),
                stacklevel=2,
            )

    async def aclose(self) -> None:
        """Close both connections; waiters return, and :meth:`open` may be called again.

        Writes already queued are finished first, for at most ``write_timeout``
        when another process holds the write lock; the rest then fail.
        """
        reader, self._reader = self._reader, None
        # Close the reader first so it is never the file's last connection: the
        # last one checkpoints, and only the writer should ever checkpoint.
        if reader is not None:
            await reader.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            await self._close_writer(writer)
        self._notify()

    async def _close_writer(self, writer: _Writer) -> None:
        writer.close()
        if writer.stuck():
            # Waiting for another process's lock for a write nobody wants any more:
            # the thread closes the connection when that wait ends.
            return
        try:
            with anyio.move_on_after(self._write_timeout):
                await writer.exited.wait()
        finally:
            if not writer.exited.is_set():
                # Stuck behind another process's lock, or our caller gave up: the
                # thread closes the connection when its wait ends.
                writer.abandon_all(self._not_open())

    def _check_path(self) -> bool:
        """Refuse an unusable path; return whether the file looks shared right now."""
        if self._path == ":memory:":
            return False
        path = Path(self._path)
        directory = path.parent
        if not directory.is_dir():
            raise SQLitePathError(
                f"cannot create the job database {self._path}: the directory {directory} "
                "does not exist; create it first or choose another path"
            )
        if path.is_dir():
            raise SQLitePathError(
                f"{self._path} is a directory: SQLiteBackend needs a database file path "
                f"such as {path / 'jobs.db'}"
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SQLitePathError(
                f"cannot use {self._path}: the directory {directory} is read-only, and "
                "SQLite must create the -wal and -shm files next to the database; make it "
                "writable for this user or choose another path"
            )
        # A -wal file means another connection has the file open right now (or one
        # did not close cleanly): the multi-connection case the WAL-reset bug needs.
        return Path(self._path + "-wal").exists()

    def _open_queue_file(self) -> int:
        """Open ``<path>-lock``, whose ``flock`` queues this host's writers; -1 if none."""
        if sys.platform == "win32" or self._path == ":memory:":
            return -1
        name = self._path + "-lock"
        try:
            try:
                return os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except PermissionError:
                # Another user's file: flock needs no write access.
                return os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SQLitePathError(
                f"cannot open {name} ({exc}), the file that queues writers to {self._path}: "
                "make it readable for this user, or choose another path"
            ) from exc

    def _side_files(self) -> dict[str, bool]:
        """Which of the ``-wal``, ``-shm`` and ``-lock`` files exist now."""
        return {suffix: Path(self._path + suffix).exists() for suffix in ("-wal", "-shm", "-lock")}

    def _remove_strays(self, existed: Mapping[str, bool]) -> None:
        """After a refused open, remove the side files this open created.

        SQLite keeps an empty ``-wal`` and a ``-shm`` beside a file it could not
        write; the ``-lock`` file is only ever removed here, right after this
        open made it (another process may hold a lock on an older one).
        """
        if self._path == ":memory:":
            return
        wal = Path(self._path + "-wal")
        if not existed["-wal"] and wal.exists() and wal.stat().st_size > 0:
            return  # frames another connection wrote meanwhile: leave everything
        for suffix in ("-wal", "-shm", "-lock"):
            if not existed[suffix]:
                with contextlib.suppress(OSError):
                    os.unlink(self._path + suffix)

    def _connect_writer(self) -> sqlite3.Connection:
        """Open the writing connection (in the writer thread)."""
        # isolation_level=None: the sqlite3 module must not open transactions on
        # its own; every write here is an explicit BEGIN IMMEDIATE transaction.
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._busy_timeout)
        try:
            for pragma in self._pragmas():
                conn.execute(pragma)
            conn.create_function("asyncjobs_now", 0, self._sql_now)
        except BaseException:
            conn.close()
            raise
        return conn

    def _sql_now(self) -> float:
        """``asyncjobs_now()`` in the writer's SQL: the store's clock."""
        return self._clock.now()

    async def _connect_reader(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            for pragma in (*self._pragmas(), "PRAGMA query_only = ON"):
                await conn.execute(pragma)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.close()
            raise
        return conn

    def _pragmas(self) -> tuple[str, ...]:
        return (
            f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}",
            f"PRAGMA synchronous = {self._synchronous}",
            # Keep the WAL file from staying huge after a burst.
            "PRAGMA journal_size_limit = 67108864",
            # 16 MiB of page cache: big batches and index updates stay in memory.
            "PRAGMA cache_size = -16384",
        )

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        # The first read of the file: this is also where "not a database" shows.
        tables = _rows(
            conn,
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'asyncjobs_schema'",
        )
        if not tables:
            return 0
        row = _row(conn, "SELECT version FROM asyncjobs_schema")
        found = 0 if row is None else int(row[0])
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self._path} was written by a newer asyncjobs (schema version {found}; this "
                f"one understands up to {SCHEMA_VERSION}): upgrade asyncjobs in every process "
                "that shares the file, or point SQLiteBackend at another file"
            )
        return found

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        row = _row(conn, "PRAGMA journal_mode = WAL")
        mode = "" if row is None else str(row[0]).lower()
        if mode != "wal":
            hint = (
                "an in-memory database cannot be shared; use MemoryBackend for a throwaway store"
                if self._path == ":memory:"
                else "put the file on a local disk (WAL does not work on network filesystems)"
            )
            raise SQLiteJournalModeError(
                f"SQLite kept journal_mode={mode!r} for {self._path} instead of 'wal', which "
                f"asyncjobs needs for safe concurrent access: {hint}"
            )

    def _migrate(self, conn: sqlite3.Connection, tx: _Tx) -> None:
        # Re-read under the write lock: another process may have migrated meanwhile.
        current = self._schema_version(conn)
        for step in _MIGRATIONS[current:]:
            for statement in step:
                conn.execute(statement)
        # Always a real write, even when nothing migrates: a write-protected file
        # (a read-only mount, chattr +i, another user's file) opens for reading and
        # would otherwise fail at the first claim. It stores the same version.
        conn.execute("UPDATE asyncjobs_schema SET version = ?", (SCHEMA_VERSION,))
        if current < SCHEMA_VERSION:
            logger.info(
                "SQLite job store %s migrated from schema %d to %d",
                self._path,
                current,
                SCHEMA_VERSION,
            )

    def _cap_size(self, conn: sqlite3.Connection) -> None:
        assert self._max_size is not None
        [(page_size,)] = _rows(conn, "PRAGMA page_size")
        conn.execute(f"PRAGMA max_page_count = {max(1, self._max_size // page_size)}")

    # -- writing ---------------------------------------------------------------------

    def _require(self, writer: _W | None) -> _W:
        if writer is None:
            raise self._not_open()
        return writer

    def _not_open(self) -> BackendError:
        return BackendError(
            f"SQLiteBackend({self._path!r}) is not open: call open() first "
            "(the runtime does this in `async with runtime`)"
        )

    def _requested(self) -> tuple[float, float]:
        # Real time of lock waits is measured in the writer thread too, which has no
        # event loop: both sides read the monotonic clock.
        return self._clock.now(), time.monotonic()

    def _raw(self) -> dict[str, Any]:
        return {"transaction": False, "requested": self._requested()}

    def _job(
        self,
        body: Callable[[sqlite3.Connection, _Tx], _T],
        requested: tuple[float, float] | None = None,
        single: bool = False,
    ) -> _Job[_T]:
        return _Job(body, transaction=True, requested=requested or self._requested(), single=single)

    async def _write(
        self,
        action: str,
        body: Callable[[sqlite3.Connection, _Tx], _T],
        *,
        bounded: bool = False,
        requested: tuple[float, float] | None = None,
        single: bool = False,
    ) -> _T:
        """Run *body* in one ``BEGIN IMMEDIATE`` transaction in the writer thread.

        With *bounded*, give up after ``write_timeout``; otherwise wait for the
        lock as long as it takes (the runtime's loops). *requested* is when the
        call began, if before now: a stall is measured from there. A *single*
        body is one statement, atomic on its own: when no other write joins it,
        it runs in autocommit (an explicit transaction costs more on a disk
        that really syncs). It must not rely on ``tx.now`` being read after
        the lock is held; ``asyncjobs_now()`` in its SQL is.
        """
        writer = self._require(self._writer)
        return await self._call(writer, action, self._job(body, requested, single), bounded)

    async def _call(self, writer: _Writer, action: str, job: _Job[_T], bounded: bool = True) -> _T:
        if not writer.submit(job):
            raise self._not_open()
        deadline = job.requested[1] + self._write_timeout if bounded else math.inf
        try:
            gave_up = await self._wait_for(writer, action, job, deadline)
        except BaseException:
            # Cancelled: a write that has begun lands (or not) before the caller
            # goes on, so it never changes the store behind the caller's back.
            if not writer.abandon(job):
                await self._finish_begun(job)
            raise
        if gave_up:
            raise self._busy_error(action, job)
        error = job.error
        if error is not None:
            if _is_busy(error):
                raise self._busy_error(action, job) from error
            if isinstance(error, sqlite3.Error):
                raise self._translate(error, action) from error
            raise error
        return job.result  # type: ignore[return-value]  # set together with the state

    async def _wait_for(
        self, writer: _Writer, action: str, job: _Job[Any], deadline: float
    ) -> bool:
        """Wait for *job*, logging while it waits; ``True`` if dropped at *deadline*."""
        while True:
            left = deadline - time.monotonic()
            if await _delivered(job, min(left, _WAIT_LOG_PERIOD)):
                return False
            if time.monotonic() >= deadline:
                if writer.abandon(job):
                    return True
                await self._finish_begun(job)  # it lands, or fails busy at its next try
                return False
            logger.warning(
                "%s on %s has waited %.0f s for the write lock, held by %s; still waiting",
                action,
                self._path,
                time.monotonic() - job.requested[1],
                self._lock_holder(),
            )

    @staticmethod
    async def _finish_begun(job: _Job[Any]) -> None:
        """Let a write that has begun end: stop its retries, wait for its outcome."""
        job.stop = True
        with anyio.CancelScope(shield=True):
            while not await _delivered(job, _WAIT_LOG_PERIOD):
                pass

    def _lock_holder(self) -> str:
        """Who holds the write lock: SQLite's, else asyncjobs' queue (Linux only)."""
        holder = _lock_holder(self._path + "-shm", flock=False) or _lock_holder(
            self._path + "-lock", flock=True
        )
        if holder is not None:
            return holder
        return (
            "another connection (not found in /proc/locks; `fuser "
            f"{self._path}` lists the processes that have the file open)"
        )

    def _busy_error(self, action: str, job: _Job[Any]) -> SQLiteBusyError:
        waited = time.monotonic() - job.requested[1]
        return SQLiteBusyError(
            f"{action} on {self._path} gave up after waiting {waited:.1f} s for the write "
            f"lock (write_timeout={self._write_timeout:g} s): {self._lock_holder()} holds it. "
            "Look there for a long transaction or a stopped or hung process, or raise "
            "write_timeout"
        )

    # -- leases under contention ------------------------------------------------------

    def _note_lease(self, lease: float) -> None:
        if self._shortest_lease is None or lease < self._shortest_lease:
            self._shortest_lease = lease
        self._longest_lease = max(self._longest_lease, lease)

    def _stall_threshold(self) -> float:
        if self._shortest_lease is None:
            return _STALL_AFTER
        return min(_STALL_AFTER, self._shortest_lease / 4)

    def _stalled(self, requested: tuple[float, float]) -> bool:
        """Whether a write requested at *requested* has waited long (both clocks)."""
        threshold = self._stall_threshold()
        return (
            self._clock.now() - requested[0] >= threshold
            and time.monotonic() - requested[1] >= threshold
        )

    def _record_stall(self, conn: sqlite3.Connection, requested: tuple[float, float]) -> None:
        """Pause lease sweeps until every heartbeat delayed with this write has landed.

        Runs inside the stalled write's transaction, before the queue passes on.
        """
        now = self._clock.now()
        resume_at = now + _STALL_GRACE + self._longest_lease / 3
        conn.execute(
            "UPDATE asyncjobs_lease_sweeps SET resume_at = max(resume_at, ?) WHERE id = 1",
            (resume_at,),
        )
        logger.info(
            "a write to %s waited %.1f s for the write lock; lease sweeps pause for %.1f s "
            "so that heartbeats delayed with it land first",
            self._path,
            now - requested[0],
            resume_at - now,
        )

    def _translate(self, exc: sqlite3.Error, action: str) -> BackendError:
        """Turn a sqlite3 error into a :class:`BackendError` that says what to fix."""
        code = _primary_code(exc)
        where = f"{action} on {self._path}"
        if _is_full(exc):
            return SQLiteFullError(
                f"{where} failed: the database is full (the disk is out of space"
                + (
                    f" or the file reached max_size={self._max_size} bytes"
                    if self._max_size
                    else ""
                )
                + "); nothing of this call was stored. Free disk space, prune finished jobs "
                "(a shorter retention), or raise max_size"
            )
        if code == _SQLITE_NOTADB:
            return SQLiteNotADatabaseError(
                f"{self._path} exists but is not a SQLite database (or is encrypted): point "
                "SQLiteBackend at a new path; the file was left untouched"
            )
        if code == _SQLITE_CORRUPT:
            return BackendError(
                f"{where} failed: the database file is corrupt ({exc}); restore it from a "
                "backup or move it aside and start a new one"
            )
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return SQLiteBusyError(
                f"{where} failed: the database stayed locked by {self._lock_holder()}; "
                "look there for a long transaction, or raise write_timeout"
            )
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
            directory = Path(self._path).parent
            return SQLitePathError(
                f"{where} failed ({exc}): {self._path} is write-protected for this process "
                "(file permissions, another user's file, chattr +i, or a read-only mount), "
                f"or SQLite cannot create its -wal and -shm files in {directory}; make the "
                "file, its -wal and -shm files and the directory writable for this user, or "
                "choose another path"
            )
        return BackendError(f"{where} failed: {exc}")

    def _notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def _read(self, action: str, sql: str, parameters: Iterable[Any] = ()) -> list[_Row]:
        conn = self._require(self._reader)
        deadline = anyio.current_time() + self._write_timeout
        pause = _BUSY_PAUSE[0]
        while True:
            try:
                return await _fetchall(conn, sql, parameters)
            except sqlite3.Error as exc:
                # Readers are only ever busy for a moment (a WAL reset, recovery after
                # a crash): retry, but not forever.
                if not _is_busy(exc) or anyio.current_time() >= deadline:
                    raise self._translate(exc, action) from exc
            except ValueError:
                # aiosqlite's "Connection closed": aclose() ran while this read waited.
                if self._reader is None:
                    raise self._not_open() from None
                raise
            await anyio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, _BUSY_PAUSE[1])

    # -- writing jobs -----------------------------------------------------------------

    def _insert(self, conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert *jobs* inside the caller's transaction, returning active key matches."""
        by_key: dict[str, Job] = {}
        keys = sorted({new.key for new in jobs if new.key is not None})
        for chunk in _chunks(keys):
            rows = _rows(
                conn,
                f"SELECT {_JOB_COLUMNS} FROM asyncjobs_jobs"
                " WHERE key IS NOT NULL AND state IN ('queued', 'running')"
                f" AND key IN ({_marks(len(chunk))})",
                chunk,
            )
            by_key.update((job.key, job) for job in map(_to_job, rows) if job.key is not None)
        stored: list[Job] = []
        rows_to_insert: list[_Row] = []
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
            rows_to_insert.append(_insert_row(new))
        if len(rows_to_insert) == 1:
            conn.execute(_INSERT_SQL, rows_to_insert[0])
        elif rows_to_insert:
            # The insert trigger bumps the queues' wake counters.
            conn.executemany(_INSERT_SQL, rows_to_insert)
        return stored

    def _bump(self, conn: sqlite3.Connection, queues: Iterable[str]) -> None:
        """Tell other processes' waiters that *queues* got work (inside a transaction)."""
        conn.executemany(_WAKE_SQL, [(queue,) for queue in sorted(queues)])

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs* in one transaction; a matching active ``key`` returns that job.

        Waits at most ``write_timeout`` for the write lock.

        :raises SQLiteFullError: when the batch does not fit (nothing is stored).
        :raises SQLiteBusyError: when another process held the write lock for
            longer than ``write_timeout`` (nothing is stored).
        """
        if not jobs:
            return []

        [first, *others] = jobs
        now = self._clock.now()
        if (
            handoff is not None
            and not others
            and first.key is None
            and first.due_at <= now
            and handoff.limits.get(first.queue, 0) > 0
        ):
            job = await self._insert_claimed(first, handoff)
            if job.state is JobState.QUEUED:
                self._notify()
            return [job]
        if len(jobs) <= _MAX_INSERT_ROWS and all(new.key is None for new in jobs):
            # Nothing to look up first: one INSERT statement. The parameters are a
            # tuple, never an iterator, so the statement can run again.
            sql = _INSERT_HEAD + ", ".join([_INSERT_ROW] * len(jobs))
            parameters = tuple(itertools.chain.from_iterable(map(_insert_row, jobs)))

            def insert(conn: sqlite3.Connection, tx: _Tx) -> list[Job]:
                conn.execute(sql, parameters)
                return [new.queued() for new in jobs]

            stored = await self._write("enqueue", insert, bounded=True, single=True)
        else:

            def body(conn: sqlite3.Connection, tx: _Tx) -> list[Job]:
                return self._insert(conn, jobs)

            stored = await self._write("enqueue", body, bounded=True)
        self._notify()
        return stored

    async def _insert_claimed(self, new: NewJob, handoff: Handoff) -> Job:
        """Insert *new*, claimed for the handoff's worker when it is next in line."""
        self._note_lease(handoff.lease)

        def body(conn: sqlite3.Connection, tx: _Tx) -> Job:
            # The lease starts when the lock is held (asyncjobs_now() in the SQL).
            parameters = (
                new.queue,
                new.queue,
                new.priority,
                *_insert_row(new),
                handoff.lease,
                handoff.worker_id,
            )
            [(state, token, expires, started)] = _rows(conn, _INSERT_CLAIMED_SQL, parameters)
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

        return await self._write("enqueue", body, bounded=True, single=True)

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue* in one ``UPDATE ... RETURNING``.

        The lease runs from when the write lock is held, so a claim that waited
        for the lock hands out a whole lease.
        """
        if limit <= 0:
            return []
        self._note_lease(lease)

        def body(conn: sqlite3.Connection, tx: _Tx) -> list[Job]:
            rows = _rows(conn, _CLAIM_SQL, (lease, worker_id, queue, queue, limit))
            # RETURNING gives rows in no particular order: restore the claim order.
            rows.sort(key=lambda row: (row[7], row[5], row[26]))
            return [_to_job(row) for row in rows]

        claimed = await self._write("claim", body, single=True)
        if claimed:
            self._poll_delay = self._poll_bounds[0]
        return claimed

    async def heartbeat(self, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
        """Extend the leases still held; report the lost ones and requested cancels.

        The new expiry is ``now + lease`` with ``now`` read once the write lock
        is held: a heartbeat that waited for the lock still extends in full.
        """
        if not leases:
            return HeartbeatReply()
        self._note_lease(lease)
        chunks = list(_chunks(list(leases.items()), per_item=2))

        def body(conn: sqlite3.Connection, tx: _Tx) -> list[_Row]:
            rows: list[_Row] = []
            for chunk in chunks:
                sql = (
                    f"WITH {_NOW_CTE}, o(id, token) AS (VALUES {_rows_of(2, len(chunk))})"
                    " UPDATE asyncjobs_jobs SET lease_expires_at = (SELECT now FROM t) + ?"
                    " FROM o"
                    " WHERE asyncjobs_jobs.id = o.id AND asyncjobs_jobs.lease_token = o.token"
                    " AND asyncjobs_jobs.state = 'running'"
                    " RETURNING asyncjobs_jobs.id, asyncjobs_jobs.cancel_requested"
                )
                rows += _rows(conn, sql, [*itertools.chain.from_iterable(chunk), lease])
            return rows

        held = await self._write("heartbeat", body, single=len(chunks) == 1)
        return HeartbeatReply(
            lost=frozenset(leases.keys() - {job_id for job_id, _ in held}),
            cancel_requested=frozenset(job_id for job_id, flag in held if flag),
        )

    async def settle(self, outcomes: Sequence[Outcome]) -> list[str]:
        """Apply the outcomes whose lease token is current, in one atomic step.

        :returns: the ids of the refused outcomes.
        """
        if not outcomes:
            return []
        # Only the first outcome of a job can hold its lease: a repeat in the same
        # batch is refused, as it would be in a later batch.
        first: dict[str, Outcome] = {}
        for outcome in outcomes:
            first.setdefault(outcome.job_id, outcome)
        finished: list[Outcome] = []
        retried: list[Outcome] = []
        released: list[Outcome] = []
        for outcome in first.values():
            if outcome.kind is OutcomeKind.RETRY:
                retried.append(outcome)
            elif outcome.kind is OutcomeKind.RELEASE:
                released.append(outcome)
            else:
                finished.append(outcome)
        again = {outcome.job_id for outcome in (*retried, *released)}

        def statements(now: float) -> Iterable[tuple[str, list[Any]]]:
            for chunk in _chunks(finished, per_item=7):
                values: list[Any] = []
                for outcome in chunk:
                    values += (outcome.job_id, outcome.lease_token)
                    values += (_FINISHED_STATE[outcome.kind], outcome.result)
                    values += _error_columns(outcome.error)
                yield _settle_sql(_SETTLE_FINISHED, len(chunk)), [*values, now]
            for chunk in _chunks(retried, per_item=6):
                values = []
                for outcome in chunk:
                    due_at = now if outcome.due_at is None else outcome.due_at
                    values += (outcome.job_id, outcome.lease_token, due_at)
                    values += _error_columns(outcome.error)
                yield _settle_sql(_SETTLE_RETRY, len(chunk)), values
            for chunk in _chunks(released, per_item=3):
                values = []
                for outcome in chunk:
                    due_at = now if outcome.due_at is None else outcome.due_at
                    values += (outcome.job_id, outcome.lease_token, due_at)
                yield _settle_sql(_SETTLE_RELEASE, len(chunk)), values

        def body(conn: sqlite3.Connection, tx: _Tx) -> list[_Row]:
            rows: list[_Row] = []
            for sql, values in statements(tx.now):
                rows += _rows(conn, sql, values)
            queues = {queue for job_id, queue in rows if job_id in again}
            if queues:
                self._bump(conn, queues)
            return rows

        # A batch of finished jobs (the common case) is one statement.
        single = not again and len(finished) <= (_MAX_PARAMS - 1) // 7
        rows = await self._write("settle", body, single=single)
        if any(job_id in again for job_id, _ in rows):
            self._notify()
        accepted = {job_id for job_id, _ in rows}
        return [
            outcome.job_id
            for outcome in outcomes
            if outcome.job_id not in accepted or first[outcome.job_id] is not outcome
        ]

    async def recover_expired(self) -> int:
        """Requeue running jobs whose lease ran out; kill those out of attempts.

        Does nothing while lease sweeps are paused after a stalled write, or
        when this sweep itself waited long for the write lock (see the module
        docstring): heartbeats held up with it have not landed yet.

        :returns: how many jobs were requeued or killed.
        """
        # A cheap read first: most sweeps find nothing and need no write lock. The
        # sweep judges what it read then, so its wait is counted from then.
        requested = self._requested()
        now = requested[0]
        if not await self._read("recover_expired", _EXPIRED_SQL, (now, now)):
            return 0

        def body(conn: sqlite3.Connection, tx: _Tx) -> tuple[int, set[str]]:
            if tx.stalled:
                # Heartbeats queued behind this sweep would find their jobs requeued.
                # (The write records the stall: other sweeps pause as well.)
                logger.info("lease sweep skipped: it waited long for the write lock")
                return 0, set()
            [(resume_at,)] = _rows(
                conn, "SELECT resume_at FROM asyncjobs_lease_sweeps WHERE id = 1"
            )
            now = tx.now
            if now < resume_at:
                return 0, set()
            error = _error_columns(_EXPIRED_ERROR)
            killed = _rows(
                conn,
                "UPDATE asyncjobs_jobs SET state = 'dead', finished_at = ?, error_type = ?,"
                " error_message = ?, error_traceback = ?, lease_token = NULL,"
                " lease_expires_at = NULL"
                " WHERE state = 'running' AND lease_expires_at <= ? AND attempts >= max_attempts"
                " RETURNING id",
                (now, *error, now),
            )
            requeued = _rows(
                conn,
                "UPDATE asyncjobs_jobs SET state = 'queued', due_at = ?, error_type = ?,"
                " error_message = ?, error_traceback = ?, lease_token = NULL,"
                " lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0"
                " WHERE state = 'running' AND lease_expires_at <= ?"
                " RETURNING queue",
                (now, *error, now),
            )
            queues = {queue for (queue,) in requeued}
            if queues:
                self._bump(conn, queues)
            return len(killed) + len(requeued), queues

        count, queues = await self._write("recover_expired", body, requested=requested)
        if count:
            logger.info("recovered %d job(s) whose lease expired", count)
        if queues:
            self._notify()
        return count

    async def set_progress(
        self, job_id: str, lease_token: str, progress: float, message: str | None
    ) -> bool:
        """Store progress for a job whose lease is still held; ``False`` otherwise."""

        def body(conn: sqlite3.Connection, tx: _Tx) -> bool:
            return bool(
                _rows(
                    conn,
                    "UPDATE asyncjobs_jobs SET progress = ?, progress_message = ?"
                    " WHERE id = ? AND state = 'running' AND lease_token = ? RETURNING id",
                    (progress, message, job_id, lease_token),
                )
            )

        return await self._write("set_progress", body, single=True)

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or flag a running one for its worker."""

        def body(conn: sqlite3.Connection, tx: _Tx) -> Job | None:
            row = _row(conn, f"SELECT {_JOB_COLUMNS} FROM asyncjobs_jobs WHERE id = ?", (job_id,))
            if row is None:
                return None
            job = _to_job(row)
            if job.state is JobState.QUEUED:
                sql = (
                    "UPDATE asyncjobs_jobs SET state = 'cancelled', finished_at = ?,"
                    " lease_token = NULL, lease_expires_at = NULL WHERE id = ?"
                    f" RETURNING {_JOB_COLUMNS}"
                )
                row = _row(conn, sql, (tx.now, job_id))
            elif job.state is JobState.RUNNING:
                sql = (
                    "UPDATE asyncjobs_jobs SET cancel_requested = 1 WHERE id = ?"
                    f" RETURNING {_JOB_COLUMNS}"
                )
                row = _row(conn, sql, (job_id,))
            else:
                return job
            assert row is not None
            return _to_job(row)

        return await self._write("cancel", body, bounded=True)

    async def retry_dead(self, job_id: str, due_at: float) -> Job | None:
        """Queue a dead job again at *due_at* with its attempts reset.

        A dead job whose ``key`` an active job holds meanwhile is left dead:
        reviving it would make two active jobs share the key.
        """

        def body(conn: sqlite3.Connection, tx: _Tx) -> tuple[Job | None, bool]:
            row = _row(conn, f"SELECT {_JOB_COLUMNS} FROM asyncjobs_jobs WHERE id = ?", (job_id,))
            if row is None:
                return None, False
            job = _to_job(row)
            if job.state is not JobState.DEAD:
                return job, False
            if job.key is not None:
                taken = _row(
                    conn,
                    "SELECT 1 FROM asyncjobs_jobs WHERE key IS NOT NULL"
                    " AND state IN ('queued', 'running') AND key = ?",
                    (job.key,),
                )
                if taken is not None:
                    return job, False
            row = _row(
                conn,
                "UPDATE asyncjobs_jobs SET state = 'queued', attempts = 0, finished_at = NULL,"
                " due_at = ?, lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,"
                f" cancel_requested = 0 WHERE id = ? RETURNING {_JOB_COLUMNS}",
                (due_at, job_id),
            )
            assert row is not None
            self._bump(conn, [job.queue])
            return _to_job(row), True

        job, revived = await self._write("retry_dead", body, bounded=True)
        if revived:
            self._notify()
        return job

    async def pause_queue(self, queue: str, paused: bool) -> None:
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

        def body(conn: sqlite3.Connection, tx: _Tx) -> None:
            conn.execute(sql, (queue,))

        await self._write("pause_queue", body, bounded=True, single=True)
        if not paused:
            self._notify()

    async def prune(self, cutoffs: Mapping[JobState, float]) -> int:
        """Delete finished jobs older than their state's cutoff, a batch per statement.

        :returns: how many jobs were deleted.
        """
        deleted = 0
        for state in sorted(FINISHED_STATES & cutoffs.keys()):

            def body(
                conn: sqlite3.Connection,
                tx: _Tx,
                state: JobState = state,
                cutoff: float = cutoffs[state],
            ) -> int:
                return len(
                    _rows(
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
                count = await self._write("prune", body, single=True)
                deleted += count
                if count < _PRUNE_BATCH:
                    break
        return deleted

    # -- reading ------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job, or ``None``."""
        rows = await self._read(
            "get_job", f"SELECT {_JOB_COLUMNS} FROM asyncjobs_jobs WHERE id = ?", (job_id,)
        )
        return _to_job(rows[0]) if rows else None

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        schedule: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Return a page of jobs matching every given filter, newest enqueued first."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("queue", queue),
            ("state", None if state is None else str(state)),
            ("name", name),
            ("schedule", schedule),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._read(
            "list_jobs",
            f"SELECT {_JOB_COLUMNS} FROM asyncjobs_jobs{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*params, max(0, limit), max(0, offset)),
        )
        return [_to_job(row) for row in rows]

    async def queue_stats(self) -> list[QueueStats]:
        """Count jobs per queue and state, from indexes only, in one snapshot."""
        counts: dict[str, dict[JobState, int]] = {}
        paused: set[str] = set()
        for queue, state, count in await self._read("queue_stats", _QUEUE_STATS_SQL):
            per_state = counts.setdefault(queue, {})
            if state is None:
                paused.add(queue)
            else:
                per_state[JobState(state)] = count
        return [
            QueueStats(queue=queue, counts=per_state, paused=queue in paused)
            for queue, per_state in sorted(counts.items())
        ]

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest ``due_at`` of queued jobs in the unpaused *queues*."""
        names = sorted(set(queues))
        earliest: float | None = None
        for chunk in _chunks(names):
            sql = _NEXT_DUE_SQL.format(values=", ".join("(?)" for _ in chunk))
            rows = await self._read("next_due_at", sql, chunk)
            value = rows[0][0] if rows else None
            if value is not None and (earliest is None or value < earliest):
                earliest = value
        return earliest

    async def _new_work(self, queues: Sequence[str]) -> bool:
        """Whether a wake counter of *queues* moved since last seen; marks it seen."""
        changed = False
        for chunk in _chunks(queues):
            rows = await self._read(
                "wait_for_work",
                f"SELECT name, wake_seq FROM asyncjobs_queues WHERE name IN ({_marks(len(chunk))})",
                chunk,
            )
            for name, wake_seq in rows:
                if self._seen.get(name, 0) != wake_seq:
                    self._seen[name] = wake_seq
                    changed = True
        return changed

    async def _new_work_unless_closed(self, names: Sequence[str]) -> bool:
        """Like :meth:`_new_work`, but a backend closed meanwhile counts as a wake-up."""
        try:
            return await self._new_work(names)
        except BackendError:
            if self._reader is None:
                return True
            raise

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*.

        Work added through this object wakes at once; work added by another
        process is found by the adaptive poll (see the module docstring).
        """
        done = wakeup or anyio.Event()
        # Registered before the first look at the store, so a notify from here on
        # is never missed.
        self._waiters.add(done)
        try:
            if deadline is not None and deadline <= self._clock.now():
                return
            names = sorted(set(queues))
            if self._reader is None or await self._new_work(names):
                return
            shortest, longest = self._poll_bounds
            while True:
                # The poll runs on real time (other processes), the deadline on the
                # backend's clock: wait for whichever comes first, in this task.
                with anyio.move_on_after(self._poll_delay):
                    await self._clock.wait(done, deadline)
                if done.is_set() or (deadline is not None and deadline <= self._clock.now()):
                    return
                if self._reader is None or await self._new_work_unless_closed(names):
                    self._poll_delay = shortest
                    return
                self._poll_delay = min(self._poll_delay * 2, longest)
        finally:
            self._waiters.discard(done)

    # -- schedules ----------------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace a schedule; an unchanged trigger keeps its timing and pause."""

        def body(conn: sqlite3.Connection, tx: _Tx) -> Schedule:
            row = _row(
                conn,
                "SELECT trigger, next_fire_at, last_fire_at, paused FROM asyncjobs_schedules"
                " WHERE name = ?",
                (schedule.name,),
            )
            stored = schedule
            if row is not None and row[0] == schedule.trigger:
                stored = attrs.evolve(
                    schedule, next_fire_at=row[1], last_fire_at=row[2], paused=bool(row[3])
                )
            conn.execute(
                f"INSERT OR REPLACE INTO asyncjobs_schedules ({_SCHEDULE_COLUMNS})"
                f" VALUES ({_marks(14)})",
                _schedule_row(stored),
            )
            return stored

        return await self._write("put_schedule", body, bounded=True)

    async def get_schedule(self, name: str) -> Schedule | None:
        """Return one schedule, or ``None``."""
        rows = await self._read(
            "get_schedule",
            f"SELECT {_SCHEDULE_COLUMNS} FROM asyncjobs_schedules WHERE name = ?",
            (name,),
        )
        return _to_schedule(rows[0]) if rows else None

    async def list_schedules(self) -> list[Schedule]:
        """Return every schedule, ordered by name."""
        rows = await self._read(
            "list_schedules", f"SELECT {_SCHEDULE_COLUMNS} FROM asyncjobs_schedules ORDER BY name"
        )
        return [_to_schedule(row) for row in rows]

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; ``False`` when there was none."""

        def body(conn: sqlite3.Connection, tx: _Tx) -> bool:
            return bool(
                _rows(
                    conn,
                    "DELETE FROM asyncjobs_schedules WHERE name = ? RETURNING name",
                    (name,),
                )
            )

        return await self._write("remove_schedule", body, bounded=True, single=True)

    async def pause_schedule(self, name: str, paused: bool) -> Schedule | None:
        """Pause or resume a schedule; ``None`` when there is none."""

        def body(conn: sqlite3.Connection, tx: _Tx) -> Schedule | None:
            row = _row(
                conn,
                "UPDATE asyncjobs_schedules SET paused = ? WHERE name = ?"
                f" RETURNING {_SCHEDULE_COLUMNS}",
                (int(paused), name),
            )
            return None if row is None else _to_schedule(row)

        return await self._write("pause_schedule", body, bounded=True, single=True)

    async def fire_schedule(
        self,
        name: str,
        expected_fire_at: float,
        next_fire_at: float | None,
        jobs: Sequence[NewJob],
    ) -> list[Job] | None:
        """Fire one tick: compare-and-set the schedule and enqueue *jobs* atomically.

        :returns: the enqueued jobs, or ``None`` when the schedule is missing,
            paused, or another process fired this tick first (nothing is written).
        """

        def body(conn: sqlite3.Connection, tx: _Tx) -> list[Job] | None:
            row = _row(
                conn,
                "SELECT next_fire_at, paused FROM asyncjobs_schedules WHERE name = ?",
                (name,),
            )
            if row is None or row[1] or row[0] != expected_fire_at:
                return None
            conn.execute(
                "UPDATE asyncjobs_schedules SET next_fire_at = ?, last_fire_at = ? WHERE name = ?",
                (next_fire_at, expected_fire_at, name),
            )
            return self._insert(conn, jobs)

        fired = await self._write("fire_schedule", body)
        if fired:
            self._notify()
        return fired
