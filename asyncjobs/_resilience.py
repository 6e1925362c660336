"""Riding out store faults: one place decides backoff and logging for every loop.

Each loop that talks to the store (claim, wait, settle, heartbeat, recovery,
scheduler, maintenance) reports every store call to one :class:`StoreGuard`
and paces its retries with a :class:`LoopBackoff`. A
failed call marks the store unreachable (once, with one warning for the whole
outage, whichever loop saw it first), and the loop backs off with full jitter,
doubling up to a cap, until a call succeeds again. The first success after an
outage marks the store reachable and logs how long it was away. Nothing here
gives up: a store that is gone for an hour is retried for an hour.
"""

from __future__ import annotations

import logging
import random

import anyio
import attrs

from ._clock import Clock

__all__ = ["LoopBackoff", "StoreGuard", "StoreStatus", "pause"]

logger = logging.getLogger("asyncjobs")

#: The first pause after a failed store call, and the longest one.
FIRST_DELAY = 0.05
MAX_DELAY = 5.0


@attrs.frozen(kw_only=True)
class StoreStatus:
    """Whether the store answered this runtime's last call.

    :ivar reachable: ``False`` from the first failed call of an outage until the
        next call that succeeds.
    :ivar unreachable_since: when the current outage began (epoch seconds), or ``None``.
    :ivar last_error: the type and message of the latest failure of this outage
        (store errors never carry payloads), or ``None``.
    :ivar outages: how many outages this runtime has seen since it started.
    """

    reachable: bool = True
    unreachable_since: float | None = None
    last_error: str | None = None
    outages: int = 0


class LoopBackoff:
    """Full-jitter exponential backoff for one loop: the *n*-th pause is up to ``first * 2**n``."""

    def __init__(self, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self._first = first
        self._cap = cap
        self._failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to pause before the next try."""
        ceiling = min(self._cap, self._first * 2**self._failures)
        self._failures = min(self._failures + 1, 32)
        # Never less than a fraction of the ceiling: a pause of ~0 would spin.
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start again from the first delay (the store answered)."""
        self._failures = 0


class StoreGuard:
    """Tracks whether the store answers, and runs the loops' calls through one policy.

    :param clock: where outage times come from.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._status = StoreStatus()
        self._reachable = anyio.Event()
        self._reachable.set()
        self._failed_calls = 0

    @property
    def status(self) -> StoreStatus:
        """The store's status as this runtime saw it last."""
        return self._status

    @property
    def reachable(self) -> bool:
        """Whether the last store call succeeded."""
        return self._status.reachable

    def failed(self, loop: str, exc: BaseException) -> None:
        """Note that *loop*'s store call failed with *exc*."""
        self._failed_calls += 1
        error = f"{type(exc).__name__}: {exc}"
        if self._status.reachable:
            self._status = StoreStatus(
                reachable=False,
                unreachable_since=self._clock.now(),
                last_error=error,
                outages=self._status.outages + 1,
            )
            self._reachable = anyio.Event()
            logger.warning(
                "the job store is unreachable (%s, seen by the %s loop); every loop "
                "backs off and retries until it answers again",
                error,
                loop,
            )
        else:
            self._status = attrs.evolve(self._status, last_error=error)
            logger.debug("%s: store call failed again: %s", loop, error)

    def succeeded(self) -> None:
        """Note that a store call succeeded: an outage, if any, is over."""
        status = self._status
        if status.reachable:
            return
        assert status.unreachable_since is not None
        logger.warning(
            "the job store answers again after %.1f s (%d failed calls meanwhile)",
            self._clock.now() - status.unreachable_since,
            self._failed_calls,
        )
        self._failed_calls = 0
        self._status = StoreStatus(outages=status.outages)
        self._reachable.set()

    async def wait_reachable(self) -> None:
        """Return once the store is known to answer (at once when it does)."""
        await self._reachable.wait()


async def pause(delay: float, stop: anyio.Event | None) -> None:
    """Sleep *delay* seconds of real time, or until *stop* is set.

    LoopBackoff waits for a real store to come back, so it runs on the event loop's
    time, not the injected clock (a test's manual clock would never move it).
    """
    with anyio.move_on_after(delay):
        if stop is None:
            await anyio.sleep(delay)
        else:
            await stop.wait()
