"""The Lua scripts of the Redis backend, and the Redis-side field order of a job.

:data:`_SCRIPTS` maps each operation's name to the full source of its script;
:data:`_JOB_FIELDS` is the order in which the scripts pack a job's fields and
in which :mod:`asyncjobs.backends.redis` reads them back.
"""

from __future__ import annotations

# Bounds on the work one script call does, so no call blocks the server for long.
_PROMOTE_LIMIT = 1_000
_SWEEP_LIMIT = 500


# -- Lua ----------------------------------------------------------------------
#
# Every script is the sections of the prelude it needs followed by its body,
# and takes the same four leading arguments: ARGV[1] prefix, ARGV[2] now ('' =
# read the server's TIME), ARGV[3] finished_ttl and ARGV[4] dead_ttl in ms (0 =
# keep until pruned); its own arguments start at ARGV[5]. No key is passed in
# KEYS: the scripts build them from the prefix (standalone Redis only). Floats
# travel as strings: Python's repr in, '%.17g' out, both exact, so a time
# written by a test's clock reads back equal.

_JOB_FIELDS = (
    "id",
    "name",
    "queue",
    "payload",
    "state",
    "due_at",
    "enqueued_at",
    "priority",
    "attempts",
    "max_attempts",
    "timeout",
    "key",
    "schedule",
    "lease_token",
    "lease_expires_at",
    "worker_id",
    "started_at",
    "finished_at",
    "result",
    "error_type",
    "error_message",
    "error_traceback",
    "progress",
    "progress_message",
    "cancel_requested",
    "fire_at",
)

