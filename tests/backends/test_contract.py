"""The executable specification of a backend: every store must pass all of it.

Each test drives the ``backend`` fixture (parametrized over every backend,
opened on the ``clock`` :class:`ManualClock`) through the :class:`Backend`
protocol only. Time moves with ``clock.advance``; nothing here sleeps to wait.

Where the protocol leaves a choice open, these tests stay neutral: the order of
the jobs *inside* one ``claim`` reply, of refused ids in a ``settle`` reply and
of ``queue_stats`` entries is not pinned (claim order is checked one job at a
time).
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import attrs
import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import (
    ACTIVE_STATES,
    FINISHED_STATES,
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

pytestmark = pytest.mark.anyio

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


# -- helpers ------------------------------------------------------------------


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


# -- enqueue and read back ----------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {
                "name": "mail.send",
                "queue": "critical",
                "payload": b'{"to": "a@example.com"}',
                "due_in": 90.5,
                "priority": -3,
                "max_attempts": 7,
                "timeout": 12.5,
                "key": "welcome:42",
                "schedule": "hourly",
                "fire_at": 1_767_225_600.1,
            },
            id="every-field",
        ),
    ],
)
async def test_get_job_round_trips_every_new_job_field(
    backend: Backend, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    new = new_job(clock, **overrides)
    expected = Job(**attrs.asdict(new, recurse=False), state=JobState.QUEUED)

    [returned] = await backend.enqueue([new])

    assert returned == expected
    assert await backend.get_job(new.id) == expected


async def test_enqueue_many_returns_jobs_in_order(backend: Backend, clock: ManualClock) -> None:
    news = [new_job(clock, name=f"tasks.n{i}", priority=5 - i) for i in range(5)]

    jobs = await backend.enqueue(news)

    assert [job.id for job in jobs] == [new.id for new in news]
    assert [job.name for job in jobs] == [new.name for new in news]
    assert all(job.state is JobState.QUEUED for job in jobs)
    for new in news:
        assert (await stored(backend, new.id)).name == new.name


async def test_enqueue_nothing_returns_nothing(backend: Backend) -> None:
    assert await backend.enqueue([]) == []
    assert await backend.list_jobs() == []


async def test_get_job_of_unknown_id_is_none(backend: Backend) -> None:
    assert await backend.get_job("no-such-job") is None


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(NON_UTF8, id="non-utf8"),
        pytest.param(bytes(range(256)), id="every-byte"),
        pytest.param(LARGE, id="100KB"),
    ],
)
async def test_payload_and_result_bytes_are_kept_exactly(
    backend: Backend, clock: ManualClock, payload: bytes
) -> None:
    job = await start(backend, clock, payload=payload)
    assert job.payload == payload
    assert (await stored(backend, job.id)).payload == payload

    await settle_ok(backend, outcome(job, OutcomeKind.COMPLETE, result=payload))

    done = await stored(backend, job.id)
    assert done.payload == payload
    assert done.result == payload


# -- dedup ----------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
async def test_key_of_an_active_job_returns_that_job(
    backend: Backend, clock: ManualClock, state: JobState
) -> None:
    existing = await in_state(backend, clock, state, key="report:7")
    duplicate = new_job(clock, key="report:7", name="tasks.other")

    [returned] = await backend.enqueue([duplicate])

    assert returned == await stored(backend, existing.id)
    assert returned.state is state
    assert await backend.get_job(duplicate.id) is None
    assert [job.id for job in await backend.list_jobs()] == [existing.id]


async def test_key_repeated_within_one_batch_inserts_once(
    backend: Backend, clock: ManualClock
) -> None:
    first = new_job(clock, key="k")
    second = new_job(clock, key="k")
    unkeyed = new_job(clock)

    jobs = await backend.enqueue([first, second, unkeyed])

    assert [job.id for job in jobs] == [first.id, first.id, unkeyed.id]
    assert await backend.get_job(second.id) is None
    assert sorted(await claim_ids(backend)) == sorted([first.id, unkeyed.id])


@pytest.mark.parametrize("state", sorted(FINISHED_STATES))
async def test_key_is_free_again_once_the_job_finished(
    backend: Backend, clock: ManualClock, state: JobState
) -> None:
    old = await in_state(backend, clock, state, key="k")

    fresh = await enqueue(backend, clock, key="k")

    assert fresh.id != old.id
    assert fresh.state is JobState.QUEUED
    assert (await stored(backend, old.id)).state is state
    # ...and the new job now holds the key.
    assert (await enqueue(backend, clock, key="k")).id == fresh.id


# -- claim ----------------------------------------------------------------------


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


# -- handoff: enqueue straight to an idle worker ------------------------------------


def handoff(**limits: int) -> Handoff:
    """An offer from ``WORKER`` for the given queues (``default=1`` when none)."""
    return Handoff(worker_id=WORKER, lease=LEASE, limits=limits or {QUEUE: 1})


async def test_handoff_stores_a_new_job_claimed_by_the_offering_worker(
    backend: Backend, clock: ManualClock
) -> None:
    [job] = await backend.enqueue([new_job(clock)], handoff())

    assert job.state is JobState.RUNNING
    assert job.attempts == 1
    assert job.lease_token
    assert job.lease_expires_at == clock.now() + LEASE
    assert job.worker_id == WORKER
    assert job.started_at == clock.now()
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


# -- heartbeat ------------------------------------------------------------------


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


# -- settle ---------------------------------------------------------------------


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


# -- crash recovery -------------------------------------------------------------


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


# -- progress -------------------------------------------------------------------


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


# -- cancel ---------------------------------------------------------------------


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


# -- retry_dead -----------------------------------------------------------------


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


# -- pausing queues -------------------------------------------------------------


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


# -- prune ----------------------------------------------------------------------


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


# -- listing and counting -------------------------------------------------------


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


# -- next_due_at ----------------------------------------------------------------


async def test_next_due_at_is_the_earliest_queued_job_of_unpaused_queues(
    backend: Backend, clock: ManualClock
) -> None:
    now = clock.now()
    assert await backend.next_due_at(["a", "b"]) is None
    await start(backend, clock, queue="a", due_in=-50)  # running: not counted
    await enqueue(backend, clock, queue="a", due_in=10)
    await enqueue(backend, clock, queue="a", due_in=30)
    await enqueue(backend, clock, queue="b", due_in=5)
    await enqueue(backend, clock, queue="c", due_in=-20)
    await in_state(backend, clock, JobState.CANCELLED, queue="b", due_in=1)

    assert await backend.next_due_at(["a", "b"]) == now + 5
    assert await backend.next_due_at(["a"]) == now + 10
    assert await backend.next_due_at(["c", "a"]) == now - 20
    assert await backend.next_due_at(["empty"]) is None
    assert await backend.next_due_at([]) is None
    await backend.pause_queue("b", True)
    assert await backend.next_due_at(["a", "b"]) == now + 10
    assert await backend.next_due_at(["b"]) is None


# -- waiting for work -----------------------------------------------------------


@pytest.mark.parametrize("deadline_in", [None, 3600.0])
async def test_wait_for_work_wakes_when_another_task_enqueues(
    backend: Backend, clock: ManualClock, deadline_in: float | None
) -> None:
    deadline = None if deadline_in is None else clock.now() + deadline_in
    claimed: list[Job] = []

    async def worker() -> None:
        # The caller's loop the protocol asks for: claim, and wait again after any wake-up.
        while not claimed:
            claimed.extend(await backend.claim(QUEUE, 1, WORKER, LEASE))
            if not claimed:
                await backend.wait_for_work([QUEUE], deadline)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await anyio.wait_all_tasks_blocked()  # the worker is waiting now
            job = await enqueue(backend, clock)

    assert [c.id for c in claimed] == [job.id]


async def test_wait_for_work_returns_at_its_deadline(backend: Backend, clock: ManualClock) -> None:
    returned = anyio.Event()

    async def waiter() -> None:
        await backend.wait_for_work([QUEUE], clock.now() + 60)
        returned.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            clock.advance(60)
            await returned.wait()
        # A deadline already passed returns at once.
        await backend.wait_for_work([QUEUE], clock.now() - 1)

    assert returned.is_set()


async def test_wait_for_work_blocks_again_after_a_deadline_passed(
    backend: Backend, clock: ManualClock
) -> None:
    # A store that keeps returning at once after one deadline made a worker spin.
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(backend.wait_for_work, [QUEUE], clock.now() + 10)
            await anyio.wait_all_tasks_blocked()
            clock.advance(10)

        wake_ups = 0

        async def waiter() -> None:
            nonlocal wake_ups
            while True:
                await backend.wait_for_work([QUEUE], clock.now() + 60)
                wake_ups += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            # Returns only once the waiter is blocked; a spinning waiter never is.
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

    assert wake_ups < 10


# -- schedules ------------------------------------------------------------------


async def test_schedule_put_get_list_pause_remove(backend: Backend, clock: ManualClock) -> None:
    full = make_schedule(
        clock,
        name="b-full",
        last_fire_at=clock.now() - 3600,
        misfire="all",
        grace=5.0,
        overlap=False,
        priority=3,
        max_attempts=7,
        timeout=9.5,
        payload=NON_UTF8,
    )
    plain = make_schedule(clock, name="a-plain", next_fire_at=None)

    assert await backend.put_schedule(full) == full
    assert await backend.put_schedule(plain) == plain
    assert await backend.get_schedule("b-full") == full
    assert await backend.get_schedule("missing") is None
    assert await backend.list_schedules() == [plain, full]

    paused = await backend.pause_schedule("b-full", True)
    assert paused == attrs.evolve(full, paused=True)
    assert await backend.get_schedule("b-full") == paused
    assert await backend.pause_schedule("b-full", False) == full
    assert await backend.pause_schedule("missing", True) is None

    assert await backend.remove_schedule("a-plain")
    assert not await backend.remove_schedule("a-plain")
    assert await backend.get_schedule("a-plain") is None
    assert await backend.list_schedules() == [full]


async def test_put_schedule_with_the_same_trigger_keeps_its_timing(
    backend: Backend, clock: ManualClock
) -> None:
    first_fire = clock.now() + 60
    await backend.put_schedule(make_schedule(clock, next_fire_at=first_fire))
    assert await backend.fire_schedule("nightly", first_fire, first_fire + 60, []) == []
    await backend.pause_schedule("nightly", True)

    # A restart registers the same trigger with a freshly computed next fire time.
    redefined = make_schedule(clock, next_fire_at=first_fire, priority=4, queue="other")
    kept = await backend.put_schedule(redefined)

    expected = attrs.evolve(
        redefined, next_fire_at=first_fire + 60, last_fire_at=first_fire, paused=True
    )
    assert kept == expected
    assert await backend.get_schedule("nightly") == expected


async def test_put_schedule_with_another_trigger_replaces_its_timing(
    backend: Backend, clock: ManualClock
) -> None:
    first_fire = clock.now() + 60
    await backend.put_schedule(make_schedule(clock, next_fire_at=first_fire))
    await backend.fire_schedule("nightly", first_fire, first_fire + 60, [])
    await backend.pause_schedule("nightly", True)

    replaced = make_schedule(clock, trigger='{"kind": "interval", "seconds": 5}')
    assert await backend.put_schedule(replaced) == replaced
    assert await backend.get_schedule("nightly") == replaced


async def test_fire_schedule_fires_a_tick_once(backend: Backend, clock: ManualClock) -> None:
    tick = clock.now() + 60
    await backend.put_schedule(make_schedule(clock, next_fire_at=tick))
    job = new_job(clock, schedule="nightly", due_at=tick, fire_at=tick, payload=NON_UTF8)

    fired = await backend.fire_schedule("nightly", tick, tick + 60, [job])

    assert fired is not None
    assert [(j.id, j.fire_at) for j in fired] == [(job.id, tick)]
    assert (await stored(backend, job.id)).schedule == "nightly"
    assert (await stored(backend, job.id)).fire_at == tick
    assert [j.id for j in await backend.list_jobs(schedule="nightly")] == [job.id]
    after = await backend.get_schedule("nightly")
    assert after is not None
    assert (after.next_fire_at, after.last_fire_at) == (tick + 60, tick)

    # Another process fires the same tick: nothing is written.
    late = new_job(clock, schedule="nightly", due_at=tick)
    assert await backend.fire_schedule("nightly", tick, tick + 120, [late]) is None
    assert await backend.get_job(late.id) is None
    assert await backend.get_schedule("nightly") == after
    assert len(await backend.list_jobs()) == 1

    # The last tick of a schedule leaves no next fire time.
    assert await backend.fire_schedule("nightly", tick + 60, None, []) == []
    ended = await backend.get_schedule("nightly")
    assert ended is not None
    assert (ended.next_fire_at, ended.last_fire_at) == (None, tick + 60)


@pytest.mark.parametrize("why", ["paused", "missing", "wrong-tick"])
async def test_fire_schedule_refuses_and_writes_nothing(
    backend: Backend, clock: ManualClock, why: str
) -> None:
    tick = clock.now() + 60
    if why != "missing":
        await backend.put_schedule(make_schedule(clock, next_fire_at=tick, paused=why == "paused"))
    before = await backend.get_schedule("nightly")
    expected = tick + 1 if why == "wrong-tick" else tick
    job = new_job(clock, schedule="nightly")

    assert await backend.fire_schedule("nightly", expected, tick + 60, [job]) is None

    assert await backend.get_job(job.id) is None
    assert await backend.get_schedule("nightly") == before


async def test_fire_schedule_dedups_against_an_active_job(
    backend: Backend, clock: ManualClock
) -> None:
    tick = clock.now() + 60
    await backend.put_schedule(make_schedule(clock, next_fire_at=tick, overlap=False))
    active = await start(backend, clock, key="nightly", schedule="nightly")
    job = new_job(clock, key="nightly", schedule="nightly", due_at=tick)

    fired = await backend.fire_schedule("nightly", tick, tick + 60, [job])

    assert fired == [await stored(backend, active.id)]
    assert await backend.get_job(job.id) is None
    after = await backend.get_schedule("nightly")
    assert after is not None
    assert after.last_fire_at == tick


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
        assert job.started_at is not None
        assert job.lease_expires_at == job.started_at + LEASE
        assert job.started_at >= clock.now()
        assert await stored(backend, job.id) == job
