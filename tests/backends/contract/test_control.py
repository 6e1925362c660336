"""QueueControl: operator actions, seen by every process that shares the store.

Specifies :meth:`QueueControl.cancel`, :meth:`~QueueControl.retry_dead`,
:meth:`~QueueControl.pause_queue` and :meth:`~QueueControl.prune`:

- ``cancel`` finishes a queued job at once (``cancelled``, never claimed); flags
  a running one with ``cancel_requested`` and leaves its lease alone (its
  worker learns of it from its next heartbeat, see ``test_lifecycle_leases``);
  leaves a finished job as it is. It returns the job after the change, or
  ``None`` for an unknown id;
- ``retry_dead`` queues a dead job again at ``due_at`` with ``attempts`` back to
  0. Any other job comes back unchanged, an unknown id is ``None``. It never
  lets two active jobs share a dedup key: when an active job took the dead
  job's key meanwhile, that job keeps it;
- ``pause_queue`` stops claims from one queue until it is resumed (other
  queues go on), and ``queue_stats`` shows the flag;
- ``prune(cutoffs)`` deletes the finished jobs whose ``finished_at`` is before
  their state's cutoff, keeps the states that have no cutoff and every active
  job, and returns how many it deleted.

Run one store: ``pytest tests/backends/contract/test_control.py -k sqlite``
"""

from __future__ import annotations

import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import ACTIVE_STATES, FINISHED_STATES, JobState
from asyncjobs.backends import Backend
from tests.backends.contract._support import (
    LEASE,
    QUEUE,
    WORKER,
    claim_ids,
    enqueue,
    in_state,
    start,
    stored,
)

pytestmark = pytest.mark.anyio


# -- cancel --------------------------------------------------------------------


async def test_cancel_a_queued_job_finishes_it(backend: Backend, clock: ManualClock) -> None:
    job = await enqueue(backend, clock)

    cancelled = await backend.cancel(job.id)

    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    assert await stored(backend, job.id) == cancelled
    assert await claim_ids(backend) == []


async def test_cancel_a_running_job_flags_it(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)

    flagged = await backend.cancel(job.id)

    assert flagged is not None
    assert flagged.state is JobState.RUNNING
    assert flagged.cancel_requested
    assert flagged.lease_token == job.lease_token
    assert await stored(backend, job.id) == flagged


@pytest.mark.parametrize("state", sorted(FINISHED_STATES))
async def test_cancel_a_finished_job_changes_nothing(
    backend: Backend, clock: ManualClock, state: JobState
) -> None:
    job = await in_state(backend, clock, state)
    clock.advance(5)

    assert await backend.cancel(job.id) == job
    assert await stored(backend, job.id) == job


async def test_cancel_an_unknown_job_is_none(backend: Backend) -> None:
    assert await backend.cancel("no-such-job") is None


# -- retry_dead ----------------------------------------------------------------


async def test_retry_dead_queues_the_job_with_fresh_attempts(
    backend: Backend, clock: ManualClock
) -> None:
    dead = await in_state(backend, clock, JobState.DEAD)
    due_at = clock.now() + 5

    revived = await backend.retry_dead(dead.id, due_at)

    assert revived is not None
    assert revived.state is JobState.QUEUED
    assert revived.attempts == 0
    assert revived.due_at == due_at
    assert await stored(backend, dead.id) == revived
    assert await claim_ids(backend) == []
    clock.advance(5)
    [job] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    assert job.id == dead.id
    assert job.attempts == 1


@pytest.mark.parametrize("state", sorted(set(JobState) - {JobState.DEAD}))
async def test_retry_dead_leaves_other_jobs_unchanged(
    backend: Backend, clock: ManualClock, state: JobState
) -> None:
    job = await in_state(backend, clock, state)

    assert await backend.retry_dead(job.id, clock.now()) == job
    assert await stored(backend, job.id) == job


async def test_retry_dead_of_an_unknown_job_is_none(backend: Backend, clock: ManualClock) -> None:
    assert await backend.retry_dead("no-such-job", clock.now()) is None


async def test_retry_dead_never_makes_two_active_jobs_share_a_key(
    backend: Backend, clock: ManualClock
) -> None:
    dead = await in_state(backend, clock, JobState.DEAD, key="k")
    fresh = await enqueue(backend, clock, key="k")

    await backend.retry_dead(dead.id, clock.now())

    jobs = [await stored(backend, dead.id), await stored(backend, fresh.id)]
    active_with_key = [job for job in jobs if job.state in ACTIVE_STATES and job.key == "k"]
    assert len(active_with_key) == 1
    assert await stored(backend, fresh.id) == fresh
    assert (await enqueue(backend, clock, key="k")).id == fresh.id


# -- pausing queues ------------------------------------------------------------


async def test_a_paused_queue_claims_nothing_until_resumed(
    backend: Backend, clock: ManualClock
) -> None:
    paused_job = await enqueue(backend, clock, queue="a")
    other_job = await enqueue(backend, clock, queue="b")

    await backend.pause_queue("a", True)

    assert await claim_ids(backend, queue="a") == []
    assert await claim_ids(backend, queue="b") == [other_job.id]
    stats = {s.queue: s for s in await backend.queue_stats()}
    assert stats["a"].paused
    assert not stats["b"].paused

    await backend.pause_queue("a", False)

    assert await claim_ids(backend, queue="a") == [paused_job.id]
    assert not {s.queue: s for s in await backend.queue_stats()}["a"].paused


# -- prune ---------------------------------------------------------------------


async def test_prune_deletes_finished_jobs_older_than_their_state_cutoff(
    backend: Backend, clock: ManualClock
) -> None:
    old = {state: await in_state(backend, clock, state) for state in FINISHED_STATES}
    clock.advance(100)
    recent = await in_state(backend, clock, JobState.COMPLETE)
    queued = await enqueue(backend, clock, due_in=-500)
    running = await start(backend, clock, queue="busy", due_in=-500)
    clock.advance(100)
    cutoff = clock.now() - 150  # between the old jobs and the recent one
    far_future = clock.now() + 10_000

    deleted = await backend.prune(
        {
            JobState.COMPLETE: cutoff,
            JobState.DEAD: cutoff,
            # no cutoff for cancelled jobs: they are kept
            JobState.QUEUED: far_future,
            JobState.RUNNING: far_future,
        }
    )

    assert deleted == 2
    assert await backend.get_job(old[JobState.COMPLETE].id) is None
    assert await backend.get_job(old[JobState.DEAD].id) is None
    assert await stored(backend, old[JobState.CANCELLED].id) == old[JobState.CANCELLED]
    assert await stored(backend, recent.id) == recent
    assert await stored(backend, queued.id) == queued
    assert await stored(backend, running.id) == running
    assert await backend.prune({JobState.COMPLETE: cutoff, JobState.DEAD: cutoff}) == 0
