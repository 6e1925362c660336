"""The ``--json`` forms of the store commands' records: one JSON document per command.

Times are ISO 8601 in UTC (``2026-11-23T16:13:01.220Z``); payloads, results
and lease tokens are never included.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from ._explain import Explanation
from ._models import Attempt, Job, JobState, Schedule
from ._operating import AuditEntry, Health, JobDetail, Percentiles, QueueOverview, WorkerInfo
from ._snapshot import describe_trigger

__all__ = [
    "audit_json",
    "detail_json",
    "explanation_json",
    "health_json",
    "job_json",
    "queue_json",
    "schedule_json",
    "worker_json",
]


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    text = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def job_json(job: Job) -> dict[str, Any]:
    """One job as ``--json`` prints it (no payload, result or lease token)."""
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "timeout": job.timeout,
        "key": job.key,
        "waits_for": job.waits_for,
        "partition": job.partition,
        "tags": dict(job.tags),
        "schedule": job.schedule,
        "fire_at": _iso(job.fire_at),
        "enqueued_at": _iso(job.enqueued_at),
        "due_at": _iso(job.due_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "worker_id": job.worker_id,
        "lease_expires_at": _iso(job.lease_expires_at),
        "progress": job.progress,
        "progress_message": job.progress_message,
        "cancel_requested": job.cancel_requested,
        "error": None
        if job.error is None
        else {"type": job.error.type, "message": job.error.message},
    }


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "worker_id": attempt.worker_id,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "outcome": attempt.outcome,
        "error_type": attempt.error_type,
        "error_message": attempt.error_message,
    }


def detail_json(detail: JobDetail) -> dict[str, Any]:
    """A job with its attempts and its last error's traceback."""
    job = job_json(detail.job)
    if detail.job.error is not None:
        job["error"]["traceback"] = detail.job.error.traceback
    return {"job": job, "attempts": [_attempt_json(attempt) for attempt in detail.attempts]}


def _percentiles_json(value: Percentiles | None) -> dict[str, Any] | None:
    return None if value is None else attrs.asdict(value)


def queue_json(queue: QueueOverview) -> dict[str, Any]:
    """One queue overview as ``--json`` prints it."""
    return {
        "queue": queue.queue,
        "paused": queue.paused,
        "counts": {state.value: queue.counts.get(state, 0) for state in JobState},
        "waiting": queue.waiting,
        "delayed": queue.delayed,
        "running": queue.running,
        "claimed": queue.claimed,
        "held_by": queue.held_by,
        "completed_per_minute": queue.completed_per_minute,
        "failed_per_minute": queue.failed_per_minute,
        "failure_rate": queue.failure_rate,
        "wait_seconds": _percentiles_json(queue.wait),
        "run_seconds": _percentiles_json(queue.run),
        "oldest_waiting_seconds": queue.oldest_waiting,
    }


def schedule_json(schedule: Schedule, runs: Sequence[Job]) -> dict[str, Any]:
    """One schedule with its recent runs (newest first), no arguments."""
    return {
        "name": schedule.name,
        "job": schedule.job_name,
        "queue": schedule.queue,
        "trigger": describe_trigger(schedule.trigger),
        "next_fire_at": _iso(schedule.next_fire_at),
        "last_fire_at": _iso(schedule.last_fire_at),
        "paused": schedule.paused,
        "misfire": schedule.misfire,
        "grace": schedule.grace,
        "overlap": schedule.overlap,
        "recent_runs": [job_json(job) for job in runs],
    }


def worker_json(worker: WorkerInfo) -> dict[str, Any]:
    """One live worker as ``--json`` prints it."""
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "role": worker.role,
        "queues": dict(worker.queues),
        "pool": worker.pool,
        "limits": {queue: dict(limits) for queue, limits in worker.limits.items()},
        "jobs": list(worker.jobs),
        "held": dict(worker.held),
        "running": worker.running,
        "started_at": _iso(worker.started_at),
        "last_seen": _iso(worker.last_seen),
    }


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    """Why a job waits, as data."""
    return {
        "job_id": explanation.job_id,
        "reason": explanation.reason,
        "message": explanation.message,
        "until": _iso(explanation.until),
        "details": dict(explanation.details),
    }


def health_json(health: Health) -> dict[str, Any]:
    """A health check's answer."""
    return {"healthy": health.healthy, "reasons": list(health.reasons), "checks": health.checks}


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    """One audit entry."""
    return {
        "at": _iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
    }
