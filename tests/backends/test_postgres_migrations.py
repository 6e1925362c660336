"""The PostgreSQL schema's migrations, and the job waiting for its key's running holder.

Schema version 2 (``asyncjobs/backends/postgres/_schema.py``) adds ``waits_for``
and ``parked_due_at``, the index ``jobs_waits_for`` and the trigger function
``release_waiting()`` with its triggers ``jobs_finished_release`` and
``jobs_deleted_release``: a ``replace`` enqueue that meets a running holder
queues a job that waits (due at infinity) until that holder is finished or
deleted. Checked here: a version-1 schema with a running keyed job upgrades in
place, and the upgraded job waits and is released as on a fresh schema; an
upgraded schema equals a fresh one, object for object; a settle racing
replaces from another backend object never strands a waiting job; and a
release by another object wakes a waiter, through LISTEN/NOTIFY and through
the poll. Every test runs against a real server (``tests/postgres_server.py``),
in a schema of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import anyio
import asyncpg
import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import Job, JobState, NewJob, OnConflict, Outcome, OutcomeKind, new_job_id
from asyncjobs.backends.postgres import SCHEMA_VERSION, PostgresBackend
from asyncjobs.backends.postgres._schema import _MIGRATIONS

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("postgres_url")]

LEASE = 30.0
QUEUE = "default"
FINISHED = "('complete', 'dead', 'cancelled')"


def _schema() -> str:
    return f"m_{uuid.uuid4().hex[:16]}"


def _new(
    clock: ManualClock,
    *,
    key: str | None = None,
    on_conflict: OnConflict = OnConflict.RETURN,
    queue: str = QUEUE,
) -> NewJob:
    now = clock.now()
    return NewJob(
        id=new_job_id(now),
        name="job",
        queue=queue,
        payload=b"{}",
        due_at=now,
        enqueued_at=now,
        key=key,
        on_conflict=on_conflict,
    )


def _complete(job: Job) -> Outcome:
    assert job.lease_token is not None
    return Outcome(
        job_id=job.id, lease_token=job.lease_token, kind=OutcomeKind.COMPLETE, result=b"1"
    )


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _create_version_1(conn: asyncpg.Connection, schema: str) -> None:
    """Build *schema* as the asyncjobs of schema version 1 did: ``migrate`` with only
    the first migration (one transaction; the version table made last, holding 1)."""
    quoted = f'"{schema}"'
    async with conn.transaction():
        await conn.execute(f"CREATE SCHEMA {quoted}")
        for statement in _MIGRATIONS[0]:
            await conn.execute(statement.format(s=quoted, channel=f"'asyncjobs_{schema}'"))
        await conn.execute(f"CREATE TABLE {quoted}.schema_version (version integer NOT NULL)")
        await conn.execute(f"INSERT INTO {quoted}.schema_version (version) VALUES (1)")


async def _start_keyed_job_as_version_1(
    conn: asyncpg.Connection, schema: str, key: str, now: float
) -> str:
    """Enqueue and claim a job with *key* with the statements of version 1 (which knew
    no ``waits_for``): the insert and key of ``insert_jobs``, then the claim's update."""
    q = f'"{schema}"'
    job_id = uuid.uuid4().hex
    async with conn.transaction():
        await conn.execute(
            f"INSERT INTO {q}.jobs (id, name, queue, payload, due_at, enqueued_at, priority,"
            " max_attempts, key, round, state)"
            " VALUES ($1, 'job', $2, '\\x7b7d'::bytea, $3, $3, 0, 3, $4, 0, 'queued')",
            job_id,
            QUEUE,
            now,
            key,
        )
        await conn.execute(f"INSERT INTO {q}.keys (key, job_id) VALUES ($1, $2)", key, job_id)
    status = await conn.execute(
        f"UPDATE {q}.jobs SET state = 'running', attempts = attempts + 1,"
        " lease_token = replace(gen_random_uuid()::text, '-', ''),"
        " lease_expires_at = $2, worker_id = 'old-worker',"
        " started_at = NULL, progress = NULL, progress_message = NULL"
        " WHERE id = $1 AND state = 'queued'",
        job_id,
        now + LEASE,
    )
    assert status == "UPDATE 1"
    return job_id


async def _version(conn: asyncpg.Connection, schema: str) -> int:
    version: int = await conn.fetchval(f'SELECT version FROM "{schema}".schema_version')
    return version


