"""Helpers for testing code that uses asyncjobs.

Typical use in an app's own tests::

    from datetime import timedelta
    from asyncjobs import JobRuntime, ManualClock
    from asyncjobs.testing import Harness

    async def test_signup_sends_welcome_mail() -> None:
        runtime = JobRuntime(clock=ManualClock())   # memory backend
        runtime.include(jobs)                       # the app's JobRegistry
        async with Harness(runtime) as harness:
            await signup("a@example.com")           # enqueues send_welcome
            await harness.advance(timedelta(hours=1))  # every due event, in order
            await harness.assert_enqueued(send_welcome, "a@example.com")
            harness.assert_ran(send_welcome, ["complete"])

:func:`advance` moves a :class:`ManualClock` through every due event (job due
times, retries, schedule fires, leases and heartbeats, rate-limit windows) in
order, letting the runtime react to each before the next: a week of cron runs
in milliseconds. :func:`drain` and :func:`wait_schedules` wait for what is due
now. The pytest fixtures are in :mod:`asyncjobs.pytest_plugin`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.lowlevel
import attrs

from ._clock import ManualClock, to_datetime
from ._events import (
    Event,
    JobCompleted,
    JobDied,
    JobEvent,
    JobLeaseLost,
    JobReleased,
    JobRetrying,
    JobWasCancelled,
)
from ._exceptions import AsyncJobsError, InvalidOptionError
from ._handle import JobHandle
from ._models import FINISHED_STATES, Job, JobState
from ._registry import JobCall, JobFunction
from ._runtime import JobRuntime

__all__ = [
    "EnqueuedJob",
    "Harness",
    "ManualClock",
    "RunRecord",
    "advance",
    "drain",
    "wait_schedules",
]

Mode = Literal["background", "eager", "manual"]


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
    :class:`ManualClock` to make them due, then drain again (or use
    :func:`advance`, which does both for every due event in turn).

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


# -- advancing a manual clock -------------------------------------------------------------


def _manual_clock(runtimes: Sequence[JobRuntime]) -> ManualClock:
    clock = runtimes[0].clock
    if not isinstance(clock, ManualClock):
        raise InvalidOptionError(
            "advance() moves a ManualClock: make the runtime with JobRuntime(clock=ManualClock())"
        )
    if any(runtime.clock is not clock for runtime in runtimes):
        raise InvalidOptionError("runtimes advanced together must share one ManualClock")
    return clock


def _waiting_on_clock(clock: ManualClock, event: anyio.Event) -> bool:
    return not event.is_set() and any(waiter is event for _, _, waiter in clock._timers)


def _periodic_events(runtime: JobRuntime) -> list[anyio.Event]:
    """The wake-ups of loops that tick whether or not anything is due.

    The scheduler's too: it re-reads the stored schedules every few seconds;
    the fire times themselves come from the store (:func:`_next_event`).
    """
    events = []
    scheduler = runtime._scheduler_loop
    if scheduler is not None:
        events.append(scheduler._wake)
    dispatcher = runtime._dispatcher
    if dispatcher is not None:
        events.append(dispatcher._beat_wake)
    presence = getattr(runtime, "_presence", None)
    wake = getattr(presence, "_wake", None)
    if isinstance(wake, anyio.Event):
        events.append(wake)
    return events


async def _unpaused(runtime: JobRuntime) -> list[str]:
    paused = {stats.queue for stats in await runtime.queue_stats() if stats.paused}
    return sorted(set(runtime.queues) - paused)


async def _busy(runtime: JobRuntime, clock: ManualClock, wait_for_jobs: bool) -> bool:
    """Whether *runtime* is still reacting to the clock's last move."""
    if not runtime.started:
        return False
    scheduler = runtime._scheduler_loop
    if scheduler is not None and not scheduler.is_idle:
        return True
    dispatcher = runtime._dispatcher
    if dispatcher is None:
        return False
    if dispatcher._settler.pending or (wait_for_jobs and len(dispatcher._claims)):
        return True
    if dispatcher.claims_in_flight:
        return True  # what the store hands over is not in _claims yet
    if not dispatcher._heartbeats_done and not _waiting_on_clock(clock, dispatcher._beat_wake):
        return True  # a heartbeat round (renewals, recovery, pruning) is under way
    presence = getattr(runtime, "_presence", None)
    wake = getattr(presence, "_wake", None)
    stopped = getattr(presence, "_stop", None)
    if (
        isinstance(wake, anyio.Event)
        and not _waiting_on_clock(clock, wake)
        and not wake.is_set()
        and not (isinstance(stopped, anyio.Event) and stopped.is_set())
    ):
        return True
    claimable = [
        queue
        for queue in await _unpaused(runtime)
        if dispatcher.slots.room(queue) > 0 and dispatcher.held_by.get(queue) is None
    ]
    if not claimable:
        return False
    due = await runtime.backend.next_due_at(claimable)
    return due is not None and due <= clock.now()


