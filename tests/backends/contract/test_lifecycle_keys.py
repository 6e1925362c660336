"""Conformance: dedup keys, their scopes and the conflict rules of ``enqueue``.

What every store must do:

- the holder's ``key_scope`` says how long it holds its key: ``queued`` until
  it is claimed, ``active`` (the default) until it finishes, ``window`` until
  ``key_expires_at`` whatever its state (a throttle; pruning the job ends it);
- ``on_conflict="return"`` stores nothing and returns the holder;
  ``"replace"`` gives a queued holder the new payload and due time (its id
  and place otherwise kept), queues the new job behind a running holder
  (taking the key), and returns a finished window holder;
- a job queued behind a running holder names it in ``waits_for`` and is not
  claimed, handed off or counted due (``next_due_at``) until that job is
  finished (complete, dead, cancelled) or deleted, however many attempts it
  still takes; a later ``"replace"`` updates the waiting job, which keeps
  waiting; once released it runs at its own due time;
  ``"raise"`` raises :class:`DuplicateJobError` and stores nothing of the batch.

Run one store: ``pytest tests/backends/contract/test_lifecycle_keys.py -k sqlite``
"""

from __future__ import annotations

import pytest

from asyncjobs import DuplicateJobError
from asyncjobs._clock import ManualClock
from asyncjobs._models import JobState, KeyScope, OnConflict, OutcomeKind
from asyncjobs.backends import Backend

from ._support import (
    BOOM,
    QUEUE,
    claim_ids,
    enqueue,
    handoff,
    new_job,
    outcome,
    settle_ok,
    start,
    stored,
)

pytestmark = pytest.mark.anyio

KEY = "customer:9"


async def test_a_queued_scope_frees_the_key_once_its_job_is_claimed(
    backend: Backend, clock: ManualClock
) -> None:
    first = await enqueue(backend, clock, key=KEY, key_scope=KeyScope.QUEUED)
    again = await enqueue(backend, clock, key=KEY, key_scope=KeyScope.QUEUED)
    assert again.id == first.id

    assert await claim_ids(backend) == [first.id]
    second = await enqueue(backend, clock, key=KEY, key_scope=KeyScope.QUEUED)

    assert second.id != first.id
    assert second.state is JobState.QUEUED


async def test_an_active_scope_holds_the_key_until_its_job_finishes(
    backend: Backend, clock: ManualClock
) -> None:
    running = await start(backend, clock, key=KEY)
    assert (await enqueue(backend, clock, key=KEY)).id == running.id

    await settle_ok(backend, outcome(running, OutcomeKind.COMPLETE, result=b"1"))
    after = await enqueue(backend, clock, key=KEY)

    assert after.id != running.id


async def test_a_window_scope_holds_the_key_after_its_job_finished(
    backend: Backend, clock: ManualClock
) -> None:
    window = {"key": KEY, "key_scope": KeyScope.WINDOW, "key_expires_at": clock.now() + 60}
    running = await start(backend, clock, **window)
    await settle_ok(backend, outcome(running, OutcomeKind.COMPLETE, result=b"1"))

    clock.advance(59)
    throttled = await enqueue(backend, clock, **window)
    assert throttled.id == running.id
    assert throttled.state is JobState.COMPLETE

    clock.advance(1.5)
    fresh = await enqueue(backend, clock, key=KEY, key_scope=KeyScope.WINDOW)
    assert fresh.id != running.id


async def test_replace_gives_a_queued_holder_the_new_payload_and_due_time(
    backend: Backend, clock: ManualClock
) -> None:
    holder = await enqueue(backend, clock, key=KEY, payload=b'{"v": 1}', due_in=30)
    replacement = new_job(
        clock, key=KEY, payload=b'{"v": 2}', due_in=0, on_conflict=OnConflict.REPLACE
    )

    [returned] = await backend.enqueue([replacement])

    assert returned.id == holder.id
    assert returned.payload == b'{"v": 2}'
    assert returned.due_at == replacement.due_at
    assert returned.state is JobState.QUEUED
    assert await stored(backend, holder.id) == returned
    # Due now, and claimed once: the replaced due time left nothing behind.
    assert await claim_ids(backend) == [holder.id]
    clock.advance(60)
    assert await claim_ids(backend) == []


