"""SQLite under write contention: many processes enqueueing and working one file.

Starts ``--procs`` worker processes (default 8) and ``--readers`` reader
processes (default 2) on one SQLite file, for ``--seconds`` (default 15). Each
worker, like a process running ``JobRuntime(role="all")``, enqueues jobs one
awaited call at a time (each call timed) and works them: claim up to
``--batch``, settle them complete, and every third of ``--lease`` heartbeat the
jobs it holds and sweep expired leases. Each reader lists and counts jobs in a
loop, as a dashboard would. It talks to the store directly (``SQLiteBackend``
and the records of ``asyncjobs._models``), so it measures the store, not the
dispatcher.

It prints one table: enqueue latency p50/p99/max, claims per second, jobs
claimed more than once (a lease lost without a crash: must be 0), and the
errors callers saw. ``--hold S --hold-at T`` also starts a process that holds
SQLite's write lock (``BEGIN IMMEDIATE``) for S seconds, T seconds in.

Usage (from the repository root; ``--src`` measures another checkout, e.g. one
made with ``git worktree add /tmp/old HEAD``)::

    python benchmarks/sqlite_contention.py
    python benchmarks/sqlite_contention.py --src /tmp/old --label old
    python benchmarks/sqlite_contention.py --hold 20 --hold-at 3 --seconds 30

Not a timed test: numbers depend on the machine and its load; compare runs
made one after the other on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--procs", type=int, default=8, help="worker processes (8)")
    p.add_argument("--readers", type=int, default=2, help="reader processes (2)")
    p.add_argument("--seconds", type=float, default=15.0, help="how long to run (15)")
    p.add_argument("--batch", type=int, default=10, help="jobs per claim (10)")
    p.add_argument("--lease", type=float, default=30.0, help="lease seconds (30)")
    p.add_argument("--synchronous", default="FULL", help="FULL (default) or NORMAL")
    p.add_argument("--hold", type=float, default=0.0, help="hold the write lock this long")
    p.add_argument("--hold-at", type=float, default=3.0, help="... starting this many s in")
    p.add_argument("--src", default=str(HERE.parent), help="the asyncjobs checkout to measure")
    p.add_argument("--label", default="", help="a name for the table row")
    p.add_argument("--dir", default=None, help="where the database goes (a temp dir)")
    p.add_argument("--child", choices=["worker", "reader"], help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- children -------------------------------------------------------------------------


def _error_name(exc: BaseException) -> str:
    text = str(exc)
    for marker in (" failed: ", " gave up "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return f"{type(exc).__name__}: {text[:70]}"


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    from asyncjobs._clock import SystemClock
    from asyncjobs._models import NewJob, Outcome, OutcomeKind
    from asyncjobs.backends.sqlite import SQLiteBackend

    clock = SystemClock()
    backend = SQLiteBackend(args.db, synchronous=args.synchronous)
    await backend.open(clock)
    latencies: list[float] = []
    claimed: list[str] = []
    errors: Counter[str] = Counter()
    held: dict[str, str] = {}
    settled: set[str] = set()
    lost: set[str] = set()
    stop = asyncio.Event()
    worker_id = f"w{args.index}-{os.getpid()}"

    async def enqueue_loop() -> None:
        while not stop.is_set():
            now = clock.now()
            job = NewJob(
                id=uuid.uuid4().hex,
                name="bench.noop",
                queue="default",
                payload=b"{}",
                due_at=now,
                enqueued_at=now,
            )
            started = time.perf_counter()
            try:
                await backend.enqueue([job])
            except Exception as exc:
                errors["enqueue " + _error_name(exc)] += 1
            else:
                latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0)

    async def work_loop() -> None:
        while not stop.is_set():
            try:
                jobs = await backend.claim("default", args.batch, worker_id, args.lease)
            except Exception as exc:
                errors["claim " + _error_name(exc)] += 1
                await asyncio.sleep(0.01)
                continue
            if not jobs:
                await backend.wait_for_work(["default"], clock.now() + 0.05)
                continue
            for job in jobs:
                assert job.lease_token is not None
                held[job.id] = job.lease_token
                claimed.append(job.id)
            outcomes = [
                Outcome(job_id=job.id, lease_token=held[job.id], kind=OutcomeKind.COMPLETE)
                for job in jobs
            ]
            try:
                refused = await backend.settle(outcomes)
            except Exception as exc:
                errors["settle " + _error_name(exc)] += 1
                continue  # the heartbeat keeps the leases; a later batch settles them
            if refused:
                errors["settle refused (lease lost)"] += len(refused)
            for job in jobs:
                held.pop(job.id, None)
                if job.id not in refused:
                    settled.add(job.id)

    async def heartbeat_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.lease / 3)
            if stop.is_set():
                return
            try:
                if held:
                    # A job settled while its heartbeat was on the way is "lost" too:
                    # counted at the end, only if it was never settled.
                    lost.update((await backend.heartbeat(dict(held), args.lease)).lost)
                await backend.recover_expired()
            except Exception as exc:
                errors["heartbeat " + _error_name(exc)] += 1

    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # go
    tasks = [asyncio.create_task(f()) for f in (enqueue_loop, work_loop, heartbeat_loop)]
    await loop.run_in_executor(None, sys.stdin.readline)  # stop
    stop.set()
    await asyncio.gather(*tasks)
    await backend.aclose()
    if lost - settled:
        errors["heartbeat: lease lost"] += len(lost - settled)
    return {"latencies": latencies, "claimed": claimed, "errors": errors}


async def reader(args: argparse.Namespace) -> dict[str, Any]:
    from asyncjobs._clock import SystemClock
    from asyncjobs.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(args.db, synchronous=args.synchronous)
    await backend.open(SystemClock())
    errors: Counter[str] = Counter()
    reads = 0
    stop = asyncio.Event()

    async def read_loop() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                await backend.list_jobs(limit=100)
                await backend.queue_stats()
                reads += 2
            except Exception as exc:
                errors["read " + _error_name(exc)] += 1
            await asyncio.sleep(0.01)

    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    task = asyncio.create_task(read_loop())
    await loop.run_in_executor(None, sys.stdin.readline)
    stop.set()
    await task
    await backend.aclose()
    return {"reads": reads, "errors": errors}


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.src)
    from asyncjobs.backends.sqlite import UnsafeSQLiteWarning

    warnings.simplefilter("ignore", UnsafeSQLiteWarning)  # many connections on purpose
    report = asyncio.run(worker(args) if args.child == "worker" else reader(args))
    print("REPORT " + json.dumps(report), flush=True)


# -- the parent -----------------------------------------------------------------------

_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=600)
time.sleep(float(sys.argv[2]))
conn.execute("BEGIN IMMEDIATE")
print(f"holding the write lock for {sys.argv[3]} s", file=sys.stderr, flush=True)
time.sleep(float(sys.argv[3]))
conn.execute("ROLLBACK")
"""


