"""Shared constants and helpers of the conformance suite (not a test module).

Every test drives the ``backend`` fixture of ``tests/backends/conftest.py``:
a fresh, empty store per test, opened on the ``clock`` fixture (a
:class:`ManualClock`) and closed afterwards, once for every kind in
``BACKEND_KINDS``. Tests use the :class:`Backend` protocol only and move time
with ``clock.advance``; nothing sleeps to wait.

The helpers build records and bring jobs to a state through the protocol
(``start`` enqueues and claims; ``in_state`` also settles or cancels), so every
module leans on ``enqueue``, ``get_job`` and ``claim`` working.

Where the protocol leaves a choice open, the suite stays neutral: the order of
the jobs *inside* one ``claim`` reply, of the refused ids in a ``settle`` reply
and of ``queue_stats`` entries is not pinned (claim order is checked one job at
a time).
"""

from __future__ import annotations

import uuid
from typing import Any

from asyncjobs._clock import ManualClock
from asyncjobs._models import (
    ErrorInfo,
    Handoff,
    Job,
    JobState,
    NewJob,
    Outcome,
    OutcomeKind,
    Schedule,
)
from asyncjobs.backends import Backend

__all__ = [
    "BOOM",
    "LARGE",
    "LEASE",
    "NON_UTF8",
    "QUEUE",
    "WORKER",
    "claim_ids",
    "enqueue",
    "handoff",
    "in_state",
    "make_schedule",
    "new_job",
    "outcome",
    "settle_ok",
    "start",
    "stored",
]

LEASE = 30.0
WORKER = "worker-1"
QUEUE = "default"
BOOM = ErrorInfo(
    type="ValueError",
    message="boom",
    traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n',
)
NON_UTF8 = b"\xff\xfe\x00\x80 not utf-8 \xc3\x28 \xed\xa0\x80"
LARGE = bytes(range(256)) * 400  # 102,400 bytes, every byte value


def new_job(clock: ManualClock, *, due_in: float = 0.0, **overrides: Any) -> NewJob:
    """A valid :class:`NewJob` due *due_in* seconds from now; *overrides* replace fields."""
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "name": "tasks.example",
        "queue": QUEUE,
        "payload": b'{"args": [], "kwargs": {}}',
        "due_at": clock.now() + due_in,
        "enqueued_at": clock.now(),
    }
    fields.update(overrides)
    return NewJob(**fields)


async def enqueue(backend: Backend, clock: ManualClock, **overrides: Any) -> Job:
    """Enqueue one job built by :func:`new_job` and return what the store kept."""
    [job] = await backend.enqueue([new_job(clock, **overrides)])
    return job


async def stored(backend: Backend, job_id: str) -> Job:
    """Read a job that must exist."""
    job = await backend.get_job(job_id)
    assert job is not None, f"job {job_id} is missing from the store"
    return job


async def claim_ids(backend: Backend, queue: str = QUEUE, limit: int = 100) -> list[str]:
    """Claim from *queue* and return the claimed ids (in the order the store returned them)."""
    return [job.id for job in await backend.claim(queue, limit, WORKER, LEASE)]


async def start(backend: Backend, clock: ManualClock, **overrides: Any) -> Job:
    """Enqueue a job and claim it: a running job (its queue must hold no other due job)."""
    queued = await enqueue(backend, clock, **overrides)
    claimed = await backend.claim(queued.queue, 1, WORKER, LEASE)
    assert [job.id for job in claimed] == [queued.id]
    return claimed[0]


def outcome(job: Job, kind: OutcomeKind, **fields: Any) -> Outcome:
    """The outcome of *job*'s current claim, reported with its lease token."""
    assert job.lease_token is not None, "only a claimed job can be settled"
    return Outcome(job_id=job.id, lease_token=job.lease_token, kind=kind, **fields)


async def settle_ok(backend: Backend, *outcomes: Outcome) -> None:
    """Settle outcomes that must all be accepted."""
    assert await backend.settle(outcomes) == []


async def in_state(backend: Backend, clock: ManualClock, state: JobState, **overrides: Any) -> Job:
    """Make a new job and bring it to *state* through the protocol."""
    if state is JobState.QUEUED:
        return await enqueue(backend, clock, **overrides)
    if state is JobState.CANCELLED:
        job = await enqueue(backend, clock, **overrides)
        await backend.cancel(job.id)
    else:
        job = await start(backend, clock, **overrides)
        if state is JobState.COMPLETE:
            await settle_ok(backend, outcome(job, OutcomeKind.COMPLETE, result=b"1"))
        elif state is JobState.DEAD:
            await settle_ok(backend, outcome(job, OutcomeKind.DEAD, error=BOOM))
    job = await stored(backend, job.id)
    assert job.state is state
    return job


def make_schedule(clock: ManualClock, **overrides: Any) -> Schedule:
    """A valid :class:`Schedule` first firing a minute from now; *overrides* replace fields."""
    fields: dict[str, Any] = {
        "name": "nightly",
        "job_name": "tasks.cleanup",
        "queue": QUEUE,
        "trigger": '{"kind": "cron", "expr": "0 2 * * *", "tz": "UTC"}',
        "payload": b'{"args": [], "kwargs": {}}',
        "next_fire_at": clock.now() + 60,
    }
    fields.update(overrides)
    return Schedule(**fields)


def handoff(**limits: int) -> Handoff:
    """An offer from ``WORKER`` for the given queues (``default=1`` when none)."""
    return Handoff(worker_id=WORKER, lease=LEASE, limits=limits or {QUEUE: 1})
