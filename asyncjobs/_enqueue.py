"""From a job call to stored jobs: validation, encoding, defaults, handoff and events.

:class:`Enqueuer` is the runtime's enqueue path. It turns each
:class:`~asyncjobs.JobCall` into a :class:`~asyncjobs._models.NewJob`
(arguments encoded by the handler's types or the codec, the size checked,
the settings resolved from the options, the definition and the queue), then
stores the batch in one store operation, offering idle local workers the new
jobs (a handoff), and finally wakes local claim loops and publishes
:class:`~asyncjobs.JobEnqueued`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ._clock import Clock
from ._events import EventBus, JobEnqueued
from ._exceptions import InvalidOptionError, PayloadTooLarge, SerializationError, UnknownJobError
from ._handle import JobHandle
from ._models import Job, JobState, KeyScope, NewJob, OnConflict, new_job_id
from ._queue import QueuePlan
from ._registry import JobCall, JobDefinition
from ._serialization import Codec
from .backends import Backend

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._runtime import JobRuntime

__all__ = ["Enqueuer"]

R = TypeVar("R")


class Enqueuer:
    """Builds and stores the jobs of one runtime."""

    def __init__(
        self,
        runtime: JobRuntime,
        *,
        backend: Backend,
        clock: Clock,
        codec: Codec,
        bus: EventBus,
        plan: QueuePlan,
        definitions: Mapping[str, JobDefinition],
        max_payload_bytes: int,
        check_queue: Callable[[str], None],
        dispatcher: Callable[[], Dispatcher | None],
    ) -> None:
        self._runtime = runtime
        self._backend = backend
        self._clock = clock
        self._codec = codec
        self._bus = bus
        self._plan = plan
        self._definitions = definitions
        self._max_payload_bytes = max_payload_bytes
        self._check_queue = check_queue
        self._dispatcher = dispatcher

    async def enqueue_many(self, calls: Iterable[JobCall[R]]) -> list[JobHandle[R]]:
        """Validate and encode every call, then store them in one operation."""
        now = self._clock.now()
        calls = list(calls)
        new_jobs = [self.new_job(call, now) for call in calls]
        if not new_jobs:
            return []
        connection = calls[0].options.connection
        if connection is not None or any(call.options.connection is not None for call in calls):
            return await self._enqueue_on(connection, calls, new_jobs)
        dispatcher = self._dispatcher()
        handoff = None
        if dispatcher is not None:
            due = Counter(new.queue for new in new_jobs if new.due_at <= now)
            handoff = dispatcher.offer(due) if due else None
        handed: list[Job] = []
        offered_at = self._clock.now()
        try:
            stored = await self._backend.enqueue(new_jobs, handoff)
            # A new job that comes back running was claimed for this worker's idle
            # slots in the same store operation: it starts without a claim.
            handed = [
                job
                for new, job in zip(new_jobs, stored, strict=True)
                if job.id == new.id and job.state is JobState.RUNNING
            ]
        finally:
            if handoff is not None:
                assert dispatcher is not None
                dispatcher.accept(handoff, handed, offered_at)
        return self._handles(new_jobs, stored)

    async def _enqueue_on(
        self, connection: Any, calls: list[JobCall[R]], new_jobs: list[NewJob]
    ) -> list[JobHandle[R]]:
        """Enqueue in the caller's transaction on *connection* (``options(connection=)``)."""
        if any(call.options.connection is not connection for call in calls):
            raise InvalidOptionError(
                "the calls of one enqueue_many must all share one connection= (or none)"
            )
        enqueue_on = getattr(self._backend, "enqueue_on", None)
        if enqueue_on is None:
            raise InvalidOptionError(
                f"options(connection=...) enqueues in the caller's database transaction, "
                f"which {type(self._backend).__name__} cannot do: use PostgresBackend, or "
                "enqueue after the commit"
            )
        stored: list[Job] = await enqueue_on(connection, new_jobs)
        return self._handles(new_jobs, stored)

    def _handles(self, new_jobs: list[NewJob], stored: list[Job]) -> list[JobHandle[R]]:
        pairs = list(zip(new_jobs, stored, strict=True))
        self.after_enqueue([job for new, job in pairs if job.id == new.id])
        return [JobHandle(self._runtime, job, deduplicated=job.id != new.id) for new, job in pairs]

    def after_enqueue(self, jobs: list[Job]) -> None:
        """Wake local claim loops and publish events for newly stored *jobs*."""
        dispatcher = self._dispatcher()
        if dispatcher is not None:
            # Also for delayed jobs: a claim loop may be sleeping past their due time.
            # Not for jobs handed straight to this worker: there is nothing to claim.
            for queue in {job.queue for job in jobs if job.state is JobState.QUEUED}:
                dispatcher.kick(queue)
        if self._bus.has_subscribers:
            now = self._clock.now()
            for job in jobs:
                self._bus.publish(
                    JobEnqueued(
                        timestamp=now,
                        job_id=job.id,
                        job_name=job.name,
                        queue=job.queue,
                        due_at=job.due_at,
                    )
                )

    def new_job(self, call: JobCall[Any], now: float) -> NewJob:
        """The store's record of one call: validated, encoded, with its settings resolved.

        :raises UnknownJobError: a call for a job this runtime does not know.
        :raises SerializationError: arguments that cannot be encoded.
        :raises PayloadTooLarge: encoded arguments over the runtime's limit.
        """
        definition = call.definition
        if self._definitions.get(definition.name) is not definition:
            raise UnknownJobError(
                f"job {definition.name!r} belongs to a registry this runtime does not include"
            )
        options = call.options
        queue = options.queue or definition.queue
        self._check_queue(queue)
        payload = self._encode(call)
        if len(payload) > self._max_payload_bytes:
            raise PayloadTooLarge(
                f"the arguments of job {definition.name!r} encode to {len(payload)} bytes, "
                f"over the limit of {self._max_payload_bytes}; store large data elsewhere and "
                "pass a reference, or raise JobRuntime(max_payload_bytes=...)"
            )
        due_at = options.at.timestamp() if options.at is not None else now + (options.delay or 0.0)
        priority, max_attempts, timeout = self._plan.settings(
            definition, queue, options.priority, options.max_attempts, options.timeout
        )
        scope = options.key_scope
        window = isinstance(scope, timedelta)
        return NewJob(
            id=new_job_id(now),
            name=definition.name,
            queue=queue,
            payload=payload,
            due_at=due_at,
            enqueued_at=now,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            key=options.key,
            partition=options.partition,
            key_scope=KeyScope.WINDOW if window else (scope or KeyScope.ACTIVE),  # type: ignore[arg-type]
            key_expires_at=now + scope.total_seconds() if isinstance(scope, timedelta) else None,
            on_conflict=options.on_conflict or OnConflict.RETURN,
            tags=dict(options.tags) if options.tags else {},
        )

    def _encode(self, call: JobCall[Any]) -> bytes:
        definition = call.definition
        types = definition.types
        if types is not None and types.arguments:
            # Typed by the handler's annotations; its errors name the argument.
            return types.encode_arguments(self._codec, call.args, call.kwargs)
        try:
            return self._codec.encode({"a": list(call.args), "k": dict(call.kwargs)})
        except SerializationError as exc:
            raise SerializationError(
                f"the arguments of job {definition.name!r} cannot be encoded: {exc.__cause__}; "
                "pass plain values (str, int, float, bool, None, lists, dicts with str keys) "
                "or give the runtime a codec that handles them"
            ) from exc
