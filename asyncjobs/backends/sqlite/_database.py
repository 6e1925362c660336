"""The backend's two connections: opening and closing them, a write's trip, a read's retries.

One writer connection per backend object, used by one thread of its own
(``_writer.py``); a second, ``query_only`` connection (aiosqlite) serves
reads so they never queue behind writes. This module is the event loop's side
of both: the start-up sequence (checks, schema, pragmas), how long a write
waits for the lock (``write_timeout`` for an application's call, as long as it
takes for the runtime's loops, with a warning every 10 s), what a cancelled
write does, and which error a caller sees.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import aiosqlite
import anyio

from ..._clock import Clock, SystemClock
from ..._exceptions import BackendError
from . import _checks, _schema
from ._errors import SQLiteBusyError, busy_error, is_busy, lock_holder, not_open, translate
from ._stalls import Stalls
from ._statements import Row, all_rows
from ._writer import BUSY_PAUSE, Call, Tx, Writer, delivered, open_queue_file

__all__ = ["Database"]

logger = logging.getLogger("asyncjobs")

_T = TypeVar("_T")
_W = TypeVar("_W")

# How often a loop's write that waits for the lock says so in the log.
_WAIT_LOG_PERIOD = 10.0


async def _fetchall(
    conn: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()
) -> list[Row]:
    rows: Iterable[Any] = await conn.execute_fetchall(sql, tuple(parameters))
    return list(rows)


class Database:
    """One SQLite file as one backend object uses it: a writer thread and a reader.

    The options are checked by :class:`SQLiteBackend` and documented there.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        busy_timeout: float,
        write_timeout: float,
        max_size: int | None,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._write_timeout = write_timeout
        self._max_size = max_size
        #: Where every due time and lease expiry comes from (set by :meth:`open`).
        self.clock: Clock = SystemClock()
        #: The writer thread and the read connection while open.
        self.writer: Writer | None = None
        self.reader: aiosqlite.Connection | None = None
        self.stalls = Stalls(path, lambda: self.clock.now())

    # -- opening and closing ------------------------------------------------------

    async def open(self, clock: Clock) -> bool | None:
        """Open the file, create or migrate its schema, and check it is safe to use.

        A file that fails a check is left as it was. When already open, only
        the clock is replaced. :returns: ``None`` when it was open already, else
        whether another connection had the file open (see ``_checks.py``).
        """
        self.clock = clock
        if self.writer is not None:
            return None
        _checks.check_sqlite_version()
        shared = _checks.check_path(self.path)
        existed = _checks.side_files(self.path)
        writer: Writer | None = None
        reader: aiosqlite.Connection | None = None
        try:
            writer = Writer(self, open_queue_file(self.path))
            await self._call(writer, "open", Call(self._stored_version, **self._raw()))
            await self._call(writer, "open", Call(self._enable_wal, **self._raw()))
            await self._call(writer, "open", self._job(self._migrate), bounded=True)
            if self._max_size is not None:
                await self._call(writer, "open", Call(self._cap_size, **self._raw()))
            reader = await self._connect_reader()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if reader is not None:
                    await reader.close()
                if writer is not None:
                    await self._close_writer(writer)
            _checks.remove_strays(self.path, existed)
            raise
        self.writer, self.reader = writer, reader
        return shared

    async def aclose(self) -> None:
        """Close both connections; :meth:`open` may be called again.

        Writes already queued are finished first, for at most ``write_timeout``
        when another process holds the write lock; the rest then fail.
        """
        reader, self.reader = self.reader, None
        # Close the reader first so it is never the file's last connection: the
        # last one checkpoints, and only the writer should ever checkpoint.
        if reader is not None:
            await reader.close()
        writer, self.writer = self.writer, None
        if writer is not None:
            await self._close_writer(writer)

    async def _close_writer(self, writer: Writer) -> None:
        writer.close()
        if writer.stuck():
            # Waiting for another process's lock for a write nobody wants any more:
            # the thread closes the connection when that wait ends.
            return
        try:
            with anyio.move_on_after(self._write_timeout):
                await writer.exited.wait()
        finally:
            if not writer.exited.is_set():
                # Stuck behind another process's lock, or our caller gave up: the
                # thread closes the connection when its wait ends.
                writer.abandon_all(not_open(self.path))

    def connect_writer(self) -> sqlite3.Connection:
        """Open the writing connection (in the writer thread)."""
        # isolation_level=None: the sqlite3 module must not open transactions on
        # its own; every write here is an explicit BEGIN IMMEDIATE transaction.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy_timeout)
        try:
            for pragma in self._pragmas():
                conn.execute(pragma)
            conn.create_function("asyncjobs_now", 0, self._sql_now)
        except BaseException:
            conn.close()
            raise
        return conn

    def _sql_now(self) -> float:
        """``asyncjobs_now()`` in the writer's SQL: the store's clock."""
        return self.clock.now()

    async def _connect_reader(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            for pragma in (*self._pragmas(), "PRAGMA query_only = ON"):
                await conn.execute(pragma)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.close()
            raise
        return conn

    def _pragmas(self) -> tuple[str, ...]:
        return (
            f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}",
            f"PRAGMA synchronous = {self._synchronous}",
            # Keep the WAL file from staying huge after a burst.
            "PRAGMA journal_size_limit = 67108864",
            # 16 MiB of page cache: big batches and index updates stay in memory.
            "PRAGMA cache_size = -16384",
        )

    def _stored_version(self, conn: sqlite3.Connection) -> int:
        return _schema.stored_version(conn, self.path)

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        _checks.enable_wal(conn, self.path)

    def _migrate(self, conn: sqlite3.Connection, tx: Tx) -> None:
        _schema.migrate(conn, self.path)

    def _cap_size(self, conn: sqlite3.Connection) -> None:
        assert self._max_size is not None
        [(page_size,)] = all_rows(conn, "PRAGMA page_size")
        conn.execute(f"PRAGMA max_page_count = {max(1, self._max_size // page_size)}")

    # -- writing ---------------------------------------------------------------------

    def _require(self, connection: _W | None) -> _W:
        if connection is None:
            raise not_open(self.path)
        return connection

    def requested(self) -> tuple[float, float]:
        """Now, as a write's request time: (the store's clock, monotonic seconds)."""
        # Real time of lock waits is measured in the writer thread too, which has no
        # event loop: both sides read the monotonic clock.
        return self.clock.now(), time.monotonic()

    def _raw(self) -> dict[str, Any]:
        return {"transaction": False, "requested": self.requested()}

    def _job(
        self,
        body: Callable[[sqlite3.Connection, Tx], _T],
        requested: tuple[float, float] | None = None,
        single: bool = False,
    ) -> Call[_T]:
        return Call(body, transaction=True, requested=requested or self.requested(), single=single)

    async def write(
        self,
        action: str,
        body: Callable[[sqlite3.Connection, Tx], _T],
        *,
        bounded: bool = False,
        requested: tuple[float, float] | None = None,
        single: bool = False,
    ) -> _T:
        """Run *body* in one ``BEGIN IMMEDIATE`` transaction in the writer thread.

        With *bounded*, give up after ``write_timeout``; otherwise wait for the
        lock as long as it takes (the runtime's loops). *requested* is when the
        call began, if before now: a stall is measured from there. A *single*
        body is one statement, atomic on its own: when no other write joins it,
        it runs in autocommit (an explicit transaction costs more on a disk
        that really syncs). It must not rely on ``tx.now`` being read after
        the lock is held; ``asyncjobs_now()`` in its SQL is.
        """
        writer = self._require(self.writer)
        return await self._call(writer, action, self._job(body, requested, single), bounded)

    async def _call(self, writer: Writer, action: str, job: Call[_T], bounded: bool = True) -> _T:
        if not writer.submit(job):
            raise not_open(self.path)
        deadline = job.requested[1] + self._write_timeout if bounded else math.inf
        try:
            gave_up = await self._wait_for(writer, action, job, deadline)
        except BaseException:
            # Cancelled: a write that has begun lands (or not) before the caller
            # goes on, so it never changes the store behind the caller's back.
            if not writer.abandon(job):
                await self._finish_begun(job)
            raise
        if gave_up:
            raise self._busy_error(action, job)
        error = job.error
        if error is not None:
            if is_busy(error):
                raise self._busy_error(action, job) from error
            if isinstance(error, sqlite3.Error):
                raise self.translate(error, action) from error
            raise error
        return job.result  # type: ignore[return-value]  # set together with the state

    async def _wait_for(self, writer: Writer, action: str, job: Call[Any], deadline: float) -> bool:
        """Wait for *job*, logging while it waits; ``True`` if dropped at *deadline*."""
        while True:
            left = deadline - time.monotonic()
            if await delivered(job, min(left, _WAIT_LOG_PERIOD)):
                return False
            if time.monotonic() >= deadline:
                if writer.abandon(job):
                    return True
                await self._finish_begun(job)  # it lands, or fails busy at its next try
                return False
            logger.warning(
                "%s on %s has waited %.0f s for the write lock, held by %s; still waiting",
                action,
                self.path,
                time.monotonic() - job.requested[1],
                lock_holder(self.path),
            )

    @staticmethod
    async def _finish_begun(job: Call[Any]) -> None:
        """Let a write that has begun end: stop its retries, wait for its outcome."""
        job.stop = True
        with anyio.CancelScope(shield=True):
            while not await delivered(job, _WAIT_LOG_PERIOD):
                pass

    def _busy_error(self, action: str, job: Call[Any]) -> SQLiteBusyError:
        waited = time.monotonic() - job.requested[1]
        return busy_error(action, self.path, waited, self._write_timeout)

    def translate(self, exc: sqlite3.Error, action: str) -> BackendError:
        """Turn a sqlite3 error into a :class:`BackendError` that says what to fix."""
        return translate(exc, action, self.path, self._max_size)

    # -- reading ------------------------------------------------------------------------

    async def read(self, action: str, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        """Run one read on the reader; a busy moment is retried for up to ``write_timeout``."""
        conn = self._require(self.reader)
        deadline = anyio.current_time() + self._write_timeout
        pause = BUSY_PAUSE[0]
        while True:
            try:
                return await _fetchall(conn, sql, parameters)
            except sqlite3.Error as exc:
                # Readers are only ever busy for a moment (a WAL reset, recovery after
                # a crash): retry, but not forever.
                if not is_busy(exc) or anyio.current_time() >= deadline:
                    raise self.translate(exc, action) from exc
            except ValueError:
                # aiosqlite's "Connection closed": aclose() ran while this read waited.
                if self.reader is None:
                    raise not_open(self.path) from None
                raise
            await anyio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, BUSY_PAUSE[1])
