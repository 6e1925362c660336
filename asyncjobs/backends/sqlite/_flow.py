"""Claims under cluster-wide limits (the ``FlowControl`` group): ``claim_limited``.

One write transaction, so the counts it judges by are the ones it changes:

- ``global_concurrency`` and ``partition_concurrency`` count the queue's
  running jobs (the lease index; plain claims count too);
- ``rate`` and ``job_rates`` are sliding windows of claim times in
  ``asyncjobs_rate_claims`` (``"queue:<name>"``, ``"job:<name>"``), judged by
  the store's clock once the write lock is held; rows that left a window are
  deleted as the window is read. How many a window holds is kept in
  ``asyncjobs_rate_counts`` (schema 8) by the same transaction: less the rows
  that expiry deleted, plus the claims recorded. So reading a window is a few
  seeks (its count, its oldest claim through the ``(name, at)`` index), not a
  count of every claim in it, which at a few thousand jobs/s and a claim per
  freed slot (rate-limited queues do not prefetch) cost more than the claims;
- due jobs are read in claim order (the claim index, a page at a time) and a
  job that a limit holds back is skipped, so later ones may still be taken;
  partitions and names found full are left out of the next pages in SQL.

A queue claimed under a concurrency limit is marked ``limited`` in
``asyncjobs_queues``: a running job there ending or being requeued then bumps
the queue's wake counter (a trigger of schema 5), so waiters in every
process try again when a slot frees.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from ..._models import ClaimLimits, ClaimReply, Job, RateWindow
from .._windows import WindowCount
from ._codec import to_job
from ._database import Database
from ._lifecycle import claim_order
from ._statements import JOB_COLUMNS, MAX_PARAMS, Row, all_rows, first_row, marks
from ._wakeups import Wakeups
from ._writer import Tx

__all__ = ["claim_limited", "due_page_sql"]

# Due jobs read per page while looking for ones no limit holds back, at most. The
# first page is one more than the claim can take (the extra one tells whether a
# due job is left); each later one, after a page whose jobs were held back, twice
# the last. A claim of a few jobs so reads a few rows, not a page of hundreds.
_PAGE: Final = 256
# Exclusions (full partitions, names out of rate) bound into one page query at most.
_MAX_EXCLUDED: Final = (MAX_PARAMS - 16) // 2

_MARK_LIMITED_SQL: Final = """
    INSERT INTO asyncjobs_queues (name, limited) VALUES (?, 1)
    ON CONFLICT (name) DO UPDATE SET limited = 1 WHERE limited = 0
"""
_CLAIM_SEQS_SQL: Final = """
    UPDATE asyncjobs_jobs
    SET state = 'running', attempts = attempts + 1,
        lease_token = lower(hex(randomblob(16))), lease_expires_at = ?,
        worker_id = ?, started_at = NULL, progress = NULL, progress_message = NULL
    WHERE state = 'queued' AND seq IN ({seqs})
    RETURNING {columns}, seq, round
"""


_EXPIRE_SQL: Final = "DELETE FROM asyncjobs_rate_claims WHERE name = ? AND at <= ?"
_UNCOUNT_SQL: Final = "UPDATE asyncjobs_rate_counts SET n = n - ? WHERE name = ?"
_WINDOW_SQL: Final = """
    SELECT (SELECT n FROM asyncjobs_rate_counts WHERE name = ?1),
           (SELECT MIN(at) FROM asyncjobs_rate_claims WHERE name = ?1)
"""
_COUNT_SQL: Final = """
    INSERT INTO asyncjobs_rate_counts (name, n) VALUES (?, ?)
    ON CONFLICT (name) DO UPDATE SET n = n + excluded.n
