"""A child process that opens a shared SQLite file and enqueues one keyed job.

Run through :mod:`multiprocessing` with the ``spawn`` start method: every child
opens the file (racing to create its schema), waits at a barrier so the
enqueues start together, and reports the id of the job the store returned.
"""

from __future__ import annotations

import uuid
import warnings
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import anyio

from asyncjobs._clock import SystemClock
from asyncjobs._models import NewJob
from asyncjobs.backends.sqlite import SQLiteBackend, UnsafeSQLiteWarning


def enqueue_keyed(path: str, key: str, barrier: Barrier, results: Queue[str]) -> None:
    """Open *path*, wait for every racer, enqueue a job with *key*, report the job id."""
    # Several connections share the file by design here; the warning is tested elsewhere.
    warnings.simplefilter("ignore", UnsafeSQLiteWarning)

    async def main() -> str:
        clock = SystemClock()
        backend = SQLiteBackend(path)
        await backend.open(clock)
        try:
            barrier.wait(timeout=45)
            now = clock.now()
            new = NewJob(
                id=uuid.uuid4().hex,
                name="tasks.race",
                queue="default",
                payload=b"{}",
                due_at=now,
                enqueued_at=now,
                key=key,
            )
            [job] = await backend.enqueue([new])
            return job.id
        finally:
            await backend.aclose()

    results.put(anyio.run(main))
