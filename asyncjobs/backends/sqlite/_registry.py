"""Live runtimes and operator actions (the ``WorkerRegistry`` and ``AuditTrail`` groups).

Both keep opaque records, encoded by the runtime: ``asyncjobs_workers`` one
row per worker id, ``asyncjobs_audit`` one row per entry (its ``seq`` keeps
entries of one time in the order they came). Listing the workers reads the
read connection; only when it finds aged-out ones does it write, to delete them.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..._models import AuditRecord, WorkerRecord
from ._database import Database
from ._writer import Tx

__all__ = [
    "list_audit",
    "list_workers",
    "prune_audit",
    "record_audit",
    "register_worker",
    "remove_worker",
]

_REGISTER_SQL: Final = """
    INSERT INTO asyncjobs_workers (id, last_seen, data) VALUES (?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, data = excluded.data
"""


async def register_worker(db: Database, record: WorkerRecord) -> None:
    """Insert or replace the record of ``record.id``."""

    def body(conn: sqlite3.Connection, tx: Tx) -> None:
        conn.execute(_REGISTER_SQL, (record.id, record.last_seen, record.data))

    # The runtime's refresh loop: it waits for the lock as its other loops do.
    await db.write("register_worker", body, single=True)


async def remove_worker(db: Database, worker_id: str) -> None:
    """Delete a worker's record; an unknown id is ignored."""

    def body(conn: sqlite3.Connection, tx: Tx) -> None:
        conn.execute("DELETE FROM asyncjobs_workers WHERE id = ?", (worker_id,))

    await db.write("remove_worker", body, bounded=True, single=True)


async def list_workers(db: Database, seen_since: float) -> list[WorkerRecord]:
    """The records last seen at or after *seen_since*, by id; older ones are deleted."""
    rows = await db.read(
        "list_workers", "SELECT id, last_seen, data FROM asyncjobs_workers ORDER BY id"
    )
    if any(last_seen < seen_since for _, last_seen, _ in rows):

        def body(conn: sqlite3.Connection, tx: Tx) -> None:
            conn.execute("DELETE FROM asyncjobs_workers WHERE last_seen < ?", (seen_since,))

        await db.write("list_workers", body, bounded=True, single=True)
    return [
        WorkerRecord(id=worker_id, last_seen=last_seen, data=data)
        for worker_id, last_seen, data in rows
        if last_seen >= seen_since
    ]


async def record_audit(db: Database, record: AuditRecord) -> None:
    """Store one audit entry."""

    def body(conn: sqlite3.Connection, tx: Tx) -> None:
        conn.execute(
            "INSERT INTO asyncjobs_audit (at, data) VALUES (?, ?)", (record.at, record.data)
        )

    await db.write("record_audit", body, bounded=True, single=True)


async def list_audit(
    db: Database, limit: int = 100, before: float | None = None
) -> list[AuditRecord]:
    """Up to *limit* entries, newest first (those recorded before *before*, when given)."""
    where, parameters = (
        ("", [max(0, limit)]) if before is None else (" WHERE at < ?", [before, max(0, limit)])
    )
    rows = await db.read(
        "list_audit",
        f"SELECT at, data FROM asyncjobs_audit{where} ORDER BY at DESC, seq DESC LIMIT ?",
        parameters,
    )
    return [AuditRecord(at=at, data=data) for at, data in rows]


async def prune_audit(db: Database, before: float) -> int:
    """Delete the entries recorded before *before*; return how many."""

    def body(conn: sqlite3.Connection, tx: Tx) -> int:
        return conn.execute("DELETE FROM asyncjobs_audit WHERE at < ?", (before,)).rowcount

    return await db.write("prune_audit", body, single=True)
