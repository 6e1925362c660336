"""Enqueueing in the app's own transaction: ``job.options(connection=conn).enqueue(...)``.

The job exists if and only if the caller's transaction commits (the outbox
guarantee): a rollback leaves no job, a commit makes it claimable and wakes a
worker within milliseconds, a process killed before its commit leaves none.
A SQLAlchemy ``AsyncConnection`` on the asyncpg driver is taken as it is (its
adapter sends ``BEGIN`` only with a first statement: the enqueue must still
land inside the transaction); one on another driver, or outside a
transaction, is refused. Only ``PostgresBackend`` can do this; other stores
refuse the option with an error that says so.
"""

from __future__ import annotations

import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from asyncjobs import InvalidOptionError, JobRuntime, JobState, SystemClock
from asyncjobs.backends import MemoryBackend
from asyncjobs.backends.postgres import PostgresBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
def schema() -> str:
    return f"tx_{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY)")
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A SQLAlchemy engine on the test server, through the asyncpg driver."""
    sa_engine = create_async_engine(postgres_url.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        yield sa_engine
    finally:
        await sa_engine.dispose()


async def test_a_rolled_back_transaction_leaves_no_job(
    postgres_url: str, schema: str, conn: asyncpg.Connection
) -> None:
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), role="enqueue")

    @runtime.job()
    async def ship(order: str) -> None: ...

    handles: list[str] = []

    async def place_order() -> None:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders (id) VALUES ($1)", "o-rolled-back")
            handles.append((await ship.options(connection=conn).enqueue("o-rolled-back")).id)
            raise RuntimeError("payment declined")

    async with runtime:
        with pytest.raises(RuntimeError, match="payment declined"):
            await place_order()
        assert await runtime.backend.get_job(handles[0]) is None
        assert await runtime.backend.list_jobs() == []


async def test_a_committed_job_is_claimed_within_milliseconds_of_the_commit(
    postgres_url: str, schema: str, conn: asyncpg.Connection
) -> None:
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), clock=SystemClock())
    started = anyio.Event()
    seen: list[float] = []

    @runtime.job()
    async def ship(order: str) -> None:
        seen.append(time.monotonic())
        started.set()

    async with runtime:
        await anyio.sleep(0.2)  # let the claim loop settle into its wait
        async with conn.transaction():
            await conn.execute("INSERT INTO orders (id) VALUES ($1)", "o-committed")
            handle = await ship.options(connection=conn).enqueue("o-committed")
            await anyio.sleep(0.1)
            assert not seen, "the job ran before its transaction committed"
            assert await runtime.backend.get_job(handle.id) is None
            committed = time.monotonic()
        with anyio.fail_after(5):
            await started.wait()
        assert seen[0] - committed < 0.05
        await handle.result(timeout=5)


async def test_keys_dedup_inside_the_transaction(
    postgres_url: str, schema: str, conn: asyncpg.Connection
) -> None:
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), role="enqueue")

    @runtime.job()
    async def ship(order: str) -> None: ...

    async with runtime:
        async with conn.transaction():
            first = await ship.options(connection=conn, key="order:1").enqueue("1")
            again = await ship.options(connection=conn, key="order:1").enqueue("1")
        assert again.id == first.id
        assert again.deduplicated
        assert [job.id for job in await runtime.backend.list_jobs()] == [first.id]


async def test_a_crash_before_the_commit_leaves_no_job(postgres_url: str, schema: str) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, os, asyncpg
        from asyncjobs import JobRuntime
        from asyncjobs.backends.postgres import PostgresBackend

        runtime = JobRuntime(PostgresBackend({postgres_url!r}, schema={schema!r}), role="enqueue")

        @runtime.job()
        async def ship(order: str) -> None: ...

        async def main() -> None:
            conn = await asyncpg.connect({postgres_url!r})
            async with runtime:
                tx = conn.transaction()
                await tx.start()
                handle = await ship.options(connection=conn).enqueue("o-crash")
                print(handle.id, flush=True)
                os._exit(9)  # killed between the enqueue and the commit

        asyncio.run(main())
        """
    )
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert result.returncode == 9, result.stderr.decode()
    job_id = result.stdout.decode().strip()
    backend = PostgresBackend(postgres_url, schema=schema)
    runtime = JobRuntime(backend, role="enqueue")
    async with runtime:
        # The server rolls the dead session's transaction back as it notices the
        # closed socket: at once on loopback, within a bounded poll here.
        with anyio.fail_after(10):
            while await backend.get_job(job_id) is not None:
                await anyio.sleep(0.01)
        assert await backend.list_jobs() == []


