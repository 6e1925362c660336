"""Frozen lifecycle events and the in-process bus that delivers them.

Every state change the runtime makes emits one event. Subscribers get their
own bounded stream; a subscriber that stops reading loses events (logged)
rather than slowing the workers down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._models import ErrorInfo

__all__ = [
    "Event",
    "EventBus",
    "EventStream",
    "JobCompleted",
    "JobDied",
    "JobEnqueued",
    "JobEvent",
    "JobLeaseLost",
    "JobProgress",
    "JobReleased",
    "JobRetrying",
    "JobStarted",
    "JobWasCancelled",
    "OperatorAction",
    "QueuePaused",
    "QueueResumed",
    "ScheduleChanged",
    "ScheduleFired",
    "WorkerJoined",
    "WorkerLeft",
]

logger = logging.getLogger("asyncjobs")

E = TypeVar("E", bound="Event")


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event; ``timestamp`` is the runtime clock's time of the change."""

    timestamp: float


@attrs.frozen(kw_only=True)
class JobEvent(Event):
    """An event about one job."""

    job_id: str
    job_name: str
    queue: str


@attrs.frozen(kw_only=True)
class JobEnqueued(JobEvent):
    """A job was accepted by the store (``due_at`` may be in the future)."""

    due_at: float


@attrs.frozen(kw_only=True)
class JobStarted(JobEvent):
    """A worker claimed the job and is about to call its handler.

    ``due_at`` is when this attempt became due (``None`` from a publisher that
    does not know it): the start minus it is the attempt's queue wait.
    """

    attempt: int
    due_at: float | None = None


@attrs.frozen(kw_only=True)
class JobCompleted(JobEvent):
    """The handler returned; ``duration`` is seconds spent in the handler."""

    attempt: int
    duration: float


@attrs.frozen(kw_only=True)
class JobRetrying(JobEvent):
    """The attempt failed and the job will run again at ``due_at``."""

    attempt: int
    due_at: float
    error: ErrorInfo


@attrs.frozen(kw_only=True)
class JobReleased(JobEvent):
    """The job was handed back without using up the attempt (shutdown, snooze)."""

    attempt: int
    due_at: float


@attrs.frozen(kw_only=True)
class JobDied(JobEvent):
    """The job is dead: attempts exhausted or a permanent failure."""

    attempt: int
    error: ErrorInfo


@attrs.frozen(kw_only=True)
class JobWasCancelled(JobEvent):
    """The job was cancelled (queued, or while running)."""


@attrs.frozen(kw_only=True)
class JobProgress(JobEvent):
    """The handler reported progress."""

    progress: float
    message: str | None


@attrs.frozen(kw_only=True)
class JobLeaseLost(JobEvent):
    """This worker lost the job's lease; its result was not recorded."""


@attrs.frozen(kw_only=True)
class ScheduleFired(Event):
    """A schedule fired for ``fire_at`` and enqueued ``job_id``."""

    schedule: str
    fire_at: float
    job_id: str


@attrs.frozen(kw_only=True)
class QueuePaused(Event):
    """A queue was paused (claims stop in every process sharing the store)."""

    queue: str


@attrs.frozen(kw_only=True)
class QueueResumed(Event):
    """A paused queue was resumed."""

    queue: str


@attrs.frozen(kw_only=True)
class ScheduleChanged(Event):
    """A schedule was added, removed, paused, resumed or triggered by hand.

    :ivar change: ``"added"``, ``"removed"``, ``"paused"``, ``"resumed"`` or ``"triggered"``.
    """

    schedule: str
    change: str


@attrs.frozen(kw_only=True)
class WorkerJoined(Event):
    """This runtime registered itself in the store."""

    worker_id: str


@attrs.frozen(kw_only=True)
class WorkerLeft(Event):
    """This runtime removed itself from the store at shutdown."""

    worker_id: str


@attrs.frozen(kw_only=True)
class OperatorAction(Event):
    """An operator action, as the audit trail records it.

    :ivar actor: who asked (given by the caller; the OS user for the CLI).
    :ivar action: e.g. ``"job.retry"``, ``"queue.pause"``, ``"jobs.purge"``.
    :ivar target: the job id, queue or schedule name, or a filter description.
    :ivar outcome: ``"ok"``, or why the action did not happen.
    """

    actor: str
    action: str
    target: str
    outcome: str


class EventStream:
    """One subscriber's events, in the order they were published."""

    def __init__(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        self._receive = receive

    async def receive(self) -> Event:
        """Return the next event, waiting for it."""
        return await self._receive.receive()

    async def wait_for(
        self, kind: type[E], predicate: Callable[[E], bool] | None = None, *, timeout: float = 10
    ) -> E:
        """Return the next event of type *kind* matching *predicate*, skipping others.

        :raises TimeoutError: when none arrives within *timeout* real seconds.
        """
        with anyio.fail_after(timeout):
            while True:
                event = await self._receive.receive()
                if isinstance(event, kind) and (predicate is None or predicate(event)):
                    return event

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class EventBus:
    """Delivers events to subscribers in this process."""

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        self._callbacks: list[tuple[tuple[type[Event], ...], Callable[[Event], object]]] = []

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone listens; publishers skip building events when not."""
        return bool(self._subscribers) or bool(self._callbacks)

    def on(self, *kinds: type[Event], callback: Callable[[Event], object]) -> Callable[[], None]:
        """Call *callback* with every event of *kinds* (all events when none), as published.

        The callback runs in the publisher's task and must not block; an
        exception it raises is logged and does not reach the publisher.
        :returns: a function that removes the callback.
        """
        entry = (kinds or (Event,), callback)
        self._callbacks.append(entry)

        def remove() -> None:
            if entry in self._callbacks:
                self._callbacks.remove(entry)

        return remove

    @contextmanager
    def subscribe(
        self,
        *kinds: type[Event],
        where: Callable[[Event], bool] | None = None,
        max_buffer: float = 10_000,
    ) -> Iterator[EventStream]:
        """Receive events of *kinds* (all events when none) while the block runs.

        :param where: a filter applied before an event is queued for this subscriber.
        :param max_buffer: events kept for a slow reader before new ones are dropped;
            ``math.inf`` keeps all.
        """
        send, receive = anyio.create_memory_object_stream[Event](max_buffer)
        subscriber = _Subscriber(kinds or (Event,), where, send)
        self._subscribers.append(subscriber)
        try:
            yield EventStream(receive)
        finally:
            self._subscribers.remove(subscriber)
            send.close()
            receive.close()

    def publish(self, event: Event) -> None:
        """Hand *event* to every matching subscriber and callback without waiting."""
        for kinds, callback in self._callbacks:
            if isinstance(event, kinds):
                try:
                    callback(event)
                except Exception:
                    logger.exception("an event callback failed on %s", type(event).__name__)
        for subscriber in self._subscribers:
            if isinstance(event, subscriber.kinds) and (
                subscriber.where is None or subscriber.where(event)
            ):
                try:
                    subscriber.send.send_nowait(event)
                except anyio.WouldBlock:
                    if not subscriber.overflowed:
                        subscriber.overflowed = True
                        logger.warning(
                            "an event subscriber is not keeping up; dropping its events from %s on",
                            type(event).__name__,
                        )


@attrs.define(eq=False)
class _Subscriber:
    kinds: tuple[type[Event], ...]
    where: Callable[[Event], bool] | None
    send: MemoryObjectSendStream[Event]
    overflowed: bool = False
