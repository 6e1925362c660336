"""Operator actions on jobs and queues: cancel, retry a dead job, pause a queue,
prune, delete a job, purge.

Each is one script (a purge or a prune one per chunk), seen at once by every
process sharing the server.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..._models import FINISHED_STATES, Job, JobState
from ._codec import decode_packed, filter_args, num
from ._connection import Connection
from ._prelude import script
from ._wakeups import Wakeups

__all__ = ["SCRIPTS", "cancel", "delete_job", "pause_queue", "prune", "purge", "retry_dead"]

# Bounds on the work one script call does, so no call blocks the server for long.
_PRUNE_CHUNK = 1_000
_PURGE_CHUNK = 2_000

# ARGV: id. Returns {the packed job after the change, queues woken (a job waiting
# behind it let go)}, or nil.
CANCEL = script(
    "cancel",
    """
local id = ARGV[5]
local jk = job_key(id)
local f = redis.call('HMGET', jk, 'state', 'queue', 'due_at', 'seq', 'key', 'round',
                     'waits_for')
if not f[1] then return false end
if f[1] == 'queued' then
  unqueue(id, f[2], f[3], f[4], f[6], f[7])
  finish(id, f[2], f[5], 'cancelled', {}, {})
elseif f[1] == 'running' then
  redis.call('HSET', jk, 'cancel_requested', '1')
end
return {pack_job(jk), publish_wakes()}
""",
    "pack",
    "finish",
)


async def cancel(conn: Connection, wakeups: Wakeups, job_id: str) -> Job | None:
    """Cancel a queued job, or flag a running one; a finished job stays as it is."""
    reply = await conn.run(CANCEL, [job_id])
    if reply is None:
        return None
    packed, woken = reply
    wakeups.notify_woken(woken)
    return decode_packed(packed)


# ARGV: id, due_at. Returns the packed job after the change, or nil.
RETRY_DEAD = script(
    "retry_dead",
    """
local id = ARGV[5]
local jk = job_key(id)
local f = redis.call('HMGET', jk, 'state', 'queue', 'key', 'seq', 'priority', 'round')
if not f[1] then return false end
if f[1] == 'dead' then
  local del = {'finished_at'}
  if f[3] then
    local holder = key_holder(f[3])
    -- Another job took the key meanwhile: reviving this one would break dedup.
    if holder and holder ~= id then return pack_job(jk) end
    if not holder then
      redis.call('SET', dedup_key(f[3]), id)
      add(del, 'key_scope', 'key_expires_at')  -- revived, it holds its key while active
    end
    -- Its own throttle window still running: it keeps holding the key by that window.
  end
  redis.call('PERSIST', jk)
  redis.call('PERSIST', attempts_key(id))
  redis.call('ZREM', qkey(f[2], 'dead'), id)
  redis.call('ZREM', EXPIRY, expiry_member('dead', f[2], id))
  requeue(id, f[2], ARGV[6], f[4], f[5], {'attempts', 0}, del, f[6])
  publish_wakes()
end
return pack_job(jk)
""",
    "pack",
    "finish",
    "holder",
)


async def retry_dead(conn: Connection, wakeups: Wakeups, job_id: str, due_at: float) -> Job | None:
    """Queue a dead job again at *due_at* with its attempts reset."""
    reply = await conn.run(RETRY_DEAD, [job_id, num(due_at)])
    if reply is None:
        return None
    job = decode_packed(reply)
    if job.state is JobState.QUEUED:
        wakeups.notify([job.queue])
    return job


# ARGV: queue, paused ('1'/'0').
PAUSE_QUEUE = script(
    "pause_queue",
    """
if ARGV[6] == '1' then redis.call('SADD', PAUSED, ARGV[5])
else
  redis.call('SREM', PAUSED, ARGV[5])
  woken[ARGV[5]] = true
  publish_wakes()
end
return 1
""",
    "wake",
)


async def pause_queue(conn: Connection, wakeups: Wakeups, queue: str, paused: bool) -> None:
    """Pause or resume *queue* for every process; resuming wakes the waiting workers."""
    await conn.run(PAUSE_QUEUE, [queue, "1" if paused else "0"])
    if not paused:
        wakeups.notify([queue])


# ARGV: limit, then (state, cutoff) pairs. Returns how many jobs were deleted.
PRUNE = script(
    "prune",
    """
