"""Stored schedules, and the compare-and-set that makes each tick fire once.

:func:`fire_schedule` checks the schedule's ``next_fire_at``, moves it on and
enqueues the tick's jobs (with the usual dedup) in one write transaction, so
however many runtimes share the file, one of them fires a tick.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import attrs

from ..._models import Job, NewJob, Schedule
from ._codec import schedule_row, to_schedule
from ._database import Database
from ._enqueue import insert_jobs
from ._statements import SCHEDULE_COLUMNS, all_rows, first_row, marks
from ._wakeups import Wakeups
from ._writer import Tx

__all__ = [
    "fire_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "put_schedule",
    "remove_schedule",
]


async def put_schedule(db: Database, schedule: Schedule) -> Schedule:
    """Insert or replace a schedule; an unchanged trigger keeps its timing and pause."""

    def body(conn: sqlite3.Connection, tx: Tx) -> Schedule:
        row = first_row(
            conn,
            "SELECT trigger, next_fire_at, last_fire_at, paused FROM asyncjobs_schedules"
            " WHERE name = ?",
            (schedule.name,),
        )
        stored = schedule
        if row is not None and row[0] == schedule.trigger:
            stored = attrs.evolve(
                schedule, next_fire_at=row[1], last_fire_at=row[2], paused=bool(row[3])
            )
        conn.execute(
            f"INSERT OR REPLACE INTO asyncjobs_schedules ({SCHEDULE_COLUMNS}) VALUES ({marks(14)})",
            schedule_row(stored),
        )
        return stored

    return await db.write("put_schedule", body, bounded=True)


async def get_schedule(db: Database, name: str) -> Schedule | None:
    """Return one schedule, or ``None``."""
    rows = await db.read(
        "get_schedule",
        f"SELECT {SCHEDULE_COLUMNS} FROM asyncjobs_schedules WHERE name = ?",
        (name,),
    )
    return to_schedule(rows[0]) if rows else None


async def list_schedules(db: Database) -> list[Schedule]:
    """Return every schedule, ordered by name."""
    rows = await db.read(
        "list_schedules", f"SELECT {SCHEDULE_COLUMNS} FROM asyncjobs_schedules ORDER BY name"
    )
    return [to_schedule(row) for row in rows]


async def remove_schedule(db: Database, name: str) -> bool:
    """Delete a schedule; ``False`` when there was none."""

    def body(conn: sqlite3.Connection, tx: Tx) -> bool:
        return bool(
            all_rows(
                conn,
                "DELETE FROM asyncjobs_schedules WHERE name = ? RETURNING name",
                (name,),
            )
        )

    return await db.write("remove_schedule", body, bounded=True, single=True)


async def pause_schedule(db: Database, name: str, paused: bool) -> Schedule | None:
    """Pause or resume a schedule; ``None`` when there is none."""

    def body(conn: sqlite3.Connection, tx: Tx) -> Schedule | None:
        row = first_row(
            conn,
            "UPDATE asyncjobs_schedules SET paused = ? WHERE name = ?"
            f" RETURNING {SCHEDULE_COLUMNS}",
            (int(paused), name),
        )
        return None if row is None else to_schedule(row)

    return await db.write("pause_schedule", body, bounded=True, single=True)


async def fire_schedule(
    db: Database,
    wakeups: Wakeups,
    name: str,
    expected_fire_at: float,
    next_fire_at: float | None,
    jobs: Sequence[NewJob],
) -> list[Job] | None:
    """Fire one tick: compare-and-set the schedule and enqueue *jobs* atomically."""

    def body(conn: sqlite3.Connection, tx: Tx) -> list[Job] | None:
        row = first_row(
            conn,
            "SELECT next_fire_at, paused FROM asyncjobs_schedules WHERE name = ?",
            (name,),
        )
        if row is None or row[1] or row[0] != expected_fire_at:
            return None
        conn.execute(
            "UPDATE asyncjobs_schedules SET next_fire_at = ?, last_fire_at = ? WHERE name = ?",
            (next_fire_at, expected_fire_at, name),
        )
        return insert_jobs(conn, jobs, tx.now)

    fired = await db.write("fire_schedule", body)
    if fired:
        wakeups.notify()
    return fired
