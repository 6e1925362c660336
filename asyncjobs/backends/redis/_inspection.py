"""Reads for the console, the CLI and tools: one job and its attempts, a filtered page,
counts per queue.

Never on the hot path; a filtered listing scans the enqueue index on the
server in bounded chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

from ..._models import Attempt, Job, JobState, QueueStats
from ._codec import JOB_FIELDS, decode_attempt, decode_job, filter_args
from ._connection import Connection
from ._prelude import script

__all__ = ["SCRIPTS", "get_attempts", "get_job", "list_jobs", "queue_stats"]

# Bounds on the work one script call does, so no call blocks the server for long.
_LIST_CHUNK = 2_000


async def get_job(conn: Connection, job_id: str) -> Job | None:
    """Return one job, or ``None`` when it does not exist (or has expired)."""
    client = conn.require_client()
    with conn.failures():
        values = cast("list[bytes | None]", await client.hmget(conn.keys.job(job_id), JOB_FIELDS))
    return None if values[0] is None else decode_job(values)


async def get_attempts(conn: Connection, job_id: str) -> list[Attempt]:
    """Return a job's attempt history, oldest first (empty for an unknown job)."""
    client = conn.require_client()
    with conn.failures():
        entries = cast("list[bytes]", await client.lrange(conn.keys.attempts(job_id), 0, -1))
    return [decode_attempt(entry) for entry in entries]


# ARGV: the highest seq to look at (ZREVRANGEBYSCORE's max: '+inf', '(' + the last
# one scanned, or '#' + a cursor job's id: below its seq), how many, then a filter
# (see read_filter). Returns {number scanned, last seq scanned, matching ids}, newest
# first; {-1} when the cursor job does not exist.
LIST_SCAN = script(
    "list_scan",
    """
local below = ARGV[5]
if string.byte(below, 1) == 35 then
  local seq = redis.call('HGET', job_key(string.sub(below, 2)), 'seq')
  if not seq then return {-1} end
  below = '(' .. seq
end
local ids = redis.call('ZREVRANGEBYSCORE', JOBS, below, '-inf', 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[6]))
local flt = read_filter(7)
local out = {}
for i = 1, #ids, 2 do
  if job_matches(flt, redis.call('HMGET', job_key(ids[i]), unpack(FILTER_FIELDS))) then
    out[#out + 1] = ids[i]
  end
end
local last = ''
if #ids > 0 then last = ids[#ids] end
return {#ids / 2, last, out}
""",
    "filter",
)


async def list_jobs(
    conn: Connection,
    *,
    queue: str | None,
    state: JobState | None,
    name: str | None,
    schedule: str | None,
    partition: str | None,
    tags: Mapping[str, str] | None,
    enqueued_after: float | None,
    enqueued_before: float | None,
    limit: int,
    offset: int,
    after: str | None,
) -> list[Job]:
    """Return a page of jobs matching every given filter, newest enqueued first.

    Filtering (or a cursor) scans the enqueue index in chunks on the server; a
    page of an unfiltered listing costs two round trips.
    """
    client = conn.require_client()
    if limit <= 0:
        return []
    offset = max(0, offset)
    flt = filter_args(
        queue=queue,
        state=state,
        name=name,
        schedule=schedule,
        partition=partition,
        enqueued_after=enqueued_after,
        enqueued_before=enqueued_before,
        tags=tags,
    )
    if flt == [""] and after is None:
        # decode_responses=False: members come back as bytes.
        with conn.failures():
            raw_ids = cast(
                "list[bytes]",
                await client.zrevrange(conn.keys.jobs, offset, offset + limit - 1),
            )
        ids = [item.decode() for item in raw_ids]
    else:
        matches: list[str] = []
        below = "+inf" if after is None else "#" + after
        # Unfiltered (a cursor only), every job scanned is one of the page.
        chunk = _LIST_CHUNK if flt != [""] else offset + limit
        while len(matches) < offset + limit:
            reply = await conn.run(LIST_SCAN, [below, str(chunk), *flt])
            if reply[0] == -1:
                return []  # the cursor's job is gone
            scanned, last, found = reply
            matches += [item.decode() for item in found]
            if scanned < chunk:
                break
            below = "(" + last.decode()
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


