"""Backoff policies, and the exceptions a handler raises to steer its own retries."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol, TypeAlias, runtime_checkable

import attrs

from ._exceptions import AsyncJobsError, InvalidOptionError

__all__ = [
    "Backoff",
    "BackoffLike",
    "ExponentialBackoff",
    "FixedBackoff",
    "Permanent",
    "Retry",
    "make_backoff",
    "seconds",
]


def seconds(value: float | timedelta | None, what: str) -> float | None:
    """Turn a duration given as seconds or :class:`timedelta` into finite, non-negative seconds.

    :raises InvalidOptionError: for a negative, NaN or infinite value, or a wrong type.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise InvalidOptionError(
            f"{what} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    if math.isnan(result) or math.isinf(result):
        raise InvalidOptionError(f"{what} must be a finite number of seconds, got {result}")
    if result < 0:
        raise InvalidOptionError(f"{what} must not be negative, got {result} seconds")
    return result


@runtime_checkable
class Backoff(Protocol):
    """How long to wait before the next attempt."""

    def delay_for(self, attempt: int) -> float:
        """Return the delay in seconds after failed attempt number *attempt* (1-based)."""
        ...


@attrs.frozen(kw_only=True)
class ExponentialBackoff:
    """``base * factor ** (attempt - 1)`` seconds, capped at ``cap``, with jitter.

    Full jitter (the default) draws the delay uniformly between 0 and that
    value, which spreads retries of jobs that failed together; ``jitter=False``
    uses the value itself.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: bool = True
    rng: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def delay_for(self, attempt: int) -> float:
        """Return the (jittered) delay after attempt *attempt*."""
        exponent = max(0, attempt - 1)
        # Cap the exponent first: factor ** 2000 overflows a float.
        ceiling = self.cap if exponent > 1000 else min(self.cap, self.base * self.factor**exponent)
        return self.rng.uniform(0.0, ceiling) if self.jitter else ceiling


@attrs.frozen
class FixedBackoff:
    """The same delay after every attempt."""

    delay: float = 1.0

    def delay_for(self, attempt: int) -> float:
        """Return :attr:`delay`."""
        return self.delay


@attrs.frozen
class _CallableBackoff:
    function: Callable[[int], float | timedelta]

    def delay_for(self, attempt: int) -> float:
        value = seconds(self.function(attempt), "the backoff function's result")
        return 0.0 if value is None else value


#: What ``backoff=`` accepts: a policy, a fixed number of seconds or timedelta,
#: or a function of the attempt number.
BackoffLike: TypeAlias = Backoff | float | timedelta | Callable[[int], float | timedelta] | None


def make_backoff(value: BackoffLike) -> Backoff:
    """Turn what a user passed as ``backoff=`` into a policy.

    :raises InvalidOptionError: for a negative delay or an unusable value.
    """
    if value is None:
        return ExponentialBackoff()
    if isinstance(value, Backoff):
        return value
    if isinstance(value, int | float | timedelta):
        fixed = seconds(value, "backoff")
        return FixedBackoff(0.0 if fixed is None else fixed)
    if callable(value):
        return _CallableBackoff(value)
    raise InvalidOptionError(
        f"backoff must be a Backoff policy, seconds, a timedelta or a function, "
        f"not {type(value).__name__}"
    )


class Retry(AsyncJobsError):
    """Raise from a handler to run the job again later.

    :param delay: when to run again (seconds or timedelta); ``None`` uses the
        job's backoff policy.
    :param snooze: ``True`` hands the job back without counting this attempt,
        for "not ready yet" rather than "failed".
    """

    def __init__(
        self, delay: float | timedelta | None = None, *, snooze: bool = False, reason: str = ""
    ) -> None:
        self.delay = seconds(delay, "Retry(delay=)")
        self.snooze = snooze
        self.reason = reason
        super().__init__(reason or ("snoozed" if snooze else "retry requested"))


class Permanent(AsyncJobsError):
    """Raise from a handler to fail the job at once: it goes dead without more attempts."""
