"""A job from claim to outcome: claim, heartbeat, settle, lease recovery, progress.

- **Claims** are one ``UPDATE ... WHERE seq IN (SELECT ... ORDER BY priority,
  round, due_at, seq LIMIT ?) RETURNING ...`` (the pause check included), all
  rows read before the statement ends. A claim leaves ``started_at`` unset;
  the worker reports the start through :func:`settle`. (Claims under limits
  are in ``_flow.py``.)
- **Outcomes** are one ``UPDATE ... FROM (VALUES ...) RETURNING id`` per kind:
  the lease-token check and the write in one statement. The attempts they end
  are recorded first, in the same transaction (``_history.py``); an outcome
  with ``remove`` then deletes the job it finished.
- **Leases** carry a random 128-bit token; heartbeats, progress and outcomes
  are applied only with the current one. A lease runs from when the write
  lock is held; sweeps of expired leases pause after a stalled write
  (``_stalls.py``).

(New jobs come in through ``_enqueue.py``.)
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from ..._models import ErrorInfo, Job, JobStart, Outcome, OutcomeKind
from .. import HeartbeatReply
from ._codec import error_columns, to_job
from ._database import Database
from ._history import record_expired, record_outcomes
from ._keys import waiting_count
from ._statements import JOB_COLUMNS, JOB_WIDTH, NOW_CTE, Row, all_rows, chunked, marks, rows_of
from ._wakeups import Wakeups, bump
from ._writer import Tx

__all__ = ["claim", "claim_order", "heartbeat", "recover_expired", "set_progress", "settle"]

logger = logging.getLogger("asyncjobs")

# The claim pins its index: on a table without statistics the planner may prefer
# the due-time index plus a sort of every due job, which makes a claim cost grow
# with the backlog.
_CLAIM_SQL: Final = f"""
    WITH {NOW_CTE}
    UPDATE asyncjobs_jobs
    SET state = 'running', attempts = attempts + 1,
        lease_token = lower(hex(randomblob(16))), lease_expires_at = (SELECT now FROM t) + ?,
        worker_id = ?, started_at = NULL, progress = NULL, progress_message = NULL
    WHERE seq IN (
        SELECT seq FROM asyncjobs_jobs INDEXED BY asyncjobs_jobs_claim
        WHERE state = 'queued' AND queue = ? AND due_at <= (SELECT now FROM t)
        AND NOT EXISTS (SELECT 1 FROM asyncjobs_queues WHERE name = ? AND paused = 1)
        ORDER BY priority, round, due_at, seq
        LIMIT ?
    )
    RETURNING {JOB_COLUMNS}, seq, round
