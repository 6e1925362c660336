"""Declaring and operating schedules: ``runtime.cron``, ``runtime.every`` and ``runtime.schedules``.

Schedules are stored in the backend, so every process sharing it sees the
same set: decorator schedules are written at start-up (replacing the stored
definition of the same name), dynamic ones at run time.
"""

from __future__ import annotations

import builtins
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import attrs

from ._clock import to_datetime
from ._context import JobContext
from ._exceptions import (
    ConfigurationError,
    InvalidScheduleError,
    NotRunningError,
    ScheduleNotFound,
)
from ._handle import JobHandle
from ._misfire import MISFIRE_POLICIES
from ._models import Job, Schedule
from ._registry import JobDefinition, JobFunction
from ._retry import seconds
from ._scheduler import jobs_for
from ._triggers import CronTrigger, IntervalTrigger, Trigger

if TYPE_CHECKING:
    from ._runtime import JobRuntime

__all__ = ["ScheduleBook", "ScheduleSettings"]

P = ParamSpec("P")
R = TypeVar("R")


def make_trigger(spec: str | Trigger, timezone: str | None) -> Trigger:
    """Turn a cron expression (with *timezone*) or a ready trigger into a trigger.

    :raises InvalidScheduleError: for a bad expression or zone, or a zone given
        with a ready-made trigger.
    """
    if isinstance(spec, CronTrigger | IntervalTrigger):
        if timezone is not None:
            raise InvalidScheduleError(
                "timezone= goes with a cron expression string; a CronTrigger carries its own"
            )
        return spec
    if not isinstance(spec, str):
        raise InvalidScheduleError(
            f"a schedule needs a cron expression, a CronTrigger or an IntervalTrigger, "
            f"not {type(spec).__name__}"
        )
    return CronTrigger(spec, timezone or "UTC")


@attrs.frozen(kw_only=True)
class ScheduleSettings:
    """How a schedule enqueues its job; validated when made.

    :ivar misfire: ``"skip"``, ``"once"`` (default) or ``"all"``: what to do with
        fire times missed by more than *grace* (downtime, a paused schedule).
    :ivar grace: seconds a fire time may be late and still count as on time.
    :ivar overlap: ``False`` skips a fire while the previous run is still
        queued or running.
    """

    name: str | None = None
    queue: str | None = None
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    misfire: str = "once"
    grace: float = 60.0
    overlap: bool = True
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    paused: bool = False

    def __attrs_post_init__(self) -> None:
        if self.misfire not in MISFIRE_POLICIES:
            raise InvalidScheduleError(
                f"misfire must be one of {', '.join(sorted(MISFIRE_POLICIES))}, "
                f"got {self.misfire!r}"
            )
        if seconds(self.grace, "grace") is None:
            raise InvalidScheduleError("grace must be seconds or a timedelta, not None")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise InvalidScheduleError(
                f"a schedule name must be a non-empty str, got {self.name!r}"
            )


@attrs.frozen(kw_only=True)
class _Declaration:
    definition: JobDefinition
    trigger: Trigger
    settings: ScheduleSettings


class _ScheduleDecorator:
    """What ``runtime.cron(...)`` returns: schedules a job function, or makes one first."""

    def __init__(self, book: ScheduleBook, trigger: Trigger, settings: ScheduleSettings) -> None:
        self._book = book
        self._trigger = trigger
        self._settings = settings

    @overload
    def __call__(self, function: JobFunction[P, R]) -> JobFunction[P, R]: ...

    @overload
    def __call__(
        self, function: Callable[typing.Concatenate[JobContext, P], Awaitable[R]]
    ) -> JobFunction[P, R]: ...

    @overload
    def __call__(self, function: Callable[P, Awaitable[R]]) -> JobFunction[P, R]: ...

    @overload
    def __call__(self, function: Callable[P, R]) -> JobFunction[P, R]: ...

    def __call__(self, function: Any) -> JobFunction[Any, Any]:
        if isinstance(function, JobFunction):
            job: JobFunction[Any, Any] = function
        else:
            job = self._book.runtime.job(queue=self._settings.queue or "default")(function)
        self._book.declare(job.definition, self._trigger, self._settings)
        return job


