"""Cron and interval triggers: syntax, daylight-saving time, JSON, misfire catch-up.

DST behaviour is pinned twice: by tables of exact UTC fire times, and by a
brute-force oracle that walks every minute around a transition and applies
the classic cron rule directly, sharing no code with the implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from asyncjobs._exceptions import AsyncJobsError, InvalidScheduleError
from asyncjobs._misfire import MisfireDecision, misfire_fire_times
from asyncjobs._triggers import CronTrigger, IntervalTrigger, Trigger, trigger_from_json

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
MINUTE = timedelta(minutes=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(trigger: Trigger, start: datetime, count: int) -> list[datetime]:
    """The next *count* fire times after *start*, by chaining ``next_after``."""
    times: list[datetime] = []
    moment = start
    for _ in range(count):
        fire = trigger.next_after(moment)
        assert fire is not None
        times.append(fire)
        moment = fire
    return times


# --------------------------------------------------------------------------- basics


def test_next_after_is_strictly_after_and_aware_utc() -> None:
    trigger = CronTrigger("*/15 * * * *")
    assert trigger.next_after(utc(2026, 5, 5, 10, 7)) == utc(2026, 5, 5, 10, 15)
    assert trigger.next_after(utc(2026, 5, 5, 10, 15)) == utc(2026, 5, 5, 10, 30)
    just_before = utc(2026, 5, 5, 10, 14, 59) + timedelta(microseconds=999_999)
    result = trigger.next_after(just_before)
    assert result == utc(2026, 5, 5, 10, 15)
    assert result is not None
    assert result.tzinfo is UTC


def test_next_after_accepts_a_moment_in_any_zone() -> None:
    trigger = CronTrigger("0 2 * * *", timezone=BERLIN)
    moment = utc(2026, 6, 1, 12)
    expected = trigger.next_after(moment)
    assert expected == utc(2026, 6, 2, 0)
    for zone in (NEW_YORK, "Asia/Tokyo", BERLIN):
        assert trigger.next_after(moment.astimezone(ZoneInfo(zone))) == expected
    assert trigger.next_after(moment.astimezone(timezone(timedelta(hours=-3)))) == expected


def test_design_doc_example() -> None:
    trigger = CronTrigger("0 2 * * *", timezone="Europe/Berlin")
    assert trigger.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 1)  # 02:00 CET


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # Six fields: seconds come FIRST.
        ("*/10 * * * * *", utc(2026, 1, 1, 0, 0, 5), [utc(2026, 1, 1, 0, 0, s) for s in (10, 20)]),
        # Second 30 of 12:00 every day -- read seconds-last it would be
        # minute 30 of hour 0 on the 12th.
        (
            "30 0 12 * * *",
            utc(2026, 1, 1),
            [utc(2026, 1, 1, 12, 0, 30), utc(2026, 1, 2, 12, 0, 30)],
        ),
        ("0 */5 * * * *", utc(2026, 1, 1, 0, 3), [utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 10)]),
        (
            "15,45 0 0 1 * *",
            utc(2026, 1, 1, 0, 0, 20),
            [utc(2026, 1, 1, 0, 0, 45), utc(2026, 2, 1, 0, 0, 15)],
        ),
        # Five fields fire at second 0.
        ("* * * * *", utc(2026, 1, 1, 0, 0, 1), [utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2)]),
    ],
)
def test_seconds_field_comes_first(
    expression: str, start: datetime, expected: list[datetime]
) -> None:
    assert fires(CronTrigger(expression), start, len(expected)) == expected


@pytest.mark.parametrize(
    ("nickname", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_nicknames(nickname: str, equivalent: str) -> None:
    trigger = CronTrigger(nickname, timezone=BERLIN)
    assert trigger.expression == nickname.lower()
    reference = CronTrigger(equivalent, timezone=BERLIN)
    start = utc(2025, 12, 20)
    assert fires(trigger, start, 30) == fires(reference, start, 30)


def test_hourly_nickname_follows_the_clock() -> None:
    # @hourly is "0 * * * *": a wildcard hour, so the repeated 02:00 runs twice.
    assert fires(CronTrigger("@hourly", BERLIN), utc(2026, 10, 24, 23, 30), 3) == [
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 1),  # 02:00 CET
        utc(2026, 10, 25, 2),  # 03:00 CET
    ]


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        ("0 0 L * *", utc(2026, 2, 10), [utc(2026, 2, 28), utc(2026, 3, 31), utc(2026, 4, 30)]),
        ("0 0 L 2 *", utc(2027, 3, 1), [utc(2028, 2, 29), utc(2029, 2, 28)]),
        ("0 0 29 2 *", utc(2026, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
        # Last Friday of the month.
        ("0 0 * * L5", utc(2026, 1, 1), [utc(2026, 1, 30), utc(2026, 2, 27)]),
        # Second Monday of the month.
        ("0 0 * * 1#2", utc(2026, 1, 1), [utc(2026, 1, 12), utc(2026, 2, 9)]),
        ("0 0 * * mon#1,mon#3", utc(2026, 1, 1), [utc(2026, 1, 5), utc(2026, 1, 19)]),
        # Day-of-month OR day-of-week when both restrict (POSIX).
        ("0 0 13 * 5", utc(2026, 1, 1), [utc(2026, 1, d) for d in (2, 9, 13, 16, 23)]),
        ("0 0 1 * 1#2", utc(2026, 1, 2), [utc(2026, 1, 12), utc(2026, 2, 1), utc(2026, 2, 9)]),
        # One side unrestricted: AND, which with "*" is just the other side.
        ("0 0 * * mon-fri", utc(2026, 1, 1, 12), [utc(2026, 1, 2), utc(2026, 1, 5)]),
        # Sunday is 0 or 7.
        ("0 0 * * 7", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),
        ("0 0 * * sun", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),
        ("0 12 * jan,jul *", utc(2026, 1, 31, 13), [utc(2026, 7, 1, 12), utc(2026, 7, 2, 12)]),
        # The fifth Monday of February happens once every 28 years or so.
        ("0 0 * 2 1#5", utc(2026, 1, 1), [utc(2044, 2, 29), utc(2072, 2, 29)]),
    ],
)
def test_day_rules(expression: str, start: datetime, expected: list[datetime]) -> None:
    assert fires(CronTrigger(expression), start, len(expected)) == expected


def test_whitespace_is_normalized() -> None:
    assert CronTrigger("  0   0\t* * *  ").expression == "0 0 * * *"
    assert CronTrigger("  0   0\t* * *  ") == CronTrigger("0 0 * * *")


def test_end_of_time_gives_none() -> None:
    assert CronTrigger("0 0 1 1 *").next_after(utc(9999, 6, 1)) is None
    assert CronTrigger("0 0 * * *", BERLIN).next_after(utc(9999, 12, 31, 23, 30)) is None
    assert IntervalTrigger(timedelta(days=365)).next_after(utc(9999, 12, 1)) is None


def test_parsing_is_shared_between_equal_expressions() -> None:
    first = CronTrigger("7 9-17 * * mon-fri", BERLIN)
    second = CronTrigger("7 9-17 * * mon-fri", NEW_YORK)
    assert first._spec is second._spec


# A differential check against croniter where croniter is trustworthy: UTC,
# no DST, plain fields.
def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    ordered_pair = st.tuples(value, value).filter(lambda p: p[0] < p[1])
    step = st.integers(1, high - low)
    return st.one_of(
        st.just("*"),
        step.map(lambda n: f"*/{n}"),
        value.map(str),
        ordered_pair.map(lambda p: f"{p[0]}-{p[1]}"),
        st.tuples(ordered_pair, step).map(lambda x: f"{x[0][0]}-{x[0][1]}/{x[1]}"),
        st.lists(value, min_size=2, max_size=4, unique=True).map(lambda v: ",".join(map(str, v))),
    )


_expressions = st.tuples(
    _field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(0, 6)
).map(" ".join)
_moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(expression=_expressions, start=_moments)
def test_agrees_with_croniter_in_utc(expression: str, start: datetime) -> None:
    try:
        trigger = CronTrigger(expression)
    except InvalidScheduleError:
        assume(False)
        raise
    reference = croniter(expression, start)
    expected = [reference.get_next(datetime) for _ in range(5)]
    assert fires(trigger, start, 5) == expected


# --------------------------------------------------------------------------- DST tables
#
# Europe/Berlin 2026: spring forward Sun 29 March at 01:00 UTC (02:00 CET ->
# 03:00 CEST, 02:00-02:59 never happens); fall back Sun 25 October at 01:00 UTC
# (03:00 CEST -> 02:00 CET, 02:00-02:59 happens at 00:xx UTC and again at 01:xx).
# America/New_York 2026: spring forward Sun 8 March at 07:00 UTC (02:00 EST ->
# 03:00 EDT); fall back Sun 1 November at 06:00 UTC (02:00 EDT -> 01:00 EST,
# 01:00-01:59 happens at 05:xx UTC and again at 06:xx).


@pytest.mark.parametrize(
    ("zone", "before", "after"),
    [
        (BERLIN, utc(2026, 3, 29, 0, 59), utc(2026, 3, 29, 1)),
        (BERLIN, utc(2026, 10, 25, 0, 59), utc(2026, 10, 25, 1)),
        (NEW_YORK, utc(2026, 3, 8, 6, 59), utc(2026, 3, 8, 7)),
        (NEW_YORK, utc(2026, 11, 1, 5, 59), utc(2026, 11, 1, 6)),
    ],
)
def test_the_tables_below_use_real_transitions(
    zone: str, before: datetime, after: datetime
) -> None:
    tz = ZoneInfo(zone)
    assert before.astimezone(tz).utcoffset() != after.astimezone(tz).utcoffset()


DST_CASES = [
    # --- Berlin, spring forward: fixed-time jobs in the gap run once at 03:00 CEST.
    (
        "30 2 * * *",
        BERLIN,
        utc(2026, 3, 27, 12),
        [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)],
    ),
    ("0 2 * * *", BERLIN, utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0)]),
    # Two matches in one gap collapse into one run.
    (
        "0,30 2 * * *",
        BERLIN,
        utc(2026, 3, 28, 12),
        [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0), utc(2026, 3, 30, 0, 30)],
    ),
    (
        "45 1,2 * * *",
        BERLIN,
        utc(2026, 3, 28, 12),
        [utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1), utc(2026, 3, 29, 23, 45)],
    ),
    # The seconds field does not make a job a wildcard one; the run is at 03:00:00.
    (
        "15 30 2 * * *",
        BERLIN,
        utc(2026, 3, 28, 12),
        [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30, 15)],
    ),
    # Wildcard jobs follow the clock: 02:30 does not exist, so nothing fires for it.
    (
        "30 * * * *",
        BERLIN,
        utc(2026, 3, 29),
        [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30)],
    ),
    (
        "*/15 * * * *",
        BERLIN,
        utc(2026, 3, 29, 0, 40),
        [utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 15)],
    ),
    (
        "*/15 2 * * *",
        BERLIN,
        utc(2026, 3, 28, 12),
        [utc(2026, 3, 30, 0), utc(2026, 3, 30, 0, 15), utc(2026, 3, 30, 0, 30)],
    ),
    # --- Berlin, fall back: fixed-time jobs run once, in the first pass (CEST).
    (
        "30 2 * * *",
        BERLIN,
        utc(2026, 10, 24, 12),
        [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
    ),
    (
        "0,30 2 * * *",
        BERLIN,
        utc(2026, 10, 24, 12),
        [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1)],
    ),
    (
        "15 30 2 * * *",
        BERLIN,
        utc(2026, 10, 24, 12),
        [utc(2026, 10, 25, 0, 30, 15), utc(2026, 10, 26, 1, 30, 15)],
    ),
    # Wildcard jobs fire in both passes: 02:30 CEST and 02:30 CET.
    (
        "30 * * * *",
        BERLIN,
        utc(2026, 10, 24, 23),
        [
            utc(2026, 10, 24, 23, 30),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1, 30),
            utc(2026, 10, 25, 2, 30),
        ],
    ),
    (
        "*/20 2 * * *",
        BERLIN,
        utc(2026, 10, 24, 12),
        [
            *(utc(2026, 10, 25, 0, m) for m in (0, 20, 40)),
            *(utc(2026, 10, 25, 1, m) for m in (0, 20, 40)),
            utc(2026, 10, 26, 1),
        ],
    ),
    (
        "*/15 * * * *",
        BERLIN,
        utc(2026, 10, 25, 0, 40),
        [utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 1), utc(2026, 10, 25, 1, 15)],
    ),
    # --- New York, spring forward.
    (
        "30 2 * * *",
        NEW_YORK,
        utc(2026, 3, 7),
        [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)],
    ),
    ("30 * * * *", NEW_YORK, utc(2026, 3, 8, 6), [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)]),
    (
        "*/30 2 * * *",
        NEW_YORK,
        utc(2026, 3, 7),
        [utc(2026, 3, 7, 7), utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6), utc(2026, 3, 9, 6, 30)],
    ),
    # --- New York, fall back: the repeated hour is 01:00-01:59.
    (
        "30 1 * * *",
        NEW_YORK,
        utc(2026, 10, 31),
        [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
    ),
    ("0 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), [utc(2026, 11, 1, 5), utc(2026, 11, 2, 6)]),
    (
        "30 * * * *",
        NEW_YORK,
        utc(2026, 11, 1, 4),
        [
            utc(2026, 11, 1, 4, 30),
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 1, 6, 30),
            utc(2026, 11, 1, 7, 30),
        ],
    ),
    (
        "*/30 1 * * *",
        NEW_YORK,
        utc(2026, 10, 31, 12),
        [
            utc(2026, 11, 1, 5),
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 1, 6),
            utc(2026, 11, 1, 6, 30),
            utc(2026, 11, 2, 6),
        ],
    ),
]


@pytest.mark.parametrize(("expression", "zone", "start", "expected"), DST_CASES)
def test_dst_fire_times(
    expression: str, zone: str, start: datetime, expected: list[datetime]
) -> None:
    assert fires(CronTrigger(expression, zone), start, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "moment", "expected"),
    [
        # Moments inside the repeated hour, first pass (CEST) and second (CET).
        ("30 2 * * *", BERLIN, utc(2026, 10, 25, 0, 10), utc(2026, 10, 25, 0, 30)),
        ("30 2 * * *", BERLIN, utc(2026, 10, 25, 0, 40), utc(2026, 10, 26, 1, 30)),
        ("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 10), utc(2026, 10, 26, 1, 30)),
        # Already ran at 02:10 CEST: 02:10 CET does not run it again.
        ("10 2 * * *", BERLIN, utc(2026, 10, 25, 0, 40), utc(2026, 10, 26, 1, 10)),
        ("30 * * * *", BERLIN, utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)),
        ("30 * * * *", BERLIN, utc(2026, 10, 25, 0, 40), utc(2026, 10, 25, 1, 30)),
        ("30 * * * *", BERLIN, utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 1, 30)),
        ("30 * * * *", BERLIN, utc(2026, 10, 25, 1, 40), utc(2026, 10, 25, 2, 30)),
        ("10 2 * * *", NEW_YORK, utc(2026, 11, 1, 5, 40), utc(2026, 11, 1, 7, 10)),
        ("10 1 * * *", NEW_YORK, utc(2026, 11, 1, 5, 40), utc(2026, 11, 2, 6, 10)),
        ("10 * * * *", NEW_YORK, utc(2026, 11, 1, 5, 40), utc(2026, 11, 1, 6, 10)),
        ("10 * * * *", NEW_YORK, utc(2026, 11, 1, 6, 20), utc(2026, 11, 1, 7, 10)),
        # A moment just before the jump.
        ("30 2 * * *", BERLIN, utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 1)),
        ("30 2 * * *", BERLIN, utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)),
    ],
)
def test_dst_next_after_from_inside_a_transition(
    expression: str, zone: str, moment: datetime, expected: datetime
) -> None:
    assert CronTrigger(expression, zone).next_after(moment) == expected


# --------------------------------------------------------------------------- DST oracle

WallPredicate = Callable[[datetime], bool]

# (expression, fixed time?, predicate over the local wall time)
ORACLE_EXPRESSIONS: list[tuple[str, bool, WallPredicate]] = [
    ("30 2 * * *", True, lambda w: w.hour == 2 and w.minute == 30),
    ("0,30 2 * * *", True, lambda w: w.hour == 2 and w.minute in (0, 30)),
    ("45 1,2 * * *", True, lambda w: w.hour in (1, 2) and w.minute == 45),
    ("15 2-3 * * *", True, lambda w: w.hour in (2, 3) and w.minute == 15),
    ("0 9 * * *", True, lambda w: w.hour == 9 and w.minute == 0),
    ("0 0 * * *", True, lambda w: w.hour == 0 and w.minute == 0),
    ("30 * * * *", False, lambda w: w.minute == 30),
    ("*/15 * * * *", False, lambda w: w.minute % 15 == 0),
    ("*/20 2 * * *", False, lambda w: w.hour == 2 and w.minute % 20 == 0),
    ("10-20/5 1,2 * * *", False, lambda w: w.hour in (1, 2) and w.minute in (10, 15, 20)),
    ("0 */2 * * *", False, lambda w: w.hour % 2 == 0 and w.minute == 0),
]

# (zone, a UTC instant near a transition): both directions in each zone where
# the zone has both, plus a 30-minute shift, the southern hemisphere, midnight
# transitions and a whole skipped day.
ORACLE_WINDOWS: list[tuple[str, datetime]] = [
    (BERLIN, utc(2026, 3, 29, 1)),
    (BERLIN, utc(2026, 10, 25, 1)),
    (NEW_YORK, utc(2026, 3, 8, 7)),
    (NEW_YORK, utc(2026, 11, 1, 6)),
    ("Australia/Sydney", utc(2026, 4, 4, 16)),
    ("Australia/Sydney", utc(2026, 10, 3, 16)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
    ("America/Havana", utc(2026, 3, 8, 5)),
    ("America/Havana", utc(2026, 11, 1, 5)),
    ("Pacific/Apia", utc(2011, 12, 30, 10)),
]


def oracle_fire_times(
    zone: str, predicate: WallPredicate, fixed: bool, start: datetime, end: datetime
) -> list[datetime]:
    """Classic cron, minute by minute: the rule applied directly to each UTC minute.

    Fixed-time jobs fire at the first occurrence of a matching wall time, and
    once at the jump for matching wall times the jump skipped; other jobs fire
    at every occurrence of a matching wall time.
    """
    tz = ZoneInfo(zone)
    times: list[datetime] = []
    moment = start
    previous_wall = (moment - MINUTE).astimezone(tz).replace(tzinfo=None)
    while moment <= end:
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None)
        skipped = []
        probe = previous_wall + MINUTE
        while probe < wall:
            skipped.append(probe)
            probe += MINUTE
        ran_for_the_jump = fixed and any(predicate(w) for w in skipped)
        ran_for_this_wall = predicate(wall) and not (fixed and local.fold == 1)
        if ran_for_the_jump or ran_for_this_wall:
            times.append(moment)
        previous_wall = wall
        moment += MINUTE
    return times


@pytest.mark.parametrize(("zone", "near"), ORACLE_WINDOWS, ids=lambda v: str(v))
def test_dst_matches_the_oracle(zone: str, near: datetime) -> None:
    start, end = near - timedelta(hours=30), near + timedelta(hours=30)
    for expression, fixed, predicate in ORACLE_EXPRESSIONS:
        trigger = CronTrigger(expression, zone)
        expected = oracle_fire_times(zone, predicate, fixed, start, end)
        assert trigger.fire_times_between(start - MINUTE, end) == expected, expression
        # And from arbitrary moments, not only from fire times.
        for index in range(0, len(expected) - 1, 3):
            moment = expected[index] + timedelta(seconds=17)
            assert trigger.next_after(moment) == expected[index + 1], (expression, moment)


@settings(max_examples=200, deadline=None)
@given(
    case=st.sampled_from(ORACLE_EXPRESSIONS),
    zone_and_near=st.sampled_from(ORACLE_WINDOWS[:4]),
    offset=st.integers(-36 * 3600 * 1000, 36 * 3600 * 1000),
)
def test_next_after_matches_the_oracle_anywhere_near_a_transition(
    case: tuple[str, bool, WallPredicate], zone_and_near: tuple[str, datetime], offset: int
) -> None:
    expression, fixed, predicate = case
    zone, near = zone_and_near
    moment = near + timedelta(milliseconds=offset)
    fire = CronTrigger(expression, zone).next_after(moment)
    assert fire is not None
    assert fire > moment
    # The oracle works on whole minutes: start it at the minute after moment.
    first_minute = moment.replace(second=0, microsecond=0) + MINUTE
    expected = oracle_fire_times(zone, predicate, fixed, first_minute, fire)
    assert expected
    assert expected[0] == fire


# --------------------------------------------------------------------------- validation

_FIXED_OFFSET = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CronTrigger(123), "must be a string"),  # type: ignore[arg-type]
        (lambda: CronTrigger("   "), "empty"),
        (lambda: CronTrigger("* * * *"), "has 4 fields"),
        (lambda: CronTrigger("0 0 0 * * * 2030"), "has 7 fields"),
        (lambda: CronTrigger("60 * * * *"), "invalid cron expression '60 \\* \\* \\* \\*'"),
        (lambda: CronTrigger("* 24 * * *"), "invalid cron expression"),
        (lambda: CronTrigger("0 0 0 * *"), "invalid cron expression"),
        (lambda: CronTrigger("0 0 * 13 *"), "invalid cron expression"),
        (lambda: CronTrigger("0 0 * * 8"), "invalid cron expression"),
        (lambda: CronTrigger("*/0 * * * *"), "invalid cron expression"),
        (lambda: CronTrigger("a b c d e"), "invalid cron expression"),
        (lambda: CronTrigger("0 0 * * 1#6"), "invalid cron expression"),
        (lambda: CronTrigger("0 0 31 2 *"), "can never fire"),
        (lambda: CronTrigger("0 0 30,31 2 *"), "can never fire"),
        (lambda: CronTrigger("0 0 31 4,6,9,11 *"), "can never fire"),
        (lambda: CronTrigger("0 0 0 31 2 *"), "can never fire"),
        (lambda: CronTrigger("0 0 15W * *"), "'W'"),
        (lambda: CronTrigger("H * * * *"), "hashed/random"),
        (lambda: CronTrigger("R 0 * * *"), "hashed/random"),
        (lambda: CronTrigger("@reboot"), "unknown cron nickname '@reboot'"),
        (lambda: CronTrigger("* * * * *", "Mars/Olympus_Mons"), "unknown time zone 'Mars/Olympus"),
        (lambda: CronTrigger("* * * * *", "europe/berlin"), "unknown time zone"),
        (lambda: CronTrigger("* * * * *", ""), "unknown time zone"),
        (lambda: CronTrigger("* * * * *", "../etc/passwd"), "unknown time zone"),
        (lambda: CronTrigger("* * * * *", 3), "IANA zone name"),  # type: ignore[arg-type]
        (lambda: CronTrigger("* * * * *", None), "IANA zone name"),  # type: ignore[arg-type]
        (lambda: CronTrigger("* * * * *", _FIXED_OFFSET), "fixed offset"),  # type: ignore[arg-type]
        (lambda: CronTrigger("* * * * *").next_after(datetime(2026, 1, 1)), "naive"),
        (lambda: CronTrigger("* * * * *").next_after("2026"), "aware datetime"),  # type: ignore[arg-type]
        (lambda: IntervalTrigger(0), "must be positive"),
        (lambda: IntervalTrigger(-5), "must be positive"),
        (lambda: IntervalTrigger(timedelta(0)), "must be positive"),
        (lambda: IntervalTrigger(float("nan")), "finite"),
        (lambda: IntervalTrigger(float("inf")), "finite"),
        (lambda: IntervalTrigger(True), "timedelta or a number"),
        (lambda: IntervalTrigger("60"), "timedelta or a number"),  # type: ignore[arg-type]
        (lambda: IntervalTrigger(60, datetime(2026, 1, 1)), "start is a naive datetime"),
        (lambda: IntervalTrigger(60, "2026-01-01"), "start must be an aware"),  # type: ignore[arg-type]
        (lambda: IntervalTrigger(60).next_after(datetime(2026, 1, 1)), "naive"),
    ],
)
def test_invalid_input_raises_a_clear_error(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message) as caught:
        make()
    assert isinstance(caught.value, AsyncJobsError)
    assert isinstance(caught.value, ValueError)


def test_zone_objects_are_stored_by_name() -> None:
    assert CronTrigger("* * * * *", ZoneInfo(BERLIN)).timezone == BERLIN
    assert CronTrigger("* * * * *", UTC).timezone == "UTC"  # type: ignore[arg-type]
    assert CronTrigger("* * * * *", ZoneInfo(BERLIN)) == CronTrigger("* * * * *", BERLIN)


def test_a_zone_read_from_a_file_is_refused() -> None:
    path = next((Path(p) / "UTC" for p in TZPATH if (Path(p) / "UTC").is_file()), None)
    if path is None:
        pytest.skip("no system tz database to read a zone file from")
    with path.open("rb") as file:
        zone = ZoneInfo.from_file(file)
    with pytest.raises(InvalidScheduleError, match="read from a file"):
        CronTrigger("* * * * *", zone)


# --------------------------------------------------------------------------- interval


def test_interval_without_start_is_anchored_at_the_epoch() -> None:
    trigger = IntervalTrigger(3600)
    assert trigger.every == timedelta(hours=1)
    assert trigger.next_after(utc(2026, 1, 1, 0, 30)) == utc(2026, 1, 1, 1)
    assert trigger.next_after(utc(2026, 1, 1, 1)) == utc(2026, 1, 1, 2)
    assert trigger.next_after(utc(1960, 1, 1)) == utc(1970, 1, 1)


def test_interval_with_start() -> None:
    start = datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo(BERLIN))  # 00:30 UTC
    trigger = IntervalTrigger(timedelta(minutes=45), start=start)
    assert trigger.start == utc(2026, 3, 29, 0, 30)
    assert trigger.start is not None
    assert trigger.start.tzinfo is UTC
    assert trigger.next_after(utc(2026, 1, 1)) == utc(2026, 3, 29, 0, 30)
    # Elapsed time, not wall time: the DST jump changes nothing.
    assert fires(trigger, utc(2026, 3, 29, 0, 30), 3) == [
        utc(2026, 3, 29, 1, 15),
        utc(2026, 3, 29, 2),
        utc(2026, 3, 29, 2, 45),
    ]


def test_interval_sub_second_and_float() -> None:
    trigger = IntervalTrigger(0.25)
    moment = utc(2026, 1, 1) + timedelta(microseconds=1)
    assert trigger.next_after(moment) == utc(2026, 1, 1) + timedelta(milliseconds=250)


@settings(max_examples=200, deadline=None)
@given(
    every=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400)),
    start=st.none() | _moments,
    moment=_moments,
)
def test_interval_invariants(every: timedelta, start: datetime | None, moment: datetime) -> None:
    trigger = IntervalTrigger(every, start)
    fire = trigger.next_after(moment)
    assert fire is not None
    assert fire > moment
    anchor = start or datetime(1970, 1, 1, tzinfo=UTC)
    assert (fire - anchor) % every == timedelta(0)
    assert fire - every <= moment or fire == anchor


def test_fire_times_between() -> None:
    trigger = CronTrigger("0 * * * *")
    assert trigger.fire_times_between(utc(2026, 1, 1), utc(2026, 1, 1, 3)) == [
        utc(2026, 1, 1, 1),
        utc(2026, 1, 1, 2),
        utc(2026, 1, 1, 3),
    ]
    assert trigger.fire_times_between(utc(2026, 1, 1), utc(2026, 1, 2), limit=2) == [
        utc(2026, 1, 1, 1),
        utc(2026, 1, 1, 2),
    ]
    assert trigger.fire_times_between(utc(2026, 1, 2), utc(2026, 1, 1)) == []
    assert IntervalTrigger(60).fire_times_between(utc(2026, 1, 1), utc(2026, 1, 1, 0, 2)) == [
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 0, 2),
    ]


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(
    ("trigger", "text"),
    [
        (
            CronTrigger("0 2 * * *", BERLIN),
            '{"expression":"0 2 * * *","timezone":"Europe/Berlin","type":"cron"}',
        ),
        (CronTrigger("@Daily"), '{"expression":"@daily","timezone":"UTC","type":"cron"}'),
        (IntervalTrigger(90), '{"every":90.0,"start":null,"type":"interval"}'),
        (
            IntervalTrigger(
                timedelta(milliseconds=1500),
                start=datetime(2026, 1, 1, 1, tzinfo=ZoneInfo(BERLIN)),
            ),
            '{"every":1.5,"start":"2026-01-01T00:00:00+00:00","type":"interval"}',
        ),
    ],
)
def test_json_is_canonical_and_round_trips(trigger: Trigger, text: str) -> None:
    assert trigger.to_json() == text
    assert trigger_from_json(text) == trigger
    assert trigger_from_json(text).to_json() == text


def test_equal_triggers_give_equal_text() -> None:
    pairs: list[tuple[Trigger, Trigger]] = [
        (CronTrigger("0  0 * * *"), CronTrigger("0 0 * * *")),
        (CronTrigger("@HOURLY", ZoneInfo(BERLIN)), CronTrigger("@hourly", BERLIN)),
        (IntervalTrigger(60), IntervalTrigger(timedelta(minutes=1))),
        (
            IntervalTrigger(5, datetime(2026, 1, 1, 1, tzinfo=ZoneInfo(BERLIN))),
            IntervalTrigger(5, utc(2026, 1, 1)),
        ),
    ]
    for first, second in pairs:
        assert first == second
        assert first.to_json() == second.to_json()
        assert hash(first) == hash(second)
    assert CronTrigger("0 0 * * *").to_json() != CronTrigger("0 0 * * *", BERLIN).to_json()


@settings(max_examples=200, deadline=None)
@given(
    every=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=36500)),
    start=st.none() | _moments,
)
def test_interval_json_round_trip(every: timedelta, start: datetime | None) -> None:
    trigger = IntervalTrigger(every, start)
    assert trigger_from_json(trigger.to_json()) == trigger


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"type": "weekly"}', "neither a cron trigger"),
        ('{"type": "cron", "expression": "* * * * *"}', "neither a cron trigger"),
        ('{"type": "cron", "expression": "* * * * *", "timezone": "UTC", "x": 1}', "neither"),
        ('{"type": "cron", "expression": "0 0 31 2 *", "timezone": "UTC"}', "can never fire"),
        ('{"type": "cron", "expression": "* * * * *", "timezone": "Nope/Nope"}', "time zone"),
        ('{"type": "interval", "every": -1, "start": null}', "must be positive"),
        ('{"type": "interval", "every": "60", "start": null}', "timedelta or a number"),
        ('{"type": "interval", "every": 60, "start": 5}', "start must be ISO text"),
        ('{"type": "interval", "every": 60, "start": "yesterday"}', "bad start"),
        ('{"type": "interval", "every": 60, "start": "2026-01-01T00:00:00"}', "naive"),
    ],
)
def test_bad_stored_trigger(text: str, message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message):
        trigger_from_json(text)


# --------------------------------------------------------------------------- misfires

HOURLY = CronTrigger("0 * * * *")


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return utc(2026, 1, 1, hour, minute, second)


# (policy, stored next fire, now, grace seconds, limit) -> (run, next fire, misfired)
MISFIRE_TABLE: list[
    tuple[str, datetime | None, datetime, float, int, tuple[datetime, ...], datetime | None, bool]
] = [
    # Nothing due.
    *((p, at(5), at(4, 30), 60, 100, (), at(5), False) for p in ("skip", "once", "all")),
    *((p, None, at(4, 30), 60, 100, (), None, False) for p in ("skip", "once", "all")),
    # On time (the grace bound is inclusive): runs whatever the policy.
    *((p, at(5), at(5), 60, 100, (at(5),), at(6), False) for p in ("skip", "once", "all")),
    *((p, at(5), at(5, 1), 60, 100, (at(5),), at(6), False) for p in ("skip", "once", "all")),
    # One fire time, late by more than the grace.
    ("skip", at(5), at(5, 1, 1), 60, 100, (), at(6), True),
    ("once", at(5), at(5, 1, 1), 60, 100, (at(5),), at(6), True),
    ("all", at(5), at(5, 1, 1), 60, 100, (at(5),), at(6), True),
    # An outage from before 01:00, back 30 s after 05:00: 05:00 is on time.
    ("skip", at(1), at(5, 0, 30), 60, 100, (at(5),), at(6), True),
    ("once", at(1), at(5, 0, 30), 60, 100, (at(5),), at(6), True),
    ("all", at(1), at(5, 0, 30), 60, 100, (at(1), at(2), at(3), at(4), at(5)), at(6), True),
    # Back ten minutes after 05:00: nothing is on time.
    ("skip", at(1), at(5, 10), 60, 100, (), at(6), True),
    ("once", at(1), at(5, 10), 60, 100, (at(1),), at(6), True),
    ("all", at(1), at(5, 10), 60, 100, (at(1), at(2), at(3), at(4), at(5)), at(6), True),
    # A grace wide enough makes late times on time.
    ("skip", at(1), at(5, 10), 4 * 3600, 100, (at(2), at(3), at(4), at(5)), at(6), True),
    ("skip", at(1), at(5, 10), 5 * 3600, 100, (at(1), at(2), at(3), at(4), at(5)), at(6), False),
    # The limit cuts a batch: next_fire is the first one left, still due.
    ("all", at(1), at(5, 10), 60, 2, (at(1), at(2)), at(3), True),
    ("all", at(3), at(5, 10), 60, 2, (at(3), at(4)), at(5), True),
    ("all", at(5), at(5, 10), 60, 2, (at(5),), at(6), True),
    ("skip", at(1), at(5, 10), 5 * 3600, 3, (at(1), at(2), at(3)), at(4), False),
    # Grace 0: only exactly-on-time runs count as on time.
    ("skip", at(5), at(5), 0, 100, (at(5),), at(6), False),
    ("skip", at(5), at(5, 0, 1), 0, 100, (), at(6), True),
]


@pytest.mark.parametrize(
    ("policy", "next_fire", "now", "grace", "limit", "run", "next_after", "misfired"),
    MISFIRE_TABLE,
)
def test_misfire_table(
    policy: str,
    next_fire: datetime | None,
    now: datetime,
    grace: float,
    limit: int,
    run: tuple[datetime, ...],
    next_after: datetime | None,
    misfired: bool,
) -> None:
    decision = misfire_fire_times(HOURLY, next_fire, now, policy=policy, grace=grace, limit=limit)
    assert decision == MisfireDecision(run=run, next_fire=next_after, misfired=misfired)


def test_misfire_all_drains_a_backlog_in_batches() -> None:
    now = at(10, 30)
    pending: datetime | None = at(1)
    batches = []
    while pending is not None and pending <= now:
        decision = misfire_fire_times(HOURLY, pending, now, policy="all", limit=4)
        batches.append(decision.run)
        pending = decision.next_fire
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [t for b in batches for t in b] == [at(h) for h in range(1, 11)]
    assert pending == at(11)


def test_misfire_after_a_long_outage_does_not_walk_every_missed_time() -> None:
    # A year of a per-second schedule; "skip" must jump, not iterate 31 million times.
    trigger = IntervalTrigger(1)
    now = utc(2027, 1, 1)
    decision = misfire_fire_times(trigger, utc(2026, 1, 1), now, policy="skip", grace=5)
    assert decision.run == tuple(now - timedelta(seconds=s) for s in range(5, -1, -1))
    assert decision.next_fire == now + timedelta(seconds=1)
    assert decision.misfired
    cron = CronTrigger("* * * * * *")
    decision = misfire_fire_times(cron, utc(2026, 1, 1), now, policy="once", grace=timedelta(0))
    assert decision.run == (now,)
    decision = misfire_fire_times(cron, utc(2026, 1, 1), now - MINUTE, policy="once", grace=0.5)
    assert decision.run == (now - MINUTE,)


def test_misfire_accepts_aware_times_in_any_zone() -> None:
    berlin = ZoneInfo(BERLIN)
    decision = misfire_fire_times(
        HOURLY, at(5).astimezone(berlin), at(5, 0, 10).astimezone(berlin), policy="skip"
    )
    assert decision.run == (at(5),)
    assert decision.next_fire == at(6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "later"}, "misfire policy must be one of all, once, skip, got 'later'"),
        ({"grace": -1}, "grace must not be negative"),
        ({"grace": float("nan")}, "grace must be a timedelta or a finite number"),
        ({"grace": "60"}, "grace must be a timedelta"),
        ({"limit": 0}, "limit must be a whole number >= 1"),
        ({"limit": 2.5}, "limit must be a whole number"),
    ],
)
def test_misfire_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message):
        misfire_fire_times(HOURLY, at(1), at(2), **kwargs)  # type: ignore[arg-type]


def test_misfire_rejects_naive_times() -> None:
    with pytest.raises(InvalidScheduleError, match="now is a naive datetime"):
        misfire_fire_times(HOURLY, at(1), datetime(2026, 1, 1))
    with pytest.raises(InvalidScheduleError, match="next_fire is a naive datetime"):
        misfire_fire_times(HOURLY, datetime(2026, 1, 1), at(1))
