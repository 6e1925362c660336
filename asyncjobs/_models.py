"""The records that move between the runtime and the backends.

Every record is a frozen attrs class; a state change makes a new record.
Times are float seconds since the Unix epoch (see :mod:`asyncjobs._clock`).
Reprs (and so ``str()``) show payloads and results by size only, as
``payload=<31 bytes>``: they may hold secrets, and reprs end up in logs.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping

import attrs

__all__ = [
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "MAX_ATTEMPT_HISTORY",
    "Attempt",
    "AuditRecord",
    "ClaimLimits",
    "ClaimReply",
    "ErrorInfo",
    "Handoff",
    "Job",
    "JobStart",
    "JobState",
    "KeyScope",
    "NewJob",
    "OnConflict",
    "Outcome",
    "OutcomeKind",
    "QueueStats",
    "RateWindow",
    "Schedule",
    "WorkerRecord",
    "new_job_id",
    "size_repr",
    "tags_repr",
]


def new_job_id(now: float) -> str:
    """A fresh job id: millisecond time first, so ids sort roughly by enqueue time,
    then 80 random bits."""
    return f"{int(now * 1000):012x}{secrets.token_hex(10)}"


def size_repr(value: bytes | None) -> str:
    """Format encoded data for a repr by its size only, e.g. ``<31 bytes>``.

    Payloads and results may hold secrets (passwords, tokens), and reprs end up
    in logs, tracebacks and debuggers: a record shows how big they are, never
    what they say.
    """
    if value is None:
        return "None"
    return f"<{len(value)} byte{'' if len(value) == 1 else 's'}>"


def tags_repr(tags: Mapping[str, str] | None) -> str:
    """Format tags for a repr by their number only: like arguments, they stay out of logs."""
    count = len(tags) if tags else 0
    return f"<{count} tag{'' if count == 1 else 's'}>"


class JobState(enum.StrEnum):
    """Where a job is in its life.

    ``queued`` covers jobs due now and jobs due later (delayed or waiting for
    a retry); compare :attr:`Job.due_at` with the clock to tell them apart.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: States a job can still leave: a dedup ``key`` only matches jobs in these.
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
#: States a job never leaves (except ``dead``, through an explicit retry).
FINISHED_STATES = frozenset({JobState.COMPLETE, JobState.DEAD, JobState.CANCELLED})


class KeyScope(enum.StrEnum):
    """How long a job holds its dedup ``key`` (a throttle holds it for a time instead)."""

    #: while the job waits to run: once claimed, a new job may take the key.
    QUEUED = "queued"
    #: while the job is queued or running (the default).
    ACTIVE = "active"
    #: until ``key_expires_at``, whatever the job's state (a throttle).
    WINDOW = "window"


class OnConflict(enum.StrEnum):
    """What an enqueue does when its ``key`` is held by another job."""

    #: store nothing; return the holder (the default).
    RETURN = "return"
    #: a queued holder takes the new payload and due time (debounce); a running
    #: holder is left alone and the new job is queued behind it, taking the key
    #: and waiting until the holder is finished (``Job.waits_for``).
    REPLACE = "replace"
    #: store nothing; the store raises :class:`~asyncjobs.DuplicateJobError`.
    RAISE = "raise"


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """Why an attempt failed: the exception's type, message and formatted traceback."""

    type: str
    message: str
    traceback: str | None = None


@attrs.frozen(kw_only=True)
class NewJob:
    """A job as the runtime hands it to the store's ``enqueue``: validated and encoded.

    :ivar id: chosen by the runtime (a random hex string), kept unless a dedup
        ``key`` matches an active job, in which case that job is returned instead.
    :ivar payload: the encoded arguments (see :mod:`asyncjobs._serialization`).
    :ivar fire_at: for a job fired by a schedule, the tick it is for (kept as it
        is through retries and crash recovery, which move ``due_at``).
    """

    id: str
    name: str
    queue: str
    payload: bytes = attrs.field(repr=size_repr)
    due_at: float
    enqueued_at: float
    priority: int = 0
    max_attempts: int = 3
    timeout: float | None = None
    key: str | None = None
    schedule: str | None = None
    fire_at: float | None = None
    #: the partition (e.g. a tenant) for round-robin claims and per-partition limits.
    partition: str | None = None
    key_scope: KeyScope = KeyScope.ACTIVE
    #: for ``KeyScope.WINDOW``: when the key is free again.
    key_expires_at: float | None = None
    on_conflict: OnConflict = OnConflict.RETURN
    #: a small str -> str map (tenant, correlation id), kept with the job.
    tags: Mapping[str, str] = attrs.field(factory=dict, repr=tags_repr, hash=False)

    def queued(self) -> Job:
        """The record a store holds right after inserting this job: queued, never attempted."""
        return Job(
            id=self.id,
            name=self.name,
            queue=self.queue,
            payload=self.payload,
            state=JobState.QUEUED,
            due_at=self.due_at,
            enqueued_at=self.enqueued_at,
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            key=self.key,
            schedule=self.schedule,
            fire_at=self.fire_at,
            partition=self.partition,
            tags=self.tags,
        )


