"""Rows and records: a new job to INSERT parameters, a row to a ``Job`` or ``Schedule``, and back.

Column order is the one of ``JOB_COLUMNS`` and ``SCHEDULE_COLUMNS`` (``_statements.py``).
A job waiting behind another stores :data:`PARKED_DUE_AT` as its ``due_at``
and its due time in ``parked_due_at`` (schema 7); :func:`to_job` reports the
due time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from ..._models import ErrorInfo, Job, JobState, NewJob, Schedule
from ._statements import Row

__all__ = [
    "PARKED_DUE_AT",
    "decode_tags",
    "encode_tags",
    "error_columns",
    "insert_row",
    "schedule_row",
    "to_job",
    "to_schedule",
]


#: The stored ``due_at`` of a job waiting behind another: later than any claim looks.
PARKED_DUE_AT: Final = math.inf


def encode_tags(tags: Mapping[str, str]) -> str | None:
    """The ``tags`` column of *tags*: a JSON object, or NULL for none (most jobs)."""
    if not tags:
        return None
    return json.dumps(dict(tags), ensure_ascii=False, separators=(",", ":"))


def decode_tags(text: str | None) -> dict[str, str]:
    """The tags of a ``tags`` column."""
    if text is None:
        return {}
    tags: dict[str, str] = json.loads(text)
    return tags


def insert_row(new: NewJob, *, waiting: bool = False) -> tuple[Any, ...]:
    """The parameters of one new job's row in the insert statements (``_enqueue.py``).

    :param waiting: the job waits behind another: its ``due_at`` is parked.
    """
    return (
        new.id,
        new.name,
        new.queue,
        new.payload,
        PARKED_DUE_AT if waiting else new.due_at,
        new.enqueued_at,
        new.priority,
        new.max_attempts,
        new.timeout,
        new.key,
        new.schedule,
        new.fire_at,
        encode_tags(new.tags),
    )


def error_columns(error: ErrorInfo | None) -> tuple[str | None, str | None, str | None]:
    """``error_type``, ``error_message``, ``error_traceback`` of *error*."""
    if error is None:
        return None, None, None
    return error.type, error.message, error.traceback


def to_job(row: Row) -> Job:
    """The job of a row that starts with ``JOB_COLUMNS`` (extra columns are ignored)."""
    (
        job_id,
        name,
        queue,
        payload,
        state,
        due_at,
        enqueued_at,
        priority,
        attempts,
        max_attempts,
        timeout,
        key,
        schedule,
        lease_token,
        lease_expires_at,
        worker_id,
        started_at,
        finished_at,
        result,
        error_type,
        error_message,
        error_traceback,
        progress,
        progress_message,
        cancel_requested,
        fire_at,
        partition,
        tags,
        waits_for,
        parked_due_at,
    ) = row[:30]
    return Job(
        id=job_id,
        name=name,
        queue=queue,
        payload=payload,
        state=JobState(state),
        due_at=due_at if waits_for is None else parked_due_at,
        enqueued_at=enqueued_at,
        priority=priority,
        attempts=attempts,
        max_attempts=max_attempts,
        timeout=timeout,
        key=key,
        schedule=schedule,
        fire_at=fire_at,
        lease_token=lease_token,
        lease_expires_at=lease_expires_at,
        worker_id=worker_id,
        started_at=started_at,
        finished_at=finished_at,
        result=result,
        error=None
        if error_type is None
        else ErrorInfo(type=error_type, message=error_message, traceback=error_traceback),
        progress=progress,
        progress_message=progress_message,
        cancel_requested=bool(cancel_requested),
        partition=partition,
        tags=decode_tags(tags),
        waits_for=waits_for,
    )


def to_schedule(row: Row) -> Schedule:
    """The schedule of a ``SCHEDULE_COLUMNS`` row."""
    (
        name,
        job_name,
        queue,
        trigger,
        payload,
        next_fire_at,
        last_fire_at,
        misfire,
        grace,
        overlap,
        paused,
        priority,
        max_attempts,
        timeout,
    ) = row
    return Schedule(
        name=name,
        job_name=job_name,
        queue=queue,
        trigger=trigger,
        payload=payload,
        next_fire_at=next_fire_at,
        last_fire_at=last_fire_at,
        misfire=misfire,
        grace=grace,
        overlap=bool(overlap),
        paused=bool(paused),
        priority=priority,
        max_attempts=max_attempts,
        timeout=timeout,
    )


def schedule_row(schedule: Schedule) -> Row:
    """The ``SCHEDULE_COLUMNS`` row of *schedule*."""
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
        int(schedule.overlap),
        int(schedule.paused),
        schedule.priority,
        schedule.max_attempts,
        schedule.timeout,
    )
