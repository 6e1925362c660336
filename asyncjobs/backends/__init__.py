"""Storage backends: the :class:`Backend` protocol, :func:`from_url`, and the four stores.

A backend stores and claims; it knows nothing of handlers, retries or limits.
Every operation is atomic in the store. ``MemoryBackend``, ``SQLiteBackend``,
``RedisBackend`` and ``PostgresBackend`` are imported lazily, so ``import
asyncjobs`` never loads aiosqlite, redis or asyncpg.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import anyio
import attrs

from .._clock import Clock
from .._exceptions import ConfigurationError
from .._models import (
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

if TYPE_CHECKING:
    from .memory import MemoryBackend
    from .postgres import PostgresBackend
    from .redis import RedisBackend
    from .sqlite import SQLiteBackend

__all__ = [
    "AuditTrail",
    "Backend",
    "FlowControl",
    "HeartbeatReply",
    "Inspection",
    "JobLifecycle",
    "MemoryBackend",
    "PostgresBackend",
    "QueueControl",
    "RedisBackend",
    "SQLiteBackend",
    "ScheduleStore",
    "StoreConnection",
    "WorkSignals",
    "WorkerRegistry",
    "from_url",
]


@attrs.frozen(kw_only=True)
class HeartbeatReply:
    """What the store says about the leases a worker tried to extend.

    :ivar lost: jobs whose lease this worker no longer holds (not extended).
    :ivar cancel_requested: jobs still held whose cancellation was requested
        (by :meth:`QueueControl.cancel`, possibly from another process).
    """

    lost: frozenset[str] = frozenset()
    cancel_requested: frozenset[str] = frozenset()


@runtime_checkable
class StoreConnection(Protocol):
    """Opening and closing a store."""

    async def open(self, clock: Clock) -> None:
        """Connect, create or migrate the schema, and check the store is safe to use.

        :raises BackendError: when the store cannot be used (with the reason).
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the backend may be opened again afterwards."""
        ...


@runtime_checkable
class JobLifecycle(Protocol):
    """A job from enqueue to outcome: the hot path, and the worker's side of leases.

    Every lease carries a token; a heartbeat, progress report or outcome with a
    token that is no longer the job's current one is refused and changes nothing.
    """

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs* in one atomic step and wake waiting workers.

        A job with a ``key`` held by another job (see :class:`KeyScope`: the
        holder's ``key_scope`` says how long it holds it) meets the conflict
        rule of its ``on_conflict``: ``return`` stores nothing and returns the
        holder in its place; ``replace`` gives a *queued* holder the new
        ``payload`` and ``due_at`` and returns it (a running holder keeps
        running and the new job is inserted, taking the key; a finished
        holder of a window key is returned as with ``return``); ``raise``
        stores nothing of the whole batch and raises
        :class:`~asyncjobs.DuplicateJobError`. A key no job holds is taken by
        the new job. The result is in the order of *jobs*.

        With a *handoff*, the backend may store new jobs already claimed by
        its worker (see :class:`~asyncjobs._models.Handoff` for which ones
        qualify); those come back ``running``, exactly as a claim returns
        them. A lone new job that is due, in an unpaused queue, and first in
        claim order must be handed off (the conformance suite checks this); of
        a batch, a backend may hand off fewer than it could.
        """
        ...

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue*, unless the queue is paused.

        Order: priority (lower first), then the partition round (below), then
        due time, then enqueue order. Each claimed job becomes ``running`` with
        ``attempts`` incremented, a fresh ``lease_token``,
        ``lease_expires_at = now + lease`` and ``started_at = None`` (its
        worker reports the start, see :meth:`settle`).

        Partition rounds: a job without a partition is in round 0. A job with
        one gets, at enqueue, the round after its partition's last job, but
        never one before the queue's current round (the highest round claimed
        so far): partitions take turns, one job each per round, and a new
        partition joins at the current round instead of behind every job of
        the others.
        """
        ...

    async def heartbeat(self, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
        """Extend the leases in *leases* (job id -> lease token) to ``now + lease``.

        ``now`` is the time once the store can apply the write (after any wait
        for a lock), so a heartbeat that waited never hands out a lease that is
        already partly spent.
        """
        ...

    async def settle(
        self, outcomes: Sequence[Outcome], starts: Sequence[JobStart] = ()
    ) -> list[str]:
        """Record the outcomes of attempts and the starts of handlers in one atomic step.

        An outcome whose lease token is not the job's current one is refused
        and changes nothing; its ``started_at`` (when given) becomes the job's.
        Each applied outcome adds an :class:`~asyncjobs._models.Attempt` to the
        job's history (the latest ``MAX_ATTEMPT_HISTORY`` are kept); one with
        ``remove`` deletes a job that it finishes (history included) instead
        of keeping it. Each of *starts* sets ``started_at`` of a running job
        whose token matches (others are ignored: not reported as refused).
        :returns: the ids of the refused outcomes.
        """
        ...

    async def recover_expired(self) -> int:
        """Requeue running jobs whose lease has expired (their worker died).

        A job with no attempts left becomes ``dead`` instead, so a job that
        keeps killing its worker does not go round forever. Each adds an
        attempt with outcome ``"lease_expired"`` to the job's history.
        :returns: how many jobs were recovered or killed.
        """
        ...

    async def set_progress(
        self, job_id: str, lease_token: str, progress: float, message: str | None
    ) -> bool:
        """Store a running job's progress; ``False`` when the lease is no longer held."""
        ...


