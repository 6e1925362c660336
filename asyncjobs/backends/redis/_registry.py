"""What operating tools read besides jobs: the live WORKERS, and the audit trail.

Both hold records the runtime encodes and the store never reads. A worker is a
hash field (its data) and a sorted-set member (by ``last_seen``), written
together by one script; the audit trail is one sorted set by time.
"""

from __future__ import annotations

from typing import cast

from ..._models import AuditRecord, WorkerRecord
from ._codec import num
from ._connection import Connection
from ._prelude import script

__all__ = [
    "SCRIPTS",
    "list_audit",
    "list_workers",
    "prune_audit",
    "record_audit",
    "register_worker",
    "remove_worker",
]

# An audit member: the counter, zero-padded so that entries of one time sort in the
# order they were recorded, then the entry's data.
_AUDIT_SEQ_DIGITS = 16

# ARGV: id, last_seen, data; last_seen '' removes the worker.
PUT_WORKER = script(
    "put_worker",
    """
if ARGV[6] == '' then
  redis.call('HDEL', WORKERS, ARGV[5])
  redis.call('ZREM', WORKERS_SEEN, ARGV[5])
else
  redis.call('HSET', WORKERS, ARGV[5], ARGV[7])
  redis.call('ZADD', WORKERS_SEEN, ARGV[6], ARGV[5])
end
return 1
""",
)

# ARGV: seen_since. Deletes the workers last seen before it; returns the others as
# flat (id, last_seen, data) triples.
LIST_WORKERS = script(
    "list_workers",
    """
local gone = redis.call('ZRANGEBYSCORE', WORKERS_SEEN, '-inf', '(' .. ARGV[5])
if #gone > 0 then
  redis.call('ZREM', WORKERS_SEEN, unpack(gone))
  redis.call('HDEL', WORKERS, unpack(gone))
end
local alive = redis.call('ZRANGEBYSCORE', WORKERS_SEEN, ARGV[5], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #alive, 2 do
  local data = redis.call('HGET', WORKERS, alive[i])
  if data then add(out, alive[i], alive[i + 1], data) end
end
return out
""",
)

# ARGV: at, data.
RECORD_AUDIT = script(
    "record_audit",
    """
local n = redis.call('INCR', AUDIT_SEQ)
redis.call('ZADD', AUDIT, ARGV[5], string.format('%0__DIGITS__d', n) .. ARGV[6])
return 1
""".replace("__DIGITS__", str(_AUDIT_SEQ_DIGITS)),
)

SCRIPTS = (PUT_WORKER, LIST_WORKERS, RECORD_AUDIT)


async def register_worker(conn: Connection, record: WorkerRecord) -> None:
    """Insert or replace the record of ``record.id``."""
    await conn.run(PUT_WORKER, [record.id, num(record.last_seen), record.data])


async def remove_worker(conn: Connection, worker_id: str) -> None:
    """Delete a worker's record; unknown ids are ignored."""
    await conn.run(PUT_WORKER, [worker_id, "", ""])


async def list_workers(conn: Connection, seen_since: float) -> list[WorkerRecord]:
    """Return the records last seen at or after *seen_since*, ordered by id; delete the others."""
    flat = await conn.run(LIST_WORKERS, [num(seen_since)])
    records = [
        WorkerRecord(id=flat[i].decode(), last_seen=float(flat[i + 1]), data=flat[i + 2])
        for i in range(0, len(flat), 3)
    ]
    records.sort(key=lambda record: record.id)
    return records


async def record_audit(conn: Connection, record: AuditRecord) -> None:
    """Store one audit entry."""
    await conn.run(RECORD_AUDIT, [num(record.at), record.data])


async def list_audit(conn: Connection, limit: int, before: float | None) -> list[AuditRecord]:
    """Return up to *limit* entries, newest first (those before *before*, when given)."""
    if limit <= 0:
        return []
    client = conn.require_client()
    top = "+inf" if before is None else "(" + num(before)
    with conn.failures():
        rows = cast(
            "list[tuple[bytes, float]]",
            await client.zrevrangebyscore(
                conn.keys.audit, top, "-inf", start=0, num=limit, withscores=True
            ),
        )
    return [AuditRecord(at=at, data=member[_AUDIT_SEQ_DIGITS:]) for member, at in rows]


async def prune_audit(conn: Connection, before: float) -> int:
    """Delete the entries recorded before *before*; return how many."""
    client = conn.require_client()
    with conn.failures():
        return int(await client.zremrangebyscore(conn.keys.audit, "-inf", "(" + num(before)))