async def _settle(runtimes: Sequence[JobRuntime], clock: ManualClock, wait_for_jobs: bool) -> None:
    """Return once every runtime has done what the clock's current time makes due."""
    quiet = spins = 0
    while quiet < 2:
        busy = False
        for runtime in runtimes:
            if await _busy(runtime, clock, wait_for_jobs):
                busy = True
                break
        quiet = 0 if busy else quiet + 1
        spins += 1
        if spins < 100:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        else:
            # Work in threads (sync handlers, SQLite) needs real time to finish.
            await anyio.sleep(0.001)


async def _next_event(
    runtimes: Sequence[JobRuntime], clock: ManualClock, end: float
) -> float | None:
    """The earliest moment after now and up to *end* at which something is due."""
    now = clock.now()
    backends = {id(runtime.backend): runtime for runtime in runtimes if runtime.started}
    # Heartbeats matter while some job holds a lease: renewals, cancels sent from
    # another process, and recovery of a crashed worker's jobs all ride on them.
    leases_held = False
    for runtime in backends.values():
        if await runtime.list_jobs(state=JobState.RUNNING, limit=1):
            leases_held = True
            break
    periodic = {id(event) for runtime in runtimes for event in _periodic_events(runtime)}
    candidates = [
        deadline
        for deadline, _, event in clock._timers
        if now < deadline <= end
        and not event.is_set()
        and (leases_held or id(event) not in periodic)
    ]
    for runtime in backends.values():
        due = await runtime.backend.next_due_at(await _unpaused(runtime))
        if due is not None and now < due <= end:
            candidates.append(due)
    for runtime in runtimes:
        if runtime.started and runtime._scheduler_loop is not None:
            for schedule in await runtime.schedules.list():
                fire = schedule.next_fire_at
                if not schedule.paused and fire is not None and now < fire <= end:
                    candidates.append(fire)
    return min(candidates, default=None)


async def advance(
    runtime: JobRuntime | Iterable[JobRuntime],
    by: float | timedelta,
    *,
    wait_for_jobs: bool = True,
    timeout: float = 10.0,
) -> int:
    """Move the runtimes' :class:`ManualClock` forward *by*, one due event at a time.

    Every moment at which something is due (a delayed job, a retry after its
    backoff, a cron or interval fire, a rate-limit window opening, a heartbeat
    while a job holds a lease: renewals, cancels from another runtime, recovery
    of a crashed worker's jobs) is visited in order, and the runtimes react to
    each before the clock moves on: a job a handler enqueues with a delay runs
    at its time within the same call. Heartbeats while no job holds a lease are
    not visited one by one (pruning then happens at the next visited moment),
    so a week of schedules takes milliseconds.

    :param runtime: a started runtime, or several sharing one store and clock
        (a web process and a worker, say).
    :param by: seconds or a timedelta; not negative.
    :param wait_for_jobs: wait at each moment for the jobs that started to
        reach an outcome (default). ``False`` lets handlers that wait on the
        test keep running while time moves (their leases are renewed).
    :param timeout: real seconds for the whole call.
    :returns: how many moments were visited.
    :raises TimeoutError: when the runtimes do not settle within *timeout*
        (a handler that never returns while *wait_for_jobs* is set).
    :raises InvalidOptionError: for a clock that is not a ManualClock, or a negative *by*.
    """
    runtimes = [runtime] if isinstance(runtime, JobRuntime) else list(runtime)
    clock = _manual_clock(runtimes)
    step = by.total_seconds() if isinstance(by, timedelta) else float(by)
    if math.isnan(step) or step < 0:
        raise InvalidOptionError(f"advance() moves time forward; got {by!r}")
    end = clock.now() + step
    visited = 0
    with anyio.fail_after(timeout):
        await _settle(runtimes, clock, wait_for_jobs)
        while (moment := await _next_event(runtimes, clock, end)) is not None:
            clock.set(moment)
            visited += 1
            await _settle(runtimes, clock, wait_for_jobs)
        if clock.now() < end:
            clock.set(end)
            visited += 1
            await _settle(runtimes, clock, wait_for_jobs)
    return visited


