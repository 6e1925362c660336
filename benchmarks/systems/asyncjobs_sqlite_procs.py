"""asyncjobs alone: drain one SQLite file with several worker processes (section (f)).

The parent fills the file through a ``role="enqueue"`` runtime, starts
``--procs`` children (each a ``role="worker"`` runtime with the same queue
limit), waits until every child has imported everything and is ready, then
says "go" to all of them at once: that is the start time. Each child records
the wall-clock time of every handler start; the parent polls
``runtime.queue_stats()`` until all jobs are complete, stops the children and
reports N / (last handler start - go), plus handler runs beyond N (an
at-least-once duplicate count that should be 0 without crashes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from _common import describe, emit, fresh_path, peak_rss_mb, version_of

import asyncjobs
from asyncjobs import JobRuntime, JobState
from asyncjobs.backends import SQLiteBackend

FILL_CHUNK = 1_000


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--procs", type=int, default=3)
    p.add_argument("--workdir", default=".")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--child", help=argparse.SUPPRESS)  # the database path, in a child
    return p.parse_args(argv)


def make_runtime(
    path: str, concurrency: int, role: str, hits: list[tuple[int, float]]
) -> JobRuntime:
    runtime = JobRuntime(
        backend=SQLiteBackend(path),
        queues={"default": concurrency},
        role=role,  # type: ignore[arg-type]
    )

    @runtime.job(name="noop")
    async def noop(i: int) -> None:
        hits.append((i, time.time()))

    return runtime


async def child(args: argparse.Namespace) -> None:
    hits: list[tuple[int, float]] = []
    runtime = make_runtime(args.child, args.concurrency, "worker", hits)
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    async with runtime:
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    report = {
        "ids": [i for i, _ in hits],
        "last": max((ts for _, ts in hits), default=0.0),
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(report), flush=True)


async def read_line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await proc.stdout.readline()).decode().strip()


async def write_line(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


async def parent(args: argparse.Namespace) -> dict[str, Any]:
    path = fresh_path(args.workdir, "asyncjobs_procs.db")
    filler = make_runtime(path, args.concurrency, "enqueue", [])
    noop = filler.function("noop")
    async with filler:
        for start in range(0, args.n, FILL_CHUNK):
            await filler.enqueue_many(
                [noop.call(i) for i in range(start, min(args.n, start + FILL_CHUNK))]
            )

    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            path,
            "--concurrency",
            str(args.concurrency),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # the report line lists every job id the child ran
        )
        for _ in range(args.procs)
    ]
    try:
        for proc in children:
            if (await read_line(proc)) != "ready":
                raise RuntimeError("a worker process failed to start")
        go = time.time()
        for proc in children:
            await write_line(proc, "go")
        deadline = time.monotonic() + args.timeout
        async with make_runtime(path, args.concurrency, "enqueue", []) as watcher:
            while True:
                stats = {s.queue: s for s in await watcher.queue_stats()}
                done = stats["default"].count(JobState.COMPLETE) if "default" in stats else 0
                if done >= args.n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {done}/{args.n} jobs complete after {args.timeout}s")
                await asyncio.sleep(0.05)
        reports = []
        for proc in children:
            await write_line(proc, "stop")
            reports.append(json.loads(await read_line(proc)))
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        for proc in children:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    ids = [i for report in reports for i in report["ids"]]
    last = max(report["last"] for report in reports)
    return {
        "elapsed_s": last - go,
        "throughput": args.n / (last - go),
        "duplicates": len(ids) - len(set(ids)),
        "per_process": [len(r["ids"]) for r in reports],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in reports),
    }


def main() -> None:
    args = parse()
    if args.child:
        asyncio.run(child(args))
        return
    result: dict[str, Any] = {
        "system": "asyncjobs-sqlite",
        "workload": "sqlite_procs",
        "n": args.n,
        "procs": args.procs,
        "versions": version_of("asyncjobs", "aiosqlite"),
        "python": sys.version.split()[0],
    }
    result["versions"]["asyncjobs-from"] = os.path.dirname(os.path.dirname(asyncjobs.__file__))
    try:
        result.update(asyncio.run(parent(args)))
        result["ok"] = True
    except Exception as exc:
        result.update(ok=False, error=describe(exc))
    emit(result)


if __name__ == "__main__":
    main()
