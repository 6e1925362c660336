"""A job from claim to outcome: the worker's scripts, and the code that calls them.

Claim, heartbeat, settle, crash recovery and progress: each is one script, so
one round trip and atomic in the server, whatever the batch size. (New jobs
come in through ``_enqueue.py``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from ..._models import ClaimLimits, ClaimReply, ErrorInfo, Job, JobStart, Outcome
from .. import HeartbeatReply
from ._codec import decode_packed, num, outcome_args, start_args
from ._connection import Connection
from ._prelude import script
from ._wakeups import Wakeups

__all__ = [
    "SCRIPTS",
    "claim",
    "claim_limited",
    "heartbeat",
    "recover_expired",
    "set_progress",
    "settle",
]

_EXPIRED_ERROR = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)

# How many ready jobs one limited claim looks at, at most (held ones included).
_SCAN_LIMIT = 1_000

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
local out, top = {}, 0
for i = 1, #popped, 2 do
  local id = string.sub(popped[i], ID_AT)
  local v = redis.call('HMGET', job_key(id), unpack(CLAIM_FIELDS))
  if v[1] then
    local round = lease(id, queue, v, ARGV[9] .. '.' .. ((i + 1) / 2), expires, worker)
    if round > top then top = round end
    out[#out + 1] = pack_values(v)
  end
end
claimed_round(queue, top)
return out
""",
    "lease",
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


# ARGV: queue, limit, worker id, lease seconds, token prefix, binds ('1': a
# concurrency limit is given), global concurrency, partition concurrency, queue rate
# limit, its window in seconds ('' = none), then (job name, limit, window) triples.
# Returns {packed jobs, the limit that held a due job back or nil, retry_at or nil}.
CLAIM_LIMITED = script(
    "claim_limited",
    """
local queue, limit, worker, prefix = ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[9]
if ARGV[10] == '1' then redis.call('SADD', LIMITED, queue) end
if limit <= 0 or redis.call('SISMEMBER', PAUSED, queue) == 1 then return {{}, false, false} end
promote(queue)
local expires = fmt(NOW + tonumber(ARGV[8]))
local gconc, pconc = tonumber(ARGV[11]), tonumber(ARGV[12])
local job_rates = {}
for i = 15, #ARGV, 3 do job_rates[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])} end

local held, retry_at = nil, nil
local function opens_at(t) if retry_at == nil or t < retry_at then retry_at = t end end
-- A rate window (see RateWindow): the claims in the last per seconds.
local windows = {}
local function window(name, max, per)
  local w = windows[name]
  if not w then
    local k = rate_key(name)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', fmt(NOW - per))
    w = {key = k, max = max, per = per, count = redis.call('ZCARD', k), added = false}
    windows[name] = w
  end
  return w
end
local function window_opens(w)
  local first = redis.call('ZRANGE', w.key, 0, 0, 'WITHSCORES')
  if first[2] then opens_at(tonumber(first[2]) + w.per) end
end

local cap = limit
if gconc then
  local free = gconc - redis.call('ZCARD', qkey(queue, 'running'))
  if free < cap then
    cap = math.max(0, free)
    held = 'global_concurrency'
  end
end
local qw = nil
if ARGV[14] ~= '' then
  qw = window('queue:' .. queue, tonumber(ARGV[13]), tonumber(ARGV[14]))
  local free = qw.max - qw.count
  if free < cap then
    cap = math.max(0, free)
    held = 'rate_limit'
    if free <= 0 then window_opens(qw) end
  end
end

-- Scan the ready jobs in claim order: a held one stays where it is (the next chunk
-- starts after the held ones), a claimed one leaves; at most __SCAN_LIMIT__ looked at.
local rk, pk = qkey(queue, 'ready'), qkey(queue, 'prunning')
local out, top, skipped, scanned = {}, 0, 0, 0
local running_in = {}
local function add_claim(w, token)
  if w then
    redis.call('ZADD', w.key, NOW_S, token)
    w.count = w.count + 1
    w.added = true
  end
end
while #out < cap and scanned < __SCAN_LIMIT__ do
  local chunk = redis.call('ZRANGE', rk, skipped, skipped + 99)
  if #chunk == 0 then break end
  for _, member in ipairs(chunk) do
    if #out >= cap or scanned >= __SCAN_LIMIT__ then break end
    scanned = scanned + 1
    local id = string.sub(member, ID_AT)
    local v = redis.call('HMGET', job_key(id), unpack(CLAIM_FIELDS))
    if not v[1] then
      redis.call('ZREM', rk, member)
    else
      local partition, hold, jw = v[F_PARTITION], nil, nil
      if pconc and partition then
        if running_in[partition] == nil then
          running_in[partition] = tonumber(redis.call('HGET', pk, partition) or 0)
        end
        if running_in[partition] >= pconc then hold = 'partition_concurrency' end
      end
      if not hold then
        local rate = job_rates[v[F_NAME]]
        if rate then
          jw = window('job:' .. v[F_NAME], rate[1], rate[2])
          if jw.count >= jw.max then
            hold = 'job_rate_limit'
            window_opens(jw)
          end
        end
      end
      if hold then
        skipped = skipped + 1
        if not held then held = hold end
      else
        redis.call('ZREM', rk, member)
        local token = prefix .. '.' .. (#out + 1)
        local round = lease(id, queue, v, token, expires, worker)
        if round > top then top = round end
        if partition and running_in[partition] then
          running_in[partition] = running_in[partition] + 1
        end
        add_claim(qw, token)
        add_claim(jw, token)
        out[#out + 1] = pack_values(v)
      end
    end
  end
end
claimed_round(queue, top)
-- A window's claims all leave it per seconds after its last one: the key goes then.
for _, w in pairs(windows) do
  if w.added then
    redis.call('PEXPIRE', w.key, string.format('%.0f', math.ceil(w.per * 1000)))
  end
end
-- Nothing due was held back: all asked for were claimed, or none is left.
if #out >= limit or (skipped == 0 and redis.call('ZCARD', rk) == 0) then
  return {out, false, false}
end
if cap < limit and qw and qw.count >= qw.max then window_opens(qw) end
return {out, held or false, retry_at and fmt(retry_at) or false}
""".replace("__SCAN_LIMIT__", str(_SCAN_LIMIT)),
    "lease",
)


