"""A snapshot of what the console shows, read from the store.

Everything here comes from the backend (counts, running jobs, dead jobs,
schedules), not from this process's memory, so a snapshot taken by
``asyncjobs status`` in another terminal shows the same as the worker's own
console. Rates need two snapshots: :class:`RateTracker` diffs the counts.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from ._models import Job, JobState, Schedule
from ._resilience import StoreStatus

if TYPE_CHECKING:
    from ._runtime import JobRuntime

__all__ = [
    "DeadJob",
    "Latency",
    "QueueSnapshot",
    "RateTracker",
    "Rates",
    "RunningJob",
    "ScheduleSnapshot",
    "Snapshot",
    "describe_trigger",
    "format_duration",
    "store_unreachable",
    "take_snapshot",
]

# How many recently completed jobs the latency figures are computed from.
_LATENCY_SAMPLE = 50


@attrs.frozen(kw_only=True)
class QueueSnapshot:
    """One queue: counts by state as stored, and this process's limit for it.

    :ivar limit: how many of the queue's jobs this process runs at once;
        ``None`` when this process runs none (an ``enqueue`` runtime, or a
        queue only other processes serve).
    :ivar due: queued jobs due now; ``None`` when not counted.
    :ivar delayed: queued jobs due later (delays, retry backoff); ``None`` likewise.
    :ivar claimed: of the ``running`` count, jobs claimed whose handler has not
        started (waiting in a worker for a free slot): not counted as running.
    :ivar held_by: the limit that held the queue back at this process's last claim.
    """

    name: str
    counts: Mapping[JobState, int]
    paused: bool = False
    limit: int | None = None
    due: int | None = None
    delayed: int | None = None
    claimed: int = 0
    held_by: str | None = None

    def count(self, state: JobState) -> int:
        """Return the number of jobs in *state* (0 when none)."""
        return self.counts.get(state, 0)

    @property
    def running(self) -> int:
        """Jobs whose handler is running (claimed ones waiting for a worker excluded)."""
        return self.count(JobState.RUNNING) - self.claimed


@attrs.frozen(kw_only=True)
class RunningJob:
    """A job some worker is running, as the store saw it.

    :ivar elapsed: seconds since the current attempt started (``None`` if unknown).
    """

    id: str
    name: str
    queue: str
    worker_id: str | None
    attempt: int
    max_attempts: int
    progress: float | None
    progress_message: str | None
    started_at: float | None
    elapsed: float | None


@attrs.frozen(kw_only=True)
class DeadJob:
    """A job that ran out of attempts (or failed permanently), with its last error."""

    id: str
    name: str
    queue: str
    attempts: int
    error_type: str | None
    error_message: str | None
    finished_at: float | None


@attrs.frozen(kw_only=True)
class ScheduleSnapshot:
    """A stored schedule and when it fires next.

    :ivar trigger: a short human description, e.g. ``cron '0 2 * * *' Europe/Berlin``.
    """

    name: str
    job_name: str
    queue: str
    trigger: str
    next_fire_at: float | None
    last_fire_at: float | None
    paused: bool


@attrs.frozen(kw_only=True)
class Rates:
    """Jobs finished per second over the tracker's window, overall and per queue.

    ``failed`` counts jobs that went dead; retries are not failures yet.
    """

    window: float
    completed: float
    failed: float
    completed_by_queue: Mapping[str, float] = attrs.field(factory=dict)
    failed_by_queue: Mapping[str, float] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Latency:
    """Timings of recently completed jobs, in seconds.

    :ivar wait_median: median of ``started_at - due_at``: how long a due job
        waited for a worker (for a retried job, since its retry was due).
    :ivar wait_max: the longest such wait in the sample.
    :ivar run_median: median of ``finished_at - started_at`` (the last attempt).
    :ivar sample: how many completed jobs the figures come from.
    """

    wait_median: float
    wait_max: float
    run_median: float
    sample: int


@attrs.frozen(kw_only=True)
class Snapshot:
    """Everything the console shows, at one moment, read from the store.

    :ivar taken_at: the runtime clock's time when the snapshot was taken.
    :ivar backend: the backend's description (never holds a password).
    :ivar running_total: how many jobs are running in all; :attr:`running`
        may hold fewer (it is capped).
    :ivar rates: ``None`` until a :class:`RateTracker` has seen two snapshots.
    :ivar latency: ``None`` when no recently completed job has timings.
    :ivar store: whether the store answers (see :attr:`JobRuntime.store_status`);
        while it does not, the figures are those of the last snapshot read.
    """

    taken_at: float
    backend: str
    worker_id: str | None
    queues: tuple[QueueSnapshot, ...]
    running: tuple[RunningJob, ...]
    running_total: int
    dead: tuple[DeadJob, ...]
    schedules: tuple[ScheduleSnapshot, ...]
    rates: Rates | None = None
    latency: Latency | None = None
    store: StoreStatus = attrs.field(factory=StoreStatus)

    def queue(self, name: str) -> QueueSnapshot | None:
        """Return the queue called *name*, or ``None``."""
        return next((queue for queue in self.queues if queue.name == name), None)

    def total(self, state: JobState) -> int:
        """Return the number of jobs in *state* over every queue."""
        return sum(queue.count(state) for queue in self.queues)


class RateTracker:
    """Turns the stored counts of finished jobs into rates, between snapshots.

    The store keeps counts, not events, so a rate is the growth of a count
    divided by the time between two observations. Counts also fall (pruning
    deletes finished jobs, a retried dead job leaves ``dead``); a fall is taken
    as no growth, so the totals kept here only ever rise.

    :param window: seconds of history a rate is averaged over; older
        observations are dropped (one older than the window is kept as the base).
    """

    def __init__(self, window: float = 10.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be positive seconds, not {window!r}")
        self.window = float(window)
        self._last: dict[str, int] | None = None
        self._totals: dict[str, int] = {}
        self._history: deque[tuple[float, dict[str, int]]] = deque()

    def observe(self, at: float, counts: Mapping[str, int]) -> dict[str, float] | None:
        """Record *counts* (counter name -> current stored count) seen at time *at*.

        :param at: the time of the observation, seconds (the runtime clock).
        :param counts: the current value of each counter; a counter missing
            here counts as 0.
        :returns: each counter's growth per second over the window, or ``None``
            on the first observation (or when no time has passed since the base).
        """
        last = self._last if self._last is not None else dict(counts)
        for name in set(last) | set(counts):
            grown = counts.get(name, 0) - last.get(name, 0)
            self._totals[name] = self._totals.get(name, 0) + max(0, grown)
        self._last = dict(counts)
        self._history.append((at, dict(self._totals)))
        # Keep exactly one observation at or before the window's start as the base.
        while len(self._history) > 2 and self._history[1][0] <= at - self.window:
            self._history.popleft()
        base_at, base_totals = self._history[0]
        elapsed = at - base_at
        if elapsed <= 0:
            return None
        return {
            name: (total - base_totals.get(name, 0)) / elapsed
            for name, total in self._totals.items()
        }

    def elapsed(self) -> float:
        """Return the seconds the current rates are measured over (0 before two observations)."""
        if len(self._history) < 2:
            return 0.0
        return self._history[-1][0] - self._history[0][0]


def describe_trigger(text: str) -> str:
    """Describe a stored trigger (its JSON text) in a few words, for display.

    Never raises: text that is not a known trigger is shown as it is.
    """
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if not isinstance(document, dict):
        return text
    if document.get("type") == "cron":
        zone = document.get("timezone")
        suffix = "" if zone in (None, "UTC") else f" {zone}"
        return f"cron '{document.get('expression')}'{suffix}"
    if document.get("type") == "interval":
        every = document.get("every")
        if isinstance(every, int | float):
            return f"every {format_duration(float(every))}"
    return text


def format_duration(value: float) -> str:
    """Format seconds compactly: ``850ms``, ``4.2s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    value = max(0.0, value)
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s".replace(".0s", "s")
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


