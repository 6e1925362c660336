"""Cron and interval triggers: when a schedule fires, in which time zone, and how it catches up.

This is the only module that imports croniter, and it asks croniter for one
thing: the set of values each field of an expression allows. Finding the next
fire time is done here, in local wall time, because daylight-saving time must
follow classic (Vixie) cron rules and croniter gets the repeated hour wrong.

Daylight-saving rules, as implemented by :meth:`CronTrigger.next_after`:

* A **fixed-time** job -- its minute and hour fields are both plain values,
  lists or ranges, with no ``*`` and no ``/`` step (``30 2 * * *``,
  ``0,30 2 * * *``) -- runs *once* right after the clock jumps when its wall
  time falls in a skipped stretch (spring forward: 02:30 in Berlin runs at
  03:00 CEST). Several matches inside one skipped stretch collapse into that
  one run. In a repeated stretch (fall back) it runs once, at the *first*
  occurrence.
* Every other job **follows the clock**: it fires at every real occurrence of
  a matching wall time, in UTC order. A repeated hour happens twice, so
  ``30 * * * *`` fires at 02:30 CEST *and* at 02:30 CET; times in a skipped
  hour do not exist, so nothing fires for them.

The seconds field (see :class:`CronTrigger`) plays no part in telling the two
kinds apart, as Vixie cron has none.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Final, TypeAlias, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import CroniterError, croniter

from ._exceptions import InvalidScheduleError

__all__ = [
    "CronTrigger",
    "IntervalTrigger",
    "Trigger",
    "trigger_from_json",
]

_NICKNAMES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SYNTAX_HINT: Final = (
    "expected 5 fields 'minute hour day-of-month month day-of-week', "
    "6 with a leading seconds field ('*/10 * * * * *'), or one of " + ", ".join(sorted(_NICKNAMES))
)
# croniter's hashed ("H") and random ("R") fields: a random one differs
# between processes, which breaks "fires once per tick" across a cluster.
_HASHED_OR_RANDOM: Final = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
_MONTH_LENGTHS: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_WallTime: TypeAlias = tuple[int, int, int, int, int, int]


# --------------------------------------------------------------------------- parsing


class _CronSpec:
    """An expression expanded into sorted value tuples, plus day-matching rules.

    Shared by every trigger with the same expression (see :func:`_parse`);
    its only mutable state is a cache of matching days per month shape.
    """

    __slots__ = (
        "_month_days",
        "day_or",
        "dom",
        "dom_all",
        "dom_last",
        "dow",
        "dow_all",
        "fixed_time",
        "hours",
        "minutes",
        "months",
        "nth",
        "seconds",
    )

    def __init__(
        self,
        expanded: list[list[int | str]],
        nth: Mapping[int, frozenset[int | str]],
        *,
        fixed_time: bool,
    ) -> None:
        minute, hour, dom, month, dow = expanded[:5]
        self.seconds = _values(expanded[5], 0, 59) if len(expanded) > 5 else (0,)
        self.minutes = _values(minute, 0, 59)
        self.hours = _values(hour, 0, 23)
        self.months = _values(month, 1, 12)
        self.dom_all = dom == ["*"]
        self.dom = frozenset(v for v in dom if isinstance(v, int))
        self.dom_last = "l" in dom
        self.dow_all = dow == ["*"]
        self.dow = frozenset(v for v in dow if isinstance(v, int))
        self.nth = nth
        # The POSIX rule, as croniter applies it: when both day fields
        # restrict, a day matching either one fires; otherwise both must match.
        self.day_or = not self.dom_all and not self.dow_all
        self.fixed_time = fixed_time
        self._month_days: dict[int, tuple[int, ...]] = {}

    def month_days(self, length: int, first_weekday: int) -> tuple[int, ...]:
        """Return the matching days of a month of *length* days starting on *first_weekday*.

        Weekdays count from Sunday = 0, as in cron. Every month of every year
        has one of 28 shapes, so the answer is cached per shape.
        """
        key = length * 7 + first_weekday
        days = self._month_days.get(key)
        if days is None:
            days = tuple(
                day for day in range(1, length + 1) if self._day_matches(day, length, first_weekday)
            )
            self._month_days[key] = days
        return days

    def _day_matches(self, day: int, length: int, first_weekday: int) -> bool:
        dom_ok = self.dom_all or day in self.dom or (self.dom_last and day == length)
        weekday = (first_weekday + day - 1) % 7
        if self.dow_all:
            dow_ok = True
        elif weekday not in self.dow:
            dow_ok = False
        else:
            wanted = self.nth.get(weekday)
            dow_ok = wanted is None or (
                (day - 1) // 7 + 1 in wanted or ("l" in wanted and day + 7 > length)
            )
        return (dom_ok or dow_ok) if self.day_or else (dom_ok and dow_ok)

    def can_fire(self) -> bool:
        """Return whether some day of some year matches (every month shape occurs)."""
        for month in self.months:
            lengths = (28, 29) if month == 2 else (_MONTH_LENGTHS[month],)
            for length in lengths:
                for first_weekday in range(7):
                    if self.month_days(length, first_weekday):
                        return True
        return False

    def days_in(self, year: int, month: int) -> tuple[int, ...]:
        """Return the matching days of *month* in *year*."""
        length = _MONTH_LENGTHS[month] + (month == 2 and calendar.isleap(year))
        return self.month_days(length, (date(year, month, 1).weekday() + 1) % 7)

    def first_match(self, start: _WallTime) -> _WallTime | None:
        """Return the earliest matching wall time at or after *start*.

        ``None`` when there is none before the end of year 9999. *start* may
        overflow its fields (second 60, hour 24, day 32): each unsatisfied
        field carries into the next larger one and resets the smaller ones,
        so the loop takes at most one step per field per month tried.
        """
        year, month, day, hour, minute, second = start
        months, hours, minutes, seconds = self.months, self.hours, self.minutes, self.seconds
        while year <= 9999:
            i = bisect.bisect_left(months, month)
            if i == len(months):
                year, month, day, hour, minute, second = year + 1, months[0], 1, 0, 0, 0
                continue
            if months[i] != month:
                month, day, hour, minute, second = months[i], 1, 0, 0, 0
            days = self.days_in(year, month)
            i = bisect.bisect_left(days, day)
            if i == len(days):
                month, day, hour, minute, second = month + 1, 1, 0, 0, 0
                continue
            if days[i] != day:
                day, hour, minute, second = days[i], 0, 0, 0
            i = bisect.bisect_left(hours, hour)
            if i == len(hours):
                day, hour, minute, second = day + 1, 0, 0, 0
                continue
            if hours[i] != hour:
                hour, minute, second = hours[i], 0, 0
            i = bisect.bisect_left(minutes, minute)
            if i == len(minutes):
                hour, minute, second = hour + 1, 0, 0
                continue
            if minutes[i] != minute:
                minute, second = minutes[i], 0
            i = bisect.bisect_left(seconds, second)
            if i == len(seconds):
                minute, second = minute + 1, 0
                continue
            return (year, month, day, hour, minute, seconds[i])
        return None


def _values(field: list[int | str], low: int, high: int) -> tuple[int, ...]:
    if field == ["*"]:
        return tuple(range(low, high + 1))
    return tuple(sorted(v for v in field if isinstance(v, int)))


def _is_wildcard(field: str) -> bool:
    # "*", "*/15" and "0-59/15" follow the clock; explicit values do not.
    return "*" in field or "/" in field


@functools.lru_cache(maxsize=4096)
def _parse(expression: str) -> _CronSpec:
    """Expand *expression* (already whitespace-normalized) once; triggers share the result.

    croniter's expansion costs up to about a millisecond, so 10,000
    schedules over a few hundred distinct expressions parse each only once.
    """
    fields = _NICKNAMES.get(expression.lower(), expression).split()
    if expression.startswith("@") and len(fields) == 1:
        raise InvalidScheduleError(
            f"unknown cron nickname {expression!r}: use one of {', '.join(sorted(_NICKNAMES))}"
        )
    if len(fields) not in (5, 6):
        raise InvalidScheduleError(
            f"cron expression {expression!r} has {len(fields)} fields: {_SYNTAX_HINT}"
        )
    for field in fields:
        if _HASHED_OR_RANDOM.match(field):
            raise InvalidScheduleError(
                f"cron expression {expression!r}: hashed/random fields ({field!r}) are not "
                "supported, since every process must compute the same fire times; "
                "write the values out"
            )
    # Seconds, when present, come first: fields[-5:] is always the classic five.
    minute, hour, dom = fields[-5], fields[-4], fields[-3]
    if "w" in dom.lower():
        raise InvalidScheduleError(
            f"cron expression {expression!r}: 'W' (nearest weekday) in the day-of-month "
            "field is not supported; list the days instead"
        )
    try:
        expanded, raw_nth = croniter.expand(" ".join(fields), second_at_beginning=len(fields) == 6)
    # croniter signals bad input with its own ValueError subclasses, but odd
    # input has also been seen to escape as KeyError/IndexError/TypeError.
    except (CroniterError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: {exc}; {_SYNTAX_HINT}"
        ) from exc
    # The stub says dict[str, set[int]]; at run time keys are weekday numbers
    # and values hold occurrence numbers or "l" (last), as in "L5".
    nth = {
        int(weekday): frozenset(occurrences)
        for weekday, occurrences in cast(Mapping[Any, Iterable[int | str]], raw_nth).items()
    }
    spec = _CronSpec(
        cast(list[list[int | str]], expanded),
        nth,
        fixed_time=not (_is_wildcard(minute) or _is_wildcard(hour)),
    )
    if not spec.can_fire():
        raise InvalidScheduleError(
            f"cron expression {expression!r} can never fire: no month it allows has a day "
            "it allows; check the day-of-month, month and day-of-week fields"
        )
    return spec


def _normalize_expression(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidScheduleError(
            f"a cron expression must be a string such as '*/5 * * * *', got {type(value).__name__}"
        )
    normalized = " ".join(value.split())
    if not normalized:
        raise InvalidScheduleError(f"the cron expression is empty: {_SYNTAX_HINT}")
    # Nicknames are case-insensitive; store one spelling so equal schedules
    # compare (and serialize) equal.
    return normalized.lower() if normalized.lower() in _NICKNAMES else normalized


def _zone_name(value: object) -> str:
    if isinstance(value, ZoneInfo):
        if value.key is None:
            raise InvalidScheduleError(
                "a ZoneInfo read from a file has no IANA name to store; pass the name, "
                "such as 'Europe/Berlin'"
            )
        name: object = value.key
    elif value is UTC:
        name = "UTC"
    else:
        name = value
    if isinstance(name, tzinfo):
        raise InvalidScheduleError(
            f"timezone must be an IANA zone name such as 'Europe/Berlin' (or a "
            f"zoneinfo.ZoneInfo), not {type(name).__name__} {name!r}: a fixed offset has no "
            "daylight-saving rules and cannot be stored portably"
        )
    if not isinstance(name, str):
        raise InvalidScheduleError(
            f"timezone must be an IANA zone name such as 'Europe/Berlin', got {type(name).__name__}"
        )
    _load_zone(name)
    return name


def _load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin', "
            "'America/New_York' or 'UTC' (names are case-sensitive)"
        ) from exc


def _aware_utc(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidScheduleError(f"{name} must be an aware datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidScheduleError(
            f"{name} is a naive datetime; attach a time zone, for example "
            f"{name}.replace(tzinfo=datetime.UTC)"
        )
    return value if value.tzinfo is UTC else value.astimezone(UTC)


# --------------------------------------------------------------------------- wall time


def _wall(value: datetime) -> _WallTime:
    return (value.year, value.month, value.day, value.hour, value.minute, value.second)


# Datetimes are built positionally below: replace() with keywords costs more
# than the whole field search, and next_after runs for every schedule.


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """Return the instant in ``(before, after]`` where *zone*'s offset changes, in UTC.

    The offset at *before* must differ from the one at *after*. tzdata puts
    every transition on a whole second, so a binary search over seconds is
    exact; it runs only for moments next to a transition.
    """
    target = datetime.fromtimestamp(math.ceil(after.timestamp()), zone).utcoffset()
    low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _offsets(wall: _WallTime, zone: ZoneInfo) -> tuple[timedelta, timedelta]:
    # PEP 495: fold=0 gives the offset before a transition, fold=1 the one after;
    # they differ only for wall times in a gap (first < second) or a fold.
    first = datetime(*wall, 0, zone).utcoffset()
    second = datetime(*wall, 0, zone, fold=1).utcoffset()
    # Narrowing for the type checker: a ZoneInfo always has an offset.
    assert first is not None
    assert second is not None
    return first, second


def _instant(wall: _WallTime, offset: timedelta) -> datetime:
    return datetime(*wall, 0, UTC) - offset


# --------------------------------------------------------------------------- triggers


@attrs.frozen(init=False)
class CronTrigger:
    """Fire at the wall times a cron expression matches, in an IANA time zone.

    Syntax: five fields ``minute hour day-of-month month day-of-week``, or six
    with a **leading seconds field** (``"*/10 * * * * *"`` is every ten seconds,
    ``"30 0 2 * * *"`` is 02:00:30; the convention of Quartz, Spring and
    node-cron). Fields take values, ``*``, ranges ``a-b``, steps ``*/n`` and
    ``a-b/n``, lists ``a,b``, month and weekday names (``jan``, ``mon-fri``),
    ``L`` for the last day of the month, ``d#n`` for the n-th weekday ``d`` of
    the month and ``Ld`` for the last one. Sunday is 0 or 7. When both
    day-of-month and day-of-week restrict the day, a day matching either fires
    (POSIX). The nicknames ``@yearly``/``@annually``, ``@monthly``,
    ``@weekly``, ``@daily``/``@midnight`` and ``@hourly`` are accepted.
    Not supported: ``W``, hashed or random fields (``H``, ``R``), a year field.

    Daylight-saving time follows classic cron; see the module documentation.

    :param expression: the cron expression; whitespace is normalized.
    :param timezone: the IANA zone name the expression's wall times are read
        in; a :class:`zoneinfo.ZoneInfo` made from a name, or ``datetime.UTC``,
        is stored as its name.
    :raises InvalidScheduleError: the expression is malformed or can never
        fire, or the zone is unknown or not an IANA zone.
    """

    expression: str
    timezone: str
    # Derived from the two fields above, once: next_after never re-parses.
    _spec: _CronSpec = attrs.field(init=False, repr=False, eq=False)
    _zone: ZoneInfo = attrs.field(init=False, repr=False, eq=False)

    def __init__(self, expression: str, timezone: str | ZoneInfo = "UTC") -> None:
        expression = _normalize_expression(expression)
        name = _zone_name(timezone)
        self.__attrs_init__(expression, name)
        # The documented way to fill derived fields of a frozen attrs class.
        object.__setattr__(self, "_spec", _parse(expression))
        object.__setattr__(self, "_zone", _load_zone(name))

    def next_after(self, moment: datetime) -> datetime | None:
        """Return the first fire time strictly after *moment*, as an aware UTC datetime.

        :param moment: an aware datetime, in any zone.
        :returns: the fire time, or ``None`` when there is none before year 10000.
        :raises InvalidScheduleError: *moment* is naive or not a datetime.
        """
        utc = _aware_utc(moment, "moment")
        try:
            return self._next_after(utc)
        except OverflowError:
            return None

    def fire_times_between(
        self, start: datetime, end: datetime, *, limit: int = 1000
    ) -> list[datetime]:
        """Return the fire times in ``(start, end]``, oldest first.

        :param start: an aware datetime; a fire time equal to it is excluded.
        :param end: an aware datetime; a fire time equal to it is included.
        :param limit: the most fire times to return.
        :returns: aware UTC datetimes.
        :raises InvalidScheduleError: *start* or *end* is naive or not a datetime.
        """
        return _fire_times_between(self, start, end, limit)

    def to_json(self) -> str:
        """Return the trigger's portable description for :func:`trigger_from_json`.

        :returns: canonical JSON text: equal triggers give equal text, so a
            store may compare it to tell whether a schedule changed.
        """
        return _dump({"type": "cron", "expression": self.expression, "timezone": self.timezone})

    def _next_after(self, moment: datetime) -> datetime | None:
        zone, spec = self._zone, self._spec
        local = moment.astimezone(zone)
        offset = local.utcoffset()
        other = local.replace(fold=1 - local.fold).utcoffset()
        assert offset is not None
        assert other is not None
        # One second on, truncated: first_match carries second 60 and so on.
        after = (local.year, local.month, local.day, local.hour, local.minute, local.second + 1)
        if offset == other:
            # Not inside a repeated stretch: wall-time order is UTC order.
            return self._first_fire(after)
        # *moment* lies in a repeated stretch of wall time [fold_start, fold_end).
        length = abs(offset - other)
        if local.fold == 0:
            # First pass: later first-pass times come next, but so may
            # second-pass times of walls at or before *moment*'s own.
            change = _transition(zone, moment, moment + length)
            first = self._first_fire(after)
            if spec.fixed_time:
                return first
            second = self._second_pass_fire(_wall(change + other))
        else:
            # Second pass: a fixed-time job already ran for this stretch, so
            # its next first-occurrence fire is after the stretch ends.
            change = _transition(zone, moment - length, moment)
            first = self._first_fire(_wall(change + other))
            if spec.fixed_time:
                return first
            second = self._second_pass_fire(after)
        if first is None or second is None:
            return first or second
        return min(first, second)

    def _first_fire(self, start: _WallTime) -> datetime | None:
        """Return the earliest fire from matching walls at or after *start*.

        A wall in a repeated stretch gives its first occurrence; one in a
        skipped stretch gives the jump itself (fixed-time) or nothing.
        """
        zone, spec = self._zone, self._spec
        while (wall := spec.first_match(start)) is not None:
            before, after = _offsets(wall, zone)
            if before >= after:  # an ordinary or a repeated wall time
                return _instant(wall, before)
            jump = _transition(zone, _instant(wall, after), _instant(wall, before))
            if spec.fixed_time:
                return jump
            start = _wall(jump + after)
        return None

    def _second_pass_fire(self, start: _WallTime) -> datetime | None:
        """Return the second occurrence of the first matching wall at or after *start*.

        ``None`` when that wall is not repeated: :meth:`_first_fire` already
        covers it.
        """
        wall = self._spec.first_match(start)
        if wall is None:
            return None
        before, after = _offsets(wall, self._zone)
        return _instant(wall, after) if before > after else None


@attrs.frozen(init=False)
class IntervalTrigger:
    """Fire every *every*, at ``start + k * every`` for whole numbers ``k >= 0``.

    Intervals are elapsed time: ``every=timedelta(days=1)`` is every 24 hours,
    which drifts an hour against the wall clock across a DST change (use a
    :class:`CronTrigger` for "daily at 02:00").

    :param every: the period, a :class:`~datetime.timedelta` or seconds; must be positive.
    :param start: the first fire time (an aware datetime, stored in UTC). ``None``
        anchors the grid at the Unix epoch, so every process computes the same
        fire times: ``every=3600`` fires on each full UTC hour.
    :raises InvalidScheduleError: *every* is not positive or not a duration, or
        *start* is naive or not a datetime.
    """

    every: timedelta
    start: datetime | None

    def __init__(self, every: timedelta | float, start: datetime | None = None) -> None:
        period = _positive_duration(every, "every")
        self.__attrs_init__(period, None if start is None else _aware_utc(start, "start"))

    def next_after(self, moment: datetime) -> datetime | None:
        """Return the first fire time strictly after *moment*, as an aware UTC datetime.

        :param moment: an aware datetime, in any zone.
        :returns: the fire time, or ``None`` when it would be after year 9999.
        :raises InvalidScheduleError: *moment* is naive or not a datetime.
        """
        utc = _aware_utc(moment, "moment")
        anchor = _EPOCH if self.start is None else self.start
        if utc < anchor:
            return anchor
        try:
            # timedelta // timedelta is exact integer division in microseconds.
            return anchor + ((utc - anchor) // self.every + 1) * self.every
        except OverflowError:
            return None

    def fire_times_between(
        self, start: datetime, end: datetime, *, limit: int = 1000
    ) -> list[datetime]:
        """Return the fire times in ``(start, end]``, oldest first.

        :param start: an aware datetime; a fire time equal to it is excluded.
        :param end: an aware datetime; a fire time equal to it is included.
        :param limit: the most fire times to return.
        :returns: aware UTC datetimes.
        :raises InvalidScheduleError: *start* or *end* is naive or not a datetime.
        """
        return _fire_times_between(self, start, end, limit)

    def to_json(self) -> str:
        """Return the trigger's portable description for :func:`trigger_from_json`.

        :returns: canonical JSON text: equal triggers give equal text, so a
            store may compare it to tell whether a schedule changed.
        """
        return _dump(
            {
                "type": "interval",
                "every": self.every.total_seconds(),
                "start": None if self.start is None else self.start.isoformat(),
            }
        )


#: Either kind of trigger; both offer ``next_after``, ``fire_times_between`` and ``to_json``.
Trigger: TypeAlias = CronTrigger | IntervalTrigger


def _positive_duration(value: object, name: str) -> timedelta:
    if isinstance(value, timedelta):
        period = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidScheduleError(f"{name} must be a finite number of seconds, got {value}")
        try:
            period = timedelta(seconds=value)
        except OverflowError as exc:
            raise InvalidScheduleError(f"{name}={value} seconds is too long") from exc
    else:
        raise InvalidScheduleError(
            f"{name} must be a timedelta or a number of seconds, got {type(value).__name__}"
        )
    if period <= timedelta(0):
        given = value if isinstance(value, int | float) else period.total_seconds()
        raise InvalidScheduleError(f"{name} must be positive, got {given:g} seconds")
    return period


def _fire_times_between(
    trigger: Trigger, start: datetime, end: datetime, limit: int
) -> list[datetime]:
    end = _aware_utc(end, "end")
    times: list[datetime] = []
    fire = trigger.next_after(_aware_utc(start, "start"))
    while fire is not None and fire <= end and len(times) < limit:
        times.append(fire)
        fire = trigger.next_after(fire)
    return times


# --------------------------------------------------------------------------- JSON


def _dump(document: dict[str, object]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def trigger_from_json(text: str) -> Trigger:
    """Rebuild a trigger from the text its ``to_json()`` returned.

    :param text: the stored JSON text.
    :returns: an equal :class:`CronTrigger` or :class:`IntervalTrigger`.
    :raises InvalidScheduleError: the text is not a trigger description, or
        describes an invalid one (an unknown zone on this machine, say).
    """
    try:
        document = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InvalidScheduleError(f"stored trigger is not JSON text: {text!r}") from exc
    if not isinstance(document, dict):
        raise InvalidScheduleError(f"stored trigger must be a JSON object, got {text!r}")
    kind = document.get("type")
    expected = {"cron": {"type", "expression", "timezone"}, "interval": {"type", "every", "start"}}
    if kind not in expected or set(document) != expected[kind]:
        raise InvalidScheduleError(
            f"stored trigger {text!r} is neither a cron trigger (type, expression, timezone) "
            "nor an interval trigger (type, every, start)"
        )
    if kind == "cron":
        return CronTrigger(document["expression"], document["timezone"])
    start = document["start"]
    if start is not None:
        if not isinstance(start, str):
            raise InvalidScheduleError(f"stored trigger {text!r}: start must be ISO text or null")
        try:
            start = datetime.fromisoformat(start)
        except ValueError as exc:
            raise InvalidScheduleError(f"stored trigger {text!r}: bad start {start!r}") from exc
    return IntervalTrigger(document["every"], start)
