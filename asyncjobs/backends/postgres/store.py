"""The PostgreSQL store: :class:`PostgresBackend`, one method per operation of the contract.

Its methods follow the contract's groups and hand each operation to the
module that holds its SQL; :meth:`PostgresBackend.enqueue_on` is the
transactional enqueue this store adds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import anyio
import asyncpg

from ..._clock import Clock
from ..._exceptions import ConfigurationError, InvalidOptionError
from ..._models import (
    Attempt,
    AuditRecord,
    ClaimLimits,
    ClaimReply,
    Handoff,
    Job,
    JobStart,
    JobState,
    NewJob,
    Outcome,
    QueueStats,
    Schedule,
    WorkerRecord,
)
from .. import HeartbeatReply
from . import _control, _enqueue, _flow, _inspection, _lifecycle, _operators, _schedules
from ._catalog import Catalog
from ._database import DRIVER_ERRORS, Database
from ._errors import redact_url, translate
from ._wakeups import Wakeups

__all__ = ["PostgresBackend"]


class PostgresBackend:
    """Jobs in a PostgreSQL database that any number of processes and hosts may share.

    :param url: ``postgresql://user:password@host:port/database`` (``postgres://``
        too; every libpq connection parameter asyncpg understands, such as
        ``?sslmode=require``, works in the query string).
    :param schema: the schema that holds the store's tables (created with them on
        first use); apps or environments sharing a database use one each.
    :param pool_size: the most pooled connections this backend object opens
        (LISTEN takes one more, outside the pool).
    :param listen: wake workers with LISTEN/NOTIFY. ``False`` polls instead:
        needed behind PgBouncer in transaction mode, where LISTEN does not work.
    :param poll_interval: ``(shortest, longest)`` seconds between polls when not
        listening: the shortest after work, doubling while idle.
    :param statement_cache_size: prepared statements asyncpg keeps per
        connection; ``0`` for PgBouncer in transaction mode before 1.21.
    :param connect_timeout: seconds to wait for a new connection.
    :param command_timeout: seconds a statement may run before the call fails.
    :raises ConfigurationError: for an option that cannot work.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "asyncjobs",
        pool_size: int = 10,
        listen: bool = True,
        poll_interval: tuple[float, float] = (0.005, 0.5),
        statement_cache_size: int = 100,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
    ) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigurationError(
                f"PostgresBackend needs a postgresql:// URL, not {redact_url(url)!r}"
            )
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, not {pool_size}")
        shortest, longest = poll_interval
        if not 0 < shortest <= longest:
            raise ConfigurationError(
                f"poll_interval must be (shortest, longest) with 0 < shortest <= longest, "
                f"not {poll_interval!r}"
            )
        if not connect_timeout > 0 or not command_timeout > 0:
            raise ConfigurationError("connect_timeout and command_timeout must be positive seconds")
        self._db = Database(
            url,
            schema=schema,
            pool_size=pool_size,
            connect_timeout=float(connect_timeout),
            command_timeout=float(command_timeout),
            statement_cache_size=statement_cache_size,
        )
        self._db.statements = Catalog(self._db.q)
        self._wakeups = Wakeups(
            self._db,
            listen=listen,
            poll_interval=(float(shortest), float(longest)),
            listen_check=max(5.0, float(longest)),
        )

    def __repr__(self) -> str:
        state = "open" if self._db.pool is not None else "closed"
        return f"PostgresBackend({self._db.where!r}, schema={self._db.schema!r}, {state})"

    # -- StoreConnection ------------------------------------------------------------

    async def open(self, clock: Clock) -> None:
        """Connect, check the server, and create or migrate the schema.

        :param clock: where every due time and lease expiry comes from; with the
            :class:`~asyncjobs.SystemClock`, statements read the server's clock.
        :raises PostgresUnreachableError: when the server does not answer.
        :raises PostgresAuthError: when the server refuses the user or password.
        :raises PostgresDatabaseMissingError: when the database does not exist.
        :raises PostgresVersionError: when the server is older than 13.
        :raises SchemaVersionError: when a newer asyncjobs wrote the schema.
        :raises BackendError: for any other reason the server refuses.
        """
        if await self._db.open(clock):
            self._wakeups.reset()

    async def aclose(self) -> None:
        """Close the pool and the LISTEN connection; waiters return; :meth:`open` may follow."""
        await self._wakeups.aclose()
        await self._db.aclose()
        self._wakeups.notify()

    # -- JobLifecycle ---------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs* atomically (one statement without keys or partitions).

        :raises DuplicateJobError: when an ``on_conflict="raise"`` job meets the
            holder of its key (nothing is stored).
        """
        stored = await _enqueue.enqueue(self._db, jobs, handoff)
        self._wakeups.notify(job.queue for job in stored if job.state is JobState.QUEUED)
        return stored

    async def enqueue_on(self, connection: Any, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert *jobs* inside the caller's open transaction on *connection*.

        The jobs exist if and only if that transaction commits, and workers are
        woken when it does (NOTIFY is delivered at commit). No job is handed
        off: none is visible before the commit.

        :param connection: an ``asyncpg.Connection`` (or a pool's connection
            proxy), or a SQLAlchemy ``AsyncConnection`` of the asyncpg dialect,
            inside a transaction, on the database this backend uses.
        :raises InvalidOptionError: when *connection* is neither, is an
            ``AsyncConnection`` of another driver, or is not inside a transaction.
        :raises DuplicateJobError: as :meth:`enqueue` (the caller's transaction
            is then in an error-free state: nothing was written).
        """
        conn = await _asyncpg_connection(connection)
        if not conn.is_in_transaction():
            raise InvalidOptionError(
                "connection= must be inside a transaction (async with conn.transaction(): "
                "...): outside one, the jobs would commit on their own"
            )
        if not jobs:
            return []
        try:
            return await _enqueue.insert_jobs(conn, self._db, jobs)
        except DRIVER_ERRORS as exc:
            raise translate(exc, "enqueue", self._db.where) from None

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue* in one statement (``SKIP LOCKED``)."""
        claimed = await _lifecycle.claim(self._db, queue, limit, worker_id, lease)
        if claimed:
            self._wakeups.busy()
        return claimed

    async def heartbeat(self, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
        """Extend the leases still held; report the lost ones and requested cancels."""
        return await _lifecycle.heartbeat(self._db, leases, lease)

    async def settle(
        self, outcomes: Sequence[Outcome], starts: Sequence[JobStart] = ()
    ) -> list[str]:
        """Apply the outcomes and handler starts whose lease token is current, atomically.

        :returns: the ids of the refused outcomes (starts are never reported).
        """
        return await _lifecycle.settle(self._db, outcomes, starts)

    async def recover_expired(self) -> int:
        """Requeue running jobs whose lease ran out; kill those out of attempts.

        :returns: how many jobs were requeued or killed.
        """
        return await _lifecycle.recover_expired(self._db)

    async def set_progress(
        self, job_id: str, lease_token: str, progress: float, message: str | None
    ) -> bool:
        """Store progress for a job whose lease is still held; ``False`` otherwise."""
        return await _lifecycle.set_progress(self._db, job_id, lease_token, progress, message)

    # -- FlowControl ----------------------------------------------------------------

    async def claim_limited(
        self, queue: str, limit: int, worker_id: str, lease: float, limits: ClaimLimits
    ) -> ClaimReply:
        """Claim as :meth:`claim` does, within *limits*, in one transaction.

        Limited claims of one queue take turns on an advisory lock, so the
        limits hold across every process and host sharing the database.
        """
        reply = await _flow.claim_limited(self._db, queue, limit, worker_id, lease, limits)
        if reply.jobs:
            self._wakeups.busy()
        return reply

    # -- WorkSignals ----------------------------------------------------------------

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest ``due_at`` of queued jobs in the unpaused *queues*."""
        return await _inspection.next_due_at(self._db, queues)

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*.

        Work added through this object wakes at once; other processes' work
        through LISTEN/NOTIFY, or the adaptive poll (see ``_wakeups.py``).
        """
        await self._wakeups.wait_for_work(queues, deadline, wakeup)

    # -- QueueControl ---------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or flag a running one for its worker."""
        return await _control.cancel(self._db, job_id)

    async def retry_dead(self, job_id: str, due_at: float) -> Job | None:
        """Queue a dead job again at *due_at* with its attempts reset.

        A dead job whose ``key`` another job holds meanwhile is left dead.
        """
        job = await _control.retry_dead(self._db, job_id, due_at)
        if job is not None and job.state is JobState.QUEUED:
            self._wakeups.notify([job.queue])
        return job

    async def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause or resume *queue* for every process sharing the database."""
        await _control.pause_queue(self._db, queue, paused)
        if not paused:
            self._wakeups.notify([queue])

    async def prune(self, cutoffs: Mapping[JobState, float]) -> int:
        """Delete finished jobs older than their state's cutoff, in bounded batches.

        :returns: how many jobs were deleted.
        """
        return await _control.prune(self._db, cutoffs)

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job that is not running, with its history; it frees its key."""
        return await _control.delete_job(self._db, job_id)

    async def purge(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        finished_before: float | None = None,
    ) -> int:
        """Delete every job matching all given filters, except running ones.

        :returns: how many jobs were deleted.
        """
        return await _control.purge(
            self._db,
            queue=queue,
            state=state,
            name=name,
            partition=partition,
            tags=tags,
            finished_before=finished_before,
        )

    # -- WorkerRegistry and AuditTrail --------------------------------------------------

    async def register_worker(self, record: WorkerRecord) -> None:
        """Insert or replace the record of ``record.id``."""
        await _operators.register_worker(self._db, record)

    async def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's record; unknown ids are ignored."""
        await _operators.remove_worker(self._db, worker_id)

    async def list_workers(self, seen_since: float) -> list[WorkerRecord]:
        """Return the records last seen at or after *seen_since*, ordered by id."""
        return await _operators.list_workers(self._db, seen_since)

    async def record_audit(self, record: AuditRecord) -> None:
        """Store one audit entry."""
        await _operators.record_audit(self._db, record)

    async def list_audit(self, limit: int = 100, before: float | None = None) -> list[AuditRecord]:
        """Return up to *limit* entries, newest first (those before *before*, when given)."""
        return await _operators.list_audit(self._db, limit, before)

    async def prune_audit(self, before: float) -> int:
        """Delete the entries recorded before *before*; return how many."""
        return await _operators.prune_audit(self._db, before)

    # -- ScheduleStore --------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace a schedule; an unchanged trigger keeps its timing and pause."""
        return await _schedules.put_schedule(self._db, schedule)

    async def get_schedule(self, name: str) -> Schedule | None:
        """Return one schedule, or ``None``."""
        return await _schedules.get_schedule(self._db, name)

    async def list_schedules(self) -> list[Schedule]:
        """Return every schedule, ordered by name."""
        return await _schedules.list_schedules(self._db)

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; ``False`` when there was none."""
        return await _schedules.remove_schedule(self._db, name)

    async def pause_schedule(self, name: str, paused: bool) -> Schedule | None:
        """Pause or resume a schedule; ``None`` when there is none."""
        return await _schedules.pause_schedule(self._db, name, paused)

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
        fired = await _schedules.fire_schedule(self._db, name, expected_fire_at, next_fire_at, jobs)
        if fired:
            self._wakeups.notify(job.queue for job in fired)
        return fired

    # -- Inspection -----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job, or ``None``."""
        return await _inspection.get_job(self._db, job_id)

    async def get_attempts(self, job_id: str) -> list[Attempt]:
        """Return a job's attempt history, oldest first (empty for an unknown job)."""
        return await _inspection.get_attempts(self._db, job_id)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        schedule: str | None = None,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        enqueued_after: float | None = None,
        enqueued_before: float | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
    ) -> list[Job]:
        """Return a page of jobs matching every given filter, newest enqueued first."""
        return await _inspection.list_jobs(
            self._db,
            queue=queue,
            state=state,
            name=name,
            schedule=schedule,
            partition=partition,
            tags=tags,
            enqueued_after=enqueued_after,
            enqueued_before=enqueued_before,
            limit=limit,
            offset=offset,
            after=after,
        )

    async def queue_stats(self, *, partition: str | None = None) -> list[QueueStats]:
        """Count jobs per queue and state (of one *partition*, when given), in one snapshot."""
        return await _inspection.queue_stats(self._db, partition=partition)


