"""The Lua every script shares, and how one script's source is put together.

Every script is the sections of the prelude it needs followed by its body,
and takes the same four leading arguments: ARGV[1] prefix, ARGV[2] now ('' =
read the server's TIME), ARGV[3] finished_ttl and ARGV[4] dead_ttl in ms (0 =
keep until pruned); its own arguments start at ARGV[5]. No key is passed in
KEYS: the scripts build them from the prefix (see :mod:`._keys`). The scripts
themselves live beside the code that calls them (``_enqueue.py``, ``_lifecycle.py``,
``_control.py``, ``_schedules.py``, ``_inspection.py``, ``_wakeups.py``).
"""

from __future__ import annotations

import hashlib

import attrs

from ..._models import MAX_ATTEMPT_HISTORY
from ._codec import JOB_FIELDS
from ._keys import LUA_KEYS
from ._waiting import WAITING_LUA

__all__ = ["Script", "script"]

# Bounds on the work one script call does, so no call blocks the server for long.
PROMOTE_LIMIT = 1_000
SWEEP_LIMIT = 500


@attrs.frozen
class Script:
    """One Lua script: the operation's name, its full source, and the SHA1 ``EVALSHA`` takes."""

    name: str
    source: str = attrs.field(repr=False)
    sha: str = attrs.field(init=False, repr=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


_PRELUDE = (
    (
        r"""
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
"""
        + LUA_KEYS
        + r"""
local function has(flags, c) return string.find(flags, c, 1, true) ~= nil end
local function add(list, ...) for _, v in ipairs({...}) do list[#list + 1] = v end end

--@section pack
-- A job travels back as one string: each value of JOB_FIELDS as <len>:<bytes>,
-- or '-' when absent. One bulk reply per job parses far faster client-side
-- than HGETALL's fifty.
local JOB_FIELDS = {__JOB_FIELDS__}
local F_NAME, F_STATE, F_ATTEMPTS, F_KEY, F_TOKEN, F_EXPIRES, F_WORKER, F_STARTED =
  2, 5, 9, 12, 14, 15, 16, 17
local F_PROGRESS, F_PROGRESS_MESSAGE, F_PARTITION = 23, 24, 27
-- What a claim reads: the packed fields, then the hash-only ones it needs.
local CLAIM_FIELDS = {__JOB_FIELDS__, 'round', 'key_scope'}
local F_ROUND, F_KEY_SCOPE = #JOB_FIELDS + 1, #JOB_FIELDS + 2
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
    redis.call('PUBLISH', wake_channel(queue), '')
    names[#names + 1] = queue
  end
  return names
end

--@section ready
-- The ready zset orders equal priorities by this member: partition round (a
-- job's hash has none in round 0), due time, then seq.
local ID_AT = 45
local function ready_member(due, seq, id, round)
  local d = tonumber(due)
  if d < 0 then d = 0 elseif d > 99999999999 then d = 99999999999 end
  return string.format('%010d%018.6f%016d', tonumber(round or 0), d, tonumber(seq)) .. id
end

local function push(id, queue, due, seq, priority, round)
  if tonumber(due) <= NOW then
    redis.call('ZADD', qkey(queue, 'ready'), priority, ready_member(due, seq, id, round))
  else
    redis.call('ZADD', qkey(queue, 'delayed'), due, id)
  end
  -- Wake on delayed jobs too: a sleeping worker may need an earlier deadline.
  woken[queue] = true
end

-- waits: the job's waits_for; a job waiting behind another is in neither ready
-- nor delayed (see _waiting.py).
local function unqueue(id, queue, due, seq, round, waits)
  if waits then
    redis.call('ZREM', qkey(queue, 'waiting'), id)
    return
  end
  redis.call('ZREM', qkey(queue, 'ready'), ready_member(due, seq, id, round))
  redis.call('ZREM', qkey(queue, 'delayed'), id)
end

local function promote(queue)
  local dk = qkey(queue, 'delayed')
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', NOW_S, 'LIMIT', 0, __PROMOTE_LIMIT__)
  if #due == 0 then return end
  local rk = qkey(queue, 'ready')
  for _, id in ipairs(due) do
    local f = redis.call('HMGET', job_key(id), 'due_at', 'seq', 'priority', 'round')
    if f[1] then redis.call('ZADD', rk, f[3], ready_member(f[1], f[2], id, f[4])) end
  end
  redis.call('ZREM', dk, unpack(due))
end

--@section lease
-- Lease one job for a worker: v holds its CLAIM_FIELDS (changed in place to the
-- claimed job). Its handler has not started: started_at stays unset until its
-- worker reports the start. Returns the job's round (0 without a partition).
local function lease(id, queue, v, token, expires, worker)
  local jk = job_key(id)
  local attempts = tostring(tonumber(v[F_ATTEMPTS]) + 1)
  redis.call('HSET', jk, 'state', 'running', 'attempts', attempts, 'lease_token', token,
             'lease_expires_at', expires, 'worker_id', worker)
  if v[F_STARTED] or v[F_PROGRESS] or v[F_PROGRESS_MESSAGE] then
    redis.call('HDEL', jk, 'started_at', 'progress', 'progress_message')
    v[F_STARTED] = false
    v[F_PROGRESS] = false
    v[F_PROGRESS_MESSAGE] = false
  end
  redis.call('ZADD', qkey(queue, 'running'), expires, id)
  if v[F_PARTITION] then redis.call('HINCRBY', qkey(queue, 'prunning'), v[F_PARTITION], 1) end
  if v[F_KEY_SCOPE] == 'queued' then
    local dk = dedup_key(v[F_KEY])
    if redis.call('GET', dk) == id then redis.call('DEL', dk) end
  end
  v[F_STATE] = 'running'
  v[F_ATTEMPTS] = attempts
  v[F_TOKEN] = token
  v[F_EXPIRES] = expires
  v[F_WORKER] = worker
  return tonumber(v[F_ROUND] or 0)
end

-- After claims up to round top: the queue's current round is the highest claimed.
local function claimed_round(queue, top)
  if top > 0 then
    local ck = qkey(queue, 'round')
    if top > tonumber(redis.call('GET', ck) or 0) then redis.call('SET', ck, top) end
  end
end

--@section finish
-- A running job left the running set (ZREM's reply, was = 1): count it out of its
-- partition, and in a queue claimed under a concurrency limit wake the waiters.
local limited_queues = {}
local function left_running(queue, partition)
  if partition then
    local pk = qkey(queue, 'prunning')
    if redis.call('HINCRBY', pk, partition, -1) <= 0 then redis.call('HDEL', pk, partition) end
  end
  local limited = limited_queues[queue]
  if limited == nil then
    limited = redis.call('SISMEMBER', LIMITED, queue) == 1
    limited_queues[queue] = limited
  end
  if limited then woken[queue] = true end
end

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
-- (A window hold, ~id, outlives its job: only its TTL or its job's end ends it.)
local function finish(id, queue, key, state, set, del, partition)
  local jk = job_key(id)
  add(set, 'state', state, 'finished_at', NOW_S)
  add(del, 'lease_token', 'lease_expires_at')
  redis.call('HSET', jk, unpack(set))
  redis.call('HDEL', jk, unpack(del))
  if redis.call('ZREM', qkey(queue, 'running'), id) == 1 then left_running(queue, partition) end
  redis.call('ZADD', qkey(queue, state), NOW_S, id)
  if key then
    local dk = dedup_key(key)
    if redis.call('GET', dk) == id then redis.call('DEL', dk) end
    -- Only a key's holder can have jobs behind it: keyless jobs pay nothing here.
    release_waiting(id)
  end
  local ttl = FIN_TTL
  if state == 'dead' then ttl = DEAD_TTL end
  if ttl > 0 then
    -- The hash (and its history) expires by itself; its sweep entry drops it from
    -- the indexes then.
    redis.call('PEXPIRE', jk, ttl)
    redis.call('PEXPIRE', attempts_key(id), ttl)
    redis.call('ZADD', EXPIRY, fmt(server_now() + ttl / 1000), expiry_member(state, queue, id))
  end
end

-- A job goes (back) to queued at due, keeping its round. set/del: more fields to
-- write or delete.
local function requeue(id, queue, due, seq, priority, set, del, round, partition)
  local jk = job_key(id)
  add(set, 'state', 'queued', 'due_at', due)
  add(del, 'lease_token', 'lease_expires_at', 'worker_id', 'cancel_requested', 'progress',
      'progress_message')
  redis.call('HSET', jk, unpack(set))
  redis.call('HDEL', jk, unpack(del))
  if redis.call('ZREM', qkey(queue, 'running'), id) == 1 then left_running(queue, partition) end
  push(id, queue, due, seq, priority, round)
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
    redis.call('DEL', job_key(id), attempts_key(id))
  end
  if #doomed > 0 then redis.call('ZREM', EXPIRY, unpack(doomed)) end
end

--@section attempts
-- Add the attempt that just ended (finished now) to a job's history, keeping the
-- latest __MAX_ATTEMPTS__; packed as a job is, in _codec.ATTEMPT_FIELDS order.
-- Record it before the job finishes: finish() gives the history the job's TTL.
local function packed(v) if v then return #v .. ':' .. v end return '-' end
local function record_attempt(id, number, outcome, worker, started, etype, emsg)
  local ak = attempts_key(id)
  local entry = packed(number) .. packed(outcome) .. packed(NOW_S) .. packed(worker)
    .. packed(started) .. packed(etype) .. packed(emsg)
  if redis.call('RPUSH', ak, entry) > __MAX_ATTEMPTS__ then
    redis.call('LTRIM', ak, -__MAX_ATTEMPTS__, -1)
  end
end

--@section delete
-- A deleted job's keys go, with its history, and so does a dedup key it holds (a
-- window hold too).
local function drop_job(id, key)
  if key then
    local dk = dedup_key(key)
    local holder = redis.call('GET', dk)
    if holder == id or holder == '~' .. id then redis.call('DEL', dk) end
    release_waiting(id)
  end
  redis.call('ZREM', JOBS, id)
  redis.call('DEL', job_key(id), attempts_key(id))
end

-- Delete a job that is not running from every index. f holds its DELETE_FIELDS.
local DELETE_FIELDS = {'state', 'queue', 'due_at', 'seq', 'key', 'round', 'waits_for'}
local function delete_job(id, f)
  local state, queue = f[1], f[2]
  if f[7] then redis.call('SREM', behind_key(f[7]), id) end
  if state == 'queued' then unqueue(id, queue, f[3], f[4], f[6], f[7])
  else
    redis.call('ZREM', qkey(queue, state), id)
    redis.call('ZREM', EXPIRY, expiry_member(state, queue, id))
  end
  drop_job(id, f[5])
end

-- A running job that an outcome finishes and removes: deleted instead of finished.
local function remove_running(id, queue, key, partition)
  if redis.call('ZREM', qkey(queue, 'running'), id) == 1 then left_running(queue, partition) end
  drop_job(id, key)
end

--@section filter
-- A job filter (list_jobs, purge) from ARGV[pos]: flags, then a value for each
-- flag given, in this order: q queue, s state, n name, c schedule, p partition,
-- a enqueued at or after, b enqueued before, f finished before, t tags (their
-- count, then key/value pairs); see _codec.filter_args. Returns the filter and
-- the position after it.
local FILTER_FIELDS = {'queue', 'state', 'name', 'schedule', 'partition', 'enqueued_at',
                       'finished_at', 'tags'}
local function read_filter(pos)
  local flags, flt = ARGV[pos], {}
  pos = pos + 1
  for _, c in ipairs({'q', 's', 'n', 'c', 'p', 'a', 'b', 'f'}) do
    if has(flags, c) then flt[c] = ARGV[pos]; pos = pos + 1 end
  end
  for _, c in ipairs({'a', 'b', 'f'}) do
    if flt[c] then flt[c] = tonumber(flt[c]) end
  end
  if has(flags, 't') then
    local tags = {}
    for _ = 1, tonumber(ARGV[pos]) do
      tags[ARGV[pos + 1]] = ARGV[pos + 2]
      pos = pos + 2
    end
    flt.t = tags
    pos = pos + 1
  end
  return flt, pos
end

-- A job's tags field (see _codec.tags_arg) as a table.
local function unpack_tags(s)
  local tags, pos, n = {}, 1, #s
  local function take()
    local colon = string.find(s, ':', pos, true)
    local len = tonumber(string.sub(s, pos, colon - 1))
    pos = colon + len + 1
    return string.sub(s, colon + 1, colon + len)
  end
  while pos <= n do
    local k = take()
    tags[k] = take()
  end
  return tags
end

-- Whether a job's FILTER_FIELDS (f; f[1] is nil for a job that is gone) match flt.
local function job_matches(flt, f)
  if not f[1] then return false end
  if (flt.q and f[1] ~= flt.q) or (flt.s and f[2] ~= flt.s) or (flt.n and f[3] ~= flt.n)
      or (flt.c and f[4] ~= flt.c) or (flt.p and f[5] ~= flt.p) then
    return false
  end
  if (flt.a and tonumber(f[6]) < flt.a) or (flt.b and tonumber(f[6]) >= flt.b)
      or (flt.f and not (f[7] and tonumber(f[7]) < flt.f)) then
    return false
  end
  if flt.t then
    if not f[8] then return false end
    local tags = unpack_tags(f[8])
    for k, v in pairs(flt.t) do
      if tags[k] ~= v then return false end
    end
  end
  return true
end

--@section holder
-- The job holding a dedup key now, and its state; nil when no job does. A window
-- hold (~id) lasts until the job's key_expires_at, whatever its state, unless
-- the job is gone (pruned or expired); a plain one while its job is active.
local function key_holder(key)
  local v = redis.call('GET', dedup_key(key))
  if not v then return nil end
  if string.byte(v, 1) == 126 then
    local id = string.sub(v, 2)
    local f = redis.call('HMGET', job_key(id), 'state', 'key_expires_at')
    if f[1] and f[2] and tonumber(f[2]) > NOW then return id, f[1] end
    return nil
  end
  local state = redis.call('HGET', job_key(v), 'state')
  if state == 'queued' or state == 'running' then return v, state end
  return nil
end

--@section insert
-- Insert n jobs whose arguments start at ARGV[pos]. Each job is: id, name,
-- queue, payload, 'flags|due_at|enqueued_at|priority|max_attempts|timeout',
-- then key if flags has 'k', schedule if it has 's', fire_at if it has 'f',
-- partition if it has 'p', key_expires_at if it has 'e' and tags if it has 't' (see
-- _codec.job_args). More flags: the key's scope 'q' queued or 'w' window
-- (else active), and its conflict rule 'r' replace or 'x' raise (else return).
-- Nothing but this insert writes fire_at. Returns (index from 0, packed job)
-- pairs for the jobs not inserted, whose existing job (same id, the key's
-- holder) stands in for them, and for those inserted to wait behind a running
-- holder ('r'), which are stored with waits_for.

-- Before anything is written: the first job with 'x' whose key is held, by a
-- stored job or by an earlier job of the batch, as {-1, key, holder id}; or nil.
local function check_conflicts(pos, n)
  local batch = {}
  for _ = 1, n do
    local id = ARGV[pos]
    local flags = string.match(ARGV[pos + 4], '^(%l*)|')
    pos = pos + 5
    if has(flags, 'k') then
      local key = ARGV[pos]
      -- A job already stored under its id is a retry of a lost reply, not a conflict.
      if has(flags, 'x') and redis.call('EXISTS', job_key(id)) == 0 then
        local holder = batch[key]
        if not holder then holder = key_holder(key) end
        if holder then return {-1, key, holder} end
      end
      if not batch[key] then batch[key] = id end
    end
    for _, c in ipairs({'k', 's', 'f', 'p', 'e', 't'}) do
      if has(flags, c) then pos = pos + 1 end
    end
  end
  return nil
end

-- The round of a new job of partition in queue: the one after its partition's
-- last, but not before the queue's current round.
local function next_round(queue, partition)
  local rk = qkey(queue, 'rounds')
  local last = redis.call('HGET', rk, partition)
  local round = tonumber(redis.call('GET', qkey(queue, 'round')) or 0)
  if last and tonumber(last) + 1 > round then round = tonumber(last) + 1 end
  redis.call('HSET', rk, partition, round)
  return round
end

-- A queued holder takes a replacing job's payload and due time (keeping its place
-- in the rounds and enqueue order). One waiting behind a running job keeps waiting.
local function replace_queued(hid, payload, due)
  local hk = job_key(hid)
  local h = redis.call('HMGET', hk, 'queue', 'due_at', 'seq', 'priority', 'round', 'waits_for')
  redis.call('HSET', hk, 'payload', payload, 'due_at', due)
  if h[6] then redis.call('ZADD', qkey(h[1], 'waiting'), due, hid)
  else
    unqueue(hid, h[1], h[2], h[3], h[5])
    push(hid, h[1], due, h[3], h[4], h[5])
  end
end

-- The jobs this call inserted, per queue (for a handoff): id -> true (or, for a
-- job a claim must count in or release a key of, {partition, round, key}), and
-- counts.
local inserted, inserted_in = {}, {}
local function insert_jobs(pos, n)
  local out = {}
  if n == 0 then return out end
  local last = redis.call('INCRBY', SEQ, n)
  local queues = {}
  for j = 0, n - 1 do
    local id, name, queue, payload = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 3]
    local flags, due, enq, priority, max_attempts, timeout =
      string.match(ARGV[pos + 4], '^(%l*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
    pos = pos + 5
    local key, schedule, fire_at, partition, key_expires, tags = nil, nil, nil, nil, nil, nil
    if flags ~= '' then
      if has(flags, 'k') then key = ARGV[pos]; pos = pos + 1 end
      if has(flags, 's') then schedule = ARGV[pos]; pos = pos + 1 end
      if has(flags, 'f') then fire_at = ARGV[pos]; pos = pos + 1 end
      if has(flags, 'p') then partition = ARGV[pos]; pos = pos + 1 end
      if has(flags, 'e') then key_expires = ARGV[pos]; pos = pos + 1 end
      if has(flags, 't') then tags = ARGV[pos]; pos = pos + 1 end
    end
    local jk = job_key(id)
    local existing, waits = nil, nil
    if redis.call('EXISTS', jk) == 1 then
      -- The same id again: a client's retry of an enqueue whose reply was lost.
      existing = jk
    elseif key then
      local hid, hstate = key_holder(key)
      if hid then
        if not has(flags, 'r') then existing = job_key(hid)
        elseif hstate == 'running' then waits = hid  -- the two must never run at once
        else
          if hstate == 'queued' then replace_queued(hid, payload, due) end
          existing = job_key(hid)
        end
      end
      if not existing then
        local dk = dedup_key(key)
        if has(flags, 'w') then
          local ms = 0
          if key_expires then ms = math.ceil((tonumber(key_expires) - NOW) * 1000) end
          -- The TTL bounds the key; the scripts' clock judges the window.
          if ms > 0 then redis.call('SET', dk, '~' .. id, 'PX', string.format('%.0f', ms))
          else redis.call('DEL', dk) end
        else
          redis.call('SET', dk, id)
        end
      end
    end
    if existing then
      add(out, j, pack_job(existing))
    else
      local seq = last - n + j + 1
      local f = {'id', id, 'name', name, 'queue', queue, 'payload', payload,
                 'state', 'queued', 'due_at', due, 'enqueued_at', enq, 'seq', seq,
                 'priority', priority, 'attempts', 0, 'max_attempts', max_attempts}
      -- (Appended in place: add() builds a table per call, on the hot path.)
      if timeout ~= '' then f[#f + 1] = 'timeout'; f[#f + 1] = timeout end
      local round = nil
      if flags ~= '' then
        if key then
          f[#f + 1] = 'key'; f[#f + 1] = key
          if has(flags, 'q') then f[#f + 1] = 'key_scope'; f[#f + 1] = 'queued'
          elseif has(flags, 'w') then f[#f + 1] = 'key_scope'; f[#f + 1] = 'window' end
          if key_expires then f[#f + 1] = 'key_expires_at'; f[#f + 1] = key_expires end
          if waits then f[#f + 1] = 'waits_for'; f[#f + 1] = waits end
        end
        if schedule then f[#f + 1] = 'schedule'; f[#f + 1] = schedule end
        if fire_at then f[#f + 1] = 'fire_at'; f[#f + 1] = fire_at end
        if partition then
          round = next_round(queue, partition)
          f[#f + 1] = 'partition'; f[#f + 1] = partition
          f[#f + 1] = 'round'; f[#f + 1] = round
        end
        if tags then f[#f + 1] = 'tags'; f[#f + 1] = tags end
      end
      redis.call('HSET', jk, unpack(f))
      redis.call('ZADD', JOBS, seq, id)
      queues[queue] = true
      if waits then
        -- Not claimable, so not one a handoff may take; the caller needs its waits_for.
        wait_behind(id, queue, due, waits)
        add(out, j, pack_job(jk))
      else
        push(id, queue, due, seq, priority, round)
        if round or (key and has(flags, 'q')) then
          inserted[id] = {partition = partition, round = round, key = has(flags, 'q') and key}
        else
          inserted[id] = true
        end
        inserted_in[queue] = (inserted_in[queue] or 0) + 1
      end
    end
  end
  for queue, _ in pairs(queues) do redis.call('SADD', QUEUES, queue) end
  return out
end
"""
    )
    .replace("__PROMOTE_LIMIT__", str(PROMOTE_LIMIT))
    .replace("__MAX_ATTEMPTS__", str(MAX_ATTEMPT_HISTORY))
    .replace("__JOB_FIELDS__", ", ".join(f"'{name}'" for name in JOB_FIELDS))
)

# The prelude's sections, and the sections each one uses. A script includes
# only what it needs: the whole prelude on every call costs measurable server time.
_SECTION_NEEDS: dict[str, tuple[str, ...]] = {
    "base": (),
    "pack": ("base",),
    "wake": ("base",),
    "ready": ("wake",),
    "waiting": ("ready",),
    "finish": ("waiting",),
    "sweep": ("base",),
    "attempts": ("base",),
    "delete": ("finish",),
    "filter": ("base",),
    "holder": ("base",),
    "lease": ("pack", "ready"),
    "insert": ("pack", "waiting", "holder"),
}
_SECTIONS: dict[str, str] = {
    chunk.split("\n", 1)[0].strip(): chunk.split("\n", 1)[1]
    for chunk in _PRELUDE.split("--@section ")[1:]
}
_SECTIONS["waiting"] = WAITING_LUA


def script(name: str, body: str, *needs: str) -> Script:
    """The script *name*: the prelude sections it *needs* (in order), then *body*."""
    wanted: set[str] = set()

    def want(section: str) -> None:
        if section not in wanted:
            wanted.add(section)
            for need in _SECTION_NEEDS[section]:
                want(need)

    for need in ("base", *needs):
        want(need)
    prelude = "".join(_SECTIONS[section] for section in _SECTION_NEEDS if section in wanted)
    return Script(name=name, source=prelude + body.replace("__SWEEP_LIMIT__", str(SWEEP_LIMIT)))
