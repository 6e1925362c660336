"""Rows and records: a database row to a ``Job``, ``Schedule`` or ``Attempt``, and back.

Times are ``float8`` (seconds since the epoch), so a float comes back exactly;
payloads and results are ``bytea``. Tags are ``jsonb`` (NULL for none). The
attempt history is a ``jsonb`` array of arrays, oldest first (``_lifecycle.py``
appends to it in the statement that ends the attempt).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import asyncpg

from ..._models import Attempt, ErrorInfo, Job, JobState, Schedule

__all__ = [
    "JOB_COLUMNS",
    "SCHEDULE_COLUMNS",
    "prefixed",
    "schedule_args",
    "tags_json",
    "to_attempts",
    "to_job",
    "to_schedule",
]

#: The columns :func:`to_job` reads.
JOB_COLUMNS: Final = (
    "id, name, queue, payload, state, due_at, enqueued_at, priority, attempts,"
    " max_attempts, timeout, key, schedule, fire_at, lease_token, lease_expires_at,"
    " worker_id, started_at, finished_at, result, error_type, error_message,"
    " error_traceback, progress, progress_message, cancel_requested, partition, tags,"
    " waits_for, parked_due_at"
)
#: The columns :func:`to_schedule` reads, in the order of :func:`schedule_args`.
SCHEDULE_COLUMNS: Final = (
    "name, job_name, queue, trigger, payload, next_fire_at, last_fire_at, misfire, grace,"
    " overlap, paused, priority, max_attempts, timeout"
)


def prefixed(alias: str) -> str:
    """:data:`JOB_COLUMNS`, each qualified by *alias* (for statements with joins)."""
    return ", ".join(f"{alias}.{column.strip()}" for column in JOB_COLUMNS.split(","))


def tags_json(tags: Mapping[str, str]) -> str | None:
    """The ``jsonb`` text of *tags* (``None`` for no tags)."""
    return json.dumps(dict(tags), separators=(",", ":")) if tags else None


def to_job(row: asyncpg.Record) -> Job:
    """The job of a row holding :data:`JOB_COLUMNS`.

    A job waiting for the holder of its key reports its parked due time, not
    the infinity its ``due_at`` column holds meanwhile.
    """
    error_type = row["error_type"]
    tags = row["tags"]
    parked = row["parked_due_at"]
    return Job(
        id=row["id"],
        name=row["name"],
        queue=row["queue"],
        payload=row["payload"],
        state=JobState(row["state"]),
        due_at=row["due_at"] if parked is None else parked,
        enqueued_at=row["enqueued_at"],
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        key=row["key"],
        schedule=row["schedule"],
        fire_at=row["fire_at"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        worker_id=row["worker_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=row["result"],
        error=None
        if error_type is None
        else ErrorInfo(
            type=error_type, message=row["error_message"], traceback=row["error_traceback"]
        ),
        progress=row["progress"],
        progress_message=row["progress_message"],
        cancel_requested=row["cancel_requested"],
        partition=row["partition"],
        tags={} if tags is None else json.loads(tags),
        waits_for=row["waits_for"],
    )


def to_attempts(history: str | None) -> list[Attempt]:
    """The attempts of a job's ``history`` column, oldest first."""
    if history is None:
        return []
    attempts: list[Attempt] = []
    for (
        number,
        worker_id,
        started_at,
        finished_at,
        outcome,
        error_type,
        error_message,
    ) in json.loads(history):
        attempts.append(
            Attempt(
                number=int(number),
                worker_id=worker_id,
                started_at=None if started_at is None else float(started_at),
                finished_at=float(finished_at),
                outcome=outcome,
                error_type=error_type,
                error_message=error_message,
            )
        )
    return attempts


def to_schedule(row: asyncpg.Record) -> Schedule:
    """The schedule of a row holding :data:`SCHEDULE_COLUMNS`."""
    return Schedule(
        name=row["name"],
        job_name=row["job_name"],
        queue=row["queue"],
        trigger=row["trigger"],
        payload=row["payload"],
        next_fire_at=row["next_fire_at"],
        last_fire_at=row["last_fire_at"],
        misfire=row["misfire"],
        grace=row["grace"],
        overlap=row["overlap"],
        paused=row["paused"],
        priority=row["priority"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
    )


def schedule_args(schedule: Schedule) -> tuple[Any, ...]:
    """The parameters of *schedule* in the order of :data:`SCHEDULE_COLUMNS`."""
    return (
        schedule.name,
        schedule.job_name,
        schedule.queue,
        schedule.trigger,
        schedule.payload,
        schedule.next_fire_at,
        schedule.last_fire_at,
        schedule.misfire,
        schedule.grace,
        schedule.overlap,
        schedule.paused,
        schedule.priority,
        schedule.max_attempts,
        schedule.timeout,
    )
