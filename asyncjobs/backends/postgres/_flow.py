"""Claims under cluster-wide limits (the ``FlowControl`` group): ``claim_limited``.

A limited claim is one call of the server-side function ``claim_limited``
(schema version 4, ``_schema.py``), so it costs one round trip, as a plain
claim does; as six or seven statements of one transaction, the round trips
were most of its cost. The function first takes a transaction-level advisory
lock for the queue (and one per job name with a rate), with the keys and in
the order :func:`lock_keys` gives, the same as every earlier asyncjobs, so the
limited claims of every process on one queue take turns and each judges the
counts the previous one committed (READ COMMITTED: every statement of the
function reads the latest commits):

- ``global_concurrency`` and ``partition_concurrency`` count the queue's
  running jobs (``jobs_running``; plain claims count too);
- ``rate`` and ``job_rates`` are sliding windows of claim times in
  ``rate_claims`` (``"queue:<name>"``, ``"job:<name>"``), judged by the
  store's clock after the locks are held; rows that left a window are
  deleted as the window is read. A read costs the same however full the
  window: its count is a row of ``rate_counts`` (kept by triggers, schema
  version 3), its oldest claim one index seek, and the delete starts where
  the last one stopped (``read_rate_window``). The claims are recorded by
  the statement that leases the jobs (``lease_limited``);
- due jobs are read in claim order a page at a time, and a job that a limit
  holds back is skipped, so later ones may still be taken; partitions and
  names found full are left out of the next pages in SQL.

A queue claimed under a concurrency limit is marked ``limited`` in
``queues``: a running job there ending or being requeued then wakes the
queue's waiters in every process (``_lifecycle.py``).
"""

from __future__ import annotations

from typing import Any

from ..._models import ClaimLimits, ClaimReply
from ._codec import prefixed, to_job
from ._database import Database

__all__ = ["Statements", "claim_args", "claim_limited", "lock_keys"]


class Statements:
    """The flow-control statements of one schema."""

    def __init__(self, q: str) -> None:
        # One row per job leased, or one row of NULL job columns when none was; every
        # row carries the limit that held jobs back and when to retry.
        self.claim = f"""
            SELECT c.held_by, c.retry_at, {prefixed("j")}, j.seq, j.round
            FROM {q}.claim_limited($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) AS c
            LEFT JOIN LATERAL unnest(c.claimed) AS j ON true
        """


def lock_keys(db: Database, queue: str, limits: ClaimLimits) -> list[str]:
    """The advisory-lock keys of a limited claim, in the order to take them.

    Never change them: processes of every asyncjobs version sharing a schema
    must take the same locks in the same order to exclude each other.
    """
    keys = [f"{db.schema}:limit:{queue}"]
    keys += [f"{db.schema}:rate:{name}" for name in sorted(limits.job_rates)]
    return sorted(keys)


def claim_args(
    db: Database, queue: str, limit: int, worker_id: str, lease: float, limits: ClaimLimits
) -> tuple[Any, ...]:
    """The arguments of :attr:`Statements.claim`."""
    names = sorted(limits.job_rates)
    rate = limits.rate
    return (
        lock_keys(db, queue, limits),
        db.now_arg(),
        queue,
        limit,
        worker_id,
        lease,
        limits.global_concurrency,
        limits.partition_concurrency,
        None if rate is None else rate.limit,
        None if rate is None else rate.per,
        names,
        [limits.job_rates[name].limit for name in names],
        [limits.job_rates[name].per for name in names],
    )


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
    rows = await db.fetch(
        "claim",
        db.statements.flow.claim,
        *claim_args(db, queue, limit, worker_id, lease, limits),
    )
    first = rows[0]
    leased = [row for row in rows if row["id"] is not None]
    # The function returns the jobs in no particular order: restore the claim order.
    leased.sort(key=lambda row: (row["priority"], row["round"], row["due_at"], row["seq"]))
    return ClaimReply(
        jobs=[to_job(row) for row in leased], held_by=first["held_by"], retry_at=first["retry_at"]
    )