async def test_bad_connections_are_refused_clearly(
    postgres_url: str, schema: str, conn: asyncpg.Connection
) -> None:
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), role="enqueue")

    @runtime.job()
    async def ship(order: str) -> None: ...

    async with runtime:
        with pytest.raises(InvalidOptionError, match="inside a transaction"):
            await ship.options(connection=conn).enqueue("outside")
        with pytest.raises(InvalidOptionError, match="asyncpg connection"):
            await ship.options(connection=object()).enqueue("not a connection")
        async with conn.transaction():
            with pytest.raises(InvalidOptionError, match="share one connection"):
                await runtime.enqueue_many(
                    [ship.options(connection=conn).call("a"), ship.call("b")]
                )
        assert await runtime.backend.list_jobs() == []


# -- SQLAlchemy's AsyncConnection ----------------------------------------------------------


@pytest.mark.parametrize(
    "first_statement", [False, True], ids=["enqueue-first", "after-a-statement"]
)
async def test_a_rolled_back_sqlalchemy_transaction_leaves_no_job(
    postgres_url: str,
    schema: str,
    conn: asyncpg.Connection,
    engine: AsyncEngine,
    first_statement: bool,
) -> None:
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), role="enqueue")

    @runtime.job()
    async def ship(order: str) -> None: ...

    handles: list[str] = []
    order = f"o-{uuid.uuid4().hex}"

    async def place_order() -> None:
        async with engine.begin() as sa_conn:
            # Enqueue first: SQLAlchemy has sent no BEGIN yet, the driver is outside a
            # transaction, and a job inserted as it is would commit on its own.
            if first_statement:
                await sa_conn.execute(text("INSERT INTO orders (id) VALUES (:id)"), {"id": order})
            handles.append((await ship.options(connection=sa_conn).enqueue(order)).id)
            raise RuntimeError("payment declined")

    async with runtime:
        with pytest.raises(RuntimeError, match="payment declined"):
            await place_order()
        assert await runtime.backend.get_job(handles[0]) is None
        assert await runtime.backend.list_jobs() == []
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE id = $1", order) == 0


async def test_a_committed_sqlalchemy_transaction_gives_a_job_a_worker_claims(
    postgres_url: str, schema: str, conn: asyncpg.Connection, engine: AsyncEngine
) -> None:
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), clock=SystemClock())
    ran: list[str] = []

    @runtime.job()
    async def ship(order: str) -> str:
        ran.append(order)
        return f"shipped {order}"

    order = f"o-{uuid.uuid4().hex}"
    async with runtime:
        async with engine.begin() as sa_conn:
            handle = await ship.options(connection=sa_conn).enqueue(order)
            await sa_conn.execute(text("INSERT INTO orders (id) VALUES (:id)"), {"id": order})
            assert await runtime.backend.get_job(handle.id) is None
        assert await runtime.backend.get_job(handle.id) is not None
        assert await handle.result(timeout=5) == f"shipped {order}"
        assert ran == [order]
        job = await runtime.backend.get_job(handle.id)
        assert job is not None
        assert job.state is JobState.COMPLETE
        assert job.attempts == 1
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE id = $1", order) == 1


async def test_sqlalchemy_connections_outside_a_transaction_are_refused(
    postgres_url: str, schema: str, engine: AsyncEngine
) -> None:
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), role="enqueue")

    @runtime.job()
    async def ship(order: str) -> None: ...

    async with runtime:
        async with engine.connect() as sa_conn:
            assert not sa_conn.in_transaction()
            with pytest.raises(InvalidOptionError, match="inside a transaction"):
                await ship.options(connection=sa_conn).enqueue("not begun")
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with autocommit.begin() as sa_conn:
            with pytest.raises(InvalidOptionError, match="AUTOCOMMIT"):
                await ship.options(connection=sa_conn).enqueue("autocommit")
        assert await runtime.backend.list_jobs() == []


@pytest.mark.parametrize("driver", ["aiosqlite", "psycopg"])
async def test_a_sqlalchemy_connection_on_another_driver_is_refused(
    postgres_url: str, schema: str, driver: str
) -> None:
    url = "sqlite+aiosqlite:///:memory:"
    if driver == "psycopg":
        # Not a dependency of the project: checked where it happens to be installed.
        pytest.importorskip("psycopg", reason="psycopg (3) is not installed")
        url = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    runtime = JobRuntime(PostgresBackend(postgres_url, schema=schema), role="enqueue")

    @runtime.job()
    async def ship(order: str) -> None: ...

    other = create_async_engine(url)
    try:
        async with runtime:
            async with other.begin() as sa_conn:
                assert isinstance(sa_conn, AsyncConnection)
                with pytest.raises(InvalidOptionError, match=r"postgresql\+asyncpg://"):
                    await ship.options(connection=sa_conn).enqueue("wrong driver")
            assert await runtime.backend.list_jobs() == []
    finally:
        await other.dispose()


async def test_other_stores_refuse_the_option() -> None:
    runtime = JobRuntime(MemoryBackend(), role="enqueue")

    @runtime.job()
    async def ship(order: str) -> None: ...

    async with runtime:
        with pytest.raises(InvalidOptionError, match="MemoryBackend cannot do"):
            await ship.options(connection=object()).enqueue("1")
        assert await runtime.backend.list_jobs() == []
