"""Peer: huey with ``SqliteHuey``; see ``_huey.py``."""

from __future__ import annotations

from _common import main_sync
from _huey import HueyAdapter

if __name__ == "__main__":
    main_sync(lambda: HueyAdapter("sqlite"))
