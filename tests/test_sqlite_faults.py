"""The SQLite store under faults, with real processes: a held write lock, a full disk.

Another process holds SQLite's write lock (``BEGIN IMMEDIATE``) or asyncjobs'
writer queue (the ``flock`` on ``<db>-lock``) while this process writes; a
16 MiB tmpfs fills up and is freed again. The promises checked:

- no write of the runtime's loops raises while the lock is merely held, and
  a call an application makes gives up only after ``write_timeout``, naming
  the process to look for, with nothing stored;
- a lease runs from when the write lock is held, and a live worker whose
  heartbeats are merely waiting never has its job recovered;
- a full disk fails every write with :class:`SQLiteFullError`, stores none of
  it, and the same backend object works again once space is freed.

Nothing sleeps to wait for a condition: tests wait for a line from the child
("locked"), for tasks to block, or for processes to exit. The holds themselves
last a set time, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from asyncjobs._clock import Clock, ManualClock, SystemClock
from asyncjobs._exceptions import BackendError
from asyncjobs._models import (
    ErrorInfo,
    Handoff,
    Job,
    JobState,
    NewJob,
    Outcome,
    OutcomeKind,
    Schedule,
)
from asyncjobs.backends.sqlite import SQLiteBackend, SQLiteBusyError, SQLiteFullError
from asyncjobs.backends.sqlite import _stalls as sqlite_module

pytestmark = pytest.mark.anyio

QUEUE = "default"
LEASE = 30.0
ROOT = Path(__file__).resolve().parent.parent
#: The bound of every wait here: far above what a loaded 2-core machine needs.
WAIT = 60.0


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


def resume_at(path: Path) -> float:
    """When lease sweeps resume, as the file says."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        [(value,)] = db.execute("SELECT resume_at FROM asyncjobs_lease_sweeps").fetchall()
    return float(value)


# A child that takes a lock, says "locked", and holds it until a line arrives on its
# stdin and at least `minimum` seconds have passed: SQLite's write lock (another
# program's long transaction) or asyncjobs' writer queue (a process of ours stopped
# between taking the queue and writing).
_HOLD = textwrap.dedent(
    """
    import fcntl, os, sqlite3, sys, time
    kind, path, minimum = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if kind == "sqlite":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    else:
        fd = os.open(path + "-lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
    locked = time.monotonic()
    print("locked", flush=True)
    sys.stdin.readline()
    time.sleep(max(0.0, minimum - (time.monotonic() - locked)))
    if kind == "sqlite":
        conn.execute("ROLLBACK")
    print("released", flush=True)
    """
)


