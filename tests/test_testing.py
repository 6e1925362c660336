"""The helpers users get for their own tests."""

from __future__ import annotations

import pytest

from asyncjobs import JobRuntime, JobState
from asyncjobs.testing import ManualClock, drain

pytestmark = pytest.mark.anyio


async def test_drain_runs_due_jobs_and_leaves_later_ones() -> None:
    clock = ManualClock()
    runtime = JobRuntime(clock=clock, queues={"default": 2})
    ran: list[int] = []

    @runtime.job(backoff=30, max_attempts=2)
    async def work(n: int) -> None:
        ran.append(n)
        if n == 3 and len([r for r in ran if r == 3]) == 1:
            raise RuntimeError("first try fails")

    async with runtime:
        await runtime.enqueue_many([work.call(n) for n in range(5)])
        later = await work.options(delay=60).enqueue(99)
        await drain(runtime)
        assert sorted(ran) == [0, 1, 2, 3, 4]
        assert await later.status() is JobState.QUEUED
        clock.advance(60)
        await drain(runtime)
        assert sorted(ran) == [0, 1, 2, 3, 3, 4, 99]
