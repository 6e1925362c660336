"""What operating tools keep in the store: the live workers' records and the audit trail.

Both are opaque bytes the runtime encodes; the store orders and ages them.
"""

from __future__ import annotations

from ..._models import AuditRecord, WorkerRecord
from ._database import Database

__all__ = [
    "Statements",
    "list_audit",
    "list_workers",
    "prune_audit",
    "record_audit",
    "register_worker",
    "remove_worker",
]


class Statements:
    """The workers' and audit statements of one schema."""

    def __init__(self, q: str) -> None:
        self.register = (
            f"INSERT INTO {q}.workers (id, last_seen, data) VALUES ($1, $2, $3)"
            " ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, data = excluded.data"
        )
        self.remove = f"DELETE FROM {q}.workers WHERE id = $1"
        # Records not seen since are dead workers: deleted in the same statement.
        self.list = f"""
            WITH d AS (DELETE FROM {q}.workers WHERE last_seen < $1)
            SELECT id, last_seen, data FROM {q}.workers WHERE last_seen >= $1 ORDER BY id
        """
        self.record = f"INSERT INTO {q}.audit (at, data) VALUES ($1, $2)"
        self.audit = f"""
            SELECT at, data FROM {q}.audit WHERE ($2::float8 IS NULL OR at < $2)
            ORDER BY at DESC, seq DESC LIMIT $1
        """
        self.prune = f"DELETE FROM {q}.audit WHERE at < $1"


async def register_worker(db: Database, record: WorkerRecord) -> None:
    """Insert or replace the record of ``record.id``."""
    await db.execute(
        "register_worker",
        db.statements.operators.register,
        record.id,
        record.last_seen,
        record.data,
    )


async def remove_worker(db: Database, worker_id: str) -> None:
    """Delete a worker's record; unknown ids are ignored."""
    await db.execute("remove_worker", db.statements.operators.remove, worker_id)


async def list_workers(db: Database, seen_since: float) -> list[WorkerRecord]:
    """Return the records seen at or after *seen_since*, by id (deleting the older ones)."""
    rows = await db.fetch("list_workers", db.statements.operators.list, seen_since)
    return [
        WorkerRecord(id=row["id"], last_seen=row["last_seen"], data=row["data"]) for row in rows
    ]


async def record_audit(db: Database, record: AuditRecord) -> None:
    """Store one entry."""
    await db.execute("record_audit", db.statements.operators.record, record.at, record.data)


async def list_audit(db: Database, limit: int, before: float | None) -> list[AuditRecord]:
    """Return up to *limit* entries, newest first."""
    rows = await db.fetch("list_audit", db.statements.operators.audit, max(0, limit), before)
    return [AuditRecord(at=row["at"], data=row["data"]) for row in rows]


async def prune_audit(db: Database, before: float) -> int:
    """Delete the entries recorded before *before*; return how many."""
    status = await db.execute("prune_audit", db.statements.operators.prune, before)
    return int(status.rsplit(" ", 1)[1])
