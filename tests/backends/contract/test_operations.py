"""Conformance: what operating tools read and do: attempt history, tags, listings by
tag, time and cursor, deleting and purging jobs, the workers registry and the audit trail.

What every store must do:

- every applied outcome, and every lease that crash recovery takes back
  (outcome ``"lease_expired"``), adds an attempt to the job's history: its
  number, worker, handler start, end, outcome and error type and message;
  ``get_attempts`` returns them oldest first, the latest ``MAX_ATTEMPT_HISTORY``;
- an outcome with ``remove`` deletes the job it finishes;
- ``tags`` come back as stored and filter listings (every given tag must match);
  ``list_jobs`` also filters on ``enqueued_at`` (``after <= t < before``) and
  pages with a cursor (``after``: the last id of the previous page);
- ``delete_job`` deletes a job that is not running (freeing its key);
  ``purge`` deletes every non-running job matching its filters;
- workers: a record per id, replaced on each register, listed when seen since
  the given time (older ones may be deleted), removed on request;
- the audit trail lists entries newest first and prunes by time.

Run one store: ``pytest tests/backends/contract/test_operations.py -k redis``
"""

from __future__ import annotations

import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import (
    MAX_ATTEMPT_HISTORY,
    AuditRecord,
    JobState,
    OutcomeKind,
    WorkerRecord,
)
from asyncjobs.backends import Backend

from ._support import (
    BOOM,
    LEASE,
    QUEUE,
    WORKER,
    claim_ids,
    enqueue,
    new_job,
    outcome,
    settle_ok,
    start,
    stored,
)

pytestmark = pytest.mark.anyio


# -- attempt history ------------------------------------------------------------------


async def test_each_attempt_is_recorded_with_its_outcome(
    backend: Backend, clock: ManualClock
) -> None:
    first = await start(backend, clock, max_attempts=3)
    began = clock.now()
    clock.advance(2)
    await settle_ok(
        backend,
        outcome(first, OutcomeKind.RETRY, due_at=clock.now(), error=BOOM, started_at=began),
    )
    [second] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    clock.advance(1)
    await settle_ok(backend, outcome(second, OutcomeKind.COMPLETE, result=b"1"))

    one, two = await backend.get_attempts(first.id)

    assert (one.number, one.worker_id, one.outcome) == (1, WORKER, "retry")
    assert (one.started_at, one.finished_at) == (began, began + 2)
    assert (one.error_type, one.error_message) == ("ValueError", "boom")
    assert (two.number, two.outcome, two.error_type) == (2, "complete", None)
    assert two.finished_at == clock.now()


async def test_a_lease_taken_back_by_recovery_is_an_attempt(
    backend: Backend, clock: ManualClock
) -> None:
    job = await start(backend, clock)
    clock.advance(LEASE + 1)
    assert await backend.recover_expired() == 1

    [attempt] = await backend.get_attempts(job.id)

    assert attempt.outcome == "lease_expired"
    assert attempt.number == 1
    assert attempt.worker_id == WORKER
    assert attempt.error_type == "LeaseExpired"


async def test_the_history_keeps_the_latest_attempts(backend: Backend, clock: ManualClock) -> None:
    job = await enqueue(backend, clock, max_attempts=MAX_ATTEMPT_HISTORY + 10)
    for _ in range(MAX_ATTEMPT_HISTORY + 3):
        [claimed] = await backend.claim(QUEUE, 1, WORKER, LEASE)
        await settle_ok(
            backend, outcome(claimed, OutcomeKind.RETRY, due_at=clock.now(), error=BOOM)
        )

    history = await backend.get_attempts(job.id)

    assert len(history) == MAX_ATTEMPT_HISTORY
    assert [attempt.number for attempt in history] == list(range(4, MAX_ATTEMPT_HISTORY + 4))


async def test_an_unknown_job_has_no_history(backend: Backend) -> None:
    assert await backend.get_attempts("missing") == []


async def test_remove_deletes_the_job_it_finishes(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock, key="once")

    await settle_ok(backend, outcome(job, OutcomeKind.COMPLETE, result=b"1", remove=True))

    assert await backend.get_job(job.id) is None
    assert await backend.get_attempts(job.id) == []
    assert (await enqueue(backend, clock, key="once")).id != job.id


# -- tags and listings --------------------------------------------------------------


async def test_tags_are_stored_and_filter_listings(backend: Backend, clock: ManualClock) -> None:
    t1 = await enqueue(backend, clock, tags={"tenant": "t1", "correlation_id": "c-9"})
    await enqueue(backend, clock, tags={"tenant": "t2"})
    await enqueue(backend, clock)

    assert (await stored(backend, t1.id)).tags == {"tenant": "t1", "correlation_id": "c-9"}
    assert [job.id for job in await backend.list_jobs(tags={"tenant": "t1"})] == [t1.id]
    both = {"tenant": "t1", "correlation_id": "c-9"}
    assert [job.id for job in await backend.list_jobs(tags=both)] == [t1.id]
    assert await backend.list_jobs(tags={"tenant": "t1", "correlation_id": "other"}) == []


