"""Why a job is not running now: ``explain(job_id)``, in words and as data.

The answer comes from what any process can read: the job, its queue's
counts and pause flag, other jobs with its key or partition, and the live
workers' own descriptions (which queues and job names they serve, their
concurrency, the cluster-wide limits they enforce and the limit that held
back their last claim).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from ._models import FINISHED_STATES, Job, JobState
from ._operating import WorkerInfo
from .backends import Backend

__all__ = ["REASONS", "Explanation", "explain"]

#: Every ``Explanation.reason``, in the order they are checked.
REASONS = (
    "not_found",
    "finished",
    "running",
    "claimed",
    "behind_key",
    "due_later",
    "paused",
    "no_worker",
    "unknown_job",
    "limited",
    "queue_full",
    "waiting",
)

# How many of a queue's due jobs are read to count those ahead of one job.
_AHEAD_SCAN = 1000


@attrs.frozen(kw_only=True)
class Explanation:
    """Why a job is where it is.

    :ivar reason: one of :data:`REASONS`.
    :ivar message: the same in a sentence.
    :ivar until: when the reason ends, when known (a due time, a lease's expiry).
    :ivar details: the facts behind it (worker id, limit, counts), as text.
    """

    job_id: str
    reason: str
    message: str
    until: float | None = None
    details: Mapping[str, str] = attrs.field(factory=dict)


async def explain(
    store: Backend, job_id: str, now: float, workers: Sequence[WorkerInfo]
) -> Explanation:
    """Work out why *job_id* is not running at *now*."""
    job = await store.get_job(job_id)
    if job is None:
        return Explanation(
            job_id=job_id, reason="not_found", message=f"no job {job_id} in the store"
        )
    if job.state in FINISHED_STATES:
        return _finished(job)
    if job.state is JobState.RUNNING:
        return _running(job, workers)
    return await _queued(store, job, now, workers)


def _finished(job: Job) -> Explanation:
    how = job.state.value
    details = {"state": how, "attempts": str(job.attempts)}
    if job.error is not None and job.state is not JobState.COMPLETE:
        details["error"] = f"{job.error.type}: {job.error.message}"
        how = f"{how} after {job.attempts} attempt(s) ({job.error.type}: {job.error.message})"
    return Explanation(
        job_id=job.id,
        reason="finished",
        message=f"it has finished: {how}",
        until=None,
        details=details,
    )


def _running(job: Job, workers: Sequence[WorkerInfo]) -> Explanation:
    owner = job.worker_id or "?"
    alive = any(worker.id == owner for worker in workers)
    details = {"worker": owner, "worker_alive": "yes" if alive else "no"}
    if job.started_at is None:
        return Explanation(
            job_id=job.id,
            reason="claimed",
            message=f"worker {owner} has claimed it and starts it when one of its slots frees up",
            until=job.lease_expires_at,
            details=details,
        )
    message = f"it is running on worker {owner}"
    if not alive:
        message += (
            "; that worker is no longer seen, so crash recovery takes the job back "
            "once its lease expires"
        )
    return Explanation(
        job_id=job.id,
        reason="running",
        message=message,
        until=job.lease_expires_at,
        details=details,
    )


async def _queued(
    store: Backend, job: Job, now: float, workers: Sequence[WorkerInfo]
) -> Explanation:
    def said(reason: str, message: str, until: float | None = None, **details: str) -> Explanation:
        return Explanation(
            job_id=job.id, reason=reason, message=message, until=until, details=details
        )

    if job.waits_for is not None:
        # Checked before the due time: it waits for the holder however long it is due.
        holder = await store.get_job(job.waits_for)
        doing = "its next attempt" if holder and holder.state is JobState.QUEUED else "it"
        return said(
            "behind_key",
            f"it waits behind job {job.waits_for} with the same key {job.key!r} "
            f"({doing} must finish first)",
            key=job.key or "",
            holder=job.waits_for,
        )
    if job.due_at > now:
        why = "a retry's backoff" if job.attempts else "its delay"
        return said("due_later", f"it is due later ({why})", until=job.due_at)
    stats = {entry.queue: entry for entry in await store.queue_stats()}
    queue = stats.get(job.queue)
    if queue is not None and queue.paused:
        return said("paused", f"its queue {job.queue!r} is paused", queue=job.queue)
    serving = [worker for worker in workers if job.queue in worker.queues]
    if not serving:
        return said(
            "no_worker",
            f"no live worker runs the queue {job.queue!r}",
            queue=job.queue,
            workers=str(len(workers)),
        )
    if not any(job.name in worker.jobs for worker in serving):
        return said(
            "unknown_job",
            f"none of the {len(serving)} live worker(s) of {job.queue!r} knows a job named "
            f"{job.name!r} (a deploy renamed it, or the worker lacks the module)",
            queue=job.queue,
        )
    limited = await _limited(store, job, serving)
    if limited is not None:
        return limited
    running = queue.count(JobState.RUNNING) if queue is not None else 0
    slots = sum(worker.queues[job.queue] for worker in serving)
    if running >= slots:
        return said(
            "queue_full",
            f"its queue {job.queue!r} is full: {running} running on {slots} slot(s) "
            f"across {len(serving)} worker(s)",
            queue=job.queue,
            running=str(running),
            slots=str(slots),
        )
    ahead = await _ahead(store, job)
    return said(
        "waiting",
        f"it is due and waits its turn: {ahead} due job(s) of {job.queue!r} come before it",
        queue=job.queue,
        ahead=str(ahead),
    )


async def _limited(store: Backend, job: Job, serving: Sequence[WorkerInfo]) -> Explanation | None:
    """A flow-control limit holding the job's queue (or its partition) back, if any."""
    limits: dict[str, str] = {}
    for worker in serving:
        limits.update(worker.limits.get(job.queue, {}))
    held = sorted({worker.held[job.queue] for worker in serving if job.queue in worker.held})
    cap = limits.get("partition_concurrency")
    if job.partition is not None and cap is not None:
        running = await store.list_jobs(
            queue=job.queue, state=JobState.RUNNING, partition=job.partition, limit=_AHEAD_SCAN
        )
        if len(running) >= int(cap):
            return Explanation(
                job_id=job.id,
                reason="limited",
                message=(
                    f"its partition {job.partition!r} already runs {len(running)} job(s), "
                    f"its limit (partition_concurrency={cap})"
                ),
                details={"limit": "partition_concurrency", "value": cap},
            )
    for limit in held:
        if limit == "partition_concurrency":
            continue  # judged above, for this job's own partition
        return Explanation(
            job_id=job.id,
            reason="limited",
            message=(
                f"a flow-control limit holds its queue {job.queue!r} back: {limit}"
                + (f" ({limits[limit]})" if limit in limits else "")
                + (", until its window lets the next job in" if "rate" in limit else "")
            ),
            details={"limit": limit, "value": limits.get(limit, "")},
        )
    return None


async def _ahead(store: Backend, job: Job) -> int:
    """How many due jobs of its queue come before *job* in claim order (from one page)."""
    queued = await store.list_jobs(queue=job.queue, state=JobState.QUEUED, limit=_AHEAD_SCAN)
    return sum(
        1
        for other in queued
        if other.id != job.id
        and other.due_at <= job.due_at
        and (other.priority, other.due_at) < (job.priority, job.due_at)
    )
