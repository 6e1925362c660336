"""Claims under cluster-wide limits (the ``FlowControl`` group): ``claim_limited``.

One transaction, which first takes a transaction-level advisory lock for the
queue (and one per job name with a rate), so the limited claims of every
process on one queue take turns and each judges the counts the previous one
committed (READ COMMITTED: every statement reads the latest commits):

- ``global_concurrency`` and ``partition_concurrency`` count the queue's
  running jobs (``jobs_running``; plain claims count too);
- ``rate`` and ``job_rates`` are sliding windows of claim times in
  ``rate_claims`` (``"queue:<name>"``, ``"job:<name>"``), judged by the
  store's clock after the locks are held; rows that left a window are
  deleted as the window is read. A read costs the same however full the
  window: its count is a row of ``rate_counts`` (kept by triggers, schema
  version 3), its oldest claim one index seek, and the delete starts where
  the last one stopped (:func:`_window`). The queue's window is read with the
  queue's state, and the claims are recorded by the statement that leases the
  jobs;
- due jobs are read in claim order a page at a time, and a job that a limit
  holds back is skipped, so later ones may still be taken; partitions and
  names found full are left out of the next pages in SQL.

A queue claimed under a concurrency limit is marked ``limited`` in
``queues``: a running job there ending or being requeued then wakes the
queue's waiters in every process (``_lifecycle.py``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import asyncpg

from ..._models import ClaimLimits, ClaimReply, Job, RateWindow
from .._windows import WindowCount
from ._codec import JOB_COLUMNS, to_job
from ._database import NOW, Database

__all__ = ["Statements", "claim_limited"]

# Due jobs read per page while looking for ones no limit holds back.
_PAGE: Final = 256


def _window(q: str, name: str, start: str, columns: str = "") -> str:
    """The CTEs and select list that read the rate window *name* at *start* (claims at
    or before it have left, and are deleted).

    The count is the window's ``rate_counts`` row as this statement found it, less
    the rows it deletes (the trigger takes them off the row after the statement).
    The delete starts at ``pruned_to`` (no claim of the window is older), which it
    raises to *start*, so it never steps over the index entries of the claims
    deleted before; the oldest claim left is one seek in ``rate_claims_window``.
    """
    return f"""
        c AS MATERIALIZED (SELECT n, pruned_to FROM {q}.rate_counts WHERE name = {name}),
        d AS (
            DELETE FROM {q}.rate_claims WHERE name = {name}
            AND at >= coalesce((SELECT pruned_to FROM c), '-infinity') AND at <= {start}
            RETURNING 1
        ),
        p AS (
            UPDATE {q}.rate_counts SET pruned_to = {start}
            WHERE name = {name} AND pruned_to < {start} AND EXISTS (SELECT FROM d)
        )
        SELECT {columns}
            coalesce((SELECT n FROM c), 0) - (SELECT count(*) FROM d) AS n,
            (SELECT min(at) FROM {q}.rate_claims WHERE name = {name} AND at > {start}) AS oldest
    """


class Statements:
    """The flow-control statements of one schema."""

    def __init__(self, q: str) -> None:
        self.lock = (
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k"
        )
        self.mark_limited = (
            f"INSERT INTO {q}.queues (name, limited) VALUES ($1, true)"
            f" ON CONFLICT (name) DO UPDATE SET limited = true WHERE NOT {q}.queues.limited"
        )
        state = f"""
            (SELECT now FROM t) AS now,
            EXISTS (SELECT 1 FROM {q}.queues WHERE name = $2 AND paused) AS paused,
            (SELECT count(*) FROM {q}.jobs WHERE state = 'running' AND queue = $2) AS running
        """
        self.state = f"WITH {NOW} SELECT {state}"
        # $1 the clock, $2 the queue, $3 its window's name, $4 the window's per: the
        # state and the queue's rate window, read together.
        self.state_window = f"WITH {NOW}, " + _window(
            q, "$3", "((SELECT now FROM t) - $4::float8)", f"{state},"
        )
        # $1 the window's name, $2 its start
        self.window = "WITH " + _window(q, "$1", "$2::float8")
        self.partitions = (
            f"SELECT partition, count(*) AS n FROM {q}.jobs"
            " WHERE state = 'running' AND queue = $1 AND partition IS NOT NULL"
            " GROUP BY partition"
        )
        self.page = f"""
            SELECT seq, name, partition, priority, round, due_at FROM {q}.jobs
            WHERE state = 'queued' AND queue = $1 AND due_at <= $2
            AND ($3::int8 IS NULL OR (priority, round, due_at, seq) > ($3, $4, $5, $6))
            AND (partition IS NULL OR NOT partition = ANY($7::text[]))
            AND NOT name = ANY($8::text[])
            ORDER BY priority, round, due_at, seq LIMIT $9
        """
        # The jobs are found by seq (the primary key). ``state || ''`` keeps the
        # planner off the partial indexes on ``state = 'queued'``: stale statistics
        # (a burst of jobs since the last analyze) made it scan every queued job of
        # jobs_due for the few seqs, a cost growing with the backlog.
        lease = f"""
            u AS (
                UPDATE {q}.jobs AS j SET state = 'running', attempts = j.attempts + 1,
                    lease_token = replace(gen_random_uuid()::text, '-', ''),
                    lease_expires_at = $1, worker_id = $2,
                    started_at = NULL, progress = NULL, progress_message = NULL
                WHERE j.seq = ANY($3::int8[]) AND j.state || '' = 'queued'
                RETURNING {JOB_COLUMNS}, seq, round
            ),
            r AS (
                UPDATE {q}.queues SET round = m.round
                FROM (SELECT max(round) AS round FROM u) AS m
                WHERE name = $4 AND {q}.queues.round < m.round
            )
        """
        self.lease = f"WITH {lease} SELECT * FROM u"
        # The same, and each job claimed counts in its windows: $5 the claim time, $6
        # the queue's window (NULL: none), $7 the job names whose windows were read.
        self.lease_counted = f"""
            WITH {lease},
            c AS (
                INSERT INTO {q}.rate_claims (name, at)
                SELECT w.name, $5::float8 FROM u CROSS JOIN LATERAL (
                    SELECT $6::text WHERE $6::text IS NOT NULL
                    UNION ALL SELECT 'job:' || u.name WHERE u.name = ANY($7::text[])
                ) AS w (name)
            )
            SELECT * FROM u
        """


async def _read_window(
    conn: asyncpg.Connection, db: Database, name: str, rate: RateWindow, now: float
) -> WindowCount:
    row = await conn.fetchrow(db.statements.flow.window, name, now - rate.per)
    assert row is not None
    return _window_count(row, rate)


def _window_count(row: asyncpg.Record, rate: RateWindow) -> WindowCount:
    return WindowCount(rate, int(row["n"]), row["oldest"])


async def _claim_within(
    conn: asyncpg.Connection,
    db: Database,
    queue: str,
    limit: int,
    worker_id: str,
    lease: float,
    limits: ClaimLimits,
) -> ClaimReply:
    statements = db.statements.flow
    locks = [f"{db.schema}:limit:{queue}"]
    locks += [f"{db.schema}:rate:{name}" for name in sorted(limits.job_rates)]
    await conn.execute(statements.lock, sorted(locks))
    if limits.binds_concurrency:
        await conn.execute(statements.mark_limited, queue)
    queue_window_name = f"queue:{queue}" if limits.rate is not None else None
    if limits.rate is None:
        state = await conn.fetchrow(statements.state, db.now_arg(), queue)
    else:
        state = await conn.fetchrow(
            statements.state_window, db.now_arg(), queue, queue_window_name, limits.rate.per
        )
    assert state is not None
    if limit <= 0 or state["paused"]:
        return ClaimReply(jobs=[])
    now: float = state["now"]
    held: list[str] = []
    opens: list[float] = []
    cap = limit
    if limits.global_concurrency is not None:
        free = limits.global_concurrency - int(state["running"])
        if free < cap:
            cap, held = max(0, free), ["global_concurrency"]
    queue_window: WindowCount | None = None
    if limits.rate is not None:
        queue_window = _window_count(state, limits.rate)
        free = limits.rate.limit - queue_window.count
        if free < cap:
            cap, held = max(0, free), ["rate_limit"]
            opened = queue_window.opens_at()
            if free <= 0 and opened is not None:
                opens.append(opened)
    per_partition: dict[str, int] = {}
    if limits.partition_concurrency is not None:
        per_partition = {
            row["partition"]: int(row["n"])
            for row in await conn.fetch(statements.partitions, queue)
        }
    job_windows: dict[str, WindowCount] = {}
    full_partitions: set[str] = set()
    full_names: set[str] = set()
    chosen: list[int] = []
    skipped = False
    more_due: bool | None = None  # whether a due job was left unexamined (None: unknown)
    after: tuple[Any, ...] = (None, None, None, None)
    # When no job can be held back one by one (no partition or job limit), the first
    # cap jobs are the claim and one more tells whether a due job is left.
    size = _PAGE if limits.partition_concurrency is not None or limits.job_rates else cap + 1
    while len(chosen) < cap:
        page = await conn.fetch(
            statements.page,
            queue,
            now,
            *after,
            sorted(full_partitions),
            sorted(full_names),
            size,
        )
        for row in page:
            if len(chosen) >= cap:
                more_due = True
                break
            after = (row["priority"], row["round"], row["due_at"], row["seq"])
            partition = row["partition"]
            if (
                partition is not None
                and limits.partition_concurrency is not None
                and per_partition.get(partition, 0) >= limits.partition_concurrency
            ):
                skipped = True
                full_partitions.add(partition)
                held.append("partition_concurrency")
                continue
            name = row["name"]
            rate = limits.job_rates.get(name)
            window = None
            if rate is not None:
                window = job_windows.get(name)
                if window is None:
                    window = job_windows[name] = await _read_window(
                        conn, db, f"job:{name}", rate, now
                    )
                if window.full:
                    skipped = True
                    full_names.add(name)
                    held.append("job_rate_limit")
                    opened = window.opens_at()
                    if opened is not None:
                        opens.append(opened)
                    continue
            chosen.append(row["seq"])
            if partition is not None:
                per_partition[partition] = per_partition.get(partition, 0) + 1
            if queue_window is not None:
                queue_window.add(now)
            if window is not None:
                window.add(now)
        if more_due or len(page) < size:
            more_due = bool(more_due)
            break
    if more_due is None and not skipped and len(chosen) < limit:
        # Stopped at the cap at a page's end (or before any): is a due job left?
        rest = await conn.fetch(statements.page, queue, now, *after, [], [], 1)
        more_due = bool(rest)
    jobs = await _lease(
        conn, db, queue, chosen, now, now + lease, worker_id, queue_window_name, job_windows
    )
    if len(jobs) >= limit or not (skipped or more_due):
        return ClaimReply(jobs=jobs)  # nothing due was held back
    if cap < limit and queue_window is not None and queue_window.full:
        opened = queue_window.opens_at()
        if opened is not None:
            opens.append(opened)
    return ClaimReply(
        jobs=jobs, held_by=held[0] if held else None, retry_at=min(opens, default=None)
    )


async def _lease(
    conn: asyncpg.Connection,
    db: Database,
    queue: str,
    seqs: list[int],
    now: float,
    expires: float,
    worker_id: str,
    queue_window: str | None,
    job_windows: Collection[str],
) -> list[Job]:
    """Claim the jobs *seqs* (still queued: a plain claim may have taken one), in claim order.

    Each job claimed counts at *now* in the window *queue_window* (when given) and
    in its name's window (when its name is in *job_windows*), in the same statement.
    """
    if not seqs:
        return []
    statements = db.statements.flow
    args: tuple[Any, ...] = (expires, worker_id, seqs, queue)
    if queue_window is None and not job_windows:
        rows = await conn.fetch(statements.lease, *args)
    else:
        rows = await conn.fetch(
            statements.lease_counted, *args, now, queue_window, sorted(job_windows)
        )
    rows.sort(key=lambda row: (row["priority"], row["round"], row["due_at"], row["seq"]))
    return [to_job(row) for row in rows]


async def claim_limited(
    db: Database,
    queue: str,
    limit: int,
    worker_id: str,
    lease: float,
    limits: ClaimLimits,
) -> ClaimReply:
    """Claim up to *limit* due jobs of *queue* within *limits*, in one transaction."""
    if limit <= 0 and not limits.binds_concurrency:
        return ClaimReply(jobs=[])
    async with db.transaction("claim") as conn:
        return await _claim_within(conn, db, queue, limit, worker_id, lease, limits)