class Holder:
    """A child process holding a write lock on the database."""

    def __init__(self, process: Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.pid = process.pid
        self._lines = BufferedByteReceiveStream(process.stdout)
        self._released = False

    async def line(self) -> bytes:
        with anyio.fail_after(WAIT):
            return await self._lines.receive_until(b"\n", 100)

    async def release(self) -> None:
        """Let go (after the child's minimum hold) and wait until it has."""
        if self._released:
            return
        self._released = True
        assert self.process.stdin is not None
        await self.process.stdin.send(b"\n")
        assert await self.line() == b"released"
        with anyio.fail_after(WAIT):
            assert await self.process.wait() == 0


@contextlib.asynccontextmanager
async def held(path: Path, *, kind: str = "sqlite", at_least: float = 0.0) -> AsyncIterator[Holder]:
    """Hold the write lock of *path* in another process for the body (and *at_least* s)."""
    command = [sys.executable, "-c", _HOLD, kind, str(path), str(at_least)]
    async with await anyio.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as process:
        holder = Holder(process)
        assert await holder.line() == b"locked"
        try:
            yield holder
        finally:
            with anyio.CancelScope(shield=True):
                await holder.release()


class Tasks:
    """Start calls as tasks now; collect their results (or exceptions) later."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg
        self.results: dict[str, Any] = {}

    def start(self, name: str, call: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            try:
                self.results[name] = await call()
            except Exception as exc:  # reported by the test's assertions
                self.results[name] = exc

        self._tg.start_soon(run)


# -- every write waits out a lock another process holds -------------------------------


async def test_an_enqueue_that_meets_a_held_lock_lands_after_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    # A busy_timeout far shorter than the hold: the write meets SQLITE_BUSY and runs
    # again, with the same parameters (they were a one-shot iterator once).
    store = await opened(tmp_path / "jobs.db", clock, busy_timeout=0.05)
    try:
        batch = [new_job(clock) for _ in range(3)]
        keyed = [new_job(clock, key="k1"), new_job(clock, key="k2")]
        offer = Handoff(worker_id="w", lease=LEASE, limits={"handoff": 1})
        single = new_job(clock, queue="handoff")
        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            async with held(tmp_path / "jobs.db", at_least=1.0):
                tasks.start("batch", lambda: store.enqueue(batch))
                tasks.start("keyed", lambda: store.enqueue(keyed))
                tasks.start("handoff", lambda: store.enqueue([single], offer))
                await anyio.wait_all_tasks_blocked()
                assert tasks.results == {}  # nothing lands while the lock is held

        assert [j.id for j in tasks.results["batch"]] == [new.id for new in batch]
        assert [j.id for j in tasks.results["keyed"]] == [new.id for new in keyed]
        [handed] = tasks.results["handoff"]
        assert handed.state is JobState.RUNNING
        for new in (*batch, *keyed, single):
            stored = await store.get_job(new.id)
            assert stored is not None, f"{new.id} was not stored"
        assert await store.get_job(single.id) == handed
    finally:
        await store.aclose()


async def test_every_write_waits_out_a_lock_held_for_seconds(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.db"
    store = await opened(path, clock, busy_timeout=0.05)
    try:
        await store.enqueue([new_job(clock) for _ in range(6)])
        beat, done, retried, released, flagged, progressing = await store.claim(
            QUEUE, 6, "w", LEASE
        )
        [dead] = await store.enqueue([new_job(clock, queue="dead", max_attempts=1)])
        [dead] = await store.claim("dead", 1, "w", LEASE)
        await store.settle(
            [outcome(dead, OutcomeKind.DEAD, error=ErrorInfo(type="E", message="m"))]
        )
        [finished] = await store.enqueue([new_job(clock, queue="old")])
        [finished] = await store.claim("old", 1, "w", LEASE)
        await store.settle([outcome(finished)])
        [waiting] = await store.enqueue([new_job(clock, queue="later", due_at=clock.now() + 60)])
        tick = clock.now() + 5
        schedule = Schedule(
            name="nightly",
            job_name="tasks.cleanup",
            queue=QUEUE,
            trigger='{"kind": "interval", "seconds": 5}',
            payload=b"{}",
            next_fire_at=tick,
        )
        await store.put_schedule(schedule)
        clock.advance(10)
        late = new_job(clock, queue="late")
        fired = new_job(clock, schedule="nightly")

        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            # Three seconds: longer than the store's old retries lasted, with a
            # busy_timeout of 0.05 s.
            async with held(path, at_least=3.0):
                tasks.start("enqueue", lambda: store.enqueue([late]))
                tasks.start("claim", lambda: store.claim("later", 1, "w", LEASE))
                tasks.start("heartbeat", lambda: store.heartbeat({beat.id: token(beat)}, LEASE))
                tasks.start("settle", lambda: store.settle([outcome(done)]))
                tasks.start(
                    "retry",
                    lambda: store.settle(
                        [
                            outcome(retried, OutcomeKind.RETRY, due_at=clock.now() + 1),
                            outcome(released, OutcomeKind.RELEASE),
                        ]
                    ),
                )
                tasks.start(
                    "progress",
                    lambda: store.set_progress(progressing.id, token(progressing), 0.5, "x"),
                )
                tasks.start("cancel", lambda: store.cancel(flagged.id))
                tasks.start("cancel_queued", lambda: store.cancel(waiting.id))
                tasks.start("retry_dead", lambda: store.retry_dead(dead.id, clock.now()))
                tasks.start("recover", store.recover_expired)
                tasks.start("pause", lambda: store.pause_queue("paused", True))
                tasks.start("pause_schedule", lambda: store.pause_schedule("other", True))
                tasks.start("fire", lambda: store.fire_schedule("nightly", tick, tick + 5, [fired]))
                tasks.start("prune", lambda: store.prune({JobState.COMPLETE: clock.now() + 1}))
                tasks.start("put_schedule", lambda: store.put_schedule(schedule))
                tasks.start("remove_schedule", lambda: store.remove_schedule("missing"))
                await anyio.wait_all_tasks_blocked()
                assert tasks.results == {}

        raised = {name: r for name, r in tasks.results.items() if isinstance(r, Exception)}
        assert raised == {}
        assert [j.id for j in tasks.results["enqueue"]] == [late.id]
        assert await store.get_job(late.id) is not None
        assert [j.id for j in tasks.results["claim"]] == []  # not due: claimed nothing
        assert tasks.results["heartbeat"].lost == frozenset()
        assert tasks.results["settle"] == []
        assert tasks.results["retry"] == []
        assert tasks.results["progress"] is True
        assert tasks.results["cancel"].cancel_requested
        assert tasks.results["cancel_queued"].state is JobState.CANCELLED
        assert tasks.results["retry_dead"].state is JobState.QUEUED
        assert tasks.results["recover"] == 0
        assert [j.id for j in tasks.results["fire"]] == [fired.id]
        # The job finished before the hold and the one settled during it (its
        # finished_at is the clock at the settle) are both older than the cutoff.
        assert tasks.results["prune"] == 2
        assert await store.get_job(finished.id) is None
        assert {s.queue: s.paused for s in await store.queue_stats()}["paused"] is True
    finally:
        await store.aclose()


async def test_writes_queued_together_commit_together_and_fail_alone(
    tmp_path: Path, clock: ManualClock
) -> None:
    # Writes that queue up in this process while the lock is held run in one
    # transaction once it is free, each in its own savepoint: the one that does
    # not fit (max_size) fails alone, the others land.
    path = tmp_path / "jobs.db"
    store = await opened(path, clock, busy_timeout=0.05, max_size=256 * 1024)
    try:
        first, last = new_job(clock), new_job(clock)
        too_big = [new_job(clock, payload=os.urandom(20_000)) for _ in range(20)]
        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            async with held(path):
                tasks.start("first", lambda: store.enqueue([first]))
                await anyio.wait_all_tasks_blocked()
                tasks.start("too_big", lambda: store.enqueue(too_big))
                tasks.start("last", lambda: store.enqueue([last]))
                await anyio.wait_all_tasks_blocked()

        assert isinstance(tasks.results["too_big"], SQLiteFullError)
        assert [j.id for j in tasks.results["first"]] == [first.id]
        assert [j.id for j in tasks.results["last"]] == [last.id]
        assert {j.id for j in await store.list_jobs()} == {first.id, last.id}
    finally:
        await store.aclose()


# -- leases run from when the lock is held --------------------------------------------


@pytest.mark.parametrize("busy_timeout", [0.05, 30.0], ids=["retried", "one-busy-wait"])
async def test_a_heartbeat_that_waited_for_the_lock_extends_from_when_it_landed(
    tmp_path: Path, clock: ManualClock, busy_timeout: float
) -> None:
    path = tmp_path / "jobs.db"
    worker = await opened(path, clock, busy_timeout=busy_timeout)
    sweeper = await opened(path, clock)
    try:
        await worker.enqueue([new_job(clock)])
        [job] = await worker.claim(QUEUE, 1, "a", LEASE)
        clock.advance(20)  # the lease has 10 s left when the heartbeat is sent

        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            async with held(path):
                tasks.start("heartbeat", lambda: worker.heartbeat({job.id: token(job)}, LEASE))
                await anyio.wait_all_tasks_blocked()
                clock.advance(40)  # the lock is held past the old lease

        assert tasks.results["heartbeat"].lost == frozenset()
        stored = await worker.get_job(job.id)
        assert stored is not None
        assert stored.lease_expires_at == clock.now() + LEASE
        # Another worker's sweep finds a live lease.
        assert await sweeper.recover_expired() == 0
        assert await worker.settle([outcome(job)]) == []
    finally:
        await sweeper.aclose()
        await worker.aclose()


@pytest.mark.parametrize("busy_timeout", [0.05, 30.0], ids=["retried", "one-busy-wait"])
async def test_a_claim_that_waited_for_the_lock_hands_out_a_whole_lease(
    tmp_path: Path, clock: ManualClock, busy_timeout: float
) -> None:
    # Retried every 50 ms, or waiting inside one long SQLite busy wait: either way
    # the clock is read once the lock is held.
    path = tmp_path / "jobs.db"
    store = await opened(path, clock, busy_timeout=busy_timeout)
    try:
        await store.enqueue([new_job(clock)])
        single = new_job(clock, queue="handoff")
        offer = Handoff(worker_id="w", lease=LEASE, limits={"handoff": 1})
        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            async with held(path):
                tasks.start("claim", lambda: store.claim(QUEUE, 1, "w", LEASE))
                tasks.start("handoff", lambda: store.enqueue([single], offer))
                await anyio.wait_all_tasks_blocked()
                clock.advance(25)

        [claimed] = tasks.results["claim"]
        [handed] = tasks.results["handoff"]
        for job in (claimed, handed):
            assert job.state is JobState.RUNNING
            assert job.started_at is None
            assert job.lease_expires_at == clock.now() + LEASE
            assert await store.get_job(job.id) == job
    finally:
        await store.aclose()


# -- a stall pauses lease sweeps ------------------------------------------------------


@contextlib.asynccontextmanager
async def write_submitted(store: SQLiteBackend) -> AsyncIterator[None]:
    """Wait, at the end of the body, until *store* has handed a write to its writer."""
    writer = store._writer
    assert writer is not None
    submitted = anyio.Event()
    submit = writer.submit

    def noting(job: Any) -> bool:
        submitted.set()
        return submit(job)

    writer.submit = noting  # type: ignore[method-assign]
    try:
        yield
        with anyio.fail_after(WAIT):
            await submitted.wait()
    finally:
        writer.submit = submit  # type: ignore[method-assign]


@pytest.fixture
def quick_stalls(monkeypatch: pytest.MonkeyPatch) -> float:
    """Count a write as stalled after 0.25 s of real time (not 1 s), to keep tests short."""
    monkeypatch.setattr(sqlite_module, "_STALL_AFTER", 0.25)
    return 0.25


async def test_a_sweep_queued_before_a_late_heartbeat_leaves_the_live_lease_alone(
    tmp_path: Path, clock: ManualClock, quick_stalls: float
) -> None:
    path = tmp_path / "jobs.db"
    worker = await opened(path, clock, busy_timeout=0.05)  # A: alive, heartbeating
    sweeper = await opened(path, clock, busy_timeout=0.05)  # B: another process's sweeps
    dead = await opened(path, clock)  # C: crashed long ago
    try:
        await worker.enqueue([new_job(clock), new_job(clock, queue="dead")])
        [live] = await worker.claim(QUEUE, 1, "a", LEASE)
        [lost] = await dead.claim("dead", 1, "c", LEASE)
        await dead.aclose()
        clock.advance(LEASE + 10)  # both leases ran out; A's heartbeat is on its way

        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            async with held(path, at_least=4 * quick_stalls):
                # B's sweep reads first (it sees both leases expired), then waits for
                # the lock; A's heartbeat is queued after it.
                async with write_submitted(sweeper):
                    tasks.start("sweep", sweeper.recover_expired)
                tasks.start("heartbeat", lambda: worker.heartbeat({live.id: token(live)}, LEASE))
                await anyio.wait_all_tasks_blocked()
                clock.advance(2)

        assert tasks.results["sweep"] == 0, "a sweep that waited long must not judge leases"
        assert tasks.results["heartbeat"].lost == frozenset()
        # Sweeps pause until A could have heartbeated again (a third of its lease)...
        pause_ends = resume_at(path)
        assert pause_ends >= clock.now() + LEASE / 3
        assert await sweeper.recover_expired() == 0
        assert (await sweeper.get_job(lost.id)).state is JobState.RUNNING  # type: ignore[union-attr]
        # ... then the crashed worker's job is recovered, and the live one never is.
        clock.set(pause_ends)
        assert await sweeper.recover_expired() == 1
        recovered = await sweeper.get_job(lost.id)
        assert recovered is not None
        assert recovered.state is JobState.QUEUED
        still = await worker.get_job(live.id)
        assert still is not None
        assert (still.state, still.lease_token) == (JobState.RUNNING, live.lease_token)
        assert await worker.settle([outcome(live)]) == []
    finally:
        await sweeper.aclose()
        await worker.aclose()


async def test_any_stalled_write_pauses_sweeps_and_a_quick_one_does_not(
    tmp_path: Path, clock: ManualClock, quick_stalls: float
) -> None:
    path = tmp_path / "jobs.db"
    store = await opened(path, clock, busy_timeout=0.05)
    try:
        # Quick writes, with the clock moving between them: no pause.
        for _ in range(3):
            await store.enqueue([new_job(clock)])
            clock.advance(5)
        assert resume_at(path) == 0
        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            async with held(path, at_least=4 * quick_stalls):
                tasks.start("enqueue", lambda: store.enqueue([new_job(clock)]))
                await anyio.wait_all_tasks_blocked()
                clock.advance(1)
        assert not isinstance(tasks.results["enqueue"], Exception)
        # This object handed out no lease: the pause is the fixed grace alone.
        assert resume_at(path) == clock.now() + sqlite_module._STALL_GRACE
    finally:
        await store.aclose()


# -- giving up: write_timeout, cancellation, closing --------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "queue"])
async def test_an_enqueue_gives_up_after_write_timeout_naming_the_holder(
    tmp_path: Path, clock: ManualClock, kind: str
) -> None:
    path = tmp_path / "jobs.db"
    store = await opened(path, clock, busy_timeout=0.05, write_timeout=0.5)
    try:
        await store.enqueue([new_job(clock)])
        late = new_job(clock)
        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            async with held(path, kind=kind) as holder:
                with anyio.fail_after(WAIT):
                    with pytest.raises(SQLiteBusyError) as caught:
                        await store.enqueue([late])
                # A loop's write does not give up: it lands after the hold.
                tasks.start("claim", lambda: store.claim(QUEUE, 1, "w", LEASE))
                await anyio.wait_all_tasks_blocked()
                assert tasks.results == {}

        message = str(caught.value)
        assert f"enqueue on {path} gave up after waiting" in message
        assert "write_timeout=0.5 s" in message
        if sys.platform == "linux":
            assert f"process {holder.pid} (python" in message
        assert len(tasks.results["claim"]) == 1
        assert await store.get_job(late.id) is None  # nothing of the call was stored
        [after] = await store.enqueue([late])
        assert await store.get_job(late.id) == after
    finally:
        await store.aclose()


async def test_a_write_cancelled_while_waiting_for_another_process_leaves_no_trace(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.db"
    store = await opened(path, clock, busy_timeout=0.05)
    try:
        [queued] = await store.enqueue([new_job(clock)])
        for kind in ("sqlite", "queue"):
            async with held(path, kind=kind):
                with anyio.fail_after(WAIT):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(store.claim, QUEUE, 1, "w", LEASE)
                        await anyio.wait_all_tasks_blocked()
                        tg.cancel_scope.cancel()
            assert await store.get_job(queued.id) == queued, kind
        [claimed] = await store.claim(QUEUE, 1, "w", LEASE)
        assert claimed.id == queued.id
    finally:
        await store.aclose()


async def test_closing_while_another_process_holds_the_queue_does_not_hang(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.db"
    store = await opened(path, clock)
    [queued] = await store.enqueue([new_job(clock)])
    async with held(path, kind="queue"):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.claim, QUEUE, 1, "w", LEASE)
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
            await store.aclose()
        with pytest.raises(BackendError, match="is not open"):
            await store.claim(QUEUE, 1, "w", LEASE)
    reopened = await opened(path, clock)
    try:
        assert await reopened.get_job(queued.id) == queued
    finally:
        await reopened.aclose()


# -- real processes, real time ----------------------------------------------------------

# Another process sweeping leases, as a second worker's heartbeat loop does: it
# reports each sweep's count until its stdin closes.
_SWEEPER = textwrap.dedent(
    """
    import sys, threading, warnings
    import anyio
    from asyncjobs._clock import SystemClock
    from asyncjobs.backends.sqlite import SQLiteBackend, UnsafeSQLiteWarning

    warnings.simplefilter("ignore", UnsafeSQLiteWarning)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    async def main():
        backend = SQLiteBackend(sys.argv[1], busy_timeout=0.05)
        await backend.open(SystemClock())
        print("ready", flush=True)
        try:
            while not stop.is_set():
                print(await backend.recover_expired(), flush=True)
                await anyio.sleep(0.1)
        finally:
            await backend.aclose()

    anyio.run(main)
    """
)


@contextlib.asynccontextmanager
async def sweeping(path: Path) -> AsyncIterator[list[int]]:
    """Run a sweeper process on *path*; yield the counts it reported (filled at exit)."""
    counts: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with await anyio.open_process(
        [sys.executable, "-c", _SWEEPER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    ) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(WAIT):
            assert await lines.receive_until(b"\n", 100) == b"ready"
        try:
            yield counts
        finally:
            with anyio.CancelScope(shield=True), anyio.fail_after(WAIT):
                await process.stdin.aclose()
                rest = b""
                with contextlib.suppress(anyio.EndOfStream):
                    while True:
                        rest += await lines.receive()
                assert await process.wait() == 0
            counts.extend(int(line) for line in rest.split())


async def ride_out_a_held_lock(tmp_path: Path, *, hold: float, lease: float) -> None:
    """A worker heartbeats, claims and enqueues while another process holds the lock.

    A second process sweeps leases all along. Nothing may raise, the worker's
    lease must never be recovered, and every enqueue issued during the hold
    must land after it.
    """
    path = tmp_path / "jobs.db"
    clock = SystemClock()
    worker = await opened(path, clock, busy_timeout=0.05, write_timeout=hold + WAIT)
    try:
        await worker.enqueue([new_job(clock)])
        [held_job] = await worker.claim(QUEUE, 1, "a", lease)
        released = anyio.Event()
        errors: list[BaseException] = []
        lost: set[str] = set()
        enqueued: list[Job] = []
        claimed: list[Job] = []
        leases = {held_job.id: token(held_job)}  # every job this worker holds

        async def heartbeat() -> None:
            lost.update((await worker.heartbeat(dict(leases), lease)).lost)

        async def heartbeats() -> None:
            while not released.is_set():
                try:
                    await heartbeat()
                except Exception as exc:
                    errors.append(exc)
                with anyio.move_on_after(lease / 3):  # the dispatcher's interval
                    await released.wait()

        async def enqueue_and_claim(n: int) -> None:
            try:
                enqueued.extend(await worker.enqueue([new_job(clock, queue="work")]))
                jobs = await worker.claim("work", 1, f"w{n}", lease)
                claimed.extend(jobs)
                leases.update((job.id, token(job)) for job in jobs)
            except Exception as exc:
                errors.append(exc)

        async with sweeping(path) as sweeps:
            async with anyio.create_task_group() as tg:
                tg.start_soon(heartbeats)
                async with held(path, at_least=hold):
                    for n in range(5):
                        tg.start_soon(enqueue_and_claim, n)
                    await anyio.wait_all_tasks_blocked()
                released.set()
            # After the hold: more heartbeats while the sweeper keeps sweeping.
            for _ in range(3):
                await heartbeat()
                await anyio.sleep(lease / 3)
            assert await worker.settle([outcome(held_job), *map(outcome, claimed)]) == []

        assert errors == []
        assert lost == set(), "a live worker's lease was recovered"
        assert sum(sweeps) == 0
        assert len(enqueued) == 5
        assert {job.id for job in claimed} == {job.id for job in enqueued}
        for job in enqueued:
            assert await worker.get_job(job.id) is not None
    finally:
        await worker.aclose()


@pytest.mark.slow
async def test_a_live_worker_rides_out_a_lock_held_longer_than_its_lease(tmp_path: Path) -> None:
    await ride_out_a_held_lock(tmp_path, hold=5.0, lease=3.0)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_live_worker_rides_out_a_lock_held_for_twenty_seconds(tmp_path: Path) -> None:
    await ride_out_a_held_lock(tmp_path, hold=20.0, lease=6.0)


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
