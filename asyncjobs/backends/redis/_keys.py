"""The key layout: every key and channel the backend uses, under one prefix.

Key layout under the prefix ``P`` (default ``asyncjobs``)::

    P:job:<id>              hash    one job; its fields are named after Job's attributes
                                    (error as error_type/error_message/error_traceback,
                                    plus seq, the enqueue order); finished jobs expire
                                    (finished_ttl, dead_ttl); tags as one field, each
                                    key and value as <len>:<bytes>
    P:attempts:<id>         list    one job's attempt history, oldest first: the latest
                                    MAX_ATTEMPT_HISTORY, each packed as a job is (see
                                    _codec.ATTEMPT_FIELDS); expires, is pruned and is
                                    deleted with its job
    P:jobs                  zset    every job id by seq (listing, newest first)
    P:seq                   string  the enqueue-order counter
    P:key:<key>             string  dedup key -> the job holding it: its id (scopes
                                    queued and active: deleted when the job is claimed,
                                    resp. finishes), or ~id for a window hold, set with
                                    a TTL to the window's end (key_expires_at, also
                                    checked against the scripts' clock)
    P:queues                set     every queue name ever enqueued to
    P:paused                set     paused queue names
    P:q:<queue>:ready       zset    due jobs in claim order: score = priority, member =
                                    round (%010d) + due_at (%018.6f) + seq (%016d) + id,
                                    so equal priorities sort by partition round, then
                                    due time, then enqueue order
    P:q:<queue>:delayed     zset    queued jobs not yet due, by due_at (moved to ready
                                    by the claim that finds them due)
    P:q:<queue>:waiting     zset    queued jobs waiting behind a running job with their
                                    key (hash field waits_for), by due_at: in neither
                                    ready nor delayed until that job ends
    P:behind:<id>           set     the ids of the jobs waiting behind job <id>; deleted,
                                    and its jobs moved to ready or delayed, when <id>
                                    finishes or is deleted
    P:q:<queue>:running     zset    running jobs by lease expiry (crash recovery; its
                                    ZCARD is what global_concurrency counts)
    P:q:<queue>:prunning    hash    partition -> running jobs of it (partition_concurrency);
                                    a partition's field is deleted at 0
    P:q:<queue>:round       string  the queue's current round: the highest claimed
    P:q:<queue>:rounds      hash    partition -> round of its last job enqueued (one
                                    field per partition ever enqueued to the queue)
    P:q:<queue>:complete    zset    finished jobs by finished_at (prune), one per
    P:q:<queue>:dead                final state
    P:q:<queue>:cancelled
    P:expiry                zset    finished jobs by the server time their hash expires,
                                    member = state:len(queue):queue+id; scripts sweep it to
                                    drop expired jobs from the indexes above
    P:limited               set     queues claimed under a concurrency limit: a running
                                    job of theirs ending publishes their wake channel
    P:rate:<window>         zset    claim times in a rate window (queue:<name>,
                                    job:<name>), member = time + claim token; expires
                                    per seconds after its last claim
    P:schedule:<name>       hash    one schedule; fields named after Schedule's attributes
    P:schedules             set     schedule names
    P:workers               hash    worker id -> its record's data (register_worker)
    P:workers:seen          zset    worker ids by last_seen; list_workers deletes the
                                    ones not seen since its cutoff (from both keys)
    P:audit                 zset    audit entries by time, member = %016d of a counter
                                    + the entry's data (unique for equal times; newest
                                    first by ZREVRANGE); prune_audit trims it
    P:audit:seq             string  the audit entries' counter
    P:wake:<queue>          channel published when a queue gets work (enqueue, retry,
                                    release, recovery, resume, a waiting job let go;
                                    in a limited queue, also a running job's end)

Every key is bounded: a job's keys (its history too) live while it is active,
and for ``finished_ttl`` (``dead_ttl`` for dead jobs) after it finished, or
until ``prune``, ``purge`` or ``delete_job`` deletes it (a behind set goes
when its job stops being active); a window hold and a rate window expire by
themselves; the per-queue round keys grow with the number of partitions, as
``P:queues`` does with queues; the workers' keys hold the live runtimes
(aged-out ones are deleted when listed), the audit trail what ``prune_audit``
keeps. The scripts build their keys from the prefix (no key is passed in
``KEYS``), so Redis Cluster is not supported; a restricted ACL user needs
``~P:*`` keys and ``&P:*`` channels.

Both sides of the layout live here: :class:`Keys` for the Python side, and
:data:`LUA_KEYS`, the helpers every script uses for the same names.
"""

from __future__ import annotations

import attrs

__all__ = ["LUA_KEYS", "Keys"]


@attrs.frozen
class Keys:
    """The names of the keys and channels under one prefix, for the Python side."""

    prefix: str

    @property
    def jobs(self) -> str:
        """Every job id by enqueue order."""
        return f"{self.prefix}:jobs"

    @property
    def seq(self) -> str:
        """The enqueue-order counter."""
        return f"{self.prefix}:seq"

    @property
    def workers(self) -> str:
        """Worker id -> its record's data."""
        return f"{self.prefix}:workers"

    @property
    def workers_seen(self) -> str:
        """Worker ids by when they were last seen."""
        return f"{self.prefix}:workers:seen"

    @property
    def audit(self) -> str:
        """The audit entries by time."""
        return f"{self.prefix}:audit"

    @property
    def audit_seq(self) -> str:
        """The audit entries' counter (keeps members unique for equal times)."""
        return f"{self.prefix}:audit:seq"

    @property
    def schedules(self) -> str:
        """The set of schedule names."""
        return f"{self.prefix}:schedules"

    def job(self, job_id: str) -> str:
        """One job's hash."""
        return f"{self.prefix}:job:{job_id}"

    def attempts(self, job_id: str) -> str:
        """One job's attempt history."""
        return f"{self.prefix}:attempts:{job_id}"

    def schedule(self, name: str) -> str:
        """One schedule's hash."""
        return f"{self.prefix}:schedule:{name}"

    def wake(self, queue: str) -> str:
        """The channel published when *queue* gets work."""
        return f"{self.prefix}:wake:{queue}"


# The Lua side: P is the prefix (the scripts' first argument).
LUA_KEYS = r"""
local JOBS = P .. ':jobs'
local SEQ = P .. ':seq'
local QUEUES = P .. ':queues'
local PAUSED = P .. ':paused'
local EXPIRY = P .. ':expiry'
local SCHEDULES = P .. ':schedules'
local LIMITED = P .. ':limited'
local WORKERS = P .. ':workers'
local WORKERS_SEEN = P .. ':workers:seen'
local AUDIT = P .. ':audit'
local AUDIT_SEQ = P .. ':audit:seq'
local function job_key(id) return P .. ':job:' .. id end
local function attempts_key(id) return P .. ':attempts:' .. id end
local function qkey(queue, part) return P .. ':q:' .. queue .. ':' .. part end
local function dedup_key(key) return P .. ':key:' .. key end
local function behind_key(id) return P .. ':behind:' .. id end
local function schedule_key(name) return P .. ':schedule:' .. name end
local function wake_channel(queue) return P .. ':wake:' .. queue end
local function rate_key(window) return P .. ':rate:' .. window end
"""
