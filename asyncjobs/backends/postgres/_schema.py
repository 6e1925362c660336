"""The schema: tables and indexes as numbered migrations, applied under an advisory lock.

Every object lives in the backend's own schema (``schema=``, default
``asyncjobs``), so several apps, or test runs, share a database apart:

- ``jobs``: one row per job. Partial indexes serve the hot queries, so their
  cost does not grow with the finished jobs the table holds: ``jobs_claim``
  (claim order of queued jobs, index-only for the claim's inner select),
  ``jobs_due`` (the next due time, delayed counts), ``jobs_running`` (running
  counts per queue and partition for the limits), ``jobs_lease`` (expired
  leases), ``jobs_finished`` (prune by age). ``fillfactor`` leaves room in each
  page for the new versions of updated rows, and autovacuum runs at 2 % of
  dead rows instead of 20 % (a queue table turns over all the time).
  A job queued behind the running holder of its key (``waits_for``) has
  ``due_at`` infinity and its real due time in ``parked_due_at``; the
  triggers ``jobs_finished_release`` and ``jobs_deleted_release`` give it
  back when the holder finishes or is deleted (index ``jobs_waits_for``).
- ``keys``: the job that took each dedup key last (``_keys.py``).
- ``queues``: pause flags, the current partition round, whether the queue is
  claimed under a concurrency limit, and a wake counter the poll of
  ``listen=False`` backends reads (``_wakeups.py``).
- ``partitions``: each partition's last round; ``rate_claims``: claim times in
  the rate windows (``_flow.py``), and ``rate_counts``: how many rows each
  window has there (kept by statement triggers on ``rate_claims``,
  ``count_rate_claims()``) and a time no row of it is older than;
  ``schedules``; ``workers``; ``audit``.
- ``claim_limited()``: a claim under limits as one call, with its helpers
  ``read_rate_window()`` and ``lease_limited()`` (``_flow.py``).
- ``schema_version``: the version, :data:`SCHEMA_VERSION` once migrated.

:func:`migrate` runs in one transaction that first takes a transaction-level
advisory lock keyed by the schema name, so several processes starting at
once migrate the schema once, and a PgBouncer in transaction mode is no
obstacle (no session lock is held).
"""

from __future__ import annotations

import logging
from typing import Final

import asyncpg

from ..._exceptions import SchemaVersionError
from ._claim_functions import CLAIM_FUNCTIONS_STEP

__all__ = ["SCHEMA_VERSION", "migrate"]

logger = logging.getLogger("asyncjobs")

