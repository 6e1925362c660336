"""Inspection: the reads behind the console, the CLI and tools (never the hot path).

Specifies :meth:`Inspection.list_jobs` and :meth:`Inspection.queue_stats`
(``get_job`` is specified in ``test_lifecycle_enqueue``; every module reads
with it):

- ``list_jobs`` returns the jobs that match every filter given (``queue``,
  ``state``, ``name``, ``schedule``), newest enqueued first, paged with
  ``limit`` and ``offset``. Newest means enqueue order, not ``enqueued_at``
  alone: the jobs of one batch share a time and still come newest first;
- ``queue_stats`` has one entry per queue that has jobs or is paused, with
  counts by state (a state with no jobs counts 0) and the paused flag; an empty
  store has none. The order of the entries is not pinned.

Run one store: ``pytest tests/backends/contract/test_inspection.py -k sqlite``
"""

from __future__ import annotations

from typing import Any

import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import JobState
from asyncjobs.backends import Backend
from tests.backends.contract._support import claim_ids, enqueue, in_state, new_job

pytestmark = pytest.mark.anyio


# -- listing and counting ------------------------------------------------------


async def test_list_jobs_filters_newest_first_with_paging(
    backend: Backend, clock: ManualClock
) -> None:
    # One batch, so every job has the same enqueued_at: ties go newest enqueued first.
    j1, j2, j3, j4 = await backend.enqueue(
        [
            new_job(clock, queue="a", name="x"),
            new_job(clock, queue="b", name="y", schedule="nightly"),
            new_job(clock, queue="a", name="y"),
            new_job(clock, queue="c", name="x"),
        ]
    )
    assert await claim_ids(backend, queue="c") == [j4.id]

    async def ids(**filters: Any) -> list[str]:
        return [job.id for job in await backend.list_jobs(**filters)]

    assert await ids() == [j4.id, j3.id, j2.id, j1.id]
    assert await ids(queue="a") == [j3.id, j1.id]
    assert await ids(state=JobState.RUNNING) == [j4.id]
    assert await ids(name="y") == [j3.id, j2.id]
    assert await ids(name="x", state=JobState.QUEUED) == [j1.id]
    assert await ids(schedule="nightly") == [j2.id]
    assert await ids(queue="b", name="x") == []
    assert await ids(limit=2) == [j4.id, j3.id]
    assert await ids(limit=2, offset=2) == [j2.id, j1.id]
    assert await ids(offset=3) == [j1.id]
    assert await ids(offset=4) == []


async def test_list_jobs_puts_later_enqueued_jobs_first(
    backend: Backend, clock: ManualClock
) -> None:
    first = await enqueue(backend, clock)
    clock.advance(1)
    second = await enqueue(backend, clock, due_in=-100)  # due earlier, enqueued later

    assert [job.id for job in await backend.list_jobs()] == [second.id, first.id]


async def test_queue_stats_counts_jobs_per_queue_and_state(
    backend: Backend, clock: ManualClock
) -> None:
    assert await backend.queue_stats() == []
    # Running and complete first: starting a job claims the queue's due jobs.
    for state in [JobState.RUNNING, JobState.COMPLETE, JobState.QUEUED, JobState.QUEUED]:
        await in_state(backend, clock, state, queue="a")
    await in_state(backend, clock, JobState.DEAD, queue="b")
    await backend.pause_queue("idle", True)

    stats = {s.queue: s for s in await backend.queue_stats()}

    assert set(stats) == {"a", "b", "idle"}
    a, b, idle = stats["a"], stats["b"], stats["idle"]
    assert [a.count(state) for state in JobState] == [2, 1, 1, 0, 0]
    assert [b.count(state) for state in JobState] == [0, 0, 0, 1, 0]
    assert [idle.count(state) for state in JobState] == [0] * len(JobState)
    assert (a.paused, b.paused, idle.paused) == (False, False, True)