@attrs.frozen(kw_only=True)
class Handoff:
    """A worker's offer to take new jobs straight from the enqueue call.

    When the enqueueing process has idle workers, a new job that is due now,
    in an unpaused queue, with no queued job ahead of it in claim order, is
    stored already claimed by ``worker_id`` (as :meth:`~asyncjobs.backends.JobLifecycle.claim` would
    have claimed it a moment later), saving the claim's round trip.

    :ivar limits: per queue, the most new jobs the worker takes this way.
    """

    worker_id: str
    lease: float
    limits: Mapping[str, int]


@attrs.frozen(kw_only=True)
class Job:
    """A job as the store holds it.

    :ivar priority: lower values run first; ties run by due time, then enqueue order.
    :ivar attempts: attempts started so far (a claim counts one).
    :ivar lease_token: the fencing token of the current claim while ``running``.
    :ivar lease_expires_at: when a running job's lease runs out without a heartbeat.
    :ivar started_at: when the handler of the current (or last) attempt started;
        ``None`` while a running job is claimed but its handler has not started
        (it waits for a free worker), until its worker reports the start.
    :ivar result: the encoded return value of a complete job.
    :ivar error: the last failure, kept while the job retries and once it is dead.
    :ivar schedule: the name of the schedule that fired this job, if any.
    :ivar fire_at: the schedule tick this job is for (its fire time, or the time
        of a manual trigger); never changed by claims, retries or recovery.
    :ivar waits_for: the id of the job with the same key that this one is queued
        behind (``on_conflict="replace"`` met it running): this job is not
        claimed before that one is finished or deleted, then runs at ``due_at``.
    """

    id: str
    name: str
    queue: str
    payload: bytes = attrs.field(repr=size_repr)
    state: JobState
    due_at: float
    enqueued_at: float
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 3
    timeout: float | None = None
    key: str | None = None
    schedule: str | None = None
    fire_at: float | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    worker_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = attrs.field(default=None, repr=size_repr)
    error: ErrorInfo | None = None
    progress: float | None = None
    progress_message: str | None = None
    cancel_requested: bool = False
    partition: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict, repr=tags_repr, hash=False)
    waits_for: str | None = None


class OutcomeKind(enum.StrEnum):
    """What the dispatcher decided about a finished attempt."""

    #: the handler returned; store the result.
    COMPLETE = "complete"
    #: the attempt failed; run again at ``due_at`` (the attempt counts).
    RETRY = "retry"
    #: hand the job back: queued at ``due_at``, the attempt does not count
    #: (graceful shutdown, a snooze).
    RELEASE = "release"
    #: no more attempts: the job is dead with ``error``.
    DEAD = "dead"
    #: the job was cancelled while it ran.
    CANCELLED = "cancelled"


@attrs.frozen(kw_only=True)
class Outcome:
    """The end of one attempt, reported with the lease token of the claim."""

    job_id: str
    lease_token: str
    kind: OutcomeKind
    result: bytes | None = attrs.field(default=None, repr=size_repr)
    due_at: float | None = None
    error: ErrorInfo | None = None
    #: when the handler started (written as the job's ``started_at``); ``None``
    #: for an attempt whose handler never started.
    started_at: float | None = None
    #: delete the job instead of keeping it finished (retention 0 for its state).
    remove: bool = False


#: How many attempts a store keeps in a job's history (the latest ones).
MAX_ATTEMPT_HISTORY = 25


@attrs.frozen(kw_only=True)
class Attempt:
    """One attempt of a job, as the store recorded it when the attempt ended.

    :ivar number: the attempt's number (1 for the first).
    :ivar outcome: the :class:`OutcomeKind` value, or ``"lease_expired"`` when
        crash recovery took the job back from a worker that stopped heartbeating.
    """

    number: int
    worker_id: str | None
    started_at: float | None
    finished_at: float
    outcome: str
    error_type: str | None = None
    error_message: str | None = None


