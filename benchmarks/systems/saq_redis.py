"""Peer: SAQ on the benchmark's ``redis-server``.

The worker is SAQ's ``Worker`` with its defaults (blocking dequeue, the
"schedule" timer that moves due jobs every 1 s) and ``concurrency`` =
*concurrency*, started in this process with ``worker.start()`` as the ``saq``
CLI does. A delayed job passes ``scheduled`` (epoch seconds; SAQ documents
an int, the float is passed through unchanged, which only helps SAQ).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any, ClassVar

from _common import RECORDER, main_async, redis_command, redis_used_mb, version_of
from saq import Queue, Worker


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    RECORDER.hit(i)


class SaqAdapter:
    name = "saq"
    na: ClassVar[dict[str, str]] = {
        "enqueue_bulk": "SAQ has no bulk enqueue API (Queue.batch only groups enqueue calls)"
    }

    def __init__(self) -> None:
        self.versions = version_of("saq", "redis")
        self.versions["python"] = sys.version.split()[0]
        self.url = ""
        self.queue: Queue | None = None
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.concurrency = 10

    async def setup(self, args: argparse.Namespace) -> None:
        logging.getLogger("saq").setLevel(logging.WARNING)
        self.url = args.redis_url
        self.concurrency = args.concurrency
        redis_command(self.url, "FLUSHALL")
        self.queue = Queue.from_url(self.url)
        await self.queue.connect()

    def _q(self) -> Queue:
        assert self.queue is not None
        return self.queue

    async def enqueue(self, i: int) -> None:
        await self._q().enqueue("noop", i=i)

    async def enqueue_bulk(self, items: range) -> None:
        raise NotImplementedError

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        await self._q().enqueue("noop", i=i, scheduled=due_epoch)

    async def start_worker(self) -> None:
        self.worker = Worker(self._q(), functions=[noop], concurrency=self.concurrency)
        self.worker_task = asyncio.create_task(self.worker.start())

    async def stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.worker_task is not None:
            self.worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker_task
        self.worker = None
        self.worker_task = None

    async def teardown(self) -> None:
        await self.stop_worker()
        if self.queue is not None:
            await self.queue.disconnect()

    def store_mb(self) -> float | None:
        return redis_used_mb(self.url)


if __name__ == "__main__":
    main_async(SaqAdapter)
