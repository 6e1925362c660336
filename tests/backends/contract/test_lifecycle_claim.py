"""JobLifecycle, part 2: ``claim``, and ``enqueue`` with a :class:`Handoff`.

Specifies :meth:`JobLifecycle.claim` and the handoff path of
:meth:`JobLifecycle.enqueue`:

- a claimed job becomes ``running`` with ``attempts`` + 1, a fresh
  ``lease_token``, the claiming ``worker_id`` and ``lease_expires_at = now +
  lease``, ``now`` read from the clock given to ``open``. The reply is what
  ``get_job`` reads afterwards;
- claim order is priority (lower first), then ``due_at``, then enqueue order.
  A job not yet due is never claimed and never hides a due one. A claim takes
  at most ``limit`` jobs (``0``: none), from the named queue only;
- concurrent claims on one backend object never return a job twice, and each
  claimed job gets a token of its own;
- handoff: ``enqueue(jobs, handoff)`` stores a *new* job already claimed by
  ``handoff.worker_id``, exactly as a claim would have returned it, when the
  job is due now, its queue is unpaused and has a slot left in
  ``handoff.limits``, and no queued job is ahead of it in claim order. A job
  that a dedup key matched is never claimed this way. A store may hand off
  fewer jobs than it could, never more and never out of claim order; the suite
  does expect the plain cases (a lone due job, a job that outranks every
  queued one) to be handed off.

The order of the jobs inside one claim reply is not pinned. Paused queues are
in ``test_control``; the whole lease of a claim that had to wait is in
``test_lifecycle_leases``.

Run one store: ``pytest tests/backends/contract/test_lifecycle_claim.py -k sqlite``
"""

from __future__ import annotations

import anyio
import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import Job, JobState, Outcome, OutcomeKind
from asyncjobs.backends import Backend
from tests.backends.contract._support import (
    LEASE,
    QUEUE,
    WORKER,
    claim_ids,
    enqueue,
    handoff,
    new_job,
    stored,
)

pytestmark = pytest.mark.anyio


# -- claim ---------------------------------------------------------------------


async def test_claim_sets_the_lease(backend: Backend, clock: ManualClock) -> None:
    queued = await enqueue(backend, clock)
    clock.advance(5)

    [job] = await backend.claim(QUEUE, 10, "worker-a", 45.0)

    assert job.id == queued.id
    assert job.state is JobState.RUNNING
    assert job.attempts == 1
    assert job.lease_token
    assert job.lease_expires_at == clock.now() + 45.0
    assert job.worker_id == "worker-a"
    assert await stored(backend, job.id) == job


async def test_claim_order_is_priority_then_due_time_then_enqueue_order(
    backend: Backend, clock: ManualClock
) -> None:
    # (name, priority, due in seconds), in enqueue order
    spec = [
        ("late", 0, 10.0),
        ("low", 5, -30.0),
        ("mid", 0, 5.0),
        ("now-1", 0, 0.0),
        ("urgent", -1, 10.0),
        ("now-2", 0, 0.0),
        ("past", 0, -10.0),
    ]
    await backend.enqueue([new_job(clock, name=n, priority=p, due_in=d) for n, p, d in spec])
    clock.advance(10)

    order = []
    for _ in spec:
        [job] = await backend.claim(QUEUE, 1, WORKER, LEASE)
        order.append(job.name)

    assert order == ["urgent", "past", "now-1", "now-2", "mid", "late", "low"]
    assert await claim_ids(backend) == []


async def test_jobs_not_yet_due_are_not_claimed(backend: Backend, clock: ManualClock) -> None:
    job = await enqueue(backend, clock, due_in=60)

    assert await claim_ids(backend) == []
    clock.advance(59)
    assert await claim_ids(backend) == []
    clock.advance(1)
    assert await claim_ids(backend) == [job.id]


async def test_a_high_priority_job_not_yet_due_does_not_hide_a_due_one(
    backend: Backend, clock: ManualClock
) -> None:
    later = await enqueue(backend, clock, priority=-10, due_in=60)
    due = await enqueue(backend, clock, priority=10)

    assert await claim_ids(backend, limit=1) == [due.id]
    clock.advance(60)
    assert await claim_ids(backend, limit=1) == [later.id]


async def test_claim_takes_at_most_limit_jobs(backend: Backend, clock: ManualClock) -> None:
    jobs = await backend.enqueue([new_job(clock) for _ in range(3)])

    first = await claim_ids(backend, limit=2)
    second = await claim_ids(backend, limit=2)

    assert sorted(first) == sorted([jobs[0].id, jobs[1].id])
    assert second == [jobs[2].id]
    assert await claim_ids(backend, limit=0) == []


