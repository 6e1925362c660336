"""The SQLite backend: one file, shared safely by several processes on one host.

``from asyncjobs.backends import SQLiteBackend`` (or ``from_url("sqlite:///jobs.db")``)
is how users reach it; this package also exports its exceptions, its warning
and :data:`SCHEMA_VERSION`.

Design (see ``DESIGN.md`` section 3):

- **WAL**, ``synchronous=FULL`` by default (``NORMAL`` and ``EXTRA`` allowed). One
  writer connection per backend object, used by one thread of its own; a
  second, ``query_only`` connection (aiosqlite) serves reads so they never
  queue behind writes.
- **Writes**: every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction
  that the writer thread runs whole, in one trip from the event loop, after
  taking a host-wide queue for the write lock (a ``flock``); writes that queue
  up meanwhile commit together, each in a savepoint of its own.
- **Claims** are one ``UPDATE ... WHERE seq IN (SELECT ... ORDER BY priority,
  round, due_at, seq LIMIT ?) RETURNING ...`` (the pause check included), all
  rows read before the statement ends. Partial covering indexes keep the cost
  of a claim, a lease sweep and a prune independent of how many finished jobs
  the file holds.
- **Limited claims** (global and per-partition concurrency, rate windows) are
  one write transaction that reads the counts it judges by and updates them;
  partition rounds are kept per partition and per queue.
- **Outcomes** are one ``UPDATE ... FROM (VALUES ...) RETURNING id`` per kind:
  the lease-token check and the write in one statement; the attempts they end
  are recorded in the same transaction, one ``INSERT ... SELECT`` per batch
  (the latest 25 per job are kept), as are the leases a sweep takes back.
- **Dedup** is enforced by a key table (one holder per key, its primary key),
  looked up and taken inside the writer's exclusive transaction: however many
  processes race one key, one job takes it. The holder's scope (queued,
  active, window) is judged from its row; a claim drops a queued-scope key.
- **Tags** are one JSON object per job (NULL without tags), filtered with
  ``json_each`` in SQL; workers and audit entries are opaque rows.
- **Leases** carry a random 128-bit token; heartbeats, progress and outcomes
  are applied only with the current one. A lease runs from when the write
  lock is held, and is never lost to a wait for the lock alone.
- **Wake-ups**: an enqueue or requeue through this object wakes its waiters at
  once (an in-process event); other processes' work is found by an adaptive
  poll of a per-queue wake counter (5 ms while busy, up to 0.5 s when idle).
- **Throughput**, measured on a shared 2-core VM (ext4, fsync of a reused WAL
  about 0.1-0.5 ms, a trip to the database thread 0.05-0.5 ms depending on
  load), ``synchronous=FULL``, the backend alone: bulk enqueue 40,000-45,000
  jobs/s (one ``executemany`` transaction); one awaited enqueue about 0.33 ms;
  claim + settle of no-op jobs about 11,000 jobs/s in batches of 10 (two
  commits per batch; recording the attempts, schema 6, costs a settle about
  10 us of CPU per job, some 10 % of a drain's). Eight processes enqueueing
  and working one file as fast as they can (``benchmarks/sqlite_contention.py``):
  enqueue p50 7-10 ms, p99 about 23 ms, max under 0.2 s; the writer queue
  trades a little throughput (75-95 % of an unfair lock's) for that tail.

Not supported: trio (aiosqlite needs asyncio), network filesystems.

Its files, each one concern (the details of each point above are in the
docstring of the file that implements it):

- ``store.py``: :class:`SQLiteBackend`, one method per operation, in the contract's groups
- ``_database.py``: the two connections: the start-up sequence, a write's wait
  (``write_timeout``, cancellation, errors), reads with retries
- ``_writer.py``: the writer thread, the host's ``flock`` queue, group commit, contention
- ``_stalls.py``: leases under contention: a long wait for the lock pauses lease sweeps
- ``_checks.py``: start-up checks: SQLite version, the WAL-reset bug, the path, WAL mode
- ``_errors.py``: the exception classes, and sqlite3 errors turned into ones that say what to fix
- ``_schema.py``: tables, indexes and triggers as migrations; :data:`SCHEMA_VERSION`
- ``_statements.py``: SQL every operation shares: column lists, the clock CTE, chunking
- ``_codec.py``: rows to ``Job`` and ``Schedule`` records, and back
- ``_enqueue.py``: inserts, the key conflict rules, partition rounds, handing a
  new job to an idle worker
- ``_keys.py``: which job holds a dedup key, by the holder's scope
- ``_lifecycle.py``: claim, heartbeat, settle (outcomes and handler starts),
  lease recovery, progress
- ``_flow.py``: claims under cluster-wide limits (``claim_limited``)
- ``_wakeups.py``: wake-ups (in-process and the poll of other processes'), the next due time
- ``_history.py``: attempt history: recorded by settles and lease sweeps, trimmed, read
- ``_control.py``: cancel, retry a dead job, pause a queue, prune, delete, purge
- ``_schedules.py``: stored schedules and the once-per-tick fire
- ``_inspection.py``: one job, a filtered page (tags, enqueue time, cursor), counts per queue
- ``_registry.py``: the workers registry and the audit trail
"""

from __future__ import annotations

from ._errors import (
    SQLiteBusyError,
    SQLiteFullError,
    SQLiteJournalModeError,
    SQLiteNotADatabaseError,
    SQLitePathError,
    SQLiteVersionError,
    UnsafeSQLiteWarning,
)
from ._schema import SCHEMA_VERSION
from .store import SQLiteBackend

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

# The public names print (and pickle) under the path users import them from.
for _public in (
    SQLiteBackend,
    SQLiteBusyError,
    SQLiteFullError,
    SQLiteJournalModeError,
    SQLiteNotADatabaseError,
    SQLitePathError,
    SQLiteVersionError,
    UnsafeSQLiteWarning,
):
    _public.__module__ = __name__
del _public
