"""asyncjobs adapter shared by ``asyncjobs_memory.py``, ``asyncjobs_sqlite.py`` and ``asyncjobs_redis.py``.

Uses only the public API (DESIGN section 1): ``JobRuntime(backend=...,
queues={"default": concurrency})``, ``@runtime.job()``, ``await fn.enqueue(i)``,
``runtime.enqueue_many([fn.call(i) ...])`` for bulk, ``fn.options(at=...)``
for a delayed job and ``async with runtime:``.

Jobs enqueued "beforehand" go through a ``role="enqueue"`` runtime (a web
process that never runs jobs); "starting the worker" closes it and enters a
``role="all"`` runtime on the same backend, which is when the clock starts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sqlite3
import sys
from contextlib import AsyncExitStack
from typing import Any, ClassVar

from _common import RECORDER, file_mb, fresh_path, redis_command, redis_used_mb, version_of

import asyncjobs
from asyncjobs import JobRuntime
from asyncjobs.backends import Backend


class AsyncJobsAdapter:
    na: ClassVar[dict[str, str]] = {}

    def __init__(self, store: str) -> None:
        self.store = store
        self.name = f"asyncjobs-{store}"
        driver = {"sqlite": ["aiosqlite"], "redis": ["redis"], "postgres": ["asyncpg"]}.get(
            store, []
        )
        self.versions = version_of("asyncjobs", "anyio", *driver)
        self.versions["python"] = sys.version.split()[0]
        # Which asyncjobs ran: the checkout, a snapshot of a commit, or an install.
        self.versions["asyncjobs-from"] = os.path.dirname(os.path.dirname(asyncjobs.__file__))
        self.backend: Backend | None = None
        self.runtime: JobRuntime | None = None
        self.job: Any = None
        self.stack: AsyncExitStack | None = None
        self.concurrency = 10
        self.path = ""
        self.url = ""

    def _make_backend(self, args: argparse.Namespace) -> Backend:
        if self.store == "memory":
            from asyncjobs.backends import MemoryBackend

            return MemoryBackend()
        if self.store == "sqlite":
            from asyncjobs.backends import SQLiteBackend

            self.path = fresh_path(args.workdir, "asyncjobs.db")
            return SQLiteBackend(self.path, synchronous="FULL")  # the default, spelled out
        if self.store == "postgres":
            from asyncjobs.backends import PostgresBackend

            self.url = args.postgres_url  # a fresh database per run (run.py)
            return PostgresBackend(self.url)
        from asyncjobs.backends import RedisBackend

        self.url = args.redis_url
        redis_command(self.url, "FLUSHALL")
        return RedisBackend(self.url)

    async def _enter(self, role: str) -> None:
        await self._leave()
        assert self.backend is not None
        runtime = JobRuntime(
            backend=self.backend,
            queues={"default": self.concurrency},
            role=role,  # type: ignore[arg-type]
        )

        @runtime.job(name="noop")
        async def noop(i: int) -> None:
            RECORDER.hit(i)

        self.stack = AsyncExitStack()
        await self.stack.enter_async_context(runtime)
        self.runtime, self.job = runtime, noop

    async def _leave(self) -> None:
        if self.stack is not None:
            stack, self.stack = self.stack, None
            await stack.aclose()

    async def setup(self, args: argparse.Namespace) -> None:
        self.concurrency = args.concurrency
        self.backend = self._make_backend(args)
        await self._enter("enqueue")

    async def enqueue(self, i: int) -> None:
        await self.job.enqueue(i)

    async def enqueue_bulk(self, items: range) -> None:
        assert self.runtime is not None
        await self.runtime.enqueue_many([self.job.call(i) for i in items])

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        await self.job.options(at=dt.datetime.fromtimestamp(due_epoch, dt.UTC)).enqueue(i)

    async def before_worker(self) -> None:
        """Untimed: hand the store back from the enqueue-only runtime."""
        await self._leave()

    async def start_worker(self) -> None:
        await self._enter("all")

    async def stop_worker(self) -> None:
        await self._leave()

    async def teardown(self) -> None:
        await self._leave()

    def store_settings(self) -> str:
        """What the store ran with, for the report (SQLite: read back from the file)."""
        if self.store != "sqlite":
            return ""
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        return f"journal_mode={mode}, synchronous=FULL (SQLiteBackend(synchronous='FULL'))"

    def store_mb(self) -> float | None:
        if self.store == "sqlite":
            return file_mb(self.path, self.path + "-wal")
        if self.store == "redis":
            return redis_used_mb(self.url)
        return None
