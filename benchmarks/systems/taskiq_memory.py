"""Peer: taskiq with its ``InMemoryBroker``.

The in-memory broker has no separate worker: ``kiq()`` starts the task at
once (``asyncio.create_task`` per message; ``max_async_tasks`` is applied only
on the listening path of real brokers, so execution here is unbounded). So
"drain" is timed from the first ``kiq()`` of the batch to the last handler,
i.e. enqueue and execution together, which favours taskiq. "enqueue" times the
``kiq()`` calls only; their tasks run after the timing. "100,000 jobs queued"
is 100,000 ``kiq()`` calls whose tasks have not run yet.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, ClassVar

from _common import RECORDER, main_async, version_of
from taskiq import InMemoryBroker


class TaskiqMemory:
    name = "taskiq-memory"
    na: ClassVar[dict[str, str]] = {
        "enqueue_bulk": "taskiq has no bulk kiq API",
        "delayed": "InMemoryBroker cannot delay; delays need the separate `taskiq scheduler` "
        "process and a ScheduleSource (none in-memory), which wakes once per second "
        "and reloads schedules once per minute",
    }

    def __init__(self) -> None:
        self.versions = version_of("taskiq")
        self.versions["python"] = sys.version.split()[0]
        self.broker: InMemoryBroker | None = None
        self.task: Any = None
        self.pending: list[int] = []
        self.started = False

    async def setup(self, args: argparse.Namespace) -> None:
        logging.getLogger("taskiq").setLevel(logging.WARNING)
        self.broker = InMemoryBroker(max_async_tasks=args.concurrency)

        @self.broker.task
        async def noop(i: int) -> None:
            RECORDER.hit(i)

        self.task = noop
        await self.broker.startup()
        self.workload = args.workload

    async def enqueue(self, i: int) -> None:
        await self.task.kiq(i)

    async def enqueue_bulk(self, items: range) -> None:
        raise NotImplementedError

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        raise NotImplementedError

    async def start_worker(self) -> None:
        # Nothing to start; for "drain" the batch is kicked now (see module docstring).
        self.started = True
        for i in self.pending:
            await self.task.kiq(i)
        self.pending.clear()

    async def stop_worker(self) -> None:
        assert self.broker is not None
        await self.broker.wait_all()

    async def teardown(self) -> None:
        if self.broker is not None:
            await self.broker.shutdown()

    def store_mb(self) -> float | None:
        return None


class TaskiqMemoryDrain(TaskiqMemory):
    """Holds the "enqueued beforehand" jobs until the worker starts (kiq runs them at once)."""

    async def enqueue(self, i: int) -> None:
        if self.started:
            await self.task.kiq(i)
        else:
            self.pending.append(i)


if __name__ == "__main__":
    main_async(TaskiqMemoryDrain if "drain" in sys.argv else TaskiqMemory)
