"""The writer thread: one connection, the host's queue for the write lock, group commit.

Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction that the
writer thread runs whole, in one trip from the event loop: take the host's
writer queue (below), begin, read the clock, run the statements, commit, let
go of the queue. The event loop waits for the result only, so a busy loop
never keeps the lock from other processes. Writes of this object that queue
up meanwhile (up to 32) join the transaction once the lock is held, each in a
savepoint of its own (one that fails rolls back alone): one commit and one
turn of the queue for all of them. A cancelled write that has begun still
lands (or rolls back) before the cancellation reaches its caller; one still
waiting for the lock is dropped at once. (The event loop's side of a write,
its timeout and its errors, is in ``_database.py``.)

Contention (several processes writing one file):

- **A fair queue for the write lock.** SQLite's busy handler sleeps and polls,
  so a writer that has just committed beats one that has slept: under load
  some writers used to wait tens of seconds. Every asyncjobs writer on the
  host therefore first takes an exclusive ``flock`` on ``<database>-lock``
  (an empty file created beside the database and never removed; do not
  delete it while processes use the file). The kernel hands that lock to
  blocked writers in the order they came, at once, so writes take turns and
  SQLite's write lock is free whenever asyncjobs asks for it. On systems
  without ``flock`` (Windows) writers rely on the busy handler alone.
- **Waiting.** A write lock held outside that queue (another program, a
  process of an older asyncjobs, a long manual transaction) is waited for in
  SQLite's busy handler, ``busy_timeout`` (default 1 s) at a time, and tried
  again. The runtime's own loops (claim, heartbeat, settle, lease sweeps,
  progress, prune, cron ticks) wait as long as it takes, logging a warning
  every 10 s that names the process holding the lock. The calls an
  application makes (``enqueue``, ``cancel``, ``retry_dead``, pausing,
  schedule changes, ``open``) give up after ``write_timeout`` (default 60 s)
  with :class:`SQLiteBusyError`, which names that process too (from
  ``/proc/locks`` on Linux), and nothing of the call is stored.
- One enqueue call is one transaction, so a huge batch holds the write lock
  for its whole insert (about 1 s per 50,000 jobs on a slow disk).

A write that waited long for the lock is a stall; how that pauses lease
sweeps is in ``_stalls.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import attrs

from ._errors import SQLitePathError, is_busy

if TYPE_CHECKING:
    from ._database import Database

if sys.platform != "win32":
    import fcntl

__all__ = ["BUSY_PAUSE", "Call", "Tx", "Writer", "delivered", "open_queue_file"]

logger = logging.getLogger("asyncjobs")

_T = TypeVar("_T")

# Pauses between attempts at a lock that SQLite's busy handler found held for a
# whole busy_timeout: only a connection outside asyncjobs' queue does that.
BUSY_PAUSE = (0.005, 0.2)


def open_queue_file(path: str) -> int:
    """Open ``<path>-lock``, whose ``flock`` queues this host's writers; -1 if none.

    :raises SQLitePathError: when the file cannot be opened.
    """
    if sys.platform == "win32" or path == ":memory:":
        return -1
    name = path + "-lock"
    try:
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:
            # Another user's file: flock needs no write access.
            return os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SQLitePathError(
            f"cannot open {name} ({exc}), the file that queues writers to {path}: "
            "make it readable for this user, or choose another path"
        ) from exc


_QUEUED, _WAITING, _RUNNING, _DONE, _ABANDONED = range(5)
# The most writes one transaction carries (see Writer._transact).
_GROUP_LIMIT = 32


@attrs.frozen
class Tx:
    """What a write body knows about its transaction.

    :ivar now: the store's clock, read once the write lock is held.
    :ivar stalled: the wait for the lock was long (see ``_stalls.py``).
    """

    now: float
    stalled: bool


class Call(Generic[_T]):
    """One call into the writer thread, and its outcome."""

    __slots__ = (
        "delivered",
        "error",
        "fn",
        "loop",
        "requested",
        "result",
        "single",
        "state",
        "stop",
        "transaction",
        "waker",
    )

    def __init__(
        self,
        fn: Callable[..., _T],
        *,
        transaction: bool,
        requested: tuple[float, float],
        single: bool = False,
    ) -> None:
        #: ``fn(conn, tx)`` in a write transaction, or ``fn(conn)`` as it is.
        self.fn = fn
        self.transaction = transaction
        #: ``fn`` is one statement: alone, it runs in autocommit.
        self.single = single
        #: When the call was made: (the store's clock, monotonic seconds).
        self.requested = requested
        # aiosqlite (the reader) ties this backend to asyncio anyway: the writer
        # thread hands results back with call_soon_threadsafe, as aiosqlite does,
        # and the caller waits on a bare future (a cancel scope per write costs
        # more than the rest of the loop's side).
        self.loop = asyncio.get_running_loop()
        #: The outcome has reached the event loop (set there, by _deliver).
        self.delivered = False
        self.waker: asyncio.Future[None] | None = None
        #: Set when the caller gives up: a busy lock is not tried again.
        self.stop = False
        self.state = _QUEUED
        self.result: _T | None = None
        self.error: BaseException | None = None


def _deliver(job: Call[Any]) -> None:
    """In the event loop: *job*'s outcome is in; wake its caller."""
    job.delivered = True
    _wake(job.waker)


