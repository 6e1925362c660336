"""What only the SQLite backend promises: its file, its start-up checks, its faults.

The shared behaviour is in ``tests/backends/contract/``. These tests use real files
under ``tmp_path`` and real processes; nothing is mocked and nothing sleeps to
wait for something.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.queues
import os
import shutil
import sqlite3
import subprocess
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncjobs._clock import ManualClock, SystemClock
from asyncjobs._exceptions import (
    BackendError,
    ConfigurationError,
    DuplicateJobError,
    SchemaVersionError,
)
from asyncjobs._models import (
    MAX_ATTEMPT_HISTORY,
    ClaimLimits,
    ErrorInfo,
    Job,
    JobStart,
    JobState,
    KeyScope,
    NewJob,
    OnConflict,
    Outcome,
    OutcomeKind,
    RateWindow,
)
from asyncjobs.backends import from_url
from asyncjobs.backends.sqlite import (
    SCHEMA_VERSION,
    SQLiteBackend,
    SQLiteFullError,
    SQLiteJournalModeError,
    SQLiteNotADatabaseError,
    SQLitePathError,
    UnsafeSQLiteWarning,
    _checks,
    _control,
    _flow,
    _history,
    _inspection,
    _keys,
    _lifecycle,
    _schema,
    _wakeups,
)
from asyncjobs.backends.sqlite._writer import Tx

from .sqlite_helpers.race import enqueue_keyed

pytestmark = pytest.mark.anyio

QUEUE = "default"
LEASE = 30.0
AFFECTED = _checks._has_wal_reset_bug(_checks._version_tuple(sqlite3.sqlite_version))


# -- helpers ------------------------------------------------------------------


def new_job(clock: ManualClock, **overrides: Any) -> NewJob:
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


def complete(job: Job) -> Outcome:
    assert job.lease_token is not None
    return Outcome(job_id=job.id, lease_token=job.lease_token, kind=OutcomeKind.COMPLETE)


async def open_backend(path: Path, clock: ManualClock, **options: Any) -> SQLiteBackend:
    backend = SQLiteBackend(path, **options)
    await backend.open(clock)
    return backend


async def open_another(path: Path, clock: ManualClock, **options: Any) -> SQLiteBackend:
    """Open a second connection to a file that is already open.

    That is the multi-connection case the WAL-reset warning is about; tests of
    the warning itself check it, the others only need the second backend.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeSQLiteWarning)
        return await open_backend(path, clock, **options)


def enqueue_scoped(
    path: str,
    key: str,
    scope: str,
    on_conflict: str,
    barrier: Barrier,
    results: multiprocessing.queues.Queue[str],
) -> None:
    """A racer in another process: enqueue one job with *key*, report what happened.

    Reports ``"stored:<id>"`` (the job the store returned) or ``"raised:<id>"``
    (the holder a :class:`DuplicateJobError` named).
    """
    # Several connections share the file by design here; the warning is tested elsewhere.
    warnings.simplefilter("ignore", UnsafeSQLiteWarning)

    async def main() -> str:
        clock = SystemClock()
        backend = SQLiteBackend(path)
        await backend.open(clock)
        try:
            barrier.wait(timeout=45)
            now = clock.now()
            racer = uuid.uuid4().hex
            new = NewJob(
                id=racer,
                name="tasks.race",
                queue=QUEUE,
                payload=f'{{"racer": "{racer}"}}'.encode(),
                due_at=now,
                enqueued_at=now,
                key=key,
                key_scope=KeyScope(scope),
                key_expires_at=now + 3600 if scope == KeyScope.WINDOW else None,
                on_conflict=OnConflict(on_conflict),
            )
            try:
                [job] = await backend.enqueue([new])
            except DuplicateJobError as exc:
                return f"raised:{exc.job_id}"
            return f"stored:{job.id}"
        finally:
            await backend.aclose()

    results.put(anyio.run(main))


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SQLiteBackend]:
    backend = await open_backend(tmp_path / "jobs.db", clock)
    try:
        yield backend
    finally:
        await backend.aclose()


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make *directory* unwritable for this process, even for root (``chattr +i``)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)]).returncode != 0:
        pytest.skip("running as root without a working chattr: cannot make a read-only directory")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


@contextlib.contextmanager
def write_protected(path: Path, how: str) -> Iterator[None]:
    """Make the file *path* unwritable while its directory stays writable."""
    root = os.geteuid() == 0
    if how == "chmod":
        if root:
            pytest.skip("root writes files whatever their mode")
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    if not root:
        pytest.skip(f"{how} needs root")
    if how == "chattr":
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
            pytest.skip("no working chattr here")
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", str(path)], check=True)
        return
    assert how == "read-only-mount"
    if subprocess.run(["mount", "--bind", str(path), str(path)]).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def sqlite_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# -- the file and its schema --------------------------------------------------


async def test_a_new_file_gets_the_current_schema_in_wal_mode(
    tmp_path: Path, clock: ManualClock
) -> None:
    backend = await open_backend(tmp_path / "jobs.db", clock)
    await backend.aclose()

    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT version FROM asyncjobs_schema").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        sweeps = db.execute("SELECT id, resume_at FROM asyncjobs_lease_sweeps").fetchall()
    db.close()
    assert {
        "asyncjobs_jobs_claim",
        "asyncjobs_jobs_lease",
        "asyncjobs_jobs_finished",
        "asyncjobs_rate_claims_window",
    } <= indexes
    assert "asyncjobs_jobs_active_key" not in indexes  # keys have a table of their own
    assert {"asyncjobs_keys", "asyncjobs_partitions", "asyncjobs_rate_claims"} <= tables
    assert "asyncjobs_rate_counts" in tables
    assert {"asyncjobs_attempts", "asyncjobs_workers", "asyncjobs_audit"} <= tables
    assert sweeps == [(1, 0)]  # lease sweeps never paused yet
    # The writers' queue file stays beside the database (see the module docstring).
    assert (tmp_path / "jobs.db-lock").is_file()


