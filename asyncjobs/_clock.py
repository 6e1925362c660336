"""The clock protocol: the one place asyncjobs reads the time.

Times are float seconds since the Unix epoch (UTC). Production code uses
:class:`SystemClock`; tests inject :class:`ManualClock` and move time with
:meth:`ManualClock.advance`, so delays, backoff and cron are tested without
waiting on the wall clock.
"""

from __future__ import annotations

import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import anyio

from ._exceptions import InvalidOptionError

__all__ = ["Clock", "ManualClock", "SystemClock", "to_datetime"]


@runtime_checkable
class Clock(Protocol):
    """What asyncjobs needs from a clock."""

    def now(self) -> float:
        """Return the current time as seconds since the epoch."""
        ...

    async def wait(self, event: anyio.Event, deadline: float | None) -> None:
        """Return when *event* is set or the clock reaches *deadline*, whichever is first.

        ``None`` waits for the event alone. Returning early is allowed: callers
        re-check their condition after every wake-up.
        """
        ...


class SystemClock:
    """The wall clock, waiting with anyio's timers."""

    def now(self) -> float:
        """Return :func:`time.time`."""
        return time.time()

    async def wait(self, event: anyio.Event, deadline: float | None) -> None:
        """Wait for *event*, at most until *deadline*."""
        if deadline is None:
            await event.wait()
            return
        with anyio.move_on_after(max(0.0, deadline - time.time())):
            await event.wait()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to; for tests.

    :param start: the initial time, seconds since the epoch (default: 2026-01-01 UTC).
    """

    def __init__(self, start: float | datetime = 1_767_225_600.0) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)
        self._timers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def now(self) -> float:
        """Return the current manual time."""
        return self._now

    async def wait(self, event: anyio.Event, deadline: float | None) -> None:
        """Wait for *event*, or until :meth:`advance` passes *deadline*."""
        if deadline is not None:
            if deadline <= self._now:
                return
            # The waiter's own event doubles as its timer: waking it early is allowed.
            heapq.heappush(self._timers, (deadline, next(self._order), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every waiter whose deadline has passed."""
        if seconds < 0:
            raise InvalidOptionError("a manual clock only moves forward")
        self.set(self._now + seconds)

    def set(self, moment: float | datetime) -> None:
        """Jump to *moment* (not before the current time) and wake due waiters."""
        target = moment.timestamp() if isinstance(moment, datetime) else float(moment)
        if target < self._now:
            raise InvalidOptionError("a manual clock only moves forward")
        self._now = target
        while self._timers and self._timers[0][0] <= self._now:
            _, _, event = heapq.heappop(self._timers)
            event.set()

    def __repr__(self) -> str:
        return f"ManualClock({to_datetime(self._now).isoformat()})"


def to_datetime(timestamp: float) -> datetime:
    """Turn epoch seconds into an aware UTC :class:`~datetime.datetime`."""
    return datetime.fromtimestamp(timestamp, UTC)
