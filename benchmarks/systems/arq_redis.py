"""Peer: arq on the benchmark's ``redis-server``.

The worker is arq's ``Worker`` with its defaults (``poll_delay=0.5`` s,
``keep_result=3600`` s) and ``max_jobs`` = *concurrency*, run in this process
with ``worker.main()`` as ``arq`` CLI would. A delayed job uses ``_defer_until``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sys
from typing import Any, ClassVar
from urllib.parse import urlsplit

from _common import RECORDER, main_async, redis_command, redis_used_mb, version_of
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker


async def noop(ctx: dict[str, Any], i: int) -> None:
    RECORDER.hit(i)


class ArqAdapter:
    name = "arq"
    na: ClassVar[dict[str, str]] = {
        "enqueue_bulk": "arq has no bulk enqueue API (enqueue_job is one job per call)"
    }

    def __init__(self) -> None:
        self.versions = version_of("arq", "redis")
        self.versions["python"] = sys.version.split()[0]
        self.url = ""
        self.pool: ArqRedis | None = None
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.concurrency = 10

    async def setup(self, args: argparse.Namespace) -> None:
        logging.getLogger("arq").setLevel(logging.WARNING)
        self.url = args.redis_url
        self.concurrency = args.concurrency
        redis_command(self.url, "FLUSHALL")
        parts = urlsplit(self.url)
        self.settings = RedisSettings(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
        self.pool = await create_pool(self.settings)

    def _p(self) -> ArqRedis:
        assert self.pool is not None
        return self.pool

    async def enqueue(self, i: int) -> None:
        await self._p().enqueue_job("noop", i)

    async def enqueue_bulk(self, items: range) -> None:
        raise NotImplementedError

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        when = dt.datetime.fromtimestamp(due_epoch, dt.UTC)
        await self._p().enqueue_job("noop", i, _defer_until=when)

    async def start_worker(self) -> None:
        self.worker = Worker(
            functions=[noop],  # type: ignore[list-item]
            redis_pool=self._p(),
            max_jobs=self.concurrency,
            handle_signals=False,
        )
        self.worker_task = asyncio.create_task(self.worker.main())

    async def stop_worker(self) -> None:
        if self.worker_task is not None:
            self.worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker_task
            self.worker_task = None

    async def teardown(self) -> None:
        await self.stop_worker()
        if self.pool is not None:
            await self.pool.aclose()

    def store_mb(self) -> float | None:
        return redis_used_mb(self.url)


if __name__ == "__main__":
    main_async(ArqAdapter)
