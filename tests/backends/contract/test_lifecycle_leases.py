"""JobLifecycle, part 3: the worker's side of a lease, and leases under store faults.

Specifies :meth:`JobLifecycle.heartbeat`, :meth:`~JobLifecycle.settle`,
:meth:`~JobLifecycle.recover_expired` and :meth:`~JobLifecycle.set_progress`.
Every claim carries a lease token; a heartbeat, progress report or outcome
whose token is not the job's current one is refused and changes nothing:

- ``heartbeat`` extends the leases still held to ``now + lease``. The ids it
  did not extend (wrong token, finished, unknown) come back in ``lost``; held
  jobs that ``cancel`` flagged come back in ``cancel_requested``;
- ``settle`` applies a batch in one atomic step. ``complete`` stores the
  result; ``retry`` requeues at ``due_at``, keeping the error and the attempt;
  ``release`` requeues without counting the attempt; ``dead`` and
  ``cancelled`` finish the job. Finishing sets ``finished_at`` and clears the
  lease. The refused ids come back (in any order) and the rest is applied; a
  token already settled is stale;
- ``recover_expired`` requeues running jobs whose lease has run out (due now,
  ``fire_at`` kept), or makes them ``dead`` with an error when no attempt is
  left. The old token is stale from then on;
- ``set_progress`` needs the current token.

Store faults (the last section): a lease runs from when the store applies the
write, not from when it was asked. A heartbeat that arrives after its lease ran
out, but before any ``recover_expired``, keeps the job; a claim or handoff
reply carries a whole lease from the time of the claim.

Run one store: ``pytest tests/backends/contract/test_lifecycle_leases.py -k sqlite``
"""

from __future__ import annotations

from typing import Any

import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import JobState, Outcome, OutcomeKind
from asyncjobs.backends import Backend
from tests.backends.contract._support import (
    BOOM,
    LEASE,
    QUEUE,
    WORKER,
    claim_ids,
    enqueue,
    handoff,
    in_state,
    new_job,
    outcome,
    settle_ok,
    start,
    stored,
)

pytestmark = pytest.mark.anyio


# -- heartbeat -----------------------------------------------------------------


async def test_heartbeat_extends_the_lease(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)
    assert job.lease_token is not None
    clock.advance(20)

    reply = await backend.heartbeat({job.id: job.lease_token}, LEASE)

    assert reply.lost == frozenset()
    assert reply.cancel_requested == frozenset()
    assert (await stored(backend, job.id)).lease_expires_at == clock.now() + LEASE
    clock.advance(20)  # past the first lease, within the extended one
    assert await backend.recover_expired() == 0
    assert (await stored(backend, job.id)).state is JobState.RUNNING


async def test_heartbeat_reports_leases_not_held(backend: Backend, clock: ManualClock) -> None:
    held = await start(backend, clock)
    other = await start(backend, clock)
    done = await in_state(backend, clock, JobState.COMPLETE)
    assert held.lease_token is not None
    clock.advance(10)

    reply = await backend.heartbeat(
        {held.id: held.lease_token, other.id: "wrong-token", done.id: "x", "no-such-job": "y"},
        LEASE,
    )

    assert reply.lost == {other.id, done.id, "no-such-job"}
    assert (await stored(backend, held.id)).lease_expires_at == clock.now() + LEASE
    assert await stored(backend, other.id) == other


async def test_heartbeat_reports_a_requested_cancel(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)
    assert job.lease_token is not None

    flagged = await backend.cancel(job.id)

    assert flagged is not None
    assert flagged.state is JobState.RUNNING
    assert flagged.cancel_requested
    reply = await backend.heartbeat({job.id: job.lease_token}, LEASE)
    assert reply.cancel_requested == {job.id}
    assert reply.lost == frozenset()


# -- settle --------------------------------------------------------------------


async def test_settle_complete_stores_the_result(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)
    clock.advance(3)

    await settle_ok(backend, outcome(job, OutcomeKind.COMPLETE, result=b'"sent"'))

    done = await stored(backend, job.id)
    assert done.state is JobState.COMPLETE
    assert done.result == b'"sent"'
    assert done.finished_at == clock.now()
    assert done.lease_token is None
    assert done.lease_expires_at is None
    assert done.attempts == 1


async def test_settle_retry_requeues_at_due_time_keeping_error_and_attempts(
    backend: Backend, clock: ManualClock
) -> None:
    job = await start(backend, clock)
    retry_at = clock.now() + 60

    await settle_ok(backend, outcome(job, OutcomeKind.RETRY, due_at=retry_at, error=BOOM))

    queued = await stored(backend, job.id)
    assert queued.state is JobState.QUEUED
    assert queued.due_at == retry_at
    assert queued.error == BOOM
    assert queued.attempts == 1
    assert queued.lease_token is None
    assert await claim_ids(backend) == []
    clock.advance(60)
    [again] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    assert again.id == job.id
    assert again.attempts == 2
    assert again.lease_token != job.lease_token


