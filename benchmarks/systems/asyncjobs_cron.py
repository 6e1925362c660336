"""asyncjobs alone: what 10,000 cron schedules cost (section (f)).

One runtime (``--store`` memory or sqlite), one job, ``--n`` schedules
declared with ``runtime.cron(expr, name=..., args=(i,))`` on it, all with the
same expression: a fixed second a few seconds ahead, so they all fire once in
the window and not again for a minute. Reports:

- ``register_s``: declaring the schedules (the decorator calls);
- ``start_s``: ``async with runtime`` (stores every schedule) until it returns;
- ``fire_s``: from the common due time (or the end of start-up, when that
  is later) until the last of the N handlers ran;
- ``idle_cpu_pct``: CPU this process used over an idle window afterwards
  (nothing due for ~a minute), as % of one core;
- ``rss_mb``: RSS at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import sys
import time
from typing import Any

from _common import RECORDER, describe, emit, fresh_path, rss_mb, version_of

import asyncjobs
from asyncjobs import CronTrigger, JobRuntime


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--lead", type=float, default=4.0, help="seconds from start to the fire time")
    p.add_argument("--idle", type=float, default=3.0, help="idle window for the CPU measurement")
    p.add_argument("--workdir", default=".")
    p.add_argument("--timeout", type=float, default=600.0)
    return p.parse_args(argv)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fire_expression(lead: float) -> tuple[str, float]:
    """A cron expression that fires once about *lead* s from now and then not for a minute."""
    now = dt.datetime.now(dt.UTC)
    second = (now + dt.timedelta(seconds=lead)).second
    for expr in (f"{second} * * * * *", f"* * * * * {second}"):  # seconds leading or trailing
        trigger = CronTrigger(expr)
        first = trigger.next_after(now)
        assert first is not None
        following = trigger.next_after(first)
        if following is not None and (following - first).total_seconds() >= 30:
            return expr, first.timestamp()
    raise RuntimeError("could not build a once-a-minute cron expression")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend: Any
    if args.store == "memory":
        from asyncjobs.backends import MemoryBackend

        backend = MemoryBackend()
    else:
        from asyncjobs.backends import SQLiteBackend

        backend = SQLiteBackend(fresh_path(args.workdir, "asyncjobs_cron.db"))
    runtime = JobRuntime(backend=backend, queues={"default": args.concurrency})

    @runtime.job(name="tick")
    async def tick(i: int) -> None:
        RECORDER.hit(i)

    expr, due = fire_expression(args.lead)
    out: dict[str, Any] = {"expression": expr}
    t0 = time.perf_counter()
    for i in range(args.n):
        runtime.cron(expr, name=f"s{i}", args=(i,))(tick)
    out["register_s"] = time.perf_counter() - t0
    RECORDER.expect(args.n)
    t0 = time.perf_counter()
    async with runtime:
        out["start_s"] = time.perf_counter() - t0
        # A start slower than --lead fires late (misfire policy "once"): time from the later one.
        fire_from = max(due, time.time())
        out["late_start"] = fire_from > due
        await RECORDER.wait(args.timeout)
        out["fire_s"] = max(RECORDER.wall.values()) - fire_from
        out["fire_throughput"] = args.n / out["fire_s"]
        await asyncio.sleep(0.5)  # let the last outcomes settle
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(args.idle)
        out["idle_cpu_pct"] = 100 * (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        out["rss_mb"] = rss_mb()
    return out


def main() -> None:
    args = parse()
    result: dict[str, Any] = {
        "system": f"asyncjobs-{args.store}",
        "workload": "cron",
        "n": args.n,
        "versions": version_of("asyncjobs"),
        "python": sys.version.split()[0],
    }
    result["versions"]["asyncjobs-from"] = os.path.dirname(os.path.dirname(asyncjobs.__file__))
    try:
        result.update(asyncio.run(run(args)))
        result["ok"] = True
    except Exception as exc:
        result.update(ok=False, error=describe(exc))
    emit(result)


if __name__ == "__main__":
    main()
