"""JobRuntime: the lifecycle in one anyio task group, the roles, enqueue and inspection."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import attrs

from ._admin import Admin
from ._clock import Clock, SystemClock
from ._dispatcher import Dispatcher
from ._enqueue import Enqueuer
from ._events import EventBus, JobWasCancelled
from ._exceptions import (
    ConfigurationError,
    JobNotFound,
    NotRunningError,
    UnknownJobError,
    UnknownQueueError,
)
from ._handle import JobHandle
from ._models import (
    FINISHED_STATES,
    Job,
    JobState,
    QueueStats,
)
from ._operating import WorkerInfo
from ._presence import Presence
from ._queue import Queue, QueuePlan, RateLimit
from ._registry import JobCall, JobDefinition, JobFunction, JobRegistry, _JobDecorator
from ._resilience import StoreGuard, StoreStatus
from ._retry import Backoff, BackoffLike, ExponentialBackoff, make_backoff, seconds
from ._scheduler import Scheduler
from ._schedules import ScheduleBook, ScheduleSettings, _ScheduleDecorator, make_trigger
from ._serialization import Codec, JSONCodec
from ._triggers import CronTrigger, IntervalTrigger
from .backends import Backend, from_url

__all__ = ["JobRuntime", "Role"]

logger = logging.getLogger("asyncjobs")

R = TypeVar("R")
Role = Literal["all", "enqueue", "worker"]

_DEFAULT_RETENTION: dict[JobState, float] = {
    JobState.COMPLETE: 86_400.0,
    JobState.CANCELLED: 86_400.0,
    JobState.DEAD: 7 * 86_400.0,
}
_PRUNE_EVERY = 60.0
#: How long the audit trail keeps an operator action.
AUDIT_RETENTION = 30 * 86_400.0


def _make_backend(backend: Backend | str | None) -> Backend:
    if backend is None:
        url = os.environ.get("ASYNCJOBS_URL")
        if url:
            return from_url(url)
        from .backends.memory import MemoryBackend

        return MemoryBackend()
    if isinstance(backend, str):
        return from_url(backend)
    if not isinstance(backend, Backend):
        raise ConfigurationError(
            f"backend must be a Backend (MemoryBackend, SQLiteBackend, RedisBackend) or a URL, "
            f"not {type(backend).__name__}"
        )
    return backend


def _retention(
    values: Mapping[JobState | str, float | timedelta | None] | None,
) -> dict[JobState, float]:
    merged: dict[JobState, float] = dict(_DEFAULT_RETENTION)
    for state_name, value in (values or {}).items():
        try:
            state = JobState(state_name)
        except ValueError:
            raise ConfigurationError(
                "retention is set per finished state (complete, dead, cancelled), "
                f"not {state_name!r}"
            ) from None
        if state not in FINISHED_STATES:
            raise ConfigurationError(
                f"retention applies to finished states only, not {state.value!r}"
            )
        duration = seconds(value, f"retention[{state.value!r}]")
        if duration is None:
            merged.pop(state, None)
        else:
            merged[state] = duration
    return merged


async def _shielded(
    run: Callable[..., Awaitable[None]], *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Run the dispatcher shielded from the host's cancellation.

    Leaving the runtime always calls ``stop()``, so a cancelled host (Ctrl-C, a
    server shutting down) still gets the graceful shutdown, bounded by
    ``shutdown_grace``, instead of jobs cut off mid-flight.
    """
    with anyio.CancelScope(shield=True):
        await run(task_status=task_status)