async def test_settle_release_requeues_without_counting_the_attempt(
    backend: Backend, clock: ManualClock
) -> None:
    job = await start(backend, clock)

    await settle_ok(backend, outcome(job, OutcomeKind.RELEASE, due_at=clock.now()))

    queued = await stored(backend, job.id)
    assert queued.state is JobState.QUEUED
    assert queued.attempts == 0
    assert queued.lease_token is None
    [again] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    assert again.id == job.id
    assert again.attempts == 1


async def test_settle_dead_stores_the_error(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)

    await settle_ok(backend, outcome(job, OutcomeKind.DEAD, error=BOOM))

    dead = await stored(backend, job.id)
    assert dead.state is JobState.DEAD
    assert dead.error == BOOM
    assert dead.error.traceback == BOOM.traceback
    assert dead.finished_at == clock.now()
    assert dead.lease_token is None
    assert await claim_ids(backend) == []


async def test_settle_cancelled_finishes_the_job(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)
    await backend.cancel(job.id)

    await settle_ok(backend, outcome(job, OutcomeKind.CANCELLED))

    cancelled = await stored(backend, job.id)
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at == clock.now()
    assert cancelled.lease_token is None
    assert await claim_ids(backend) == []


@pytest.mark.parametrize("kind", list(OutcomeKind))
async def test_settle_with_a_stale_token_is_refused_and_changes_nothing(
    backend: Backend, clock: ManualClock, kind: OutcomeKind
) -> None:
    job = await start(backend, clock)
    fields: dict[str, Any] = {"result": b"1", "due_at": clock.now(), "error": BOOM}
    stale = Outcome(job_id=job.id, lease_token="not-the-token", kind=kind, **fields)

    assert await backend.settle([stale]) == [job.id]
    assert await stored(backend, job.id) == job

    # Once settled, the same token is stale too.
    await settle_ok(backend, outcome(job, kind, **fields))
    after = await stored(backend, job.id)
    assert await backend.settle([outcome(job, kind, **fields)]) == [job.id]
    assert await stored(backend, job.id) == after


async def test_settle_batch_applies_current_outcomes_and_refuses_stale_ones(
    backend: Backend, clock: ManualClock
) -> None:
    good = await start(backend, clock)
    stale = await start(backend, clock)
    retried = await start(backend, clock)
    queued = await enqueue(backend, clock, due_in=100)

    refused = await backend.settle(
        [
            outcome(good, OutcomeKind.COMPLETE, result=b"ok"),
            Outcome(job_id=stale.id, lease_token="old", kind=OutcomeKind.COMPLETE),
            Outcome(job_id="no-such-job", lease_token="t", kind=OutcomeKind.COMPLETE),
            outcome(retried, OutcomeKind.RETRY, due_at=clock.now() + 5, error=BOOM),
            Outcome(job_id=queued.id, lease_token="t", kind=OutcomeKind.COMPLETE),
        ]
    )

    assert sorted(refused) == sorted([stale.id, "no-such-job", queued.id])
    assert (await stored(backend, good.id)).result == b"ok"
    assert await stored(backend, stale.id) == stale
    assert (await stored(backend, retried.id)).state is JobState.QUEUED
    assert await stored(backend, queued.id) == queued


# -- crash recovery ------------------------------------------------------------


async def test_recover_expired_requeues_a_job_whose_lease_ran_out(
    backend: Backend, clock: ManualClock
) -> None:
    job = await start(backend, clock)
    clock.advance(LEASE - 1)
    assert await backend.recover_expired() == 0
    clock.advance(2)

    assert await backend.recover_expired() == 1

    queued = await stored(backend, job.id)
    assert queued.state is JobState.QUEUED
    assert queued.lease_token is None
    assert await backend.recover_expired() == 0
    [again] = await backend.claim(QUEUE, 1, "worker-2", LEASE)
    assert again.id == job.id
    assert again.attempts == 2
    assert again.worker_id == "worker-2"
    # The crashed worker's late outcome and heartbeat are refused.
    late = outcome(job, OutcomeKind.COMPLETE, result=b"late")
    assert await backend.settle([late]) == [job.id]
    assert job.lease_token is not None
    assert (await backend.heartbeat({job.id: job.lease_token}, LEASE)).lost == {job.id}
    assert await stored(backend, job.id) == again


async def test_recover_expired_kills_a_job_out_of_attempts(
    backend: Backend, clock: ManualClock
) -> None:
    job = await start(backend, clock, max_attempts=1)
    clock.advance(LEASE + 1)

    assert await backend.recover_expired() == 1

    dead = await stored(backend, job.id)
    assert dead.state is JobState.DEAD
    assert dead.error is not None
    assert dead.lease_token is None
    assert await claim_ids(backend) == []


