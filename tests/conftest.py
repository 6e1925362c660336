"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asyncjobs import JobRuntime
from asyncjobs._clock import ManualClock
from asyncjobs.backends import Backend
from tests.backends.conftest import BACKEND_KINDS, make_backend

RuntimeFactory = Callable[..., JobRuntime]


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (``fsync`` on, as in production).

    Tests share its ``postgres`` database and keep apart by schema. Without
    the PostgreSQL binaries the Postgres tests skip locally and fail in CI,
    where they must be installed.
    """
    from tests.postgres_server import PostgresServer, find_postgres_bin

    if find_postgres_bin() is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with PostgresServer() as server:
        yield server.url


@pytest.fixture(params=BACKEND_KINDS)
def make_runtime(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> RuntimeFactory:
    """Build runtimes on one store of the backend under test, on the manual clock.

    Like separate processes, each runtime gets its own backend object on the
    same store (a memory store lives in its object, so that one is shared).
    """
    shared: Backend = make_backend(request.param, tmp_path, request)

    def factory(**kwargs: object) -> JobRuntime:
        kwargs.setdefault("queues", {"default": 4})
        kwargs.setdefault("shutdown_grace", 0.05)
        store = (
            shared if request.param == "memory" else make_backend(request.param, tmp_path, request)
        )
        return JobRuntime(store, clock=clock, **kwargs)  # type: ignore[arg-type]

    return factory