async def test_list_jobs_filters_on_enqueue_time(backend: Backend, clock: ManualClock) -> None:
    early = await enqueue(backend, clock)
    clock.advance(10)
    middle = await enqueue(backend, clock)
    clock.advance(10)
    late = await enqueue(backend, clock)

    window = await backend.list_jobs(
        enqueued_after=middle.enqueued_at, enqueued_before=late.enqueued_at
    )
    since = await backend.list_jobs(enqueued_after=middle.enqueued_at)

    assert [job.id for job in window] == [middle.id]
    assert [job.id for job in since] == [late.id, middle.id]
    assert [job.id for job in await backend.list_jobs(enqueued_before=middle.enqueued_at)] == [
        early.id
    ]


async def test_list_jobs_pages_with_a_cursor(backend: Backend, clock: ManualClock) -> None:
    jobs = await backend.enqueue([new_job(clock) for _ in range(5)])
    newest_first = [job.id for job in reversed(jobs)]

    first = await backend.list_jobs(limit=2)
    second = await backend.list_jobs(limit=2, after=first[-1].id)
    third = await backend.list_jobs(limit=2, after=second[-1].id)

    assert [job.id for job in first + second + third] == newest_first
    assert await backend.list_jobs(after=newest_first[-1]) == []
    assert await backend.list_jobs(after="missing") == []


# -- deleting ---------------------------------------------------------------------------


async def test_delete_job_removes_a_job_that_is_not_running(
    backend: Backend, clock: ManualClock
) -> None:
    queued = await enqueue(backend, clock, key="k")
    running = await start(backend, clock, queue="other")

    assert await backend.delete_job(queued.id) is True
    assert await backend.delete_job(running.id) is False
    assert await backend.delete_job("missing") is False

    assert await backend.get_job(queued.id) is None
    assert (await stored(backend, running.id)).state is JobState.RUNNING
    assert await claim_ids(backend) == []  # nothing left of it to claim
    assert (await enqueue(backend, clock, key="k")).id != queued.id  # its key is free


async def test_purge_deletes_matching_jobs_but_never_running_ones(
    backend: Backend, clock: ManualClock
) -> None:
    done = await start(backend, clock, name="report")
    await settle_ok(backend, outcome(done, OutcomeKind.COMPLETE, result=b"1"))
    clock.advance(100)
    recent = await start(backend, clock, name="report")
    await settle_ok(backend, outcome(recent, OutcomeKind.DEAD, error=BOOM))
    running = await start(backend, clock, name="report")
    other = await enqueue(backend, clock, name="mail", tags={"tenant": "t1"})

    assert await backend.purge(name="report", finished_before=clock.now() - 50) == 1
    assert await backend.get_job(done.id) is None
    assert await backend.purge(tags={"tenant": "t1"}) == 1
    assert await backend.get_job(other.id) is None
    assert await backend.purge(name="report") == 1  # the dead one; not the running one
    assert [job.id for job in await backend.list_jobs()] == [running.id]


# -- workers ------------------------------------------------------------------------------


async def test_workers_register_replace_age_out_and_leave(
    backend: Backend, clock: ManualClock
) -> None:
    now = clock.now()
    await backend.register_worker(WorkerRecord(id="w1", last_seen=now, data=b'{"v": 1}'))
    await backend.register_worker(WorkerRecord(id="w2", last_seen=now - 120, data=b"{}"))
    await backend.register_worker(WorkerRecord(id="w1", last_seen=now, data=b'{"v": 2}'))

    alive = await backend.list_workers(seen_since=now - 60)

    assert alive == [WorkerRecord(id="w1", last_seen=now, data=b'{"v": 2}')]
    await backend.remove_worker("w1")
    await backend.remove_worker("unknown")
    assert await backend.list_workers(seen_since=now - 600) in (
        [],
        [WorkerRecord(id="w2", last_seen=now - 120, data=b"{}")],  # if not deleted yet
    )


# -- the audit trail --------------------------------------------------------------------


async def test_the_audit_trail_lists_newest_first_and_prunes(
    backend: Backend, clock: ManualClock
) -> None:
    now = clock.now()
    records = [AuditRecord(at=now + i, data=f'{{"n": {i}}}'.encode()) for i in range(5)]
    for record in records:
        await backend.record_audit(record)

    assert await backend.list_audit(limit=2) == [records[4], records[3]]
    assert await backend.list_audit(limit=10, before=now + 2) == [records[1], records[0]]
    assert await backend.prune_audit(now + 3) == 3
    assert await backend.list_audit() == [records[4], records[3]]
