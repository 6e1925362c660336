"""SQL every operation shares: column lists, the clock CTE, parameter limits, running a statement.

Each operation's own statements sit beside the code that runs it (``_enqueue.py``,
``_lifecycle.py``, ``_control.py`` ...). Two rules hold for all of them:

- Literal states in the WHERE clauses are deliberate: SQLite only uses a
  partial index when the query repeats the index's condition, and a bound
  parameter never matches it (the indexes are in ``_schema.py``).
- The statements that set a lease read the clock through ``asyncjobs_now()``,
  a function of the writer connection, in a materialized CTE (:data:`NOW_CTE`):
  SQLite calls it once per statement, after it has taken the write lock, so a
  statement that waited for the lock still hands out a whole lease.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

__all__ = [
    "JOB_COLUMNS",
    "JOB_WIDTH",
    "MAX_PARAMS",
    "NOW_CTE",
    "SCHEDULE_COLUMNS",
    "Row",
    "all_rows",
    "chunked",
    "first_row",
    "job_filters",
    "marks",
    "rows_of",
]

_T = TypeVar("_T")

#: One row as sqlite3 returns it.
Row = tuple[Any, ...]

#: A job row, in the order ``_codec.to_job`` reads it.
JOB_COLUMNS: Final = (
    "id, name, queue, payload, state, due_at, enqueued_at, priority, attempts,"
    " max_attempts, timeout, key, schedule, lease_token, lease_expires_at, worker_id,"
    " started_at, finished_at, result, error_type, error_message, error_traceback,"
    " progress, progress_message, cancel_requested, fire_at, partition, tags, waits_for,"
    " parked_due_at"
)
#: How many columns :data:`JOB_COLUMNS` names: a statement's extra columns start there.
JOB_WIDTH: Final = JOB_COLUMNS.count(",") + 1
#: A schedule row, in the order ``_codec.to_schedule`` reads it.
SCHEDULE_COLUMNS: Final = (
    "name, job_name, queue, trigger, payload, next_fire_at, last_fire_at, misfire, grace,"
    " overlap, paused, priority, max_attempts, timeout"
)

#: ``now``, read once per statement after the write lock is held (see above).
NOW_CTE: Final = "t(now) AS MATERIALIZED (SELECT asyncjobs_now())"

#: Bound parameters per statement: the smallest limit any SQLite build may have
#: (999; 32766 is the default since 3.32, but builds can lower it).
MAX_PARAMS: Final = 999


def chunked(items: Sequence[_T], per_item: int = 1) -> Iterable[Sequence[_T]]:
    """Split *items* so a statement binding *per_item* parameters each stays in bounds."""
    size = (MAX_PARAMS - 1) // per_item
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(count: int) -> str:
    """``?, ?, ...``: *count* parameter marks."""
    return ", ".join("?" * count)


def rows_of(width: int, count: int) -> str:
    """``(?, ?), (?, ?), ...``: *count* VALUES rows of *width* parameters."""
    one = f"({marks(width)})"
    return ", ".join([one] * count)


# A job carries a tag: its key and value are in the job's JSON object. json_each
# takes any key as it is (a JSON path would need quoting rules for keys with dots).
_TAG_CLAUSE: Final = (
    "EXISTS (SELECT 1 FROM json_each(asyncjobs_jobs.tags) AS tag"
    " WHERE tag.key = ? AND tag.type = 'text' AND tag.value = ?)"
)


def job_filters(
    tags: Mapping[str, str] | None = None, **columns: str | None
) -> tuple[list[str], list[Any]]:
    """WHERE clauses (and their parameters) for jobs matching every given filter.

    *columns* are equality filters on job columns (``None``: not filtered);
    *tags* matches jobs carrying every given tag.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in columns.items():
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if tags:
        clauses.append("tags IS NOT NULL")
        for key, value in tags.items():
            clauses.append(_TAG_CLAUSE)
            params += (key, value)
    return clauses, params


def all_rows(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
    """Run one statement on the writer and read every row before it ends."""
    return conn.execute(sql, parameters).fetchall()


def first_row(conn: sqlite3.Connection, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
    """Run one statement on the writer; its first row, or ``None``."""
    rows = all_rows(conn, sql, parameters)
    return rows[0] if rows else None