async def test_jobs_schedules_and_pauses_survive_reopening(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.db"
    backend = await open_backend(path, clock)
    queued, running = await backend.enqueue([new_job(clock), new_job(clock, queue="other")])
    [running] = await backend.claim("other", 1, "worker-1", LEASE)
    await backend.pause_queue(QUEUE, True)
    await backend.aclose()

    # The same object opens again, and so does a new one (a restarted process).
    await backend.open(clock)
    assert await backend.get_job(queued.id) == queued
    await backend.aclose()
    reopened = await open_backend(path, clock)
    try:
        assert await reopened.get_job(queued.id) == queued
        assert await reopened.get_job(running.id) == running
        assert await reopened.claim(QUEUE, 10, "worker-2", LEASE) == []
        assert {s.queue: s.paused for s in await reopened.queue_stats()} == {
            QUEUE: True,
            "other": False,
        }
    finally:
        await reopened.aclose()


async def test_an_older_schema_is_migrated_in_order_keeping_its_jobs(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.db"
    backend = await open_backend(path, clock)
    [job] = await backend.enqueue([new_job(clock)])
    await backend.aclose()

    # A later asyncjobs adds two steps; the file has the current version.
    steps = (
        ("CREATE TABLE asyncjobs_test_one (x INTEGER)",),
        (
            "ALTER TABLE asyncjobs_test_one ADD COLUMN y INTEGER",
            "INSERT INTO asyncjobs_test_one (x, y) VALUES (1, 2)",
        ),
    )
    monkeypatch.setattr(_schema, "_MIGRATIONS", _schema._MIGRATIONS + steps)
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    migrated = await open_backend(path, clock)
    try:
        assert await migrated.get_job(job.id) == job
    finally:
        await migrated.aclose()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM asyncjobs_schema").fetchone() == (
            SCHEMA_VERSION + 2,
        )
        assert db.execute("SELECT x, y FROM asyncjobs_test_one").fetchall() == [(1, 2)]


async def test_a_file_from_before_fire_at_upgrades_and_keeps_its_jobs(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The file an asyncjobs at schema version 1 wrote: the released first step only.
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as db:
        for statement in _schema._MIGRATIONS[0]:
            db.execute(statement)
        db.execute("UPDATE asyncjobs_schema SET version = 1")
        db.execute(
            "INSERT INTO asyncjobs_jobs (id, name, queue, payload, state, due_at, enqueued_at,"
            " priority, max_attempts, schedule) VALUES (?, ?, ?, ?, 'queued', ?, ?, 0, 3, ?)",
            ("old-job", "tasks.tick", QUEUE, b"{}", clock.now() - 5, clock.now() - 5, "tick"),
        )
    db.close()

    backend = await open_backend(path, clock)
    try:
        old = await backend.get_job("old-job")
        assert old is not None
        assert (old.state, old.schedule, old.due_at) == (
            JobState.QUEUED,
            "tick",
            clock.now() - 5,
        )
        assert old.fire_at is None
        tick = clock.now() - 0.1
        [new] = await backend.enqueue([new_job(clock, due_at=tick, fire_at=tick)])
        claimed = await backend.claim(QUEUE, 10, "worker-1", LEASE)
        assert [(job.id, job.fire_at) for job in claimed] == [("old-job", None), (new.id, tick)]
        assert (await backend.get_job(new.id)) == claimed[1]
    finally:
        await backend.aclose()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM asyncjobs_schema").fetchone() == (SCHEMA_VERSION,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(asyncjobs_jobs)")]
    db.close()
    assert "fire_at" in columns