_PRELUDE = r"""
--@section base
local P = ARGV[1]
local FIN_TTL = tonumber(ARGV[3])
local DEAD_TTL = tonumber(ARGV[4])
if redis.replicate_commands then pcall(redis.replicate_commands) end

local function fmt(x) return string.format('%.17g', x) end

local server_time = nil
local function server_now()
  if server_time == nil then
    local t = redis.call('TIME')
    server_time = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return server_time
end

local NOW, NOW_S
if ARGV[2] == '' then NOW = server_now(); NOW_S = fmt(NOW)
else NOW_S = ARGV[2]; NOW = tonumber(NOW_S) end

local JOBS = P .. ':jobs'
local QUEUES = P .. ':queues'
local PAUSED = P .. ':paused'
local EXPIRY = P .. ':expiry'
local function job_key(id) return P .. ':job:' .. id end
local function qkey(queue, part) return P .. ':q:' .. queue .. ':' .. part end
local function dedup_key(key) return P .. ':key:' .. key end
local function has(flags, c) return string.find(flags, c, 1, true) ~= nil end
local function add(list, ...) for _, v in ipairs({...}) do list[#list + 1] = v end end

--@section pack
-- A job travels back as one string: each value of JOB_FIELDS as <len>:<bytes>,
-- or '-' when absent. One bulk reply per job parses far faster client-side
-- than HGETALL's fifty.
local JOB_FIELDS = {__JOB_FIELDS__}
local F_STATE, F_ATTEMPTS, F_TOKEN, F_EXPIRES, F_WORKER, F_STARTED = 5, 9, 14, 15, 16, 17
local F_PROGRESS, F_PROGRESS_MESSAGE = 23, 24
local function pack_values(values)
  local parts = {}
  for k = 1, #JOB_FIELDS do
    local v = values[k]
    if v then parts[k] = #v .. ':' .. v else parts[k] = '-' end
  end
  return table.concat(parts)
end
local function pack_job(jk) return pack_values(redis.call('HMGET', jk, unpack(JOB_FIELDS))) end

--@section wake
-- Queues that got work in this call: each gets one message on its wake channel,
-- and publish_wakes returns their names (so the caller wakes its own waiters).
local woken = {}
local function publish_wakes()
  local names = {}
  for queue, _ in pairs(woken) do
    redis.call('PUBLISH', P .. ':wake:' .. queue, '')
    names[#names + 1] = queue
  end
  return names
end

--@section ready
-- The ready zset orders equal priorities by this member: due time, then seq.
local ID_AT = 35
local function ready_member(due, seq, id)
  local d = tonumber(due)
  if d < 0 then d = 0 elseif d > 99999999999 then d = 99999999999 end
  return string.format('%018.6f%016d', d, tonumber(seq)) .. id
end

local function push(id, queue, due, seq, priority)
  if tonumber(due) <= NOW then
    redis.call('ZADD', qkey(queue, 'ready'), priority, ready_member(due, seq, id))
  else
    redis.call('ZADD', qkey(queue, 'delayed'), due, id)
  end
  -- Wake on delayed jobs too: a sleeping worker may need an earlier deadline.
  woken[queue] = true
end

local function unqueue(id, queue, due, seq)
  redis.call('ZREM', qkey(queue, 'ready'), ready_member(due, seq, id))
  redis.call('ZREM', qkey(queue, 'delayed'), id)
end

local function promote(queue)
  local dk = qkey(queue, 'delayed')
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', NOW_S, 'LIMIT', 0, __PROMOTE_LIMIT__)
  if #due == 0 then return end
  local rk = qkey(queue, 'ready')
  for _, id in ipairs(due) do
    local f = redis.call('HMGET', job_key(id), 'due_at', 'seq', 'priority')
    if f[1] then redis.call('ZADD', rk, f[3], ready_member(f[1], f[2], id)) end
  end
  redis.call('ZREM', dk, unpack(due))
end

--@section finish
local function expiry_member(state, queue, id)
  return state .. ':' .. #queue .. ':' .. queue .. id
end

-- Add the HSET / HDEL arguments that record an error (or its absence).
local function error_fields(set, del, present, etype, emsg, etb)
  if present then
    add(set, 'error_type', etype, 'error_message', emsg)
    if etb then add(set, 'error_traceback', etb) else add(del, 'error_traceback') end
  else
    add(del, 'error_type', 'error_message', 'error_traceback')
  end
end

-- A job leaves queued/running for good. set/del: more fields to write or delete.
local function finish(id, queue, key, state, set, del)
  local jk = job_key(id)
  add(set, 'state', state, 'finished_at', NOW_S)
  add(del, 'lease_token', 'lease_expires_at')
  redis.call('HSET', jk, unpack(set))
  redis.call('HDEL', jk, unpack(del))
  redis.call('ZREM', qkey(queue, 'running'), id)
  redis.call('ZADD', qkey(queue, state), NOW_S, id)
  if key then
    local dk = dedup_key(key)
    if redis.call('GET', dk) == id then redis.call('DEL', dk) end
  end
  local ttl = FIN_TTL
  if state == 'dead' then ttl = DEAD_TTL end
  if ttl > 0 then
    -- The hash expires by itself; its sweep entry drops it from the indexes then.
    redis.call('PEXPIRE', jk, ttl)
    redis.call('ZADD', EXPIRY, fmt(server_now() + ttl / 1000), expiry_member(state, queue, id))
  end
end

-- A job goes (back) to queued at due. set/del: more fields to write or delete.
local function requeue(id, queue, due, seq, priority, set, del)
  local jk = job_key(id)
  add(set, 'state', 'queued', 'due_at', due)
  add(del, 'lease_token', 'lease_expires_at', 'worker_id', 'cancel_requested')
  redis.call('HSET', jk, unpack(set))
  redis.call('HDEL', jk, unpack(del))
  redis.call('ZREM', qkey(queue, 'running'), id)
  push(id, queue, due, seq, priority)
end

--@section sweep
local function sweep(limit)
  local doomed = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', fmt(server_now()), 'LIMIT', 0, limit)
  for _, m in ipairs(doomed) do
    local c1 = string.find(m, ':', 1, true)
    local c2 = string.find(m, ':', c1 + 1, true)
    local n = tonumber(string.sub(m, c1 + 1, c2 - 1))
    local state = string.sub(m, 1, c1 - 1)
    local queue = string.sub(m, c2 + 1, c2 + n)
    local id = string.sub(m, c2 + n + 1)
    redis.call('ZREM', qkey(queue, state), id)
    redis.call('ZREM', JOBS, id)
    redis.call('DEL', job_key(id))
  end
  if #doomed > 0 then redis.call('ZREM', EXPIRY, unpack(doomed)) end
end

--@section insert
-- Insert n jobs whose arguments start at ARGV[pos]. Each job is: id, name,
-- queue, payload, 'flags|due_at|enqueued_at|priority|max_attempts|timeout',
-- then key if flags has 'k', schedule if it has 's' and fire_at if it has 'f'.
-- Nothing but this insert writes fire_at. Returns (index from 0,
-- packed job) pairs for the jobs not inserted, whose existing job (same id, or
-- same active key) stands in for them.
-- The jobs this call inserted, per queue (for a handoff): id -> true, and counts.
local inserted, inserted_in = {}, {}
local function insert_jobs(pos, n)
  local out = {}
  if n == 0 then return out end
  local last = redis.call('INCRBY', P .. ':seq', n)
  local queues = {}
  for j = 0, n - 1 do
    local id, name, queue, payload = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3]
    local flags, due, enq, priority, max_attempts, timeout =
      string.match(ARGV[pos + 4], '^(%l*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
    pos = pos + 5
    local key, schedule = nil, nil
    if has(flags, 'k') then key = ARGV[pos]; pos = pos + 1 end
    if has(flags, 's') then schedule = ARGV[pos]; pos = pos + 1 end
    local fire_at = nil
    if has(flags, 'f') then fire_at = ARGV[pos]; pos = pos + 1 end
    local jk = job_key(id)
    local existing = nil
    if redis.call('EXISTS', jk) == 1 then
      -- The same id again: a client's retry of an enqueue whose reply was lost.
      existing = jk
    elseif key then
      local dk = dedup_key(key)
      local holder = redis.call('GET', dk)
      if holder then
        local state = redis.call('HGET', job_key(holder), 'state')
        if state == 'queued' or state == 'running' then existing = job_key(holder) end
      end
      if not existing then redis.call('SET', dk, id) end
    end
    if existing then
      add(out, j, pack_job(existing))
    else
      local seq = last - n + j + 1
      local f = {'id', id, 'name', name, 'queue', queue, 'payload', payload,
                 'state', 'queued', 'due_at', due, 'enqueued_at', enq, 'seq', seq,
                 'priority', priority, 'attempts', 0, 'max_attempts', max_attempts}
      if timeout ~= '' then add(f, 'timeout', timeout) end
      if key then add(f, 'key', key) end
      if schedule then add(f, 'schedule', schedule) end
      if fire_at then add(f, 'fire_at', fire_at) end
      redis.call('HSET', jk, unpack(f))
      redis.call('ZADD', JOBS, seq, id)
      push(id, queue, due, seq, priority)
      queues[queue] = true
      inserted[id] = true
      inserted_in[queue] = (inserted_in[queue] or 0) + 1
    end
  end
  for queue, _ in pairs(queues) do redis.call('SADD', QUEUES, queue) end
  return out
end
""".replace("__PROMOTE_LIMIT__", str(_PROMOTE_LIMIT)).replace(
    "__JOB_FIELDS__", ", ".join(f"'{name}'" for name in _JOB_FIELDS)
)