async def test_replace_can_move_a_holder_later(backend: Backend, clock: ManualClock) -> None:
    holder = await enqueue(backend, clock, key=KEY)
    later = new_job(clock, key=KEY, due_in=30, on_conflict=OnConflict.REPLACE)

    [returned] = await backend.enqueue([later])

    assert returned.id == holder.id
    assert await claim_ids(backend) == []
    assert await backend.next_due_at([QUEUE]) == later.due_at
    clock.advance(30)
    assert await claim_ids(backend) == [holder.id]


async def test_replace_queues_a_new_job_behind_a_running_holder(
    backend: Backend, clock: ManualClock
) -> None:
    running = await start(backend, clock, key=KEY, payload=b'{"v": 1}')
    replacement = new_job(clock, key=KEY, payload=b'{"v": 2}', on_conflict=OnConflict.REPLACE)

    [queued] = await backend.enqueue([replacement])

    assert queued.id == replacement.id
    assert queued.state is JobState.QUEUED
    assert queued.waits_for == running.id
    assert (await stored(backend, running.id)).payload == b'{"v": 1}'
    # The new job holds the key now; the running one finishing does not free it.
    await settle_ok(backend, outcome(running, OutcomeKind.COMPLETE, result=b"1"))
    assert (await enqueue(backend, clock, key=KEY)).id == replacement.id


async def test_a_job_queued_behind_a_running_holder_waits_until_it_finishes(
    backend: Backend, clock: ManualClock
) -> None:
    running = await start(backend, clock, key=KEY, payload=b'{"v": 1}', max_attempts=3)
    replacement = new_job(clock, key=KEY, payload=b'{"v": 2}', on_conflict=OnConflict.REPLACE)
    await backend.enqueue([replacement])

    waiting = await stored(backend, replacement.id)
    assert (waiting.state, waiting.waits_for, waiting.due_at) == (
        JobState.QUEUED,
        running.id,
        replacement.due_at,
    )
    assert await claim_ids(backend) == []
    assert await backend.next_due_at([QUEUE]) is None
    [stats] = [s for s in await backend.queue_stats() if s.queue == QUEUE]
    assert stats.count(JobState.QUEUED) == 1

    # A retry of the holder keeps it ahead: the two never run at once.
    retry = outcome(running, OutcomeKind.RETRY, error=BOOM, due_at=clock.now())
    await settle_ok(backend, retry)
    assert await claim_ids(backend) == [running.id]
    again = await stored(backend, running.id)
    assert await claim_ids(backend) == []

    await settle_ok(backend, outcome(again, OutcomeKind.COMPLETE, result=b"1"))
    released = await stored(backend, replacement.id)
    assert (released.waits_for, released.payload) == (None, b'{"v": 2}')
    assert await backend.next_due_at([QUEUE]) == replacement.due_at
    assert await claim_ids(backend) == [replacement.id]


@pytest.mark.parametrize("ending", ["dead", "cancelled", "deleted"])
async def test_a_waiting_job_is_released_however_its_holder_ends(
    backend: Backend, clock: ManualClock, ending: str
) -> None:
    running = await start(backend, clock, key=KEY)
    replacement = new_job(clock, key=KEY, due_in=30, on_conflict=OnConflict.REPLACE)
    await backend.enqueue([replacement])

    if ending == "dead":
        await settle_ok(backend, outcome(running, OutcomeKind.DEAD, error=BOOM))
    elif ending == "cancelled":
        await settle_ok(backend, outcome(running, OutcomeKind.CANCELLED))
    else:  # a running job cannot be deleted: between two attempts it can
        retry = outcome(running, OutcomeKind.RETRY, error=BOOM, due_at=clock.now() + 60)
        await settle_ok(backend, retry)
        assert (await stored(backend, replacement.id)).waits_for == running.id
        assert await backend.delete_job(running.id)

    assert (await stored(backend, replacement.id)).waits_for is None
    # Released, it keeps its own due time.
    assert await claim_ids(backend) == []
    assert await backend.next_due_at([QUEUE]) == replacement.due_at
    clock.advance(30)
    assert await claim_ids(backend) == [replacement.id]