async def test_a_file_at_schema_4_upgrades_keeping_its_jobs_and_held_keys(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The file an asyncjobs at schema version 4 wrote: the released first four steps.
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as db:
        for step in _schema._MIGRATIONS[:4]:
            for statement in step:
                db.execute(statement)
        db.execute("UPDATE asyncjobs_schema SET version = 4")
        insert = (
            "INSERT INTO asyncjobs_jobs (id, name, queue, payload, state, due_at, enqueued_at,"
            " priority, max_attempts, key, attempts, lease_token, lease_expires_at, worker_id,"
            " started_at, finished_at) VALUES (?, 'tasks.old', ?, x'7b7d', ?, ?, ?, 0, 3, ?, ?,"
            " ?, ?, ?, ?, ?)"
        )
        then = clock.now() - 5
        for job_id, state, key, attempts, token, started, finished in (
            ("queued-keyed", "queued", "k:queued", 0, None, None, None),
            ("running-keyed", "running", "k:running", 1, "t" * 32, then, None),
            ("done-keyed", "complete", "k:done", 1, None, then, then),
            ("plain", "queued", None, 0, None, None, None),
        ):
            expires = None if token is None else clock.now() + LEASE
            worker = None if token is None else "old-worker"
            row = (job_id, QUEUE, state, then, then, key, attempts, token, expires, worker)
            db.execute(insert, (*row, started, finished))
    db.close()

    backend = await open_backend(path, clock)
    try:
        # The keys of the active jobs are still held; the finished job's is free.
        for key, holder in (("k:queued", "queued-keyed"), ("k:running", "running-keyed")):
            [job] = await backend.enqueue([new_job(clock, key=key)])
            assert job.id == holder
        [fresh] = await backend.enqueue([new_job(clock, key="k:done")])
        assert fresh.id != "done-keyed"
        running = await backend.get_job("running-keyed")
        assert running is not None
        assert (running.state, running.started_at, running.partition) == (
            JobState.RUNNING,
            then,
            None,
        )
        # The old jobs are in round 0 and keep their claim order; new ones join them.
        [part] = await backend.enqueue([new_job(clock, partition="p")])
        claimed = await backend.claim(QUEUE, 10, "worker-1", LEASE)
        assert [job.id for job in claimed] == ["queued-keyed", "plain", fresh.id, part.id]
        assert all(job.started_at is None for job in claimed)
    finally:
        await backend.aclose()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM asyncjobs_schema").fetchone() == (SCHEMA_VERSION,)
        keys = db.execute("SELECT key, job_id FROM asyncjobs_keys ORDER BY key").fetchall()
        indexes = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    db.close()
    assert keys == [
        ("k:done", fresh.id),
        ("k:queued", "queued-keyed"),
        ("k:running", "running-keyed"),
    ]
    assert "asyncjobs_jobs_active_key" not in indexes


async def test_a_file_at_schema_5_upgrades_keeping_its_jobs_and_keys(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The file an asyncjobs at schema version 5 wrote: the released first five steps.
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as db:
        for step in _schema._MIGRATIONS[:5]:
            for statement in step:
                db.execute(statement)
        db.execute("UPDATE asyncjobs_schema SET version = 5")
        insert = (
            "INSERT INTO asyncjobs_jobs (id, name, queue, payload, state, due_at, enqueued_at,"
            " priority, max_attempts, key, key_scope, attempts, lease_token, lease_expires_at,"
            " worker_id, finished_at) VALUES (?, 'tasks.old', ?, x'7b7d', ?, ?, ?, 0, 3, ?, ?,"
            " ?, ?, ?, ?, ?)"
        )
        then = clock.now() - 5
        for job_id, state, key, scope, attempts, token, finished in (
            # Holds its key until its first claim: still queued, it holds it.
            ("waiting", "queued", "k:waiting", "queued", 0, None, None),
            # Claimed already: a queued-scope key is free from the first claim on.
            ("claimed", "running", "k:claimed", "queued", 1, "t" * 32, None),
            ("active", "running", "k:active", None, 1, "u" * 32, None),
            ("done", "complete", None, None, 1, None, then),
        ):
            expires = None if token is None else clock.now() + LEASE
            worker = None if token is None else "old-worker"
            row = (job_id, QUEUE, state, then, then, key, scope, attempts, token, expires, worker)
            db.execute(insert, (*row, finished))  # its insert trigger takes the key
    db.close()

    backend = await open_backend(path, clock)
    try:
        # Old jobs have no tags and no history; the keys still held stay held.
        assert [(job.id, job.tags) for job in await backend.list_jobs()] == [
            ("done", {}),
            ("active", {}),
            ("claimed", {}),
            ("waiting", {}),
        ]
        assert await backend.get_attempts("done") == []
        for key, holder in (("k:waiting", "waiting"), ("k:active", "active")):
            [job] = await backend.enqueue([new_job(clock, key=key)])
            assert job.id == holder
        [fresh] = await backend.enqueue([new_job(clock, key="k:claimed", tags={"t": "1"})])
        assert fresh.id != "claimed"
        assert [job.id for job in await backend.list_jobs(tags={"t": "1"})] == [fresh.id]
        # An old running job's attempt is recorded when it ends, with its old worker.
        outcome = Outcome(job_id="active", lease_token="u" * 32, kind=OutcomeKind.COMPLETE)
        assert await backend.settle([outcome]) == []
        [attempt] = await backend.get_attempts("active")
        assert (attempt.number, attempt.worker_id, attempt.outcome) == (1, "old-worker", "complete")
        assert await backend.delete_job("done") is True
    finally:
        await backend.aclose()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM asyncjobs_schema").fetchone() == (SCHEMA_VERSION,)
        keys = db.execute("SELECT key, job_id FROM asyncjobs_keys ORDER BY key").fetchall()
    db.close()
    assert keys == [
        ("k:active", "active"),
        ("k:claimed", fresh.id),
        ("k:waiting", "waiting"),
    ]


def schema_of(path: Path) -> list[tuple[str, str, str, str]]:
    """The file's tables, indexes and triggers as created: ``(type, name, table, sql)``.

    Root pages differ from file to file, and ``sqlite_master`` keeps each in
    creation order; runs of whitespace in the SQL do not matter either.
    """
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        ).fetchall()
    db.close()
    return sorted((kind, name, table, " ".join(sql.split())) for kind, name, table, sql in rows)


async def test_a_file_at_schema_6_upgrades_and_a_replace_waits_for_its_old_running_job(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The file an asyncjobs at schema version 6 wrote: the released first six steps.
    path = tmp_path / "jobs.db"
    then = clock.now() - 5
    with sqlite3.connect(path) as db:
        for step in _schema._MIGRATIONS[:6]:
            for statement in step:
                db.execute(statement)
        db.execute("UPDATE asyncjobs_schema SET version = 6")
        insert = (
            "INSERT INTO asyncjobs_jobs (id, name, queue, payload, state, due_at, enqueued_at,"
            " priority, max_attempts, key, attempts, lease_token, lease_expires_at, worker_id,"
            " started_at) VALUES (?, 'tasks.old', ?, x'7b7d', ?, ?, ?, 0, 3, ?, ?, ?, ?, ?, ?)"
        )
        expires = clock.now() + LEASE
        token = "t" * 32
        db.execute(
            insert, ("running", QUEUE, "running", then, then, "k", 1, token, expires, "old", then)
        )  # its insert trigger takes the key
        db.execute(insert, ("plain", QUEUE, "queued", then, then, None, 0, None, None, None, None))
    db.close()

    backend = await open_backend(path, clock)
    try:
        old = {job.id: job for job in await backend.list_jobs()}
        assert {job_id: (job.waits_for, job.due_at) for job_id, job in old.items()} == {
            "running": (None, then),
            "plain": (None, then),
        }
        replacement = new_job(clock, key="k", on_conflict=OnConflict.REPLACE)
        [waiting] = await backend.enqueue([replacement])
        assert (waiting.id, waiting.waits_for) == (replacement.id, "running")
        assert [job.id for job in await backend.claim(QUEUE, 10, "worker-1", LEASE)] == ["plain"]
        done = Outcome(job_id="running", lease_token=token, kind=OutcomeKind.COMPLETE)
        assert await backend.settle([done]) == []
        [claimed] = await backend.claim(QUEUE, 10, "worker-1", LEASE)
        assert (claimed.id, claimed.waits_for, claimed.due_at) == (
            replacement.id,
            None,
            replacement.due_at,
        )
    finally:
        await backend.aclose()

    fresh = tmp_path / "fresh.db"
    await (await open_backend(fresh, clock)).aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM asyncjobs_schema").fetchone() == (SCHEMA_VERSION,)
        columns = {row[1] for row in db.execute("PRAGMA table_info(asyncjobs_jobs)")}
        named = {(row[0], row[1]) for row in db.execute("SELECT type, name FROM sqlite_master")}
    db.close()
    assert {"waits_for", "parked_due_at"} <= columns
    assert {
        ("index", "asyncjobs_jobs_waits_for"),
        ("trigger", "asyncjobs_jobs_release"),
        ("trigger", "asyncjobs_jobs_release_gone"),
    } <= named
    assert schema_of(path) == schema_of(fresh)


async def test_a_file_at_schema_7_upgrades_counting_the_claims_in_its_rate_windows(
    tmp_path: Path, clock: ManualClock
) -> None:
    # The file an asyncjobs at schema version 7 wrote, with claims in two rate windows.
    path = tmp_path / "jobs.db"
    now = clock.now()
    with sqlite3.connect(path) as db:
        for step in _schema._MIGRATIONS[:7]:
            for statement in step:
                db.execute(statement)
        db.execute("UPDATE asyncjobs_schema SET version = 7")
        db.executemany(
            "INSERT INTO asyncjobs_rate_claims (name, at) VALUES (?, ?)",
            [
                ("queue:default", now - 12),  # out of a 10 s window, not deleted yet
                ("queue:default", now - 4),
                ("queue:default", now - 2),
                ("job:tasks.other", now - 1),
            ],
        )
    db.close()

    backend = await open_backend(path, clock)
    try:
        with sqlite3.connect(path) as db:
            counted = db.execute("SELECT name, n FROM asyncjobs_rate_counts").fetchall()
        db.close()
        # Every stored claim is counted; the one out of the window goes when it is read.
        assert dict(counted) == {"queue:default": 3, "job:tasks.other": 1}
        [other] = await backend.enqueue([new_job(clock, name="tasks.other")])
        await backend.enqueue([new_job(clock) for _ in range(5)])
        limits = ClaimLimits(
            rate=RateWindow(limit=4, per=10.0),
            job_rates={"tasks.other": RateWindow(limit=1, per=10.0)},
        )
        reply = await backend.claim_limited(QUEUE, 5, "worker-1", LEASE, limits)
        # Two old claims in the queue's window: two more fit; tasks.other's is full.
        assert len(reply.jobs) == 2
        assert other.id not in {job.id for job in reply.jobs}
        assert (reply.held_by, reply.retry_at) == ("rate_limit", now - 4 + 10.0)
        clock.advance(6.0)  # the claim at now - 4 leaves the window
        reply = await backend.claim_limited(QUEUE, 5, "worker-1", LEASE, limits)
        assert len(reply.jobs) == 1
        assert reply.retry_at == now - 2 + 10.0
    finally:
        await backend.aclose()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM asyncjobs_schema").fetchone() == (SCHEMA_VERSION,)
        rows = db.execute(
            "SELECT name, COUNT(*) FROM asyncjobs_rate_claims GROUP BY name"
        ).fetchall()
        counts = db.execute("SELECT name, n FROM asyncjobs_rate_counts").fetchall()
    db.close()
    assert dict(rows) == dict(counts) == {"queue:default": 4, "job:tasks.other": 1}
    fresh = tmp_path / "fresh.db"
    await (await open_backend(fresh, clock)).aclose()
    assert schema_of(path) == schema_of(fresh)


async def test_a_failing_migration_leaves_the_file_as_it_was(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.db"
    backend = await open_backend(path, clock)
    await backend.aclose()
    before = sqlite_files(tmp_path)

    steps = (("CREATE TABLE asyncjobs_test_two (x INTEGER)", "THIS IS NOT SQL"),)
    monkeypatch.setattr(_schema, "_MIGRATIONS", _schema._MIGRATIONS + steps)
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(BackendError, match=r"open on .*jobs\.db failed"):
        await open_backend(path, clock)

    assert sqlite_files(tmp_path) == before


async def test_a_file_from_a_newer_asyncjobs_is_refused_untouched(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.db"
    backend = await open_backend(path, clock)
    await backend.aclose()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE asyncjobs_schema SET version = ?", (SCHEMA_VERSION + 5,))
    db.close()
    before = sqlite_files(tmp_path)

    with pytest.raises(SchemaVersionError) as caught:
        await open_backend(path, clock)

    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 5}" in message
    assert f"up to {SCHEMA_VERSION}" in message
    assert "upgrade asyncjobs" in message
    assert sqlite_files(tmp_path) == before


async def test_from_url_builds_a_sqlite_backend(tmp_path: Path, clock: ManualClock) -> None:
    backend = from_url(f"sqlite:///{tmp_path / 'url.db'}", synchronous="NORMAL")

    assert isinstance(backend, SQLiteBackend)
    await backend.open(clock)
    await backend.aclose()
    assert (tmp_path / "url.db").is_file()


# -- options and start-up checks ----------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"synchronous": "OFF"}, "synchronous='OFF' is not supported"),
        ({"busy_timeout": 0}, "busy_timeout must be positive"),
        ({"write_timeout": 0}, "write_timeout must be positive"),
        ({"write_timeout": -1.0}, "write_timeout must be positive"),
        ({"poll_interval": (0.5, 0.1)}, "poll_interval must be"),
        ({"poll_interval": (0, 0.1)}, "poll_interval must be"),
        ({"max_size": 0}, "max_size must be a positive"),
    ],
)
def test_options_that_cannot_work_are_refused(
    tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SQLiteBackend(tmp_path / "jobs.db", **options)
    assert not (tmp_path / "jobs.db").exists()


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="needs a file path"):
        SQLiteBackend("")


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ((3, 6, 23), False),  # before WAL existed
        ((3, 7, 0), True),
        ((3, 40, 1), True),
        ((3, 44, 5), True),
        ((3, 44, 6), False),  # backport
        ((3, 45, 0), True),
        ((3, 50, 6), True),
        ((3, 50, 7), False),  # backport
        ((3, 51, 2), True),
        ((3, 51, 3), False),  # the fix
        ((3, 52, 0), False),
    ],
)
def test_which_sqlite_versions_have_the_wal_reset_bug(
    version: tuple[int, int, int], affected: bool
) -> None:
    assert _checks._has_wal_reset_bug(version) is affected


