"""Helpers for testing code that uses asyncjobs.

Typical use in an app's own tests::

    from asyncjobs.testing import drain, ManualClock

    async def test_signup_sends_welcome_mail() -> None:
        clock = ManualClock()
        runtime = JobRuntime(clock=clock)        # memory backend
        ...                                      # register jobs, enqueue via the app
        async with runtime:
            await signup("a@example.com")
            clock.advance(60)                    # due the delayed jobs
            await drain(runtime)                 # everything due has run
"""

from __future__ import annotations

import anyio

from ._clock import ManualClock
from ._events import JobCompleted, JobDied, JobReleased, JobRetrying, JobWasCancelled
from ._models import JobState
from ._runtime import JobRuntime

__all__ = ["ManualClock", "drain", "wait_schedules"]


async def wait_schedules(runtime: JobRuntime, *, timeout: float = 10.0) -> None:
    """Wait until the runtime's scheduler has fired every due schedule and sleeps.

    Use it after moving a :class:`ManualClock` when the fired jobs may not
    finish (so :func:`drain` would wait for them).

    :raises TimeoutError: when the scheduler is still busy after *timeout*.
    """
    scheduler = runtime._scheduler_loop
    if scheduler is not None:
        with anyio.fail_after(timeout):
            await scheduler.wait_idle()


async def drain(runtime: JobRuntime, *, timeout: float = 10.0) -> None:
    """Wait until the scheduler has fired every due schedule, the runtime's queues
    hold no due job, and none of its jobs runs.

    Jobs due later (delays, retry backoff) are left alone: advance a
    :class:`ManualClock` to make them due, then drain again.

    :param timeout: real seconds to wait before giving up.
    :raises TimeoutError: when work is still pending after *timeout*.
    """
    queues = set(runtime.queues)
    with (
        runtime.events.subscribe(
            JobCompleted, JobDied, JobRetrying, JobReleased, JobWasCancelled
        ) as settled,
        anyio.fail_after(timeout),
    ):
        while True:
            scheduler = runtime._scheduler_loop
            if scheduler is not None:
                await scheduler.wait_idle()
            idle = scheduler is None or scheduler.is_idle
            if not runtime.running_jobs and not await _due_jobs(runtime, queues) and idle:
                return
            with anyio.move_on_after(0.05):
                await settled.receive()


async def _due_jobs(runtime: JobRuntime, queues: set[str]) -> bool:
    paused = {stats.queue for stats in await runtime.queue_stats() if stats.paused}
    due = await runtime.backend.next_due_at(sorted(queues - paused))
    if due is not None and due <= runtime.clock.now():
        return True
    running = await runtime.list_jobs(state=JobState.RUNNING, limit=1)
    return any(job.queue in queues for job in running)
