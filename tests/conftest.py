"""Fixtures shared by the whole suite."""

from __future__ import annotations

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
