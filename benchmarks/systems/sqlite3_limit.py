"""Limit: raw ``sqlite3`` claim+complete transactions, no library in between.

Same durability as a job store should have: WAL, ``synchronous=FULL``, every
write transaction ``BEGIN IMMEDIATE``. "enqueue" is one INSERT transaction per
job; "bulk" is one ``executemany`` transaction. "drain" claims up to
*concurrency* due jobs in one ``UPDATE ... WHERE id IN (SELECT ... LIMIT ?)
RETURNING`` transaction, decodes the JSON payloads, calls the no-op handler
for each, and completes the batch in a second transaction: the floor of what a
SQLite-backed queue must do per batch. It has no worker loop, so start
latency and delayed precision are not applicable.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from typing import ClassVar

from _common import RECORDER, file_mb, fresh_path, main_sync

SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    priority INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    lease_expires_at REAL,
    result BLOB
);
CREATE INDEX jobs_claim ON jobs (queue, state, priority, due_at, id);
"""

INSERT = "INSERT INTO jobs (queue, payload, due_at) VALUES ('default', ?, ?)"
CLAIM = """
UPDATE jobs SET state = 'running', lease_expires_at = ?
WHERE id IN (
    SELECT id FROM jobs
    WHERE queue = 'default' AND state = 'queued' AND due_at <= ?
    ORDER BY priority, due_at, id LIMIT ?
)
RETURNING id, payload
"""
COMPLETE = "UPDATE jobs SET state = 'complete', result = ? WHERE id = ?"


def noop(i: int) -> None:
    RECORDER.hit(i)


class RawSqlite:
    name = "sqlite3"
    na: ClassVar[dict[str, str]] = {
        "latency": "no worker loop: nothing waits for new work",
        "delayed": "no worker loop: nothing waits for due times",
    }

    def __init__(self) -> None:
        self.versions = {"sqlite": sqlite3.sqlite_version, "python": sys.version.split()[0]}
        self.path = ""
        self.conn: sqlite3.Connection | None = None
        self.concurrency = 10

    def setup(self, args: argparse.Namespace) -> None:
        self.concurrency = args.concurrency
        self.path = fresh_path(args.workdir, "raw_sqlite3.db")
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self.conn = conn

    def _db(self) -> sqlite3.Connection:
        assert self.conn is not None
        return self.conn

    def enqueue(self, i: int) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        db.execute(INSERT, (json.dumps({"args": [i]}), time.time()))
        db.execute("COMMIT")

    def enqueue_bulk(self, items: range) -> None:
        db = self._db()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(INSERT, ((json.dumps({"args": [i]}), now) for i in items))
        db.execute("COMMIT")

    def enqueue_at(self, i: int, due_epoch: float) -> None:
        raise NotImplementedError

    def start_worker(self) -> None:
        # Runs the whole drain inline: the loop ends when a claim returns nothing.
        db = self._db()
        while True:
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(CLAIM, (now + 30, now, self.concurrency)).fetchall()
            db.execute("COMMIT")
            if not rows:
                return
            results = []
            for job_id, payload in rows:
                noop(*json.loads(payload)["args"])
                results.append((b"null", job_id))
            db.execute("BEGIN IMMEDIATE")
            db.executemany(COMPLETE, results)
            db.execute("COMMIT")

    def stop_worker(self) -> None:
        pass

    def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def store_mb(self) -> float | None:
        return file_mb(self.path, self.path + "-wal")


if __name__ == "__main__":
    main_sync(RawSqlite)