# Each migration takes the schema from version i to i + 1; ``{s}`` is the quoted
# schema name. Append new steps; never edit a released one.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE {s}.jobs (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            name text NOT NULL,
            queue text NOT NULL,
            payload bytea NOT NULL,
            state text NOT NULL,
            due_at float8 NOT NULL,
            enqueued_at float8 NOT NULL,
            priority integer NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL,
            timeout float8,
            key text,
            schedule text,
            fire_at float8,
            partition text,
            round bigint NOT NULL DEFAULT 0,
            key_scope text,
            key_expires_at float8,
            lease_token text,
            lease_expires_at float8,
            worker_id text,
            started_at float8,
            finished_at float8,
            result bytea,
            error_type text,
            error_message text,
            error_traceback text,
            progress float8,
            progress_message text,
            cancel_requested boolean NOT NULL DEFAULT false,
            tags jsonb,
            history jsonb
        ) WITH (
            fillfactor = 80,
            autovacuum_vacuum_scale_factor = 0.02,
            autovacuum_analyze_scale_factor = 0.02
        )
        """,
        """
        CREATE INDEX jobs_claim ON {s}.jobs (queue, priority, round, due_at, seq)
        WHERE state = 'queued'
        """,
        "CREATE INDEX jobs_due ON {s}.jobs (queue, due_at) WHERE state = 'queued'",
        "CREATE INDEX jobs_running ON {s}.jobs (queue, partition) WHERE state = 'running'",
        "CREATE INDEX jobs_lease ON {s}.jobs (lease_expires_at) WHERE state = 'running'",
        """
        CREATE INDEX jobs_finished ON {s}.jobs (state, finished_at)
        WHERE state IN ('complete', 'dead', 'cancelled')
        """,
        "CREATE INDEX jobs_tags ON {s}.jobs USING gin (tags) WHERE tags IS NOT NULL",
        "CREATE TABLE {s}.keys (key text PRIMARY KEY, job_id text NOT NULL)",
        """
        CREATE TABLE {s}.queues (
            name text PRIMARY KEY,
            paused boolean NOT NULL DEFAULT false,
            round bigint NOT NULL DEFAULT 0,
            limited boolean NOT NULL DEFAULT false,
            wake_seq bigint NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE {s}.partitions (
            queue text NOT NULL,
            partition text NOT NULL,
            last_round bigint NOT NULL,
            PRIMARY KEY (queue, partition)
        )
        """,
        "CREATE TABLE {s}.rate_claims (name text NOT NULL, at float8 NOT NULL)",
        "CREATE INDEX rate_claims_window ON {s}.rate_claims (name, at)",
        """
        CREATE TABLE {s}.schedules (
            name text PRIMARY KEY,
            job_name text NOT NULL,
            queue text NOT NULL,
            trigger text NOT NULL,
            payload bytea NOT NULL,
            next_fire_at float8,
            last_fire_at float8,
            misfire text NOT NULL,
            grace float8 NOT NULL,
            overlap boolean NOT NULL,
            paused boolean NOT NULL,
            priority integer NOT NULL,
            max_attempts integer NOT NULL,
            timeout float8
        )
        """,
        """
        CREATE TABLE {s}.workers (
            id text PRIMARY KEY, last_seen float8 NOT NULL, data bytea NOT NULL
        )
        """,
        """
        CREATE TABLE {s}.audit (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at float8 NOT NULL,
            data bytea NOT NULL
        )
        """,
        "CREATE INDEX audit_at ON {s}.audit (at)",
    ),
    (
        # A job queued behind a running holder of its key keeps ``due_at`` at
        # infinity, its real due time parked, so the claim statements and their
        # indexes need no new condition to pass it over.
        "ALTER TABLE {s}.jobs ADD COLUMN waits_for text, ADD COLUMN parked_due_at float8",
        "CREATE INDEX jobs_waits_for ON {s}.jobs (waits_for) WHERE waits_for IS NOT NULL",
        # A trigger rather than a clause in each finishing statement: settle,
        # recovery, cancel, delete, purge and prune (and any statement written
        # later) release the waiting jobs alike, in the transaction of the finish.
        """
        CREATE FUNCTION {s}.release_waiting() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            woken integer;
        BEGIN
            WITH r AS (
                UPDATE {s}.jobs SET waits_for = NULL,
                    due_at = coalesce(parked_due_at, due_at), parked_due_at = NULL
                WHERE waits_for = OLD.id
                RETURNING queue, state
            ),
            w AS (
                INSERT INTO {s}.queues (name, wake_seq)
                SELECT DISTINCT queue, 1 FROM r WHERE state = 'queued'
                ON CONFLICT (name) DO UPDATE SET wake_seq = {s}.queues.wake_seq + 1
                RETURNING name
            )
            SELECT count(pg_notify({channel}, name)) INTO woken FROM w;
            RETURN NULL;
        END
        $$
        """,
        # Only a job with a key can be waited for, and a finished one released its
        # waiting jobs as it finished (pruning costs nothing): the WHEN clauses,
        # judged without calling the function, keep every other row's cost at nil.
        """
        CREATE TRIGGER jobs_finished_release AFTER UPDATE OF state ON {s}.jobs
        FOR EACH ROW WHEN (
            NEW.key IS NOT NULL AND NEW.state IN ('complete', 'dead', 'cancelled')
            AND OLD.state NOT IN ('complete', 'dead', 'cancelled')
        ) EXECUTE FUNCTION {s}.release_waiting()
        """,
        """
        CREATE TRIGGER jobs_deleted_release AFTER DELETE ON {s}.jobs
        FOR EACH ROW WHEN (
            OLD.key IS NOT NULL AND OLD.state NOT IN ('complete', 'dead', 'cancelled')
        ) EXECUTE FUNCTION {s}.release_waiting()
        """,
    ),
    (
        # Each rate window's claim count, so a claim reads one row instead of counting
        # the window's claims (thousands at a few thousand jobs/s), and a bound below
        # every claim of the window left (``pruned_to``), so the claim deletes the
        # claims that left since the last one without stepping over the index
        # entries of all those deleted before (which stay until a vacuum). Writers of
        # rate_claims (an older asyncjobs still running during an upgrade, too) wait
        # for the lock, so the count taken here misses none of their rows; the
        # triggers created under it keep it from then on.
        "LOCK TABLE {s}.rate_claims IN SHARE ROW EXCLUSIVE MODE",
        """
        CREATE TABLE {s}.rate_counts (
            name text PRIMARY KEY,
            n bigint NOT NULL,
            pruned_to float8 NOT NULL
        )
        """,
        """
        INSERT INTO {s}.rate_counts (name, n, pruned_to)
        SELECT name, count(*), min(at) FROM {s}.rate_claims GROUP BY name
        """,
        # Statement triggers: one call per statement, however many claims it writes;
        # the count changes in the statement (and transaction) that changes the rows,
        # whichever statement it is (``pruned_to`` only falls here: a claim raises it
        # as it deletes what left the window, ``_flow.py``).
        """
        CREATE FUNCTION {s}.count_rate_claims() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                DELETE FROM {s}.rate_counts;
                RETURN NULL;
            END IF;
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                UPDATE {s}.rate_counts AS c SET n = c.n - r.n
                FROM (SELECT name, count(*) AS n FROM removed GROUP BY name) AS r
                WHERE c.name = r.name;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO {s}.rate_counts AS c (name, n, pruned_to)
                SELECT name, count(*), min(at) FROM added GROUP BY name
                ON CONFLICT (name) DO UPDATE
                SET n = c.n + excluded.n, pruned_to = least(c.pruned_to, excluded.pruned_to);
            END IF;
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER rate_claims_added AFTER INSERT ON {s}.rate_claims
        REFERENCING NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_rate_claims()
        """,
        """
        CREATE TRIGGER rate_claims_removed AFTER DELETE ON {s}.rate_claims
        REFERENCING OLD TABLE AS removed
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_rate_claims()
        """,
        """
        CREATE TRIGGER rate_claims_updated AFTER UPDATE ON {s}.rate_claims
        REFERENCING OLD TABLE AS removed NEW TABLE AS added
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_rate_claims()
        """,
        """
        CREATE TRIGGER rate_claims_truncated AFTER TRUNCATE ON {s}.rate_claims
        FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_rate_claims()
        """,
    ),
    CLAIM_FUNCTIONS_STEP,
)

#: The schema version this asyncjobs writes; a schema with a higher one is refused.
SCHEMA_VERSION: Final = len(_MIGRATIONS)


async def migrate(conn: asyncpg.Connection, schema: str, quoted: str, channel: str) -> None:
    """Create or bring *schema* up to :data:`SCHEMA_VERSION`, once however many processes race.

    :param schema: the schema's name; *quoted* is the same, quoted for SQL.
    :param channel: the NOTIFY channel of the schema (the trigger that releases
        waiting jobs wakes workers on it).

    :raises SchemaVersionError: when a newer asyncjobs wrote the schema.
    """
    async with conn.transaction():
        # One lock per schema name, held to the end of this transaction.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"asyncjobs:migrate:{schema}"
        )
        exists = await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"{quoted}.schema_version"
        )
        current = 0
        if exists:
            current = int(await conn.fetchval(f"SELECT version FROM {quoted}.schema_version"))
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the PostgreSQL schema {schema!r} was written by a newer asyncjobs (schema "
                f"version {current}; this one understands up to {SCHEMA_VERSION}): upgrade "
                "asyncjobs in every process that shares it, or use another schema="
            )
        if current == SCHEMA_VERSION:
            return
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        for step in _MIGRATIONS[current:]:
            for statement in step:
                # The channel is made of the schema name, a plain identifier: no quote inside.
                await conn.execute(statement.format(s=quoted, channel=f"'{channel}'"))
        if exists:
            await conn.execute(f"UPDATE {quoted}.schema_version SET version = $1", SCHEMA_VERSION)
        else:
            await conn.execute(f"CREATE TABLE {quoted}.schema_version (version integer NOT NULL)")
            await conn.execute(
                f"INSERT INTO {quoted}.schema_version (version) VALUES ($1)", SCHEMA_VERSION
            )
    logger.info(
        "PostgreSQL job schema %s migrated from version %d to %d", schema, current, SCHEMA_VERSION
    )
