"""Limit: raw asyncpg ``SKIP LOCKED`` claim and complete, no library in between.

The same durability as the store (fsync on, every statement committed).
"enqueue" is one INSERT per job; "bulk" one ``INSERT ... SELECT FROM
unnest(...)``. "drain" runs *concurrency* claimers on one connection pool,
each claiming up to *concurrency* due jobs with ``UPDATE ... FROM (SELECT ...
FOR UPDATE SKIP LOCKED LIMIT n) RETURNING``, decoding the JSON payloads,
calling the no-op handler and completing the batch in one ``UPDATE ... FROM
unnest(...)``: the floor of what a PostgreSQL queue must do per batch. It has
no worker loop, so start latency and delayed precision are not applicable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, ClassVar

import asyncpg
from _common import RECORDER, main_async, version_of

SCHEMA = """
CREATE TABLE jobs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    payload bytea NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    priority integer NOT NULL DEFAULT 0,
    due_at float8 NOT NULL,
    lease_token text,
    lease_expires_at float8,
    result bytea
);
CREATE INDEX jobs_claim ON jobs (queue, priority, due_at, seq) WHERE state = 'queued';
"""
INSERT = "INSERT INTO jobs (queue, payload, due_at) VALUES ('default', $1, $2)"
BULK = "INSERT INTO jobs (queue, payload, due_at) SELECT 'default', p, $2 FROM unnest($1::bytea[]) AS p"
CLAIM = """
WITH c AS (
    SELECT seq FROM jobs WHERE state = 'queued' AND queue = 'default' AND due_at <= $1
    ORDER BY priority, due_at, seq FOR UPDATE SKIP LOCKED LIMIT $2
)
UPDATE jobs AS j SET state = 'running', lease_expires_at = $1 + 30,
    lease_token = replace(gen_random_uuid()::text, '-', '')
FROM c WHERE j.seq = c.seq RETURNING j.seq, j.payload, j.lease_token
"""
COMPLETE = """
UPDATE jobs AS j SET state = 'complete', result = 'null', lease_token = NULL
FROM unnest($1::int8[], $2::text[]) AS o(seq, token)
WHERE j.seq = o.seq AND j.lease_token = o.token
"""


async def _no_reset(conn: Any) -> None:
    return None


def noop(i: int) -> None:
    RECORDER.hit(i)


class RawPostgres:
    name = "postgres-skip-locked"
    na: ClassVar[dict[str, str]] = {
        "latency": "no worker loop: nothing waits for new work",
        "delayed": "no worker loop: nothing waits for due times",
    }

    def __init__(self) -> None:
        self.versions = version_of("asyncpg")
        self.versions["python"] = sys.version.split()[0]
        self.pool: Any = None
        self.concurrency = 10
        self.claimers: list[asyncio.Task[None]] = []

    async def setup(self, args: argparse.Namespace) -> None:
        self.concurrency = args.concurrency
        # No reset round trip when a connection goes back to the pool (nothing to reset).
        self.pool = await asyncpg.create_pool(
            args.postgres_url, min_size=2, max_size=12, reset=_no_reset
        )
        await self.pool.execute(SCHEMA)

    async def enqueue(self, i: int) -> None:
        await self.pool.execute(INSERT, json.dumps({"args": [i]}).encode(), time.time())

    async def enqueue_bulk(self, items: range) -> None:
        payloads = [json.dumps({"args": [i]}).encode() for i in items]
        await self.pool.execute(BULK, payloads, time.time())

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        raise NotImplementedError

    async def _claimer(self) -> None:
        while True:
            rows = await self.pool.fetch(CLAIM, time.time(), self.concurrency)
            if not rows:
                return
            for row in rows:
                noop(*json.loads(row["payload"])["args"])
            await self.pool.execute(
                COMPLETE, [row["seq"] for row in rows], [row["lease_token"] for row in rows]
            )

    async def start_worker(self) -> None:
        self.claimers = [asyncio.create_task(self._claimer()) for _ in range(self.concurrency)]

    async def stop_worker(self) -> None:
        await asyncio.gather(*self.claimers, return_exceptions=True)
        self.claimers = []

    async def teardown(self) -> None:
        await self.stop_worker()
        if self.pool is not None:
            await self.pool.close()

    def store_mb(self) -> float | None:
        return None


if __name__ == "__main__":
    main_async(RawPostgres)
