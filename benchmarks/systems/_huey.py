"""huey adapter shared by ``huey_memory.py`` and ``huey_sqlite.py``.

huey is synchronous: the consumer is huey's own ``Consumer`` (what
``huey_consumer`` runs) with *concurrency* worker threads, started in this
process with ``consumer.start()`` and huey's default polling settings
(0.1 s initial delay, x1.15 backoff, 10 s max; scheduler every 1 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from typing import Any, ClassVar

from _common import RECORDER, file_mb, fresh_path, version_of
from huey import MemoryHuey, SqliteHuey
from huey.consumer import Consumer

NA: dict[str, str] = {"enqueue_bulk": "huey has no bulk enqueue API (one storage write per task)"}


class HueyAdapter:
    na: ClassVar[dict[str, str]] = NA

    def __init__(self, store: str) -> None:
        self.store = store
        self.name = f"huey-{store}"
        self.versions = version_of("huey")
        self.versions["python"] = sys.version.split()[0]
        self.huey: Any = None
        self.task: Any = None
        self.consumer: Consumer | None = None
        self.path = ""
        self.concurrency = 10

    def setup(self, args: argparse.Namespace) -> None:
        logging.getLogger("huey").setLevel(logging.WARNING)
        self.concurrency = args.concurrency
        if self.store == "memory":
            self.huey = MemoryHuey("bench")
        else:
            self.path = fresh_path(args.workdir, "huey.db")
            self.huey = SqliteHuey("bench", filename=self.path)

        @self.huey.task()
        def noop(i: int) -> None:
            RECORDER.hit(i)

        self.task = noop

    def enqueue(self, i: int) -> None:
        self.task(i)

    def enqueue_bulk(self, items: range) -> None:
        raise NotImplementedError

    def enqueue_at(self, i: int, due_epoch: float) -> None:
        self.task.schedule(args=(i,), eta=dt.datetime.fromtimestamp(due_epoch, dt.UTC))

    def start_worker(self) -> None:
        self.consumer = self.huey.create_consumer(workers=self.concurrency, worker_type="thread")
        self.consumer.start()

    def stop_worker(self) -> None:
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None

    def teardown(self) -> None:
        self.stop_worker()

    def store_settings(self) -> str:
        """SQLite: the pragmas huey's own connection runs with (``SqliteStorage`` defaults)."""
        if self.store != "sqlite":
            return ""
        rows = self.huey.storage.sql("PRAGMA journal_mode", results=True)
        sync = self.huey.storage.sql("PRAGMA synchronous", results=True)[0][0]
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return f"journal_mode={rows[0][0]}, synchronous={names.get(sync, sync)} (SqliteStorage defaults)"

    def store_mb(self) -> float | None:
        if self.store == "sqlite":
            return file_mb(self.path, self.path + "-wal")
        return None
