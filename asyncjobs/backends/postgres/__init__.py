"""The PostgreSQL backend: the database the app already runs, shared by any number of hosts.

``from asyncjobs.backends import PostgresBackend`` (or
``from_url("postgresql://...")``) is how users reach it; this package also
exports its exceptions and :data:`SCHEMA_VERSION`. It needs the ``asyncpg``
driver (``pip install 'asyncjobs[postgres]'``) and PostgreSQL 13 or newer.

Design (see ``DESIGN.md`` section 3 and ``docs/backends.md``):

- **Driver**: asyncpg, chosen on measurements (``benchmarks/postgres_drivers.py``):
  1.1x psycopg 3 on a single awaited insert, 1.7-2.1x on bulk inserts, even
  on claims. One pool per backend object, plus one connection for LISTEN.
- **Claims** are one ``UPDATE ... FROM (SELECT ... ORDER BY priority, round,
  due_at, seq FOR UPDATE SKIP LOCKED LIMIT n) RETURNING ...`` statement;
  outcomes and heartbeats of a batch one ``UPDATE ... FROM unnest(...)`` each.
- **Leases** carry a random token; heartbeats, progress and outcomes apply
  only with the current one. With the system clock, time is the server's.
- **Limits and keys** are enforced in the database: transaction-level
  advisory locks (taken inside the ``claim_limited()`` function, one round
  trip per claim) serialize the limited claims of a queue and the enqueues
  of one key or partition, never a check in one statement and a write in
  another without a lock between.
- **Wake-ups**: LISTEN/NOTIFY on a dedicated connection (NOTIFY is sent by
  the statements that add work, delivered at commit), an adaptive poll with
  ``listen=False`` (PgBouncer in transaction mode) or while LISTEN is down.
- **Transactional enqueue**: :meth:`PostgresBackend.enqueue_on` (the runtime's
  ``job.options(connection=conn)``) inserts in the caller's transaction.
- **Schema**: migrations under an advisory lock, in a schema of its own.

Its files, each one concern:

- ``store.py``: :class:`PostgresBackend`, one method per operation, in the contract's groups
- ``_database.py``: the pool, the clock, errors of every call
- ``_errors.py``: the exception classes, and driver errors turned into ones that say what to fix
- ``_schema.py``: tables and indexes as migrations; :data:`SCHEMA_VERSION`
- ``_claim_functions.py``: migration step 4, the PL/pgSQL of a limited claim in one call
- ``_catalog.py``: every statement of one schema, built once
- ``_codec.py``: rows to ``Job``, ``Schedule`` and ``Attempt`` records, and back
- ``_enqueue.py``: inserts, dedup keys and their conflict rules, partition rounds, handoff
- ``_lifecycle.py``: claim, heartbeat, settle, lease recovery, progress
- ``_flow.py``: claims under cluster-wide limits (one call of ``claim_limited()``)
- ``_wakeups.py``: LISTEN/NOTIFY, the poll, the waiters
- ``_control.py``: cancel, retry a dead job, pause a queue, prune, delete, purge
- ``_schedules.py``: stored schedules and the once-per-tick fire
- ``_inspection.py``: one job, its attempts, a filtered page, counts per queue, next due time
- ``_operators.py``: the workers' records and the audit trail
"""

from __future__ import annotations

from ._errors import (
    MIN_SERVER_VERSION,
    PostgresAuthError,
    PostgresDatabaseMissingError,
    PostgresUnreachableError,
    PostgresVersionError,
)
from ._schema import SCHEMA_VERSION
from .store import PostgresBackend

__all__ = [
    "MIN_SERVER_VERSION",
    "SCHEMA_VERSION",
    "PostgresAuthError",
    "PostgresBackend",
    "PostgresDatabaseMissingError",
    "PostgresUnreachableError",
    "PostgresVersionError",
]

# The public names print (and pickle) under the path users import them from.
for _public in (
    PostgresBackend,
    PostgresAuthError,
    PostgresDatabaseMissingError,
    PostgresUnreachableError,
    PostgresVersionError,
):
    _public.__module__ = __name__
del _public
