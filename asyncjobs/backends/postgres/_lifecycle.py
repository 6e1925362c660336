"""A job from claim to outcome: claim, heartbeat, settle, lease recovery, progress.

- **Claims** are one statement: a CTE selects the due jobs in claim order
  (``jobs_claim``) ``FOR UPDATE SKIP LOCKED LIMIT n``, the ``UPDATE ... FROM``
  it leases them (a fresh ``gen_random_uuid()`` token each, the lease from
  the statement's ``now``), and a last CTE moves the queue's partition round
  on. Concurrent claims never wait for each other's rows and never return a
  job twice. (Claims under limits are in ``_flow.py``.)
- **Outcomes** of a batch are one ``UPDATE ... FROM unnest(...)``: the
  lease-token check and the write in one statement, each row appending its
  attempt to the job's history. Outcomes with ``remove`` delete their jobs in
  a sibling CTE (disjoint rows). Requeued jobs, and any job leaving a queue
  claimed under a concurrency limit, wake that queue's waiters at commit.
  A finished job lets the jobs queued behind it go through a trigger
  (``_schema.py``), which wakes their queues too.
- **Heartbeats** extend every held lease of a batch in one statement.
- **Recovery** takes back expired leases in one statement (``jobs_lease``),
  skipping rows a heartbeat holds at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ..._models import MAX_ATTEMPT_HISTORY, ErrorInfo, Job, JobStart, Outcome
from .. import HeartbeatReply
from ._codec import prefixed, to_job
from ._database import NOW, Database

__all__ = ["Statements", "claim", "heartbeat", "recover_expired", "set_progress", "settle"]

# Mirrors memory.py, so every backend reports a lost lease the same way.
_EXPIRED_ERROR: Final = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)
_REQUEUE: Final = "('retry', 'release')"


def history_append(
    q: str, started_at: str, outcome: str, error_type: str, error_message: str
) -> str:
    """``history = ...``: the job's history with one more attempt (the latest kept).

    The attempt's number and worker are the row's before the update.
    """
    history = "coalesce(j.history, '[]'::jsonb)"
    return (
        f"history = (CASE WHEN jsonb_array_length({history}) >= {MAX_ATTEMPT_HISTORY}"
        f" THEN {history} - 0 ELSE {history} END) || jsonb_build_array(jsonb_build_array("
        f"j.attempts, j.worker_id, {started_at}, (SELECT now FROM t), {outcome},"
        f" {error_type}, {error_message}))"
    )


def wake_cte(q: str, source: str) -> str:
    """A CTE ``w`` bumping the wake counters of the queues in *source* (``queue, kind``)
    that got work back (a requeue) or a free slot (a limited queue); ``w`` returns them."""
    return (
        f"w AS (INSERT INTO {q}.queues (name, wake_seq)"
        f" SELECT DISTINCT x.queue, 1 FROM ({source}) AS x"
        f" LEFT JOIN {q}.queues AS qq ON qq.name = x.queue"
        f" WHERE x.kind IN {_REQUEUE} OR qq.limited"
        f" ON CONFLICT (name) DO UPDATE SET wake_seq = {q}.queues.wake_seq + 1"
        " RETURNING name)"
    )


class Statements:
    """The lifecycle statements of one schema."""

    def __init__(self, q: str) -> None:
        # $1 now, $2 queue, $3 limit, $4 lease, $5 worker
        self.claim = f"""
            WITH {NOW},
            c AS (
                SELECT seq FROM {q}.jobs
                WHERE state = 'queued' AND queue = $2 AND due_at <= (SELECT now FROM t)
                AND NOT EXISTS (SELECT 1 FROM {q}.queues WHERE name = $2 AND paused)
                ORDER BY priority, round, due_at, seq
                LIMIT $3 FOR UPDATE SKIP LOCKED
            ),
            u AS (
                UPDATE {q}.jobs AS j SET state = 'running', attempts = j.attempts + 1,
                    lease_token = replace(gen_random_uuid()::text, '-', ''),
                    lease_expires_at = (SELECT now FROM t) + $4, worker_id = $5,
                    started_at = NULL, progress = NULL, progress_message = NULL
                FROM c WHERE j.seq = c.seq
                RETURNING {prefixed("j")}, j.seq, j.round
            ),
            r AS (
                UPDATE {q}.queues SET round = m.round
                FROM (SELECT max(round) AS round FROM u) AS m
                WHERE name = $2 AND {q}.queues.round < m.round
            )
            SELECT * FROM u
        """
        self.heartbeat = f"""
            WITH {NOW}
            UPDATE {q}.jobs AS j SET lease_expires_at = (SELECT now FROM t) + $2
            FROM unnest($3::text[], $4::text[]) AS o(id, token)
            WHERE j.id = o.id AND j.lease_token = o.token AND j.state = 'running'
            RETURNING j.id, j.cancel_requested
        """
        requeue = f"o.kind IN {_REQUEUE}"
        # $1 now, $2 channel, $3.. one array per outcome field.
        self.settle = f"""
            WITH {NOW},
            o AS (
                SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::float8[],
                    $7::float8[], $8::bytea[], $9::text[], $10::text[], $11::text[], $12::bool[])
                AS o(id, token, kind, started_at, due_at, result, error_type, error_message,
                     error_traceback, remove)
            ),
            u AS (
                UPDATE {q}.jobs AS j SET
                    started_at = coalesce(o.started_at, j.started_at),
                    state = CASE WHEN {requeue} THEN 'queued' ELSE o.kind END,
                    result = CASE WHEN o.kind = 'complete' THEN o.result ELSE j.result END,
                    error_type = CASE WHEN o.kind = 'release' THEN j.error_type
                        ELSE o.error_type END,
                    error_message = CASE WHEN o.kind = 'release' THEN j.error_message
                        ELSE o.error_message END,
                    error_traceback = CASE WHEN o.kind = 'release' THEN j.error_traceback
                        ELSE o.error_traceback END,
                    due_at = CASE WHEN {requeue}
                        THEN coalesce(o.due_at, (SELECT now FROM t)) ELSE j.due_at END,
                    attempts = CASE WHEN o.kind = 'release' THEN greatest(0, j.attempts - 1)
                        ELSE j.attempts END,
                    finished_at = CASE WHEN {requeue} THEN j.finished_at
                        ELSE (SELECT now FROM t) END,
                    lease_token = NULL, lease_expires_at = NULL,
                    worker_id = CASE WHEN {requeue} THEN NULL ELSE j.worker_id END,
                    cancel_requested = CASE WHEN {requeue} THEN false ELSE j.cancel_requested END,
                    progress = CASE WHEN {requeue} THEN NULL ELSE j.progress END,
                    progress_message = CASE WHEN {requeue} THEN NULL ELSE j.progress_message END,
                    {history_append(q, "o.started_at", "o.kind", "o.error_type", "o.error_message")}
                FROM o
                WHERE j.id = o.id AND j.lease_token = o.token AND j.state = 'running'
                AND NOT (o.remove AND NOT {requeue})
                RETURNING j.id, j.queue, o.kind
            ),
            d AS (
                DELETE FROM {q}.jobs AS j USING o
                WHERE o.remove AND NOT {requeue}
                AND j.id = o.id AND j.lease_token = o.token AND j.state = 'running'
                RETURNING j.id, j.queue, o.kind, j.key
            ),
            k AS (
                DELETE FROM {q}.keys USING d WHERE {q}.keys.key = d.key AND {q}.keys.job_id = d.id
            ),
            {wake_cte(q, "SELECT queue, kind FROM u UNION ALL SELECT queue, kind FROM d")}
            SELECT id FROM u UNION ALL SELECT id FROM d
            UNION ALL SELECT NULL FROM w WHERE pg_notify($2, w.name) IS NULL
        """
        self.starts = f"""
            UPDATE {q}.jobs AS j SET started_at = o.started_at
            FROM unnest($1::text[], $2::text[], $3::float8[]) AS o(id, token, started_at)
            WHERE j.id = o.id AND j.lease_token = o.token AND j.state = 'running'
        """
        dead = "j.attempts >= j.max_attempts"
        # $1 now, $2 channel, $3 error type, $4 error message
        self.recover = f"""
            WITH {NOW},
            e AS (
                SELECT seq FROM {q}.jobs
                WHERE state = 'running' AND lease_expires_at <= (SELECT now FROM t)
                FOR UPDATE SKIP LOCKED
            ),
            u AS (
                UPDATE {q}.jobs AS j SET
                    state = CASE WHEN {dead} THEN 'dead' ELSE 'queued' END,
                    finished_at = CASE WHEN {dead} THEN (SELECT now FROM t) ELSE j.finished_at END,
                    due_at = CASE WHEN {dead} THEN j.due_at ELSE (SELECT now FROM t) END,
                    error_type = $3::text, error_message = $4::text, error_traceback = NULL,
                    lease_token = NULL, lease_expires_at = NULL,
                    worker_id = CASE WHEN {dead} THEN j.worker_id ELSE NULL END,
                    cancel_requested = CASE WHEN {dead} THEN j.cancel_requested ELSE false END,
                    progress = CASE WHEN {dead} THEN j.progress ELSE NULL END,
                    progress_message = CASE WHEN {dead} THEN j.progress_message ELSE NULL END,
                    {history_append(q, "j.started_at", "'lease_expired'", "$3::text", "$4::text")}
                FROM e WHERE j.seq = e.seq
                RETURNING j.queue, CASE WHEN j.state = 'queued' THEN 'retry' ELSE 'dead' END AS kind
            ),
            {wake_cte(q, "SELECT queue, kind FROM u")}
            SELECT 'job' FROM u
            UNION ALL SELECT NULL FROM w WHERE pg_notify($2, w.name) IS NULL
        """
        self.progress = f"""
            UPDATE {q}.jobs SET progress = $1, progress_message = $2
            WHERE id = $3 AND state = 'running' AND lease_token = $4 RETURNING 1
        """


async def claim(db: Database, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
    """Claim up to *limit* due jobs of *queue* in one statement."""
    if limit <= 0:
        return []
    rows = await db.fetch(
        "claim", db.statements.lifecycle.claim, db.now_arg(), queue, limit, lease, worker_id
    )
    if len(rows) > 1:
        # RETURNING gives rows in no particular order: restore the claim order.
        rows.sort(key=lambda row: (row["priority"], row["round"], row["due_at"], row["seq"]))
    return [to_job(row) for row in rows]


async def heartbeat(db: Database, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
    """Extend the leases still held to ``now + lease``."""
    if not leases:
        return HeartbeatReply()
    rows = await db.fetch(
        "heartbeat",
        db.statements.lifecycle.heartbeat,
        db.now_arg(),
        lease,
        list(leases),
        list(leases.values()),
    )
    return HeartbeatReply(
        lost=frozenset(leases.keys() - {row["id"] for row in rows}),
        cancel_requested=frozenset(row["id"] for row in rows if row["cancel_requested"]),
    )


async def settle(
    db: Database, outcomes: Sequence[Outcome], starts: Sequence[JobStart] = ()
) -> list[str]:
    """Apply the outcomes and starts whose lease token is current; return the refused ids.

    Starts are written first: an outcome's own ``started_at`` (when given) wins.
    """
    if not outcomes and not starts:
        return []
    statements = db.statements.lifecycle
    # Only the first outcome of a job can hold its lease: a repeat in the same
    # batch is refused, as it would be in a later batch.
    first: dict[str, Outcome] = {}
    for outcome in outcomes:
        first.setdefault(outcome.job_id, outcome)
    columns: list[list[object]] = [[] for _ in range(10)]
    for outcome in first.values():
        error = outcome.error
        for column, value in zip(
            columns,
            (
                outcome.job_id,
                outcome.lease_token,
                str(outcome.kind),
                outcome.started_at,
                outcome.due_at,
                outcome.result,
                None if error is None else error.type,
                None if error is None else error.message,
                None if error is None else error.traceback,
                outcome.remove,
            ),
            strict=True,
        ):
            column.append(value)
    start_args = (
        [start.job_id for start in starts],
        [start.lease_token for start in starts],
        [start.started_at for start in starts],
    )
    if not first:
        await db.execute("settle", statements.starts, *start_args)
        return []
    if starts:
        async with db.transaction("settle") as conn:
            await conn.execute(statements.starts, *start_args)
            rows = await conn.fetch(statements.settle, db.now_arg(), db.channel, *columns)
    else:
        rows = await db.fetch("settle", statements.settle, db.now_arg(), db.channel, *columns)
    accepted = {row["id"] for row in rows}
    return [
        outcome.job_id
        for outcome in outcomes
        if outcome.job_id not in accepted or first[outcome.job_id] is not outcome
    ]


async def recover_expired(db: Database) -> int:
    """Requeue running jobs whose lease ran out; kill those out of attempts."""
    rows = await db.fetch(
        "recover_expired",
        db.statements.lifecycle.recover,
        db.now_arg(),
        db.channel,
        _EXPIRED_ERROR.type,
        _EXPIRED_ERROR.message,
    )
    return sum(1 for row in rows if row[0] is not None)


async def set_progress(
    db: Database, job_id: str, lease_token: str, progress: float, message: str | None
) -> bool:
    """Store progress for a job whose lease is still held; ``False`` otherwise."""
    row = await db.fetchrow(
        "set_progress", db.statements.lifecycle.progress, progress, message, job_id, lease_token
    )
    return row is not None