"""


def _read_window(conn: sqlite3.Connection, name: str, rate: RateWindow, now: float) -> WindowCount:
    expired = conn.execute(_EXPIRE_SQL, (name, now - rate.per)).rowcount
    if expired > 0:
        conn.execute(_UNCOUNT_SQL, (expired, name))
    [(count, oldest)] = all_rows(conn, _WINDOW_SQL, (name,))
    return WindowCount(rate, int(count or 0), oldest)


def _due_page(
    conn: sqlite3.Connection,
    queue: str,
    now: float,
    after: Row | None,
    full_partitions: set[str],
    full_names: set[str],
    size: int,
) -> list[Row]:
    """Up to *size* due jobs of *queue* after *after*, in claim order.

    Rows are ``(seq, name, partition, priority, round, due_at)``; jobs of
    *full_partitions* and *full_names* are left out.
    """
    params: list[Any] = [queue, now]
    if after is not None:
        params += after
    partitions = sorted(full_partitions) if len(full_partitions) <= _MAX_EXCLUDED else []
    names = sorted(full_names) if len(full_names) <= _MAX_EXCLUDED else []
    sql = due_page_sql(after is not None, len(partitions), len(names))
    return all_rows(conn, sql, [*params, *partitions, *names, size])


def due_page_sql(after: bool, partitions: int, names: int) -> str:
    """The statement of :func:`_due_page`: with a keyset start, and so many exclusions."""
    sql = (
        "SELECT seq, name, partition, priority, round, due_at"
        " FROM asyncjobs_jobs INDEXED BY asyncjobs_jobs_claim"
        " WHERE state = 'queued' AND queue = ? AND due_at <= ?"
    )
    if after:
        sql += " AND (priority, round, due_at, seq) > (?, ?, ?, ?)"
    if partitions:
        sql += f" AND (partition IS NULL OR partition NOT IN ({marks(partitions)}))"
    if names:
        sql += f" AND name NOT IN ({marks(names)})"
    return sql + " ORDER BY priority, round, due_at, seq LIMIT ?"


def _claim_within(
    conn: sqlite3.Connection,
    tx: Tx,
    queue: str,
    limit: int,
    worker_id: str,
    lease: float,
    limits: ClaimLimits,
) -> ClaimReply:
    if limits.binds_concurrency:
        conn.execute(_MARK_LIMITED_SQL, (queue,))
    if limit <= 0 or first_row(
        conn, "SELECT 1 FROM asyncjobs_queues WHERE name = ? AND paused = 1", (queue,)
    ):
        return ClaimReply(jobs=[])
    now = tx.now
    held: list[str] = []
    opens: list[float] = []
    cap = limit
    if limits.global_concurrency is not None:
        [(running,)] = all_rows(
            conn,
            "SELECT COUNT(*) FROM asyncjobs_jobs WHERE state = 'running' AND queue = ?",
            (queue,),
        )
        free = limits.global_concurrency - running
        if free < cap:
            cap, held = max(0, free), ["global_concurrency"]
    queue_window: WindowCount | None = None
    if limits.rate is not None:
        queue_window = _read_window(conn, f"queue:{queue}", limits.rate, now)
        free = limits.rate.limit - queue_window.count
        if free < cap:
            cap, held = max(0, free), ["rate_limit"]
            opened = queue_window.opens_at()
            if free <= 0 and opened is not None:
                opens.append(opened)
    per_partition: dict[str, int] = {}
    if limits.partition_concurrency is not None:
        rows = all_rows(
            conn,
            "SELECT partition, COUNT(*) FROM asyncjobs_jobs"
            " WHERE state = 'running' AND queue = ? AND partition IS NOT NULL"
            " GROUP BY partition",
            (queue,),
        )
        per_partition = {partition: int(count) for partition, count in rows}
    job_windows: dict[str, WindowCount] = {}
    full_partitions: set[str] = set()
    full_names: set[str] = set()
    chosen: list[int] = []
    skipped = False
    # Whether a due job was left unexamined (None: not known yet).
    more_due: bool | None = None
    after: Row | None = None
    size = 0
    while len(chosen) < cap:
        size = min(_PAGE, max(cap - len(chosen) + 1, 2 * size))
        page = _due_page(conn, queue, now, after, full_partitions, full_names, size)
        for seq, name, partition, *order in page:
            if len(chosen) >= cap:
                more_due = True
                break
            after = (*order, seq)
            if (
                partition is not None
                and limits.partition_concurrency is not None
                and per_partition.get(partition, 0) >= limits.partition_concurrency
            ):
                skipped = True
                full_partitions.add(partition)
                held.append("partition_concurrency")
                continue
            rate = limits.job_rates.get(name)
            window = None
            if rate is not None:
                window = job_windows.get(name)
                if window is None:
                    window = job_windows[name] = _read_window(conn, f"job:{name}", rate, now)
                if window.full:
                    skipped = True
                    full_names.add(name)
                    held.append("job_rate_limit")
                    opened = window.opens_at()
                    if opened is not None:
                        opens.append(opened)
                    continue
            chosen.append(seq)
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
        more_due = bool(_due_page(conn, queue, now, after, set(), set(), 1))
    jobs = _lease(conn, chosen, now + lease, worker_id)
    _record_claims(conn, queue, queue_window, job_windows, now)
    if len(jobs) >= limit or not (skipped or more_due):
        return ClaimReply(jobs=jobs)  # nothing due was held back
    if cap < limit and queue_window is not None and queue_window.full:
        opened = queue_window.opens_at()
        if opened is not None:
            opens.append(opened)
    return ClaimReply(
        jobs=jobs, held_by=held[0] if held else None, retry_at=min(opens, default=None)
    )


def _lease(conn: sqlite3.Connection, seqs: list[int], expires: float, worker_id: str) -> list[Job]:
    """Claim the jobs *seqs* (all queued, under the write lock), in claim order."""
    if not seqs:
        return []
    rows: list[Row] = []
    for start in range(0, len(seqs), MAX_PARAMS - 2):
        chunk = seqs[start : start + MAX_PARAMS - 2]
        sql = _CLAIM_SEQS_SQL.format(seqs=marks(len(chunk)), columns=JOB_COLUMNS)
        rows += all_rows(conn, sql, (expires, worker_id, *chunk))
    rows.sort(key=claim_order)
    return [to_job(row) for row in rows]


def _record_claims(
    conn: sqlite3.Connection,
    queue: str,
    queue_window: WindowCount | None,
    job_windows: dict[str, WindowCount],
    now: float,
) -> None:
    """Add this claim's jobs to the rate windows they count in, and to their counts."""
    added: list[tuple[str, int]] = []
    if queue_window is not None and queue_window.added:
        added.append((f"queue:{queue}", queue_window.added))
    added += [(f"job:{name}", window.added) for name, window in job_windows.items() if window.added]
    if added:
        rows = [(name, now) for name, count in added for _ in range(count)]
        conn.executemany("INSERT INTO asyncjobs_rate_claims (name, at) VALUES (?, ?)", rows)
        conn.executemany(_COUNT_SQL, added)


async def claim_limited(
    db: Database,
    wakeups: Wakeups,
    queue: str,
    limit: int,
    worker_id: str,
    lease: float,
    limits: ClaimLimits,
) -> ClaimReply:
    """Claim up to *limit* due jobs of *queue* within *limits*, in one transaction."""
    if limits.binds_concurrency:
        wakeups.limited.add(queue)
    elif limit <= 0:
        return ClaimReply(jobs=[])
    db.stalls.note_lease(lease)

    def body(conn: sqlite3.Connection, tx: Tx) -> ClaimReply:
        return _claim_within(conn, tx, queue, limit, worker_id, lease, limits)

    reply = await db.write("claim", body)
    if reply.jobs:
        wakeups.busy()
    return reply