"""
# settle: UPDATE ... FROM (VALUES ...). The join on id and the current lease
# token applies each outcome and checks its token in one statement; RETURNING
# names the accepted jobs. Complete, dead and cancelled outcomes share one
# statement (``o.state`` says which); the trailing ``?`` is the settle time. A
# running job never has a result, so only a complete outcome sets one.
# Every outcome may carry its handler's start (``o.started_at``, NULL when not).
_STARTED = "started_at = coalesce(o.started_at, asyncjobs_jobs.started_at)"
_SETTLE_FINISHED: Final = (
    "id, token, started_at, state, result, error_type, error_message, error_traceback",
    f"{_STARTED}, state = o.state,"
    " result = CASE WHEN o.state = 'complete' THEN o.result ELSE asyncjobs_jobs.result END,"
    " error_type = o.error_type, error_message = o.error_message,"
    " error_traceback = o.error_traceback,"
    " finished_at = ?, lease_token = NULL, lease_expires_at = NULL",
)
_REQUEUED = (
    "state = 'queued', due_at = o.due_at, lease_token = NULL, lease_expires_at = NULL,"
    " worker_id = NULL, cancel_requested = 0, progress = NULL, progress_message = NULL"
)
_SETTLE_RETRY: Final = (
    "id, token, started_at, due_at, error_type, error_message, error_traceback",
    f"{_STARTED}, {_REQUEUED}, error_type = o.error_type, error_message = o.error_message,"
    " error_traceback = o.error_traceback",
)
_SETTLE_RELEASE: Final = (
    "id, token, started_at, due_at",
    f"{_STARTED}, {_REQUEUED}, attempts = max(0, attempts - 1)",
)
# Reported starts: no RETURNING, as a start whose lease is gone is simply dropped.
_SETTLE_STARTS: Final = (
    "id, token, started_at",
    "started_at = o.started_at",
)
_FINISHED_STATE = {
    OutcomeKind.COMPLETE: "complete",
    OutcomeKind.DEAD: "dead",
    OutcomeKind.CANCELLED: "cancelled",
}


def _settle_sql(spec: tuple[str, str], count: int, returning: bool = True) -> str:
    columns, assignments = spec
    return (
        f"WITH o({columns}) AS (VALUES {rows_of(columns.count(',') + 1, count)})"
        f" UPDATE asyncjobs_jobs SET {assignments} FROM o"
        " WHERE asyncjobs_jobs.id = o.id AND asyncjobs_jobs.lease_token = o.token"
        " AND asyncjobs_jobs.state = 'running'"
        + (" RETURNING asyncjobs_jobs.id, asyncjobs_jobs.queue" if returning else "")
    )


def claim_order(row: Row) -> tuple[Any, ...]:
    """The claim order key of a ``JOB_COLUMNS, seq, round`` row: priority, round, due time, seq."""
    # A claimed job never waits, so its stored due_at is its due time.
    return (row[7], row[JOB_WIDTH + 1], row[5], row[JOB_WIDTH])


_EXPIRED_SQL: Final = """
    SELECT 1 FROM asyncjobs_jobs
    WHERE state = 'running' AND lease_expires_at <= ?
    AND NOT EXISTS (SELECT 1 FROM asyncjobs_lease_sweeps WHERE id = 1 AND resume_at > ?)
    LIMIT 1