async def test_a_replace_updates_the_waiting_job_which_keeps_waiting(
    backend: Backend, clock: ManualClock
) -> None:
    running = await start(backend, clock, key=KEY)
    first = new_job(clock, key=KEY, payload=b'{"v": 2}', on_conflict=OnConflict.REPLACE)
    await backend.enqueue([first])
    second = new_job(clock, key=KEY, payload=b'{"v": 3}', due_in=5, on_conflict=OnConflict.REPLACE)

    [returned] = await backend.enqueue([second], handoff(**{QUEUE: 1}))

    assert returned.id == first.id
    waiting = await stored(backend, first.id)
    assert (waiting.payload, waiting.due_at, waiting.waits_for) == (
        b'{"v": 3}',
        second.due_at,
        running.id,
    )
    assert await claim_ids(backend) == []
    await settle_ok(backend, outcome(running, OutcomeKind.COMPLETE, result=b"1"))
    clock.advance(5)
    assert await claim_ids(backend) == [first.id]


async def test_a_waiting_job_is_never_handed_off(backend: Backend, clock: ManualClock) -> None:
    running = await start(backend, clock, key=KEY)
    replacement = new_job(clock, key=KEY, on_conflict=OnConflict.REPLACE)

    [job] = await backend.enqueue([replacement], handoff(**{QUEUE: 1}))

    assert (job.state, job.waits_for) == (JobState.QUEUED, running.id)
    assert await claim_ids(backend) == []


async def test_replace_without_a_holder_simply_enqueues(
    backend: Backend, clock: ManualClock
) -> None:
    new = new_job(clock, key=KEY, on_conflict=OnConflict.REPLACE)

    [job] = await backend.enqueue([new])

    assert job.id == new.id


async def test_raise_stores_nothing_of_the_batch(backend: Backend, clock: ManualClock) -> None:
    holder = await enqueue(backend, clock, key=KEY)
    other = new_job(clock)
    clash = new_job(clock, key=KEY, on_conflict=OnConflict.RAISE)

    with pytest.raises(DuplicateJobError) as caught:
        await backend.enqueue([other, clash])

    assert caught.value.job_id == holder.id
    assert caught.value.key == KEY
    assert await backend.get_job(other.id) is None
    assert await backend.get_job(clash.id) is None
    assert [job.id for job in await backend.list_jobs()] == [holder.id]


async def test_raise_meets_an_earlier_job_of_the_same_batch(
    backend: Backend, clock: ManualClock
) -> None:
    first = new_job(clock, key=KEY)
    second = new_job(clock, key=KEY, on_conflict=OnConflict.RAISE)

    with pytest.raises(DuplicateJobError):
        await backend.enqueue([first, second])

    assert await backend.list_jobs() == []


async def test_raise_without_a_holder_enqueues(backend: Backend, clock: ManualClock) -> None:
    new = new_job(clock, key=KEY, on_conflict=OnConflict.RAISE)

    [job] = await backend.enqueue([new])

    assert job.id == new.id


async def test_a_dead_job_holding_its_own_window_key_can_be_retried(
    backend: Backend, clock: ManualClock
) -> None:
    window = {"key": KEY, "key_scope": KeyScope.WINDOW, "key_expires_at": clock.now() + 60}
    running = await start(backend, clock, **window)
    await settle_ok(backend, outcome(running, OutcomeKind.DEAD, error=BOOM))

    revived = await backend.retry_dead(running.id, clock.now())

    assert revived is not None
    assert revived.state is JobState.QUEUED
    # It still holds its window: a new job with the key gets it back.
    assert (await enqueue(backend, clock, key=KEY)).id == running.id