async def test_one_backend_alone_opens_without_warnings(tmp_path: Path, clock: ManualClock) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = await open_backend(tmp_path / "jobs.db", clock)
        await backend.aclose()
        again = await open_backend(tmp_path / "jobs.db", clock)  # closed cleanly: not shared
        await again.aclose()


async def test_opening_a_shared_file_warns_when_sqlite_has_the_wal_reset_bug(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = await open_backend(tmp_path / "jobs.db", clock)
    await second.aclose()

    unsafe = [w for w in caught if issubclass(w.category, UnsafeSQLiteWarning)]
    if not AFFECTED:
        assert unsafe == []
        return
    [warning] = unsafe
    message = str(warning.message)
    assert f"SQLite {sqlite3.sqlite_version} has the WAL-reset bug" in message
    assert "3.7.0 through 3.51.2" in message
    assert "3.51.3" in message
    assert warning.filename == __file__  # points at the caller of open()


async def test_a_file_that_cannot_use_wal_is_refused(clock: ManualClock) -> None:
    backend = SQLiteBackend(":memory:")

    with pytest.raises(SQLiteJournalModeError) as caught:
        await backend.open(clock)

    assert "journal_mode='memory'" in str(caught.value)
    assert "use MemoryBackend" in str(caught.value)


async def test_the_file_stays_in_wal_mode_with_the_chosen_durability(
    tmp_path: Path, clock: ManualClock
) -> None:
    backend = await open_backend(tmp_path / "jobs.db", clock, synchronous="normal")
    try:
        assert (tmp_path / "jobs.db-wal").exists()
        assert "jobs.db" in repr(backend)
    finally:
        await backend.aclose()
    # The last connection checkpoints and removes the WAL on a clean close.
    assert not (tmp_path / "jobs.db-wal").exists()


# -- faults -------------------------------------------------------------------


async def test_a_missing_directory_is_refused_and_not_created(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "missing" / "jobs.db"

    with pytest.raises(SQLitePathError) as caught:
        await SQLiteBackend(path).open(clock)

    assert f"the directory {tmp_path / 'missing'} does not exist" in str(caught.value)
    assert "create it first" in str(caught.value)
    assert sqlite_files(tmp_path) == {}


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "existing-file"])
async def test_a_read_only_directory_is_refused(
    tmp_path: Path, clock: ManualClock, existing: bool
) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    if existing:
        backend = await open_backend(directory / "jobs.db", clock)
        await backend.aclose()
    before = sqlite_files(directory)

    with read_only(directory), pytest.raises(SQLitePathError) as caught:
        await SQLiteBackend(directory / "jobs.db").open(clock)

    message = str(caught.value)
    assert f"the directory {directory} is read-only" in message
    assert "-wal and -shm" in message
    assert sqlite_files(directory) == before


@pytest.mark.parametrize("how", ["chmod", "chattr", "read-only-mount"])
async def test_a_write_protected_database_file_is_refused_at_open_untouched(
    tmp_path: Path, clock: ManualClock, how: str
) -> None:
    # SQLite opens a file it cannot write read-only, without a word, and creates
    # its -wal and -shm next to it: only a real write shows the problem.
    path = tmp_path / "jobs.db"
    backend = await open_backend(path, clock)
    [job] = await backend.enqueue([new_job(clock)])
    await backend.aclose()
    before = sqlite_files(tmp_path)

    with write_protected(path, how):
        with pytest.raises(SQLitePathError) as caught:
            await SQLiteBackend(path).open(clock)
        assert sqlite_files(tmp_path) == before  # no stray -wal/-shm, the file unchanged

    message = str(caught.value)
    assert f"open on {path} failed" in message
    assert "is write-protected for this process" in message
    assert "make the file, its -wal and -shm files and the directory writable" in message
    reopened = await open_backend(path, clock)  # writable again: all there
    try:
        assert await reopened.get_job(job.id) == job
    finally:
        await reopened.aclose()


async def test_a_directory_as_path_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(SQLitePathError, match="is a directory"):
        await SQLiteBackend(tmp_path).open(clock)


