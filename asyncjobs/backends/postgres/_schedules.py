"""Stored schedules, and the compare-and-set that makes each tick fire once.

:func:`fire_schedule` moves the schedule's ``next_fire_at`` on with an
``UPDATE ... WHERE next_fire_at = expected`` and enqueues the tick's jobs in
the same transaction. The row lock makes racing runtimes take turns: the one
that comes second finds ``next_fire_at`` moved and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..._models import Job, NewJob, Schedule
from ._codec import SCHEDULE_COLUMNS, schedule_args, to_schedule
from ._database import Database
from ._enqueue import insert_jobs

__all__ = [
    "Statements",
    "fire_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "put_schedule",
    "remove_schedule",
]


class Statements:
    """The schedule statements of one schema."""

    def __init__(self, q: str) -> None:
        values = ", ".join(f"${i}" for i in range(1, 15))
        kept = "CASE WHEN s.trigger = excluded.trigger THEN s.{0} ELSE excluded.{0} END"
        updates = ", ".join(
            f"{column} = {kept.format(column)}"
            if column in ("next_fire_at", "last_fire_at", "paused")
            else f"{column} = excluded.{column}"
            for column in (c.strip() for c in SCHEDULE_COLUMNS.split(","))
            if column != "name"
        )
        self.put = (
            f"INSERT INTO {q}.schedules AS s ({SCHEDULE_COLUMNS}) VALUES ({values})"
            f" ON CONFLICT (name) DO UPDATE SET {updates} RETURNING {SCHEDULE_COLUMNS}"
        )
        self.get = f"SELECT {SCHEDULE_COLUMNS} FROM {q}.schedules WHERE name = $1"
        self.list = f"SELECT {SCHEDULE_COLUMNS} FROM {q}.schedules ORDER BY name"
        self.remove = f"DELETE FROM {q}.schedules WHERE name = $1"
        self.pause = (
            f"UPDATE {q}.schedules SET paused = $2 WHERE name = $1 RETURNING {SCHEDULE_COLUMNS}"
        )
        self.fire = (
            f"UPDATE {q}.schedules SET next_fire_at = $3, last_fire_at = $2"
            " WHERE name = $1 AND NOT paused AND next_fire_at = $2 RETURNING name"
        )


async def put_schedule(db: Database, schedule: Schedule) -> Schedule:
    """Insert or replace a schedule; an unchanged trigger keeps its timing and pause."""
    row = await db.fetchrow("put_schedule", db.statements.schedules.put, *schedule_args(schedule))
    assert row is not None
    return to_schedule(row)


async def get_schedule(db: Database, name: str) -> Schedule | None:
    """Return one schedule, or ``None``."""
    row = await db.fetchrow("get_schedule", db.statements.schedules.get, name)
    return None if row is None else to_schedule(row)


async def list_schedules(db: Database) -> list[Schedule]:
    """Return every schedule, ordered by name."""
    return [
        to_schedule(row) for row in await db.fetch("list_schedules", db.statements.schedules.list)
    ]


async def remove_schedule(db: Database, name: str) -> bool:
    """Delete a schedule; ``False`` when there was none."""
    status = await db.execute("remove_schedule", db.statements.schedules.remove, name)
    return status != "DELETE 0"


async def pause_schedule(db: Database, name: str, paused: bool) -> Schedule | None:
    """Pause or resume a schedule; ``None`` when there is none."""
    row = await db.fetchrow("pause_schedule", db.statements.schedules.pause, name, paused)
    return None if row is None else to_schedule(row)


async def fire_schedule(
    db: Database,
    name: str,
    expected_fire_at: float,
    next_fire_at: float | None,
    jobs: Sequence[NewJob],
) -> list[Job] | None:
    """Fire one tick: compare-and-set the schedule and enqueue *jobs* atomically."""
    async with db.transaction("fire_schedule") as conn:
        fired = await conn.fetchrow(
            db.statements.schedules.fire, name, expected_fire_at, next_fire_at
        )
        if fired is None:
            return None
        return await insert_jobs(conn, db, jobs)
