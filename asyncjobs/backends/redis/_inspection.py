"""Reads for the console, the CLI and tools: one job, a filtered page, counts per queue.

Never on the hot path; a filtered listing scans the enqueue index on the
server in bounded chunks.
"""

from __future__ import annotations

from typing import cast

from ..._models import Job, JobState, QueueStats
from ._codec import JOB_FIELDS, decode_job
from ._connection import Connection
from ._prelude import script

__all__ = ["SCRIPTS", "get_job", "list_jobs", "queue_stats"]

# Bounds on the work one script call does, so no call blocks the server for long.
_LIST_CHUNK = 2_000


async def get_job(conn: Connection, job_id: str) -> Job | None:
    """Return one job, or ``None`` when it does not exist (or has expired)."""
    client = conn.require_client()
    with conn.failures():
        values = cast("list[bytes | None]", await client.hmget(conn.keys.job(job_id), JOB_FIELDS))
    return None if values[0] is None else decode_job(values)


# ARGV: first rank, how many, filter flags (q s n c), queue, state, name, schedule.
# Returns {number scanned, matching ids}, newest first.
LIST_SCAN = script(
    "list_scan",
    """
local start, count, flags = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local ids = redis.call('ZREVRANGE', JOBS, start, start + count - 1)
local out = {}
local fq, fs, fn, fc = has(flags, 'q'), has(flags, 's'), has(flags, 'n'), has(flags, 'c')
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', job_key(id), 'queue', 'state', 'name', 'schedule')
  if f[1] and (not fq or f[1] == ARGV[8]) and (not fs or f[2] == ARGV[9])
      and (not fn or f[3] == ARGV[10]) and (not fc or f[4] == ARGV[11]) then
    out[#out + 1] = id
  end
end
return {#ids, out}
""",
)


async def list_jobs(
    conn: Connection,
    *,
    queue: str | None,
    state: JobState | None,
    name: str | None,
    schedule: str | None,
    limit: int,
    offset: int,
) -> list[Job]:
    """Return a page of jobs matching every given filter, newest enqueued first.

    Filtering scans the enqueue index in chunks on the server; a page of an
    unfiltered listing costs two round trips.
    """
    client = conn.require_client()
    if limit <= 0:
        return []
    offset = max(0, offset)
    flags = (
        ("q" if queue is not None else "")
        + ("s" if state is not None else "")
        + ("n" if name is not None else "")
        + ("c" if schedule is not None else "")
    )
    if not flags:
        # decode_responses=False: members come back as bytes.
        with conn.failures():
            raw_ids = cast(
                "list[bytes]",
                await client.zrevrange(conn.keys.jobs, offset, offset + limit - 1),
            )
        ids = [item.decode() for item in raw_ids]
    else:
        matches: list[str] = []
        rank = 0
        while len(matches) < offset + limit:
            scanned, found = await conn.run(
                LIST_SCAN,
                [
                    str(rank),
                    str(_LIST_CHUNK),
                    flags,
                    queue or "",
                    "" if state is None else JobState(state).value,
                    name or "",
                    schedule or "",
                ],
            )
            matches += [item.decode() for item in found]
            if scanned < _LIST_CHUNK:
                break
            rank += _LIST_CHUNK
        ids = matches[offset : offset + limit]
    if not ids:
        return []
    with conn.failures():
        async with client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(conn.keys.job(job_id), JOB_FIELDS)
            rows = await pipe.execute()
    # A job can expire or be pruned between the two steps: leave it out.
    return [decode_job(values) for values in rows if values[0] is not None]


# Returns flat groups of (queue, paused, queued, running, complete, dead, cancelled).
QUEUE_STATS = script(
    "queue_stats",
    """
sweep(__SWEEP_LIMIT__)
local out = {}
for _, queue in ipairs(redis.call('SUNION', QUEUES, PAUSED)) do
  local paused = redis.call('SISMEMBER', PAUSED, queue)
  local c = {
    redis.call('ZCARD', qkey(queue, 'ready')) + redis.call('ZCARD', qkey(queue, 'delayed')),
    redis.call('ZCARD', qkey(queue, 'running')),
    redis.call('ZCARD', qkey(queue, 'complete')),
    redis.call('ZCARD', qkey(queue, 'dead')),
    redis.call('ZCARD', qkey(queue, 'cancelled')),
  }
  if paused == 1 or c[1] + c[2] + c[3] + c[4] + c[5] > 0 then
    add(out, queue, paused, c[1], c[2], c[3], c[4], c[5])
  end
end
return out
""",
    "sweep",
)

_STATS_STATES = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.COMPLETE,
    JobState.DEAD,
    JobState.CANCELLED,
)


async def queue_stats(conn: Connection) -> list[QueueStats]:
    """Return job counts by state for every queue that has jobs or is paused."""
    flat = await conn.run(QUEUE_STATS, [])
    stats: list[QueueStats] = []
    for i in range(0, len(flat), 7):
        counts = {
            state: int(count)
            for state, count in zip(_STATS_STATES, flat[i + 2 : i + 7], strict=True)
        }
        stats.append(
            QueueStats(
                queue=flat[i].decode(),
                counts={state: count for state, count in counts.items() if count},
                paused=bool(flat[i + 1]),
            )
        )
    stats.sort(key=lambda item: item.queue)
    return stats


SCRIPTS = (LIST_SCAN, QUEUE_STATS)
