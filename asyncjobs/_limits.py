"""Per-queue caps and the shared pool: how many jobs a worker may hold at once, per queue.

The dispatcher claims only as many jobs as there are free slots, so a job
is never held (and its lease never ticks) while it waits for a slot.

When the pool (``max_concurrency``) is smaller than the queues' caps added
up, queues compete for it. Then the pool hands its free slots out one at a
time to the queues that ask for them (their claim loops found work), either
by **weight** (smooth weighted round robin: over any stretch in which the
same queues ask, each gets slots in proportion to its weight, interleaved,
never drifting) or **strictly** in the declared order (the first queue that
asks wins). A queue that stops asking (its claim came back short: no due
work) returns what it did not use, and the others get it at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping

import anyio

from ._exceptions import ConfigurationError

__all__ = ["SELECTIONS", "PoolGate", "Slots"]

#: The ways the shared pool picks the next queue.
SELECTIONS = ("weighted", "strict")


class Slots:
    """Counts the jobs a worker holds (claimed, not yet settled) per queue.

    A queue may hold ``limit * (1 + prefetch)`` jobs: ``limit`` running (its
    worker tasks) and the rest buffered, claimed ahead so a worker never waits
    for a round trip to the store (queues in *no_prefetch* hold only
    ``limit``). Each queue has a wake-up event, set when one of its slots
    frees up or someone :meth:`wake` s it.
    """

    def __init__(
        self,
        limits: Mapping[str, int],
        max_concurrency: int | None = None,
        prefetch: int = 1,
        *,
        weights: Mapping[str, float] | None = None,
        selection: str = "weighted",
        no_prefetch: Collection[str] = (),
    ) -> None:
        for queue, limit in limits.items():
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ConfigurationError(
                    f"queue {queue!r} needs a concurrency limit of at least 1, got {limit!r}"
                )
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int)
            or isinstance(max_concurrency, bool)
            or max_concurrency < 1
        ):
            raise ConfigurationError(
                f"max_concurrency must be an int of at least 1, got {max_concurrency!r}"
            )
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ConfigurationError(f"prefetch must be an int of at least 0, got {prefetch!r}")
        if selection not in SELECTIONS:
            raise ConfigurationError(
                f"queue_selection must be 'weighted' or 'strict', not {selection!r}"
            )
        self.limits = dict(limits)
        self.prefetch = prefetch
        self.selection = selection
        self.weights = {queue: float((weights or {}).get(queue, 1.0)) for queue in self.limits}
        self.no_prefetch = frozenset(no_prefetch)
        total_limit = sum(self.limits.values())
        self.max_concurrency = max_concurrency if max_concurrency is not None else total_limit
        #: whether the pool binds: then queues get its slots through :meth:`free`'s
        #: selection, and workers also take a pool-wide limiter to run.
        self.global_cap_binds = self.max_concurrency < total_limit
        self.capacity = {
            queue: limit * (1 if queue in self.no_prefetch else 1 + prefetch)
            for queue, limit in self.limits.items()
        }
        self.global_capacity = self.max_concurrency * (1 + prefetch)
        self.running = dict.fromkeys(self.limits, 0)
        #: claimed jobs no worker has taken yet, per queue.
        self.buffered = dict.fromkeys(self.limits, 0)
        self.total = 0
        self._events = {queue: anyio.Event() for queue in self.limits}
        # Only a claim loop that is waiting needs waking; skipping the rest saves
        # an Event allocation per finished job on the hot path.
        self._waiting = dict.fromkeys(self.limits, False)
        # The pool's side (only used while it binds): slots set aside for a queue
        # that asked, the queues asking, and the round robin's running credit.
        self._granted = dict.fromkeys(self.limits, 0)
        self._granted_total = 0
        self._asking: dict[str, None] = {}  # insertion-ordered set
        self._credit = dict.fromkeys(self.limits, 0.0)
        self._order = {queue: index for index, queue in enumerate(self.limits)}

    def free(self, queue: str) -> int:
        """Return how many more jobs *queue* may claim now.

        While workers still have buffered jobs to take, claiming waits until half
        the queue's capacity is free: one store round trip then fetches a batch
        instead of a job or two (0 is returned until then). While the pool
        binds, the queue is counted as asking for slots until a claim comes
        back short (:meth:`give_back`).
        """
        own = self.capacity[queue] - self.running[queue]
        if self.global_cap_binds:
            if own > 0 and queue not in self._asking:
                self._asking[queue] = None
                self._hand_out(askers=(queue,))
            free = min(own, self._granted[queue])
        else:
            free = min(own, self.global_capacity - self.total)
        if self.buffered[queue] and free < max(1, self.capacity[queue] // 2):
            return 0
        return free

    def free_for(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Reserve slots for up to *counts* new jobs per queue at once (a handoff).

        While the pool binds, every queue named asks at the same time, so the
        selection (weights or order) decides between them, not the order of
        *counts*. The reserved slots are taken (see :meth:`take`).
        """
        if self.global_cap_binds:
            for queue in counts:
                if self.capacity[queue] - self.running[queue] > 0:
                    self._asking.setdefault(queue, None)
            self._hand_out(askers=counts)
        taken: dict[str, int] = {}
        for queue, count in counts.items():
            take = min(count, self.free(queue))
            if take > 0:
                self.take(queue, take)
                taken[queue] = take
        return taken

    def room(self, queue: str) -> int:
        """How many more jobs *queue* could hold now, asking nothing of the pool.

        A read for tools (the testing kit): unlike :meth:`free`, it neither
        registers the queue as asking nor hands out the pool's slots.
        """
        own = self.capacity[queue] - self.running[queue]
        spare = self.global_capacity - self.total - self._granted_total + self._granted[queue]
        return max(0, min(own, spare))

    def take(self, queue: str, count: int) -> None:
        """Count *count* jobs of *queue* as held (out of its grant, while the pool binds)."""
        self.running[queue] += count
        self.total += count
        if self.global_cap_binds:
            granted = min(count, self._granted[queue])
            self._granted[queue] -= granted
            self._granted_total -= granted

    def give_back(self, queue: str, count: int) -> None:
        """Return *count* reserved slots of *queue* that a claim did not fill.

        A claim that came back short means the queue has no more due work: it
        stops asking, and the pool hands what it leaves to the others.
        """
        if not count:
            return
        if self.global_cap_binds:
            self.running[queue] -= count
            self.total -= count
            self._asking.pop(queue, None)
            # Unused grants of a queue that stopped asking go back to the pool too.
            self._granted_total -= self._granted[queue]
            self._granted[queue] = 0
            self._hand_out()
            return
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
        if self.global_cap_binds:
            self.running[queue] -= 1
            self.total -= 1
            self.wake(queue)  # its own cap may have held it back
            self._hand_out()
            return
        global_was_full = self.total >= self.global_capacity
        self.running[queue] -= 1
        self.total -= 1
        if global_was_full:
            # Any queue may have been held back by the global capacity.
            self.wake_all()
        else:
            self.wake(queue)

    def _hand_out(self, askers: Collection[str] = ()) -> None:
        """Give the pool's unclaimed slots, one at a time, to the queues asking for them.

        The queues that got slots are woken, except *askers*: they are asking
        right now and see their grant in the answer.
        """
        spare = self.global_capacity - self.total - self._granted_total
        if spare <= 0 or not self._asking:
            return
        granted = self._granted
        room = {
            queue: left
            for queue in self._asking
            if (left := self.capacity[queue] - self.running[queue] - granted[queue]) > 0
        }
        woken: set[str] = set()
        if len(room) == 1 or self.selection == "strict":
            # One queue asking (a lone backlog), or strict order: no interleaving to do.
            for queue in sorted(room, key=self._order.__getitem__):
                give = min(spare, room[queue])
                granted[queue] += give
                self._granted_total += give
                spare -= give
                woken.add(queue)
                if not spare:
                    break
        else:
            # Smooth weighted round robin, slot by slot: everyone asking earns its
            # weight, the richest takes the slot and pays the round's total.
            credit, weights = self._credit, self.weights
            round_total = sum(weights[queue] for queue in room)
            while spare and room:
                for queue in room:
                    credit[queue] += weights[queue]
                chosen = max(room, key=credit.__getitem__)
                credit[chosen] -= round_total
                granted[chosen] += 1
                self._granted_total += 1
                spare -= 1
                woken.add(chosen)
                room[chosen] -= 1
                if not room[chosen]:
                    del room[chosen]
                    round_total -= weights[chosen]
        for queue in woken.difference(askers):
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


class PoolGate:
    """At most *size* handlers running at once across queues, first come first served.

    A slot that is free is taken without a trip through the event loop (the
    worker yields in its handler and when its feed is empty), unlike a
    ``CapacityLimiter``, whose checkpoint per job costs a quarter of a no-op
    drain; a released slot goes straight to the longest waiter.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        """Take a slot, waiting for one when none is free."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        granted = anyio.Event()
        self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                self._waiters.remove(granted)
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiter, else to the pool."""
        if self._waiters:
            self._waiters.popleft().set()  # the slot passes on without being freed
        else:
            self._free += 1
