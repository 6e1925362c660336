"""Records as JSON documents: what the API returns and the dashboard renders.

Arguments and results are decoded with the runtime's codec (JSON when the
app serves a store alone); a job whose name is in ``hide_arguments`` shows
neither, only their size.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from .._explain import Explanation
from .._models import Attempt, Job, Schedule
from .._operating import AuditEntry, Health, Percentiles, QueueOverview, WorkerInfo
from .._serialization import Codec, JSONCodec
from .._triggers import trigger_from_json

__all__ = ["Encoder"]

#: How many upcoming fire times a schedule lists.
NEXT_FIRES = 5


@attrs.frozen
class Encoder:
    """Turns records into JSON-ready dicts (see the OpenAPI document for their shapes)."""

    codec: Codec = attrs.field(factory=JSONCodec)
    hide_arguments: Collection[str] | bool = ()

    def hides(self, job_name: str) -> bool:
        """Whether *job_name*'s arguments and result are hidden."""
        if isinstance(self.hide_arguments, bool):
            return self.hide_arguments
        return job_name in self.hide_arguments

    def _decode(self, data: bytes | None) -> tuple[bool, Any]:
        if data is None:
            return True, None
        try:
            return True, self.codec.decode(data)
        except Exception:
            return False, None

    def arguments(self, job: Job) -> tuple[list[Any] | None, dict[str, Any] | None]:
        """The job's positional and keyword arguments, or ``(None, None)`` when hidden or
        unreadable."""
        if self.hides(job.name):
            return None, None
        ok, value = self._decode(job.payload)
        if ok and isinstance(value, dict) and set(value) <= {"a", "k"}:
            args, kwargs = value.get("a", []), value.get("k", {})
            if isinstance(args, list) and isinstance(kwargs, dict):
                return args, kwargs
        if ok and isinstance(value, list):
            return value, {}
        return None, None

    def job(self, job: Job) -> dict[str, Any]:
        """One job."""
        args, kwargs = self.arguments(job)
        hidden = self.hides(job.name)
        result = None
        if not hidden and job.result is not None:
            result = self._decode(job.result)[1]
        error = None
        if job.error is not None:
            error = {
                "type": job.error.type,
                "message": job.error.message,
                "traceback": job.error.traceback,
            }
        return {
            "id": job.id,
            "name": job.name,
            "queue": job.queue,
            "state": job.state.value,
            "priority": job.priority,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "timeout": job.timeout,
            "key": job.key,
            "waits_for": job.waits_for,
            "partition": job.partition,
            "schedule": job.schedule,
            "tags": dict(job.tags),
            "due_at": job.due_at,
            "enqueued_at": job.enqueued_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "fire_at": job.fire_at,
            "lease_expires_at": job.lease_expires_at,
            "worker_id": job.worker_id,
            "progress": job.progress,
            "progress_message": job.progress_message,
            "cancel_requested": job.cancel_requested,
            "error": error,
            "arguments_hidden": hidden,
            "args": args,
            "kwargs": kwargs,
            "result": result,
            "payload_bytes": len(job.payload),
        }

    @staticmethod
    def attempt(attempt: Attempt) -> dict[str, Any]:
        """One attempt of a job's history."""
        return attrs.asdict(attempt)

    def detail(self, job: Job, attempts: Sequence[Attempt]) -> dict[str, Any]:
        """A job with its attempt history."""
        return {**self.job(job), "history": [self.attempt(a) for a in attempts]}

    @staticmethod
    def explanation(explanation: Explanation) -> dict[str, Any]:
        """Why a job waits."""
        return {
            "job_id": explanation.job_id,
            "reason": explanation.reason,
            "message": explanation.message,
            "until": explanation.until,
            "details": dict(explanation.details),
        }

    @staticmethod
    def _percentiles(value: Percentiles | None) -> dict[str, Any] | None:
        return None if value is None else attrs.asdict(value)

    def queue(
        self, overview: QueueOverview, workers: Sequence[WorkerInfo], configured: Mapping[str, int]
    ) -> dict[str, Any]:
        """A queue's overview, with the limits its live workers enforce."""
        name = overview.queue
        limits: dict[str, str] = {}
        slots = 0
        for worker in workers:
            limits.update(worker.limits.get(name, {}))
            slots += worker.queues.get(name, 0)
        return {
            "queue": name,
            "counts": {state.value: count for state, count in overview.counts.items()},
            "waiting": overview.waiting,
            "delayed": overview.delayed,
            "running": overview.running,
            "claimed": overview.claimed,
            "paused": overview.paused,
            "held_by": overview.held_by,
            "completed_per_minute": overview.completed_per_minute,
            "failed_per_minute": overview.failed_per_minute,
            "failure_rate": overview.failure_rate,
            "wait": self._percentiles(overview.wait),
            "run": self._percentiles(overview.run),
            "oldest_waiting": overview.oldest_waiting,
            "slots": slots,
            "concurrency": configured.get(name),
            "limits": limits,
        }

    def schedule(self, schedule: Schedule, runs: Sequence[Job], now: float) -> dict[str, Any]:
        """A schedule with its next fire times and latest runs."""
        upcoming: list[float] = []
        trigger: Any
        try:
            parsed = trigger_from_json(schedule.trigger)
            trigger = json.loads(schedule.trigger)
        except Exception:
            parsed, trigger = None, {"type": "unknown", "text": schedule.trigger}
        if parsed is not None and schedule.next_fire_at is not None:
            upcoming.append(schedule.next_fire_at)
            moment = datetime.fromtimestamp(schedule.next_fire_at, UTC)
            while len(upcoming) < NEXT_FIRES:
                following = parsed.next_after(moment)
                if following is None:
                    break
                upcoming.append(following.timestamp())
                moment = following
        return {
            "name": schedule.name,
            "job_name": schedule.job_name,
            "queue": schedule.queue,
            "trigger": trigger,
            "next_fire_at": schedule.next_fire_at,
            "next_fire_times": upcoming,
            "last_fire_at": schedule.last_fire_at,
            "misfire": schedule.misfire,
            "grace": schedule.grace,
            "overlap": schedule.overlap,
            "paused": schedule.paused,
            "priority": schedule.priority,
            "max_attempts": schedule.max_attempts,
            "timeout": schedule.timeout,
            "recent_runs": [self.job(job) for job in runs],
        }

    @staticmethod
    def worker(worker: WorkerInfo) -> dict[str, Any]:
        """A live runtime sharing the store."""
        data = attrs.asdict(worker)
        data["jobs"] = list(worker.jobs)
        return data

    @staticmethod
    def audit(entry: AuditEntry) -> dict[str, Any]:
        """One audit-trail entry."""
        return attrs.asdict(entry)

    @staticmethod
    def health(health: Health) -> dict[str, Any]:
        """A health check's answer."""
        return {
            "healthy": health.healthy,
            "reasons": list(health.reasons),
            "checks": dict(health.checks),
        }
