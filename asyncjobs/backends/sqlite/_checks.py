"""Start-up checks: the SQLite library, the path, the journal mode; each says what to do.

Run by :meth:`SQLiteBackend.open` (``_database.py`` calls them in order):

- SQLite older than 3.35 (no ``RETURNING``): :class:`SQLiteVersionError`.
- The WAL-reset bug (https://sqlite.org/wal.html#walresetbug): a race between
  two connections' checkpoints and a commit that can corrupt the file. It
  affects SQLite 3.7.0 through 3.51.2 and is fixed in 3.51.3, with backports
  in 3.44.6 and 3.50.7. It needs two connections writing one file, which one
  backend object alone never does (one writer; the reader never checkpoints
  because it is closed first), so :class:`UnsafeSQLiteWarning` is issued when
  an affected SQLite opens a file another connection already has open (its
  ``-wal`` file exists): the multi-process set-ups the bug can hit.
- ``journal_mode`` must really become ``wal`` (it does not for in-memory
  databases and on some network filesystems): :class:`SQLiteJournalModeError`.
- A missing or read-only directory, a file that is not a database, and a
  file written by a newer asyncjobs fail at :meth:`SQLiteBackend.open`
  without writing anything. A write-protected file (permissions, another
  user's file, ``chattr +i``, a read-only mount) opens for reading without a
  word from SQLite, so ``open`` makes a real write that changes nothing (it
  stores the schema version again: ``_schema.migrate``) and fails with
  :class:`SQLitePathError`; the ``-wal`` and ``-shm`` files that open created
  are removed again (:func:`remove_strays`).
- A full disk (or ``max_size``) fails the write that hit it with
  :class:`SQLiteFullError`, rolled back as a whole (also when SQLite could not
  grow its ``-shm`` file); the same backend object works again once space is
  freed (``_errors.py``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Mapping
from pathlib import Path

from ._errors import (
    SQLiteJournalModeError,
    SQLitePathError,
    SQLiteVersionError,
    UnsafeSQLiteWarning,
)
from ._statements import first_row

__all__ = [
    "check_path",
    "check_sqlite_version",
    "enable_wal",
    "remove_strays",
    "side_files",
    "warn_if_wal_reset_bug",
]

_MIN_VERSION = (3, 35, 0)


def _version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in [*version.split("."), "0", "0"][:3])
    return major, minor, patch


def _has_wal_reset_bug(version: tuple[int, int, int]) -> bool:
    """Whether SQLite *version* has the WAL-reset bug (3.7.0 to 3.51.2, minus backports)."""
    if version < (3, 7, 0) or version >= (3, 51, 3):
        return False
    backported = (3, 44, 6) <= version < (3, 45, 0) or (3, 50, 7) <= version < (3, 51, 0)
    return not backported


def check_sqlite_version() -> None:
    """Refuse an SQLite library without ``RETURNING``.

    :raises SQLiteVersionError: when it is older than 3.35.
    """
    if _version_tuple(sqlite3.sqlite_version) < _MIN_VERSION:
        raise SQLiteVersionError(
            f"SQLite {sqlite3.sqlite_version} is too old for SQLiteBackend (it needs 3.35 "
            "or newer, for RETURNING): run Python linked against a newer SQLite"
        )


def warn_if_wal_reset_bug(path: str, *, stacklevel: int) -> None:
    """Issue :class:`UnsafeSQLiteWarning` when this SQLite has the WAL-reset bug.

    Called once *path* is open and was already open elsewhere (see above).
    *stacklevel* is that of :func:`warnings.warn`, counted from here.
    """
    if not _has_wal_reset_bug(_version_tuple(sqlite3.sqlite_version)):
        return
    # The same text from the same caller is shown once per process by Python's
    # default warning filter: no path in it, so a CLI call or a web process that
    # opens the file repeatedly says it once.
    warnings.warn(
        UnsafeSQLiteWarning(
            f"SQLite {sqlite3.sqlite_version} has the WAL-reset bug (3.7.0 through 3.51.2; "
            "fixed in 3.51.3, 3.50.7, 3.44.6): a file several processes write can be "
            "corrupted. Upgrade the SQLite Python links, or silence this with "
            "warnings.filterwarnings('ignore', category=UnsafeSQLiteWarning)"
        ),
        stacklevel=stacklevel,
    )


def check_path(path: str) -> bool:
    """Refuse an unusable path; return whether the file looks shared right now.

    :raises SQLitePathError: for a missing or read-only directory, or a directory
        given as the file.
    """
    if path == ":memory:":
        return False
    file = Path(path)
    directory = file.parent
    if not directory.is_dir():
        raise SQLitePathError(
            f"cannot create the job database {path}: the directory {directory} "
            "does not exist; create it first or choose another path"
        )
    if file.is_dir():
        raise SQLitePathError(
            f"{path} is a directory: SQLiteBackend needs a database file path "
            f"such as {file / 'jobs.db'}"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SQLitePathError(
            f"cannot use {path}: the directory {directory} is read-only, and "
            "SQLite must create the -wal and -shm files next to the database; make it "
            "writable for this user or choose another path"
        )
    # A -wal file means another connection has the file open right now (or one
    # did not close cleanly): the multi-connection case the WAL-reset bug needs.
    return Path(path + "-wal").exists()


def enable_wal(conn: sqlite3.Connection, path: str) -> None:
    """Put the file in WAL mode, or refuse it.

    :raises SQLiteJournalModeError: when SQLite keeps another journal mode.
    """
    row = first_row(conn, "PRAGMA journal_mode = WAL")
    mode = "" if row is None else str(row[0]).lower()
    if mode != "wal":
        hint = (
            "an in-memory database cannot be shared; use MemoryBackend for a throwaway store"
            if path == ":memory:"
            else "put the file on a local disk (WAL does not work on network filesystems)"
        )
        raise SQLiteJournalModeError(
            f"SQLite kept journal_mode={mode!r} for {path} instead of 'wal', which "
            f"asyncjobs needs for safe concurrent access: {hint}"
        )


def side_files(path: str) -> dict[str, bool]:
    """Which of the ``-wal``, ``-shm`` and ``-lock`` files exist now."""
    return {suffix: Path(path + suffix).exists() for suffix in ("-wal", "-shm", "-lock")}


def remove_strays(path: str, existed: Mapping[str, bool]) -> None:
    """After a refused open, remove the side files this open created.

    SQLite keeps an empty ``-wal`` and a ``-shm`` beside a file it could not
    write; the ``-lock`` file is only ever removed here, right after this
    open made it (another process may hold a lock on an older one).
    """
    if path == ":memory:":
        return
    wal = Path(path + "-wal")
    if not existed["-wal"] and wal.exists() and wal.stat().st_size > 0:
        return  # frames another connection wrote meanwhile: leave everything
    for suffix in ("-wal", "-shm", "-lock"):
        if not existed[suffix]:
            with contextlib.suppress(OSError):
                os.unlink(path + suffix)
