"""Peer: APScheduler 4 with the ``SQLAlchemyDataStore`` on SQLite (aiosqlite); see ``_apscheduler.py``."""

from __future__ import annotations

from _apscheduler import APSchedulerAdapter
from _common import main_async

if __name__ == "__main__":
    main_async(lambda: APSchedulerAdapter("sqlite"))