"""

# Mirrors memory.py, so every backend reports a lost lease the same way.
_EXPIRED_ERROR = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)


async def claim(
    db: Database, wakeups: Wakeups, queue: str, limit: int, worker_id: str, lease: float
) -> list[Job]:
    """Claim up to *limit* due jobs of *queue* in one ``UPDATE ... RETURNING``."""
    if limit <= 0:
        return []
    db.stalls.note_lease(lease)

    def body(conn: sqlite3.Connection, tx: Tx) -> list[Job]:
        rows = all_rows(conn, _CLAIM_SQL, (lease, worker_id, queue, queue, limit))
        # RETURNING gives rows in no particular order: restore the claim order.
        rows.sort(key=claim_order)
        return [to_job(row) for row in rows]

    claimed = await db.write("claim", body, single=True)
    if claimed:
        wakeups.busy()
    return claimed


async def heartbeat(db: Database, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
    """Extend the leases still held to ``now + lease``, ``now`` read under the lock."""
    if not leases:
        return HeartbeatReply()
    db.stalls.note_lease(lease)
    chunks = list(chunked(list(leases.items()), per_item=2))

    def body(conn: sqlite3.Connection, tx: Tx) -> list[Row]:
        rows: list[Row] = []
        for chunk in chunks:
            sql = (
                f"WITH {NOW_CTE}, o(id, token) AS (VALUES {rows_of(2, len(chunk))})"
                " UPDATE asyncjobs_jobs SET lease_expires_at = (SELECT now FROM t) + ?"
                " FROM o"
                " WHERE asyncjobs_jobs.id = o.id AND asyncjobs_jobs.lease_token = o.token"
                " AND asyncjobs_jobs.state = 'running'"
                " RETURNING asyncjobs_jobs.id, asyncjobs_jobs.cancel_requested"
            )
            rows += all_rows(conn, sql, [*itertools.chain.from_iterable(chunk), lease])
        return rows

    held = await db.write("heartbeat", body, single=len(chunks) == 1)
    return HeartbeatReply(
        lost=frozenset(leases.keys() - {job_id for job_id, _ in held}),
        cancel_requested=frozenset(job_id for job_id, flag in held if flag),
    )


async def settle(
    db: Database, wakeups: Wakeups, outcomes: Sequence[Outcome], starts: Sequence[JobStart] = ()
) -> list[str]:
    """Apply the outcomes and starts whose lease token is current; return the refused outcome ids.

    Starts are written first: an outcome's own ``started_at`` (when given) wins.
    """
    if not outcomes and not starts:
        return []
    # Only the first outcome of a job can hold its lease: a repeat in the same
    # batch is refused, as it would be in a later batch.
    first: dict[str, Outcome] = {}
    for outcome in outcomes:
        first.setdefault(outcome.job_id, outcome)
    finished: list[Outcome] = []
    retried: list[Outcome] = []
    released: list[Outcome] = []
    for outcome in first.values():
        if outcome.kind is OutcomeKind.RETRY:
            retried.append(outcome)
        elif outcome.kind is OutcomeKind.RELEASE:
            released.append(outcome)
        else:
            finished.append(outcome)
    again = {outcome.job_id for outcome in (*retried, *released)}
    # A job deleted at its settle takes its history along: none is recorded for it.
    removed = {outcome.job_id for outcome in finished if outcome.remove}
    attempts: list[Row] = [
        (
            outcome.job_id,
            outcome.lease_token,
            outcome.started_at,
            outcome.kind.value,
            *error_columns(outcome.error)[:2],
        )
        for outcome in first.values()
        if outcome.job_id not in removed
    ]

    start_chunks = list(chunked(starts, per_item=3))

    def statements(now: float) -> Iterable[tuple[str, list[Any]]]:
        for chunk in chunked(finished, per_item=8):
            values: list[Any] = []
            for outcome in chunk:
                values += (outcome.job_id, outcome.lease_token, outcome.started_at)
                values += (_FINISHED_STATE[outcome.kind], outcome.result)
                values += error_columns(outcome.error)
            yield _settle_sql(_SETTLE_FINISHED, len(chunk)), [*values, now]
        for chunk in chunked(retried, per_item=7):
            values = []
            for outcome in chunk:
                due_at = now if outcome.due_at is None else outcome.due_at
                values += (outcome.job_id, outcome.lease_token, outcome.started_at, due_at)
                values += error_columns(outcome.error)
            yield _settle_sql(_SETTLE_RETRY, len(chunk)), values
        for chunk in chunked(released, per_item=4):
            values = []
            for outcome in chunk:
                due_at = now if outcome.due_at is None else outcome.due_at
                values += (outcome.job_id, outcome.lease_token, outcome.started_at, due_at)
            yield _settle_sql(_SETTLE_RELEASE, len(chunk)), values

    def body(conn: sqlite3.Connection, tx: Tx) -> tuple[list[Row], bool]:
        # Finishing a holder releases the jobs waiting behind it (a trigger).
        waiting = waiting_count(conn) if finished else 0
        for chunk in start_chunks:
            values = list(
                itertools.chain.from_iterable(
                    (start.job_id, start.lease_token, start.started_at) for start in chunk
                )
            )
            conn.execute(_settle_sql(_SETTLE_STARTS, len(chunk), returning=False), values)
        if attempts:
            record_outcomes(conn, attempts, tx.now)
        rows: list[Row] = []
        for sql, values in statements(tx.now):
            rows += all_rows(conn, sql, values)
        if removed:
            # Finished first (a slot of a limited queue wakes its waiters), then deleted.
            gone = [job_id for job_id, _ in rows if job_id in removed]
            for chunk in chunked(gone):
                conn.execute(f"DELETE FROM asyncjobs_jobs WHERE id IN ({marks(len(chunk))})", chunk)
        queues = {queue for job_id, queue in rows if job_id in again}
        if queues:
            bump(conn, queues)
        return rows, bool(waiting) and waiting_count(conn) < waiting

    # A batch of starts alone is one statement; outcomes record their attempts too.
    single = not first and len(start_chunks) == 1
    rows, freed = await db.write("settle", body, single=single)
    if freed or any(job_id in again or queue in wakeups.limited for job_id, queue in rows):
        wakeups.notify()
    accepted = {job_id for job_id, _ in rows}
    return [
        outcome.job_id
        for outcome in outcomes
        if outcome.job_id not in accepted or first[outcome.job_id] is not outcome
    ]


async def recover_expired(db: Database, wakeups: Wakeups) -> int:
    """Requeue running jobs whose lease ran out, kill those out of attempts (unless paused)."""
    # A cheap read first: most sweeps find nothing and need no write lock. The
    # sweep judges what it read then, so its wait is counted from then.
    requested = db.requested()
    now = requested[0]
    if not await db.read("recover_expired", _EXPIRED_SQL, (now, now)):
        return 0

    def body(conn: sqlite3.Connection, tx: Tx) -> tuple[int, bool]:
        if tx.stalled:
            # Heartbeats queued behind this sweep would find their jobs requeued.
            # (The write records the stall: other sweeps pause as well.)
            logger.info("lease sweep skipped: it waited long for the write lock")
            return 0, False
        [(resume_at,)] = all_rows(conn, "SELECT resume_at FROM asyncjobs_lease_sweeps WHERE id = 1")
        now = tx.now
        if now < resume_at:
            return 0, False
        # A killed holder releases the jobs waiting behind it (a trigger).
        waiting = waiting_count(conn)
        record_expired(conn, now, _EXPIRED_ERROR)
        error = error_columns(_EXPIRED_ERROR)
        killed = all_rows(
            conn,
            "UPDATE asyncjobs_jobs SET state = 'dead', finished_at = ?, error_type = ?,"
            " error_message = ?, error_traceback = ?, lease_token = NULL,"
            " lease_expires_at = NULL"
            " WHERE state = 'running' AND lease_expires_at <= ? AND attempts >= max_attempts"
            " RETURNING queue",
            (now, *error, now),
        )
        requeued = all_rows(
            conn,
            "UPDATE asyncjobs_jobs SET state = 'queued', due_at = ?, error_type = ?,"
            " error_message = ?, error_traceback = ?, lease_token = NULL,"
            " lease_expires_at = NULL, worker_id = NULL, cancel_requested = 0,"
            " progress = NULL, progress_message = NULL"
            " WHERE state = 'running' AND lease_expires_at <= ?"
            " RETURNING queue",
            (now, *error, now),
        )
        queues = {queue for (queue,) in requeued}
        if queues:
            bump(conn, queues)
        # A killed job frees a slot of a limited queue (the trigger told other processes).
        queues.update(queue for (queue,) in killed if queue in wakeups.limited)
        released = bool(killed and waiting) and waiting_count(conn) < waiting
        return len(killed) + len(requeued), bool(queues) or released

    count, woken = await db.write("recover_expired", body, requested=requested)
    if count:
        logger.info("recovered %d job(s) whose lease expired", count)
    if woken:
        wakeups.notify()
    return count


async def set_progress(
    db: Database, job_id: str, lease_token: str, progress: float, message: str | None
) -> bool:
    """Store progress for a job whose lease is still held; ``False`` otherwise."""

    def body(conn: sqlite3.Connection, tx: Tx) -> bool:
        return bool(
            all_rows(
                conn,
                "UPDATE asyncjobs_jobs SET progress = ?, progress_message = ?"
                " WHERE id = ? AND state = 'running' AND lease_token = ? RETURNING id",
                (progress, message, job_id, lease_token),
            )
        )

    return await db.write("set_progress", body, single=True)
