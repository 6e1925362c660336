"""ScheduleStore: stored schedules, and the compare-and-set that fires each tick once.

Specifies ``put_schedule``, ``get_schedule``, ``list_schedules``,
``remove_schedule``, ``pause_schedule`` and :meth:`ScheduleStore.fire_schedule`:

- every :class:`Schedule` field round-trips (payload bytes exact);
  ``list_schedules`` is ordered by name; removing or pausing a schedule that
  does not exist says so (``False``, ``None``);
- ``put_schedule`` of a name already stored with the *same* ``trigger`` keeps
  the stored ``next_fire_at``, ``last_fire_at`` and ``paused`` (a restart
  neither fires a tick again nor forgets one) and takes every other field from
  the new definition; a different trigger replaces the schedule outright;
- ``fire_schedule(name, expected_fire_at, next_fire_at, jobs)`` is one atomic
  compare-and-set. When the schedule exists, is not paused and its
  ``next_fire_at`` equals ``expected_fire_at``, it enqueues ``jobs`` (with the
  usual dedup: an active job holding the key comes back instead) and sets
  ``last_fire_at = expected_fire_at`` and ``next_fire_at`` (``None`` ends the
  schedule). Otherwise it returns ``None`` and writes nothing, which is what
  a second process firing the same tick gets.

Run one store: ``pytest tests/backends/contract/test_schedules.py -k sqlite``
"""

from __future__ import annotations

import attrs
import pytest

from asyncjobs._clock import ManualClock
from asyncjobs.backends import Backend
from tests.backends.contract._support import NON_UTF8, make_schedule, new_job, start, stored

pytestmark = pytest.mark.anyio


# -- schedules -----------------------------------------------------------------


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


# -- fire_schedule -------------------------------------------------------------


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
