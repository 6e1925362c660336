"""What the PostgreSQL backend promises beyond the shared contract.

Clear failures at ``open`` (an unreachable server, a refused password, a
missing database, a schema written by a newer asyncjobs) that never show the
password; migrations that several backends racing at start-up apply once;
the server's clock with the system clock; wake-ups across backend objects
through LISTEN/NOTIFY and through the poll (``listen=False``, for PgBouncer);
racing enqueues of one key that leave one holder; claims that never hand out
a job twice; a server restart and a killed connection that the same object
rides out. Every test runs against a real server (``tests/postgres_server.py``).
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
from asyncjobs._models import JobState, NewJob, Outcome, OutcomeKind, new_job_id
from asyncjobs.backends import from_url
from asyncjobs.backends.postgres import (
    SCHEMA_VERSION,
    PostgresAuthError,
    PostgresBackend,
    PostgresDatabaseMissingError,
    PostgresUnreachableError,
)
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
