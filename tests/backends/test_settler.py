"""The settle loop against every store: outcomes of one job from two claims.

A worker that stalled past its lease and then claimed its job again can hand
the settle loop both attempts' outcomes at once. Stores answer refusals by
job id, so the loop must write them apart: the current claim's outcome is
applied, the stale one refused (a ``JobLeaseLost``), whichever comes first.
"""

from __future__ import annotations

import math

import anyio
import pytest

from asyncjobs import JobCompleted, JobLeaseLost, JobState
from asyncjobs._clock import ManualClock
from asyncjobs._events import EventBus
from asyncjobs._held import Claim
from asyncjobs._models import OutcomeKind
from asyncjobs._resilience import StoreGuard
from asyncjobs._settler import Settlement, Settler
from asyncjobs.backends import Backend
from tests.backends.contract._support import LEASE, QUEUE, WORKER, outcome, start, stored

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("stale_first", [True, False], ids=["stale-first", "current-first"])
async def test_a_stale_and_a_current_outcome_of_one_job_in_one_batch(
    backend: Backend, clock: ManualClock, stale_first: bool
) -> None:
    stale = await start(backend, clock)
    clock.advance(LEASE + 1)
    assert await backend.recover_expired() == 1
    [current] = await backend.claim(QUEUE, 1, WORKER, LEASE)
    assert current.id == stale.id
    assert current.lease_token != stale.lease_token

    bus = EventBus()
    forgotten: list[Claim] = []
    settler = Settler(
        backend=backend, guard=StoreGuard(clock), clock=clock, bus=bus, forget=forgotten.append
    )
    batch = [
        Settlement(
            outcome(job, OutcomeKind.COMPLETE, result=label), Claim(job=job, valid_until=0.0), 0.0
        )
        for job, label in ((stale, b'"stale"'), (current, b'"current"'))
    ]
    if not stale_first:
        batch.reverse()
    send, receive = anyio.create_memory_object_stream[Settlement](math.inf)
    with bus.subscribe() as events:
        for settlement in batch:
            send.send_nowait(settlement)  # one batch: both are there before the loop reads
        send.close()
        with anyio.fail_after(10):
            await settler.run(receive)
        seen = [await events.receive() for _ in range(2)]

    job = await stored(backend, current.id)
    assert job.state is JobState.COMPLETE
    assert job.result == b'"current"'
    assert job.attempts == 2
    assert {type(event) for event in seen} == {JobCompleted, JobLeaseLost}
    assert len(forgotten) == 2