# Returns flat groups of (queue, paused, queued, running, complete, dead, cancelled,
# claimed, delayed). Claimed: running jobs without started_at (a scan of the
# running set); delayed: queued jobs due later than now (waiting ones included).
QUEUE_STATS = script(
    "queue_stats",
    """
sweep(__SWEEP_LIMIT__)
local out = {}
for _, queue in ipairs(redis.call('SUNION', QUEUES, PAUSED)) do
  local paused = redis.call('SISMEMBER', PAUSED, queue)
  local c = {
    redis.call('ZCARD', qkey(queue, 'ready')) + redis.call('ZCARD', qkey(queue, 'delayed'))
      + redis.call('ZCARD', qkey(queue, 'waiting')),
    redis.call('ZCARD', qkey(queue, 'running')),
    redis.call('ZCARD', qkey(queue, 'complete')),
    redis.call('ZCARD', qkey(queue, 'dead')),
    redis.call('ZCARD', qkey(queue, 'cancelled')),
  }
  if paused == 1 or c[1] + c[2] + c[3] + c[4] + c[5] > 0 then
    local claimed = 0
    if c[2] > 0 then
      for _, id in ipairs(redis.call('ZRANGE', qkey(queue, 'running'), 0, -1)) do
        if redis.call('HEXISTS', job_key(id), 'started_at') == 0 then claimed = claimed + 1 end
      end
    end
    local delayed = redis.call('ZCOUNT', qkey(queue, 'delayed'), '(' .. NOW_S, '+inf')
      + redis.call('ZCOUNT', qkey(queue, 'waiting'), '(' .. NOW_S, '+inf')
    add(out, queue, paused, c[1], c[2], c[3], c[4], c[5], claimed, delayed)
  end
end
return out
""",
    "sweep",
)

# ARGV: the lowest seq (ZRANGEBYSCORE's min: '-inf', then '(' + the last one), how
# many, partition. Counts the partition's jobs among
# the next ones in enqueue order (sweeping first). Returns {number scanned, last seq
# scanned, paused queues, flat groups as QUEUE_STATS's without paused}.
QUEUE_STATS_SCAN = script(
    "queue_stats_scan",
    """
sweep(__SWEEP_LIMIT__)
local ids = redis.call('ZRANGEBYSCORE', JOBS, ARGV[5], '+inf', 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[6]))
local slot = {queued = 1, running = 2, complete = 3, dead = 4, cancelled = 5}
local per_queue, order = {}, {}
for i = 1, #ids, 2 do
  local f = redis.call('HMGET', job_key(ids[i]), 'queue', 'state', 'partition', 'started_at',
                       'due_at')
  if f[1] and f[3] == ARGV[7] and slot[f[2]] then
    local c = per_queue[f[1]]
    if not c then
      c = {0, 0, 0, 0, 0, 0, 0}
      per_queue[f[1]] = c
      order[#order + 1] = f[1]
    end
    c[slot[f[2]]] = c[slot[f[2]]] + 1
    if f[2] == 'running' and not f[4] then c[6] = c[6] + 1 end
    if f[2] == 'queued' and tonumber(f[5]) > NOW then c[7] = c[7] + 1 end
  end
end
local out = {}
for _, queue in ipairs(order) do
  local c = per_queue[queue]
  add(out, queue, c[1], c[2], c[3], c[4], c[5], c[6], c[7])
end
local last = ''
if #ids > 0 then last = ids[#ids] end
return {#ids / 2, last, redis.call('SMEMBERS', PAUSED), out}
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


def _stats(queue: str, paused: bool, values: Sequence[int]) -> QueueStats:
    """One queue's stats from its counts: the five states in order, claimed, delayed."""
    counts = {state: int(count) for state, count in zip(_STATS_STATES, values[:5], strict=True)}
    return QueueStats(
        queue=queue,
        counts={state: count for state, count in counts.items() if count},
        paused=paused,
        claimed=int(values[5]),
        delayed=int(values[6]),
    )


async def queue_stats(conn: Connection, partition: str | None = None) -> list[QueueStats]:
    """Return job counts by state for every queue that has jobs or is paused.

    With *partition*, only its jobs count: a scan of the enqueue index in
    chunks (each one script call), as a filtered :func:`list_jobs` does.
    """
    if partition is not None:
        return await _partition_stats(conn, partition)
    flat = await conn.run(QUEUE_STATS, [])
    stats = [
        _stats(flat[i].decode(), bool(flat[i + 1]), flat[i + 2 : i + 9])
        for i in range(0, len(flat), 9)
    ]
    stats.sort(key=lambda item: item.queue)
    return stats


async def _partition_stats(conn: Connection, partition: str) -> list[QueueStats]:
    totals: dict[str, list[int]] = {}
    paused: set[str] = set()
    after = "-inf"
    while True:
        scanned, last, paused_now, flat = await conn.run(
            QUEUE_STATS_SCAN, [after, str(_LIST_CHUNK), partition]
        )
        paused = {item.decode() for item in paused_now}
        for i in range(0, len(flat), 8):
            counts = totals.setdefault(flat[i].decode(), [0] * 7)
            for j, value in enumerate(flat[i + 1 : i + 8]):
                counts[j] += int(value)
        if scanned < _LIST_CHUNK:
            break
        after = "(" + last.decode()
    for queue in paused:
        totals.setdefault(queue, [0] * 7)
    return [_stats(queue, queue in paused, totals[queue]) for queue in sorted(totals)]


SCRIPTS = (LIST_SCAN, QUEUE_STATS, QUEUE_STATS_SCAN)
