"""What an integration keeps per running attempt, found by job id and attempt number."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Attempts"]

T = TypeVar("T")


class Attempts(Generic[T]):
    """A value per (job id, attempt), at most *limit* of them (the oldest jobs go first).

    Keyed by attempt, not only by job: the next attempt's start may be
    published before the previous attempt's outcome (another worker claims
    the retried job while this one still reports), and each must find its own.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._jobs: dict[str, dict[int, T]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, job_id: str, attempt: int, value: T) -> list[T]:
        """Keep *value*; return what was pushed out (a replaced or the oldest attempts)."""
        attempts = self._jobs.setdefault(job_id, {})
        evicted = [attempts[attempt]] if attempt in attempts else []
        self._count += attempt not in attempts
        attempts[attempt] = value
        while self._count > self._limit:
            oldest = next(iter(self._jobs))
            dropped = self._jobs.pop(oldest)
            self._count -= len(dropped)
            evicted.extend(dropped.values())
        return evicted

    def pop(self, job_id: str, attempt: int | None = None) -> T | None:
        """Remove and return the value of *attempt* (``None``: the job's latest attempt)."""
        attempts = self._jobs.get(job_id)
        if not attempts:
            return None
        key = max(attempts) if attempt is None else attempt
        value = attempts.pop(key, None)
        if value is not None:
            self._count -= 1
        if not attempts:
            del self._jobs[job_id]
        return value

    def latest(self, job_id: str) -> T | None:
        """The value of the job's latest attempt, or ``None``."""
        attempts = self._jobs.get(job_id)
        return attempts[max(attempts)] if attempts else None

    def clear(self) -> None:
        """Forget every value."""
        self._jobs, self._count = {}, 0

    def drain(self) -> Iterator[T]:
        """Remove and yield every value."""
        jobs, self._jobs, self._count = self._jobs, {}, 0
        for attempts in jobs.values():
            yield from attempts.values()
