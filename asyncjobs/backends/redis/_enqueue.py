"""New jobs in: the insert scripts, and the group commit that shares them between callers.

A plain enqueue is one ``EVALSHA`` over the enqueue lane (see
:class:`~._connection.Lane`); the script inserts the jobs and publishes the
wake-ups itself, so there is no second round trip. Enqueues that arrive while
one is in flight wait and go together in the next script call, which is how a
hundred request handlers enqueueing at once share round trips: see
:class:`GroupCommit`. An enqueue with a handoff is one ``EVALSHA`` of its own.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence

import anyio
import attrs

from ..._exceptions import BackendError
from ..._models import Handoff, Job, JobState, NewJob
from ._codec import checks_conflicts, decode_enqueued, job_args, num
from ._connection import Connection
from ._prelude import script
from ._wakeups import Wakeups

__all__ = [
    "ENQUEUE",
    "ENQUEUE_CLAIM",
    "SCRIPTS",
    "GroupCommit",
    "enqueue_checked",
    "enqueue_with_handoff",
]

#: What one shared script call carries at most (unless one caller's jobs alone
#: are more), so no call blocks the server long: jobs, and payload bytes.
MAX_BATCH_JOBS = 500
MAX_BATCH_BYTES = 1 << 20

# ARGV: n, check ('1': a job has on_conflict "raise"), then n jobs (see insert_jobs).
ENQUEUE = script(
    "enqueue",
    """
local n = tonumber(ARGV[5])
if ARGV[6] == '1' then
  local conflict = check_conflicts(7, n)
  if conflict then return conflict end
end
local out = insert_jobs(7, n)
publish_wakes()
return out
""",
    "insert",
)

# ARGV: worker id, lease seconds, token prefix, k, then k (queue, limit) pairs, then
# n, check and n jobs as for ENQUEUE. Inserts the jobs, then claims for the worker
# each queue's head while it is one of them (up to the queue's limit; not in a
# paused queue): exactly what the worker's next claim would take. Returns {the jobs
# not inserted as for ENQUEUE, the claimed (id, token) pairs, expiry}; {the
# conflict} when a "raise" job met a holder (nothing written).
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
local n = tonumber(ARGV[pos])
if ARGV[pos + 1] == '1' then
  local conflict = check_conflicts(pos + 2, n)
  if conflict then return {conflict} end
end
local out = insert_jobs(pos + 2, n)
local claimed = {}
for queue, limit in pairs(limits) do
  if inserted_in[queue] and redis.call('SISMEMBER', PAUSED, queue) == 0 then
    promote(queue)
    local rk = qkey(queue, 'ready')
    local taken, top = 0, 0
    while taken < limit do
      local head = redis.call('ZRANGE', rk, 0, 0)
      if #head == 0 then break end
      local id = string.sub(head[1], ID_AT)
      local new = inserted[id]
      if not new then break end
      redis.call('ZREM', rk, head[1])
      taken = taken + 1
      local token = prefix .. '.' .. (#claimed / 2 + 1)
      -- A new job: no start, progress or attempt to clear (see lease()).
      redis.call('HSET', job_key(id), 'state', 'running', 'attempts', '1', 'lease_token',
                 token, 'lease_expires_at', expires, 'worker_id', worker)
      redis.call('ZADD', qkey(queue, 'running'), expires, id)
      if new ~= true then
        if new.partition then
          redis.call('HINCRBY', qkey(queue, 'prunning'), new.partition, 1)
          if new.round > top then top = new.round end
        end
        if new.key then
          local dk = dedup_key(new.key)
          if redis.call('GET', dk) == id then redis.call('DEL', dk) end
        end
      end
      add(claimed, id, token)
    end
    claimed_round(queue, top)
    -- Every new job of the queue went to this worker: nobody else needs waking.
    if taken == inserted_in[queue] then woken[queue] = nil end
  end
end
publish_wakes()
return {out, claimed, expires}
""",
    "insert",
    "lease",
)

SCRIPTS = (ENQUEUE, ENQUEUE_CLAIM)


def _enqueue_args(jobs: Sequence[NewJob], check: bool = False) -> list[str | bytes]:
    args: list[str | bytes] = [str(len(jobs)), "1" if check else "0"]
    for new in jobs:
        args += job_args(new)
    return args


async def enqueue_with_handoff(
    conn: Connection, wakeups: Wakeups, jobs: Sequence[NewJob], handoff: Handoff
) -> list[Job]:
    """Insert *jobs* and claim for the offering worker the ones a claim would take next."""
    head: list[str | bytes] = [
        handoff.worker_id,
        num(handoff.lease),
        uuid.uuid4().hex,
        str(len(handoff.limits)),
    ]
    for queue, limit in handoff.limits.items():
        head += [queue, str(int(limit))]
    reply = await conn.run(ENQUEUE_CLAIM, head + _enqueue_args(jobs, checks_conflicts(jobs)))
    stored = decode_enqueued(jobs, reply[0])
    claimed, expires = reply[1], reply[2]
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
            )
    wakeups.notify({job.queue for job in stored if job.state is JobState.QUEUED})
    return stored


