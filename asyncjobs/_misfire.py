"""Misfire handling: which missed fire times of a schedule to run after downtime.

:func:`misfire_fire_times` applies a schedule's misfire policy (one of
:data:`MISFIRE_POLICIES`) to the fire times that came due while nothing fired
them, and returns a :class:`MisfireDecision`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Final

import attrs

from ._exceptions import InvalidScheduleError
from ._triggers import Trigger, _aware_utc

__all__ = ["MISFIRE_POLICIES", "MisfireDecision", "misfire_fire_times"]

#: The misfire policies :func:`misfire_fire_times` understands.
MISFIRE_POLICIES: Final = frozenset({"skip", "once", "all"})

_ONE_MICROSECOND: Final = timedelta(microseconds=1)


@attrs.frozen(kw_only=True)
class MisfireDecision:
    """What :func:`misfire_fire_times` decided.

    :ivar run: the fire times to enqueue a job for, oldest first.
    :ivar next_fire: the fire time to store next; ``None`` when the trigger is
        exhausted. It is after ``now`` unless *limit* cut the batch short, in
        which case it is the first fire time not yet handled: call again.
    :ivar misfired: some due fire time was late by more than the grace.
    """

    run: tuple[datetime, ...]
    next_fire: datetime | None
    misfired: bool


def misfire_fire_times(
    trigger: Trigger,
    next_fire: datetime | None,
    now: datetime,
    *,
    policy: str = "once",
    grace: timedelta | float = 60.0,
    limit: int = 100,
) -> MisfireDecision:
    """Decide which due fire times of a schedule to run, and what to store next.

    The due fire times are those from *next_fire* (the stored next fire time,
    not yet run) up to *now*. One is **on time** when it is at most *grace*
    before *now* (``now - grace <= t <= now``), and **late** when older:

    ======  =========================================================  ===========
    policy  late fire times                                            on time
    ======  =========================================================  ===========
    skip    dropped                                                    run
    once    coalesced into one run at the earliest late time (that is  run
            *next_fire*), unless an on-time time runs in this call,
            which then stands for them
    all     run, oldest first                                          run
    ======  =========================================================  ===========

    At most *limit* fire times run per call, oldest first. When more are
    due, ``next_fire`` is the first one left over (still ``<= now``) and the
    caller calls again, so ``all`` drains a long backlog in batches while each
    call stays bounded. Otherwise ``next_fire`` is the first fire time after
    *now*. Nothing is due when *next_fire* is ``None`` or after *now*.

    :param trigger: the schedule's trigger.
    :param next_fire: the stored next fire time, aware (or ``None``).
    :param now: the current time, aware.
    :param policy: ``"skip"``, ``"once"`` or ``"all"``.
    :param grace: how late a fire time may run and still be on time
        (seconds or a timedelta, ``>= 0``).
    :param limit: the most fire times one call returns, ``>= 1``.
    :returns: the fire times to run and the next fire time to store.
    :raises InvalidScheduleError: an unknown policy, a negative grace, a limit
        below 1, or a naive datetime.
    """
    if policy not in MISFIRE_POLICIES:
        raise InvalidScheduleError(
            f"misfire policy must be one of {', '.join(sorted(MISFIRE_POLICIES))}, got {policy!r}"
        )
    window = _grace(grace)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidScheduleError(f"limit must be a whole number >= 1, got {limit!r}")
    now = _aware_utc(now, "now")
    if next_fire is None:
        return MisfireDecision(run=(), next_fire=None, misfired=False)
    first_due = _aware_utc(next_fire, "next_fire")
    if first_due > now:
        return MisfireDecision(run=(), next_fire=first_due, misfired=False)
    pending: datetime | None = first_due
    cutoff = now - window
    misfired = first_due < cutoff
    if misfired and policy != "all":
        # Jump straight to the first on-time fire time: a long outage of a
        # per-second job must not cost one step per missed second.
        pending = trigger.next_after(cutoff - _ONE_MICROSECOND)
    run: list[datetime] = []
    while pending is not None and pending <= now and len(run) < limit:
        run.append(pending)
        pending = trigger.next_after(pending)
    if misfired and policy == "once" and not run:
        run.append(first_due)
    return MisfireDecision(run=tuple(run), next_fire=pending, misfired=misfired)


def _grace(value: object) -> timedelta:
    if isinstance(value, timedelta):
        window = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        window = timedelta(seconds=value)
    else:
        raise InvalidScheduleError(
            f"grace must be a timedelta or a finite number of seconds, got {value!r}"
        )
    if window < timedelta(0):
        raise InvalidScheduleError(f"grace must not be negative, got {window!r}")
    return window
