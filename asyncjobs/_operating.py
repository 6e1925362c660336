"""The records operating tools read: workers, the audit trail, queue overviews, health.

Workers and audit entries are stored as opaque JSON (``WorkerRecord.data``,
``AuditRecord.data``): the store keeps and lists them, the runtime writes and
reads them here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from ._models import Attempt, AuditRecord, Job, JobState, WorkerRecord
from .backends import WorkerRegistry

__all__ = [
    "AuditEntry",
    "Health",
    "JobDetail",
    "Percentiles",
    "QueueOverview",
    "WorkerInfo",
    "live_workers",
]

#: Records older than this are dropped by any lister, whatever their own staleness.
_FORGET_AFTER = 3600.0


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """A runtime that shares the store, as it last described itself.

    :ivar role: ``"all"``, ``"worker"`` or ``"enqueue"``.
    :ivar queues: the queues it runs, with its concurrency for each (empty for
        an enqueue-only runtime).
    :ivar pool: its ``max_concurrency``.
    :ivar limits: per queue, the cluster-wide limits it enforces (``"global_concurrency"``,
        ``"partition_concurrency"``, ``"rate_limit"``) as text.
    :ivar jobs: the job names it can run.
    :ivar held: per queue, the limit that held back its last claim.
    :ivar running: how many jobs it held at ``last_seen`` (claimed or running).
    :ivar stale_after: seconds after ``last_seen`` at which it counts as dead.
    """

    id: str
    host: str
    pid: int
    role: str
    queues: Mapping[str, int] = attrs.field(factory=dict)
    pool: int = 0
    limits: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    jobs: tuple[str, ...] = ()
    held: Mapping[str, str] = attrs.field(factory=dict)
    running: int = 0
    started_at: float = 0.0
    last_seen: float = 0.0
    stale_after: float = 30.0

    def encode(self) -> WorkerRecord:
        """The store's record of this worker."""
        data = attrs.asdict(self)
        data["jobs"] = list(self.jobs)
        return WorkerRecord(
            id=self.id, last_seen=self.last_seen, data=json.dumps(data, sort_keys=True).encode()
        )

    @classmethod
    def decode(cls, record: WorkerRecord) -> WorkerInfo:
        """Read a stored record (fields a newer version added are ignored)."""
        data: dict[str, Any] = json.loads(record.data)
        known = {field.name for field in attrs.fields(cls)}
        data = {key: value for key, value in data.items() if key in known}
        data["jobs"] = tuple(data.get("jobs", ()))
        data["last_seen"] = record.last_seen
        return cls(**data)

    def alive(self, now: float) -> bool:
        """Whether it was seen within its ``stale_after``."""
        return self.last_seen + self.stale_after >= now


async def live_workers(store: WorkerRegistry, now: float) -> list[WorkerInfo]:
    """The workers of *store* still alive at *now*, by id."""
    records = await store.list_workers(seen_since=now - _FORGET_AFTER)
    workers = []
    for record in records:
        try:
            worker = WorkerInfo.decode(record)
        except (ValueError, TypeError):
            continue  # written by an incompatible version: not ours to read
        if worker.alive(now):
            workers.append(worker)
    return workers


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One operator action.

    :ivar actor: who asked (the caller names it: a user, a token's identity, the OS user).
    :ivar action: e.g. ``"job.retry"``, ``"queue.pause"``, ``"jobs.purge"``.
    :ivar target: the job id, queue or schedule name, or the purge filter.
    :ivar outcome: ``"ok"`` (with a count for purges), or why nothing happened.
    """

    at: float
    actor: str
    action: str
    target: str
    outcome: str

    def encode(self) -> AuditRecord:
        """The store's record of this entry."""
        data = {"actor": self.actor, "action": self.action, "target": self.target}
        data["outcome"] = self.outcome
        return AuditRecord(at=self.at, data=json.dumps(data, sort_keys=True).encode())

    @classmethod
    def decode(cls, record: AuditRecord) -> AuditEntry:
        """Read a stored record."""
        data = json.loads(record.data)
        return cls(
            at=record.at,
            actor=str(data.get("actor", "?")),
            action=str(data.get("action", "?")),
            target=str(data.get("target", "?")),
            outcome=str(data.get("outcome", "?")),
        )


@attrs.frozen(kw_only=True)
class JobDetail:
    """One job and its attempt history (oldest first)."""

    job: Job
    attempts: tuple[Attempt, ...]


@attrs.frozen(kw_only=True)
class Percentiles:
    """Timings in seconds over a sample of jobs."""

    p50: float
    p95: float
    p99: float
    sample: int


@attrs.frozen(kw_only=True)
class QueueOverview:
    """A queue at a glance: counts, rates, timings and the age of its backlog.

    :ivar waiting: queued and due now; ``delayed``: queued, due later.
    :ivar running: handlers running; ``claimed``: claimed, waiting for a free worker.
    :ivar held_by: the limit a live worker reported holding this queue back.
    :ivar failure_rate: the share of jobs finished in the window that died.
    :ivar wait: queue wait (start minus due time) of recently finished jobs.
    :ivar run: run time of recently finished jobs.
    :ivar oldest_waiting: how long the oldest due job has waited (seconds).
    """

    queue: str
    counts: Mapping[JobState, int]
    waiting: int
    delayed: int
    running: int
    claimed: int
    paused: bool
    held_by: str | None
    completed_per_minute: float
    failed_per_minute: float
    failure_rate: float | None
    wait: Percentiles | None
    run: Percentiles | None
    oldest_waiting: float | None


@attrs.frozen(kw_only=True)
class Health:
    """The result of a health check: healthy, or the reasons it is not.

    :ivar checks: each check by name (``store``, ``workers``, ``schedules``,
        ``backlog``) and whether it passed.
    """

    healthy: bool
    reasons: tuple[str, ...]
    checks: Mapping[str, bool]