class ScheduleBook:
    """The schedules of one runtime: declared ones and those stored in the backend.

    Reached as ``runtime.schedules``.
    """

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self._declared: dict[str, _Declaration] = {}

    def decorator(self, trigger: Trigger, settings: ScheduleSettings) -> _ScheduleDecorator:
        """Return the decorator ``runtime.cron``/``runtime.every`` hand to users."""
        return _ScheduleDecorator(self, trigger, settings)

    def declare(
        self, definition: JobDefinition, trigger: Trigger, settings: ScheduleSettings
    ) -> None:
        """Record a decorator schedule; it is stored when the runtime starts.

        :raises ConfigurationError: when the name is already declared.
        :raises JobArgumentsError: when ``args``/``kwargs`` do not bind to the job.
        """
        name = settings.name or definition.name
        if name in self._declared:
            raise ConfigurationError(
                f"schedule {name!r} is declared twice; pass name= to tell them apart"
            )
        self._schedule(definition, trigger, settings, now=0.0)  # validates everything
        self._declared[name] = _Declaration(
            definition=definition, trigger=trigger, settings=settings
        )

    def declared(self, now: float) -> list[Schedule]:
        """The declared schedules as store records, first fire computed from *now*."""
        return [
            self._schedule(d.definition, d.trigger, d.settings, now)
            for d in self._declared.values()
        ]

    def _schedule(
        self, definition: JobDefinition, trigger: Trigger, settings: ScheduleSettings, now: float
    ) -> Schedule:
        runtime = self.runtime
        queue = settings.queue or definition.queue
        runtime._check_queue(queue)
        definition.bind(tuple(settings.args), settings.kwargs)
        types = definition.types
        if types is not None and types.arguments:
            payload = types.encode_arguments(runtime.codec, tuple(settings.args), settings.kwargs)
        else:
            payload = runtime.codec.encode({"a": list(settings.args), "k": dict(settings.kwargs)})
        first = trigger.next_after(to_datetime(now))
        priority, max_attempts, timeout = self.runtime.job_settings(
            definition, queue, settings.priority, settings.max_attempts, settings.timeout
        )
        return Schedule(
            name=settings.name or definition.name,
            job_name=definition.name,
            queue=queue,
            trigger=trigger.to_json(),
            payload=payload,
            next_fire_at=None if first is None else first.timestamp(),
            misfire=settings.misfire,
            grace=seconds(settings.grace, "grace") or 0.0,
            overlap=settings.overlap,
            paused=settings.paused,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
        )

    # -- at run time --------------------------------------------------------------

    def _require_started(self) -> None:
        if not self.runtime.started:
            raise NotRunningError("schedules are stored in the backend: start the runtime first")

    def _changed(self) -> None:
        scheduler = self.runtime._scheduler_loop
        if scheduler is not None:
            scheduler.changed()

    async def add(
        self,
        job: JobFunction[..., Any] | str,
        trigger: str | Trigger,
        *,
        timezone: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        misfire: str = "once",
        grace: float | timedelta = 60.0,
        overlap: bool = True,
        paused: bool = False,
    ) -> Schedule:
        """Store a schedule (replacing one of the same name) for every process to fire.

        :param job: the job function, or its registered name.
        :param trigger: a cron expression (with *timezone*), a CronTrigger or an IntervalTrigger.
        :raises InvalidScheduleError: a bad expression, zone or misfire policy.
        :raises UnknownJobError: an unknown job name.
        :raises JobArgumentsError: args that do not bind to the job.
        """
        self._require_started()
        definition = self.runtime.definition(job) if isinstance(job, str) else job.definition
        settings = ScheduleSettings(
            name=name,
            queue=queue,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            misfire=misfire,
            grace=seconds(grace, "grace") or 0.0,
            overlap=overlap,
            paused=paused,
        )
        schedule = self._schedule(
            definition, make_trigger(trigger, timezone), settings, self.runtime.clock.now()
        )
        stored = await self.runtime.backend.put_schedule(schedule)
        self._changed()
        return stored

    async def get(self, name: str) -> Schedule:
        """Return the stored schedule *name*.

        :raises ScheduleNotFound: when there is none.
        """
        self._require_started()
        schedule = await self.runtime.backend.get_schedule(name)
        if schedule is None:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        return schedule

    async def list(self) -> list[Schedule]:
        """Return every stored schedule, by name, with its next fire time."""
        self._require_started()
        return await self.runtime.backend.list_schedules()

    async def pause(self, name: str) -> Schedule:
        """Stop firing *name* (in every process) until resumed.

        :raises ScheduleNotFound: when there is none.
        """
        return await self._set_paused(name, True)

    async def resume(self, name: str) -> Schedule:
        """Fire *name* again; missed fire times follow its misfire policy.

        :raises ScheduleNotFound: when there is none.
        """
        return await self._set_paused(name, False)

    async def _set_paused(self, name: str, paused: bool) -> Schedule:
        self._require_started()
        schedule = await self.runtime.backend.pause_schedule(name, paused)
        if schedule is None:
            raise ScheduleNotFound(f"no schedule named {name!r}")
        self._changed()
        return schedule

    async def remove(self, name: str) -> None:
        """Delete schedule *name*; jobs it already enqueued stay.

        :raises ScheduleNotFound: when there is none.
        """
        self._require_started()
        if not await self.runtime.backend.remove_schedule(name):
            raise ScheduleNotFound(f"no schedule named {name!r}")
        self._changed()

    async def trigger(self, name: str) -> JobHandle[Any]:
        """Enqueue the schedule's job now, leaving its next fire time as it is.

        :raises ScheduleNotFound: when there is none.
        """
        schedule = await self.get(name)
        now = self.runtime.clock.now()
        stored = await self.runtime.backend.enqueue(jobs_for(schedule, [now], now))
        self.runtime._enqueuer.after_enqueue(stored)
        return JobHandle(self.runtime, stored[0])

    async def runs(self, name: str, limit: int = 10) -> builtins.list[Job]:
        """The last jobs schedule *name* enqueued, newest first, with state and timing.

        A run's duration is ``finished_at - started_at``.
        """
        self._require_started()
        return await self.runtime.backend.list_jobs(schedule=name, limit=limit)