# -- the harness ---------------------------------------------------------------------------


@attrs.frozen
class RunRecord:
    """One attempt of a job, as the harness saw it end.

    :ivar outcome: ``"complete"``, ``"retrying"``, ``"dead"``, ``"cancelled"``,
        ``"released"`` (handed back at shutdown or snoozed) or ``"lease_lost"``.
    :ivar at: the (manual) clock time the outcome was reported.
    """

    job_id: str
    job_name: str
    attempt: int
    outcome: str
    at: datetime
    error_type: str | None = None
    error_message: str | None = None


@attrs.frozen
class EnqueuedJob:
    """A stored job with its arguments decoded as its handler receives them."""

    job: Job
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def describe(self) -> str:
        """``name(args, kw=...)`` with the job's options, for failure messages."""
        job = self.job
        options = [f"state={job.state.value}", f"queue={job.queue!r}"]
        delay = job.due_at - job.enqueued_at
        if delay:
            options.append(f"delay={delay:g}")
        if job.priority:
            options.append(f"priority={job.priority}")
        if job.key is not None:
            options.append(f"key={job.key!r}")
        return f"{_call_text(job.name, self.args, self.kwargs)} [{', '.join(options)}]"


_OUTCOMES: dict[type[Event], str] = {
    JobCompleted: "complete",
    JobRetrying: "retrying",
    JobDied: "dead",
    JobWasCancelled: "cancelled",
    JobReleased: "released",
    JobLeaseLost: "lease_lost",
}


