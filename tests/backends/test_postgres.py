"""What the PostgreSQL backend promises beyond the shared contract.

Clear failures at ``open`` (an unreachable server, a refused password, a
missing database, a schema written by a newer asyncjobs) that never show the
password; migrations that several backends racing at start-up apply once;
the server's clock with the system clock; wake-ups across backend objects
through LISTEN/NOTIFY and through the poll (``listen=False``, for PgBouncer);
racing enqueues of one key that leave one holder; claims that never hand out
a job twice; a server restart and a killed connection that the same object
rides out; rate windows whose counts (``rate_counts``, schema version 3) stay
those of their claims whoever writes them, across an upgrade and clocks that
disagree; limited claims (one function call, schema version 4) that find their
jobs by seq and take the advisory locks of earlier versions. Every test runs
against a real server (``tests/postgres_server.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from asyncjobs._clock import ManualClock, SystemClock
from asyncjobs._exceptions import BackendError, ConfigurationError, SchemaVersionError
from asyncjobs._models import (
    ClaimLimits,
    JobState,
    NewJob,
    Outcome,
    OutcomeKind,
    RateWindow,
    new_job_id,
)
from asyncjobs.backends import from_url
from asyncjobs.backends.postgres import (
    SCHEMA_VERSION,
    PostgresAuthError,
    PostgresBackend,
    PostgresDatabaseMissingError,
    PostgresUnreachableError,
    _flow,
)
from asyncjobs.backends.postgres._schema import _MIGRATIONS
from tests.postgres_server import PostgresServer
from tests.redis_server import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("postgres_url")]

PASSWORD = "pa55-Wörd:with@odd/chars"
LEASE = 30.0


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def _new(
    clock: ManualClock | SystemClock, *, queue: str = "default", key: str | None = None
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
    )


@pytest.fixture
async def store(postgres_url: str, clock: ManualClock) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(postgres_url, schema=_schema())
    await backend.open(clock)
    try:
        yield backend
    finally:
        await backend.aclose()


# -- open: clear errors -----------------------------------------------------------------


async def test_an_unreachable_server_is_named_without_the_password(clock: ManualClock) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/jobs"
    backend = PostgresBackend(url, connect_timeout=2)
    with pytest.raises(PostgresUnreachableError, match="unreachable") as raised:
        await backend.open(clock)
    assert PASSWORD not in str(raised.value)
    assert "127.0.0.1" in str(raised.value)


async def test_a_wrong_password_and_a_missing_database_say_what_to_fix(
    clock: ManualClock,
) -> None:
    with PostgresServer(password=PASSWORD) as server:
        wrong = PostgresBackend(server.url_for("postgres", password="wrong"))
        with pytest.raises(PostgresAuthError, match="refused the login") as raised:
            await wrong.open(clock)
        assert "wrong" not in str(raised.value)
        missing = PostgresBackend(server.url_for("no_such_db"))
        with pytest.raises(PostgresDatabaseMissingError, match="no_such_db") as missing_error:
            await missing.open(clock)
        assert PASSWORD not in str(missing_error.value)
        right = PostgresBackend(server.url_for("postgres"))
        await right.open(clock)
        await right.aclose()


async def test_a_schema_from_a_newer_asyncjobs_is_refused(
    postgres_url: str, clock: ManualClock
) -> None:
    schema = _schema()
    first = PostgresBackend(postgres_url, schema=schema)
    await first.open(clock)
    await first.aclose()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'UPDATE "{schema}".schema_version SET version = $1', SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(SchemaVersionError, match="newer asyncjobs"):
        await PostgresBackend(postgres_url, schema=schema).open(clock)


async def test_bad_options_fail_when_made(postgres_url: str) -> None:
    with pytest.raises(ConfigurationError, match="plain identifier"):
        PostgresBackend(postgres_url, schema='bad"; DROP TABLE x; --')
    with pytest.raises(ConfigurationError, match="pool_size"):
        PostgresBackend(postgres_url, pool_size=0)
    with pytest.raises(ConfigurationError, match="postgresql://"):
        PostgresBackend("mysql://db/jobs")
    assert isinstance(
        from_url(postgres_url.replace("postgresql://", "postgres://")), PostgresBackend
    )


async def test_backends_racing_at_start_up_migrate_once(
    postgres_url: str, clock: ManualClock
) -> None:
    schema = _schema()
    backends = [PostgresBackend(postgres_url, schema=schema, pool_size=1) for _ in range(8)]
    async with anyio.create_task_group() as tasks:
        for backend in backends:
            tasks.start_soon(backend.open, clock)
    try:
        [job] = await backends[0].enqueue([_new(clock)])
        assert await backends[7].get_job(job.id) == job
    finally:
        for backend in backends:
            await backend.aclose()


# -- time, claims, keys -------------------------------------------------------------------


async def test_the_system_clock_means_the_servers_clock(postgres_url: str) -> None:
    backend = PostgresBackend(postgres_url, schema=_schema())
    await backend.open(SystemClock())
    try:
        await backend.enqueue([_new(SystemClock())])
        before = time.time()
        [job] = await backend.claim("default", 1, "w", LEASE)
        after = time.time()
        assert job.lease_expires_at is not None
        # The server runs on this host: its clock agrees with ours to well under a second.
        assert before + LEASE - 1 <= job.lease_expires_at <= after + LEASE + 1
    finally:
        await backend.aclose()


async def test_racing_claims_never_take_a_job_twice(postgres_url: str, clock: ManualClock) -> None:
    schema = _schema()
    backends = [PostgresBackend(postgres_url, schema=schema, pool_size=2) for _ in range(4)]
    for backend in backends:
        await backend.open(clock)
    try:
        await backends[0].enqueue([_new(clock) for _ in range(400)])
        claimed: list[str] = []

        async def drain(backend: PostgresBackend) -> None:
            while jobs := await backend.claim("default", 7, "w", LEASE):
                claimed.extend(job.id for job in jobs)

        async with anyio.create_task_group() as tasks:
            for backend in backends:
                for _ in range(2):
                    tasks.start_soon(drain, backend)
        assert len(claimed) == 400
        assert len(set(claimed)) == 400
    finally:
        for backend in backends:
            await backend.aclose()


async def test_racing_enqueues_of_one_key_leave_one_holder(
    postgres_url: str, clock: ManualClock
) -> None:
    schema = _schema()
    backends = [PostgresBackend(postgres_url, schema=schema, pool_size=2) for _ in range(8)]
    for backend in backends:
        await backend.open(clock)
    try:
        ids: list[str] = []

        async def enqueue(backend: PostgresBackend) -> None:
            for _ in range(5):
                [job] = await backend.enqueue([_new(clock, key="the-key")])
                ids.append(job.id)

        async with anyio.create_task_group() as tasks:
            for backend in backends:
                tasks.start_soon(enqueue, backend)
        assert len(set(ids)) == 1
        assert len(await backends[0].list_jobs()) == 1
    finally:
        for backend in backends:
            await backend.aclose()


# -- rate windows -------------------------------------------------------------------------


async def _rate_counts(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[int, float]]:
    """Each window's ``(n, pruned_to)``, checked against its rows in ``rate_claims``."""
    counts = {
        row["name"]: (row["n"], row["pruned_to"])
        for row in await conn.fetch(f'SELECT name, n, pruned_to FROM "{schema}".rate_counts')
    }
    rows = {
        row["name"]: (row["n"], row["oldest"])
        for row in await conn.fetch(
            f'SELECT name, count(*) AS n, min(at) AS oldest FROM "{schema}".rate_claims'
            " GROUP BY name"
        )
    }
    for name, (n, oldest) in rows.items():
        assert counts[name][0] == n, name
        assert counts[name][1] <= oldest, name  # no claim older than the bound
    assert {name for name, (n, _) in counts.items() if n} == set(rows)
    return counts


