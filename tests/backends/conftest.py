"""One fixture drives the conformance suite over every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncjobs._clock import ManualClock
from asyncjobs.backends import Backend

BACKEND_KINDS = ["memory", "sqlite", "redis", "postgres"]


def make_backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    """Build an unopened backend of *kind* for one test."""
    if kind == "memory":
        from asyncjobs.backends.memory import MemoryBackend

        return MemoryBackend()
    if kind == "sqlite":
        from asyncjobs.backends.sqlite import SQLiteBackend

        return SQLiteBackend(tmp_path / "jobs.db")
    if kind == "redis":
        from asyncjobs.backends.redis import RedisBackend

        redis_url: str = request.getfixturevalue("redis_url")
        return RedisBackend(redis_url, prefix=f"t{abs(hash(request.node.nodeid))}")
    if kind == "postgres":
        from asyncjobs.backends.postgres import PostgresBackend

        # One schema per test: every backend object of the test shares it.
        postgres_url: str = request.getfixturevalue("postgres_url")
        return PostgresBackend(postgres_url, schema=f"t{abs(hash(request.node.nodeid))}")
    raise AssertionError(kind)


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test."""
    kind: str = request.param
    return kind


@pytest.fixture
async def backend(
    backend_kind: str, tmp_path: Path, clock: ManualClock, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    """An opened backend on a manual clock, closed after the test."""
    store = make_backend(backend_kind, tmp_path, request)
    await store.open(clock)
    try:
        yield store
    finally:
        await store.aclose()