async def take_snapshot(
    runtime: JobRuntime,
    *,
    rates: RateTracker | None = None,
    max_running: int = 20,
    max_dead: int = 5,
) -> Snapshot:
    """Read what the console shows from *runtime*'s store.

    Works from any process that shares the backend, whatever its role.

    :param runtime: a started runtime.
    :param rates: a tracker kept between calls; pass the same one each time to
        get :attr:`Snapshot.rates` from the second snapshot on.
    :param max_running: at most this many running jobs are listed.
    :param max_dead: at most this many recently dead jobs are listed.
    :raises NotRunningError: when the runtime is not started.
    """
    stats = await runtime.queue_stats()
    now = runtime.clock.now()
    # A limit only means something for a process that runs jobs.
    limits: Mapping[str, int] = runtime.queues if runtime.role != "enqueue" else {}
    counts = {queue.queue: dict(queue.counts) for queue in stats}
    by_name = {queue.queue: queue for queue in stats}
    for name in limits:
        counts.setdefault(name, {})

    def queue_snapshot(name: str, per_state: Mapping[JobState, int]) -> QueueSnapshot:
        entry = by_name.get(name)
        delayed = entry.delayed if entry is not None else 0
        return QueueSnapshot(
            name=name,
            counts=per_state,
            paused=entry is not None and entry.paused,
            limit=limits.get(name),
            due=per_state.get(JobState.QUEUED, 0) - delayed,
            delayed=delayed,
            claimed=entry.claimed if entry is not None else 0,
            held_by=entry.held_by if entry is not None else None,
        )

    queues = tuple(queue_snapshot(name, per_state) for name, per_state in sorted(counts.items()))
    running_total = sum(queue.running for queue in queues)
    running = (
        [
            job
            for job in await runtime.list_jobs(state=JobState.RUNNING, limit=max_running)
            if job.started_at is not None
        ]
        if running_total
        else []
    )
    dead_total = sum(per_state.get(JobState.DEAD, 0) for per_state in counts.values())
    dead = await runtime.list_jobs(state=JobState.DEAD, limit=max_dead) if dead_total else []
    complete_total = sum(per_state.get(JobState.COMPLETE, 0) for per_state in counts.values())
    completed = (
        await runtime.list_jobs(state=JobState.COMPLETE, limit=_LATENCY_SAMPLE)
        if complete_total
        else []
    )
    schedules = await runtime.schedules.list()

    return Snapshot(
        taken_at=now,
        backend=repr(runtime.backend),
        worker_id=runtime.worker_id if runtime.role != "enqueue" else None,
        queues=queues,
        running=tuple(_running_job(job, now) for job in _by_start(running)),
        running_total=running_total,
        dead=tuple(_dead_job(job) for job in _by_finish(dead)),
        schedules=tuple(_schedule(schedule) for schedule in schedules),
        rates=_rates(rates, now, queues) if rates is not None else None,
        latency=_latency(completed),
        store=runtime.store_status,
    )


