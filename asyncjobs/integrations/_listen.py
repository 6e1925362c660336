"""Call a function with each event as it is published, in the publisher's task."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._events import Event, EventBus

__all__ = ["listen"]

logger = logging.getLogger("asyncjobs")


def listen(bus: EventBus, callback: Callable[[Event], None]) -> Callable[[], None]:
    """Call *callback* with every event *bus* publishes; return a function that stops it.

    The callback runs synchronously in the publishing task (``EventBus.on``):
    an enqueue span gets the caller's trace context as its parent, a log
    record the job's context variables, and no event is buffered or dropped.
    It must be quick and must not block. An exception it raises is logged
    once, not on every event, and never reaches the publisher.
    """
    failed = False

    def guarded(event: Event) -> None:
        nonlocal failed
        try:
            callback(event)
        except Exception:
            if not failed:
                failed = True
                logger.exception(
                    "an asyncjobs integration failed on %s (later failures are not logged)",
                    type(event).__name__,
                )

    return bus.on(callback=guarded)
