"""A job from enqueue to outcome: the scripts of the hot path, and the code that calls them.

Enqueue (plain, or with a handoff to an idle local worker), claim, heartbeat,
settle, crash recovery and progress: each is one script, so one round trip
and atomic in the server, whatever the batch size.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import attrs

from ..._models import ErrorInfo, Handoff, Job, JobState, NewJob, Outcome
from .. import HeartbeatReply
from ._codec import decode_enqueued, decode_packed, job_args, num, outcome_args
from ._connection import Connection
from ._prelude import script
from ._wakeups import Wakeups

__all__ = [
    "SCRIPTS",
    "claim",
    "enqueue",
    "heartbeat",
    "recover_expired",
    "set_progress",
    "settle",
]

_EXPIRED_ERROR = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)

# -- enqueue ------------------------------------------------------------------------

# ARGV: n, then n jobs (see insert_jobs).
ENQUEUE = script(
    "enqueue",
    """
local out = insert_jobs(6, tonumber(ARGV[5]))
publish_wakes()
return out
""",
    "insert",
)

# ARGV: worker id, lease seconds, token prefix, k, then k (queue, limit) pairs, then
# n and n jobs as for ENQUEUE. Inserts the jobs, then claims for the worker each
# queue's head while it is one of them (up to the queue's limit; not in a paused
# queue): exactly what the worker's next claim would take. Returns {the jobs not
# inserted as for ENQUEUE, the claimed (id, token) pairs, expiry, claim time}.
ENQUEUE_CLAIM = script(
    "enqueue_claim",
    """
local worker, prefix = ARGV[5], ARGV[7]
local expires = fmt(NOW + tonumber(ARGV[6]))
local limits, pos = {}, 9
for _ = 1, tonumber(ARGV[8]) do
  limits[ARGV[pos]] = tonumber(ARGV[pos + 1])
  pos = pos + 2
