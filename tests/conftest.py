"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from asyncjobs._clock import ManualClock


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (aiosqlite and redis-py need it)."""
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock, so tests move time instead of waiting for it."""
    return ManualClock()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway ``redis-server`` for the session (AOF on, so the backend does not warn).

    Tests share it and keep apart by key prefix. Without ``redis-server`` the
    Redis tests skip locally and fail in CI, where it must be installed.
    """
    from tests.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with RedisServer(appendonly=True, appendfsync="no") as server:
        yield server.url