async def test_claim_only_takes_its_own_queue(backend: Backend, clock: ManualClock) -> None:
    job = await enqueue(backend, clock, queue="emails")

    assert await claim_ids(backend, queue="reports") == []
    assert await claim_ids(backend, queue="emails") == [job.id]


async def test_concurrent_claims_never_return_the_same_job(
    backend: Backend, clock: ManualClock
) -> None:
    queued = await backend.enqueue([new_job(clock) for _ in range(10)])
    claimed: list[Job] = []

    async def claimer(worker_id: str) -> None:
        claimed.extend(await backend.claim(QUEUE, 3, worker_id, LEASE))

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(claimer, f"worker-{n}")

    ids = [job.id for job in claimed]
    assert sorted(ids) == sorted(job.id for job in queued)
    assert len({job.lease_token for job in claimed}) == len(claimed)
    assert await claim_ids(backend) == []


# -- handoff: enqueue straight to an idle worker -------------------------------


async def test_handoff_stores_a_new_job_claimed_by_the_offering_worker(
    backend: Backend, clock: ManualClock
) -> None:
    [job] = await backend.enqueue([new_job(clock)], handoff())

    assert job.state is JobState.RUNNING
    assert job.attempts == 1
    assert job.lease_token
    assert job.lease_expires_at == clock.now() + LEASE
    assert job.worker_id == WORKER
    assert job.started_at is None  # its worker reports the handler's start
    assert await stored(backend, job.id) == job
    assert await claim_ids(backend) == []  # nobody else can take it
    # It is held like any claimed job: heartbeats extend it, its token settles it.
    assert not (await backend.heartbeat({job.id: job.lease_token}, LEASE)).lost
    assert job.lease_token is not None
    outcome = Outcome(
        job_id=job.id, lease_token=job.lease_token, kind=OutcomeKind.COMPLETE, result=b"1"
    )
    assert await backend.settle([outcome]) == []
    assert (await stored(backend, job.id)).state is JobState.COMPLETE


async def test_handoff_leaves_a_new_job_queued_behind_a_job_claimed_before_it(
    backend: Backend, clock: ManualClock
) -> None:
    first = await enqueue(backend, clock)
    [second] = await backend.enqueue([new_job(clock)], handoff())

    assert second.state is JobState.QUEUED
    assert await stored(backend, second.id) == second
    assert await claim_ids(backend, limit=1) == [first.id]
    assert await claim_ids(backend, limit=1) == [second.id]


async def test_handoff_takes_a_new_job_that_outranks_the_queued_ones(
    backend: Backend, clock: ManualClock
) -> None:
    waiting = await enqueue(backend, clock, priority=5)
    [urgent] = await backend.enqueue([new_job(clock, priority=0)], handoff())

    assert urgent.state is JobState.RUNNING
    assert await claim_ids(backend) == [waiting.id]


@pytest.mark.parametrize("why", ["delayed", "paused", "other queue", "no slot"])
async def test_handoff_leaves_a_job_queued_when_a_claim_would_not_take_it(
    backend: Backend, clock: ManualClock, why: str
) -> None:
    offer = handoff(
        **({"emails": 1} if why == "other queue" else {QUEUE: 0} if why == "no slot" else {})
    )
    if why == "paused":
        await backend.pause_queue(QUEUE, True)
    [job] = await backend.enqueue([new_job(clock, due_in=10 if why == "delayed" else 0)], offer)

    assert job.state is JobState.QUEUED
    assert job.attempts == 0
    assert job.lease_token is None
    assert await stored(backend, job.id) == job
    if why == "paused":
        await backend.pause_queue(QUEUE, False)
    clock.advance(10)
    assert await claim_ids(backend) == [job.id]


async def test_handoff_never_claims_the_job_a_dedup_key_matched(
    backend: Backend, clock: ManualClock
) -> None:
    existing = await enqueue(backend, clock, key="once")
    [job] = await backend.enqueue([new_job(clock, key="once")], handoff())

    assert job == existing
    assert job.state is JobState.QUEUED
    assert await claim_ids(backend) == [existing.id]


async def test_handoff_claims_at_most_the_offered_number_in_claim_order(
    backend: Backend, clock: ManualClock
) -> None:
    jobs = await backend.enqueue([new_job(clock) for _ in range(3)], handoff(default=2))

    # A backend may hand over fewer than offered (or none), never more, never out of order.
    handed = [job.id for job in jobs if job.state is JobState.RUNNING]
    assert handed == [job.id for job in jobs[: len(handed)]]
    assert len(handed) <= 2
    for job in jobs:
        assert await stored(backend, job.id) == job
    assert sorted(await claim_ids(backend)) == sorted(
        job.id for job in jobs if job.state is JobState.QUEUED
    )
