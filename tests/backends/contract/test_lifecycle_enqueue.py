"""JobLifecycle, part 1: ``enqueue`` without a handoff, dedup keys, reading jobs back.

The first module a new store passes (``StoreConnection`` is exercised by the
``backend`` fixture around every test). It specifies
:meth:`JobLifecycle.enqueue` and the :meth:`Inspection.get_job` read that every
other module uses to check what the store holds:

- a batch is inserted in one atomic step. The reply has one :class:`Job` per
  :class:`NewJob`, in the order given, equal to ``NewJob.queued()`` (state
  ``queued``, no attempts, no lease), and ``get_job`` reads back that same
  record, every field exact (floats included). An empty batch writes nothing;
- payload and result bytes are opaque: empty, non-UTF-8, every byte value and
  100 KB all come back byte for byte;
- ``get_job`` of an unknown id is ``None``;
- dedup: a job whose ``key`` matches a job still ``queued`` or ``running``
  (``ACTIVE_STATES``) is not inserted. The holder comes back in its place, as
  stored, and the new id never exists. A key repeated inside one batch inserts
  once. Once the holder has finished (complete, dead, cancelled) the key is
  free again, and the new job holds it.

Also used here: ``claim``, ``settle``, ``cancel`` and ``list_jobs``, to bring a
key's holder to each state and to count what was stored.

Run one store: ``pytest tests/backends/contract/test_lifecycle_enqueue.py -k sqlite``
"""

from __future__ import annotations

from typing import Any

import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import ACTIVE_STATES, FINISHED_STATES, JobState, OutcomeKind
from asyncjobs.backends import Backend
from tests.backends.contract._support import (
    LARGE,
    NON_UTF8,
    claim_ids,
    enqueue,
    in_state,
    new_job,
    outcome,
    settle_ok,
    start,
    stored,
)

pytestmark = pytest.mark.anyio


# -- enqueue and read back -----------------------------------------------------


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
                "partition": "tenant-42",
                "tags": {"tenant": "t-42", "correlation_id": "c-1"},
            },
            id="every-field",
        ),
    ],
)
async def test_get_job_round_trips_every_new_job_field(
    backend: Backend, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    new = new_job(clock, **overrides)
    expected = new.queued()

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


# -- dedup ---------------------------------------------------------------------


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