def _wake(waker: asyncio.Future[None] | None) -> None:
    if waker is not None and not waker.done():
        waker.set_result(None)


async def delivered(job: Call[Any], timeout: float) -> bool:
    """Wait until *job*'s outcome is in, or *timeout* seconds; ``True`` if it is."""
    if job.delivered:
        return True
    loop = job.loop
    waker: asyncio.Future[None] = loop.create_future()
    job.waker = waker
    timer = loop.call_later(max(0.0, timeout), _wake, waker)
    try:
        await waker
    finally:
        timer.cancel()
        job.waker = None
    return job.delivered


class Writer:
    """The backend's one writing connection, used by one thread of its own.

    A write runs there whole, in one trip from the event loop: take the host's
    write queue (an exclusive ``flock`` on ``<database>-lock``), ``BEGIN
    IMMEDIATE``, read the clock, run the body, ``COMMIT``, release. The queue
    is released by this thread as soon as the transaction ends, never later
    because the event loop is busy. Blocked ``flock`` callers are handed the
    lock in arrival order by the kernel; SQLite's own busy handler sleeps and
    polls, so a writer that has just committed would beat one that has slept.

    A caller that gives up (cancelled, or past its deadline) while its write
    still waits for the queue leaves at once: the thread, once it gets the
    lock, passes it to the next queued write or releases it. A write that has
    begun is always finished (or rolled back) before its caller returns.
    """

    def __init__(self, db: Database, lock_fd: int) -> None:
        self._db = db
        self._fd = lock_fd
        # The state of every job and the queue change under this lock; the bell
        # (a C queue, far cheaper than a Condition) wakes the thread.
        self._mutex = threading.Lock()
        self._bell: SimpleQueue[None] = SimpleQueue()
        self._jobs: collections.deque[Call[Any]] = collections.deque()
        self._current: Call[Any] | None = None
        self._closing = False
        self._conn: sqlite3.Connection | None = None
        self._loop = asyncio.get_running_loop()
        self.exited = anyio.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"asyncjobs SQLite writer ({db.path})", daemon=True
        )
        self._thread.start()

    # -- the event loop's side -----------------------------------------------------

    def submit(self, job: Call[Any]) -> bool:
        """Queue *job*; ``False`` when the writer is closing."""
        with self._mutex:
            if self._closing:
                return False
            self._jobs.append(job)
        self._bell.put(None)
        return True

    def abandon(self, job: Call[Any]) -> bool:
        """Drop *job* if it has not begun; ``False`` when it is running or done."""
        with self._mutex:
            if job.state in (_QUEUED, _WAITING):
                job.state = _ABANDONED
                return True
            return False

    def close(self) -> None:
        """Let the queued writes finish, then close the connection and end the thread."""
        with self._mutex:
            self._closing = True
        self._bell.put(None)

    def stuck(self) -> bool:
        """Whether the thread waits for the host's queue on behalf of no caller."""
        with self._mutex:
            current = self._current
            return (
                current is not None
                and current.state == _ABANDONED
                and not any(job.state == _QUEUED for job in self._jobs)
            )

    def abandon_all(self, error: BaseException) -> None:
        """Fail every write that has not begun (the writer is stuck behind the queue)."""
        with self._mutex:
            dropped = [job for job in self._jobs if job.state == _QUEUED]
            self._jobs.clear()
            current = self._current
            if current is not None and current.state == _WAITING:
                dropped.append(current)
            for job in dropped:
                job.state = _ABANDONED
                job.error = error
        for job in dropped:
            _deliver(job)

    # -- the thread's side ---------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None, "the writer thread has no connection"
        return self._conn

    def _run(self) -> None:
        failed: BaseException | None = None
        try:
            self._conn = self._db.connect_writer()
        except Exception as exc:
            failed = exc
        while True:
            with self._mutex:
                job = self._jobs.popleft() if self._jobs else None
                if job is not None and job.state != _ABANDONED:
                    job.state = _WAITING if job.transaction else _RUNNING
                    self._current = job
                closing = self._closing
            if job is None:
                if closing:
                    break
                self._bell.get()  # rung by submit() and close()
                continue
            if job.state == _ABANDONED:
                continue
            if failed is not None:
                self._finish(job, None, failed)
                continue
            if not job.transaction:
                error: BaseException | None = None
                try:
                    result = self._until_free(job, functools.partial(job.fn, self.conn))
                except Exception as exc:
                    result, error = None, exc
                self._finish(job, result, error)
                continue
            taken = self._take_queue(job)
            if taken is None:
                continue
            try:
                finished = self._transact(taken)
            finally:
                self._release_queue()
            for done, result, error in finished:
                self._finish(done, result, error)
        with self._mutex:
            self._current = None
        if self._conn is not None:
            self._conn.close()
        if self._fd >= 0:
            os.close(self._fd)
        with contextlib.suppress(RuntimeError):  # the event loop is gone
            self._loop.call_soon_threadsafe(self.exited.set)

    def _finish(self, job: Call[Any], result: Any, error: BaseException | None) -> None:
        with self._mutex:
            job.result, job.error = result, error
            job.state = _DONE
            self._current = None
        with contextlib.suppress(RuntimeError):  # the event loop is gone
            job.loop.call_soon_threadsafe(_deliver, job)

    def _take_queue(self, job: Call[Any]) -> Call[Any] | None:
        """Take the host's write queue for *job*, or for the write after it if it left."""
        if self._fd < 0:  # no flock on this platform: SQLite's busy handler alone
            with self._mutex:
                if job.state == _ABANDONED:
                    return None
                job.state = _RUNNING
            return job
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Behind other writers: the kernel wakes us when our turn comes.
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        taken: Call[Any] | None = job
        with self._mutex:
            while taken is not None and taken.state == _ABANDONED:
                # Its caller gave up meanwhile: the next queued write keeps our place.
                while self._jobs and self._jobs[0].state == _ABANDONED:
                    self._jobs.popleft()
                taken = self._jobs.popleft() if self._jobs and self._jobs[0].transaction else None
            if taken is not None:
                taken.state = _RUNNING
            self._current = taken
        if taken is None:
            self._release_queue()
        return taken

    def _release_queue(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _transact(self, first: Call[Any]) -> list[tuple[Call[Any], Any, BaseException | None]]:
        """Run *first*, and the writes queued behind it, in one transaction.

        Every write queued in this process when the lock is held joins it (up to
        ``_GROUP_LIMIT``), each in a savepoint of its own: one failing rolls back
        only itself, and the group costs one commit and one turn of the host's
        queue instead of one each. Each write's outcome stands once ``COMMIT``
        has succeeded.
        """
        conn = self.conn
        db = self._db
        if first.single and not self._jobs:
            return [self._autocommit(first)]
        try:
            self._until_free(first, lambda: conn.execute("BEGIN IMMEDIATE"))
        except Exception as exc:
            return [(first, None, exc)]
        group = [first, *self._followers()]
        single = len(group) == 1
        finished: list[tuple[Call[Any], Any, BaseException | None]] = []
        stalled: tuple[float, float] | None = None
        for index, job in enumerate(group):
            if not conn.in_transaction:
                # A failure ended the transaction (SQLite rolls back on its own after
                # some I/O errors): the rest wait for the next one.
                self._requeue(group[index:])
                break
            if db.stalls.stalled(job.requested):
                stalled = min(stalled or job.requested, job.requested)
            tx = Tx(now=db.clock.now(), stalled=db.stalls.stalled(job.requested))
            try:
                if not single:
                    conn.execute("SAVEPOINT asyncjobs_write")
                result = job.fn(conn, tx)
                if not single:
                    conn.execute("RELEASE asyncjobs_write")
            except Exception as exc:
                if not single and conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK TO asyncjobs_write")
                        conn.execute("RELEASE asyncjobs_write")
                finished.append((job, None, exc))
            else:
                finished.append((job, result, None))
        try:
            if any(error is None for _, _, error in finished):
                if stalled is not None or db.stalls.stalled(first.requested):
                    db.stalls.record(conn, stalled or first.requested)
                conn.execute("COMMIT")
        except Exception as exc:
            finished = [(job, None, exc if error is None else error) for job, _, error in finished]
        finally:
            # No transaction stays open, whatever failed (SQLite may have rolled back
            # already after a full disk).
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
        return finished

    def _autocommit(self, job: Call[Any]) -> tuple[Call[Any], Any, BaseException | None]:
        """Run a lone one-statement write in autocommit, the queue held."""
        conn = self.conn
        db = self._db

        def attempt() -> Any:
            tx = Tx(now=db.clock.now(), stalled=db.stalls.stalled(job.requested))
            return job.fn(conn, tx)

        try:
            result = self._until_free(job, attempt)
        except Exception as exc:
            return job, None, exc
        if db.stalls.stalled(job.requested):
            try:
                db.stalls.record(conn, job.requested)
            except sqlite3.Error as exc:  # the write itself has landed
                logger.warning("could not pause lease sweeps in %s: %s", db.path, exc)
        return job, result, None

    def _followers(self) -> list[Call[Any]]:
        """Take the writes queued behind the one that holds the lock now."""
        taken: list[Call[Any]] = []
        if not self._jobs:  # the common case, without the lock
            return taken
        with self._mutex:
            while self._jobs and len(taken) < _GROUP_LIMIT - 1:
                job = self._jobs[0]
                if job.state == _ABANDONED:
                    self._jobs.popleft()
                    continue
                if not job.transaction:
                    break
                self._jobs.popleft()
                job.state = _RUNNING
                taken.append(job)
        return taken

    def _requeue(self, jobs: Sequence[Call[Any]]) -> None:
        with self._mutex:
            for job in reversed(jobs):
                job.state = _QUEUED
                self._jobs.appendleft(job)

    def _until_free(self, job: Call[Any], attempt: Callable[[], _T]) -> _T:
        """Run *attempt* until SQLite's lock is free, or its caller gives up."""
        pause = BUSY_PAUSE[0]
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                # The busy handler has waited busy_timeout already; another connection
                # (not one queued here: another program, or a process of an older
                # asyncjobs) holds the lock.
                if not is_busy(exc) or job.stop:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, BUSY_PAUSE[1])
