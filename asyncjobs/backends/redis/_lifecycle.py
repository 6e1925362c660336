"""A job from claim to outcome: the worker's scripts, and the code that calls them.

Claim, heartbeat, settle, crash recovery and progress: each is one script, so
one round trip and atomic in the server, whatever the batch size. (New jobs
come in through ``_enqueue.py``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from ..._models import ErrorInfo, Job, Outcome
from .. import HeartbeatReply
from ._codec import decode_packed, num, outcome_args
from ._connection import Connection
from ._prelude import script
from ._wakeups import Wakeups

__all__ = [
    "SCRIPTS",
    "claim",
    "heartbeat",
    "recover_expired",
    "set_progress",
    "settle",
]

_EXPIRED_ERROR = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)

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


SCRIPTS = (CLAIM, HEARTBEAT, RECOVER, SET_PROGRESS, SETTLE)