sweep(__SWEEP_LIMIT__)
local limit, count = tonumber(ARGV[5]), 0
local queues = redis.call('SMEMBERS', QUEUES)
for i = 6, #ARGV, 2 do
  local state, cutoff = ARGV[i], ARGV[i + 1]
  for _, queue in ipairs(queues) do
    if count >= limit then return count end
    local zk = qkey(queue, state)
    local ids = redis.call('ZRANGEBYSCORE', zk, '-inf', '(' .. cutoff, 'LIMIT', 0, limit - count)
    for _, id in ipairs(ids) do
      redis.call('DEL', job_key(id), attempts_key(id))
      redis.call('ZREM', JOBS, id)
      redis.call('ZREM', EXPIRY, expiry_member(state, queue, id))
    end
    if #ids > 0 then redis.call('ZREM', zk, unpack(ids)) end
    count = count + #ids
  end
end
return count
""",
    "finish",
    "sweep",
)


async def prune(conn: Connection, cutoffs: Mapping[JobState, float]) -> int:
    """Delete finished jobs whose ``finished_at`` is before their state's cutoff.

    Runs in chunks of a thousand jobs, each one atomic.
    """
    args: list[str | bytes] = []
    for state, cutoff in cutoffs.items():
        if JobState(state) in FINISHED_STATES:
            args += [JobState(state).value, num(cutoff)]
    total = 0
    while True:
        deleted = int(await conn.run(PRUNE, [str(_PRUNE_CHUNK), *args]))
        total += deleted
        if deleted < _PRUNE_CHUNK or not args:
            return total


# ARGV: id. Returns {1 when the job was deleted, 0 when it is missing or running,
# queues woken (a job waiting behind it let go)}.
DELETE_JOB = script(
    "delete_job",
    """
local id = ARGV[5]
local f = redis.call('HMGET', job_key(id), unpack(DELETE_FIELDS))
if not f[1] or f[1] == 'running' then return {0, {}} end
delete_job(id, f)
return {1, publish_wakes()}
""",
    "delete",
)


async def delete_job(conn: Connection, wakeups: Wakeups, job_id: str) -> bool:
    """Delete a job that is not running, with its history; it frees its key."""
    deleted, woken = await conn.run(DELETE_JOB, [job_id])
    wakeups.notify_woken(woken)
    return bool(deleted)


# ARGV: the highest seq to look at (ZREVRANGEBYSCORE's max: '+inf', then '(' + the
# last one), how many, then a filter (see read_filter). Deletes the matching jobs
# that are not running among the next ones, newest first. Returns {number scanned,
# last seq scanned, number deleted, queues woken (jobs waiting behind one let go)}.
PURGE_SCAN = script(
    "purge_scan",
    """
sweep(__SWEEP_LIMIT__)
local ids = redis.call('ZREVRANGEBYSCORE', JOBS, ARGV[5], '-inf', 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[6]))
local flt = read_filter(7)
local deleted = 0
for i = 1, #ids, 2 do
  local id = ids[i]
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, unpack(FILTER_FIELDS))
  if f[2] ~= 'running' and job_matches(flt, f) then
    delete_job(id, redis.call('HMGET', jk, unpack(DELETE_FIELDS)))
    deleted = deleted + 1
  end
end
local last = ''
if #ids > 0 then last = ids[#ids] end
return {#ids / 2, last, deleted, publish_wakes()}
""",
    "sweep",
    "filter",
    "delete",
)


async def purge(
    conn: Connection,
    wakeups: Wakeups,
    *,
    queue: str | None,
    state: JobState | None,
    name: str | None,
    partition: str | None,
    tags: Mapping[str, str] | None,
    finished_before: float | None,
) -> int:
    """Delete every job matching all given filters, except running ones.

    Scans the enqueue index in chunks, each one script call (atomic by itself).
    """
    flt = filter_args(
        queue=queue,
        state=state,
        name=name,
        partition=partition,
        tags=tags,
        finished_before=finished_before,
    )
    if state is JobState.RUNNING:
        return 0
    total, below = 0, "+inf"
    while True:
        scanned, last, deleted, woken = await conn.run(PURGE_SCAN, [below, str(_PURGE_CHUNK), *flt])
        wakeups.notify_woken(woken)
        total += int(deleted)
        if int(scanned) < _PURGE_CHUNK:
            return total
        below = "(" + last.decode()


SCRIPTS = (CANCEL, RETRY_DEAD, PAUSE_QUEUE, PRUNE, DELETE_JOB, PURGE_SCAN)
