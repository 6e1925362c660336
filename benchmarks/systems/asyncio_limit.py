"""Limit: plain asyncio, one task per no-op job under a semaphore of *concurrency*.

There is no store: "enqueue" is ``await queue.put(i)`` on an ``asyncio.Queue``
(the cheapest awaited hand-off), "drain" creates one task per job and runs
them under ``asyncio.Semaphore(concurrency)``, a delayed job is a task that
sleeps until its due time, and "100,000 jobs queued" is 100,000 created tasks
waiting on the semaphore.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Coroutine
from typing import Any, ClassVar

from _common import RECORDER, main_async


async def noop(i: int) -> None:
    RECORDER.hit(i)


class PlainAsyncio:
    name = "asyncio"
    na: ClassVar[dict[str, str]] = {
        "enqueue_bulk": "no store: nothing to enqueue in bulk",
    }

    def __init__(self) -> None:
        self.versions = {"python": sys.version.split()[0]}
        self.concurrency = 10
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.pending: list[int] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.sem = asyncio.Semaphore(10)
        self.started = False

    async def setup(self, args: argparse.Namespace) -> None:
        self.concurrency = args.concurrency
        self.sem = asyncio.Semaphore(self.concurrency)
        self.workload = args.workload

    async def _run(self, i: int) -> None:
        async with self.sem:
            await noop(i)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def enqueue(self, i: int) -> None:
        if self.started:
            self._spawn(self._run(i))  # a running "worker": one task per job at once
        else:
            await self.queue.put(i)

    async def enqueue_bulk(self, items: range) -> None:
        raise NotImplementedError

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        async def later() -> None:
            await asyncio.sleep(due_epoch - time.time())
            await self._run(i)

        self._spawn(later())

    async def start_worker(self) -> None:
        self.started = True
        while not self.queue.empty():
            self._spawn(self._run(self.queue.get_nowait()))

    async def stop_worker(self) -> None:
        self.started = False

    async def teardown(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    def store_mb(self) -> float | None:
        return None


class PlainAsyncioRss(PlainAsyncio):
    """For the RSS workload, "queued" jobs are created tasks blocked on a closed semaphore."""

    async def enqueue(self, i: int) -> None:
        self._spawn(self._run(i))

    async def setup(self, args: argparse.Namespace) -> None:
        await super().setup(args)
        self.sem = asyncio.Semaphore(0)


if __name__ == "__main__":
    main_async(PlainAsyncioRss if "rss" in sys.argv else PlainAsyncio)
