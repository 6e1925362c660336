"""Per-queue and global concurrency: how many jobs a worker may run at once.

The dispatcher claims only as many jobs as there are free slots, so a job
is never held (and its lease never ticks) while it waits for a slot.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio

from ._exceptions import ConfigurationError

__all__ = ["Slots"]


class Slots:
    """Counts the jobs a worker holds (claimed, not yet settled) per queue.

    A queue may hold ``limit * (1 + prefetch)`` jobs: ``limit`` running (its
    worker tasks) and the rest buffered, claimed ahead so a worker never waits
    for a round trip to the store. Each queue has a wake-up event, set when
    one of its slots frees up or someone :meth:`wake` s it.
    """

    def __init__(
        self, limits: Mapping[str, int], max_concurrency: int | None = None, prefetch: int = 1
    ) -> None:
        for queue, limit in limits.items():
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ConfigurationError(
                    f"queue {queue!r} needs a concurrency limit of at least 1, got {limit!r}"
                )
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise ConfigurationError(
                f"max_concurrency must be an int of at least 1, got {max_concurrency!r}"
            )
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ConfigurationError(f"prefetch must be an int of at least 0, got {prefetch!r}")
        self.limits = dict(limits)
        self.prefetch = prefetch
        total_limit = sum(self.limits.values())
        self.max_concurrency = max_concurrency if max_concurrency is not None else total_limit
        #: whether the global cap binds (then workers also take a global limiter).
        self.global_cap_binds = self.max_concurrency < total_limit
        self.capacity = {queue: limit * (1 + prefetch) for queue, limit in self.limits.items()}
        self.global_capacity = self.max_concurrency * (1 + prefetch)
        self.running = dict.fromkeys(self.limits, 0)
        #: claimed jobs no worker has taken yet, per queue.
        self.buffered = dict.fromkeys(self.limits, 0)
        self.total = 0
        self._events = {queue: anyio.Event() for queue in self.limits}
        # Only a claim loop that is waiting needs waking; skipping the rest saves
        # an Event allocation per finished job on the hot path.
        self._waiting = dict.fromkeys(self.limits, False)

    def free(self, queue: str) -> int:
        """Return how many more jobs *queue* may claim now.

        While workers still have buffered jobs to take, claiming waits until half
        the queue's capacity is free: one store round trip then fetches a batch
        instead of a job or two (0 is returned until then).
        """
        free = min(self.capacity[queue] - self.running[queue], self.global_capacity - self.total)
        if self.buffered[queue] and free < max(1, self.capacity[queue] // 2):
            return 0
        return free

    def take(self, queue: str, count: int) -> None:
        """Count *count* jobs of *queue* as held."""
        self.running[queue] += count
        self.total += count

    def give_back(self, queue: str, count: int) -> None:
        """Return *count* reserved slots of *queue* that a claim did not fill."""
        if count:
            # Only a full global capacity can have held the *other* queues back; waking
            # them otherwise (or this queue at all) would spin idle claim loops.
            global_was_full = self.total >= self.global_capacity
            self.running[queue] -= count
            self.total -= count
            if global_was_full:
                for other in self._events:
                    if other != queue:
                        self.wake(other)

    def release(self, queue: str) -> None:
        """Count one job of *queue* as settled and wake whoever may use the slot."""
        global_was_full = self.total >= self.global_capacity
        self.running[queue] -= 1
        self.total -= 1
        if global_was_full:
            # Any queue may have been held back by the global capacity.
            self.wake_all()
        else:
            self.wake(queue)

    def event(self, queue: str) -> anyio.Event:
        """Return the event the next :meth:`wake` of *queue* will set.

        The caller is counted as waiting until that wake-up happens. The event
        is never one that is already set: a store may set it too (it is handed
        to the store's wait), without going through :meth:`wake`.
        """
        self._waiting[queue] = True
        event = self._events[queue]
        if event.is_set():
            event = self._events[queue] = anyio.Event()
        return event

    def wake(self, queue: str) -> None:
        """Wake *queue*'s claim loop (a slot freed up, or work arrived)."""
        if self._waiting[queue]:
            self._waiting[queue] = False
            self._events[queue].set()
            self._events[queue] = anyio.Event()

    def wake_all(self) -> None:
        """Wake every queue's claim loop."""
        for queue in self._events:
            self.wake(queue)
