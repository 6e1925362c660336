"""The in-process backend: dictionaries and heaps, for tests and single-process apps.

Nothing survives the process. Every method runs without awaiting in between,
so each is atomic with respect to other tasks, as the protocol requires.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Collection, Mapping, Sequence

import anyio
import attrs

from .._clock import Clock, SystemClock
from .._models import (
    FINISHED_STATES,
    ErrorInfo,
    Handoff,
    Job,
    JobState,
    NewJob,
    Outcome,
    OutcomeKind,
    QueueStats,
    Schedule,
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
    # Bumped whenever the entry is (re)queued, so older heap items are known stale.
    version: int = 0

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
        )


# Ready jobs sort by (priority, due_at, seq): the claim order. Delayed jobs sort by
# (due_at, seq) until they fall due. The version tells a stale heap item from a live one.
_ReadyItem = tuple[int, float, int, int, str]
_DelayedItem = tuple[float, int, int, str]


class MemoryBackend:
    """Jobs in this process's memory. Fast, and gone when the process ends."""

    def __init__(self) -> None:
        self._clock: Clock = SystemClock()
        self._jobs: dict[str, _Entry] = {}
        self._ready: dict[str, list[_ReadyItem]] = {}
        self._delayed: dict[str, list[_DelayedItem]] = {}
        self._running: dict[str, _Entry] = {}
        self._keys: dict[str, str] = {}
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
        if entry.due_at <= self._clock.now():
            heap = self._ready.setdefault(entry.queue, [])
            heapq.heappush(heap, (entry.priority, entry.due_at, entry.seq, entry.version, entry.id))
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
                heapq.heappush(ready, (entry.priority, due_at, seq, version, job_id))
        return ready

    def _notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    def _finish(self, entry: _Entry, state: JobState, now: float) -> None:
        entry.state = state
        entry.finished_at = now
        entry.lease_token = None
        entry.lease_expires_at = None
        self._running.pop(entry.id, None)
        if entry.key is not None and self._keys.get(entry.key) == entry.id:
            del self._keys[entry.key]

    def _requeue(self, entry: _Entry, due_at: float) -> None:
        entry.state = JobState.QUEUED
        entry.due_at = due_at
        entry.lease_token = None
        entry.lease_expires_at = None
        entry.worker_id = None
        entry.cancel_requested = False
        self._running.pop(entry.id, None)
        self._push(entry)

    def _insert(self, new: NewJob) -> _Entry:
        if new.key is not None:
            existing = self._keys.get(new.key)
            if existing is not None:
                return self._jobs[existing]
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
        )
        self._jobs[entry.id] = entry
        if entry.key is not None:
            self._keys[entry.key] = entry.id
        self._push(entry)
        return entry

    # -- writing jobs ---------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs*; a matching active ``key`` returns the existing job.

        With a *handoff*, new jobs that would be claimed next are claimed for
        its worker right away.
        """
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
        ready = self._promote(entry.queue, self._clock.now())
        while ready and self._is_current(ready[0][4], ready[0][3]) is None:
            heapq.heappop(ready)  # a stale item: drop it so the head is a live job
        return bool(ready) and ready[0][4] == entry.id

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue*."""
        if limit <= 0 or queue in self._paused:
            return []
        now = self._clock.now()
        ready = self._promote(queue, now)
        claimed: list[Job] = []
        while ready and len(claimed) < limit:
            _, _, _, version, job_id = heapq.heappop(ready)
            entry = self._is_current(job_id, version)
            if entry is not None:
                claimed.append(self._lease(entry, now, worker_id, lease))
        return claimed

    def _lease(self, entry: _Entry, now: float, worker_id: str, lease: float) -> Job:
        entry.state = JobState.RUNNING
        entry.attempts += 1
        entry.lease_token = secrets.token_hex(16)
        entry.lease_expires_at = now + lease
        entry.worker_id = worker_id
        entry.started_at = now
        entry.progress = None
        entry.progress_message = None
        self._running[entry.id] = entry
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

    async def settle(self, outcomes: Sequence[Outcome]) -> list[str]:
        """Apply outcomes whose lease token is current; return the refused ids."""
        now = self._clock.now()
        refused: list[str] = []
        requeued = False
        for outcome in outcomes:
            entry = self._running.get(outcome.job_id)
            if entry is None or entry.lease_token != outcome.lease_token:
                refused.append(outcome.job_id)
                continue
            kind = outcome.kind
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
                if entry.key in self._keys:
                    # An active job took the key meanwhile: reviving would break dedup.
                    return entry.to_job()
                self._keys[entry.key] = entry.id
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

    # -- reading --------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job."""
        entry = self._jobs.get(job_id)
        return None if entry is None else entry.to_job()

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        schedule: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Return a page of matching jobs, newest first."""
        matches = [
            entry
            for entry in self._jobs.values()
            if (queue is None or entry.queue == queue)
            and (state is None or entry.state is state)
            and (name is None or entry.name == name)
            and (schedule is None or entry.schedule == schedule)
        ]
        matches.sort(key=lambda entry: entry.seq, reverse=True)
        return [entry.to_job() for entry in matches[offset : offset + limit]]

    async def queue_stats(self) -> list[QueueStats]:
        """Count jobs per queue and state."""
        counts: dict[str, dict[JobState, int]] = {queue: {} for queue in self._paused}
        for entry in self._jobs.values():
            per_state = counts.setdefault(entry.queue, {})
            per_state[entry.state] = per_state.get(entry.state, 0) + 1
        return [
            QueueStats(queue=queue, counts=per_state, paused=queue in self._paused)
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
            due_times = [item[1] for item in ready if self._is_current(item[4], item[3])]
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