async def _asyncpg_connection(connection: Any) -> asyncpg.Connection:
    """The asyncpg connection behind *connection* (a pool's proxy is one too).

    A SQLAlchemy ``AsyncConnection`` (recognised by its methods: SQLAlchemy stays
    an optional dependency, never imported) gives its driver connection when its
    dialect's driver is asyncpg and it is inside a transaction. SQLAlchemy's
    asyncpg adapter sends ``BEGIN`` only with the first statement of a
    transaction: until then, the driver connection is outside one, and a job
    inserted on it would commit on its own. So a trivial statement goes through
    SQLAlchemy first, which begins the transaction its commit or rollback ends.
    """
    if isinstance(connection, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
        return connection
    if _is_sqlalchemy_async_connection(connection):
        driver = connection.dialect.driver
        if driver != "asyncpg":
            raise InvalidOptionError(
                f"connection= takes a SQLAlchemy AsyncConnection on the asyncpg driver "
                f"(PostgresBackend uses asyncpg), not on {driver!r}: create its engine "
                "with a postgresql+asyncpg:// URL"
            )
        if not connection.in_transaction():
            raise InvalidOptionError(
                "connection= must be inside a transaction (async with engine.begin() as "
                "conn: ..., or conn.begin()): outside one, the jobs would commit on their own"
            )
        raw = await connection.get_raw_connection()
        conn = raw.driver_connection
        if not isinstance(conn, asyncpg.Connection):
            raise InvalidOptionError(
                f"connection= got a SQLAlchemy AsyncConnection whose driver connection is "
                f"{type(conn).__name__}, not an asyncpg connection"
            )
        if not conn.is_in_transaction():
            await connection.exec_driver_sql("SELECT 1")
        if not conn.is_in_transaction():
            raise InvalidOptionError(
                "connection= must be inside a transaction, and this AsyncConnection runs "
                "with isolation_level='AUTOCOMMIT': the jobs would commit on their own"
            )
        return conn
    raise InvalidOptionError(
        f"connection= takes an asyncpg connection (PostgresBackend uses asyncpg) or a "
        f"SQLAlchemy AsyncConnection on the asyncpg driver, not {type(connection).__name__}"
        " (with a SQLAlchemy AsyncSession, pass await session.connection())"
    )


def _is_sqlalchemy_async_connection(connection: Any) -> bool:
    """Whether *connection* looks like ``sqlalchemy.ext.asyncio.AsyncConnection``."""
    return (
        callable(getattr(connection, "get_raw_connection", None))
        and callable(getattr(connection, "in_transaction", None))
        and callable(getattr(connection, "exec_driver_sql", None))
        and hasattr(connection, "dialect")
    )