async def enqueue_checked(conn: Connection, wakeups: Wakeups, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert *jobs*, of which some have ``on_conflict="raise"``, in a script call of their own.

    Not shared with other callers (see :class:`GroupCommit`): a conflict stores
    nothing of the call, and only this caller's jobs must fail with it.

    :raises DuplicateJobError: when a ``raise`` job meets a holder of its key.
    """
    stored = decode_enqueued(jobs, await conn.run(ENQUEUE, _enqueue_args(jobs, check=True)))
    wakeups.notify({new.queue for new in jobs})
    return stored


def _payload_bytes(jobs: Sequence[NewJob]) -> int:
    return sum(len(new.payload) for new in jobs)


class _Call:
    """One caller's enqueue, from arrival until a script call has carried it."""

    __slots__ = ("abandoned", "done", "error", "jobs", "lead", "result", "sent")

    def __init__(self, jobs: Sequence[NewJob]) -> None:
        self.jobs = jobs
        self.done: anyio.Event | None = None  # made only for a caller that waits
        self.lead = False  # woken to send the next script call
        self.sent = False  # a script call carrying it is in flight
        self.abandoned = False  # its caller left (cancelled) while it was in flight
        self.result: list[Job] | None = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        if self.done is not None:
            self.done.set()


class GroupCommit:
    """Plain enqueues share script calls: one caller at a time sends, the others wait.

    A caller that finds nothing in flight sends its jobs at once (a lone
    enqueue waits for nobody). Callers that arrive meanwhile queue up; when
    the call in flight returns, the first of them sends everything queued so
    far (up to :data:`MAX_BATCH_JOBS` jobs and :data:`MAX_BATCH_BYTES` of
    payload) in one script call, and so on. The script inserts the jobs in
    arrival order, atomically; each caller gets its own jobs back, or its own
    :class:`~asyncjobs.BackendError` when that call failed, and only once the
    reply is in, so an enqueue that returned is as durable as the server
    makes any write.

    A caller cancelled while it waits leaves the queue. When the sender is
    cancelled mid-call, the others of its call go first in the next one: a
    job that did reach the server comes back as stored (the insert skips an
    id it already has), so nothing is inserted twice.
    """

    def __init__(self, conn: Connection, wakeups: Wakeups) -> None:
        self._conn = conn
        self._wakeups = wakeups
        self._queue: deque[_Call] = deque()
        self._busy = False  # a script call is in flight, or its next sender is being woken

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert *jobs* (with the usual dedup), sharing a script call with concurrent callers.

        :raises BackendError: when the script call that carried *jobs* failed.
        """
        call = _Call(jobs)
        if self._busy:
            call.done = anyio.Event()
            self._queue.append(call)
            try:
                await call.done.wait()
            except BaseException:
                self._abandon(call)
                raise
            if not call.lead:
                return self._outcome(call)
        self._busy = True
        batch = [call]
        queue = self._queue
        if queue:
            count, size = len(jobs), _payload_bytes(jobs)
            while queue:
                more = queue[0].jobs
                count += len(more)
                size += _payload_bytes(more)
                if count > MAX_BATCH_JOBS or size > MAX_BATCH_BYTES:
                    break
                batch.append(queue.popleft())
        return await self._send(batch)

    async def _send(self, batch: list[_Call]) -> list[Job]:
        """Send *batch* in one script call, hand each caller its jobs, pass the turn on.

        :returns: the jobs of the first call in *batch* (the sender's own).
        """
        for call in batch:
            call.sent = True
        news = batch[0].jobs if len(batch) == 1 else [new for call in batch for new in call.jobs]
        try:
            replies = await self._conn.run_on_lane(ENQUEUE, _enqueue_args(news))
            stored = decode_enqueued(news, replies)
        except Exception as exc:
            for call in batch[1:]:
                call.error = exc
                call.finish()
            self._pass_turn()
            raise
        except BaseException:
            # The sender was cancelled mid-call: the others go first in the next call.
            for call in reversed(batch[1:]):
                if not call.abandoned:
                    call.sent = False
                    self._queue.appendleft(call)
            self._pass_turn()
            raise
        self._wakeups.notify({new.queue for new in news})
        start = len(batch[0].jobs)
        for call in batch[1:]:
            end = start + len(call.jobs)
            call.result = stored[start:end]
            call.finish()
            start = end
        self._pass_turn()
        return stored if len(batch) == 1 else stored[: len(batch[0].jobs)]

    def _pass_turn(self) -> None:
        """Wake the first queued caller to send the next call, or let the next one send at once."""
        if self._queue:
            first = self._queue.popleft()
            first.lead = True
            first.finish()
        else:
            self._busy = False

    def _abandon(self, call: _Call) -> None:
        """*call*'s caller left while it waited (cancelled)."""
        if call.lead:
            self._pass_turn()  # it was woken to send: the next caller sends instead
        elif call.sent:
            call.abandoned = True  # in flight: its jobs may be stored, nobody waits for them
        else:
            self._queue.remove(call)

    @staticmethod
    def _outcome(call: _Call) -> list[Job]:
        error = call.error
        if error is not None:
            # Each caller gets an exception of its own (one shared object would
            # collect every caller's traceback), chained to the same cause.
            if isinstance(error, BackendError):
                raise BackendError(str(error)) from error.__cause__
            raise BackendError(f"the enqueue failed: {type(error).__name__}: {error}") from error
        assert call.result is not None
        return call.result
