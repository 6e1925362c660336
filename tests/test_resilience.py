"""The runtime under store faults, in-process: real stores, really failing.

A Redis server stopped and started again, a SQLite file whose write lock a
separate process holds, a SQLite file on a full filesystem, a worker that
claims its own job again after its lease lapsed, and shutdown with jobs
claimed ahead. Each test bounds its waits; nothing sleeps to wait for a
condition (the bounded polls read the store or the runtime's status).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from asyncjobs import (
    Event,
    EventStream,
    JobContext,
    JobLeaseLost,
    JobRuntime,
    JobStarted,
    JobState,
    ManualClock,
    StoreStatus,
)
from asyncjobs._snapshot import Snapshot, store_unreachable
from asyncjobs.backends.memory import MemoryBackend
from asyncjobs.backends.sqlite import SQLiteBackend, SQLiteFullError
from asyncjobs.console import render
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

T = TypeVar("T")

#: The bound of every wait in this file: far above what a loaded machine needs.
WAIT = 30.0


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll *check* (bounded) until it returns something other than ``None``."""
    try:
        with anyio.fail_after(WAIT):
            while True:
                value = await check()
                if value is not None:
                    return value
                await anyio.sleep(0.02)  # the poll interval of a bounded loop
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def published(stream: EventStream) -> list[Event]:
    """The events already published to *stream* (the runtime has stopped)."""
    seen: list[Event] = []
    with anyio.move_on_after(0.2):  # ends the wait for more, not a wait for a condition
        async for event in stream:
            seen.append(event)
    return seen


# -- Redis stopped and started again --------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[object]:
    """A Redis server of this test's own, to stop and start (AOF on, fsync always)."""
    from tests.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    with RedisServer(appendonly=True, appendfsync="always") as server:
        yield server


async def test_workers_ride_out_a_redis_outage_and_write_outcomes_when_it_is_back(
    own_redis: object,
) -> None:
    from asyncjobs.backends.redis import RedisBackend
    from tests.redis_server import RedisServer

    assert isinstance(own_redis, RedisServer)
    server = own_redis
    # Few client retries, so the outage reaches the runtime's loops within a second.
    runtime = JobRuntime(
        RedisBackend(server.url, prefix="outage", retries=1, retry_backoff_cap=0.1),
        queues={"default": 4},
        lease=30,
    )
    runs: Counter[int] = Counter()
    inside = anyio.Event()
    go_on = anyio.Event()

    @runtime.job()
    async def work(n: int) -> int:
        runs[n] += 1
        if n == 0:
            inside.set()
            await go_on.wait()
        return n

    async with runtime:
        handles = [await work.enqueue(n) for n in range(40)]
        await inside.wait()
        await anyio.to_thread.run_sync(server.stop)
        # Job 0 finishes while the store is away: its outcome must be kept.
        go_on.set()

        async def unreachable() -> StoreStatus | None:
            status = runtime.store_status
            return None if status.reachable else status

        status = await eventually(unreachable, "the runtime to see the outage")
        assert status.unreachable_since is not None
        assert status.last_error
        with pytest.raises(Exception, match="Redis"):
            await work.enqueue(99)  # the application's enqueue fails, clearly
        await anyio.to_thread.run_sync(server.start)

        async def all_done() -> bool | None:
            done = [await handle.status() for handle in handles]
            return True if all(state is JobState.COMPLETE for state in done) else None

        await eventually(all_done, "every job to complete after the outage")
        assert runtime.store_status.reachable
        assert runtime.store_status.outages == 1
        assert [await handle.result(timeout=WAIT) for handle in handles] == list(range(40))
    assert runs == Counter(range(40)), "a job ran twice though no lease expired"


# -- a SQLite write lock held by another process --------------------------------------

_HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("COMMIT")
    """
)


async def test_a_write_lock_held_by_another_process_stops_no_loop(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    # A short busy_timeout, so the lock reaches the store's callers quickly.
    runtime = JobRuntime(SQLiteBackend(path, busy_timeout=0.05), queues={"default": 2}, lease=30)
    runs: Counter[int] = Counter()
    inside = anyio.Event()
    go_on = anyio.Event()

    @runtime.job()
    async def work(n: int) -> int:
        runs[n] += 1
        if n == 0:
            inside.set()
            await go_on.wait()
        return n

    async with runtime:
        running = await work.enqueue(0)
        await inside.wait()
        # Jobs that come due while the lock is held: claims meet it.
        due_soon = [
            await work.options(delay=timedelta(seconds=0.2)).enqueue(n) for n in range(1, 11)
        ]
        async with await anyio.open_process(
            [sys.executable, "-c", _HOLD_LOCK, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as holder:
            assert holder.stdout is not None
            assert holder.stdin is not None
            lines = BufferedByteReceiveStream(holder.stdout)
            assert await lines.receive_until(b"\n", 100) == b"locked"
            go_on.set()  # job 0's outcome meets the lock too
            await anyio.sleep(1.5)  # the fault itself: the lock stays held a while
            await holder.stdin.send(b"\n")
            assert await holder.wait() == 0
        handles = [running, *due_soon]
        assert [await handle.result(timeout=WAIT) for handle in handles] == list(range(11))
    assert runs == Counter(range(11)), "a job ran twice though no worker died"


# -- a full filesystem ----------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until *directory*'s filesystem is full; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 512):  # big writes, then the last bytes in small ones
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_stops_no_worker_and_work_goes_on_once_space_is_freed(
    small_filesystem: Path,
) -> None:
    runtime = JobRuntime(
        SQLiteBackend(small_filesystem / "jobs.db"), queues={"default": 2}, lease=30
    )
    runs: Counter[int] = Counter()
    payload = "x" * 4000

    @runtime.job()
    async def work(n: int, padding: str) -> int:
        runs[n] += 1
        return n

    async with runtime:
        # A backlog that comes due while the disk is full.
        delayed = [
            await work.options(delay=timedelta(seconds=0.5)).enqueue(n, padding=payload)
            for n in range(20)
        ]
        filler = fill(small_filesystem)
        accepted = []
        later = work.options(delay=timedelta(hours=1))

        async def enqueue_until_full() -> None:
            for n in range(100, 400):
                accepted.append(await later.enqueue(n, padding=payload * 10))

        with pytest.raises(SQLiteFullError):
            await enqueue_until_full()
        # A whole batch that does not fit is refused as a whole.
        with pytest.raises(SQLiteFullError):
            await runtime.enqueue_many([later.call(n, padding=payload) for n in range(500, 600)])

        async def failing() -> StoreStatus | None:
            status = runtime.store_status
            return None if status.reachable else status

        status = await eventually(failing, "a loop to meet the full disk")
        assert "full" in (status.last_error or "")
        filler.unlink()
        results = [await handle.result(timeout=WAIT) for handle in delayed]
        assert results == list(range(20))
        assert runtime.store_status.reachable
        # The enqueues that were refused left nothing behind.
        stored = await runtime.list_jobs(limit=1000)
        assert {job.id for job in stored} == {handle.id for handle in [*delayed, *accepted]}
    assert runs == Counter(range(20))


# -- a worker that claims its own job again -------------------------------------------


async def test_a_stale_attempt_and_a_new_claim_of_the_same_job_never_collide(
    clock: ManualClock,
) -> None:
    store = MemoryBackend()
    runtime = JobRuntime(store, clock=clock, queues={"default": 2}, lease=10, prefetch=0)
    entered: dict[int, anyio.Event] = {1: anyio.Event(), 2: anyio.Event()}
    stale_stopped = anyio.Event()
    release_new = anyio.Event()

    @runtime.job()
    async def long(ctx: JobContext) -> int:
        entered[ctx.attempt].set()
        if ctx.attempt == 1:
            try:
                await anyio.sleep_forever()
            finally:
                stale_stopped.set()
        await release_new.wait()
        return ctx.attempt

    with runtime.events.subscribe() as events:
        async with runtime:
            handle = await long.enqueue()
            await entered[1].wait()
            # This worker stalls past its lease (its heartbeat does not get to run
            # before the sweep: a memory store's sweep never yields).
            clock.advance(11)
            # The sweep wakes the idle claim loop itself, as another worker's would.
            assert await store.recover_expired() == 1
            with anyio.fail_after(WAIT):
                await entered[2].wait()
                await stale_stopped.wait()
            # The new claim's lease is renewed while it runs on past the old expiry.
            clock.advance(8)
            clock.advance(8)

            async def renewed() -> float | None:
                job = await store.get_job(handle.id)
                assert job is not None
                expires = job.lease_expires_at
                return expires if expires is not None and expires > clock.now() + 5 else None

            await eventually(renewed, "the new claim's lease to be renewed")
            release_new.set()
            assert await handle.result(timeout=WAIT) == 2
        seen = await published(events)
    assert sum(isinstance(event, JobLeaseLost) for event in seen) == 1
    assert [event.attempt for event in seen if isinstance(event, JobStarted)] == [1, 2]


# -- shutdown ---------------------------------------------------------------------------


async def test_no_handler_starts_after_shutdown_for_jobs_claimed_ahead(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(queues={"default": 1}, prefetch=1, shutdown_grace=0.05)
    entered: list[int] = []
    first_in = anyio.Event()

    @runtime.job()
    async def work(n: int) -> None:
        entered.append(n)
        first_in.set()
        await anyio.sleep_forever()

    with runtime.events.subscribe() as events:
        async with runtime:
            first = await work.enqueue(0)
            await first_in.wait()
            second = await work.enqueue(1)

            async def claimed_ahead() -> bool | None:
                job = await runtime.get_job(second.id)
                assert job is not None
                return True if job.state is JobState.RUNNING else None

            await eventually(claimed_ahead, "the second job to be claimed ahead")
        started = [e.job_id for e in await published(events) if isinstance(e, JobStarted)]
    assert entered == [0]
    assert started == [first.id]
    reader = make_runtime(role="enqueue")
    async with reader:
        for handle in (first, second):
            job = await reader.get_job(handle.id)
            assert job is not None
            assert job.state is JobState.QUEUED
            assert job.attempts == 0, "a handed-back job's attempt must not count"


# -- heartbeats on a manual clock --------------------------------------------------------


async def test_leases_are_renewed_round_after_round_on_a_manual_clock(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime(lease=30)
    inside = anyio.Event()
    done = anyio.Event()

    @runtime.job()
    async def long() -> None:
        inside.set()
        await done.wait()

    async with runtime:
        handle = await long.enqueue()
        await inside.wait()
        for _ in range(4):  # far past the first lease: each round must renew it
            clock.advance(11)

            async def renewed() -> float | None:
                job = await runtime.get_job(handle.id)
                assert job is not None
                expires = job.lease_expires_at
                return expires if expires is not None and expires >= clock.now() + 20 else None

            await eventually(renewed, "a heartbeat to renew the lease")
        done.set()
        await handle.result(timeout=WAIT)
        assert await handle.status() is JobState.COMPLETE


# -- what a person sees ----------------------------------------------------------------


async def test_the_console_says_the_store_is_unreachable_and_since_when() -> None:
    runtime = JobRuntime(MemoryBackend())
    async with runtime:
        snapshot = store_unreachable(runtime, ConnectionError("refused"), None)
    assert isinstance(snapshot, Snapshot)
    assert not snapshot.store.reachable
    from rich.console import Console

    console = Console(width=100, record=True)
    console.print(render(snapshot))
    text = console.export_text()
    assert "store unreachable since" in text
    assert "ConnectionError: refused" in text