async def test_a_version_2_schema_counts_its_rate_claims_as_it_upgrades(
    postgres_url: str, clock: ManualClock
) -> None:
    schema, now = _schema(), clock.now()
    quoted = f'"{schema}"'
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction():  # as the asyncjobs of schema version 2 left it
            await conn.execute(f"CREATE SCHEMA {quoted}")
            for step in _MIGRATIONS[:2]:
                for statement in step:
                    await conn.execute(statement.format(s=quoted, channel=f"'x_{schema}'"))
            await conn.execute(f"CREATE TABLE {quoted}.schema_version (version integer NOT NULL)")
            await conn.execute(f"INSERT INTO {quoted}.schema_version (version) VALUES (2)")
            await conn.execute(
                f"INSERT INTO {quoted}.rate_claims (name, at) SELECT 'queue:default', $1 - d"
                " FROM unnest(ARRAY[20, 15, 5, 3, 1]::float8[]) AS d",
                now,
            )
            await conn.execute(
                f"INSERT INTO {quoted}.rate_claims (name, at) VALUES ('job:x', $1 - 2)", now
            )
        backend = PostgresBackend(postgres_url, schema=schema)
        await backend.open(clock)
        try:
            assert await conn.fetchval(f"SELECT version FROM {quoted}.schema_version") == (
                SCHEMA_VERSION
            )
            assert await _rate_counts(conn, schema) == {
                "queue:default": (5, now - 20),
                "job:x": (1, now - 2),
            }
            await backend.enqueue([_new(clock) for _ in range(3)])
            # Two of the five left the 10 s window: three are in it, one more fits.
            reply = await backend.claim_limited(
                "default", 5, "w", LEASE, ClaimLimits(rate=RateWindow(limit=4, per=10.0))
            )
            assert len(reply.jobs) == 1
            assert reply.held_by == "rate_limit"
            assert reply.retry_at == pytest.approx(now + 5)
            assert (await _rate_counts(conn, schema))["queue:default"] == (4, now - 10)
        finally:
            await backend.aclose()
    finally:
        await conn.close()


