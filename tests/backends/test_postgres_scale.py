"""The PostgreSQL claim at a million queued jobs: it walks the claim index in order.

A claim must not sort or scan the queue: with a million queued jobs, the
claim statement (``backends/postgres/_lifecycle.py``) reads the partial index
``jobs_claim`` from its start, in claim order, and stops at its ``LIMIT``, so
the pages it touches do not grow with the queue. Checked with ``EXPLAIN
(ANALYZE, BUFFERS)`` inside a transaction that is rolled back; the rows are
written with one ``INSERT ... SELECT generate_series`` (seconds, not the
minutes a million enqueues would take), then analysed as autovacuum would.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import asyncpg
import pytest

from asyncjobs._clock import SystemClock
from asyncjobs.backends.postgres import PostgresBackend
from asyncjobs.backends.postgres._lifecycle import Statements

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

QUEUED = 1_000_000
CLAIM = 10


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", ()):
        found.extend(_nodes(child))
    return found


async def test_a_claim_reads_the_claim_index_in_order_at_a_million_queued_jobs(
    postgres_url: str,
) -> None:
    schema = f"scale_{uuid.uuid4().hex[:12]}"
    backend = PostgresBackend(postgres_url, schema=schema)
    await backend.open(SystemClock())
    conn = await asyncpg.connect(postgres_url)
    try:
        started = time.perf_counter()
        # Two queues, three priorities, due times spread over the past: the claim's
        # ORDER BY has to come from the index, not from a sort of what it found.
        await conn.execute(
            f"""
            INSERT INTO "{schema}".jobs
                (id, name, queue, payload, state, due_at, enqueued_at, priority, max_attempts)
            SELECT md5(g::text), 'scale.noop',
                CASE WHEN g % 10 = 0 THEN 'other' ELSE 'default' END,
                '\\x7b7d'::bytea, 'queued', 1000 + g, 1000 + g, g % 3, 3
            FROM generate_series(1, {QUEUED}) AS g
            """
        )
        await conn.execute(f'ANALYZE "{schema}".jobs')
        filled = time.perf_counter() - started
        sql = Statements(f'"{schema}"').claim
        claim = conn.transaction()
        await claim.start()
        try:  # EXPLAIN ANALYZE runs the UPDATE: roll it back
            [row] = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql,
                None,
                "default",
                CLAIM,
                30.0,
                "scale-worker",
            )
        finally:
            await claim.rollback()
        plan = json.loads(row[0])[0]
        nodes = _nodes(plan["Plan"])
        scans = [node for node in nodes if node.get("Relation Name") == "jobs"]
        kinds = {node["Node Type"] for node in nodes}
        touched = sum(
            node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0) for node in scans
        )
        pages = await conn.fetchval(
            "SELECT relpages FROM pg_class WHERE oid = $1::regclass", f'"{schema}".jobs'
        )
        print(  # shown with -s
            f"{QUEUED:,} queued in {filled:.1f} s; a claim of {CLAIM}: "
            f"{plan['Execution Time']:.2f} ms, {touched} pages of jobs read "
            f"(the table has {pages:,})"
        )
        assert "Sort" not in kinds, nodes
        assert all(node["Node Type"] != "Seq Scan" for node in scans), scans
        assert any(node.get("Index Name") == "jobs_claim" for node in scans), scans
        # The rows it claims, their index entries and the index's first pages:
        # a hundredth of the table's pages would already be a scan.
        assert touched < pages / 100, (touched, pages, scans)
    finally:
        await conn.close()
        await backend.aclose()
