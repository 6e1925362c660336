"""asyncpg against psycopg 3 on the three paths a Postgres job store lives on.

Run against any server you may write to (a scratch database: it creates and
drops one table)::

    python benchmarks/postgres_drivers.py postgresql://postgres@127.0.0.1:5432/postgres

Each driver gets one connection and the same statements:

- **single**: one awaited ``INSERT`` and its commit (an autocommit statement),
  the path of ``await job.enqueue()``;
- **bulk**: 1,000 rows in one transaction (asyncpg ``executemany``, psycopg
  ``executemany`` in pipeline mode, and one multi-row ``INSERT ... SELECT FROM
  unnest(...)`` with each);
- **claim**: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT
  10) RETURNING ...`` over a backlog, the claim of a worker, then the complete.

Numbers are medians of several rounds, printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg

_TABLE = "driver_bench_jobs"
_SCHEMA = f"""
DROP TABLE IF EXISTS {_TABLE};
CREATE TABLE {_TABLE} (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    queue text NOT NULL,
    payload bytea NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    due_at double precision NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    lease_token text,
    lease_expires_at double precision
);
CREATE INDEX {_TABLE}_claim ON {_TABLE} (queue, priority, due_at, seq) WHERE state = 'queued';
"""
_INSERT_PG = f"INSERT INTO {_TABLE} (id, queue, payload, due_at) VALUES ($1, $2, $3, $4)"
_INSERT_PSY = f"INSERT INTO {_TABLE} (id, queue, payload, due_at) VALUES (%s, %s, %s, %s)"
_UNNEST_PG = (
    f"INSERT INTO {_TABLE} (id, queue, payload, due_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::float8[])"
)
_UNNEST_PSY = (
    f"INSERT INTO {_TABLE} (id, queue, payload, due_at)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::float8[])"
)
_CLAIM = f"""
    UPDATE {_TABLE} SET state = 'running', attempts = attempts + 1,
        lease_token = md5(random()::text), lease_expires_at = {{now}} + 30
    WHERE seq IN (
        SELECT seq FROM {_TABLE} WHERE state = 'queued' AND queue = {{queue}} AND due_at <= {{now}}
        ORDER BY priority, due_at, seq FOR UPDATE SKIP LOCKED LIMIT 10
    ) RETURNING id, lease_token