async def _stranded(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Jobs still waiting for a holder that is finished or gone: nothing would release them."""
    rows = await conn.fetch(
        f'SELECT j.id FROM "{schema}".jobs AS j LEFT JOIN "{schema}".jobs AS h'
        " ON h.id = j.waits_for"
        f" WHERE j.waits_for IS NOT NULL AND (h.id IS NULL OR h.state IN {FINISHED})"
    )
    return [row["id"] for row in rows]


# -- upgrading a version-1 schema ---------------------------------------------------------


async def test_a_version_1_schema_with_a_running_keyed_job_upgrades_and_its_replace_waits(
    postgres_url: str, clock: ManualClock, conn: asyncpg.Connection
) -> None:
    assert SCHEMA_VERSION >= 2
    schema = _schema()
    await _create_version_1(conn, schema)
    holder_id = await _start_keyed_job_as_version_1(conn, schema, "order:1", clock.now())
    assert await _version(conn, schema) == 1
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = 'jobs' AND column_name = 'waits_for'",
            schema,
        )
        == 0
    )

    backend = PostgresBackend(postgres_url, schema=schema)
    await backend.open(clock)
    try:
        assert await _version(conn, schema) == SCHEMA_VERSION
        holder = await backend.get_job(holder_id)
        assert holder is not None
        assert holder.state is JobState.RUNNING
        assert holder.waits_for is None

        [waiting] = await backend.enqueue(
            [_new(clock, key="order:1", on_conflict=OnConflict.REPLACE)]
        )
        assert waiting.id != holder_id
        assert waiting.waits_for == holder_id
        assert await backend.claim(QUEUE, 10, "w", LEASE) == []
        assert await backend.next_due_at([QUEUE]) is None

        assert await backend.settle([_complete(holder)]) == []
        released = await backend.get_job(waiting.id)
        assert released is not None
        assert released.waits_for is None
        assert released.due_at == waiting.due_at
        assert [job.id for job in await backend.claim(QUEUE, 10, "w", LEASE)] == [waiting.id]
    finally:
        await backend.aclose()


async def _catalog(conn: asyncpg.Connection, schema: str) -> dict[str, list[tuple[object, ...]]]:
    """Every object the migrations make in *schema*, as the server describes it, with the
    schema's name replaced (it also names the NOTIFY channel in the function's body)."""

    def norm(value: object) -> object:
        return value.replace(schema, "<schema>") if isinstance(value, str) else value

    def rows(records: Sequence[asyncpg.Record]) -> list[tuple[object, ...]]:
        return [tuple(norm(value) for value in record.values()) for record in records]

    return {
        "columns": rows(
            await conn.fetch(
                "SELECT table_name, ordinal_position, column_name, data_type, is_nullable,"
                " column_default, is_identity, identity_generation"
                " FROM information_schema.columns WHERE table_schema = $1"
                " ORDER BY table_name, ordinal_position",
                schema,
            )
        ),
        "tables": rows(
            await conn.fetch(
                "SELECT c.relname, c.relkind, c.reloptions FROM pg_class AS c"
                " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                " WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname",
                schema,
            )
        ),
        "constraints": rows(
            await conn.fetch(
                "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
                " FROM pg_constraint AS c JOIN pg_namespace AS n ON n.oid = c.connamespace"
                " WHERE n.nspname = $1 ORDER BY 1, 2",
                schema,
            )
        ),
        "indexes": rows(
            await conn.fetch(
                "SELECT tablename, indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = $1 ORDER BY tablename, indexname",
                schema,
            )
        ),
        "triggers": rows(
            await conn.fetch(
                "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger AS t"
                " JOIN pg_class AS c ON c.oid = t.tgrelid"
                " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                " WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY c.relname, t.tgname",
                schema,
            )
        ),
        "functions": rows(
            await conn.fetch(
                "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc AS p"
                " JOIN pg_namespace AS n ON n.oid = p.pronamespace"
                " WHERE n.nspname = $1 ORDER BY p.proname",
                schema,
            )
        ),
        "version": rows(await conn.fetch(f'SELECT version FROM "{schema}".schema_version')),
    }


async def test_an_upgraded_schema_equals_a_fresh_one(
    postgres_url: str, clock: ManualClock, conn: asyncpg.Connection
) -> None:
    upgraded, fresh = _schema(), _schema()
    await _create_version_1(conn, upgraded)
    for schema in (upgraded, fresh):
        backend = PostgresBackend(postgres_url, schema=schema)
        await backend.open(clock)
        await backend.aclose()

    want = await _catalog(conn, fresh)
    got = await _catalog(conn, upgraded)
    for part, objects in want.items():
        assert got[part] == objects, part
    # What version 2 added is there (and named as it should be), not merely equal.
    assert ("jobs", "jobs_waits_for") in [row[:2] for row in want["indexes"]]
    assert [row[:2] for row in want["triggers"]] == [
        ("jobs", "jobs_deleted_release"),
        ("jobs", "jobs_finished_release"),
        ("rate_claims", "rate_claims_added"),
        ("rate_claims", "rate_claims_removed"),
        ("rate_claims", "rate_claims_truncated"),
        ("rate_claims", "rate_claims_updated"),
    ]
    assert [row[0] for row in want["functions"]] == [
        "claim_limited",
        "count_rate_claims",
        "lease_limited",
        "read_rate_window",
        "release_waiting",
    ]
    assert {"waits_for", "parked_due_at"} <= {row[2] for row in want["columns"]}
    assert want["version"] == [(SCHEMA_VERSION,)]


# -- two backend objects ----------------------------------------------------------------------


async def test_a_settle_racing_replaces_from_another_object_strands_no_waiting_job(
    postgres_url: str, clock: ManualClock, conn: asyncpg.Connection
) -> None:
    schema = _schema()
    settler = PostgresBackend(postgres_url, schema=schema, pool_size=2)
    enqueuer = PostgresBackend(postgres_url, schema=schema, pool_size=4)
    await settler.open(clock)
    await enqueuer.open(clock)
    rounds = 50
    try:
        # A queue per round, so each round's claim takes its own holder.
        for round_ in range(rounds):
            key, queue = f"race:{round_}", f"q{round_}"
            await settler.enqueue([_new(clock, key=key, queue=queue)])
            [holder] = await settler.claim(queue, 1, "w", LEASE)

            async def settle(holder: Job = holder) -> None:
                assert await settler.settle([_complete(holder)]) == []

            async def replace(key: str = key, queue: str = queue) -> None:
                new = _new(clock, key=key, on_conflict=OnConflict.REPLACE, queue=queue)
                await enqueuer.enqueue([new])

            async with anyio.create_task_group() as tasks:
                # Alternate who starts first, so the settle lands before, between and
                # after the replaces' reads and inserts across the rounds.
                if round_ % 2:
                    tasks.start_soon(settle)
                for _ in range(3):
                    tasks.start_soon(replace)
                if not round_ % 2:
                    tasks.start_soon(settle)

            assert await _stranded(conn, schema) == [], f"round {round_}"

        # Each key ends with one queued job, not waiting and due: every one is claimed.
        waiting = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".jobs WHERE waits_for IS NOT NULL'
        )
        assert waiting == 0
        for round_ in range(rounds):
            claimed = await settler.claim(f"q{round_}", 10, "w", LEASE)
            assert [job.key for job in claimed] == [f"race:{round_}"], f"round {round_}"
    finally:
        await settler.aclose()
        await enqueuer.aclose()


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll"])
async def test_a_release_by_another_objects_settle_wakes_a_waiter(
    postgres_url: str, clock: ManualClock, listen: bool
) -> None:
    schema = _schema()
    waiter = PostgresBackend(postgres_url, schema=schema, listen=listen)
    other = PostgresBackend(postgres_url, schema=schema)
    await waiter.open(clock)
    await other.open(clock)
    try:
        await other.enqueue([_new(clock, key="k")])
        [holder] = await other.claim(QUEUE, 1, "w", LEASE)
        [waiting] = await other.enqueue([_new(clock, key="k", on_conflict=OnConflict.REPLACE)])
        assert waiting.waits_for == holder.id
        # The first wait may return at once (it connects, or takes its first look);
        # the enqueues above are behind it.
        await waiter.wait_for_work([QUEUE], clock.now() + 60)
        assert await waiter.claim(QUEUE, 10, "w2", LEASE) == []
        woke = anyio.Event()

        async def wait() -> None:
            await waiter.wait_for_work([QUEUE], None)
            woke.set()

        # Under the LISTEN connection's own check (5 s), so only the release can wake it;
        # the settle neither requeues nor frees a limited slot: it wakes no one itself.
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                assert not woke.is_set()
                assert await other.settle([_complete(holder)]) == []
                await woke.wait()
        assert [job.id for job in await waiter.claim(QUEUE, 10, "w2", LEASE)] == [waiting.id]
    finally:
        await waiter.aclose()
        await other.aclose()