# ARGV: n, then n jobs (see insert_jobs).
# The prelude's sections, and the sections each one uses. A script includes
# only what it needs: the whole prelude on every call costs measurable server time.
_SECTION_NEEDS: dict[str, tuple[str, ...]] = {
    "base": (),
    "pack": ("base",),
    "wake": ("base",),
    "ready": ("wake",),
    "finish": ("ready",),
    "sweep": ("base",),
    "insert": ("pack", "ready"),
}
_SECTIONS: dict[str, str] = {
    chunk.split("\n", 1)[0].strip(): chunk.split("\n", 1)[1]
    for chunk in _PRELUDE.split("--@section ")[1:]
}


def _script(body: str, *needs: str) -> str:
    """The source of one script: the prelude sections it needs (in order), then *body*."""
    wanted: set[str] = set()

    def want(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for need in _SECTION_NEEDS[name]:
                want(need)

    for need in ("base", *needs):
        want(need)
    return "".join(_SECTIONS[name] for name in _SECTION_NEEDS if name in wanted) + body


_ENQUEUE = """
local out = insert_jobs(6, tonumber(ARGV[5]))
publish_wakes()
return out
"""

# ARGV: worker id, lease seconds, token prefix, k, then k (queue, limit) pairs, then
# n and n jobs as for _ENQUEUE. Inserts the jobs, then claims for the worker each
# queue's head while it is one of them (up to the queue's limit; not in a paused
# queue): exactly what the worker's next claim would take. Returns {the jobs not
# inserted as for _ENQUEUE, the claimed (id, token) pairs, expiry, claim time}.
_ENQUEUE_CLAIM = """
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
"""

# ARGV: queue, limit, worker id, lease seconds, token prefix. Returns packed jobs.
_CLAIM = """
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
"""

# ARGV: lease seconds, then (id, token) pairs. Returns {lost ids, cancel-requested ids}.
_HEARTBEAT = """
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
"""

# ARGV: outcomes of id, token, code, then the values the code announces. The
# code is the kind (c complete, r retry, l release, d dead, x cancelled) and
# flags for present values, in this order: R result, D due_at, E error type and
# message, T traceback. Returns {refused ids, queues woken}.
_SETTLE = """
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
""".replace("__SWEEP_LIMIT__", str(_SWEEP_LIMIT))

# ARGV: error type, error message. Returns {how many jobs were requeued or killed,
# queues woken}.
_RECOVER = """
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
"""

# ARGV: id, token, progress, has message ('1'/'0'), message.
_SET_PROGRESS = """
local jk = job_key(ARGV[5])
local f = redis.call('HMGET', jk, 'state', 'lease_token')
if f[1] ~= 'running' or f[2] ~= ARGV[6] then return 0 end
if ARGV[8] == '1' then redis.call('HSET', jk, 'progress', ARGV[7], 'progress_message', ARGV[9])
else
  redis.call('HSET', jk, 'progress', ARGV[7])
  redis.call('HDEL', jk, 'progress_message')
end
return 1
"""

# ARGV: id. Returns the packed job after the change, or nil.
_CANCEL = """
local id = ARGV[5]
local jk = job_key(id)
local f = redis.call('HMGET', jk, 'state', 'queue', 'due_at', 'seq', 'key')
if not f[1] then return false end
if f[1] == 'queued' then
  unqueue(id, f[2], f[3], f[4])
  finish(id, f[2], f[5], 'cancelled', {}, {})
elseif f[1] == 'running' then
  redis.call('HSET', jk, 'cancel_requested', '1')
end
return pack_job(jk)
"""

# ARGV: id, due_at. Returns the packed job after the change, or nil.
_RETRY_DEAD = """
local id = ARGV[5]
local jk = job_key(id)
local f = redis.call('HMGET', jk, 'state', 'queue', 'key', 'seq', 'priority')
if not f[1] then return false end
if f[1] == 'dead' then
  if f[3] then
    local dk = dedup_key(f[3])
    local holder = redis.call('GET', dk)
    if holder and holder ~= id then
      local state = redis.call('HGET', job_key(holder), 'state')
      -- An active job took the key meanwhile: reviving this one would break dedup.
      if state == 'queued' or state == 'running' then return pack_job(jk) end
    end
    redis.call('SET', dk, id)
  end
  redis.call('PERSIST', jk)
  redis.call('ZREM', qkey(f[2], 'dead'), id)
  redis.call('ZREM', EXPIRY, expiry_member('dead', f[2], id))
  requeue(id, f[2], ARGV[6], f[4], f[5], {'attempts', 0}, {'finished_at'})
  publish_wakes()
end
return pack_job(jk)
"""

# ARGV: queue, paused ('1'/'0').
_PAUSE_QUEUE = """
if ARGV[6] == '1' then redis.call('SADD', PAUSED, ARGV[5])
else
  redis.call('SREM', PAUSED, ARGV[5])
  woken[ARGV[5]] = true
  publish_wakes()
end
return 1
"""

# ARGV: limit, then (state, cutoff) pairs. Returns how many jobs were deleted.
_PRUNE = """
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
      redis.call('DEL', job_key(id))
      redis.call('ZREM', JOBS, id)
      redis.call('ZREM', EXPIRY, expiry_member(state, queue, id))
    end
    if #ids > 0 then redis.call('ZREM', zk, unpack(ids)) end
    count = count + #ids
  end
end
return count
""".replace("__SWEEP_LIMIT__", str(_SWEEP_LIMIT))

# Returns flat groups of (queue, paused, queued, running, complete, dead, cancelled).
_QUEUE_STATS = """
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
""".replace("__SWEEP_LIMIT__", str(_SWEEP_LIMIT))

# ARGV: queues. Returns the earliest due_at of a queued job in the unpaused ones, or nil.
_NEXT_DUE = """
local best = nil
for i = 5, #ARGV do
  local queue = ARGV[i]
  if redis.call('SISMEMBER', PAUSED, queue) == 0 then
    local d = redis.call('ZRANGE', qkey(queue, 'delayed'), 0, 0, 'WITHSCORES')
    if d[2] and (best == nil or tonumber(d[2]) < best) then best = tonumber(d[2]) end
    -- Ready jobs sort by priority first: the earliest due time is the first
    -- member of some priority level, so visit one member per level.
    local rk = qkey(queue, 'ready')
    local first = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    while first[1] do
      local due = redis.call('HGET', job_key(string.sub(first[1], ID_AT)), 'due_at')
      if due and (best == nil or tonumber(due) < best) then best = tonumber(due) end
      first = redis.call('ZRANGEBYSCORE', rk, '(' .. first[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    end
  end
end
if best == nil then return false end
return fmt(best)
"""

# ARGV: first rank, how many, filter flags (q s n c), queue, state, name, schedule.
# Returns {number scanned, matching ids}, newest first.
_LIST_SCAN = """
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
"""

_SCHEDULE_KEY = "P .. ':schedule:' .. ARGV[5]"

# ARGV: name, trigger, then field/value pairs of the new definition.
_PUT_SCHEDULE = """
local sk = __SCHEDULE_KEY__
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
redis.call('SADD', P .. ':schedules', ARGV[5])
return redis.call('HGETALL', sk)
""".replace("__SCHEDULE_KEY__", _SCHEDULE_KEY)

# ARGV: name, paused ('1'/'0'). Returns the schedule's fields, or nil.
_PAUSE_SCHEDULE = """
local sk = __SCHEDULE_KEY__
if redis.call('EXISTS', sk) == 0 then return false end
redis.call('HSET', sk, 'paused', ARGV[6])
return redis.call('HGETALL', sk)
""".replace("__SCHEDULE_KEY__", _SCHEDULE_KEY)

# ARGV: name. Returns 1 when a schedule was deleted.
_REMOVE_SCHEDULE = """
redis.call('SREM', P .. ':schedules', ARGV[5])
return redis.call('DEL', __SCHEDULE_KEY__)
""".replace("__SCHEDULE_KEY__", _SCHEDULE_KEY)

# ARGV: name, expected fire time, has next ('1'/'0'), next fire time, n, then n jobs.
# Returns the enqueue reply, or nil when the tick was already fired (or paused).
_FIRE_SCHEDULE = """
local sk = __SCHEDULE_KEY__
local f = redis.call('HMGET', sk, 'next_fire_at', 'paused')
if not f[1] or f[2] == '1' or tonumber(f[1]) ~= tonumber(ARGV[6]) then return false end
redis.call('HSET', sk, 'last_fire_at', ARGV[6])
if ARGV[7] == '1' then redis.call('HSET', sk, 'next_fire_at', ARGV[8])
else redis.call('HDEL', sk, 'next_fire_at') end
local out = insert_jobs(10, tonumber(ARGV[9]))
publish_wakes()
return out
""".replace("__SCHEDULE_KEY__", _SCHEDULE_KEY)

_SCRIPTS = {
    "enqueue": _script(_ENQUEUE, "insert"),
    "enqueue_claim": _script(_ENQUEUE_CLAIM, "insert"),
    "claim": _script(_CLAIM, "pack", "ready"),
    "heartbeat": _script(_HEARTBEAT),
    "settle": _script(_SETTLE, "finish", "sweep"),
    "recover": _script(_RECOVER, "finish"),
    "set_progress": _script(_SET_PROGRESS),
    "cancel": _script(_CANCEL, "pack", "finish"),
    "retry_dead": _script(_RETRY_DEAD, "pack", "finish"),
    "pause_queue": _script(_PAUSE_QUEUE, "wake"),
    "prune": _script(_PRUNE, "finish", "sweep"),
    "queue_stats": _script(_QUEUE_STATS, "sweep"),
    "next_due": _script(_NEXT_DUE, "ready"),
    "list_scan": _script(_LIST_SCAN),
    "put_schedule": _script(_PUT_SCHEDULE),
    "pause_schedule": _script(_PAUSE_SCHEDULE),
    "remove_schedule": _script(_REMOVE_SCHEDULE),
    "fire_schedule": _script(_FIRE_SCHEDULE, "insert"),
}