def spawn(args: argparse.Namespace, kind: str, index: int, db: str) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--db",
        db,
        "--index",
        str(index),
        "--src",
        args.src,
        "--lease",
        str(args.lease),
        "--batch",
        str(args.batch),
        "--synchronous",
        args.synchronous,
    ]
    env = {**os.environ, "PYTHONPATH": args.src}
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(args: argparse.Namespace) -> None:
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="asyncjobs-contention-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = str(workdir / "jobs.db")
    for suffix in ("", "-wal", "-shm", "-lock"):
        Path(db + suffix).unlink(missing_ok=True)
    procs = [spawn(args, "worker", i, db) for i in range(args.procs)]
    procs += [spawn(args, "reader", i, db) for i in range(args.readers)]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"a child did not start: {line!r}")
    holder = None
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    if args.hold > 0:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, db, str(args.hold_at), str(args.hold)]
        )
    time.sleep(args.seconds)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
    reports: list[dict[str, Any]] = []
    for proc in procs:
        assert proc.stdout is not None
        out, _ = proc.communicate(timeout=600)
        lines = [line for line in out.splitlines() if line.startswith("REPORT ")]
        if proc.returncode != 0 or not lines:
            reports.append({"errors": {f"process exited {proc.returncode}": 1}})
            continue
        reports.append(json.loads(lines[-1][len("REPORT ") :]))
    elapsed = time.perf_counter() - started
    if holder is not None:
        holder.wait(timeout=600)

    latencies: list[float] = [x for r in reports for x in r.get("latencies", [])]
    claims = Counter(i for r in reports for i in r.get("claimed", []))
    errors: Counter[str] = Counter()
    for r in reports:
        errors.update(r.get("errors", {}))
    reads = sum(r.get("reads", 0) for r in reports)
    twice = sum(n - 1 for n in claims.values() if n > 1)
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM asyncjobs_jobs GROUP BY state"))
    conn.close()

    label = args.label or Path(args.src).name
    hold = f", write lock held {args.hold:g} s" if args.hold else ""
    print(
        f"\n{args.procs} workers + {args.readers} readers on one file, {elapsed:.0f} s, "
        f"synchronous={args.synchronous}, claim batch {args.batch}, lease {args.lease:g} s{hold}\n"
    )
    print(
        "| code | enqueues | enqueue p50 ms | p99 ms | max ms | claims/s | reads/s "
        "| run twice | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {label} | {len(latencies):,} | {1000 * percentile(latencies, 0.5):.1f} "
        f"| {1000 * percentile(latencies, 0.99):.1f} | {1000 * max(latencies, default=0):.1f} "
        f"| {sum(claims.values()) / elapsed:,.0f} | {reads / elapsed:,.0f} | {twice} "
        f"| {sum(errors.values())} |"
    )
    if latencies:
        print(
            f"\nenqueue mean {1000 * statistics.fmean(latencies):.1f} ms; jobs by state: {states}"
        )
    for name, count in errors.most_common():
        print(f"- {count} x {name}")


if __name__ == "__main__":
    arguments = parse()
    if arguments.child:
        child(arguments)
    else:
        main(arguments)
