"""One of the racing processes of ``test_key_race.py``: enqueues on a signal, says what came back.

Run as ``python -m tests.key_racer URL PREFIX NUMBER``. It opens an
enqueue-only runtime on the store, prints ``ready``, and then, for every line
``<scenario>`` read from stdin, enqueues one job with that scenario's key
options at once and prints one JSON line: ``{"id": ..., "deduplicated": ...}``
or ``{"duplicate_of": ...}`` when the store raised :class:`DuplicateJobError`.
The parent writes each scenario line to all racers together, so their enqueues
reach the store at the same moment.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import anyio

from asyncjobs import DuplicateJobError, JobRuntime
from tests.chaos_app import make_backend

#: scenario -> the options of its enqueue (each scenario races a key of its own).
SCENARIOS: dict[str, dict[str, Any]] = {
    "active-return": {"key_scope": "active", "on_conflict": "return"},
    "active-raise": {"key_scope": "active", "on_conflict": "raise"},
    "active-replace": {"key_scope": "active", "on_conflict": "replace"},
    "queued-return": {"key_scope": "queued", "on_conflict": "return"},
    "window-return": {"key_scope": timedelta(hours=1), "on_conflict": "return"},
    "window-raise": {"key_scope": timedelta(hours=1), "on_conflict": "raise"},
}


async def race(url: str, prefix: str, number: int) -> None:
    """Enqueue once per scenario line on stdin; print the outcome of each."""
    runtime = JobRuntime(make_backend(url, prefix), role="enqueue")

    @runtime.job(name="race.noop")
    async def noop(racer: int) -> None: ...

    async with runtime:
        print("ready", flush=True)
        for line in sys.stdin:
            scenario = line.strip()
            call = noop.options(key=f"key-{scenario}", **SCENARIOS[scenario])
            try:
                handle = await call.enqueue(number)
            except DuplicateJobError as exc:
                print(json.dumps({"duplicate_of": exc.job_id}), flush=True)
            else:
                answer = {"id": handle.id, "deduplicated": handle.deduplicated}
                print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    anyio.run(race, sys.argv[1], sys.argv[2], int(sys.argv[3]))