async def test_rate_counts_follow_rate_claims_whatever_writes_them(
    store: PostgresBackend, clock: ManualClock
) -> None:
    """An operator's statements, or an older asyncjobs during an upgrade, keep them too."""
    schema, now = store._db.schema, clock.now()
    conn = await asyncpg.connect(store._db.url)
    try:
        claims = f'"{schema}".rate_claims'
        await conn.execute(
            f"INSERT INTO {claims} (name, at)"
            " SELECT unnest(ARRAY['queue:a', 'queue:a', 'queue:a', 'job:b', 'job:b']), $1 - 1",
            now,
        )
        await conn.execute(f"INSERT INTO {claims} (name, at) VALUES ('queue:a', $1 - 9)", now)
        assert await _rate_counts(conn, schema) == {
            "queue:a": (4, now - 9),
            "job:b": (2, now - 1),
        }
        await conn.execute(f"DELETE FROM {claims} WHERE name = 'queue:a' AND at > $1 - 5", now)
        await conn.execute(f"UPDATE {claims} SET name = 'job:c' WHERE name = 'job:b'")
        assert await _rate_counts(conn, schema) == {
            "queue:a": (1, now - 9),
            "job:b": (0, now - 1),
            "job:c": (2, now - 1),
        }
        # The window as version 2 read it: its delete takes the claims off the count.
        await conn.execute(f"DELETE FROM {claims} WHERE name = 'queue:a' AND at <= $1 - 5", now)
        assert (await _rate_counts(conn, schema))["queue:a"][0] == 0
        await conn.execute(f"INSERT INTO {claims} (name, at) VALUES ('queue:default', $1)", now)
        await conn.execute(f"TRUNCATE {claims}")
        assert await _rate_counts(conn, schema) == {}
        await store.enqueue([_new(clock)])
        reply = await store.claim_limited(
            "default", 5, "w", LEASE, ClaimLimits(rate=RateWindow(limit=1, per=60.0))
        )
        assert len(reply.jobs) == 1
        assert await _rate_counts(conn, schema) == {"queue:default": (1, now)}
    finally:
        await conn.close()


async def test_a_claim_by_a_clock_behind_the_last_prune_counts_and_leaves_in_time(
    postgres_url: str,
) -> None:
    """A claim recorded before the time the window was pruned to (another process's
    clock is behind) still counts, and leaves the window when its time comes."""
    schema, start = _schema(), 1_767_225_600.0
    ahead, behind = ManualClock(start), ManualClock(start)
    first, second = (PostgresBackend(postgres_url, schema=schema) for _ in range(2))
    await first.open(ahead)
    await second.open(behind)
    conn = await asyncpg.connect(postgres_url)
    limits = ClaimLimits(rate=RateWindow(limit=3, per=5.0))
    try:
        await first.enqueue([_new(ahead) for _ in range(6)])
        assert len((await first.claim_limited("default", 1, "w", LEASE, limits)).jobs) == 1
        ahead.advance(6)  # the claim at start leaves; the window is pruned to start + 1
        assert len((await first.claim_limited("default", 1, "w", LEASE, limits)).jobs) == 1
        assert await _rate_counts(conn, schema) == {"queue:default": (1, start + 1)}

        # Five seconds behind, the claim at start + 6 is in this window: two more fit.
        assert len((await second.claim_limited("default", 1, "w", LEASE, limits)).jobs) == 1
        assert await _rate_counts(conn, schema) == {"queue:default": (2, start)}

        ahead.advance(1)  # start + 7: the claim at start (behind's) has left
        reply = await first.claim_limited("default", 5, "w", LEASE, limits)
        assert len(reply.jobs) == 2
        assert reply.held_by == "rate_limit"
        assert reply.retry_at == pytest.approx(start + 11)
        assert await _rate_counts(conn, schema) == {"queue:default": (3, start + 2)}
    finally:
        await conn.close()
        await first.aclose()
        await second.aclose()


