"""Peer: PgQueuer on the run's PostgreSQL server (asyncpg, LISTEN/NOTIFY).

The worker is PgQueuer's ``PgQueuer.run()`` with ``batch_size`` = *concurrency*
and the entrypoint's ``concurrency_limit`` = *concurrency*, as its docs
suggest for a bounded worker; its schema is installed by ``Queries.install()``
into the run's fresh database. A delayed job passes ``execute_after``. Bulk
enqueue is ``Queries.enqueue`` with lists (one statement).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from datetime import timedelta
from typing import Any, ClassVar

import asyncpg
from _common import RECORDER, main_async, version_of
from pgqueuer import PgQueuer
from pgqueuer.models import Job
from pgqueuer.queries import Queries


class PgQueuerAdapter:
    name = "pgqueuer"
    na: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.versions = version_of("pgqueuer", "asyncpg")
        self.versions["python"] = sys.version.split()[0]
        self.url = ""
        self.conn: Any = None
        self.worker_conn: Any = None
        self.queries: Queries | None = None
        self.pgq: PgQueuer | None = None
        self.task: asyncio.Task[None] | None = None
        self.concurrency = 10

    async def setup(self, args: argparse.Namespace) -> None:
        logging.getLogger("pgqueuer").setLevel(logging.WARNING)
        self.url = args.postgres_url
        self.concurrency = args.concurrency
        self.conn = await asyncpg.connect(self.url)
        self.queries = Queries.from_asyncpg_connection(self.conn)
        await self.queries.install()

    def _q(self) -> Queries:
        assert self.queries is not None
        return self.queries

    async def enqueue(self, i: int) -> None:
        await self._q().enqueue("noop", json.dumps({"i": i}).encode())

    async def enqueue_bulk(self, items: range) -> None:
        n = len(items)
        await self._q().enqueue(
            ["noop"] * n, [json.dumps({"i": i}).encode() for i in items], [0] * n
        )

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        delay = timedelta(seconds=max(0.0, due_epoch - time.time()))
        await self._q().enqueue("noop", json.dumps({"i": i}).encode(), execute_after=delay)

    async def start_worker(self) -> None:
        self.worker_conn = await asyncpg.connect(self.url)
        pgq = PgQueuer.from_asyncpg_connection(self.worker_conn)

        @pgq.entrypoint("noop", concurrency_limit=self.concurrency)
        async def noop(job: Job) -> None:
            assert job.payload is not None
            RECORDER.hit(json.loads(job.payload)["i"])

        self.pgq = pgq
        self.task = asyncio.create_task(pgq.run(batch_size=self.concurrency))

    async def stop_worker(self) -> None:
        if self.pgq is not None:
            self.pgq.shutdown.set()
            self.pgq.qm.shutdown.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.task, 10)
            if not self.task.done():
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.task
        if self.worker_conn is not None:
            await self.worker_conn.close()
        self.pgq = self.task = self.worker_conn = None

    async def teardown(self) -> None:
        await self.stop_worker()
        if self.conn is not None:
            await self.conn.close()

    def store_mb(self) -> float | None:
        return None


if __name__ == "__main__":
    main_async(PgQueuerAdapter)
