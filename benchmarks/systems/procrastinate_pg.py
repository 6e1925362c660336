"""Peer: procrastinate on the run's PostgreSQL server (psycopg 3, LISTEN/NOTIFY).

The worker is ``App.run_worker_async(concurrency=...)`` with its defaults
(LISTEN/NOTIFY on, ``fetch_job_polling_interval`` 5 s), started as a task and
cancelled to stop; the schema is applied by ``schema_manager.apply_schema_async``
into the run's fresh database. A delayed job is ``configure(schedule_at=...)``;
bulk enqueue is ``batch_defer_async``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sys
from typing import Any, ClassVar

from _common import RECORDER, main_async, version_of
from procrastinate import App, PsycopgConnector


class ProcrastinateAdapter:
    name = "procrastinate"
    na: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.versions = version_of("procrastinate", "psycopg")
        self.versions["python"] = sys.version.split()[0]
        self.app: App | None = None
        self.task_fn: Any = None
        self.worker: asyncio.Task[None] | None = None
        self.stack: contextlib.AsyncExitStack | None = None
        self.concurrency = 10

    async def setup(self, args: argparse.Namespace) -> None:
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
        self.concurrency = args.concurrency
        app = App(connector=PsycopgConnector(conninfo=args.postgres_url))

        @app.task(name="noop")
        async def noop(i: int) -> None:
            RECORDER.hit(i)

        self.stack = contextlib.AsyncExitStack()
        await self.stack.enter_async_context(app.open_async())
        await app.schema_manager.apply_schema_async()
        self.app, self.task_fn = app, noop

    async def enqueue(self, i: int) -> None:
        await self.task_fn.defer_async(i=i)

    async def enqueue_bulk(self, items: range) -> None:
        await self.task_fn.batch_defer_async(*({"i": i} for i in items))

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        at = dt.datetime.fromtimestamp(due_epoch, dt.UTC)
        await self.task_fn.configure(schedule_at=at).defer_async(i=i)

    async def start_worker(self) -> None:
        assert self.app is not None
        self.worker = asyncio.create_task(
            self.app.run_worker_async(
                concurrency=self.concurrency, wait=True, install_signal_handlers=False
            )
        )

    async def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.worker
        self.worker = None

    async def teardown(self) -> None:
        await self.stop_worker()
        if self.stack is not None:
            await self.stack.aclose()

    def store_mb(self) -> float | None:
        return None


if __name__ == "__main__":
    main_async(ProcrastinateAdapter)
