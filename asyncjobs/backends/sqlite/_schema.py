"""The schema: tables, indexes and triggers as numbered migrations, and the code that applies them.

- ``asyncjobs_jobs``: one row per job. Partial covering indexes serve the hot
  queries (claim order, expired leases, prune and counts), so their cost does
  not grow with the finished jobs a file holds.
- ``asyncjobs_keys``: the job holding each dedup key; its primary key is what
  enforces dedup (``_keys.py``).
- A job queued behind its key's running holder names it in ``waits_for``
  (schema 7): its ``due_at`` is +infinity, so no claim reaches it, and its due
  time waits in ``parked_due_at``. Triggers give the due time back when the
  holder finishes (complete, dead, cancelled) or its row is deleted, whichever
  statement does it, and bump the wake counters (``_keys.py``).
- ``asyncjobs_queues``: pause flags, the per-queue wake counter that other
  processes poll (``_wakeups.py``), the current partition round and whether
  the queue is claimed under a concurrency limit (``_flow.py``).
- ``asyncjobs_partitions``: each partition's last round (``_enqueue.py``).
- ``asyncjobs_rate_claims``: claim times in the rate windows, and
  ``asyncjobs_rate_counts`` how many each window holds (schema 8; ``_flow.py``).
- ``asyncjobs_schedules``: stored schedules (``_schedules.py``).
- ``asyncjobs_lease_sweeps``: when lease sweeps resume after a stall (``_stalls.py``).
- ``asyncjobs_attempts``: each job's attempt history, the latest ones (``_history.py``).
- ``asyncjobs_workers``, ``asyncjobs_audit``: live runtimes and operator actions,
  opaque records (``_registry.py``).
- ``asyncjobs_schema``: the version, :data:`SCHEMA_VERSION` once migrated.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

from ..._exceptions import SchemaVersionError
from ._statements import all_rows, first_row

__all__ = ["SCHEMA_VERSION", "migrate", "stored_version"]

logger = logging.getLogger("asyncjobs")

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
    # with it have landed (see ``_stalls.py``).
    (
        """
        CREATE TABLE asyncjobs_lease_sweeps (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            resume_at REAL NOT NULL
        )
        """,
        "INSERT INTO asyncjobs_lease_sweeps (id, resume_at) VALUES (1, 0)",
    ),
    # 5: flow control. Jobs get a partition and a partition round (claim order is
    # priority, round, due time, seq: the claim index takes the round, so a queue
    # without partitions, all in round 0, still reads its due jobs in one range).
    # Dedup keys move to a table of their own: a key's holder is judged by its
    # scope (queued, active, window), which a partial unique index on the jobs
    # cannot express; the table's primary key still lets one job hold a key.
    (
        "ALTER TABLE asyncjobs_jobs ADD COLUMN partition TEXT",
        "ALTER TABLE asyncjobs_jobs ADD COLUMN round INTEGER NOT NULL DEFAULT 0",
        "DROP INDEX asyncjobs_jobs_claim",
        """
        CREATE INDEX asyncjobs_jobs_claim
        ON asyncjobs_jobs (queue, priority, round, due_at, seq, state)
        WHERE state = 'queued'
        """,
        # The queue's current round (the highest claimed), and whether it is
        # claimed under a concurrency limit (a running job ending there wakes).
        "ALTER TABLE asyncjobs_queues ADD COLUMN round INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE asyncjobs_queues ADD COLUMN limited INTEGER NOT NULL DEFAULT 0",
        """
        CREATE TABLE asyncjobs_partitions (
            queue TEXT NOT NULL,
            partition TEXT NOT NULL,
            last_round INTEGER NOT NULL,
            PRIMARY KEY (queue, partition)
        ) WITHOUT ROWID
        """,
        # How long a keyed job holds its key (NULL: while active, as before 5).
        "ALTER TABLE asyncjobs_jobs ADD COLUMN key_scope TEXT",
        "ALTER TABLE asyncjobs_jobs ADD COLUMN key_expires_at REAL",
        # The job that took each key last. Whether it still holds the key is read
        # from its row when the key is next wanted, so claiming or finishing a
        # job writes nothing here.
        """
        CREATE TABLE asyncjobs_keys (
            key TEXT PRIMARY KEY,
            job_id TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        """
        INSERT INTO asyncjobs_keys (key, job_id)
        SELECT key, id FROM asyncjobs_jobs
        WHERE key IS NOT NULL AND state IN ('queued', 'running')
        """,
        # A keyed job is only inserted when its key is free (``_keys.py`` judges
        # that in the same transaction): inserting it takes the key.
        """
        CREATE TRIGGER asyncjobs_jobs_key AFTER INSERT ON asyncjobs_jobs
        WHEN NEW.key IS NOT NULL
        BEGIN
            INSERT INTO asyncjobs_keys (key, job_id) VALUES (NEW.key, NEW.id)
            ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id;
        END
        """,
        "DROP INDEX asyncjobs_jobs_active_key",
        # Claim times in the rate windows ("queue:<name>", "job:<name>").
        "CREATE TABLE asyncjobs_rate_claims (name TEXT NOT NULL, at REAL NOT NULL)",
        "CREATE INDEX asyncjobs_rate_claims_window ON asyncjobs_rate_claims (name, at)",
        # A claim of a partitioned job moves its queue's current round on (in the
        # claim's own statement; jobs without a partition, round 0, skip it).
        """
        CREATE TRIGGER asyncjobs_jobs_round AFTER UPDATE OF state ON asyncjobs_jobs
        WHEN NEW.round > 0 AND NEW.state = 'running'
        BEGIN
            UPDATE asyncjobs_queues SET round = NEW.round
            WHERE name = NEW.queue AND round < NEW.round;
        END
        """,
        # A running job ending or requeued in a queue claimed under a concurrency
        # limit frees a slot: wake that queue's waiters in every process.
        """
        CREATE TRIGGER asyncjobs_jobs_slot AFTER UPDATE OF state ON asyncjobs_jobs
        WHEN OLD.state = 'running' AND NEW.state <> 'running'
        BEGIN
            UPDATE asyncjobs_queues SET wake_seq = wake_seq + 1
            WHERE name = NEW.queue AND limited = 1;
        END
        """,
        # A pruned job lets go of its key (a window key too).
        """
        CREATE TRIGGER asyncjobs_jobs_key_gone AFTER DELETE ON asyncjobs_jobs
        WHEN OLD.key IS NOT NULL
        BEGIN
            DELETE FROM asyncjobs_keys WHERE key = OLD.key AND job_id = OLD.id;
        END
        """,
    ),
    # 6: operating. Jobs carry tags (a JSON object; NULL for none). Each attempt
    # that ended is kept in its job's history, keyed by the job's ``seq``: jobs
    # end roughly in enqueue order, so a settle's attempts land on one or two
    # pages (a random job id would dirty a page per attempt). ``seq`` counts a
    # job's attempts as recorded (``number`` may repeat: a release hands its
    # number back), so the write that adds one trims the oldest by a range.
    # (A deleted job's seq may be reused: its history goes with it.)
    (
        "ALTER TABLE asyncjobs_jobs ADD COLUMN tags TEXT",
        """
        CREATE TABLE asyncjobs_attempts (
            job_seq INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            number INTEGER NOT NULL,
            worker_id TEXT,
            started_at REAL,
            finished_at REAL NOT NULL,
            outcome TEXT NOT NULL,
            error_type TEXT,
            error_message TEXT,
            PRIMARY KEY (job_seq, seq)
        ) WITHOUT ROWID
        """,
        # A deleted job (pruned, purged, deleted, removed at settle) takes its history.
        """
        CREATE TRIGGER asyncjobs_jobs_history_gone AFTER DELETE ON asyncjobs_jobs
        BEGIN
            DELETE FROM asyncjobs_attempts WHERE job_seq = OLD.seq;
        END
        """,
        # A queued-scope key is let go for good at its job's first claim (a job
        # released back to the queue does not take it again).
        """
        CREATE TRIGGER asyncjobs_jobs_key_claimed AFTER UPDATE OF state ON asyncjobs_jobs
        WHEN NEW.state = 'running' AND NEW.key_scope = 'queued'
        BEGIN
            DELETE FROM asyncjobs_keys WHERE key = NEW.key AND job_id = NEW.id;
        END
        """,
        """
        DELETE FROM asyncjobs_keys WHERE job_id IN (
            SELECT id FROM asyncjobs_jobs
            WHERE key_scope = 'queued' AND (state <> 'queued' OR attempts > 0)
        )
        """,
        """
        CREATE TABLE asyncjobs_workers (
            id TEXT PRIMARY KEY,
            last_seen REAL NOT NULL,
            data BLOB NOT NULL
        ) WITHOUT ROWID
        """,
        # ``seq`` keeps entries of one time in the order they were recorded.
        """
        CREATE TABLE asyncjobs_audit (
            seq INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            data BLOB NOT NULL
        )
        """,
        "CREATE INDEX asyncjobs_audit_at ON asyncjobs_audit (at)",
    ),
    # 7: a job that ``on_conflict="replace"`` queued behind its key's running
    # holder waits for that job (``waits_for``). Meanwhile its due time is parked
    # in ``parked_due_at`` and ``due_at`` is +infinity, which no claim, handoff
    # gate or due-time read reaches, so the claim index and the claim statements
    # stay as they were and the hot path pays nothing for the rule.
    (
        "ALTER TABLE asyncjobs_jobs ADD COLUMN waits_for TEXT",
        "ALTER TABLE asyncjobs_jobs ADD COLUMN parked_due_at REAL",
        # Almost always empty: the release triggers' lookup costs one seek.
        """
        CREATE INDEX asyncjobs_jobs_waits_for ON asyncjobs_jobs (waits_for)
        WHERE waits_for IS NOT NULL
        """,
        # The holder finished (settled, given up by a lease sweep, cancelled while
        # queued between attempts, whatever the statement): the jobs behind it get
        # their due time back, and their queues' waiters wake in every process.
        # Only a keyed job can be waited for, so keyless jobs skip the trigger.
        """
        CREATE TRIGGER asyncjobs_jobs_release AFTER UPDATE OF state ON asyncjobs_jobs
        WHEN NEW.key IS NOT NULL AND NEW.state IN ('complete', 'dead', 'cancelled')
        BEGIN
            INSERT INTO asyncjobs_queues (name, wake_seq)
            SELECT queue, 1 FROM asyncjobs_jobs WHERE waits_for = NEW.id AND state = 'queued'
            ON CONFLICT (name) DO UPDATE SET wake_seq = wake_seq + 1;
            UPDATE asyncjobs_jobs SET due_at = parked_due_at, waits_for = NULL, parked_due_at = NULL
            WHERE waits_for = NEW.id;
        END
        """,
        # The holder's row is gone (deleted between attempts, purged, removed).
        """
        CREATE TRIGGER asyncjobs_jobs_release_gone AFTER DELETE ON asyncjobs_jobs
        WHEN OLD.key IS NOT NULL
        BEGIN
            INSERT INTO asyncjobs_queues (name, wake_seq)
            SELECT queue, 1 FROM asyncjobs_jobs WHERE waits_for = OLD.id AND state = 'queued'
            ON CONFLICT (name) DO UPDATE SET wake_seq = wake_seq + 1;
            UPDATE asyncjobs_jobs SET due_at = parked_due_at, waits_for = NULL, parked_due_at = NULL
            WHERE waits_for = OLD.id;
        END
        """,
    ),
    # 8: each rate window's claim count, kept by the claims that read and write
    # the window (``_flow.py``), so a claim reads one row instead of counting
    # every claim still in the window (thousands at a few thousand jobs/s).
    (
        """
        CREATE TABLE asyncjobs_rate_counts (
            name TEXT PRIMARY KEY,
            n INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        """
        INSERT INTO asyncjobs_rate_counts (name, n)
        SELECT name, COUNT(*) FROM asyncjobs_rate_claims GROUP BY name
        """,
    ),
)

#: The schema version this asyncjobs writes; files with a higher one are refused.
SCHEMA_VERSION: Final = len(_MIGRATIONS)


def stored_version(conn: sqlite3.Connection, path: str) -> int:
    """The schema version of the file at *path* (0 for a new file).

    :raises SchemaVersionError: when a newer asyncjobs wrote the file.
    """
    # The first read of the file: this is also where "not a database" shows.
    tables = all_rows(
        conn,
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'asyncjobs_schema'",
    )
    if not tables:
        return 0
    row = first_row(conn, "SELECT version FROM asyncjobs_schema")
    found = 0 if row is None else int(row[0])
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} was written by a newer asyncjobs (schema version {found}; this "
            f"one understands up to {SCHEMA_VERSION}): upgrade asyncjobs in every process "
            "that shares the file, or point SQLiteBackend at another file"
        )
    return found


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file up to :data:`SCHEMA_VERSION`, inside the caller's write transaction.

    It always writes, even when nothing migrates: this is the start-up check
    that the file is really writable (see ``_checks.py``).
    """
    # Re-read under the write lock: another process may have migrated meanwhile.
    current = stored_version(conn, path)
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
            path,
            current,
            SCHEMA_VERSION,
        )
