"""asyncjobs with ``PostgresBackend`` on the run's PostgreSQL server; see ``_asyncjobs.py``."""

from __future__ import annotations

from _asyncjobs import AsyncJobsAdapter
from _common import main_async

if __name__ == "__main__":
    main_async(lambda: AsyncJobsAdapter("postgres"))
