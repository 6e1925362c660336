"""The in-process backend: dictionaries and heaps, for tests and single-process apps.

Nothing survives the process. Every method runs without awaiting in between,
so each is atomic with respect to other tasks, as the protocol requires.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import deque
from collections.abc import Collection, Mapping, Sequence

import anyio
import attrs

from .._clock import Clock, SystemClock
from .._exceptions import DuplicateJobError
from .._models import (
    ACTIVE_STATES,
    FINISHED_STATES,
    MAX_ATTEMPT_HISTORY,
    Attempt,
    AuditRecord,
    ClaimLimits,
    ClaimReply,
    ErrorInfo,
    Handoff,
    Job,
    JobStart,
    JobState,
    KeyScope,
    NewJob,
    OnConflict,
    Outcome,
    OutcomeKind,
    QueueStats,
    RateWindow,
    Schedule,
    WorkerRecord,
)
from . import HeartbeatReply

__all__ = ["MemoryBackend"]

_EXPIRED_ERROR = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)


@attrs.define(slots=True)
class _Entry:
    """The mutable row behind a :class:`Job`; turned into a record on every read."""

    id: str
    name: str
    queue: str
    payload: bytes
    state: JobState
    due_at: float
    enqueued_at: float
    seq: int
    priority: int
    max_attempts: int
    timeout: float | None
    key: str | None
    schedule: str | None
    fire_at: float | None = None
    partition: str | None = None
    #: the partition round (see ``claim``): 0 for jobs without a partition.
    round: int = 0
    attempts: int = 0
    lease_token: str | None = None
    lease_expires_at: float | None = None
    worker_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    error: ErrorInfo | None = None
    progress: float | None = None
    progress_message: str | None = None
    cancel_requested: bool = False
    tags: dict[str, str] = attrs.field(factory=dict)
    #: the running job with the same key this one is queued behind (see Job.waits_for).
    waits_for: str | None = None
    history: list[Attempt] = attrs.field(factory=list)
    # Bumped whenever the entry is (re)queued, so older heap items are known stale.
    version: int = 0

    def record(
        self, now: float, outcome: str, started_at: float | None, error: ErrorInfo | None
    ) -> None:
        """Add the attempt that just ended to the history (the latest ones are kept)."""
        self.history.append(
            Attempt(
                number=self.attempts,
                worker_id=self.worker_id,
                started_at=started_at,
                finished_at=now,
                outcome=outcome,
                error_type=error.type if error is not None else None,
                error_message=error.message if error is not None else None,
            )
        )
        if len(self.history) > MAX_ATTEMPT_HISTORY:
            del self.history[0]

    def to_job(self) -> Job:
        return Job(
            id=self.id,
            name=self.name,
            queue=self.queue,
            payload=self.payload,
            state=self.state,
            due_at=self.due_at,
            enqueued_at=self.enqueued_at,
            priority=self.priority,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            key=self.key,
            schedule=self.schedule,
            fire_at=self.fire_at,
            lease_token=self.lease_token,
            lease_expires_at=self.lease_expires_at,
            worker_id=self.worker_id,
            started_at=self.started_at,
            finished_at=self.finished_at,
            result=self.result,
            error=self.error,
            progress=self.progress,
            progress_message=self.progress_message,
            cancel_requested=self.cancel_requested,
            partition=self.partition,
            tags=dict(self.tags),
            waits_for=self.waits_for,
        )


@attrs.frozen
class _KeyHold:
    """Who holds a dedup key, and for how long (see :class:`KeyScope`)."""

    job_id: str
    scope: KeyScope
    expires_at: float | None


def _matches(
    entry: _Entry,
    *,
    queue: str | None,
    state: JobState | None,
    name: str | None,
    partition: str | None,
    tags: Mapping[str, str] | None,
) -> bool:
    return (
        (queue is None or entry.queue == queue)
        and (state is None or entry.state is state)
        and (name is None or entry.name == name)
        and (partition is None or entry.partition == partition)
        and (not tags or all(entry.tags.get(key) == value for key, value in tags.items()))
    )


# Ready jobs sort by (priority, round, due_at, seq): the claim order. Delayed jobs sort
# by (due_at, seq) until they fall due. The version tells a stale heap item from a live one.
_ReadyItem = tuple[int, int, float, int, int, str]
_DelayedItem = tuple[float, int, int, str]


class MemoryBackend:
    """Jobs in this process's memory. Fast, and gone when the process ends."""

    def __init__(self) -> None:
        self._clock: Clock = SystemClock()
        self._jobs: dict[str, _Entry] = {}
        self._ready: dict[str, list[_ReadyItem]] = {}
        self._delayed: dict[str, list[_DelayedItem]] = {}
        self._running: dict[str, _Entry] = {}
        self._keys: dict[str, _KeyHold] = {}
        # Jobs queued behind a job with the same key, by that job's id: in no heap
        # until it is finished or deleted.
        self._behind: dict[str, list[str]] = {}
        # Running jobs per queue and per (queue, partition): what the limits count.
        self._running_in: dict[str, int] = {}
        self._running_in_partition: dict[tuple[str, str], int] = {}
        # Partition rounds: the queue's current round, and each partition's last one.
        self._rounds: dict[str, int] = {}
        self._last_round: dict[tuple[str, str], int] = {}
        # Claim times in each rate window ("queue:<name>", "job:<name>"), oldest first.
        self._windows: dict[str, deque[float]] = {}
        # Queues claimed under a concurrency limit: a job ending there wakes waiters.
        self._limited: set[str] = set()
        self._workers: dict[str, WorkerRecord] = {}
        self._audit: list[AuditRecord] = []
        self._paused: set[str] = set()
        self._schedules: dict[str, Schedule] = {}
        self._seq = itertools.count()
        # One event per waiter: a clock may set a waiter's event as its deadline timer
        # (ManualClock does), which must not wake, or keep waking, anyone else.
        self._waiters: set[anyio.Event] = set()

    def __repr__(self) -> str:
        return f"MemoryBackend(jobs={len(self._jobs)})"

    async def open(self, clock: Clock) -> None:
        """Use *clock* for due times and leases."""
        self._clock = clock

    async def aclose(self) -> None:
        """Nothing to release; the jobs stay for a later :meth:`open`."""

    # -- internals ------------------------------------------------------------

    def _push(self, entry: _Entry) -> None:
        entry.version += 1
        if entry.waits_for is not None:
            return  # released into a heap by _release_waiting
        if entry.due_at <= self._clock.now():
            heap = self._ready.setdefault(entry.queue, [])
            heapq.heappush(
                heap,
                (entry.priority, entry.round, entry.due_at, entry.seq, entry.version, entry.id),
            )
        else:
            delayed = self._delayed.setdefault(entry.queue, [])
            heapq.heappush(delayed, (entry.due_at, entry.seq, entry.version, entry.id))

    def _is_current(self, job_id: str, version: int) -> _Entry | None:
        entry = self._jobs.get(job_id)
        if entry is None or entry.state is not JobState.QUEUED or entry.version != version:
            return None
        return entry

    def _promote(self, queue: str, now: float) -> list[_ReadyItem]:
        """Move delayed jobs that are now due into the ready heap; return that heap."""
        ready = self._ready.setdefault(queue, [])
        delayed = self._delayed.get(queue)
        while delayed and delayed[0][0] <= now:
            due_at, seq, version, job_id = heapq.heappop(delayed)
            entry = self._is_current(job_id, version)
            if entry is not None:
                heapq.heappush(ready, (entry.priority, entry.round, due_at, seq, version, job_id))
        return ready

    def _live_head(self, ready: list[_ReadyItem]) -> _ReadyItem | None:
        """Drop stale items off the top of *ready*; return the first live one."""
        while ready and self._is_current(ready[0][5], ready[0][4]) is None:
            heapq.heappop(ready)
        return ready[0] if ready else None

    def _set_running(self, entry: _Entry) -> None:
        self._running[entry.id] = entry
        self._running_in[entry.queue] = self._running_in.get(entry.queue, 0) + 1
        if entry.partition is not None:
            slot = (entry.queue, entry.partition)
            self._running_in_partition[slot] = self._running_in_partition.get(slot, 0) + 1

    def _unset_running(self, entry: _Entry) -> None:
        if self._running.pop(entry.id, None) is None:
            return
        self._running_in[entry.queue] -= 1
        if entry.partition is not None:
            slot = (entry.queue, entry.partition)
            self._running_in_partition[slot] -= 1
            if not self._running_in_partition[slot]:
                del self._running_in_partition[slot]
        if entry.queue in self._limited:
            self._notify()

    def _holder(self, key: str, now: float) -> _Entry | None:
        """The job that holds *key* now, or ``None``.

        A window key is held until it expires, unless its job is pruned first.
        """
        hold = self._keys.get(key)
        if hold is None:
            return None
        entry = self._jobs.get(hold.job_id)
        if entry is None:
            held = False
        elif hold.scope is KeyScope.WINDOW:
            held = hold.expires_at is not None and hold.expires_at > now
        elif hold.scope is KeyScope.QUEUED:
            held = entry.state is JobState.QUEUED
        else:
            held = entry.state in ACTIVE_STATES
        if not held:
            del self._keys[key]
            return None
        return entry

    def _release_key(self, entry: _Entry) -> None:
        hold = self._keys.get(entry.key) if entry.key is not None else None
        if hold is not None and hold.job_id == entry.id and hold.scope is not KeyScope.WINDOW:
            del self._keys[entry.key]  # type: ignore[arg-type]

    def _notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def _finish(self, entry: _Entry, state: JobState, now: float) -> None:
        entry.state = state
        entry.finished_at = now
        entry.lease_token = None
        entry.lease_expires_at = None
        self._unset_running(entry)
        self._release_key(entry)
        self._release_waiting(entry.id)

    def _release_waiting(self, job_id: str) -> None:
        """Queue the jobs that waited behind *job_id* (it finished or is gone)."""
        for waiting_id in self._behind.pop(job_id, ()):
            waiting = self._jobs.get(waiting_id)
            if waiting is not None and waiting.waits_for == job_id:
                waiting.waits_for = None
                if waiting.state is JobState.QUEUED:
                    self._push(waiting)
                    self._notify()

    def _requeue(self, entry: _Entry, due_at: float) -> None:
        entry.state = JobState.QUEUED
        entry.due_at = due_at
        entry.lease_token = None
        entry.lease_expires_at = None
        entry.worker_id = None
        entry.cancel_requested = False
        # Progress belonged to the attempt that ended: a queued job shows none.
        entry.progress = None
        entry.progress_message = None
        self._unset_running(entry)
        self._push(entry)

    def _round_for(self, queue: str, partition: str | None) -> int:
        if partition is None:
            return 0
        slot = (queue, partition)
        round_ = max(self._last_round.get(slot, -1) + 1, self._rounds.get(queue, 0))
        self._last_round[slot] = round_
        return round_

    def _check_conflicts(self, jobs: Sequence[NewJob], now: float) -> None:
        """Raise before anything is written when an ``on_conflict="raise"`` job meets a holder."""
        batch: dict[str, str] = {}
        for new in jobs:
            if new.key is None:
                continue
            if new.on_conflict is OnConflict.RAISE:
                holder = batch.get(new.key)
                if holder is None:
                    entry = self._holder(new.key, now)
                    holder = None if entry is None else entry.id
                if holder is not None:
                    raise DuplicateJobError(new.key, holder)
            batch.setdefault(new.key, new.id)

    def _insert(self, new: NewJob) -> _Entry:
        if new.key is not None:
            now = self._clock.now()
            holder = self._holder(new.key, now)
            if holder is not None:
                if new.on_conflict is not OnConflict.REPLACE:
                    return holder
                if holder.state is JobState.QUEUED:
                    holder.payload = new.payload
                    holder.due_at = new.due_at
                    self._push(holder)  # a new version: the old heap item goes stale
                    return holder
                if holder.state is not JobState.RUNNING:
                    return holder  # a finished job's throttle window still holds
                behind = holder.id
            else:
                behind = None
        else:
            behind = None
        entry = _Entry(
            id=new.id,
            name=new.name,
            queue=new.queue,
            payload=new.payload,
            state=JobState.QUEUED,
            due_at=new.due_at,
            enqueued_at=new.enqueued_at,
            seq=next(self._seq),
            priority=new.priority,
            max_attempts=new.max_attempts,
            timeout=new.timeout,
            key=new.key,
            schedule=new.schedule,
            fire_at=new.fire_at,
            partition=new.partition,
            round=self._round_for(new.queue, new.partition),
            tags=dict(new.tags),
            waits_for=behind,
        )
        self._jobs[entry.id] = entry
        if behind is not None:
            self._behind.setdefault(behind, []).append(entry.id)
        if entry.key is not None:
            self._keys[entry.key] = _KeyHold(entry.id, new.key_scope, new.key_expires_at)
        self._push(entry)
        return entry

    # -- writing jobs ---------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs*; a matching active ``key`` returns the existing job.

        With a *handoff*, new jobs that would be claimed next are claimed for
        its worker right away.
        """
        self._check_conflicts(jobs, self._clock.now())
        left = dict(handoff.limits) if handoff is not None else {}
        stored: list[Job] = []
        woken = False
        for new in jobs:
            entry = self._insert(new)
            fresh = entry.id == new.id  # not a dedup match
            if handoff and fresh and left.get(new.queue) and self._next_to_claim(entry):
                left[new.queue] -= 1
                heapq.heappop(self._ready[new.queue])
                stored.append(
                    self._lease(entry, self._clock.now(), handoff.worker_id, handoff.lease)
                )
            else:
                woken = woken or fresh
                stored.append(entry.to_job())
        if woken:
            self._notify()
        return stored

    def _next_to_claim(self, entry: _Entry) -> bool:
        """Whether *entry*, just inserted, heads its queue's claim order (unpaused)."""
        if entry.queue in self._paused:
            return False
        head = self._live_head(self._promote(entry.queue, self._clock.now()))
        return head is not None and head[5] == entry.id

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue*."""
        if limit <= 0 or queue in self._paused:
            return []
        now = self._clock.now()
        ready = self._promote(queue, now)
        claimed: list[Job] = []
        while ready and len(claimed) < limit:
            item = heapq.heappop(ready)
            entry = self._is_current(item[5], item[4])
            if entry is not None:
                claimed.append(self._lease(entry, now, worker_id, lease))
        return claimed

    def _window(self, name: str, rate: RateWindow, now: float) -> deque[float]:
        window = self._windows.setdefault(name, deque())
        while window and window[0] <= now - rate.per:
            window.popleft()
        return window

    async def claim_limited(
        self, queue: str, limit: int, worker_id: str, lease: float, limits: ClaimLimits
    ) -> ClaimReply:
        """Claim up to *limit* due jobs of *queue* within *limits*."""
        if limits.binds_concurrency:
            self._limited.add(queue)
        if limit <= 0 or queue in self._paused:
            return ClaimReply(jobs=[])
        now = self._clock.now()
        ready = self._promote(queue, now)
        held: list[str] = []
        opens: list[float] = []
        cap = limit
        if limits.global_concurrency is not None:
            free = limits.global_concurrency - self._running_in.get(queue, 0)
            if free < cap:
                cap, held = max(0, free), ["global_concurrency"]
        queue_window = None
        if limits.rate is not None:
            queue_window = self._window(f"queue:{queue}", limits.rate, now)
            free = limits.rate.limit - len(queue_window)
            if free < cap:
                cap, held = max(0, free), ["rate_limit"]
                if free <= 0:
                    opens.append(queue_window[0] + limits.rate.per)
        claimed: list[Job] = []
        skipped: list[_ReadyItem] = []
        while ready and len(claimed) < cap:
            item = heapq.heappop(ready)
            entry = self._is_current(item[5], item[4])
            if entry is None:
                continue
            if (
                limits.partition_concurrency is not None
                and entry.partition is not None
                and self._running_in_partition.get((queue, entry.partition), 0)
                >= limits.partition_concurrency
            ):
                skipped.append(item)
                held.append("partition_concurrency")
                continue
            job_rate = limits.job_rates.get(entry.name)
            job_window = None
            if job_rate is not None:
                job_window = self._window(f"job:{entry.name}", job_rate, now)
                if len(job_window) >= job_rate.limit:
                    skipped.append(item)
                    held.append("job_rate_limit")
                    opens.append(job_window[0] + job_rate.per)
                    continue
            claimed.append(self._lease(entry, now, worker_id, lease))
            if queue_window is not None:
                queue_window.append(now)
            if job_window is not None:
                job_window.append(now)
        for item in skipped:
            heapq.heappush(ready, item)
        if len(claimed) >= limit or (not skipped and self._live_head(ready) is None):
            return ClaimReply(jobs=claimed)  # nothing due was held back
        if cap < limit and queue_window is not None and len(queue_window) >= limits.rate.limit:  # type: ignore[union-attr]
            opens.append(queue_window[0] + limits.rate.per)  # type: ignore[union-attr]
        return ClaimReply(
            jobs=claimed, held_by=held[0] if held else None, retry_at=min(opens, default=None)
        )

    def _lease(self, entry: _Entry, now: float, worker_id: str, lease: float) -> Job:
        entry.state = JobState.RUNNING
        entry.attempts += 1
        entry.lease_token = secrets.token_hex(16)
        entry.lease_expires_at = now + lease
        entry.worker_id = worker_id
        entry.started_at = None
        entry.progress = None
        entry.progress_message = None
        if entry.round > self._rounds.get(entry.queue, 0):
            self._rounds[entry.queue] = entry.round
        hold = self._keys.get(entry.key) if entry.key is not None else None
        if hold is not None and hold.job_id == entry.id and hold.scope is KeyScope.QUEUED:
            del self._keys[entry.key]  # type: ignore[arg-type]
        self._set_running(entry)
        return entry.to_job()

    async def heartbeat(self, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
        """Extend the leases this worker still holds."""
        expires = self._clock.now() + lease
        lost: set[str] = set()
        cancel: set[str] = set()
        for job_id, token in leases.items():
            entry = self._running.get(job_id)
            if entry is None or entry.lease_token != token:
                lost.add(job_id)
                continue
            entry.lease_expires_at = expires
            if entry.cancel_requested:
                cancel.add(job_id)
        return HeartbeatReply(lost=frozenset(lost), cancel_requested=frozenset(cancel))

    async def settle(
        self, outcomes: Sequence[Outcome], starts: Sequence[JobStart] = ()
    ) -> list[str]:
        """Apply outcomes and starts whose lease token is current; return the refused ids."""
        now = self._clock.now()
        for start in starts:
            entry = self._running.get(start.job_id)
            if entry is not None and entry.lease_token == start.lease_token:
                entry.started_at = start.started_at
        refused: list[str] = []
        requeued = False
        for outcome in outcomes:
            entry = self._running.get(outcome.job_id)
            if entry is None or entry.lease_token != outcome.lease_token:
                refused.append(outcome.job_id)
                continue
            if outcome.started_at is not None:
                entry.started_at = outcome.started_at
            kind = outcome.kind
            # The outcome's start, else one reported earlier for this attempt.
            entry.record(now, kind.value, entry.started_at, outcome.error)
            if kind is OutcomeKind.COMPLETE:
                entry.result = outcome.result
                entry.error = None
                self._finish(entry, JobState.COMPLETE, now)
            elif kind is OutcomeKind.DEAD:
                entry.error = outcome.error
                self._finish(entry, JobState.DEAD, now)
            elif kind is OutcomeKind.CANCELLED:
                entry.error = outcome.error
                self._finish(entry, JobState.CANCELLED, now)
            else:
                if kind is OutcomeKind.RELEASE:
                    entry.attempts = max(0, entry.attempts - 1)
                else:
                    entry.error = outcome.error
                self._requeue(entry, now if outcome.due_at is None else outcome.due_at)
                requeued = True
                continue
            if outcome.remove:
                self._delete(entry)
        if requeued:
            self._notify()
        return refused

    async def recover_expired(self) -> int:
        """Requeue (or kill, when out of attempts) jobs whose lease ran out."""
        now = self._clock.now()
        expired = [
            entry
            for entry in self._running.values()
            if entry.lease_expires_at is not None and entry.lease_expires_at <= now
        ]
        for entry in expired:
            entry.error = _EXPIRED_ERROR
            entry.record(now, "lease_expired", entry.started_at, _EXPIRED_ERROR)
            if entry.attempts >= entry.max_attempts:
                self._finish(entry, JobState.DEAD, now)
            else:
                self._requeue(entry, now)
        if expired:
            self._notify()
        return len(expired)

    async def set_progress(
        self, job_id: str, lease_token: str, progress: float, message: str | None
    ) -> bool:
        """Store progress for a job this worker still holds."""
        entry = self._running.get(job_id)
        if entry is None or entry.lease_token != lease_token:
            return False
        entry.progress = progress
        entry.progress_message = message
        return True

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job, or flag a running one."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if entry.state is JobState.QUEUED:
            self._finish(entry, JobState.CANCELLED, self._clock.now())
        elif entry.state is JobState.RUNNING:
            entry.cancel_requested = True
        return entry.to_job()

    async def retry_dead(self, job_id: str, due_at: float) -> Job | None:
        """Queue a dead job again with fresh attempts."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if entry.state is JobState.DEAD:
            if entry.key is not None:
                holder = self._holder(entry.key, self._clock.now())
                if holder is not None and holder is not entry:
                    # Another job took the key meanwhile: reviving would break dedup.
                    return entry.to_job()
                if holder is None:
                    self._keys[entry.key] = _KeyHold(entry.id, KeyScope.ACTIVE, None)
            entry.attempts = 0
            entry.finished_at = None
            self._requeue(entry, due_at)
            self._notify()
        return entry.to_job()

    async def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue."""
        if paused:
            self._paused.add(queue)
        else:
            self._paused.discard(queue)
            self._notify()

    async def prune(self, cutoffs: Mapping[JobState, float]) -> int:
        """Delete finished jobs older than their state's cutoff."""
        doomed = [
            entry.id
            for entry in self._jobs.values()
            if entry.state in FINISHED_STATES
            and entry.state in cutoffs
            and entry.finished_at is not None
            and entry.finished_at < cutoffs[entry.state]
        ]
        for job_id in doomed:
            del self._jobs[job_id]
        return len(doomed)

    def _delete(self, entry: _Entry) -> None:
        hold = self._keys.get(entry.key) if entry.key is not None else None
        if hold is not None and hold.job_id == entry.id:
            del self._keys[entry.key]  # type: ignore[arg-type]  # a window hold too
        # Its heap items go stale with it (``_is_current`` finds no job).
        del self._jobs[entry.id]
        self._release_waiting(entry.id)

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job that is not running."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.state is JobState.RUNNING:
            return False
        self._delete(entry)
        return True

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
        """Delete the matching jobs that are not running."""
        doomed = [
            entry
            for entry in self._jobs.values()
            if entry.state is not JobState.RUNNING
            and _matches(entry, queue=queue, state=state, name=name, partition=partition, tags=tags)
            and (
                finished_before is None
                or (entry.finished_at is not None and entry.finished_at < finished_before)
            )
        ]
        for entry in doomed:
            self._delete(entry)
        return len(doomed)

    # -- workers and the audit trail --------------------------------------------

    async def register_worker(self, record: WorkerRecord) -> None:
        """Insert or replace a worker's record."""
        self._workers[record.id] = record

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        self._workers.pop(worker_id, None)

    async def list_workers(self, seen_since: float) -> list[WorkerRecord]:
        """Return the workers seen since *seen_since*; forget the others."""
        for worker_id in [w for w, r in self._workers.items() if r.last_seen < seen_since]:
            del self._workers[worker_id]
        return [self._workers[worker_id] for worker_id in sorted(self._workers)]

    async def record_audit(self, record: AuditRecord) -> None:
        """Keep one audit entry."""
        self._audit.append(record)

    async def list_audit(self, limit: int = 100, before: float | None = None) -> list[AuditRecord]:
        """Return the newest entries first."""
        entries = [r for r in reversed(self._audit) if before is None or r.at < before]
        entries.sort(key=lambda record: record.at, reverse=True)  # stable: newest kept first
        return entries[:limit]

    async def prune_audit(self, before: float) -> int:
        """Drop entries older than *before*."""
        kept = [record for record in self._audit if record.at >= before]
        dropped = len(self._audit) - len(kept)
        self._audit = kept
        return dropped

    # -- reading --------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job."""
        entry = self._jobs.get(job_id)
        return None if entry is None else entry.to_job()

    async def get_attempts(self, job_id: str) -> list[Attempt]:
        """Return a job's attempt history, oldest first."""
        entry = self._jobs.get(job_id)
        return [] if entry is None else list(entry.history)

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
        """Return a page of matching jobs, newest first."""
        below = None
        if after is not None:
            cursor = self._jobs.get(after)
            if cursor is None:
                return []
            below = cursor.seq
        matches = [
            entry
            for entry in self._jobs.values()
            if _matches(entry, queue=queue, state=state, name=name, partition=partition, tags=tags)
            and (schedule is None or entry.schedule == schedule)
            and (enqueued_after is None or entry.enqueued_at >= enqueued_after)
            and (enqueued_before is None or entry.enqueued_at < enqueued_before)
            and (below is None or entry.seq < below)
        ]
        matches.sort(key=lambda entry: entry.seq, reverse=True)
        return [entry.to_job() for entry in matches[offset : offset + limit]]

    async def queue_stats(self, *, partition: str | None = None) -> list[QueueStats]:
        """Count jobs per queue and state (of one partition, when given)."""
        now = self._clock.now()
        counts: dict[str, dict[JobState, int]] = {queue: {} for queue in self._paused}
        claimed: dict[str, int] = {}
        delayed: dict[str, int] = {}
        for entry in self._jobs.values():
            if partition is not None and entry.partition != partition:
                continue
            per_state = counts.setdefault(entry.queue, {})
            per_state[entry.state] = per_state.get(entry.state, 0) + 1
            if entry.state is JobState.RUNNING and entry.started_at is None:
                claimed[entry.queue] = claimed.get(entry.queue, 0) + 1
            elif entry.state is JobState.QUEUED and entry.due_at > now:
                delayed[entry.queue] = delayed.get(entry.queue, 0) + 1
        return [
            QueueStats(
                queue=queue,
                counts=per_state,
                paused=queue in self._paused,
                claimed=claimed.get(queue, 0),
                delayed=delayed.get(queue, 0),
            )
            for queue, per_state in sorted(counts.items())
        ]

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest due time among unpaused *queues*."""
        now = self._clock.now()
        earliest: float | None = None
        for queue in queues:
            if queue in self._paused:
                continue
            ready = self._promote(queue, now)
            due_times = [item[2] for item in ready if self._is_current(item[5], item[4])]
            delayed = self._delayed.get(queue, [])
            while delayed and self._is_current(delayed[0][3], delayed[0][2]) is None:
                heapq.heappop(delayed)
            if delayed:
                due_times.append(delayed[0][0])
            if due_times and (earliest is None or min(due_times) < earliest):
                earliest = min(due_times)
        return earliest

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Wait for an enqueue (or any requeue) in this backend, *wakeup*, or *deadline*."""
        wakeup = wakeup or anyio.Event()
        self._waiters.add(wakeup)
        try:
            await self._clock.wait(wakeup, deadline)
        finally:
            self._waiters.discard(wakeup)

    # -- schedules ------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace a schedule, keeping its timing when the trigger is unchanged."""
        existing = self._schedules.get(schedule.name)
        if existing is not None and existing.trigger == schedule.trigger:
            schedule = attrs.evolve(
                schedule,
                next_fire_at=existing.next_fire_at,
                last_fire_at=existing.last_fire_at,
                paused=existing.paused,
            )
        self._schedules[schedule.name] = schedule
        return schedule

    async def get_schedule(self, name: str) -> Schedule | None:
        """Return one schedule."""
        return self._schedules.get(name)

    async def list_schedules(self) -> list[Schedule]:
        """Return every schedule by name."""
        return [self._schedules[name] for name in sorted(self._schedules)]

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule."""
        return self._schedules.pop(name, None) is not None

    async def pause_schedule(self, name: str, paused: bool) -> Schedule | None:
        """Pause or resume a schedule."""
        existing = self._schedules.get(name)
        if existing is None:
            return None
        updated = attrs.evolve(existing, paused=paused)
        self._schedules[name] = updated
        return updated

    async def fire_schedule(
        self,
        name: str,
        expected_fire_at: float,
        next_fire_at: float | None,
        jobs: Sequence[NewJob],
    ) -> list[Job] | None:
        """Enqueue a tick's jobs if nobody fired it yet."""
        existing = self._schedules.get(name)
        if existing is None or existing.paused or existing.next_fire_at != expected_fire_at:
            return None
        self._schedules[name] = attrs.evolve(
            existing, next_fire_at=next_fire_at, last_fire_at=expected_fire_at
        )
        return await self.enqueue(jobs)
