"""Stored schedules, and the compare-and-set that makes each tick fire once.

A tick's jobs are written by the same script that moves ``next_fire_at``, so
however many runtimes share the server, one of them fires each tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from ..._models import Job, NewJob, Schedule
from ._codec import (
    checks_conflicts,
    decode_enqueued,
    decode_schedule,
    job_args,
    num,
    schedule_fields,
)
from ._connection import Connection
from ._prelude import script
from ._wakeups import Wakeups

__all__ = [
    "SCRIPTS",
    "fire_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "put_schedule",
    "remove_schedule",
]

# ARGV: name, trigger, then field/value pairs of the new definition.
PUT_SCHEDULE = script(
    "put_schedule",
    """
local sk = schedule_key(ARGV[5])
local kept = nil
if redis.call('HGET', sk, 'trigger') == ARGV[6] then
  kept = redis.call('HMGET', sk, 'next_fire_at', 'last_fire_at', 'paused')
end
redis.call('DEL', sk)
local f = {}
for i = 7, #ARGV do f[#f + 1] = ARGV[i] end
redis.call('HSET', sk, unpack(f))
if kept then
  local names = {'next_fire_at', 'last_fire_at', 'paused'}
  for j = 1, 3 do
    if kept[j] then redis.call('HSET', sk, names[j], kept[j])
    else redis.call('HDEL', sk, names[j]) end
  end
end
redis.call('SADD', SCHEDULES, ARGV[5])
return redis.call('HGETALL', sk)
""",
)


async def put_schedule(conn: Connection, schedule: Schedule) -> Schedule:
    """Insert or replace a schedule, keeping its timing when the trigger is unchanged."""
    reply = await conn.run(
        PUT_SCHEDULE, [schedule.name, schedule.trigger, *schedule_fields(schedule)]
    )
    return decode_schedule(reply)


async def get_schedule(conn: Connection, name: str) -> Schedule | None:
    """Return one schedule, or ``None``."""
    client = conn.require_client()
    with conn.failures():
        fields = await client.hgetall(conn.keys.schedule(name))
    return decode_schedule(fields) if fields else None


async def list_schedules(conn: Connection) -> list[Schedule]:
    """Return every stored schedule, ordered by name."""
    client = conn.require_client()
    with conn.failures():
        raw_names = cast("set[bytes]", await client.smembers(conn.keys.schedules))
        names = sorted(item.decode() for item in raw_names)
        if not names:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(conn.keys.schedule(name))
            hashes = await pipe.execute()
    return [decode_schedule(fields) for fields in hashes if fields]


# ARGV: name. Returns 1 when a schedule was deleted.
REMOVE_SCHEDULE = script(
    "remove_schedule",
    """
redis.call('SREM', SCHEDULES, ARGV[5])
return redis.call('DEL', schedule_key(ARGV[5]))
""",
)


async def remove_schedule(conn: Connection, name: str) -> bool:
    """Delete a schedule; ``False`` when there was none."""
    return bool(await conn.run(REMOVE_SCHEDULE, [name]))


# ARGV: name, paused ('1'/'0'). Returns the schedule's fields, or nil.
PAUSE_SCHEDULE = script(
    "pause_schedule",
    """
local sk = schedule_key(ARGV[5])
if redis.call('EXISTS', sk) == 0 then return false end
redis.call('HSET', sk, 'paused', ARGV[6])
return redis.call('HGETALL', sk)
""",
)


async def pause_schedule(conn: Connection, name: str, paused: bool) -> Schedule | None:
    """Pause or resume a schedule; ``None`` when there is none."""
    reply = await conn.run(PAUSE_SCHEDULE, [name, "1" if paused else "0"])
    return None if reply is None else decode_schedule(reply)


# ARGV: name, expected fire time, has next ('1'/'0'), next fire time, n, check, then
# n jobs (as for ENQUEUE). Returns the enqueue reply, or nil when the tick was
# already fired (or paused); a "raise" job meeting a holder of its key stores none
# of the jobs (the tick counts as fired).
FIRE_SCHEDULE = script(
    "fire_schedule",
    """
local sk = schedule_key(ARGV[5])
local f = redis.call('HMGET', sk, 'next_fire_at', 'paused')
if not f[1] or f[2] == '1' or tonumber(f[1]) ~= tonumber(ARGV[6]) then return false end
redis.call('HSET', sk, 'last_fire_at', ARGV[6])
if ARGV[7] == '1' then redis.call('HSET', sk, 'next_fire_at', ARGV[8])
else redis.call('HDEL', sk, 'next_fire_at') end
local n = tonumber(ARGV[9])
if ARGV[10] == '1' then
  -- As in the memory store: the tick is fired, but a conflict stores none of its jobs.
  local conflict = check_conflicts(11, n)
  if conflict then return conflict end
end
local out = insert_jobs(11, n)
publish_wakes()
return out
""",
    "insert",
)


async def fire_schedule(
    conn: Connection,
    wakeups: Wakeups,
    name: str,
    expected_fire_at: float,
    next_fire_at: float | None,
    jobs: Sequence[NewJob],
) -> list[Job] | None:
    """Fire one tick: compare-and-set ``next_fire_at`` and enqueue *jobs* in one script.

    :returns: the enqueued jobs, or ``None`` when the tick was fired already
        (or the schedule is paused or gone); then nothing is written.
    """
    args: list[str | bytes] = [
        name,
        num(expected_fire_at),
        "0" if next_fire_at is None else "1",
        "" if next_fire_at is None else num(next_fire_at),
        str(len(jobs)),
        "1" if checks_conflicts(jobs) else "0",
    ]
    for new in jobs:
        args += job_args(new)
    replies = await conn.run(FIRE_SCHEDULE, args)
    if replies is None:
        return None
    stored = decode_enqueued(jobs, replies)
    if jobs:
        wakeups.notify({new.queue for new in jobs})
    return stored


SCRIPTS = (PUT_SCHEDULE, REMOVE_SCHEDULE, PAUSE_SCHEDULE, FIRE_SCHEDULE)
