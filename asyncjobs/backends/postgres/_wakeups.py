"""Work signals: LISTEN/NOTIFY on a dedicated connection, a poll without it, the waiters.

- **Notifications.** Every statement that adds work (an enqueue, a requeue, a
  resumed queue, a running job leaving a queue claimed under a concurrency
  limit) calls ``pg_notify(channel, queue)``: PostgreSQL delivers it when the
  transaction commits, once per queue and transaction, so a job enqueued in
  a caller's transaction wakes workers on commit and never on rollback. One
  connection per backend object, opened by the first wait and outside the
  pool, ``LISTEN``\\s on the schema's channel; a notification wakes the
  waiters of its queue. A queue notified while none of its waiters was
  registered is remembered, and the next wait for it returns at once, so a
  notification that lands between a claim and the wait is never lost.
- **Lost listener.** When that connection drops, every waiter wakes (work may
  have been announced meanwhile) and the next wait connects again (at most
  once a second while it fails); until then waits poll. While connected, a
  wait still returns after ``listen_check`` seconds: a connection that died
  without the kernel noticing costs at most that delay.
- **Poll** (``listen=False``, for PgBouncer in transaction mode, where LISTEN
  does not work, or while the listener is down): the highest job ``seq`` (a
  new job) and the queues' wake counters (a requeue, a resume, a freed slot)
  are read, first after ``poll_interval[0]`` seconds, doubling while nothing
  changes up to ``poll_interval[1]``, and back to the shortest after work.

Jobs enqueued through this object wake its own waiters at once, before the
notification comes back from the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from typing import Any, Final

import anyio
import asyncpg

from ..._exceptions import BackendError
from ._database import DRIVER_ERRORS, Database

__all__ = ["Statements", "Wakeups"]

logger = logging.getLogger("asyncjobs")

# How long a failed LISTEN connection is not tried again.
_RECONNECT_PAUSE: Final = 1.0


class Statements:
    """The poll statement of one schema."""

    def __init__(self, q: str) -> None:
        self.poll = (
            f"SELECT (SELECT max(seq) FROM {q}.jobs) AS seq, name, wake_seq"
            f" FROM unnest($1::text[]) AS n(name) LEFT JOIN {q}.queues USING (name)"
        )


class Wakeups:
    """This object's waiters, its LISTEN connection, and what its poll last saw.

    :param db: the database.
    :param listen: use LISTEN/NOTIFY (else poll only).
    :param poll_interval: ``(shortest, longest)`` seconds between polls.
    :param listen_check: seconds after which a wait returns while listening.
    """

    def __init__(
        self,
        db: Database,
        *,
        listen: bool,
        poll_interval: tuple[float, float],
        listen_check: float,
    ) -> None:
        self._db = db
        self._listen = listen
        self._poll_bounds = poll_interval
        self._poll_delay = poll_interval[0]
        self._listen_check = listen_check
        # One event per waiter (a clock may set it as the waiter's deadline timer),
        # with the queues it waits for.
        self._waiters: dict[anyio.Event, frozenset[str]] = {}
        # Queues notified while no waiter of theirs was registered.
        self._missed: set[str] = set()
        self._listener: asyncpg.Connection | None = None
        self._connecting = False
        self._failed_at = -_RECONNECT_PAUSE
        # What the poll last saw: the highest seq, and each queue's wake counter.
        self._seen_seq: int | None = None
        self._seen_wake: dict[str, int] = {}

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self._listener is not None and not self._listener.is_closed()

    def notify(self, queues: Iterable[str] | None = None) -> None:
        """Wake this object's waiters of *queues* (``None``: every waiter)."""
        if queues is None:
            for waiter in self._waiters:
                waiter.set()
            return
        for queue in queues:
            woken = False
            for waiter, waited in self._waiters.items():
                if queue in waited:
                    waiter.set()
                    woken = True
            if not woken:
                self._missed.add(queue)

    def busy(self) -> None:
        """Work was found: poll at the shortest interval again."""
        self._poll_delay = self._poll_bounds[0]

    def reset(self) -> None:
        """Forget what was seen (opened again): poll soon."""
        self._seen_seq = None
        self._seen_wake.clear()
        self._poll_delay = self._poll_bounds[0]

    async def aclose(self) -> None:
        """Close the LISTEN connection and wake every waiter."""
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            try:
                with anyio.fail_after(self._db.connect_timeout):
                    await listener.close()
            except (*DRIVER_ERRORS, TimeoutError):
                listener.terminate()
        self.notify()

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.notify([payload])

    def _on_lost(self, conn: Any) -> None:
        if conn is self._listener:
            self._listener = None
            logger.info("the LISTEN connection to PostgreSQL at %s was lost", self._db.where)
            self.notify()

    async def _connect_listener(self) -> bool:
        """Open the LISTEN connection; ``True`` when it was opened now (waits may have missed
        notifications), ``False`` when it is not available."""
        if self._connecting or time.monotonic() - self._failed_at < _RECONNECT_PAUSE:
            return False
        self._connecting = True
        try:
            conn = await asyncpg.connect(self._db.url, **self._db.connect_kwargs())
            try:
                await conn.add_listener(self._db.channel, self._on_notification)
            except BaseException:
                conn.terminate()
                raise
        except DRIVER_ERRORS as exc:
            self._failed_at = time.monotonic()
            logger.debug("LISTEN connection to %s failed: %s", self._db.where, exc)
            return False
        finally:
            self._connecting = False
        if self._db.pool is None:  # closed meanwhile
            conn.terminate()
            return False
        conn.add_termination_listener(self._on_lost)
        self._listener = conn
        return True

    async def _poll(self, queues: list[str]) -> bool:
        """Whether new jobs or wake-ups of *queues* appeared since last seen; marks them seen."""
        rows = await self._db.fetch("wait_for_work", self._db.statements.wakeups.poll, queues)
        changed = False
        for row in rows:
            seq = row["seq"] or 0
            if seq != self._seen_seq:
                self._seen_seq = seq
                changed = True
            wake_seq = row["wake_seq"] or 0
            if self._seen_wake.get(row["name"], -1) != wake_seq:
                self._seen_wake[row["name"]] = wake_seq
                changed = True
        return changed

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*."""
        clock = self._db.clock
        done = wakeup or anyio.Event()
        names = frozenset(queues)
        # Registered before the first await, so a notification from here on is never missed.
        self._waiters[done] = names
        try:
            if deadline is not None and deadline <= clock.now():
                return
            if self._db.pool is None:
                return
            if self._missed & names:
                self._missed -= names
                return
            if self._listen and not self.listening and await self._connect_listener():
                return  # notifications may have been sent while nobody listened
            if self.listening:
                with anyio.move_on_after(self._listen_check):
                    await clock.wait(done, deadline)
                return
            await self._poll_wait(sorted(names), done, deadline)
        finally:
            self._waiters.pop(done, None)

    async def _poll_wait(self, names: list[str], done: anyio.Event, deadline: float | None) -> None:
        clock = self._db.clock
        try:
            if await self._poll(names):
                return
        except BackendError:
            if self._db.pool is None:
                return
            raise
        shortest, longest = self._poll_bounds
        while True:
            # The poll runs on real time (other processes), the deadline on the
            # store's clock: wait for whichever comes first, in this task.
            with anyio.move_on_after(self._poll_delay):
                await clock.wait(done, deadline)
            if done.is_set() or (deadline is not None and deadline <= clock.now()):
                return
            if self._db.pool is None:
                return
            try:
                changed = await self._poll(names)
            except BackendError:
                if self._db.pool is None:
                    return
                raise
            if changed:
                self._poll_delay = shortest
                return
            self._poll_delay = min(self._poll_delay * 2, longest)
            if self._listen and not self.listening and await self._connect_listener():
                return
