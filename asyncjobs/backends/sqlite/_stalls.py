"""Leases under contention: when a write waited so long that lease sweeps must pause.

- **A lease runs from when the write lock is held.** Claims, hand-offs and
  heartbeats read the clock inside their transaction, so a write that waited
  20 s for the lock still hands out, or extends to, ``now + lease``.
- **A lease is never lost to a wait alone.** A write whose call waited at
  least the *stall threshold* (1 s, or a quarter of the shortest lease this
  backend object handles, if less; measured on the store's clock and on the
  monotonic clock alike, so a clock step is not a stall) records, in the
  same transaction and before the queue passes on, that lease sweeps
  resume at ``now + 1 s + a third of the longest lease`` this object handles
  (``asyncjobs_lease_sweeps``, schema 4). :meth:`SQLiteBackend.recover_expired`
  does nothing before that time, and nothing when its own call waited the
  stall threshold (``_lifecycle.py``). So after a write lock was held a long
  time, every worker whose heartbeat was held up with it gets one heartbeat
  interval to land before any lease is judged; a crashed worker's jobs are
  recovered that much later. While writes keep waiting longer than the
  threshold, sweeps stay paused: leases cannot be judged fairly then.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

__all__ = ["Stalls"]

logger = logging.getLogger("asyncjobs")

# A write that waited this long for the lock (or a quarter of the shortest lease
# this object handles, if less) is a stall; after one, lease sweeps pause for
# _STALL_GRACE plus a third of the longest lease (one heartbeat interval).
_STALL_AFTER = 1.0
_STALL_GRACE = 1.0


class Stalls:
    """The leases one backend object handles, and what a long wait for the lock means for them.

    :param path: the database file, for the log.
    :param now: the store's clock.
    """

    def __init__(self, path: str, now: Callable[[], float]) -> None:
        self._path = path
        self._now = now
        # The leases this object has handed out or extended: they size the stall
        # threshold and the pause of lease sweeps after a stall.
        self._shortest_lease: float | None = None
        self._longest_lease = 0.0

    def note_lease(self, lease: float) -> None:
        """Count *lease* (seconds) among the leases this object hands out or extends."""
        if self._shortest_lease is None or lease < self._shortest_lease:
            self._shortest_lease = lease
        self._longest_lease = max(self._longest_lease, lease)

    def _threshold(self) -> float:
        if self._shortest_lease is None:
            return _STALL_AFTER
        return min(_STALL_AFTER, self._shortest_lease / 4)

    def stalled(self, requested: tuple[float, float]) -> bool:
        """Whether a write requested at *requested* has waited long (both clocks)."""
        threshold = self._threshold()
        return (
            self._now() - requested[0] >= threshold and time.monotonic() - requested[1] >= threshold
        )

    def record(self, conn: sqlite3.Connection, requested: tuple[float, float]) -> None:
        """Pause lease sweeps until every heartbeat delayed with this write has landed.

        Runs inside the stalled write's transaction, before the queue passes on.
        """
        now = self._now()
        resume_at = now + _STALL_GRACE + self._longest_lease / 3
        conn.execute(
            "UPDATE asyncjobs_lease_sweeps SET resume_at = max(resume_at, ?) WHERE id = 1",
            (resume_at,),
        )
        logger.info(
            "a write to %s waited %.1f s for the write lock; lease sweeps pause for %.1f s "
            "so that heartbeats delayed with it land first",
            self._path,
            now - requested[0],
            resume_at - now,
        )