"""
_CLAIM_PG = _CLAIM.format(now="$1", queue="$2")
_CLAIM_PSY = _CLAIM.format(now="%(now)s", queue="%(queue)s")
_COMPLETE_PG = (
    f"UPDATE {_TABLE} SET state = 'complete', lease_token = NULL FROM unnest($1::text[],"
    f" $2::text[]) AS o(id, token) WHERE {_TABLE}.id = o.id AND {_TABLE}.lease_token = o.token"
)
_COMPLETE_PSY = _COMPLETE_PG.replace("$1", "%s").replace("$2", "%s")

PAYLOAD = b'{"args": ["a@example.com"], "kwargs": {"subject": "hi"}}'


def _row() -> tuple[str, str, bytes, float]:
    return (secrets.token_hex(16), "default", PAYLOAD, time.time())


async def _timed(rounds: int, step: Callable[[], Awaitable[Any]]) -> list[float]:
    times: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return times


async def bench_asyncpg(url: str, single: int, rounds: int) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_SCHEMA)
        results: dict[str, float] = {}

        async def one() -> None:
            await conn.execute(_INSERT_PG, *_row())

        times = await _timed(single, one)
        results["single insert+commit (ms)"] = statistics.median(times) * 1000

        async def bulk() -> None:
            rows = [_row() for _ in range(1000)]
            async with conn.transaction():
                await conn.executemany(_INSERT_PG, rows)

        results["bulk 1,000 executemany (ms)"] = (
            statistics.median(await _timed(rounds, bulk)) * 1000
        )

        async def bulk_unnest() -> None:
            rows = [_row() for _ in range(1000)]
            columns = [list(column) for column in zip(*rows, strict=True)]
            await conn.execute(_UNNEST_PG, *columns)

        results["bulk 1,000 unnest (ms)"] = (
            statistics.median(await _timed(rounds, bulk_unnest)) * 1000
        )

        await conn.execute(f"TRUNCATE {_TABLE}")
        rows = [_row() for _ in range(20_000)]
        columns = [list(column) for column in zip(*rows, strict=True)]
        await conn.execute(_UNNEST_PG, *columns)
        await conn.execute(f"ANALYZE {_TABLE}")

        async def claim() -> None:
            claimed = await conn.fetch(_CLAIM_PG, time.time(), "default")
            assert len(claimed) == 10

        results["claim 10 SKIP LOCKED (ms)"] = statistics.median(await _timed(200, claim)) * 1000

        async def claim_complete() -> None:
            claimed = await conn.fetch(_CLAIM_PG, time.time(), "default")
            await conn.execute(
                _COMPLETE_PG, [r["id"] for r in claimed], [r["lease_token"] for r in claimed]
            )

        times = await _timed(200, claim_complete)
        results["claim+complete jobs/s"] = 10 / statistics.median(times)
        await conn.execute(f"DROP TABLE {_TABLE}")
        return results
    finally:
        await conn.close()


async def bench_psycopg(url: str, single: int, rounds: int) -> dict[str, float]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        await conn.execute(_SCHEMA)  # type: ignore[arg-type]
        results: dict[str, float] = {}

        async def one() -> None:
            await conn.execute(_INSERT_PSY, _row())

        times = await _timed(single, one)
        results["single insert+commit (ms)"] = statistics.median(times) * 1000

        async def bulk() -> None:
            rows = [_row() for _ in range(1000)]
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_INSERT_PSY, rows)

        results["bulk 1,000 executemany (ms)"] = (
            statistics.median(await _timed(rounds, bulk)) * 1000
        )

        async def bulk_unnest() -> None:
            rows = [_row() for _ in range(1000)]
            columns = [list(column) for column in zip(*rows, strict=True)]
            await conn.execute(_UNNEST_PSY, columns)

        results["bulk 1,000 unnest (ms)"] = (
            statistics.median(await _timed(rounds, bulk_unnest)) * 1000
        )

        await conn.execute(f"TRUNCATE {_TABLE}")  # type: ignore[arg-type]
        rows = [_row() for _ in range(20_000)]
        columns = [list(column) for column in zip(*rows, strict=True)]
        await conn.execute(_UNNEST_PSY, columns)
        await conn.execute(f"ANALYZE {_TABLE}")  # type: ignore[arg-type]

        async def claim() -> None:
            cur = await conn.execute(_CLAIM_PSY, {"now": time.time(), "queue": "default"})
            claimed = await cur.fetchall()
            assert len(claimed) == 10

        results["claim 10 SKIP LOCKED (ms)"] = statistics.median(await _timed(200, claim)) * 1000

        async def claim_complete() -> None:
            cur = await conn.execute(_CLAIM_PSY, {"now": time.time(), "queue": "default"})
            claimed = await cur.fetchall()
            await conn.execute(_COMPLETE_PSY, ([r[0] for r in claimed], [r[1] for r in claimed]))

        times = await _timed(200, claim_complete)
        results["claim+complete jobs/s"] = 10 / statistics.median(times)
        await conn.execute(f"DROP TABLE {_TABLE}")  # type: ignore[arg-type]
        return results
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="postgresql:// URL of a scratch database")
    parser.add_argument("--single", type=int, default=2000, help="single inserts timed")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the bulk insert")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each driver, alternating")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"asyncpg": [], "psycopg": []}
    for _ in range(args.repeat):
        runs["asyncpg"].append(await bench_asyncpg(args.url, args.single, args.rounds))
        runs["psycopg"].append(await bench_psycopg(args.url, args.single, args.rounds))
    metrics = list(runs["asyncpg"][0])
    print(f"| metric | asyncpg {asyncpg.__version__} | psycopg {psycopg.__version__} | ratio |")
    print("|---|---|---|---|")
    for metric in metrics:
        a = statistics.median(run[metric] for run in runs["asyncpg"])
        p = statistics.median(run[metric] for run in runs["psycopg"])
        ratio = (a / p) if metric.endswith("/s") else (p / a)
        print(f"| {metric} | {a:.3f} | {p:.3f} | asyncpg {ratio:.2f}x |")


if __name__ == "__main__":
    asyncio.run(main())
