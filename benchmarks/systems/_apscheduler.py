"""APScheduler 4 adapter shared by ``apscheduler_memory.py`` and ``apscheduler_sqlite.py``.

One ``AsyncScheduler`` (role "both") in this process, ``max_concurrent_jobs``
set to *concurrency*, and the task configured with ``max_running_jobs`` equal
to *concurrency* (APScheduler's default of 1 would serialise the benchmark).
"enqueue" is ``add_job``; a delayed job is a one-shot schedule with a
``DateTrigger`` (APScheduler's way to run a function once at a time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from contextlib import AsyncExitStack
from typing import Any, ClassVar

from _common import RECORDER, file_mb, fresh_path, version_of
from apscheduler import AsyncScheduler
from apscheduler.datastores.memory import MemoryDataStore
from apscheduler.triggers.date import DateTrigger


async def noop(i: int) -> None:
    RECORDER.hit(i)


class APSchedulerAdapter:
    na: ClassVar[dict[str, str]] = {"enqueue_bulk": "APScheduler 4 has no bulk add_job API"}

    def __init__(self, store: str) -> None:
        self.store = store
        self.name = f"apscheduler-{store}"
        dists = ["apscheduler"] + (["sqlalchemy", "aiosqlite"] if store == "sqlite" else [])
        self.versions = version_of(*dists)
        self.versions["python"] = sys.version.split()[0]
        self.scheduler: AsyncScheduler | None = None
        self.stack = AsyncExitStack()
        self.path = ""

    async def setup(self, args: argparse.Namespace) -> None:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        data_store: Any
        if self.store == "memory":
            data_store = MemoryDataStore()
        else:
            from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore

            self.path = fresh_path(args.workdir, "apscheduler.db")
            data_store = SQLAlchemyDataStore(f"sqlite+aiosqlite:///{self.path}")
        self.scheduler = AsyncScheduler(data_store, max_concurrent_jobs=args.concurrency)
        await self.stack.enter_async_context(self.scheduler)
        await self.scheduler.configure_task(noop, max_running_jobs=args.concurrency)

    def _s(self) -> AsyncScheduler:
        assert self.scheduler is not None
        return self.scheduler

    async def enqueue(self, i: int) -> None:
        await self._s().add_job(noop, args=(i,))

    async def enqueue_bulk(self, items: range) -> None:
        raise NotImplementedError

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        run_time = dt.datetime.fromtimestamp(due_epoch, dt.UTC)
        await self._s().add_schedule(noop, DateTrigger(run_time), args=(i,))

    async def start_worker(self) -> None:
        await self._s().start_in_background()

    async def stop_worker(self) -> None:
        await self._s().stop()
        await self._s().wait_until_stopped()

    async def teardown(self) -> None:
        await self.stack.aclose()

    def store_mb(self) -> float | None:
        if self.store == "sqlite":
            return file_mb(self.path, self.path + "-wal")
        return None
