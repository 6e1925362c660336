"""The prelude's ``waiting`` section: jobs queued behind a running job with their key.

An ``on_conflict="replace"`` that meets a running holder stores its job with
``waits_for`` set to that holder. Such a job sits in its queue's ``waiting``
zset instead of ``ready`` or ``delayed``, so the claim scripts, a handoff and
``next_due`` never see it and its hot paths stay as they were; the holder's
``behind`` set names it, so whatever ends the holder (``finish`` and
``drop_job`` in the prelude) lets it go. Only a key's holder can have jobs
behind it, which is why those functions look only when the ending job has a key.
"""

from __future__ import annotations

__all__ = ["WAITING_LUA"]

#: Lua for the prelude (after its ``ready`` section, whose ``push`` it uses).
WAITING_LUA = r"""
local function wait_behind(id, queue, due, holder)
  redis.call('ZADD', qkey(queue, 'waiting'), due, id)
  redis.call('SADD', behind_key(holder), id)
end

-- The holder finished or is gone: the jobs queued behind it go to ready or delayed
-- at their own due time (waking their queues). One cancelled meanwhile loses its
-- waits_for only; one deleted meanwhile is no longer found.
local function release_waiting(holder)
  local bk = behind_key(holder)
  local ids = redis.call('SMEMBERS', bk)
  if #ids == 0 then return end
  redis.call('DEL', bk)
  for _, id in ipairs(ids) do
    local jk = job_key(id)
    local w = redis.call('HMGET', jk, 'waits_for', 'state', 'queue', 'due_at', 'seq',
                         'priority', 'round')
    if w[1] == holder then
      redis.call('HDEL', jk, 'waits_for')
      if w[2] == 'queued' then
        redis.call('ZREM', qkey(w[3], 'waiting'), id)
        push(id, w[3], w[4], w[5], w[6], w[7])
      end
    end
  end
end
"""