async def test_a_limited_claim_finds_its_jobs_by_seq_whatever_the_statistics(
    store: PostgresBackend, clock: ManualClock
) -> None:
    """Never analyzed, the jobs table looked to hold a few queued jobs, and the lease
    scanned every queued job of the ``jobs_due`` index for the seqs it claims.

    The lease runs inside ``claim_limited`` (schema version 4): ``auto_explain``
    reports the plans of the function's statements, generic ones as PL/pgSQL keeps.
    """
    await store.enqueue([_new(clock) for _ in range(2000)])
    conn = await asyncpg.connect(store._db.url)
    messages: list[str] = []
    conn.add_log_listener(lambda _conn, message: messages.append(message.message))
    try:
        await conn.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "client_min_messages = log",
            "plan_cache_mode = force_generic_plan",
        ):
            await conn.execute(f"SET {setting}")
        for limits in (
            ClaimLimits(global_concurrency=100),
            ClaimLimits(rate=RateWindow(limit=100, per=1.0)),
        ):
            args = _flow.claim_args(store._db, "default", 10, "w", LEASE, limits)
            rows = await conn.fetch(store._db.statements.flow.claim, *args)
            assert len(rows) == 10
        await conn.execute("SET client_min_messages = notice")
        leases = [text for text in messages if "lease_token = replace" in text]
        assert len(leases) == 2
        for plan in leases:
            assert "jobs_due" not in plan
            assert "jobs_claim" not in plan
    finally:
        await conn.close()


async def test_a_limited_claim_takes_the_locks_of_earlier_versions(
    store: PostgresBackend, clock: ManualClock
) -> None:
    """The queue's key and each rate-limited name's, as every earlier asyncjobs took
    them: a claim waits while an older process holds one, so the two take turns."""
    # More jobs than claims: a claim given up on here may still run on the server once
    # the lock is released (the cancel request races it), and take one.
    await store.enqueue([_new(clock) for _ in range(10)])
    schema = store._db.schema
    limits = ClaimLimits(global_concurrency=5, job_rates={"x": RateWindow(limit=9, per=1.0)})
    conn = await asyncpg.connect(store._db.url)
    try:
        for key in (f"{schema}:limit:default", f"{schema}:rate:x"):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
                with anyio.move_on_after(0.3) as waited:
                    await store.claim_limited("default", 1, "w", LEASE, limits)
                assert waited.cancelled_caught, key
            assert len((await store.claim_limited("default", 1, "w", LEASE, limits)).jobs) == 1
    finally:
        await conn.close()


# -- wake-ups across objects ------------------------------------------------------------


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll"])
async def test_another_objects_enqueue_wakes_a_waiter(
    postgres_url: str, clock: ManualClock, listen: bool
) -> None:
    schema = _schema()
    waiter = PostgresBackend(postgres_url, schema=schema, listen=listen)
    other = PostgresBackend(postgres_url, schema=schema)
    await waiter.open(clock)
    await other.open(clock)
    try:
        # The first wait may return early (it connects or takes its first look).
        await waiter.wait_for_work(["default"], clock.now() + 60)
        woke = anyio.Event()

        async def wait() -> None:
            await waiter.wait_for_work(["default"], None)
            woke.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            await anyio.sleep(0.05)
            assert not woke.is_set()
            started = time.monotonic()
            await other.enqueue([_new(clock)])
            with anyio.fail_after(5):
                await woke.wait()
            assert time.monotonic() - started < 1.0
    finally:
        await waiter.aclose()
        await other.aclose()


# -- faults ---------------------------------------------------------------------------------


async def test_a_restart_of_the_server_is_ridden_out_by_the_same_object(clock: ManualClock) -> None:
    with PostgresServer() as server:
        backend = PostgresBackend(server.url, schema=_schema(), connect_timeout=2)
        await backend.open(clock)
        try:
            [job] = await backend.enqueue([_new(clock)])
            server.kill()
            with pytest.raises(BackendError):
                await backend.get_job(job.id)
            server.start()
            # The pool replaces its broken connections; the first calls may still fail.
            with anyio.fail_after(20):
                while True:
                    try:
                        stored = await backend.get_job(job.id)
                        break
                    except BackendError:
                        await anyio.sleep(0.05)
            assert stored == job
            [claimed] = await backend.claim("default", 1, "w", LEASE)
            assert claimed.id == job.id
        finally:
            await backend.aclose()


async def test_a_killed_connection_fails_one_call_and_loses_nothing(
    store: PostgresBackend, postgres_url: str, clock: ManualClock
) -> None:
    [job] = await store.enqueue([_new(clock)])
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'asyncjobs' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    with anyio.fail_after(10):
        while True:
            try:
                claimed = await store.claim("default", 1, "w", LEASE)
                break
            except BackendError:
                await anyio.sleep(0.01)
    assert [c.id for c in claimed] == [job.id]
    refused = await store.settle(
        [
            Outcome(
                job_id=job.id,
                lease_token=claimed[0].lease_token or "",
                kind=OutcomeKind.COMPLETE,
                result=b"1",
            )
        ]
    )
    assert refused == []
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.COMPLETE