@attrs.frozen(kw_only=True)
class WorkerRecord:
    """A live runtime as the store keeps it: its id, when it was last seen, and its
    description (encoded by the runtime; the store does not read it)."""

    id: str
    last_seen: float
    data: bytes = attrs.field(repr=size_repr)


@attrs.frozen(kw_only=True)
class AuditRecord:
    """One operator action as the store keeps it: when, and the encoded entry."""

    at: float
    data: bytes = attrs.field(repr=size_repr)


@attrs.frozen(kw_only=True)
class JobStart:
    """A worker's report that the handler of a claimed job started."""

    job_id: str
    lease_token: str
    started_at: float


@attrs.frozen(kw_only=True)
class RateWindow:
    """At most ``limit`` claims in any ``per`` seconds (a sliding window)."""

    limit: int
    per: float


@attrs.frozen(kw_only=True)
class ClaimLimits:
    """Cluster-wide limits the store enforces atomically at claim time.

    :ivar global_concurrency: at most this many of the queue's jobs ``running``
        (claimed by any worker), store-wide.
    :ivar partition_concurrency: at most this many ``running`` per partition of
        the queue (jobs without a partition are not limited by it).
    :ivar rate: claims from the queue, store-wide, in a sliding window.
    :ivar job_rates: per job name, claims of that name (from any queue).
    """

    global_concurrency: int | None = None
    partition_concurrency: int | None = None
    rate: RateWindow | None = None
    job_rates: Mapping[str, RateWindow] = attrs.field(factory=dict)

    @property
    def binds_concurrency(self) -> bool:
        """Whether a job ending may let a held job start (the store wakes on settle)."""
        return self.global_concurrency is not None or self.partition_concurrency is not None


@attrs.frozen(kw_only=True)
class ClaimReply:
    """What a limited claim took, and what held the rest back.

    :ivar jobs: the claimed jobs, as :meth:`~asyncjobs.backends.JobLifecycle.claim` returns them.
    :ivar held_by: when due jobs were left unclaimed because of a limit (and
        fewer than asked were claimed): ``"global_concurrency"``,
        ``"partition_concurrency"``, ``"rate_limit"`` or ``"job_rate_limit"``
        (the first that held a job back); else ``None``.
    :ivar retry_at: for a rate limit: when its window lets the next job in
        (the earliest over the limits that held jobs back); ``None`` when only
        a running job's end can free a slot.
    """

    jobs: list[Job]
    held_by: str | None = None
    retry_at: float | None = None


@attrs.frozen(kw_only=True)
class QueueStats:
    """Counts of one queue's jobs by state, as read from the store.

    :ivar claimed: of the ``running`` count, the jobs claimed whose handler has
        not started yet (waiting in a worker for a free slot).
    :ivar delayed: of the ``queued`` count, the jobs due later.
    :ivar held_by: the limit that held the queue back at this process's last
        claim (filled in by the runtime, not the store).
    """

    queue: str
    counts: Mapping[JobState, int]
    paused: bool = False
    claimed: int = 0
    delayed: int = 0
    held_by: str | None = None

    @property
    def started(self) -> int:
        """Running jobs whose handler started."""
        return self.count(JobState.RUNNING) - self.claimed

    @property
    def waiting(self) -> int:
        """Queued jobs due now."""
        return self.count(JobState.QUEUED) - self.delayed

    def count(self, state: JobState) -> int:
        """Return the number of jobs in *state* (0 when none)."""
        return self.counts.get(state, 0)


@attrs.frozen(kw_only=True)
class Schedule:
    """A stored schedule: which job to enqueue, when, and how to catch up.

    :ivar trigger: the trigger's portable description (see ``_triggers``), JSON text.
    :ivar payload: the encoded arguments every fired job gets.
    :ivar next_fire_at: the next fire time; the store advances it atomically
        with the fired job, which is what makes a tick fire once across processes.
    :ivar misfire: ``"skip"``, ``"once"`` or ``"all"``: what to do with fire
        times missed by more than ``grace`` seconds.
    :ivar overlap: whether a fire may start while the previous run is still active.
    """

    name: str
    job_name: str
    queue: str
    trigger: str
    payload: bytes = attrs.field(repr=size_repr)
    next_fire_at: float | None
    last_fire_at: float | None = None
    misfire: str = "once"
    grace: float = 60.0
    overlap: bool = True
    paused: bool = False
    priority: int = 0
    max_attempts: int = 3
    timeout: float | None = None