@runtime_checkable
class FlowControl(Protocol):
    """Claims under cluster-wide limits: the store counts, the runtime decides the limits."""

    async def claim_limited(
        self, queue: str, limit: int, worker_id: str, lease: float, limits: ClaimLimits
    ) -> ClaimReply:
        """Claim as :meth:`JobLifecycle.claim` does, within *limits*, in one atomic step.

        Jobs are taken in claim order; a job that a limit holds back is
        skipped (it stays queued, its attempts unchanged) and later ones may
        still be claimed. ``global_concurrency`` and ``partition_concurrency``
        count the queue's ``running`` jobs of every worker. Each claimed job
        counts once in the queue's rate window and once in its name's
        (``per`` seconds, judged by the store's clock). When *limits* has a
        concurrency limit, the store also wakes the queue's waiters (in
        every process) whenever one of its running jobs ends or is requeued.
        """
        ...


@runtime_checkable
class WorkSignals(Protocol):
    """When to claim next: the earliest due time, and a wait that ends when work arrives."""

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest ``due_at`` of queued jobs in unpaused *queues*."""
        ...

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, or at *deadline*.

        Early returns are allowed; callers claim and wait again. Jobs enqueued
        through this backend object wake waiters at once. A caller that has
        other reasons to wake up passes its own *wakeup* event: the wait also
        ends when that is set, and the backend sets it when work arrives, so
        the caller needs no second task to watch it.
        """
        ...


@runtime_checkable
class QueueControl(Protocol):
    """Operator actions on jobs and queues, seen by every process sharing the store."""

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a queued one at once, a running one by flagging it.

        A running job gets ``cancel_requested``; its worker sees the flag on
        its next heartbeat and settles it as cancelled. A finished job is left
        as it is. :returns: the job after the change, or ``None`` if unknown.
        """
        ...

    async def retry_dead(self, job_id: str, due_at: float) -> Job | None:
        """Queue a dead job again at *due_at* with its attempts reset.

        :returns: the job after the change (unchanged when it was not dead),
            or ``None`` if unknown.
        """
        ...

    async def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause or resume claiming from *queue*, for every process sharing the store."""
        ...

    async def prune(self, cutoffs: Mapping[JobState, float]) -> int:
        """Delete finished jobs whose ``finished_at`` is before the cutoff of their state.

        :returns: how many jobs were deleted.
        """
        ...

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job that is not running, with its history; it frees its key.

        :returns: ``False`` when there is no such job or it is running.
        """
        ...

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

        *tags* matches jobs that carry every given tag; *finished_before*
        matches finished jobs that ended before it.
        :returns: how many jobs were deleted.
        """
        ...


@runtime_checkable
class WorkerRegistry(Protocol):
    """Live runtimes, so every process can list them; the store keeps opaque records."""

    async def register_worker(self, record: WorkerRecord) -> None:
        """Insert or replace the record of ``record.id``."""
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's record (at its shutdown); unknown ids are ignored."""
        ...

    async def list_workers(self, seen_since: float) -> list[WorkerRecord]:
        """Return the records last seen at or after *seen_since*, ordered by id.

        Older records are dead workers: the store may delete them now.
        """
        ...


@runtime_checkable
class AuditTrail(Protocol):
    """Operator actions, kept so that any process can list them."""

    async def record_audit(self, record: AuditRecord) -> None:
        """Store one entry."""
        ...

    async def list_audit(self, limit: int = 100, before: float | None = None) -> list[AuditRecord]:
        """Return up to *limit* entries, newest first (those before *before*, when given)."""
        ...

    async def prune_audit(self, before: float) -> int:
        """Delete the entries recorded before *before*; return how many."""
        ...


