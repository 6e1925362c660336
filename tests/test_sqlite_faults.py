"""The SQLite store under faults, with real processes: a full disk.

A 16 MiB tmpfs fills up and is freed again: a full disk fails every write with
:class:`SQLiteFullError`, stores none of it, and the same backend object works
again once space is freed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncjobs._clock import Clock, ManualClock
from asyncjobs._models import Job, NewJob, Outcome, OutcomeKind, Schedule
from asyncjobs.backends.sqlite import SQLiteBackend, SQLiteFullError

pytestmark = pytest.mark.anyio

QUEUE = "default"
LEASE = 30.0

# -- helpers ------------------------------------------------------------------------


def new_job(clock: Clock, **overrides: Any) -> NewJob:
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "name": "tasks.example",
        "queue": QUEUE,
        "payload": b"{}",
        "due_at": clock.now(),
        "enqueued_at": clock.now(),
    }
    fields.update(overrides)
    return NewJob(**fields)


def outcome(job: Job, kind: OutcomeKind = OutcomeKind.COMPLETE, **fields: Any) -> Outcome:
    assert job.lease_token is not None
    return Outcome(job_id=job.id, lease_token=job.lease_token, kind=kind, **fields)


def token(job: Job) -> str:
    assert job.lease_token is not None
    return job.lease_token


async def opened(path: Path, clock: Clock, **options: Any) -> SQLiteBackend:
    backend = SQLiteBackend(path, **options)
    await backend.open(clock)
    return backend


# -- a full disk ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test, always unmounted after it (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until *directory*'s filesystem is full; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # big writes, then the last bytes
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def checkpoint(path: Path) -> None:
    """Fold the WAL into the file and truncate it, so the next write must grow it."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


async def test_a_full_disk_fails_every_write_cleanly_and_the_store_recovers(
    small_disk: Path, clock: ManualClock
) -> None:
    path = small_disk / "jobs.db"
    store = await opened(path, clock)
    try:
        [queued] = await store.enqueue([new_job(clock)])
        await store.enqueue([new_job(clock, queue="run") for _ in range(2)])
        running = await store.claim("run", 2, "w", LEASE)
        schedule = Schedule(
            name="tick",
            job_name="tasks.tick",
            queue=QUEUE,
            trigger='{"kind": "interval", "seconds": 5}',
            payload=b"{}",
            next_fire_at=clock.now() + 5,
        )
        await store.put_schedule(schedule)
        before = await store.list_jobs(limit=100)
        big = os.urandom(64 * 1024)
        writes: dict[str, Callable[[], Awaitable[object]]] = {
            "enqueue": lambda: store.enqueue([new_job(clock, payload=big)]),
            "enqueue_many": lambda: store.enqueue([new_job(clock, payload=big) for _ in range(20)]),
            "enqueue_keyed": lambda: store.enqueue([new_job(clock, key="k", payload=big)]),
            "claim": lambda: store.claim(QUEUE, 1, "w", LEASE),
            "heartbeat": lambda: store.heartbeat({j.id: token(j) for j in running}, LEASE),
            "settle": lambda: store.settle([outcome(running[0], result=big)]),
            "progress": lambda: store.set_progress(
                running[1].id, token(running[1]), 0.5, "x" * 5000
            ),
            "cancel": lambda: store.cancel(queued.id),
            "pause": lambda: store.pause_queue("new-queue", True),
            "put_schedule": lambda: store.put_schedule(
                Schedule(
                    name="other",
                    job_name="tasks.other",
                    queue=QUEUE,
                    trigger='{"kind": "interval", "seconds": 9}',
                    payload=big,
                    next_fire_at=None,
                )
            ),
        }
        checkpoint(path)
        filler = fill(small_disk)
        try:
            # Every write needs the WAL to grow, on a disk with no room left.
            for name, write in writes.items():
                with pytest.raises(SQLiteFullError) as caught:
                    await write()
                assert "the database is full" in str(caught.value), name
                assert "nothing of this call was stored" in str(caught.value), name
            assert await store.list_jobs(limit=100) == before  # nothing half-written
            assert await store.get_schedule("other") is None
        finally:
            filler.unlink()

        # Space is back: the same object works, with no transaction left open.
        [after] = await store.enqueue([new_job(clock, payload=big)])
        assert await store.get_job(after.id) == after
        reply = await store.heartbeat({j.id: token(j) for j in running}, LEASE)
        assert reply.lost == frozenset()
        assert await store.settle([outcome(j) for j in running]) == []
        assert [j.id for j in await store.claim(QUEUE, 10, "w", LEASE)] == [queued.id, after.id]
        await store.pause_queue("new-queue", True)
        assert {s.queue: s.paused for s in await store.queue_stats()}["new-queue"] is True
    finally:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_opening_on_a_full_disk_fails_cleanly_and_works_once_space_is_freed(
    small_disk: Path, clock: ManualClock
) -> None:
    path = small_disk / "jobs.db"
    store = await opened(path, clock)
    await store.aclose()
    filler = fill(small_disk)
    try:
        with pytest.raises(SQLiteFullError, match="the database is full"):
            await opened(path, clock)
    finally:
        filler.unlink()
    store = await opened(path, clock)
    try:
        [job] = await store.enqueue([new_job(clock)])
        assert await store.get_job(job.id) == job
    finally:
        await store.aclose()