async def claim_limited(
    conn: Connection, queue: str, limit: int, worker_id: str, lease: float, limits: ClaimLimits
) -> ClaimReply:
    """Claim as :func:`claim` does, within *limits*, in one script."""
    rate = limits.rate
    args: list[str | bytes] = [
        queue,
        str(int(limit)),
        worker_id,
        num(lease),
        uuid.uuid4().hex,
        "1" if limits.binds_concurrency else "0",
        _optional_int(limits.global_concurrency),
        _optional_int(limits.partition_concurrency),
        "" if rate is None else str(int(rate.limit)),
        "" if rate is None else num(rate.per),
    ]
    for name, job_rate in limits.job_rates.items():
        args += [name, str(int(job_rate.limit)), num(job_rate.per)]
    replies, held_by, retry_at = await conn.run(CLAIM_LIMITED, args)
    return ClaimReply(
        jobs=[decode_packed(reply) for reply in replies],
        held_by=None if held_by is None else held_by.decode(),
        retry_at=None if retry_at is None else float(retry_at),
    )


def _optional_int(value: int | None) -> str:
    return "" if value is None else str(int(value))


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
# queues woken}. Each adds a "lease_expired" attempt to its job's history.
RECOVER = script(
    "recover",
    """
local count = 0
for _, queue in ipairs(redis.call('SMEMBERS', QUEUES)) do
  local rk = qkey(queue, 'running')
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', rk, '-inf', NOW_S)) do
    local f = redis.call('HMGET', job_key(id), 'state', 'attempts', 'max_attempts', 'key',
                         'seq', 'priority', 'round', 'partition', 'worker_id', 'started_at')
    if f[1] == 'running' then
      record_attempt(id, f[2], 'lease_expired', f[9], f[10], ARGV[5], ARGV[6])
      local set, del = {}, {}
      error_fields(set, del, true, ARGV[5], ARGV[6], nil)
      if tonumber(f[2]) >= tonumber(f[3]) then finish(id, queue, f[4], 'dead', set, del, f[8])
      else requeue(id, queue, NOW_S, f[5], f[6], set, del, f[7], f[8]) end
      count = count + 1
    else
      redis.call('ZREM', rk, id)
    end
  end
end
return {count, publish_wakes()}
""",
    "finish",
    "attempts",
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

# ARGV: k, then k starts of id, token, started_at (see _codec.start_args); then
# outcomes of id, token, code, then the values the code announces. The code is the
# kind (c complete, r retry, l release, d dead, x cancelled) and flags for present
# values, in this order: R result, D due_at, E error type and message, T traceback,
# S started_at; and X: delete the job if the outcome finishes it (see
# _codec.outcome_args). Each applied outcome adds an attempt to its job's history
# (its start: the outcome's, or the one the job has). Returns {refused ids, queues
# woken}.
SETTLE = script(
    "settle",
    """
local refused = {}
local pos = 6 + 3 * tonumber(ARGV[5])
for i = 6, pos - 1, 3 do
  local jk = job_key(ARGV[i])
  local f = redis.call('HMGET', jk, 'state', 'lease_token')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('HSET', jk, 'started_at', ARGV[i + 2])
  end
end
while pos <= #ARGV do
  local id, token, code = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  pos = pos + 3
  local result, due, etype, emsg, etb = nil, nil, nil, nil, nil
  if has(code, 'R') then result = ARGV[pos]; pos = pos + 1 end
  if has(code, 'D') then due = ARGV[pos]; pos = pos + 1 end
  if has(code, 'E') then etype = ARGV[pos]; emsg = ARGV[pos + 1]; pos = pos + 2 end
  if has(code, 'T') then etb = ARGV[pos]; pos = pos + 1 end
  local started = nil
  if has(code, 'S') then started = ARGV[pos]; pos = pos + 1 end
  local f = redis.call('HMGET', job_key(id), 'state', 'lease_token', 'queue', 'key',
                       'attempts', 'seq', 'priority', 'error_type', 'result', 'round',
                       'partition', 'worker_id', 'started_at')
  if f[1] ~= 'running' or f[2] ~= token then
    refused[#refused + 1] = id
  else
    local kind, queue, set, del = string.sub(code, 1, 1), f[3], {}, {}
    if started then add(set, 'started_at', started) end
    if kind ~= 'r' and kind ~= 'l' and has(code, 'X') then
      remove_running(id, queue, f[4], f[11])
    elseif kind == 'c' then
      record_attempt(id, f[5], 'complete', f[12], started or f[13], etype, emsg)
      if result then add(set, 'result', result) elseif f[9] then add(del, 'result') end
      if f[8] then error_fields(set, del, false) end
      finish(id, queue, f[4], 'complete', set, del, f[11])
    elseif kind == 'd' or kind == 'x' then
      local state = 'dead'
      if kind == 'x' then state = 'cancelled' end
      record_attempt(id, f[5], state, f[12], started or f[13], etype, emsg)
      error_fields(set, del, etype ~= nil, etype, emsg, etb)
      finish(id, queue, f[4], state, set, del, f[11])
    else
      local outcome = 'retry'
      if kind == 'l' then outcome = 'release' end
      record_attempt(id, f[5], outcome, f[12], started or f[13], etype, emsg)
      if kind == 'l' then
        local attempts = tonumber(f[5]) - 1
        if attempts < 0 then attempts = 0 end
        add(set, 'attempts', attempts)
      else
        error_fields(set, del, etype ~= nil, etype, emsg, etb)
      end
      requeue(id, queue, due or NOW_S, f[6], f[7], set, del, f[10], f[11])
    end
  end
end
sweep(__SWEEP_LIMIT__)
return {refused, publish_wakes()}
""",
    "finish",
    "sweep",
    "attempts",
    "delete",
)


async def settle(
    conn: Connection,
    wakeups: Wakeups,
    outcomes: Sequence[Outcome],
    starts: Sequence[JobStart] = (),
) -> list[str]:
    """Apply a batch of outcomes and starts in one script; return the ids whose token was stale."""
    if not outcomes and not starts:
        return []
    args = start_args(starts)
    for item in outcomes:
        args += outcome_args(item)
    refused, woken = await conn.run(SETTLE, args)
    wakeups.notify_woken(woken)
    return [job_id.decode() for job_id in refused]


SCRIPTS = (CLAIM, CLAIM_LIMITED, HEARTBEAT, RECOVER, SET_PROGRESS, SETTLE)