async def test_fire_at_round_trips_and_survives_claims_recovery_and_retries(
    backend: Backend, clock: ManualClock
) -> None:
    # A tick just missed, with a fraction no float text shortcut keeps exactly.
    tick = clock.now() - 0.1
    new = new_job(clock, schedule="hourly", due_at=tick, fire_at=tick)

    [returned] = await backend.enqueue([new])
    assert returned.fire_at == tick
    assert (await stored(backend, new.id)).fire_at == tick
    [claimed] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    assert claimed.fire_at == tick

    # The worker dies: recovery requeues the job due now, for the same tick.
    clock.advance(LEASE + 1)
    assert await backend.recover_expired() == 1
    recovered = await stored(backend, new.id)
    assert (recovered.state, recovered.due_at) == (JobState.QUEUED, clock.now())
    assert recovered.fire_at == tick
    [again] = await backend.claim(QUEUE, 1, "worker-2", LEASE)
    assert (again.attempts, again.fire_at) == (2, tick)

    # A failed attempt retries later, still for the same tick.
    retry_at = clock.now() + 60
    await settle_ok(backend, outcome(again, OutcomeKind.RETRY, due_at=retry_at, error=BOOM))
    retried = await stored(backend, new.id)
    assert (retried.due_at, retried.fire_at) == (retry_at, tick)
    clock.advance(60)
    [third] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    assert (third.attempts, third.fire_at) == (3, tick)

    # A release, a death and a manual revival leave it alone too.
    await settle_ok(backend, outcome(third, OutcomeKind.RELEASE, due_at=clock.now()))
    assert (await stored(backend, new.id)).fire_at == tick
    [fourth] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    await settle_ok(backend, outcome(fourth, OutcomeKind.DEAD, error=BOOM))
    assert (await stored(backend, new.id)).fire_at == tick
    revived = await backend.retry_dead(new.id, clock.now())
    assert revived is not None
    assert revived.fire_at == tick
    [fifth] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    assert fifth.fire_at == tick
    await settle_ok(backend, outcome(fifth, OutcomeKind.COMPLETE, result=b"1"))
    assert (await stored(backend, new.id)).fire_at == tick
    assert [job.fire_at for job in await backend.list_jobs(schedule="hourly")] == [tick]


async def test_a_job_without_a_fire_time_has_none(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)
    clock.advance(LEASE + 1)
    await backend.recover_expired()

    assert job.fire_at is None
    assert (await stored(backend, job.id)).fire_at is None


# -- progress ------------------------------------------------------------------


async def test_set_progress_needs_the_current_token(backend: Backend, clock: ManualClock) -> None:
    job = await start(backend, clock)
    assert job.lease_token is not None

    assert await backend.set_progress(job.id, job.lease_token, 0.5, "rendering")
    assert not await backend.set_progress(job.id, "not-the-token", 0.9, "stale")
    assert not await backend.set_progress("no-such-job", job.lease_token, 0.9, None)

    running = await stored(backend, job.id)
    assert (running.progress, running.progress_message) == (0.5, "rendering")
    await settle_ok(backend, outcome(job, OutcomeKind.COMPLETE))
    assert not await backend.set_progress(job.id, job.lease_token, 1.0, None)


@pytest.mark.parametrize("kind", [OutcomeKind.RETRY, OutcomeKind.RELEASE])
async def test_a_requeued_job_shows_no_progress(
    backend: Backend, clock: ManualClock, kind: OutcomeKind
) -> None:
    job = await start(backend, clock)
    assert job.lease_token is not None
    assert await backend.set_progress(job.id, job.lease_token, 0.7, "page 7 of 10")

    await settle_ok(backend, outcome(job, kind, due_at=clock.now(), error=BOOM))

    queued = await stored(backend, job.id)
    assert queued.state is JobState.QUEUED
    assert (queued.progress, queued.progress_message) == (None, None)


# -- store faults (sqlite contention) --
#
# A store may have to wait before it can apply a write (another process holds a
# SQLite file's write lock, a Redis server is slow). Whatever the wait, a lease
# runs from when the write is applied, and a heartbeat that arrives after its
# lease ran out but before any sweep keeps the job: a worker that is alive and
# merely waited never loses its lease to the wait alone.


async def test_a_late_heartbeat_before_any_sweep_keeps_the_lease(
    backend: Backend, clock: ManualClock
) -> None:
    job = await start(backend, clock)
    assert job.lease_token is not None
    clock.advance(LEASE + 5)  # the heartbeat was held up past the lease

    reply = await backend.heartbeat({job.id: job.lease_token}, LEASE)

    assert reply.lost == frozenset()
    held = await stored(backend, job.id)
    assert (held.state, held.lease_token) == (JobState.RUNNING, job.lease_token)
    assert held.lease_expires_at == clock.now() + LEASE
    assert await backend.recover_expired() == 0
    clock.advance(LEASE - 1)
    assert await backend.recover_expired() == 0
    await settle_ok(backend, outcome(job, OutcomeKind.COMPLETE, result=b"1"))


async def test_a_claim_or_handoff_reply_is_what_the_store_holds_with_a_whole_lease(
    backend: Backend, clock: ManualClock
) -> None:
    await enqueue(backend, clock)
    [claimed] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    [handed] = await backend.enqueue([new_job(clock, queue="handoff")], handoff(handoff=1))

    for job in (claimed, handed):
        assert job.state is JobState.RUNNING
        assert job.started_at is None
        assert job.lease_expires_at is not None
        assert job.lease_expires_at >= clock.now() + LEASE
        assert await stored(backend, job.id) == job
