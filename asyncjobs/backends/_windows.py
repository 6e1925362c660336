"""A rate window as a SQL store reads it at a claim: shared by the SQLite and Postgres stores.

The store counts the claims still inside the window (and finds the oldest),
then :meth:`WindowCount.add` counts each job it claims in the same step, so
one read serves the whole claim.
"""

from __future__ import annotations

import attrs

from .._models import RateWindow

__all__ = ["WindowCount"]


@attrs.define
class WindowCount:
    """One rate window as read at the claim: the claims in it, and the oldest one's time.

    :ivar added: claims this claim added (to be written back).
    """

    rate: RateWindow
    count: int
    oldest: float | None
    added: int = 0

    @property
    def full(self) -> bool:
        """Whether the window holds ``limit`` claims already."""
        return self.count >= self.rate.limit

    def opens_at(self) -> float | None:
        """When the oldest claim leaves the window, letting one more in."""
        return None if self.oldest is None else self.oldest + self.rate.per

    def add(self, now: float) -> None:
        """Count one more claim made at *now*."""
        self.count += 1
        self.added += 1
        if self.oldest is None:
            self.oldest = now
