"""WorkSignals: when a worker should claim next.

Specifies :meth:`WorkSignals.next_due_at` and :meth:`WorkSignals.wait_for_work`:

- ``next_due_at(queues)`` is the earliest ``due_at`` of the *queued* jobs in
  the given, unpaused queues (due times already past included), or ``None``.
  Running and finished jobs, other queues and paused queues do not count;
- ``wait_for_work(queues, deadline)`` returns when work may have arrived: a job
  enqueued through the same backend object wakes a waiter at once. Without
  work it returns at ``deadline``, judged by the clock given to ``open`` (the
  stores wait with ``clock.wait(event, deadline)``, so a :class:`ManualClock`
  ends the wait), and at once when the deadline has passed;
- early returns are allowed (callers claim, then wait again), but once a
  deadline has passed a later wait must block again: a store that keeps
  returning at once makes its worker spin. Wait on a fresh event each time
  (the caller's *wakeup*, or a new one), since a clock may set that event when
  the deadline comes.

Run one store: ``pytest tests/backends/contract/test_signals.py -k sqlite``
"""

from __future__ import annotations

import anyio
import pytest

from asyncjobs._clock import ManualClock
from asyncjobs._models import Job, JobState
from asyncjobs.backends import Backend
from tests.backends.contract._support import LEASE, QUEUE, WORKER, enqueue, in_state, start

pytestmark = pytest.mark.anyio


# -- next_due_at ---------------------------------------------------------------


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


# -- waiting for work ----------------------------------------------------------


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