class JobRuntime:
    """Runs background jobs inside an async application.

    Use it as ``async with runtime:`` or as a Starlette/FastAPI lifespan
    (``lifespan=runtime.lifespan``). Everything it starts runs in one anyio
    task group and stops when the block is left.

    :param backend: a backend, a URL for :func:`~asyncjobs.backends.from_url`, or
        ``None`` for ``$ASYNCJOBS_URL`` (or memory when unset).
    :param queues: queue name -> a :class:`Queue` (its limits, weight and job
        defaults) or an int, meaning ``Queue(concurrency=int)``: how many of its
        jobs this process runs at once. Default: ``{"default": 10}``.
    :param role: ``"all"`` runs jobs and enqueues; ``"enqueue"`` only enqueues
        (a web process); ``"worker"`` runs jobs and schedules (its handlers may enqueue too);
        ``"all"`` is the same, named for processes that also serve requests.
    :param lease: how long a claimed job is held without a heartbeat (seconds or
        timedelta; default 30 s). A crashed worker's jobs run again after this.
    :param shutdown_grace: how long leaving the runtime waits for running jobs
        before it cancels them and hands them back (default 10 s).
    :param max_concurrency: the pool: a cap on running jobs across all queues
        (default: the queues' caps added up, or 10 when a queue has none).
    :param queue_selection: how queues share the pool when it is the bottleneck:
        ``"weighted"`` (by ``Queue(weight=)``, interleaved; a queue without due
        work lends its share) or ``"strict"`` (declared order is priority
        order: a later queue runs only on slots the earlier ones leave idle).
    :param heartbeat: seconds (or timedelta) between lease renewals (default: a
        third of the lease); less than the lease.
    :param default_backoff: the backoff of jobs whose definition and queue name none.
    :param prefetch: how many jobs per worker slot to claim ahead (default 1: a
        queue with limit 10 holds up to 20, 10 running and 10 buffered), so
        workers never wait on a round trip to the store. Use 0 for long jobs
        shared by many worker processes, so no process hoards waiting jobs.
    :param clock: the time source (tests pass a :class:`ManualClock`).
    :param codec: how arguments and results are encoded (default JSON).
    :param max_payload_bytes: the largest encoded arguments accepted (default 1 MiB).
    :param retention: how long finished jobs are kept, per state (seconds or
        timedelta; ``None`` keeps them). Defaults: complete and cancelled 1 day,
        dead 7 days.
    :param state: the app's resources (a database pool, an HTTP client,
        settings), read by handlers as ``ctx.state``; also ``runtime.state``.
    :raises ConfigurationError: for values that cannot work.
    """

    def __init__(
        self,
        backend: Backend | str | None = None,
        *,
        queues: Mapping[str, int | Queue] | None = None,
        role: Role = "all",
        lease: float | timedelta = 30.0,
        shutdown_grace: float | timedelta = 10.0,
        max_concurrency: int | None = None,
        queue_selection: str = "weighted",
        heartbeat: float | timedelta | None = None,
        default_backoff: BackoffLike = None,
        prefetch: int = 1,
        clock: Clock | None = None,
        codec: Codec | None = None,
        max_payload_bytes: int = 1 << 20,
        retention: Mapping[JobState | str, float | timedelta | None] | None = None,
        worker_id: str | None = None,
        state: object = None,
    ) -> None:
        if role not in ("all", "enqueue", "worker"):
            raise ConfigurationError(f"role must be 'all', 'enqueue' or 'worker', not {role!r}")
        lease_seconds = seconds(lease, "lease")
        if not lease_seconds:
            raise ConfigurationError("lease must be more than 0 seconds")
        grace = seconds(shutdown_grace, "shutdown_grace")
        beat = seconds(heartbeat, "heartbeat")
        if beat is not None and not 0 < beat < lease_seconds:
            raise ConfigurationError(
                f"heartbeat must be more than 0 and less than the lease ({lease_seconds} s), "
                f"got {beat} s"
            )
        if not isinstance(max_payload_bytes, int) or max_payload_bytes < 1:
            raise ConfigurationError(
                f"max_payload_bytes must be a positive int, got {max_payload_bytes!r}"
            )
        self.backend: Backend = _make_backend(backend)
        self.role: Role = role
        self.lease = lease_seconds
        self.shutdown_grace = grace or 0.0
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.codec: Codec = codec if codec is not None else JSONCodec()
        self.max_payload_bytes = max_payload_bytes
        self.retention = _retention(retention)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        #: the app's resources for handlers, read as ``ctx.state`` (may be set until jobs run).
        self.state: Any = state
        self.heartbeat = beat if beat is not None else lease_seconds / 3
        self.default_backoff: Backoff = (
            make_backoff(default_backoff) if default_backoff is not None else ExponentialBackoff()
        )
        #: the configured queues, the pool and how it is shared.
        self.queue_plan = QueuePlan.make(queues, max_concurrency, queue_selection, prefetch)
        self.slots = self.queue_plan.slots()
        #: in-process lifecycle events; ``with runtime.events.subscribe() as stream: ...``
        self.events = EventBus()
        # Every job name this runtime can run, from its own and included registries.
        self._definitions: dict[str, JobDefinition] = {}
        self._registry = JobRegistry()
        self._registry.bind(self, self._vet_definition)
        self._registries: list[JobRegistry] = [self._registry]
        self._enqueuer = Enqueuer(
            self,
            backend=self.backend,
            clock=self.clock,
            codec=self.codec,
            bus=self.events,
            plan=self.queue_plan,
            definitions=self._definitions,
            max_payload_bytes=self.max_payload_bytes,
            check_queue=self._check_queue,
            dispatcher=lambda: self._dispatcher,
        )
        #: the stored schedules: ``await runtime.schedules.list()``, ``.add(...)``, ``.pause(name)``
        self.schedules = ScheduleBook(self)
        self._scheduler_loop: Scheduler | None = None
        self._dispatcher: Dispatcher | None = None
        self._guard = StoreGuard(self.clock)
        self._presence: Presence | None = None
        self._started_at = 0.0
        self._exit_stack: AsyncExitStack | None = None
        self._last_prune = float("-inf")

    def __repr__(self) -> str:
        return (
            f"<JobRuntime role={self.role!r} backend={self.backend!r} queues={self.slots.limits}>"
        )

    # -- defining jobs ------------------------------------------------------------

    @property
    def queues(self) -> Mapping[str, int]:
        """The configured queues and their per-process concurrency limits."""
        return self.queue_plan.limits

    @property
    def queue_settings(self) -> Mapping[str, Queue]:
        """The configured queues as :class:`Queue` values."""
        return dict(self.queue_plan.queues)

    def job(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        max_attempts: int | None = None,
        backoff: BackoffLike = None,
        timeout: float | timedelta | None = None,
        priority: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> _JobDecorator:
        """Register the decorated function as a job; see :meth:`JobRegistry.job`.

        :raises UnknownQueueError: when *queue* is not one of the runtime's queues.
        """
        self._check_queue(queue)
        return self._registry.job(
            name=name,
            queue=queue,
            max_attempts=max_attempts,
            backoff=backoff,
            timeout=timeout,
            priority=priority,
            rate_limit=rate_limit,
        )

    def include(self, registry: JobRegistry) -> None:
        """Make the jobs of *registry* runnable and enqueueable through this runtime.

        :raises UnknownQueueError: when one of its jobs names an unknown queue.
        :raises ConfigurationError: when one of its job names is already taken.
        """
        if registry in self._registries:
            return
        registry.bind(self, self._vet_definition)
        self._registries.append(registry)

    def _check_queue(self, queue: str) -> None:
        if queue not in self.queue_plan.queues:
            known = ", ".join(sorted(self.queue_plan.queues))
            raise UnknownQueueError(
                f"queue {queue!r} is not configured (configured: {known}); "
                f"add it to JobRuntime(queues={{...}})"
            )

    def _vet_definition(self, definition: JobDefinition) -> None:
        self._check_queue(definition.queue)
        other = self._definitions.get(definition.name)
        if other is not None and other.function is not definition.function:
            raise ConfigurationError(
                f"job name {definition.name!r} is registered twice, for {other.function!r} "
                f"and {definition.function!r}; pass name= to tell them apart"
            )
        self._definitions[definition.name] = definition

    def definition(self, name: str) -> JobDefinition:
        """Return the job registered as *name* in this runtime or an included registry.

        :raises UnknownJobError: when none is.
        """
        try:
            return self._definitions[name]
        except KeyError:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise UnknownJobError(
                f"no job is registered as {name!r} (registered: {known})"
            ) from None

    def function(self, name: str) -> JobFunction[..., Any]:
        """Return the job function registered as *name*, to enqueue it by name.

        :raises UnknownJobError: when none is.
        """
        definition = self.definition(name)
        for registry in self._registries:
            if name in registry:
                return JobFunction(definition, registry)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schedules --------------------------------------------------------------------

    def cron(
        self,
        expression: str | CronTrigger,
        *,
        timezone: str | None = None,
        name: str | None = None,
        queue: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        misfire: str = "once",
        grace: float | timedelta = 60.0,
        overlap: bool = True,
    ) -> _ScheduleDecorator:
        """Run the decorated job on a cron schedule, once per tick across all processes.

        Decorates a plain handler (registering it as a job) or a job function.
        Five fields (minute hour day month weekday), an optional sixth for
        seconds, or a nickname like ``@daily``; see ``docs/schedules.md`` for
        the time-zone and DST rules.

        :param timezone: an IANA zone name for the expression (default UTC).
        :param name: the schedule's name (default: the job name).
        :param args: positional arguments every fired job gets.
        :param kwargs: keyword arguments every fired job gets.
        :param misfire: ``"skip"``, ``"once"`` or ``"all"`` for ticks missed by more than *grace*.
        :param grace: seconds (or timedelta) a tick may be late and still run as on time.
        :param overlap: ``False`` skips a tick while the previous run is queued or running.
        :raises InvalidScheduleError: a malformed expression, an impossible date,
            an unknown zone, or a bad misfire policy.
        """
        return self._schedule_decorator(
            make_trigger(expression, timezone), name, queue, args, kwargs, misfire, grace, overlap
        )

    def every(
        self,
        interval: float | timedelta,
        *,
        start: datetime | None = None,
        name: str | None = None,
        queue: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        misfire: str = "once",
        grace: float | timedelta = 60.0,
        overlap: bool = True,
    ) -> _ScheduleDecorator:
        """Run the decorated job every *interval* (seconds or timedelta), from *start*.

        Fire times are ``start + k * interval``, the same in every process.
        Other parameters as for :meth:`cron`.

        :raises InvalidScheduleError: a non-positive interval or a naive *start*.
        """
        return self._schedule_decorator(
            IntervalTrigger(interval, start), name, queue, args, kwargs, misfire, grace, overlap
        )

    def _schedule_decorator(
        self,
        trigger: CronTrigger | IntervalTrigger,
        name: str | None,
        queue: str | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None,
        misfire: str,
        grace: float | timedelta,
        overlap: bool,
    ) -> _ScheduleDecorator:
        if queue is not None:
            self._check_queue(queue)
        settings = ScheduleSettings(
            name=name,
            queue=queue,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            misfire=misfire,
            grace=seconds(grace, "grace") or 0.0,
            overlap=overlap,
        )
        return self.schedules.decorator(trigger, settings)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the runtime is inside its ``async with`` block."""
        return self._exit_stack is not None

    async def __aenter__(self) -> JobRuntime:
        if self._exit_stack is not None:
            raise NotRunningError("this runtime is already started")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self.backend.open(self.clock)
            stack.push_async_callback(self._close_backend)
            self._started_at = self.clock.now()
            self._presence = Presence(
                backend=self.backend,
                clock=self.clock,
                bus=self.events,
                guard=self._guard,
                worker_id=self.worker_id,
                interval=self.heartbeat,
                describe=self._describe,
            )
            # Left after every task has stopped and before the store closes.
            stack.push_async_callback(self._presence.leave)
            tasks = await stack.enter_async_context(anyio.create_task_group())
            await tasks.start(self._presence.run)
            if self.role != "enqueue":
                self._dispatcher = Dispatcher(
                    backend=self.backend,
                    lookup=self.definition,
                    codec=self.codec,
                    clock=self.clock,
                    bus=self.events,
                    slots=self.slots,
                    lease=self.lease,
                    worker_id=self.worker_id,
                    shutdown_grace=self.shutdown_grace,
                    guard=self._guard,
                    maintenance=self._maintenance,
                    heartbeat=self.heartbeat,
                    claim_limits=self.queue_plan.claim_limits(
                        {
                            name: definition.rate_limit
                            for name, definition in self._definitions.items()
                            if definition.rate_limit is not None
                        }
                    ),
                    backoff_for=partial(self.queue_plan.backoff_for, default=self.default_backoff),
                    remove={state for state, age in self.retention.items() if age == 0},
                    state=lambda: self.state,
                )
                await tasks.start(_shielded, self._dispatcher.run)
                self._scheduler_loop = Scheduler(
                    backend=self.backend,
                    clock=self.clock,
                    bus=self.events,
                    declared=self.schedules.declared,
                    on_enqueued=self._enqueuer.after_enqueue,
                    guard=self._guard,
                )
                await tasks.start(self._scheduler_loop.run)
        except BaseException:
            await stack.__aexit__(None, None, None)
            self._dispatcher = None
            self._scheduler_loop = None
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack = self._exit_stack
        if stack is None:
            return None
        if self._scheduler_loop is not None:
            self._scheduler_loop.stop()
        if self._dispatcher is not None:
            self._dispatcher.stop()
        if self._presence is not None:
            self._presence.stop()
        try:
            # The body's own exception is not passed to the task group, so it
            # propagates as itself rather than wrapped in an exception group.
            await stack.__aexit__(None, None, None)
            return None
        finally:
            self._exit_stack = None
            self._dispatcher = None
            self._scheduler_loop = None
            self._presence = None
            self.slots = self.queue_plan.slots(only=self.slots.limits)

    def _describe(self) -> WorkerInfo:
        """This runtime as the workers registry shows it (host and pid filled in later)."""
        dispatcher = self._dispatcher
        runs = self.role != "enqueue"
        return WorkerInfo(
            id=self.worker_id,
            host="",
            pid=0,
            role=self.role,
            queues=dict(self.slots.limits) if runs else {},
            pool=self.slots.max_concurrency if runs else 0,
            limits=self.queue_plan.describe_limits() if runs else {},
            jobs=tuple(sorted(self._definitions)) if runs else (),
            held={q: h for q, h in dispatcher.held_by.items() if h} if dispatcher else {},
            running=dispatcher.slots.total if dispatcher is not None else 0,
            started_at=self._started_at,
        )

    @property
    def admin(self) -> Admin:
        """Inspection and operator actions on this runtime's store (see :class:`Admin`).

        Actions taken through it are audited with the actor ``"app"`` unless
        they name their own.
        :raises NotRunningError: when the runtime is not started.
        """
        self._require_started()
        return Admin(self.backend, clock=self.clock, actor="app", bus=self.events, local=self)

    def kick(self, queue: str) -> None:
        """Wake this process's claim loop of *queue* (for :class:`Admin`)."""
        if self._dispatcher is not None:
            self._dispatcher.kick(queue)

    def cancel_local(self, job_id: str) -> bool:
        """Cancel a job this process runs (for :class:`Admin`)."""
        return self._dispatcher is not None and self._dispatcher.cancel_local(job_id)

    def job_settings(
        self,
        definition: JobDefinition,
        queue: str,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> tuple[int, int, float | None]:
        """A job's ``(priority, max_attempts, timeout)``: the given values (from
        options or a schedule), else its definition's, else its queue's, else the defaults."""
        return self.queue_plan.settings(definition, queue, priority, max_attempts, timeout)

    async def _close_backend(self) -> None:
        # Shielded so a cancelled host still releases connections (and threads).
        with anyio.CancelScope(shield=True):
            await self.backend.aclose()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[dict[str, Any]]:
        """Run the runtime for an ASGI app's lifetime: ``FastAPI(lifespan=runtime.lifespan)``.

        The yielded state holds the runtime as ``"asyncjobs"`` (``request.state.asyncjobs``).
        To run the app's own lifespan too, see :func:`asyncjobs.lifespan.combine`.
        """
        async with self:
            yield {"asyncjobs": self}

    def _require_started(self) -> None:
        if self._exit_stack is None:
            raise NotRunningError(
                "the runtime is not started: use `async with runtime:` or lifespan=runtime.lifespan"
            )

    async def _maintenance(self) -> None:
        now = self.clock.now()
        if now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        if self.retention:
            pruned = await self.backend.prune(
                {state: now - age for state, age in self.retention.items()}
            )
            if pruned:
                logger.info("pruned %d finished jobs past their retention", pruned)
        await self.backend.prune_audit(now - AUDIT_RETENTION)

    # -- enqueueing ---------------------------------------------------------------

    async def enqueue(self, name: str, /, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Enqueue the job registered as *name* (for callers that hold no job function).

        :raises UnknownJobError: when no job has that name.
        """
        return await self.function(name).enqueue(*args, **kwargs)

    async def enqueue_many(self, calls: Iterable[JobCall[R]]) -> list[JobHandle[R]]:
        """Enqueue several jobs in one atomic store operation.

        Build the calls with :meth:`JobFunction.call` (``send_email.call(...)``,
        or ``send_email.options(delay=5).call(...)``). Everything is validated and
        encoded first: when any call is bad, nothing is stored.

        :raises UnknownJobError: a call for a job this runtime does not know.
        :raises SerializationError: arguments the codec cannot encode.
        :raises PayloadTooLarge: encoded arguments over ``max_payload_bytes``.
        :raises NotRunningError: when the runtime is not started.
        :raises InvalidOptionError: for calls with different ``connection=``
            options, or one the store cannot enqueue in.
        """
        self._require_started()
        return await self._enqueuer.enqueue_many(calls)

    # -- operating ------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return the stored job, or ``None``."""
        self._require_started()
        return await self.backend.get_job(job_id)

    def _removed_here(self, job_id: str) -> Job | None:
        """A job this process's worker deleted as it finished (retention 0), as it ended."""
        dispatcher = self._dispatcher
        return None if dispatcher is None else dispatcher.removed_job(job_id)

    async def handle(self, job_id: str) -> JobHandle[Any]:
        """A handle on a stored job by its id, e.g. in a later request than the enqueue:
        ``await (await runtime.handle(job_id)).result(timeout=5)`` returns the typed result.

        :raises JobNotFound: when there is no such job.
        """
        job = await self.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} in the store")
        return JobHandle(self, job)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = None,
        name: str | None = None,
        schedule: str | None = None,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
    ) -> list[Job]:
        """Return a page of stored jobs, newest first, filtered by any of the arguments.

        See :meth:`Admin.list_jobs` for the time range and cursor.
        :raises InvalidOptionError: for an unknown state or a negative limit/offset.
        """
        return await self.admin.list_jobs(
            queue=queue,
            state=state,
            name=name,
            schedule=schedule,
            partition=partition,
            tags=tags,
            limit=limit,
            offset=offset,
            after=after,
        )

    async def queue_stats(self, *, partition: str | None = None) -> list[QueueStats]:
        """Return counts per queue and state, from the store (every process's jobs).

        :param partition: count only that partition's jobs.

        ``held_by`` names the limit that held the queue back at this process's
        last claim (``None`` in an enqueue-only process).
        """
        self._require_started()
        stats = await self.backend.queue_stats(partition=partition)
        dispatcher = self._dispatcher
        if dispatcher is None:
            return stats
        return [
            attrs.evolve(entry, held_by=held)
            if (held := dispatcher.held_by.get(entry.queue)) is not None
            else entry
            for entry in stats
        ]

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once, a running one through its cancel scope.

        A job running in another process is cancelled at that worker's next
        heartbeat. Audited (see :meth:`Admin.cancel`).

        :raises JobNotFound: when no such job exists.
        """
        job = await self.admin.cancel(job_id)
        if job.state is JobState.CANCELLED and self.events.has_subscribers:
            self.events.publish(
                JobWasCancelled(
                    timestamp=self.clock.now(), job_id=job.id, job_name=job.name, queue=job.queue
                )
            )
        return job

    async def retry(self, job_id: str) -> Job:
        """Queue a dead job again, now, with its attempts reset (audited).

        :raises JobNotFound: when no such job exists.
        :raises JobStateError: when the job is not dead.
        """
        return await self.admin.retry(job_id)

    async def pause(self, queue: str) -> None:
        """Stop every process sharing the store from claiming jobs of *queue* (audited)."""
        await self.admin.pause(queue)

    async def resume(self, queue: str) -> None:
        """Let workers claim jobs of *queue* again (audited)."""
        await self.admin.resume(queue)

    @property
    def store_status(self) -> StoreStatus:
        """Whether the store answered this runtime's loops, and since when it has not.

        Every loop that talks to the store reports here; an enqueue-only
        runtime runs no loops, so its status stays reachable.
        """
        return self._guard.status

    @property
    def running_jobs(self) -> Mapping[str, Job]:
        """Jobs this process is running now, by id."""
        return {} if self._dispatcher is None else self._dispatcher.running_jobs
