"""pytest fixtures for testing apps that use asyncjobs (registered as a ``pytest11`` plugin).

Installed with asyncjobs; nothing to configure. Every fixture name starts
with ``asyncjobs_``, so none shadows a fixture of the app's own suite:

- ``asyncjobs_clock``: a fresh :class:`~asyncjobs.ManualClock` (2026-01-01 UTC).
- ``asyncjobs_runtime``: a :class:`~asyncjobs.JobRuntime` on the memory store
  and ``asyncjobs_clock``, not started (register jobs and schedules, include
  registries, then ``async with Harness(asyncjobs_runtime) as harness:``).
- ``asyncjobs_sqlite_runtime``: the same on a SQLite file in ``tmp_path``.
- ``asyncjobs_anyio_backend``: ``"asyncio"``, the event loop the SQLite and
  Redis stores need; return it from the suite's own ``anyio_backend`` fixture
  (anyio's plugin reads that name).

Runtimes made here use ``shutdown_grace=0.1``, so a test that leaves a job
running does not wait long on leaving.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._clock import ManualClock
from ._runtime import JobRuntime

__all__ = [
    "asyncjobs_anyio_backend",
    "asyncjobs_clock",
    "asyncjobs_runtime",
    "asyncjobs_sqlite_runtime",
]


@pytest.fixture
def asyncjobs_anyio_backend() -> str:
    """``"asyncio"``: what the SQLite (aiosqlite) and Redis (redis-py) stores run on."""
    return "asyncio"


@pytest.fixture
def asyncjobs_clock() -> ManualClock:
    """A manual clock at 2026-01-01 00:00 UTC: time moves only when the test says."""
    return ManualClock()


@pytest.fixture
def asyncjobs_runtime(asyncjobs_clock: ManualClock) -> JobRuntime:
    """A runtime on the memory store and the manual clock, not started yet."""
    from .backends.memory import MemoryBackend

    return JobRuntime(MemoryBackend(), clock=asyncjobs_clock, shutdown_grace=0.1)


@pytest.fixture
def asyncjobs_sqlite_runtime(asyncjobs_clock: ManualClock, tmp_path: Path) -> JobRuntime:
    """A runtime on a SQLite file in ``tmp_path`` and the manual clock, not started yet."""
    from .backends.sqlite import SQLiteBackend

    return JobRuntime(
        SQLiteBackend(tmp_path / "asyncjobs.db"), clock=asyncjobs_clock, shutdown_grace=0.1
    )
