"""The exception classes, and sqlite3 errors turned into ones that say what to fix.

Every message names the file, and for a held write lock the process that holds
it (from ``/proc/locks`` on Linux), so an operator knows where to look.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..._exceptions import BackendError

__all__ = [
    "SQLiteBusyError",
    "SQLiteFullError",
    "SQLiteJournalModeError",
    "SQLiteNotADatabaseError",
    "SQLitePathError",
    "SQLiteVersionError",
    "UnsafeSQLiteWarning",
    "busy_error",
    "is_busy",
    "lock_holder",
    "not_open",
    "translate",
]


class UnsafeSQLiteWarning(UserWarning):
    """The SQLite library has a known bug that can corrupt a file shared by processes."""


class SQLiteVersionError(BackendError):
    """The SQLite library is too old for this backend."""


class SQLitePathError(BackendError):
    """The database path cannot be opened or created (missing or read-only directory)."""


class SQLiteNotADatabaseError(BackendError):
    """The file at the path exists but is not a SQLite database."""


class SQLiteJournalModeError(BackendError):
    """SQLite could not put the file in WAL mode (in-memory database, network filesystem)."""


class SQLiteFullError(BackendError):
    """A write did not fit: the disk is full or the file reached ``max_size``."""


class SQLiteBusyError(BackendError):
    """Another process held the write lock for longer than ``write_timeout``.

    The message names the process when the system says which one it is.
    """


_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Whether *exc* is SQLite's "database is locked" (busy or locked)."""
    return isinstance(exc, sqlite3.Error) and _primary_code(exc) in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _is_full(exc: sqlite3.Error) -> bool:
    """Whether *exc* means the disk (or ``max_size``) is full.

    SQLite reports a failed append to the WAL as ``SQLITE_FULL``, but a
    ``-shm`` file it cannot grow as ``SQLITE_IOERR_SHMSIZE``.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    return _primary_code(exc) == _SQLITE_FULL or code == _SQLITE_IOERR_SHMSIZE


def _lock_holder(path: str, *, flock: bool) -> str | None:
    """Name the process holding the write lock on *path*, from ``/proc/locks`` (Linux).

    With *flock*, the ``flock`` on the writers' queue file; otherwise SQLite's
    WAL write lock, a POSIX lock on byte 120 of the ``-shm`` file.
    """
    try:
        stat = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:
        # "3: POSIX  ADVISORY  WRITE 9810 fe:00:2146739 120 120"; a waiter has "->" after
        # the number, and is not the holder.
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->" or fields[3] != "WRITE" or fields[5] != device:
            continue
        if flock != (fields[1] == "FLOCK") or (not flock and fields[6] != "120"):
            continue
        pid = fields[4]
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        return f"process {pid} ({name})"
    return None


def lock_holder(path: str) -> str:
    """Who holds the write lock on the database *path*: SQLite's, else asyncjobs' queue.

    Found on Linux only; elsewhere the text says how to look.
    """
    holder = _lock_holder(path + "-shm", flock=False) or _lock_holder(path + "-lock", flock=True)
    if holder is not None:
        return holder
    return (
        "another connection (not found in /proc/locks; `fuser "
        f"{path}` lists the processes that have the file open)"
    )


def not_open(path: str) -> BackendError:
    """The error of a call made on a backend that is not open."""
    return BackendError(
        f"SQLiteBackend({path!r}) is not open: call open() first "
        "(the runtime does this in `async with runtime`)"
    )


def busy_error(action: str, path: str, waited: float, write_timeout: float) -> SQLiteBusyError:
    """The error of a call that gave up after *waited* seconds for the write lock."""
    return SQLiteBusyError(
        f"{action} on {path} gave up after waiting {waited:.1f} s for the write "
        f"lock (write_timeout={write_timeout:g} s): {lock_holder(path)} holds it. "
        "Look there for a long transaction or a stopped or hung process, or raise "
        "write_timeout"
    )


def translate(exc: sqlite3.Error, action: str, path: str, max_size: int | None) -> BackendError:
    """Turn a sqlite3 error into a :class:`BackendError` that says what to fix."""
    code = _primary_code(exc)
    where = f"{action} on {path}"
    if _is_full(exc):
        return SQLiteFullError(
            f"{where} failed: the database is full (the disk is out of space"
            + (f" or the file reached max_size={max_size} bytes" if max_size else "")
            + "); nothing of this call was stored. Free disk space, prune finished jobs "
            "(a shorter retention), or raise max_size"
        )
    if code == _SQLITE_NOTADB:
        return SQLiteNotADatabaseError(
            f"{path} exists but is not a SQLite database (or is encrypted): point "
            "SQLiteBackend at a new path; the file was left untouched"
        )
    if code == _SQLITE_CORRUPT:
        return BackendError(
            f"{where} failed: the database file is corrupt ({exc}); restore it from a "
            "backup or move it aside and start a new one"
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return SQLiteBusyError(
            f"{where} failed: the database stayed locked by {lock_holder(path)}; "
            "look there for a long transaction, or raise write_timeout"
        )
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
        directory = Path(path).parent
        return SQLitePathError(
            f"{where} failed ({exc}): {path} is write-protected for this process "
            "(file permissions, another user's file, chattr +i, or a read-only mount), "
            f"or SQLite cannot create its -wal and -shm files in {directory}; make the "
            "file, its -wal and -shm files and the directory writable for this user, or "
            "choose another path"
        )
    return BackendError(f"{where} failed: {exc}")