class Harness:
    """Runs a runtime for a test and records what its jobs do.

    ``async with Harness(runtime) as harness:`` starts the runtime (unless it
    runs already) and stops it on leaving. Modes:

    - ``"background"`` (default): workers run jobs as in production; use
      :meth:`advance` or :meth:`run_until_idle` to let them catch up.
    - ``"eager"``: ``enqueue`` returns once the job ran: its handle's ``job``
      holds the outcome (complete, dead, or queued for a retry later).
    - ``"manual"``: nothing runs until :meth:`run_until_idle` (the runtime's
      queues are paused meanwhile), so a test can look at what was enqueued
      before any of it runs.

    :param runtime: a runtime on a :class:`ManualClock` (memory or SQLite store).
    :param mode: ``"background"``, ``"eager"`` or ``"manual"``.
    :param timeout: real seconds any one wait may take.
    """

    def __init__(
        self, runtime: JobRuntime, *, mode: Mode = "background", timeout: float = 10.0
    ) -> None:
        if mode not in ("background", "eager", "manual"):
            raise InvalidOptionError(
                f"mode must be 'background', 'eager' or 'manual', not {mode!r}"
            )
        self.runtime = runtime
        self.mode: Mode = mode
        self.timeout = timeout
        #: every attempt that ended while the harness ran, in order.
        self.runs: list[RunRecord] = []
        self._started_here = False
        self._remove_callback: Any = None

    @property
    def clock(self) -> ManualClock:
        """The runtime's manual clock."""
        return _manual_clock([self.runtime])

    async def __aenter__(self) -> Harness:
        _manual_clock([self.runtime])
        self._remove_callback = self.runtime.events.on(*_OUTCOMES, callback=self._record)
        if not self.runtime.started:
            await self.runtime.__aenter__()
            self._started_here = True
        if self.mode == "manual":
            for queue in self.runtime.queues:
                await self.runtime.pause(queue)
        elif self.mode == "eager":
            self.runtime.enqueue_many = self._eager_enqueue_many  # type: ignore[method-assign]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.mode == "eager":
            del self.runtime.enqueue_many
        if self._remove_callback is not None:
            self._remove_callback()
        if self._started_here:
            await self.runtime.__aexit__(exc_type, exc, tb)

    def _record(self, event: Event) -> None:
        assert isinstance(event, JobEvent)
        error = getattr(event, "error", None)
        self.runs.append(
            RunRecord(
                job_id=event.job_id,
                job_name=event.job_name,
                attempt=getattr(event, "attempt", 0),
                outcome=_OUTCOMES[type(event)],
                at=to_datetime(event.timestamp),
                error_type=None if error is None else error.type,
                error_message=None if error is None else error.message,
            )
        )

    # -- moving time and running jobs ----------------------------------------------

    async def advance(self, by: float | timedelta, *, wait_for_jobs: bool = True) -> int:
        """:func:`advance` this harness's runtime (in manual mode, jobs wait for
        :meth:`run_until_idle`)."""
        return await advance(self.runtime, by, wait_for_jobs=wait_for_jobs, timeout=self.timeout)

    async def run_until_idle(self) -> None:
        """Run every job due now, and what they enqueue for now, until nothing is due.

        Jobs due later (delays, retries after backoff) stay queued: :meth:`advance`.
        """
        runtime = self.runtime
        if self.mode == "manual":
            for queue in runtime.queues:
                await runtime.resume(queue)
        try:
            await advance(runtime, 0, timeout=self.timeout)
        finally:
            if self.mode == "manual":
                for queue in runtime.queues:
                    await runtime.pause(queue)

    async def _eager_enqueue_many(self, calls: Iterable[JobCall[Any]]) -> list[JobHandle[Any]]:
        handles = await JobRuntime.enqueue_many(self.runtime, calls)
        with anyio.fail_after(self.timeout):
            for handle in handles:
                handle.job = await self._until_done(handle)
        return handles

    async def _until_done(self, handle: JobHandle[Any]) -> Job:
        """Wait until the job finished or waits for a later due time."""
        clock = self.clock
        spins = 0
        while True:
            job = await handle.refresh()
            if job.state in FINISHED_STATES or (
                job.state is JobState.QUEUED and job.due_at > clock.now()
            ):
                return job
            spins += 1
            if spins < 100:
                await anyio.lowlevel.checkpoint()
            else:
                await anyio.sleep(0.001)

    # -- what was enqueued -------------------------------------------------------------

    async def enqueued(
        self, job: JobFunction[..., Any] | str | None = None, *, state: JobState | str | None = None
    ) -> list[EnqueuedJob]:
        """The stored jobs (oldest first), with their arguments decoded.

        :param job: only jobs of this job function (or name).
        :param state: only jobs in this state.
        """
        name = job if isinstance(job, str) or job is None else job.name
        found: list[Job] = []
        offset = 0
        while True:
            page = await self.runtime.list_jobs(name=name, state=state, limit=500, offset=offset)
            found.extend(page)
            if len(page) < 500:
                break
            offset += 500
        found.sort(key=lambda stored: (stored.enqueued_at, stored.id))
        return [self._decoded(stored) for stored in found]

    def _decoded(self, job: Job) -> EnqueuedJob:
        try:
            definition = self.runtime.definition(job.name)
        except AsyncJobsError:
            definition = None
        types = None if definition is None else definition.types
        if types is not None and types.arguments:
            args, kwargs = types.decode_arguments(self.runtime.codec, job.payload)
        else:
            payload = self.runtime.codec.decode(job.payload)
            args, kwargs = payload["a"], payload["k"]
        return EnqueuedJob(job=job, args=tuple(args), kwargs=dict(kwargs))

    async def assert_enqueued(
        self, job: JobFunction[..., Any], /, *args: Any, count: int | None = None, **kwargs: Any
    ) -> list[EnqueuedJob]:
        """Assert that *job* was enqueued with these arguments and options.

        Options set with ``job.options(...)`` must match too: ``delay``,
        ``priority``, ``key``, ``queue``, ``max_attempts``, ``timeout``,
        ``partition``. Arguments are compared as the handler would receive
        them (positional or by keyword alike).

        :param count: how many such jobs there must be (default: at least one).
        :returns: the matching jobs.
        :raises AssertionError: naming what was expected and listing what was enqueued.
        """
        expected = _bound(job, args, kwargs)
        candidates = await self.enqueued(job)
        matching = [
            found
            for found in candidates
            if _bound(job, found.args, found.kwargs) == expected and _options_match(job, found.job)
        ]
        if (count is None and matching) or (count is not None and len(matching) == count):
            return matching
        times = "at least once" if count is None else f"{count} time{'s' if count != 1 else ''}"
        listing = "\n".join(f"  - {found.describe()}" for found in candidates) or "  (none)"
        raise AssertionError(
            f"expected {_call_text(job.name, args, kwargs)}{_options_text(job)} "
            f"to be enqueued {times}, "
            f"found {len(matching)} matching; {job.name} jobs in the store:\n{listing}"
        )

    async def assert_not_enqueued(self, job: JobFunction[..., Any]) -> None:
        """Assert that no job of *job* is stored.

        :raises AssertionError: listing the ones that are.
        """
        found = await self.enqueued(job)
        if found:
            listing = "\n".join(f"  - {entry.describe()}" for entry in found)
            raise AssertionError(f"expected no {job.name} job, found {len(found)}:\n{listing}")

    # -- what ran ----------------------------------------------------------------------

    def runs_of(self, job: JobFunction[..., Any] | str) -> list[RunRecord]:
        """The recorded attempts of *job* (a job function or name), in order."""
        name = job if isinstance(job, str) else job.name
        return [run for run in self.runs if run.job_name == name]

    def assert_ran(
        self, job: JobFunction[..., Any] | str, outcomes: Sequence[str] | None = None
    ) -> list[RunRecord]:
        """Assert that *job*'s attempts ended as *outcomes*, in order (or ran at all).

        ``harness.assert_ran(flaky, ["retrying", "retrying", "complete"])``.

        :raises AssertionError: listing the attempts that were recorded.
        """
        runs = self.runs_of(job)
        name = job if isinstance(job, str) else job.name
        got = [run.outcome for run in runs]
        if (outcomes is None and runs) or (outcomes is not None and got == list(outcomes)):
            return runs
        listing = (
            "\n".join(
                f"  - {run.at.isoformat()} attempt {run.attempt}: {run.outcome}"
                + (f" ({run.error_type}: {run.error_message})" if run.error_type else "")
                for run in runs
            )
            or "  (no attempt ended)"
        )
        expected = "to run" if outcomes is None else f"to end as {list(outcomes)}"
        raise AssertionError(f"expected {name} {expected}, got {got}:\n{listing}")

    # -- schedules ---------------------------------------------------------------------

    async def next_fire_times(self) -> dict[str, datetime | None]:
        """Each stored schedule's next fire time (aware UTC), by schedule name."""
        return {
            schedule.name: None
            if schedule.next_fire_at is None
            else to_datetime(schedule.next_fire_at)
            for schedule in await self.runtime.schedules.list()
        }

    async def assert_next_fire(self, schedule: str, expected: datetime | None) -> None:
        """Assert that *schedule* fires next at *expected* (an aware datetime; ``None``: never).

        :raises AssertionError: with the schedule's actual next fire time.
        """
        times = await self.next_fire_times()
        if schedule not in times:
            known = ", ".join(sorted(times)) or "none"
            raise AssertionError(f"no schedule {schedule!r} is stored (stored: {known})")
        actual = times[schedule]
        if actual != expected:
            shown = "never" if actual is None else actual.isoformat()
            wanted = "never" if expected is None else expected.astimezone(UTC).isoformat()
            raise AssertionError(
                f"expected schedule {schedule!r} to fire next at {wanted}, but it fires {shown}"
            )


