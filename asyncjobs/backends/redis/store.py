"""The Redis store: :class:`RedisBackend`, one method per operation of the contract.

Its methods follow the contract's groups (StoreConnection, JobLifecycle,
FlowControl, WorkSignals, QueueControl, ScheduleStore, Inspection,
WorkerRegistry, AuditTrail) and hand each
operation to the module that holds its script and the code that calls it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any

import anyio
import redis.asyncio as aioredis

from ..._clock import Clock
from ..._exceptions import ConfigurationError
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
from . import _control, _enqueue, _inspection, _lifecycle, _registry, _schedules, _wakeups
from ._codec import checks_conflicts
from ._connection import Connection
from ._keys import Keys
from ._wakeups import Wakeups

__all__ = ["RedisBackend"]

#: Every script, loaded (and so checked against the user's ACL) at open.
_SCRIPTS = (
    *_enqueue.SCRIPTS,
    *_lifecycle.SCRIPTS,
    _wakeups.NEXT_DUE,
    *_control.SCRIPTS,
    *_schedules.SCRIPTS,
    *_inspection.SCRIPTS,
    *_registry.SCRIPTS,
)


def _seconds(value: float | timedelta | None) -> float:
    if value is None:
        return 0.0
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ConfigurationError(f"a retention must not be negative, got {seconds}s")
    return seconds


class RedisBackend:
    """Jobs in a Redis server (5.0 or newer), shared by every process that reaches it.

    Every operation that changes more than one key runs as one Lua script
    (loaded once, called with ``EVALSHA``), so it is atomic in the server and
    costs one round trip: a whole claim batch, a whole outcome batch, a whole
    enqueue batch. Times are float seconds since the epoch. Opened with a
    :class:`~asyncjobs.SystemClock`, the scripts read the time from the server
    (``TIME``), so every host judges leases by one clock; any other clock (a
    test's :class:`~asyncjobs.ManualClock`) passes its ``now()`` in.

    Every key is bounded (see ``_keys.py`` for the layout): a job's keys (its
    attempt history included) live while it is active, and for ``finished_ttl``
    (``dead_ttl`` for dead jobs) after it finished, or until :meth:`prune`,
    :meth:`purge` or :meth:`delete_job` deletes it. Redis Cluster is not
    supported (the scripts touch keys of many jobs); a restricted ACL user
    needs ``~P:*`` keys, ``&P:*`` channels and the commands of ``+@read
    +@write +@scripting +@pubsub +@connection +time`` (``CONFIG`` only for the
    persistence check, which is skipped with a warning when refused).

    :param url_or_client: a URL (``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` for TLS, ``unix:///path/to/redis.sock``; query options as
        redis-py reads them), or a ready ``redis.asyncio.Redis`` client (made
        with ``decode_responses=False``; the caller keeps ownership of it).
    :param prefix: the namespace of every key and channel (see the module docs);
        backends with different prefixes share a server without meeting.
    :param finished_ttl: how long complete and cancelled jobs are kept (seconds or
        ``timedelta``; ``None`` keeps them until :meth:`prune`).
    :param dead_ttl: the same for dead jobs, kept longer by default for inspection.
    :param check_persistence: warn (:class:`RedisPersistenceWarning`) at :meth:`open`
        when the server would lose jobs on a restart.
    :param retries: how many times a command is retried while the server is
        unreachable (e.g. restarting), with jittered exponential backoff: about
        10 s in all by default. Ignored for a client passed in, which keeps its
        own retry policy. :meth:`open` itself does not retry.
    :param retry_backoff_cap: the longest pause between two retries, in seconds.
    :param connect_timeout: seconds to wait for a connection (URL only).
    :param client_options: more keyword arguments for ``redis.asyncio.Redis.from_url``.
    :raises ConfigurationError: for an empty prefix, a negative retention, a client
        that decodes responses, or redis-py older than 5.
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = "asyncjobs",
        finished_ttl: float | timedelta | None = timedelta(days=7),
        dead_ttl: float | timedelta | None = timedelta(days=30),
        check_persistence: bool = True,
        retries: int = 10,
        retry_backoff_cap: float = 2.0,
        connect_timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        Connection.check_driver()
        if not prefix:
            raise ConfigurationError("the Redis key prefix must not be empty")
        keys = Keys(prefix)
        self._conn = Connection(
            url_or_client,
            keys=keys,
            finished_ttl_ms=round(_seconds(finished_ttl) * 1000),
            dead_ttl_ms=round(_seconds(dead_ttl) * 1000),
            check_persistence=check_persistence,
            retries=retries,
            retry_backoff_cap=retry_backoff_cap,
            connect_timeout=connect_timeout,
            client_options=client_options,
        )
        self._wakeups = Wakeups(keys)
        self._group_commit = _enqueue.GroupCommit(self._conn, self._wakeups)

    def __repr__(self) -> str:
        return f"RedisBackend({self._conn.address()}, prefix={self._conn.keys.prefix!r})"

    # -- StoreConnection ------------------------------------------------------------

    async def open(self, clock: Clock) -> None:
        """Connect, load the scripts, and check the server keeps jobs safely.

        :param clock: the clock; a :class:`~asyncjobs.SystemClock` means "read the
            server's time", so every host judges leases by one clock.
        :raises BackendError: when the server cannot be reached, refuses the
            credentials, fails the TLS handshake, or refuses the commands the
            backend needs (the message never contains the password).
        """
        if self._conn.client is not None:
            await self.aclose()  # opened again: drop the old connections first
        client = await self._conn.open(clock, _SCRIPTS)
        self._wakeups.open(client.pubsub())

    async def aclose(self) -> None:
        """Close the connections (a client passed in stays open); :meth:`open` works again."""
        await self._wakeups.aclose()
        await self._conn.aclose()

    # -- JobLifecycle ---------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs* in one script; a held ``key`` meets its job's ``on_conflict`` rule.

        The script publishes the wake-ups itself: one round trip in all.
        Concurrent plain enqueues share script calls (group commit); an
        enqueue with a *handoff*, or with an ``on_conflict="raise"`` job (whose
        conflict stores nothing of its call), is a script call of its own.

        :raises DuplicateJobError: when a ``raise`` job meets a holder of its key.
        """
        if not jobs:
            return []
        if handoff is None or not handoff.limits:
            if checks_conflicts(jobs):
                return await _enqueue.enqueue_checked(self._conn, self._wakeups, jobs)
            return await self._group_commit.enqueue(jobs)
        return await _enqueue.enqueue_with_handoff(self._conn, self._wakeups, jobs, handoff)

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue* in one script, each with a fresh token."""
        return await _lifecycle.claim(self._conn, queue, limit, worker_id, lease)

    async def claim_limited(
        self, queue: str, limit: int, worker_id: str, lease: float, limits: ClaimLimits
    ) -> ClaimReply:
        """Claim as :meth:`claim` does, within *limits*, in one script.

        Concurrency limits count the queue's running set (and a hash of running
        jobs per partition); rates are sorted sets of claim times, trimmed to
        their window. A queue claimed under a concurrency limit publishes its
        wake channel whenever one of its running jobs ends.
        """
        return await _lifecycle.claim_limited(self._conn, queue, limit, worker_id, lease, limits)

    async def heartbeat(self, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
        """Extend the leases this worker still holds, in one script."""
        return await _lifecycle.heartbeat(self._conn, leases, lease)

    async def settle(
        self, outcomes: Sequence[Outcome], starts: Sequence[JobStart] = ()
    ) -> list[str]:
        """Apply outcomes and handler starts in one script; return the ids whose token was stale."""
        return await _lifecycle.settle(self._conn, self._wakeups, outcomes, starts)

    async def recover_expired(self) -> int:
        """Requeue (or kill, when out of attempts) running jobs whose lease ran out."""
        return await _lifecycle.recover_expired(self._conn, self._wakeups)

    async def set_progress(
        self, job_id: str, lease_token: str, progress: float, message: str | None
    ) -> bool:
        """Store a running job's progress; ``False`` when the lease is no longer held."""
        return await _lifecycle.set_progress(self._conn, job_id, lease_token, progress, message)

    # -- WorkSignals ----------------------------------------------------------------

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest ``due_at`` of queued jobs in unpaused *queues*."""
        return await _wakeups.next_due_at(self._conn, queues)

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*.

        Enqueues through this object wake at once; every other change that
        makes work (another process's enqueue, a retry, a recovery, a resumed
        queue) arrives on the queues' ``wake`` channels. One waiter at a time
        reads the subscription for all of this object's waiters. The first wait
        on a queue returns as soon as its channel is subscribed, so a job
        enqueued between the caller's last claim and the subscription is not
        missed; later messages queue up in the connection between waits.
        """
        await self._wakeups.wait(self._conn.clock, queues, deadline, wakeup)

    # -- QueueControl ---------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job, or flag a running one; a finished job stays as it is."""
        return await _control.cancel(self._conn, self._wakeups, job_id)

    async def retry_dead(self, job_id: str, due_at: float) -> Job | None:
        """Queue a dead job again at *due_at* with its attempts reset."""
        return await _control.retry_dead(self._conn, self._wakeups, job_id, due_at)

    async def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause or resume *queue* for every process; resuming wakes the waiting workers."""
        await _control.pause_queue(self._conn, self._wakeups, queue, paused)

    async def prune(self, cutoffs: Mapping[JobState, float]) -> int:
        """Delete finished jobs whose ``finished_at`` is before their state's cutoff.

        Runs in chunks of a thousand jobs, each one atomic.
        """
        return await _control.prune(self._conn, cutoffs)

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job that is not running, with its history; it frees its key.

        :returns: ``False`` when there is no such job or it is running.
        """
        return await _control.delete_job(self._conn, self._wakeups, job_id)

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

        Scans the enqueue index in chunks, each one atomic script call.

        :returns: how many jobs were deleted.
        """
        return await _control.purge(
            self._conn,
            self._wakeups,
            queue=queue,
            state=state,
            name=name,
            partition=partition,
            tags=tags,
            finished_before=finished_before,
        )

    # -- WorkerRegistry -------------------------------------------------------------

    async def register_worker(self, record: WorkerRecord) -> None:
        """Insert or replace the record of ``record.id``."""
        await _registry.register_worker(self._conn, record)

    async def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's record (at its shutdown); unknown ids are ignored."""
        await _registry.remove_worker(self._conn, worker_id)

    async def list_workers(self, seen_since: float) -> list[WorkerRecord]:
        """Return the records last seen at or after *seen_since*, ordered by id.

        The older ones are deleted by the same call.
        """
        return await _registry.list_workers(self._conn, seen_since)

    # -- AuditTrail -----------------------------------------------------------------

    async def record_audit(self, record: AuditRecord) -> None:
        """Store one entry."""
        await _registry.record_audit(self._conn, record)

    async def list_audit(self, limit: int = 100, before: float | None = None) -> list[AuditRecord]:
        """Return up to *limit* entries, newest first (those before *before*, when given)."""
        return await _registry.list_audit(self._conn, limit, before)

    async def prune_audit(self, before: float) -> int:
        """Delete the entries recorded before *before*; return how many."""
        return await _registry.prune_audit(self._conn, before)

    # -- ScheduleStore --------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace a schedule, keeping its timing when the trigger is unchanged."""
        return await _schedules.put_schedule(self._conn, schedule)

    async def get_schedule(self, name: str) -> Schedule | None:
        """Return one schedule, or ``None``."""
        return await _schedules.get_schedule(self._conn, name)

    async def list_schedules(self) -> list[Schedule]:
        """Return every stored schedule, ordered by name."""
        return await _schedules.list_schedules(self._conn)

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; ``False`` when there was none."""
        return await _schedules.remove_schedule(self._conn, name)

    async def pause_schedule(self, name: str, paused: bool) -> Schedule | None:
        """Pause or resume a schedule; ``None`` when there is none."""
        return await _schedules.pause_schedule(self._conn, name, paused)

    async def fire_schedule(
        self,
        name: str,
        expected_fire_at: float,
        next_fire_at: float | None,
        jobs: Sequence[NewJob],
    ) -> list[Job] | None:
        """Fire one tick: compare-and-set ``next_fire_at`` and enqueue *jobs* in one script.

        :returns: the enqueued jobs, or ``None`` when the tick was fired already
            (or the schedule is paused or gone); then nothing is written.
        """
        return await _schedules.fire_schedule(
            self._conn, self._wakeups, name, expected_fire_at, next_fire_at, jobs
        )

    # -- Inspection -----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job, or ``None`` when it does not exist (or has expired)."""
        return await _inspection.get_job(self._conn, job_id)

    async def get_attempts(self, job_id: str) -> list[Attempt]:
        """Return a job's attempt history, oldest first (empty for an unknown job)."""
        return await _inspection.get_attempts(self._conn, job_id)

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
        ``enqueued_at`` (``after <= t < before``); *after* is the id of the last
        job of the previous page (an unknown id gives an empty page). Filtering,
        or a cursor, scans the enqueue index in chunks on the server; a page of
        an unfiltered listing costs two round trips.
        """
        return await _inspection.list_jobs(
            self._conn,
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
        """Return job counts by state for every queue that has jobs or is paused.

        With *partition*, only its jobs count (a scan of the enqueue index in
        chunks, like a filtered :meth:`list_jobs`).
        """
        return await _inspection.queue_stats(self._conn, partition)
