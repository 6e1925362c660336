"""The SQLite store: :class:`SQLiteBackend`, one method per operation of the contract.

Its methods follow the contract's groups (StoreConnection, JobLifecycle,
FlowControl, WorkSignals, QueueControl, ScheduleStore, Inspection,
WorkerRegistry, AuditTrail) and hand each operation to the module that holds
its SQL and the code that runs it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence

import anyio

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
from . import (
    _checks,
    _control,
    _enqueue,
    _flow,
    _history,
    _inspection,
    _lifecycle,
    _registry,
    _schedules,
)
from ._database import Database
from ._wakeups import Wakeups
from ._writer import Writer

__all__ = ["SQLiteBackend"]

_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


class SQLiteBackend:
    """Jobs in a SQLite file that several processes on one host may share.

    :param path: the database file; created with its schema on first use. Its
        directory must exist and be writable (SQLite creates ``-wal`` and
        ``-shm`` files next to it, and asyncjobs a ``-lock`` file).
    :param synchronous: ``"FULL"`` (default: a committed job survives power
        loss), ``"EXTRA"``, or ``"NORMAL"`` (survives a crash of the process,
        not of the machine; faster commits).
    :param busy_timeout: seconds one attempt waits in SQLite's busy handler
        for a write lock held outside asyncjobs' queue (another program, a
        long transaction) before it is tried again. It bounds how long a
        cancelled write can delay its caller.
    :param write_timeout: seconds a call an application makes (``enqueue``,
        ``cancel``, ``retry_dead``, pausing, schedule changes, and ``open``)
        waits for the write lock before :class:`SQLiteBusyError` names the
        process holding it. The runtime's own loops (claim, heartbeat, settle,
        lease sweeps, progress, prune, cron ticks) wait as long as it takes,
        with a warning in the log every 10 s.
    :param poll_interval: ``(shortest, longest)`` seconds between checks for
        work added by other processes; the interval starts at the shortest
        after activity and doubles while idle.
    :param max_size: cap the file at about this many bytes (``None``: no cap);
        a write past it fails with :class:`SQLiteFullError`, like a full disk.
    :raises ConfigurationError: for an option that cannot work.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 1.0,
        write_timeout: float = 60.0,
        poll_interval: tuple[float, float] = (0.005, 0.5),
        max_size: int | None = None,
    ) -> None:
        path = os.fspath(path)
        if not path:
            raise ConfigurationError("SQLiteBackend needs a file path, e.g. 'jobs.db'")
        mode = str(synchronous).upper()
        if mode not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not supported: use 'FULL' (default), "
                "'EXTRA' or 'NORMAL' (OFF can corrupt the file when the machine crashes)"
            )
        if not busy_timeout > 0:
            raise ConfigurationError(f"busy_timeout must be positive seconds, not {busy_timeout}")
        if not write_timeout > 0:
            raise ConfigurationError(f"write_timeout must be positive seconds, not {write_timeout}")
        shortest, longest = poll_interval
        if not 0 < shortest <= longest:
            raise ConfigurationError(
                f"poll_interval must be (shortest, longest) with 0 < shortest <= longest, "
                f"not {poll_interval!r}"
            )
        if max_size is not None and max_size <= 0:
            raise ConfigurationError(f"max_size must be a positive number of bytes, not {max_size}")
        self._db = Database(
            path,
            synchronous=mode,
            busy_timeout=float(busy_timeout),
            write_timeout=float(write_timeout),
            max_size=max_size,
        )
        self._wakeups = Wakeups(self._db, (float(shortest), float(longest)))

    def __repr__(self) -> str:
        state = "open" if self._db.writer is not None else "closed"
        return f"SQLiteBackend({self._db.path!r}, {state})"

    @property
    def _writer(self) -> Writer | None:
        """The writer thread while open (the fault tests watch its ``submit``)."""
        return self._db.writer

    # -- StoreConnection ------------------------------------------------------------

    async def open(self, clock: Clock) -> None:
        """Open the file, create or migrate its schema, and check it is safe to use.

        A file that fails a check is left as it was (a probe write that
        changes nothing shows that the file is writable).

        :param clock: where every due time and lease expiry comes from.
        :raises SQLiteVersionError: when the SQLite library is older than 3.35.
        :raises SQLitePathError: when the directory is missing or read-only, or
            the file is write-protected.
        :raises SQLiteNotADatabaseError: when the file is not a SQLite database.
        :raises SchemaVersionError: when a newer asyncjobs wrote the file.
        :raises SQLiteJournalModeError: when the file cannot use WAL.
        :raises SQLiteBusyError: when another process holds the write lock for
            longer than ``write_timeout``.
        :raises SQLiteFullError: when the disk is full.
        :raises BackendError: for any other reason SQLite refuses the file.
        """
        shared = await self._db.open(clock)
        if shared is None:  # open already: only the clock was replaced
            return
        self._wakeups.reset()
        if shared:
            try:
                # stacklevel 3: the warning points at the caller of open().
                _checks.warn_if_wal_reset_bug(self._db.path, stacklevel=3)
            except BaseException:
                # The warning was turned into an error (python -W error): the open
                # fails, and its connections and writer thread must not outlive it.
                await self._db.aclose()
                raise

    async def aclose(self) -> None:
        """Close both connections; waiters return, and :meth:`open` may be called again.

        Writes already queued are finished first, for at most ``write_timeout``
        when another process holds the write lock; the rest then fail.
        """
        await self._db.aclose()
        self._wakeups.notify()

    # -- JobLifecycle ---------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs* in one transaction, with the rules for keys other jobs hold.

        Waits at most ``write_timeout`` for the write lock.

        :raises DuplicateJobError: when an ``on_conflict="raise"`` job meets the
            holder of its key (nothing is stored).
        :raises SQLiteFullError: when the batch does not fit (nothing is stored).
        :raises SQLiteBusyError: when another process held the write lock for
            longer than ``write_timeout`` (nothing is stored).
        """
        return await _enqueue.enqueue(self._db, self._wakeups, jobs, handoff)

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue* in one ``UPDATE ... RETURNING``.

        The lease runs from when the write lock is held, so a claim that waited
        for the lock hands out a whole lease.
        """
        return await _lifecycle.claim(self._db, self._wakeups, queue, limit, worker_id, lease)

    async def heartbeat(self, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
        """Extend the leases still held; report the lost ones and requested cancels.

        The new expiry is ``now + lease`` with ``now`` read once the write lock
        is held: a heartbeat that waited for the lock still extends in full.
        """
        return await _lifecycle.heartbeat(self._db, leases, lease)

    async def settle(
        self, outcomes: Sequence[Outcome], starts: Sequence[JobStart] = ()
    ) -> list[str]:
        """Apply the outcomes and handler starts whose lease token is current, in one atomic step.

        :returns: the ids of the refused outcomes (starts are never reported).
        """
        return await _lifecycle.settle(self._db, self._wakeups, outcomes, starts)

    async def recover_expired(self) -> int:
        """Requeue running jobs whose lease ran out; kill those out of attempts.

        Does nothing while lease sweeps are paused after a stalled write, or
        when this sweep itself waited long for the write lock (see
        ``_stalls.py``): heartbeats held up with it have not landed yet.

        :returns: how many jobs were requeued or killed.
        """
        return await _lifecycle.recover_expired(self._db, self._wakeups)

    async def set_progress(
        self, job_id: str, lease_token: str, progress: float, message: str | None
    ) -> bool:
        """Store progress for a job whose lease is still held; ``False`` otherwise."""
        return await _lifecycle.set_progress(self._db, job_id, lease_token, progress, message)

    # -- FlowControl ----------------------------------------------------------------

    async def claim_limited(
        self, queue: str, limit: int, worker_id: str, lease: float, limits: ClaimLimits
    ) -> ClaimReply:
        """Claim as :meth:`claim` does, within *limits*, in one write transaction.

        The counts and rate windows are read and updated under the write lock,
        so the limits hold across every process sharing the file.
        """
        return await _flow.claim_limited(
            self._db, self._wakeups, queue, limit, worker_id, lease, limits
        )

    # -- WorkSignals ----------------------------------------------------------------

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest ``due_at`` of queued jobs in the unpaused *queues*.

        Jobs waiting behind another job are not due (see ``_keys.py``).
        """
        return await self._wakeups.next_due_at(queues)

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*.

        Work added through this object wakes at once; work added by another
        process is found by the adaptive poll (see ``_wakeups.py``).
        """
        await self._wakeups.wait_for_work(queues, deadline, wakeup)

    # -- QueueControl ---------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or flag a running one for its worker."""
        return await _control.cancel(self._db, self._wakeups, job_id)

    async def retry_dead(self, job_id: str, due_at: float) -> Job | None:
        """Queue a dead job again at *due_at* with its attempts reset.

        A dead job whose ``key`` another job holds meanwhile is left dead:
        reviving it would make two jobs hold the key. (One still inside its
        own throttle window holds it itself, and is revived.)
        """
        return await _control.retry_dead(self._db, self._wakeups, job_id, due_at)

    async def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause or resume *queue* for every process sharing the file."""
        await _control.pause_queue(self._db, self._wakeups, queue, paused)

    async def prune(self, cutoffs: Mapping[JobState, float]) -> int:
        """Delete finished jobs older than their state's cutoff, a batch per statement.

        :returns: how many jobs were deleted.
        """
        return await _control.prune(self._db, cutoffs)

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job that is not running, with its history; it frees its key.

        Waits at most ``write_timeout`` for the write lock.

        :returns: ``False`` when there is no such job or it is running.
        """
        return await _control.delete_job(self._db, self._wakeups, job_id)

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

        A batch per transaction, as :meth:`prune` does: a purge that fails
        part-way has deleted the batches before.

        :returns: how many jobs were deleted.
        """
        return await _control.purge(
            self._db,
            self._wakeups,
            queue=queue,
            state=state,
            name=name,
            partition=partition,
            tags=tags,
            finished_before=finished_before,
        )

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
        return await _schedules.fire_schedule(
            self._db, self._wakeups, name, expected_fire_at, next_fire_at, jobs
        )

    # -- Inspection -----------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job, or ``None``."""
        return await _inspection.get_job(self._db, job_id)

    async def get_attempts(self, job_id: str) -> list[Attempt]:
        """Return a job's attempt history, oldest first (empty for an unknown job)."""
        return await _history.get_attempts(self._db, job_id)

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
        ``enqueued_at`` (``after <= t < before``); *after* is the id of the
        last job of the previous page (an unknown id gives an empty page).
        """
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

    # -- WorkerRegistry -------------------------------------------------------------

    async def register_worker(self, record: WorkerRecord) -> None:
        """Insert or replace the record of ``record.id``."""
        await _registry.register_worker(self._db, record)

    async def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's record (at its shutdown); unknown ids are ignored."""
        await _registry.remove_worker(self._db, worker_id)

    async def list_workers(self, seen_since: float) -> list[WorkerRecord]:
        """Return the records last seen at or after *seen_since*, ordered by id.

        Older records (dead workers) are deleted.
        """
        return await _registry.list_workers(self._db, seen_since)

    # -- AuditTrail -----------------------------------------------------------------

    async def record_audit(self, record: AuditRecord) -> None:
        """Store one entry; waits at most ``write_timeout`` for the write lock."""
        await _registry.record_audit(self._db, record)

    async def list_audit(self, limit: int = 100, before: float | None = None) -> list[AuditRecord]:
        """Return up to *limit* entries, newest first (those before *before*, when given)."""
        return await _registry.list_audit(self._db, limit, before)

    async def prune_audit(self, before: float) -> int:
        """Delete the entries recorded before *before*; return how many."""
        return await _registry.prune_audit(self._db, before)
