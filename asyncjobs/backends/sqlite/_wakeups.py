"""Work signals: wake-ups for this object's waiters and other processes', and the next due time.

An enqueue or requeue through this object wakes its waiters at once (an
in-process event). Work added by other processes is seen by polling a
per-queue wake counter (``asyncjobs_queues.wake_seq``, bumped in the same
transaction that adds work: :func:`bump`, or the insert trigger of schema 3)
on the read connection: every 5 ms after activity, doubling on each idle poll
up to 500 ms (``poll_interval``). So another process's enqueue is noticed
within 5 ms while busy and within 0.5 s after a long idle spell. The poll
sleeps on real time; the caller's deadline is honoured through the injected
clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Final

import anyio

from ..._exceptions import BackendError
from ._codec import PARKED_DUE_AT
from ._database import Database
from ._statements import chunked, marks

__all__ = ["Wakeups", "bump"]

_WAKE_SQL: Final = """
    INSERT INTO asyncjobs_queues (name, wake_seq) VALUES (?, 1)
    ON CONFLICT (name) DO UPDATE SET wake_seq = wake_seq + 1
"""
# The earliest due time per queue without an index on (queue, due_at): walk the
# distinct priorities of the queue's queued jobs (each step one seek in the claim
# index) and take the first due time of each.
_NEXT_DUE_SQL: Final = """
    WITH RECURSIVE
        q(name) AS (VALUES {values}),
        pr(queue, priority) AS (
            SELECT q.name, (SELECT MIN(priority) FROM asyncjobs_jobs
                            WHERE state = 'queued' AND queue = q.name)
            FROM q
            WHERE NOT EXISTS (
                SELECT 1 FROM asyncjobs_queues WHERE name = q.name AND paused = 1
            )
            UNION ALL
            SELECT pr.queue, (SELECT MIN(priority) FROM asyncjobs_jobs
                              WHERE state = 'queued' AND queue = pr.queue
                              AND priority > pr.priority)
            FROM pr WHERE pr.priority IS NOT NULL
        )
    SELECT MIN((SELECT MIN(due_at) FROM asyncjobs_jobs
                WHERE state = 'queued' AND queue = pr.queue AND priority = pr.priority))
    FROM pr WHERE pr.priority IS NOT NULL
"""


def bump(conn: sqlite3.Connection, queues: Iterable[str]) -> None:
    """Tell other processes' waiters that *queues* got work (inside a transaction)."""
    conn.executemany(_WAKE_SQL, [(queue,) for queue in sorted(queues)])


class Wakeups:
    """This object's waiters, and what it last saw of other processes' work.

    :param db: the file, read through its reader.
    :param poll_interval: ``(shortest, longest)`` seconds between polls.
    """

    def __init__(self, db: Database, poll_interval: tuple[float, float]) -> None:
        self._db = db
        self._poll_bounds = poll_interval
        self._poll_delay = poll_interval[0]
        # One event per waiter: a clock may set a waiter's event as its deadline
        # timer (ManualClock does), which must not wake anyone else.
        self._waiters: set[anyio.Event] = set()
        # The wake counter of each queue as wait_for_work last saw it: a different
        # value in the store means work arrived since, even while nobody waited.
        self._seen: dict[str, int] = {}
        #: Queues this object claimed under a concurrency limit: a running job of
        #: theirs ending wakes this object's waiters at once (other processes'
        #: see the wake counter that the store's trigger bumps).
        self.limited: set[str] = set()

    def reset(self) -> None:
        """Forget what was seen (the file was opened again): poll soon."""
        self._seen.clear()
        self._poll_delay = self._poll_bounds[0]

    def notify(self) -> None:
        """Wake every waiter of this object: work arrived through it (or it closed)."""
        for waiter in self._waiters:
            waiter.set()

    def busy(self) -> None:
        """Work was found: poll at the shortest interval again."""
        self._poll_delay = self._poll_bounds[0]

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest ``due_at`` of queued jobs in the unpaused *queues*.

        Jobs waiting behind others are not due: ``None`` when only they are queued.
        """
        names = sorted(set(queues))
        earliest: float | None = None
        for chunk in chunked(names):
            sql = _NEXT_DUE_SQL.format(values=", ".join("(?)" for _ in chunk))
            rows = await self._db.read("next_due_at", sql, chunk)
            value = rows[0][0] if rows else None
            # A queue whose queued jobs all wait behind others has nothing due.
            if (
                value is not None
                and value < PARKED_DUE_AT
                and (earliest is None or value < earliest)
            ):
                earliest = value
        return earliest

    async def _new_work(self, queues: Sequence[str]) -> bool:
        """Whether a wake counter of *queues* moved since last seen; marks it seen."""
        changed = False
        for chunk in chunked(queues):
            rows = await self._db.read(
                "wait_for_work",
                f"SELECT name, wake_seq FROM asyncjobs_queues WHERE name IN ({marks(len(chunk))})",
                chunk,
            )
            for name, wake_seq in rows:
                if self._seen.get(name, 0) != wake_seq:
                    self._seen[name] = wake_seq
                    changed = True
        return changed

    async def _new_work_unless_closed(self, names: Sequence[str]) -> bool:
        """Like :meth:`_new_work`, but a backend closed meanwhile counts as a wake-up."""
        try:
            return await self._new_work(names)
        except BackendError:
            if self._db.reader is None:
                return True
            raise

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*."""
        done = wakeup or anyio.Event()
        # Registered before the first look at the store, so a notify from here on
        # is never missed.
        self._waiters.add(done)
        try:
            if deadline is not None and deadline <= self._db.clock.now():
                return
            names = sorted(set(queues))
            if self._db.reader is None or await self._new_work(names):
                return
            shortest, longest = self._poll_bounds
            while True:
                # The poll runs on real time (other processes), the deadline on the
                # backend's clock: wait for whichever comes first, in this task.
                with anyio.move_on_after(self._poll_delay):
                    await self._db.clock.wait(done, deadline)
                if done.is_set() or (deadline is not None and deadline <= self._db.clock.now()):
                    return
                if self._db.reader is None or await self._new_work_unless_closed(names):
                    self._poll_delay = shortest
                    return
                self._poll_delay = min(self._poll_delay * 2, longest)
        finally:
            self._waiters.discard(done)