end
local out = insert_jobs(pos + 1, tonumber(ARGV[pos]))
local claimed = {}
for queue, limit in pairs(limits) do
  if inserted_in[queue] and redis.call('SISMEMBER', PAUSED, queue) == 0 then
    promote(queue)
    local rk = qkey(queue, 'ready')
    local taken = 0
    while taken < limit do
      local head = redis.call('ZRANGE', rk, 0, 0)
      if #head == 0 then break end
      local id = string.sub(head[1], ID_AT)
      if not inserted[id] then break end
      redis.call('ZREM', rk, head[1])
      taken = taken + 1
      local token = prefix .. '.' .. (#claimed / 2 + 1)
      redis.call('HSET', job_key(id), 'state', 'running', 'attempts', '1', 'lease_token',
                 token, 'lease_expires_at', expires, 'worker_id', worker, 'started_at', NOW_S)
      redis.call('ZADD', qkey(queue, 'running'), expires, id)
      add(claimed, id, token)
    end
    -- Every new job of the queue went to this worker: nobody else needs waking.
    if taken == inserted_in[queue] then woken[queue] = nil end
  end
end
publish_wakes()
return {out, claimed, expires, NOW_S}
""",
    "insert",
)


async def enqueue(
    conn: Connection, wakeups: Wakeups, jobs: Sequence[NewJob], handoff: Handoff | None
) -> list[Job]:
    """Insert *jobs* in one script; a matching active ``key`` returns the existing job."""
    if not jobs:
        return []
    args: list[str | bytes] = [str(len(jobs))]
    for new in jobs:
        args += job_args(new)
    if handoff is None or not handoff.limits:
        replies = await conn.run(ENQUEUE, args)
        wakeups.notify({new.queue for new in jobs})
        return decode_enqueued(jobs, replies)
    head: list[str | bytes] = [
        handoff.worker_id,
        num(handoff.lease),
        uuid.uuid4().hex,
        str(len(handoff.limits)),
    ]
    for queue, limit in handoff.limits.items():
        head += [queue, str(int(limit))]
    replies, claimed, expires, now = await conn.run(ENQUEUE_CLAIM, head + args)
    stored = decode_enqueued(jobs, replies)
    tokens = {claimed[i].decode(): claimed[i + 1].decode() for i in range(0, len(claimed), 2)}
    for i, job in enumerate(stored):
        token = tokens.get(job.id)
        if token is not None:
            stored[i] = attrs.evolve(
                job,
                state=JobState.RUNNING,
                attempts=1,
                lease_token=token,
                lease_expires_at=float(expires),
                worker_id=handoff.worker_id,
                started_at=float(now),
            )
    wakeups.notify({job.queue for job in stored if job.state is JobState.QUEUED})
    return stored


# -- claim ----------------------------------------------------------------------------

# ARGV: queue, limit, worker id, lease seconds, token prefix. Returns packed jobs.
CLAIM = script(
    "claim",
    """
local queue, limit, worker = ARGV[5], tonumber(ARGV[6]), ARGV[7]
if limit <= 0 or redis.call('SISMEMBER', PAUSED, queue) == 1 then return {} end
promote(queue)
local popped = redis.call('ZPOPMIN', qkey(queue, 'ready'), limit)
local expires = fmt(NOW + tonumber(ARGV[8]))
local running = qkey(queue, 'running')
local out = {}
for i = 1, #popped, 2 do
  local id = string.sub(popped[i], ID_AT)
  local jk = job_key(id)
  local v = redis.call('HMGET', jk, unpack(JOB_FIELDS))
  if v[1] then
    local attempts = tostring(tonumber(v[F_ATTEMPTS]) + 1)
    local token = ARGV[9] .. '.' .. ((i + 1) / 2)
    redis.call('HSET', jk, 'state', 'running', 'attempts', attempts, 'lease_token', token,
               'lease_expires_at', expires, 'worker_id', worker, 'started_at', NOW_S)
    if v[F_PROGRESS] or v[F_PROGRESS_MESSAGE] then
      redis.call('HDEL', jk, 'progress', 'progress_message')
      v[F_PROGRESS] = false
      v[F_PROGRESS_MESSAGE] = false
    end
    redis.call('ZADD', running, expires, id)
    v[F_STATE] = 'running'
    v[F_ATTEMPTS] = attempts
    v[F_TOKEN] = token
    v[F_EXPIRES] = expires
    v[F_WORKER] = worker
    v[F_STARTED] = NOW_S
    out[#out + 1] = pack_values(v)
  end
end
return out
""",
    "pack",
    "ready",
)


async def claim(
    conn: Connection, queue: str, limit: int, worker_id: str, lease: float
) -> list[Job]:
    """Claim up to *limit* due jobs of *queue* in one script, each with a fresh token."""
    if limit <= 0:
        return []
    replies = await conn.run(
        CLAIM, [queue, str(int(limit)), worker_id, num(lease), uuid.uuid4().hex]
    )
    return [decode_packed(reply) for reply in replies]


# -- leases -----------------------------------------------------------------------------

# ARGV: lease seconds, then (id, token) pairs. Returns {lost ids, cancel-requested ids}.
HEARTBEAT = script(
    "heartbeat",
    """
local expires = fmt(NOW + tonumber(ARGV[5]))
local lost, cancel = {}, {}
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, 'state', 'lease_token', 'queue', 'cancel_requested')
  if f[1] ~= 'running' or f[2] ~= ARGV[i + 1] then
    lost[#lost + 1] = id
  else
    redis.call('HSET', jk, 'lease_expires_at', expires)
    redis.call('ZADD', qkey(f[3], 'running'), expires, id)
    if f[4] == '1' then cancel[#cancel + 1] = id end
  end
end
return {lost, cancel}
""",
)


async def heartbeat(conn: Connection, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
    """Extend the leases this worker still holds, in one script."""
    if not leases:
        return HeartbeatReply()
    args: list[str | bytes] = [num(lease)]
    for job_id, token in leases.items():
        args += [job_id, token]
    lost, cancel = await conn.run(HEARTBEAT, args)
    return HeartbeatReply(
        lost=frozenset(item.decode() for item in lost),
        cancel_requested=frozenset(item.decode() for item in cancel),
    )


# ARGV: error type, error message. Returns {how many jobs were requeued or killed,
# queues woken}.
RECOVER = script(
    "recover",
    """
local count = 0
for _, queue in ipairs(redis.call('SMEMBERS', QUEUES)) do
  local rk = qkey(queue, 'running')
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', rk, '-inf', NOW_S)) do
    local f = redis.call('HMGET', job_key(id), 'state', 'attempts', 'max_attempts', 'key',
                         'seq', 'priority')
    if f[1] == 'running' then
      local set, del = {}, {}
      error_fields(set, del, true, ARGV[5], ARGV[6], nil)
      if tonumber(f[2]) >= tonumber(f[3]) then finish(id, queue, f[4], 'dead', set, del)
      else requeue(id, queue, NOW_S, f[5], f[6], set, del) end
      count = count + 1
    else
      redis.call('ZREM', rk, id)
    end
  end
end
return {count, publish_wakes()}
""",
    "finish",
)


async def recover_expired(conn: Connection, wakeups: Wakeups) -> int:
    """Requeue (or kill, when out of attempts) running jobs whose lease ran out."""
    count, woken = await conn.run(RECOVER, [_EXPIRED_ERROR.type, _EXPIRED_ERROR.message])
    wakeups.notify_woken(woken)
    return int(count)


# ARGV: id, token, progress, has message ('1'/'0'), message.
SET_PROGRESS = script(
    "set_progress",
    """
local jk = job_key(ARGV[5])
local f = redis.call('HMGET', jk, 'state', 'lease_token')
if f[1] ~= 'running' or f[2] ~= ARGV[6] then return 0 end
if ARGV[8] == '1' then redis.call('HSET', jk, 'progress', ARGV[7], 'progress_message', ARGV[9])
else
  redis.call('HSET', jk, 'progress', ARGV[7])
  redis.call('HDEL', jk, 'progress_message')
end
return 1
""",
)


async def set_progress(
    conn: Connection, job_id: str, lease_token: str, progress: float, message: str | None
) -> bool:
    """Store a running job's progress; ``False`` when the lease is no longer held."""
    reply = await conn.run(
        SET_PROGRESS,
        [job_id, lease_token, num(progress), "0" if message is None else "1", message or ""],
    )
    return bool(reply)


# -- outcomes ---------------------------------------------------------------------------

# ARGV: outcomes of id, token, code, then the values the code announces. The
# code is the kind (c complete, r retry, l release, d dead, x cancelled) and
# flags for present values, in this order: R result, D due_at, E error type and
# message, T traceback (see _codec.outcome_args). Returns {refused ids, queues woken}.
SETTLE = script(
    "settle",
    """
local refused = {}
local pos = 5
while pos <= #ARGV do
  local id, token, code = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  pos = pos + 3
  local result, due, etype, emsg, etb = nil, nil, nil, nil, nil
  if has(code, 'R') then result = ARGV[pos]; pos = pos + 1 end
  if has(code, 'D') then due = ARGV[pos]; pos = pos + 1 end
  if has(code, 'E') then etype = ARGV[pos]; emsg = ARGV[pos + 1]; pos = pos + 2 end
  if has(code, 'T') then etb = ARGV[pos]; pos = pos + 1 end
  local f = redis.call('HMGET', job_key(id), 'state', 'lease_token', 'queue', 'key',
                       'attempts', 'seq', 'priority', 'error_type', 'result')
  if f[1] ~= 'running' or f[2] ~= token then
    refused[#refused + 1] = id
  else
    local kind, queue, set, del = string.sub(code, 1, 1), f[3], {}, {}
    if kind == 'c' then
      if result then add(set, 'result', result) elseif f[9] then add(del, 'result') end
      if f[8] then error_fields(set, del, false) end
      finish(id, queue, f[4], 'complete', set, del)
    elseif kind == 'd' or kind == 'x' then
      error_fields(set, del, etype ~= nil, etype, emsg, etb)
      local state = 'dead'
      if kind == 'x' then state = 'cancelled' end
      finish(id, queue, f[4], state, set, del)
    else
      if kind == 'l' then
        local attempts = tonumber(f[5]) - 1
        if attempts < 0 then attempts = 0 end
        add(set, 'attempts', attempts)
      else
        error_fields(set, del, etype ~= nil, etype, emsg, etb)
      end
      requeue(id, queue, due or NOW_S, f[6], f[7], set, del)
    end
  end
end
sweep(__SWEEP_LIMIT__)
return {refused, publish_wakes()}
""",
    "finish",
    "sweep",
)


async def settle(conn: Connection, wakeups: Wakeups, outcomes: Sequence[Outcome]) -> list[str]:
    """Apply a batch of outcomes in one script; return the ids whose token was stale."""
    if not outcomes:
        return []
    args: list[str | bytes] = []
    for item in outcomes:
        args += outcome_args(item)
    refused, woken = await conn.run(SETTLE, args)
    wakeups.notify_woken(woken)
    return [job_id.decode() for job_id in refused]


SCRIPTS = (ENQUEUE, ENQUEUE_CLAIM, CLAIM, HEARTBEAT, RECOVER, SET_PROGRESS, SETTLE)