@runtime_checkable
class ScheduleStore(Protocol):
    """Stored schedules, and the compare-and-set that makes each tick fire once."""

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace a schedule's definition.

        When a stored schedule of that name has the same ``trigger``, its
        ``next_fire_at``, ``last_fire_at`` and ``paused`` are kept, so a
        restart neither re-fires nor forgets a tick. :returns: the stored schedule.
        """
        ...

    async def get_schedule(self, name: str) -> Schedule | None:
        """Return one schedule, or ``None``."""
        ...

    async def list_schedules(self) -> list[Schedule]:
        """Return every stored schedule, ordered by name."""
        ...

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; ``False`` when there was none."""
        ...

    async def pause_schedule(self, name: str, paused: bool) -> Schedule | None:
        """Pause or resume a schedule; ``None`` when there is none."""
        ...

    async def fire_schedule(
        self,
        name: str,
        expected_fire_at: float,
        next_fire_at: float | None,
        jobs: Sequence[NewJob],
    ) -> list[Job] | None:
        """Fire a schedule once: the compare-and-set that makes a tick run once.

        Atomically: when the schedule exists, is not paused and its
        ``next_fire_at`` equals *expected_fire_at*, enqueue *jobs* (with the
        usual dedup) and set ``last_fire_at = expected_fire_at`` and
        ``next_fire_at``. :returns: the enqueued jobs, or ``None`` when another
        process fired that tick first (nothing is written).
        """
        ...


@runtime_checkable
class Inspection(Protocol):
    """Reads for the console, the CLI and tools: never on the hot path."""

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job, or ``None`` when it does not exist."""
        ...

    async def get_attempts(self, job_id: str) -> list[Attempt]:
        """Return a job's attempt history, oldest first (empty for an unknown job)."""
        ...

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
        """Return a page of jobs matching every given filter, newest enqueued first.

        *tags* matches jobs carrying every given tag; the time range is on
        ``enqueued_at`` (``after <= t < before``). *after* is a cursor: the id of
        the last job of the previous page (the page continues after it; an
        unknown id gives an empty page).
        """
        ...

    async def queue_stats(self, *, partition: str | None = None) -> list[QueueStats]:
        """Return job counts by state for every queue that has jobs or is paused.

        With *partition*, only that partition's jobs are counted. ``claimed``
        and ``delayed`` split the running and queued counts (see
        :class:`~asyncjobs._models.QueueStats`).
        """
        ...


@runtime_checkable
class Backend(
    StoreConnection,
    JobLifecycle,
    FlowControl,
    WorkSignals,
    QueueControl,
    ScheduleStore,
    Inspection,
    WorkerRegistry,
    AuditTrail,
    Protocol,
):
    """The storage contract: one object the runtime holds, in nine groups of operations.

    ``tests/backends/contract/`` is its executable spec, one module per
    group. No inheritance is needed: a class with these methods is
    a backend.

    Time: a backend reads the time from the clock given to :meth:`open`
    (a Redis backend given the system clock reads the server's ``TIME``
    instead, so every host judges leases by one clock).
    """


_SCHEMES = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
}


def from_url(url: str, **options: Any) -> Backend:
    """Make a backend from a URL.

    - ``memory://``
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    - ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
      ``unix:///path/to/redis.sock``
    - ``postgresql://[user[:password]@]host[:port]/database`` (``postgres://`` too)

    Extra keyword *options* go to the backend's constructor.

    :raises ConfigurationError: for an unknown scheme or a URL without a path.
    """
    scheme = urlsplit(url).scheme.lower()
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise ConfigurationError(
            f"unknown backend URL scheme {scheme!r} in {_redact(url)!r}: "
            "use memory://, sqlite:///path.db, redis://, rediss:// or postgresql://"
        )
    if kind == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(**options)
    if kind == "sqlite":
        path = unquote(url.split("://", 1)[1])
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigurationError("a sqlite URL needs a file path: sqlite:///jobs.db")
        from .sqlite import SQLiteBackend

        return SQLiteBackend(path, **options)
    if kind == "postgres":
        from .postgres import PostgresBackend

        return PostgresBackend(url, **options)
    from .redis import RedisBackend

    return RedisBackend(url, **options)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


_LAZY = {
    "MemoryBackend": ".memory",
    "SQLiteBackend": ".sqlite",
    "RedisBackend": ".redis",
    "PostgresBackend": ".postgres",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(module_name, __name__)
    return getattr(module, name)
