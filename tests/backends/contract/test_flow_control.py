"""Conformance: claims under cluster-wide limits, partition rounds, and handler starts.

What every store must do (the ``FlowControl`` group and the parts of the
lifecycle that flow control relies on):

- ``claim_limited`` takes due jobs in claim order within the limits it is
  given: ``global_concurrency`` and ``partition_concurrency`` count the
  queue's running jobs of every worker (plain claims too); ``rate`` and
  ``job_rates`` are sliding windows of claims judged by the store's clock.
  A job held back stays queued with its attempts unchanged, later jobs may
  still be taken, and the reply names the limit and, for a rate, when its
  window lets the next job in;
- a queue claimed under a concurrency limit wakes its waiters when one of its
  running jobs ends;
- partitions take turns in claim order (rounds), and a new partition joins
  at the current round;
- a claim leaves ``started_at`` unset: the worker reports the start through
  ``settle`` (``starts`` or an outcome's ``started_at``), and ``queue_stats``
  tells claimed-but-not-started and delayed jobs apart, per partition when asked.

Run one store: ``pytest tests/backends/contract/test_flow_control.py -k redis``
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import ClaimLimits, ClaimReply, JobStart, JobState, OutcomeKind, RateWindow
from asyncjobs.backends import Backend

from ._support import LEASE, QUEUE, WORKER, claim_ids, enqueue, new_job, outcome, settle_ok, stored

pytestmark = pytest.mark.anyio


async def limited(
    backend: Backend, limits: ClaimLimits, limit: int = 100, worker: str = WORKER
) -> ClaimReply:
    """A limited claim of ``QUEUE``."""
    return await backend.claim_limited(QUEUE, limit, worker, LEASE, limits)


async def enqueue_many(
    backend: Backend, clock: ManualClock, count: int, **fields: Any
) -> list[str]:
    """Enqueue *count* jobs with *fields*; return their ids in order."""
    jobs = await backend.enqueue([new_job(clock, **fields) for _ in range(count)])
    return [job.id for job in jobs]


# -- global concurrency -------------------------------------------------------------


async def test_global_concurrency_caps_running_jobs_across_workers(
    backend: Backend, clock: ManualClock
) -> None:
    ids = await enqueue_many(backend, clock, 5)
    limits = ClaimLimits(global_concurrency=2)

    first = await limited(backend, limits, worker="w1")
    second = await limited(backend, limits, worker="w2")

    assert [job.id for job in first.jobs] == ids[:2]
    assert second.jobs == []
    assert second.held_by == "global_concurrency"
    assert second.retry_at is None
    for job_id in ids[2:]:
        job = await stored(backend, job_id)
        assert job.state is JobState.QUEUED
        assert job.attempts == 0

    await settle_ok(backend, outcome(first.jobs[0], OutcomeKind.COMPLETE, result=b"1"))
    third = await limited(backend, limits, worker="w2")
    assert [job.id for job in third.jobs] == ids[2:3]


async def test_global_concurrency_counts_jobs_taken_by_plain_claims(
    backend: Backend, clock: ManualClock
) -> None:
    await enqueue_many(backend, clock, 3)
    assert len(await claim_ids(backend, limit=2)) == 2

    reply = await limited(backend, ClaimLimits(global_concurrency=2))

    assert reply.jobs == []
    assert reply.held_by == "global_concurrency"


async def test_a_limit_that_does_not_bind_claims_like_a_plain_claim(
    backend: Backend, clock: ManualClock
) -> None:
    ids = await enqueue_many(backend, clock, 3, partition="p")
    limits = ClaimLimits(
        global_concurrency=10,
        partition_concurrency=10,
        rate=RateWindow(limit=10, per=1.0),
        job_rates={"tasks.example": RateWindow(limit=10, per=1.0)},
    )

    reply = await limited(backend, limits, limit=3)

    assert [job.id for job in reply.jobs] == ids
    assert reply.held_by is None
    assert all(job.state is JobState.RUNNING and job.attempts == 1 for job in reply.jobs)


async def test_nothing_due_is_not_held_by_a_limit(backend: Backend, clock: ManualClock) -> None:
    await enqueue(backend, clock, due_in=60)

    reply = await limited(backend, ClaimLimits(global_concurrency=1))

    assert reply.jobs == []
    assert reply.held_by is None


async def test_a_paused_queue_claims_nothing_under_limits(
    backend: Backend, clock: ManualClock
) -> None:
    await enqueue(backend, clock)
    await backend.pause_queue(QUEUE, True)

    reply = await limited(backend, ClaimLimits(global_concurrency=5))

    assert reply.jobs == []


# -- partitions ---------------------------------------------------------------------


async def test_partition_concurrency_skips_full_partitions_and_takes_later_jobs(
    backend: Backend, clock: ManualClock
) -> None:
    a = await enqueue_many(backend, clock, 4, partition="a")
    b = await enqueue_many(backend, clock, 2, partition="b")
    loose = await enqueue_many(backend, clock, 2)
    limits = ClaimLimits(partition_concurrency=1)

    reply = await limited(backend, limits)

    assert sorted(job.id for job in reply.jobs) == sorted([a[0], b[0], *loose])
    assert reply.held_by == "partition_concurrency"
    again = await limited(backend, limits, worker="w2")
    assert again.jobs == []
    assert again.held_by == "partition_concurrency"

    [a0] = [job for job in reply.jobs if job.id == a[0]]
    await settle_ok(backend, outcome(a0, OutcomeKind.COMPLETE, result=b"1"))
    after = await limited(backend, limits, worker="w2")
    assert [job.id for job in after.jobs] == [a[1]]


async def test_partitions_take_turns_in_claim_order(backend: Backend, clock: ManualClock) -> None:
    a = await enqueue_many(backend, clock, 3, partition="a")
    b = await enqueue_many(backend, clock, 2, partition="b")

    order = [await claim_ids(backend, limit=1) for _ in range(5)]

    assert order == [[a[0]], [b[0]], [a[1]], [b[1]], [a[2]]]


async def test_a_new_partition_joins_at_the_current_round(
    backend: Backend, clock: ManualClock
) -> None:
    a = await enqueue_many(backend, clock, 4, partition="a")
    assert await claim_ids(backend, limit=2) == a[:2]  # rounds 0 and 1 claimed

    [c] = await enqueue_many(backend, clock, 1, partition="c")

    # c joins round 1 (the current one), not round 0 or behind all of a's jobs.
    assert await claim_ids(backend, limit=1) == [c]
    assert await claim_ids(backend, limit=3) == a[2:]


async def test_priority_comes_before_partition_rounds(backend: Backend, clock: ManualClock) -> None:
    a = await enqueue_many(backend, clock, 2, partition="a")
    [urgent] = await enqueue_many(backend, clock, 1, partition="a", priority=-1)
    [loose] = await enqueue_many(backend, clock, 1)

    assert await claim_ids(backend, limit=1) == [urgent]
    assert await claim_ids(backend, limit=1) == [a[0]]
    # Jobs without a partition are all in round 0, in due-time order among themselves.
    assert await claim_ids(backend, limit=2) == [loose, a[1]]


async def test_a_small_partition_starts_within_one_round_of_a_big_one(
    backend: Backend, clock: ManualClock
) -> None:
    big = await enqueue_many(backend, clock, 200, partition="big")
    small = [(await enqueue_many(backend, clock, 3, partition=f"small-{i}"))[0] for i in range(20)]

    first = await claim_ids(backend, limit=21)

    # Round 0 holds one job of each partition: every small partition's first job.
    assert sorted(first) == sorted([big[0], *small])


# -- rate windows ---------------------------------------------------------------------


async def test_a_queue_rate_is_a_sliding_window_of_claims(
    backend: Backend, clock: ManualClock
) -> None:
    ids = await enqueue_many(backend, clock, 6)
    limits = ClaimLimits(rate=RateWindow(limit=3, per=10.0))
    start = clock.now()

    first = await limited(backend, limits, limit=2)
    clock.advance(4)
    second = await limited(backend, limits)
    assert [job.id for job in first.jobs + second.jobs] == ids[:3]
    assert second.held_by == "rate_limit"
    assert second.retry_at == pytest.approx(start + 10.0)

    clock.advance(5.5)  # 9.5 s in: the first two claims are still inside the window
    held = await limited(backend, limits)
    assert held.jobs == []
    assert held.held_by == "rate_limit"
    assert held.retry_at == pytest.approx(start + 10.0)

    clock.advance(0.5)  # 10 s in: the first two have left the window
    opened = await limited(backend, limits)
    assert [job.id for job in opened.jobs] == ids[3:5]
    assert opened.retry_at == pytest.approx(start + 14.0)


async def test_a_job_rate_holds_back_that_name_only(backend: Backend, clock: ManualClock) -> None:
    slow = await enqueue_many(backend, clock, 2, name="partner.call")
    fast = await enqueue_many(backend, clock, 2, name="tasks.fast")
    limits = ClaimLimits(job_rates={"partner.call": RateWindow(limit=1, per=60.0)})

    reply = await limited(backend, limits)

    assert sorted(job.id for job in reply.jobs) == sorted([slow[0], *fast])
    assert reply.held_by == "job_rate_limit"
    assert reply.retry_at == pytest.approx(clock.now() + 60.0)
    held = await stored(backend, slow[1])
    assert held.state is JobState.QUEUED
    assert held.attempts == 0


async def test_a_job_rate_is_shared_by_every_queue(backend: Backend, clock: ManualClock) -> None:
    await enqueue(backend, clock, name="partner.call", queue="one")
    await enqueue(backend, clock, name="partner.call", queue="two")
    limits = ClaimLimits(job_rates={"partner.call": RateWindow(limit=1, per=60.0)})

    one = await backend.claim_limited("one", 5, WORKER, LEASE, limits)
    two = await backend.claim_limited("two", 5, WORKER, LEASE, limits)

    assert len(one.jobs) == 1
    assert two.jobs == []
    assert two.held_by == "job_rate_limit"


# -- wake-ups -------------------------------------------------------------------------


async def test_a_job_ending_in_a_concurrency_limited_queue_wakes_its_waiters(
    backend: Backend, clock: ManualClock
) -> None:
    await enqueue_many(backend, clock, 2)
    limits = ClaimLimits(global_concurrency=1)
    [running] = (await limited(backend, limits)).jobs
    assert (await limited(backend, limits)).held_by == "global_concurrency"
    woken = anyio.Event()

    async def wait() -> None:
        await backend.wait_for_work([QUEUE], None)
        woken.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        await settle_ok(backend, outcome(running, OutcomeKind.COMPLETE, result=b"1"))
        with anyio.fail_after(5):
            await woken.wait()

    assert len((await limited(backend, limits)).jobs) == 1


# -- starts and counts ------------------------------------------------------------------


async def test_a_reported_start_becomes_the_jobs_started_at(
    backend: Backend, clock: ManualClock
) -> None:
    await enqueue_many(backend, clock, 2)
    first, second = await backend.claim(QUEUE, 2, WORKER, LEASE)
    assert first.started_at is None

    clock.advance(2)
    assert first.lease_token
    assert second.lease_token
    stale = JobStart(job_id=second.id, lease_token="not-the-token", started_at=clock.now())
    fresh = JobStart(job_id=first.id, lease_token=first.lease_token, started_at=clock.now())
    assert await backend.settle([], [fresh, stale]) == []

    assert (await stored(backend, first.id)).started_at == clock.now()
    assert (await stored(backend, second.id)).started_at is None
    [stats] = await backend.queue_stats()
    assert stats.count(JobState.RUNNING) == 2
    assert stats.claimed == 1
    assert stats.started == 1


async def test_an_outcome_carries_its_handlers_start(backend: Backend, clock: ManualClock) -> None:
    await enqueue(backend, clock)
    [job] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    began = clock.now() + 1
    clock.advance(3)

    await settle_ok(backend, outcome(job, OutcomeKind.COMPLETE, result=b"1", started_at=began))

    done = await stored(backend, job.id)
    assert done.started_at == began
    assert done.finished_at == clock.now()


async def test_queue_stats_split_delayed_jobs_and_filter_by_partition(
    backend: Backend, clock: ManualClock
) -> None:
    await enqueue_many(backend, clock, 2, partition="a")
    await enqueue_many(backend, clock, 1, partition="a", due_in=60)
    await enqueue_many(backend, clock, 4, partition="b")

    [everything] = await backend.queue_stats()
    [only_a] = await backend.queue_stats(partition="a")

    assert everything.count(JobState.QUEUED) == 7
    assert everything.delayed == 1
    assert everything.waiting == 6
    assert only_a.count(JobState.QUEUED) == 3
    assert only_a.delayed == 1


async def test_list_jobs_filters_by_partition(backend: Backend, clock: ManualClock) -> None:
    a = await enqueue_many(backend, clock, 2, partition="a")
    await enqueue_many(backend, clock, 2, partition="b")
    await enqueue_many(backend, clock, 1)

    listed = await backend.list_jobs(partition="a")

    assert sorted(job.id for job in listed) == sorted(a)
    assert all(job.partition == "a" for job in listed)