async def test_a_file_that_is_not_a_database_is_refused_untouched(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = sqlite_files(tmp_path)

    with pytest.raises(SQLiteNotADatabaseError) as caught:
        await SQLiteBackend(path).open(clock)

    assert f"{path} exists but is not a SQLite database" in str(caught.value)
    assert sqlite_files(tmp_path) == before


async def test_a_full_disk_fails_the_enqueue_and_stores_none_of_the_batch(
    tmp_path: Path, clock: ManualClock
) -> None:
    # max_size turns into PRAGMA max_page_count: SQLITE_FULL, as on a full disk.
    backend = await open_backend(tmp_path / "jobs.db", clock, max_size=256 * 1024)
    try:
        kept = await backend.enqueue([new_job(clock) for _ in range(5)])
        before = await backend.list_jobs(limit=1000)
        batch = [new_job(clock, payload=os.urandom(20_000)) for _ in range(20)]

        with pytest.raises(SQLiteFullError) as caught:
            await backend.enqueue(batch)

        message = str(caught.value)
        assert "enqueue on" in message
        assert "the database is full" in message
        assert "max_size=262144" in message
        assert "nothing of this call was stored" in message
        assert await backend.list_jobs(limit=1000) == before
        for new in batch:
            assert await backend.get_job(new.id) is None
        # The store is still usable: the connection has no transaction left open.
        [small] = await backend.enqueue([new_job(clock)])
        assert await backend.get_job(small.id) == small
        claimed = await backend.claim(QUEUE, 100, "worker-1", LEASE)
        assert {job.id for job in claimed} == {job.id for job in kept} | {small.id}
    finally:
        await backend.aclose()


async def test_a_closed_backend_says_so(tmp_path: Path, clock: ManualClock) -> None:
    backend = SQLiteBackend(tmp_path / "jobs.db")

    with pytest.raises(BackendError, match=r"is not open: call open\(\) first"):
        await backend.enqueue([new_job(clock)])
    with pytest.raises(BackendError, match="is not open"):
        await backend.get_job("x")


# -- concurrency --------------------------------------------------------------


@pytest.mark.slow
async def test_eight_processes_racing_one_key_create_one_job(tmp_path: Path) -> None:
    path = tmp_path / "race.db"  # new: the racers also race to create the schema
    racers = 8
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    results: multiprocessing.queues.Queue[str] = context.Queue()
    processes = [
        context.Process(target=enqueue_keyed, args=(str(path), "welcome:42", barrier, results))
        for _ in range(racers)
    ]
    for process in processes:
        process.start()
    try:
        ids = [await anyio.to_thread.run_sync(results.get, True, 50) for _ in range(racers)]
    finally:
        for process in processes:
            await anyio.to_thread.run_sync(process.join, 10)
            if process.is_alive():
                process.kill()

    assert [process.exitcode for process in processes] == [0] * racers
    assert len(set(ids)) == 1
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, key, state FROM asyncjobs_jobs").fetchall()
    assert rows == [(ids[0], "welcome:42", "queued")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scope", "on_conflict"),
    [
        (KeyScope.QUEUED, OnConflict.RETURN),
        (KeyScope.WINDOW, OnConflict.RAISE),
        (KeyScope.ACTIVE, OnConflict.REPLACE),
    ],
)
async def test_eight_processes_racing_one_key_of_any_scope_and_rule_create_one_job(
    tmp_path: Path, scope: KeyScope, on_conflict: OnConflict
) -> None:
    path = tmp_path / "race.db"
    racers = 8
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(racers)
    results: multiprocessing.queues.Queue[str] = context.Queue()
    processes = [
        context.Process(
            target=enqueue_scoped,
            args=(str(path), "digest:7", str(scope), str(on_conflict), barrier, results),
        )
        for _ in range(racers)
    ]
    for process in processes:
        process.start()
    try:
        reports = [await anyio.to_thread.run_sync(results.get, True, 50) for _ in range(racers)]
    finally:
        for process in processes:
            await anyio.to_thread.run_sync(process.join, 10)
            if process.is_alive():
                process.kill()

    assert [process.exitcode for process in processes] == [0] * racers
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT id, key, state, payload, key_scope FROM asyncjobs_jobs"
        ).fetchall()
        keys = db.execute("SELECT key, job_id FROM asyncjobs_keys").fetchall()
    db.close()
    [(job_id, key, state, payload, stored_scope)] = rows
    assert (key, state) == ("digest:7", "queued")
    assert stored_scope == (None if scope is KeyScope.ACTIVE else str(scope))
    assert keys == [("digest:7", job_id)]
    if on_conflict is OnConflict.RAISE:
        assert sorted(reports) == sorted([f"stored:{job_id}"] + [f"raised:{job_id}"] * 7)
    else:
        assert reports == [f"stored:{job_id}"] * racers
    if on_conflict is OnConflict.REPLACE:
        # The holder took the payload of one of the racers (the last to write).
        assert payload.startswith(b'{"racer": "')
    else:
        assert payload == f'{{"racer": "{job_id}"}}'.encode()


async def test_a_second_backend_on_the_file_sees_an_enqueue_within_the_poll(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    other = await open_another(tmp_path / "jobs.db", clock)
    try:
        assert await other.claim(QUEUE, 1, "worker-2", LEASE) == []
        claimed: list[Job] = []

        async def worker() -> None:
            while not claimed:
                await other.wait_for_work([QUEUE], None)  # no deadline: only the poll wakes it
                claimed.extend(await other.claim(QUEUE, 1, "worker-2", LEASE))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker)
                await anyio.wait_all_tasks_blocked()
                [job] = await store.enqueue([new_job(clock)])

        assert [c.id for c in claimed] == [job.id]
    finally:
        await other.aclose()