def _bound(job: JobFunction[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    try:
        bound = job.definition.signature.bind(*args, **kwargs)
    except TypeError:
        return (tuple(args), kwargs)
    return dict(bound.arguments)


def _options_match(job: JobFunction[..., Any], stored: Job) -> bool:
    options = job._options
    if options.delay is not None and not math.isclose(
        stored.due_at - stored.enqueued_at, options.delay, abs_tol=1e-6
    ):
        return False
    if options.at is not None and not math.isclose(stored.due_at, options.at.timestamp()):
        return False
    checks = {
        "priority": stored.priority,
        "key": stored.key,
        "queue": stored.queue,
        "max_attempts": stored.max_attempts,
        "timeout": stored.timeout,
        "partition": stored.partition,
    }
    return all(
        getattr(options, name) is None or getattr(options, name) == value
        for name, value in checks.items()
    )


def _options_text(job: JobFunction[..., Any]) -> str:
    options = job._options
    given = [
        f"{name}={getattr(options, name)!r}"
        for name in (
            "delay",
            "at",
            "priority",
            "key",
            "queue",
            "max_attempts",
            "timeout",
            "partition",
        )
        if getattr(options, name) is not None
    ]
    return f" with {', '.join(given)}" if given else ""


def _call_text(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    shown = [repr(value) for value in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"