def store_unreachable(
    runtime: JobRuntime, error: BaseException, previous: Snapshot | None
) -> Snapshot:
    """The snapshot to show when reading the store failed with *error*.

    The figures are *previous*'s (or empty), marked with the store's status:
    the runtime's own when its loops already saw the outage, else one made
    from *error*.
    """
    now = runtime.clock.now()
    status = runtime.store_status
    if status.reachable:
        status = StoreStatus(
            reachable=False,
            unreachable_since=previous.taken_at if previous is not None else now,
            last_error=f"{type(error).__name__}: {error}",
            outages=status.outages + 1,
        )
    if previous is None:
        return Snapshot(
            taken_at=now,
            backend=repr(runtime.backend),
            worker_id=runtime.worker_id if runtime.role != "enqueue" else None,
            queues=(),
            running=(),
            running_total=0,
            dead=(),
            schedules=(),
            store=status,
        )
    return attrs.evolve(previous, store=status)


def _by_start(jobs: Sequence[Job]) -> list[Job]:
    # Longest-running first: those are the ones worth a look.
    return sorted(jobs, key=lambda job: (job.started_at is None, job.started_at or 0.0))


def _by_finish(jobs: Sequence[Job]) -> list[Job]:
    return sorted(jobs, key=lambda job: job.finished_at or 0.0, reverse=True)


def _running_job(job: Job, now: float) -> RunningJob:
    return RunningJob(
        id=job.id,
        name=job.name,
        queue=job.queue,
        worker_id=job.worker_id,
        attempt=job.attempts,
        max_attempts=job.max_attempts,
        progress=job.progress,
        progress_message=job.progress_message,
        started_at=job.started_at,
        elapsed=None if job.started_at is None else max(0.0, now - job.started_at),
    )


def _dead_job(job: Job) -> DeadJob:
    return DeadJob(
        id=job.id,
        name=job.name,
        queue=job.queue,
        attempts=job.attempts,
        error_type=None if job.error is None else job.error.type,
        error_message=None if job.error is None else job.error.message,
        finished_at=job.finished_at,
    )


def _schedule(schedule: Schedule) -> ScheduleSnapshot:
    return ScheduleSnapshot(
        name=schedule.name,
        job_name=schedule.job_name,
        queue=schedule.queue,
        trigger=describe_trigger(schedule.trigger),
        next_fire_at=schedule.next_fire_at,
        last_fire_at=schedule.last_fire_at,
        paused=schedule.paused,
    )


def _rates(tracker: RateTracker, now: float, queues: Sequence[QueueSnapshot]) -> Rates | None:
    counters: dict[str, int] = {}
    for queue in queues:
        counters[f"complete:{queue.name}"] = queue.count(JobState.COMPLETE)
        counters[f"dead:{queue.name}"] = queue.count(JobState.DEAD)
    per_second = tracker.observe(now, counters)
    if per_second is None:
        return None
    completed = {
        name.partition(":")[2]: rate
        for name, rate in per_second.items()
        if name.startswith("complete:")
    }
    failed = {
        name.partition(":")[2]: rate
        for name, rate in per_second.items()
        if name.startswith("dead:")
    }
    return Rates(
        window=tracker.elapsed(),
        completed=math.fsum(completed.values()),
        failed=math.fsum(failed.values()),
        completed_by_queue=completed,
        failed_by_queue=failed,
    )


def _latency(completed: Sequence[Job]) -> Latency | None:
    waits: list[float] = []
    runs: list[float] = []
    for job in completed:
        if job.started_at is None:
            continue
        waits.append(max(0.0, job.started_at - job.due_at))
        if job.finished_at is not None:
            runs.append(max(0.0, job.finished_at - job.started_at))
    if not waits:
        return None
    return Latency(
        wait_median=statistics.median(waits),
        wait_max=max(waits),
        run_median=statistics.median(runs) if runs else 0.0,
        sample=len(waits),
    )