async def test_work_added_elsewhere_between_claim_and_wait_is_not_missed(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    # A long poll interval: a wake-up within the test's limit can only come from
    # the check wait_for_work makes before it starts polling.
    other = await open_another(tmp_path / "jobs.db", clock, poll_interval=(60.0, 60.0))
    try:
        assert await other.claim(QUEUE, 1, "worker-2", LEASE) == []
        [job] = await store.enqueue([new_job(clock)])

        with anyio.fail_after(5):
            await other.wait_for_work([QUEUE], None)

        assert [c.id for c in await other.claim(QUEUE, 1, "worker-2", LEASE)] == [job.id]
    finally:
        await other.aclose()


async def test_wait_for_work_ignores_other_queues_and_returns_at_its_deadline(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    other = await open_another(tmp_path / "jobs.db", clock, poll_interval=(0.001, 0.002))
    try:
        assert await other.claim(QUEUE, 1, "worker-2", LEASE) == []
        returned = anyio.Event()

        async def waiter() -> None:
            await other.wait_for_work([QUEUE], clock.now() + 60)
            returned.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                await store.enqueue([new_job(clock, queue="unrelated")])
                await store.pause_queue("unrelated", False)
                # Let the fast poll run many times: it must not see work for QUEUE.
                for _ in range(20):
                    await anyio.wait_all_tasks_blocked()
                    await anyio.sleep(0.002)
                assert not returned.is_set()
                clock.advance(60)
                await returned.wait()
    finally:
        await other.aclose()


async def test_closing_the_backend_releases_its_waiters(tmp_path: Path, clock: ManualClock) -> None:
    backend = await open_backend(tmp_path / "jobs.db", clock, poll_interval=(0.001, 0.001))
    returned = 0

    async def waiter() -> None:
        nonlocal returned
        await backend.wait_for_work([QUEUE], None)
        returned += 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await backend.aclose()

    assert returned == 3


async def test_pausing_in_one_process_stops_claims_in_another(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    other = await open_another(tmp_path / "jobs.db", clock)
    try:
        [job] = await store.enqueue([new_job(clock)])
        await store.pause_queue(QUEUE, True)

        assert await other.claim(QUEUE, 1, "worker-2", LEASE) == []
        assert [s.paused for s in await other.queue_stats()] == [True]
        assert await other.next_due_at([QUEUE]) is None

        await store.pause_queue(QUEUE, False)
        assert [c.id for c in await other.claim(QUEUE, 1, "worker-2", LEASE)] == [job.id]
    finally:
        await other.aclose()


async def test_a_cancelled_write_is_all_or_nothing_and_leaves_the_store_usable(
    store: SQLiteBackend, clock: ManualClock
) -> None:
    batch = [new_job(clock) for _ in range(50)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.enqueue, batch)
        await anyio.wait_all_tasks_blocked()  # blocked on the database thread
        tg.cancel_scope.cancel()

    found = [await store.get_job(new.id) for new in batch]
    assert all(job is None for job in found) or all(job is not None for job in found)
    [job] = await store.enqueue([new_job(clock)])
    assert await store.get_job(job.id) == job


# -- flow control: what the other processes see ------------------------------


def wake_seq(path: Path) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT wake_seq FROM asyncjobs_queues WHERE name = ?", (QUEUE,)
        ).fetchone()
    db.close()
    return int(row[0])


async def test_a_slot_freed_in_a_limited_queue_wakes_another_process(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.db"
    other = await open_another(path, clock)
    try:
        await store.enqueue([new_job(clock) for _ in range(2)])
        limits = ClaimLimits(global_concurrency=1)
        [running] = (await store.claim_limited(QUEUE, 5, "worker-1", LEASE, limits)).jobs
        held = await other.claim_limited(QUEUE, 5, "worker-2", LEASE, limits)
        assert (held.jobs, held.held_by) == ([], "global_concurrency")
        await other.wait_for_work([QUEUE], None)  # marks the wake counter seen
        claimed: list[Job] = []

        async def worker() -> None:
            while not claimed:
                await other.wait_for_work([QUEUE], None)  # no deadline: only the poll wakes it
                claimed.extend((await other.claim_limited(QUEUE, 5, "w-2", LEASE, limits)).jobs)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker)
                await anyio.wait_all_tasks_blocked()
                assert await store.settle([complete(running)]) == []

        assert len(claimed) == 1
    finally:
        await other.aclose()


async def test_only_a_limited_queue_is_woken_by_a_job_ending(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "jobs.db"
    await store.enqueue([new_job(clock) for _ in range(3)])
    [plain] = await store.claim(QUEUE, 1, "worker-1", LEASE)
    before = wake_seq(path)
    assert await store.settle([complete(plain)]) == []
    assert wake_seq(path) == before  # an unlimited queue: finishing wakes nobody

    limits = ClaimLimits(partition_concurrency=1)
    [limited] = (await store.claim_limited(QUEUE, 1, "worker-1", LEASE, limits)).jobs
    before = wake_seq(path)
    assert await store.settle([complete(limited)]) == []
    assert wake_seq(path) == before + 1


async def test_limited_claims_page_through_many_held_jobs_without_skipping_any(
    store: SQLiteBackend, clock: ManualClock
) -> None:
    # All due at one instant: the pages follow (priority, round, due_at, seq).
    slow = await store.enqueue([new_job(clock, name="tasks.slow") for _ in range(600)])
    fast = await store.enqueue([new_job(clock, name="tasks.fast") for _ in range(300)])
    limits = ClaimLimits(job_rates={"tasks.slow": RateWindow(limit=1, per=60.0)})

    reply = await store.claim_limited(QUEUE, 1000, "worker-1", LEASE, limits)

    assert [job.id for job in reply.jobs] == [slow[0].id] + [job.id for job in fast]
    assert reply.held_by == "job_rate_limit"
    assert reply.retry_at == clock.now() + 60.0


async def test_a_full_partition_is_skipped_across_pages(
    store: SQLiteBackend, clock: ManualClock
) -> None:
    await store.enqueue([new_job(clock, partition="big") for _ in range(700)])
    small = await store.enqueue([new_job(clock, partition=f"small-{i}") for i in range(3)])
    limits = ClaimLimits(partition_concurrency=1)
    first = await store.claim_limited(QUEUE, 1, "worker-1", LEASE, limits)
    assert first.jobs[0].partition == "big"

    reply = await store.claim_limited(QUEUE, 10, "worker-1", LEASE, limits)

    assert sorted(job.id for job in reply.jobs) == sorted(job.id for job in small)
    assert reply.held_by == "partition_concurrency"


async def test_rate_windows_keep_only_the_claims_inside_them(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    await store.enqueue([new_job(clock) for _ in range(50)])
    limits = ClaimLimits(
        rate=RateWindow(limit=2, per=10.0),
        job_rates={"tasks.example": RateWindow(limit=5, per=10.0)},
    )
    claimed = 0
    for _ in range(25):
        claimed += len((await store.claim_limited(QUEUE, 5, "worker-1", LEASE, limits)).jobs)
        clock.advance(5.0)

    assert claimed == 26  # 2 per 10 s, over 125 s (the last window half used)
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        rows = db.execute(
            "SELECT name, COUNT(*) FROM asyncjobs_rate_claims GROUP BY name"
        ).fetchall()
        counts = db.execute("SELECT name, n FROM asyncjobs_rate_counts").fetchall()
    db.close()
    assert dict(rows) == {"queue:default": 2, "job:tasks.example": 2}
    assert dict(counts) == dict(rows)  # each window's count is kept with its rows


async def test_pruning_a_keyed_job_drops_its_key_row(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    window = {"key_scope": KeyScope.WINDOW, "key_expires_at": clock.now() + 3600}
    [job] = await store.enqueue([new_job(clock, key="k", **window)])
    [running] = await store.claim(QUEUE, 1, "worker-1", LEASE)
    assert await store.settle([complete(running)]) == []
    clock.advance(10)

    assert await store.prune({JobState.COMPLETE: clock.now()}) == 1

    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT COUNT(*) FROM asyncjobs_keys").fetchone() == (0,)
    db.close()
    [again] = await store.enqueue([new_job(clock, key="k", **window)])
    assert again.id != job.id


async def test_a_queued_scope_key_stays_free_when_its_job_is_released(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    [job] = await store.enqueue([new_job(clock, key="k", key_scope=KeyScope.QUEUED)])
    [claimed] = await store.claim(QUEUE, 1, "worker-1", LEASE)
    release = Outcome(
        job_id=job.id, lease_token=claimed.lease_token or "", kind=OutcomeKind.RELEASE
    )
    assert await store.settle([release]) == []
    released = await store.get_job(job.id)
    assert released is not None
    assert (released.state, released.attempts) == (JobState.QUEUED, 0)

    [other] = await store.enqueue([new_job(clock, key="k", key_scope=KeyScope.QUEUED)])

    assert other.id != job.id
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT key, job_id FROM asyncjobs_keys").fetchall() == [("k", other.id)]
    db.close()


def history_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT j.id, a.seq, a.number FROM asyncjobs_attempts AS a"
            " LEFT JOIN asyncjobs_jobs AS j ON j.seq = a.job_seq ORDER BY a.job_seq, a.seq"
        ).fetchall()
    db.close()
    return rows


async def test_history_rows_are_trimmed_and_go_with_their_job(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    keep = MAX_ATTEMPT_HISTORY
    [job, removed] = await store.enqueue(
        [new_job(clock, max_attempts=keep + 10), new_job(clock, key="once", queue="other")]
    )
    for _ in range(keep + 2):
        [claimed] = await store.claim(QUEUE, 1, "worker-1", LEASE)
        retry = Outcome(
            job_id=job.id, lease_token=claimed.lease_token or "", kind=OutcomeKind.RETRY
        )
        assert await store.settle([retry]) == []
    [claimed] = await store.claim(QUEUE, 1, "worker-1", LEASE)
    clock.advance(LEASE + 1)
    assert await store.recover_expired() == 1
    # A release hands its attempt's number back: the history counts its own rows.
    [claimed] = await store.claim(QUEUE, 1, "worker-1", LEASE)
    release = Outcome(
        job_id=job.id, lease_token=claimed.lease_token or "", kind=OutcomeKind.RELEASE
    )
    assert await store.settle([release]) == []

    recorded = keep + 4  # the retries, the expired lease, the release
    rows = history_rows(tmp_path / "jobs.db")
    assert [seq for _, seq, _ in rows] == list(range(recorded - keep + 1, recorded + 1))
    assert [number for _, _, number in rows][-3:] == [keep + 2, keep + 3, keep + 4]
    attempts = await store.get_attempts(job.id)
    assert [a.outcome for a in attempts][-2:] == ["lease_expired", "release"]

    # Removed at its settle: the job, its key and its history go; none is recorded.
    [running] = await store.claim("other", 1, "worker-1", LEASE)
    done = Outcome(
        job_id=removed.id,
        lease_token=running.lease_token or "",
        kind=OutcomeKind.COMPLETE,
        remove=True,
    )
    assert await store.settle([done]) == []
    assert await store.get_job(removed.id) is None
    # Deleted: the rest of the history goes too.
    assert await store.delete_job(job.id) is True
    assert history_rows(tmp_path / "jobs.db") == []
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT COUNT(*) FROM asyncjobs_keys").fetchone() == (0,)
    db.close()


async def test_tags_are_one_json_object_and_filter_by_any_key(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    tags = {"tenant.id": "t1", 'quote"d': "ünïcode", "n": "1"}
    [tagged, plain] = await store.enqueue([new_job(clock, tags=tags), new_job(clock)])

    with sqlite3.connect(tmp_path / "jobs.db") as db:
        stored = dict(db.execute("SELECT id, tags FROM asyncjobs_jobs").fetchall())
    db.close()
    assert stored[plain.id] is None  # no tags: nothing stored
    assert json.loads(stored[tagged.id]) == tags
    for key, value in tags.items():
        assert [job.id for job in await store.list_jobs(tags={key: value})] == [tagged.id]
    assert await store.list_jobs(tags={"n": "2"}) == []
    [claimed, _] = await store.claim(QUEUE, 2, "worker-1", LEASE)
    assert claimed.tags == tags
    assert await store.purge(tags={"tenant.id": "t1"}) == 0  # running: never purged


async def test_starts_and_outcomes_in_one_settle(store: SQLiteBackend, clock: ManualClock) -> None:
    await store.enqueue([new_job(clock) for _ in range(3)])
    first, second, third = await store.claim(QUEUE, 3, "worker-1", LEASE)
    assert first.lease_token
    assert second.lease_token
    clock.advance(1)
    starts = [
        JobStart(job_id=first.id, lease_token=first.lease_token, started_at=clock.now()),
        JobStart(job_id=second.id, lease_token=second.lease_token, started_at=clock.now()),
    ]
    retry = Outcome(
        job_id=third.id,
        lease_token=third.lease_token or "",
        kind=OutcomeKind.RETRY,
        due_at=clock.now() + 5,
        started_at=clock.now() - 0.5,
    )

    assert await store.settle([complete(second), retry], starts) == []

    stored = {job.id: job for job in await store.list_jobs()}
    assert stored[first.id].started_at == clock.now()
    assert (stored[second.id].state, stored[second.id].started_at) == (
        JobState.COMPLETE,
        clock.now(),
    )
    assert (stored[third.id].state, stored[third.id].started_at) == (
        JobState.QUEUED,
        clock.now() - 0.5,
    )


# -- batches larger than one statement can bind ------------------------------


async def test_big_batches_are_split_into_statements_the_database_accepts(
    store: SQLiteBackend, clock: ManualClock
) -> None:
    count = 1200  # over SQLite's smallest bound-parameter limit in every statement
    news = [new_job(clock, key=f"k{i}") for i in range(count)]
    assert [job.id for job in await store.enqueue(news)] == [new.id for new in news]
    # Every key is taken now: the same keys again return the same jobs.
    again = await store.enqueue([new_job(clock, key=f"k{i}") for i in range(count)])
    assert [job.id for job in again] == [new.id for new in news]

    claimed = await store.claim(QUEUE, count, "worker-1", LEASE)
    assert len(claimed) == count
    leases = {job.id: job.lease_token for job in claimed if job.lease_token is not None}
    reply = await store.heartbeat(leases, LEASE)
    assert reply.lost == frozenset()
    stale = [Outcome(job_id=job.id, lease_token="old", kind=OutcomeKind.DEAD) for job in claimed]
    assert sorted(await store.settle(stale)) == sorted(job.id for job in claimed)
    assert await store.settle([complete(job) for job in claimed]) == []
    assert [s.count(JobState.COMPLETE) for s in await store.queue_stats()] == [count]


async def test_one_settle_statement_finishes_complete_dead_and_cancelled_jobs(
    store: SQLiteBackend, clock: ManualClock
) -> None:
    error = ErrorInfo(type="ValueError", message="boom", traceback="Traceback ...")
    await store.enqueue([new_job(clock) for _ in range(4)])
    done, dead, cancelled, stale = await store.claim(QUEUE, 4, "worker-1", LEASE)
    assert done.lease_token
    assert dead.lease_token
    assert cancelled.lease_token
    clock.advance(2)

    refused = await store.settle(
        [
            Outcome(
                job_id=done.id,
                lease_token=done.lease_token,
                kind=OutcomeKind.COMPLETE,
                result=b"42",
            ),
            Outcome(
                job_id=dead.id, lease_token=dead.lease_token, kind=OutcomeKind.DEAD, error=error
            ),
            Outcome(
                job_id=cancelled.id, lease_token=cancelled.lease_token, kind=OutcomeKind.CANCELLED
            ),
            Outcome(job_id=stale.id, lease_token="old", kind=OutcomeKind.COMPLETE, result=b"x"),
            Outcome(job_id=done.id, lease_token=done.lease_token, kind=OutcomeKind.DEAD),
        ]
    )

    assert refused == [stale.id, done.id]
    results = {job.id: job for job in await store.list_jobs()}
    assert (results[done.id].state, results[done.id].result, results[done.id].error) == (
        JobState.COMPLETE,
        b"42",
        None,
    )
    assert (results[dead.id].state, results[dead.id].result, results[dead.id].error) == (
        JobState.DEAD,
        None,
        error,
    )
    assert results[cancelled.id].state is JobState.CANCELLED
    assert results[stale.id] == stale
    assert all(
        results[job.id].finished_at == clock.now() and results[job.id].lease_token is None
        for job in (done, dead, cancelled)
    )


async def test_prune_deletes_in_batches(
    store: SQLiteBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_control, "_PRUNE_BATCH", 3)
    await store.enqueue([new_job(clock) for _ in range(10)])
    claimed = await store.claim(QUEUE, 10, "worker-1", LEASE)
    await store.settle([complete(job) for job in claimed])
    clock.advance(10)

    assert await store.prune({JobState.COMPLETE: clock.now()}) == 10
    assert await store.list_jobs() == []


async def test_lease_tokens_are_random_128_bit_hex(
    store: SQLiteBackend, clock: ManualClock
) -> None:
    await store.enqueue([new_job(clock) for _ in range(20)])
    tokens = [job.lease_token for job in await store.claim(QUEUE, 20, "worker-1", LEASE)]

    assert len(set(tokens)) == 20
    assert all(token is not None and len(token) == 32 for token in tokens)
    assert all(token is not None and int(token, 16) >= 0 for token in tokens)


# -- indexes: claiming does not depend on how many jobs have finished ---------


def query_plan(path: Path, sql: str, parameters: tuple[Any, ...]) -> str:
    with sqlite3.connect(path) as db:
        db.create_function("asyncjobs_now", 0, lambda: 1.0)  # the writer's clock
        rows = db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters).fetchall()
    db.close()
    return "\n".join(row[3] for row in rows)


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("claim", "COVERING INDEX asyncjobs_jobs_claim (queue=?)"),
        ("next_due", "COVERING INDEX asyncjobs_jobs_claim (queue=? AND priority=?)"),
        ("expired", "COVERING INDEX asyncjobs_jobs_lease (lease_expires_at<?)"),
        ("dedup", "SEARCH k USING PRIMARY KEY (key=?)"),
        (
            "limited_page",
            "INDEX asyncjobs_jobs_claim (queue=? AND (priority,round,due_at)>(?,?,?))",
        ),
        ("prune", "COVERING INDEX asyncjobs_jobs_finished (state=? AND finished_at<?)"),
        ("stats", "COVERING INDEX asyncjobs_jobs_finished"),
        ("record_attempts", "SEARCH a USING PRIMARY KEY (job_seq=?)"),
        ("record_expired", "INDEX asyncjobs_jobs_lease (lease_expires_at<?)"),
        ("attempts", "SEARCH asyncjobs_attempts USING PRIMARY KEY (job_seq=?)"),
    ],
)
async def test_hot_queries_use_their_index_and_never_scan_the_table(
    store: SQLiteBackend, tmp_path: Path, query: str, index: str
) -> None:
    queries: dict[str, tuple[str, tuple[Any, ...]]] = {
        "claim": (_lifecycle._CLAIM_SQL, (LEASE, "w", QUEUE, QUEUE, 10)),
        "next_due": (_wakeups._NEXT_DUE_SQL.format(values="(?)"), (QUEUE,)),
        "expired": (_lifecycle._EXPIRED_SQL, (1.0, 1.0)),
        "dedup": (_keys.HOLDERS_SQL.format(marks="?"), ("k",)),
        "limited_page": (
            _flow.due_page_sql(after=True, partitions=1, names=1),
            (QUEUE, 1.0, 0, 0, 1.0, 1, "full", "tasks.slow", 256),
        ),
        "prune": (
            "SELECT seq FROM asyncjobs_jobs WHERE state IN ('complete', 'dead', 'cancelled')"
            " AND state = ? AND finished_at < ?",
            ("complete", 1.0),
        ),
        "stats": (_inspection._QUEUE_STATS_SQL.format(partition=""), (1.0,)),
        "record_attempts": (
            _history._outcomes_sql(1),
            ("id", "token", None, "complete", None, None, 1.0),
        ),
        "record_expired": (_history._EXPIRED_SQL, (1.0, "LeaseExpired", "gone", 1.0)),
        "attempts": (_history._READ_SQL, ("id",)),
    }
    sql, parameters = queries[query]

    plan = query_plan(tmp_path / "jobs.db", sql, parameters)

    assert index in plan
    assert "SCAN asyncjobs_jobs\n" not in plan + "\n"  # a full table scan
    assert "TEMP B-TREE FOR ORDER BY" not in plan
    assert "RIGHT PART OF ORDER BY" not in plan


def claim_steps(path: Path, now: float) -> int:
    """Count SQLite VM instructions for one claim, rolled back afterwards."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db = sqlite3.connect(path, isolation_level=None)
    db.create_function("asyncjobs_now", 0, lambda: now)  # the writer's clock
    try:
        db.execute("BEGIN IMMEDIATE")
        db.set_progress_handler(count, 1)
        rows = db.execute(_lifecycle._CLAIM_SQL, (LEASE, "w", QUEUE, QUEUE, 10)).fetchall()
        db.set_progress_handler(None, 0)
        db.execute("ROLLBACK")
    finally:
        db.close()
    assert len(rows) == 3
    return steps


async def test_claim_work_does_not_grow_with_finished_jobs(
    tmp_path: Path, clock: ManualClock
) -> None:
    few, many = tmp_path / "few", tmp_path / "many"
    for directory, finished in ((few, 10), (many, 3000)):
        directory.mkdir()
        backend = await open_backend(directory / "jobs.db", clock)
        await backend.enqueue([new_job(clock) for _ in range(finished)])
        claimed = await backend.claim(QUEUE, finished, "worker-1", LEASE)
        await backend.settle([complete(job) for job in claimed])
        # And jobs not due yet, at a better priority: skipped without a table read.
        await backend.enqueue([new_job(clock, due_at=clock.now() + 3600, priority=-1)])
        await backend.enqueue([new_job(clock) for _ in range(3)])
        await backend.aclose()

    few_steps = claim_steps(few / "jobs.db", clock.now())
    many_steps = claim_steps(many / "jobs.db", clock.now())

    # A deeper b-tree costs a few instructions; a scan would cost thousands.
    assert many_steps <= few_steps + 100, (few_steps, many_steps)


def limited_claim_steps(path: Path, now: float, limits: ClaimLimits) -> int:
    """Count SQLite VM instructions for one limited claim of 10, rolled back afterwards."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.set_progress_handler(count, 1)
        reply = _flow._claim_within(db, Tx(now=now, stalled=False), QUEUE, 10, "w", LEASE, limits)
        db.set_progress_handler(None, 0)
        db.execute("ROLLBACK")
    finally:
        db.close()
    assert len(reply.jobs) == 10
    return steps


async def test_limited_claim_work_does_not_grow_with_its_rate_windows_or_backlog(
    tmp_path: Path, clock: ManualClock
) -> None:
    limits = ClaimLimits(
        rate=RateWindow(limit=10**6, per=60.0),
        job_rates={"tasks.example": RateWindow(limit=10**6, per=60.0)},
    )
    few, many = tmp_path / "few", tmp_path / "many"
    for directory, claimed in ((few, 10), (many, 3000)):
        directory.mkdir()
        backend = await open_backend(directory / "jobs.db", clock)
        await backend.enqueue([new_job(clock) for _ in range(2 * claimed + 10)])
        # Claims still in both windows, and as many jobs again still due.
        reply = await backend.claim_limited(QUEUE, claimed, "worker-1", LEASE, limits)
        assert len(reply.jobs) == claimed
        await backend.aclose()
        clock.advance(1.0)

    few_steps = limited_claim_steps(few / "jobs.db", clock.now(), limits)
    many_steps = limited_claim_steps(many / "jobs.db", clock.now(), limits)

    # Counting the windows' claims, or reading a page of due jobs the claim cannot
    # take, would cost thousands of instructions more.
    assert many_steps <= few_steps + 200, (few_steps, many_steps)


async def test_an_open_refused_by_the_wal_reset_warning_releases_its_threads(
    store: SQLiteBackend, tmp_path: Path, clock: ManualClock
) -> None:
    if not AFFECTED:
        pytest.skip(f"SQLite {sqlite3.sqlite_version} has no WAL-reset bug to warn about")
    before = threading.active_count()
    second = SQLiteBackend(tmp_path / "jobs.db")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsafeSQLiteWarning)
        with pytest.raises(UnsafeSQLiteWarning):
            await second.open(clock)
    # The refused open closed its connections: no thread keeps the process alive.
    with anyio.fail_after(10):
        while threading.active_count() > before:
            await anyio.sleep(0.01)
