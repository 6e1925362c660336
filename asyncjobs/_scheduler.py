"""Schedules -> jobs: sleeps until the next fire time, then fires each due schedule once.

Every runtime sharing a backend runs this loop; none is a leader. A fire is a
compare-and-set in the store (:meth:`Backend.fire_schedule`): the job is
written together with the schedule's new ``next_fire_at`` only if nobody
fired that tick first, so each tick runs once however many processes race.
The loop keeps the schedules in memory, re-reads them from the store every
``refresh`` seconds (to see schedules changed by other processes) and at
once when this process changes one.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import attrs

from ._clock import Clock, to_datetime
from ._events import EventBus, ScheduleFired
from ._misfire import misfire_fire_times
from ._models import Job, NewJob, Schedule, new_job_id
from ._resilience import LoopBackoff, StoreGuard, pause
from ._triggers import Trigger, trigger_from_json
from .backends import Backend

__all__ = ["Scheduler", "overlap_key"]

logger = logging.getLogger("asyncjobs")

#: The most missed fire times one schedule enqueues per loop turn (misfire="all").
_BATCH = 100
#: How many schedules are stored or fired at once.
_CONCURRENT_WRITES = 64

T = TypeVar("T")


def overlap_key(schedule_name: str) -> str:
    """The dedup key that keeps a no-overlap schedule to one active job."""
    return f"schedule:{schedule_name}"


@functools.lru_cache(maxsize=65_536)
def _parse(trigger_json: str) -> Trigger:
    return trigger_from_json(trigger_json)


def jobs_for(schedule: Schedule, fire_times: Sequence[float], now: float) -> list[NewJob]:
    """The jobs a schedule enqueues for *fire_times*, each due at its fire time.

    Each job also keeps its fire time in ``fire_at``, which (unlike ``due_at``)
    retries and crash recovery leave alone.
    """
    key = None if schedule.overlap else overlap_key(schedule.name)
    return [
        NewJob(
            id=new_job_id(now),
            name=schedule.job_name,
            queue=schedule.queue,
            payload=schedule.payload,
            due_at=fire_at,
            enqueued_at=now,
            priority=schedule.priority,
            max_attempts=schedule.max_attempts,
            timeout=schedule.timeout,
            key=key,
            schedule=schedule.name,
            fire_at=fire_at,
        )
        for fire_at in fire_times
    ]


async def _each(items: Sequence[T], call: Callable[[T], Awaitable[None]]) -> None:
    """Await ``call(item)`` for every item, up to :data:`_CONCURRENT_WRITES` at once.

    Each schedule is its own atomic store operation; issued together, a store
    can commit them together (SQLite's group commit, pipelined Redis calls)
    instead of paying a round trip and a commit each. *call* handles its own
    errors.
    """
    if len(items) == 1:
        await call(items[0])
        return
    pending = iter(items)

    async def take_turns() -> None:
        # The workers share one iterator: no task or limiter per item.
        for item in pending:
            await call(item)

    async with anyio.create_task_group() as group:
        for _ in range(min(_CONCURRENT_WRITES, len(items))):
            group.start_soon(take_turns)


class Scheduler:
    """Fires the schedules stored in a backend, once per tick across processes."""

    def __init__(
        self,
        *,
        backend: Backend,
        clock: Clock,
        bus: EventBus,
        declared: Callable[[float], list[Schedule]],
        on_enqueued: Callable[[list[Job]], None],
        refresh: float = 5.0,
        guard: StoreGuard | None = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._bus = bus
        self._declared = declared
        self._on_enqueued = on_enqueued
        self._refresh = refresh
        self._guard = guard if guard is not None else StoreGuard(clock)
        self._stop_event = anyio.Event()
        self._cache: dict[str, Schedule] = {}
        self._stale = True
        self._stopping = False
        self._wake = anyio.Event()
        # When the loop sleeps, until when; and an event set each time it goes to sleep.
        self._sleeping_until: float | None = None
        self._fell_asleep = anyio.Event()

    @property
    def is_idle(self) -> bool:
        """Whether the loop sleeps with nothing due and no change pending."""
        return (
            self._sleeping_until is not None
            and self._sleeping_until > self._clock.now()
            and not self._wake.is_set()
            and not self._stale
        )

    async def wait_idle(self) -> None:
        """Wait until the loop has fired everything due and sleeps (for tests and tools)."""
        while not self.is_idle and not self._stopping:
            await self._fell_asleep.wait()

    def stop(self) -> None:
        """End the loop after the current turn."""
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        self._fell_asleep.set()

    def changed(self) -> None:
        """Re-read the schedules now (this process added, paused or removed one)."""
        self._stale = True
        self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Store the declared schedules, then fire due schedules until stopped.

        A store that fails is retried with backoff (the declared schedules too,
        when storing them at start failed); the loop never ends on its own.
        """
        declared: list[Schedule] | None = self._declared(self._clock.now())
        try:
            await self._put_all(declared or [])
            declared = None
        except Exception as exc:
            self._guard.failed("scheduler", exc)
        task_status.started()
        backoff = LoopBackoff()
        last_refresh = -math.inf
        while not self._stopping:
            try:
                if declared is not None:
                    await self._put_all(declared)
                    declared = None
                last_refresh, fired_all = await self._turn(last_refresh)
            except Exception as exc:
                self._guard.failed("scheduler", exc)
                fired_all = False
            if not fired_all:
                self._stale = True
                await pause(backoff.next_delay(), self._stop_event)
                continue
            backoff.reset()
            if self._wake.is_set():
                self._wake = anyio.Event()
                continue
            deadline = self._next_wake(last_refresh)
            self._sleeping_until = deadline
            self._fell_asleep.set()
            self._fell_asleep = anyio.Event()
            try:
                await self._clock.wait(self._wake, deadline)
            finally:
                self._sleeping_until = None

    async def _put_all(self, schedules: list[Schedule]) -> None:
        failures: list[Exception] = []

        async def put(schedule: Schedule) -> None:
            try:
                await self._backend.put_schedule(schedule)
            except Exception as exc:
                failures.append(exc)

        await _each(schedules, put)
        if failures:
            raise failures[0]

    async def _turn(self, last_refresh: float) -> tuple[float, bool]:
        """Re-read the schedules when due and fire each one that is due.

        :returns: the time of the last refresh, and whether every due schedule fired.
        """
        now = self._clock.now()
        if self._stale or now - last_refresh >= self._refresh:
            self._stale = False
            self._cache = {s.name: s for s in await self._backend.list_schedules()}
            last_refresh = now
            self._guard.succeeded()
        due = [schedule for schedule in self._cache.values() if self._is_due(schedule, now)]
        failures = 0

        async def fire(schedule: Schedule) -> None:
            nonlocal failures
            try:
                await self._fire(schedule, now)
            except Exception as exc:
                # One schedule's failure must not hold back the others this turn.
                self._guard.failed(f"scheduler ({schedule.name})", exc)
                failures += 1
            else:
                self._guard.succeeded()

        await _each(due, fire)
        return last_refresh, failures == 0

    @staticmethod
    def _is_due(schedule: Schedule, now: float) -> bool:
        return (
            not schedule.paused
            and schedule.next_fire_at is not None
            and schedule.next_fire_at <= now
        )

    def _next_wake(self, last_refresh: float) -> float:
        deadline = last_refresh + self._refresh
        for schedule in self._cache.values():
            if not schedule.paused and schedule.next_fire_at is not None:
                deadline = min(deadline, schedule.next_fire_at)
        return deadline

    async def _fire(self, schedule: Schedule, now: float) -> None:
        assert schedule.next_fire_at is not None
        decision = misfire_fire_times(
            _parse(schedule.trigger),
            to_datetime(schedule.next_fire_at),
            to_datetime(now),
            policy=schedule.misfire,
            grace=schedule.grace,
            limit=_BATCH,
        )
        if decision.misfired:
            logger.warning(
                "schedule %r missed fire times (policy %r): running %d",
                schedule.name,
                schedule.misfire,
                len(decision.run),
            )
        fire_times = [moment.timestamp() for moment in decision.run]
        next_fire_at = None if decision.next_fire is None else decision.next_fire.timestamp()
        planned = jobs_for(schedule, fire_times, now)
        stored = await self._backend.fire_schedule(
            schedule.name, schedule.next_fire_at, next_fire_at, planned
        )
        if stored is None:
            # Another process fired this tick first (or the schedule changed): re-read it.
            current = await self._backend.get_schedule(schedule.name)
            if current is None:
                self._cache.pop(schedule.name, None)
            else:
                self._cache[schedule.name] = current
            return
        self._cache[schedule.name] = attrs.evolve(
            schedule, next_fire_at=next_fire_at, last_fire_at=schedule.next_fire_at
        )
        new_jobs = [
            (fire_at, job)
            for fire_at, job, new in zip(fire_times, stored, planned, strict=True)
            if job.id == new.id  # not a no-overlap tick that found the last run still active
        ]
        self._on_enqueued([job for _, job in new_jobs])
        if self._bus.has_subscribers:
            for fire_at, job in new_jobs:
                self._bus.publish(
                    ScheduleFired(
                        timestamp=now, schedule=schedule.name, fire_at=fire_at, job_id=job.id
                    )
                )
