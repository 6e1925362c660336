"""Concurrent producers on Redis: many tasks enqueueing at once, as a web server's handlers do.

``--producers`` tasks (100) share ``--n`` jobs (10,000): each awaits one
enqueue at a time, one job per call, with no worker running; the clock runs
from the first call to the last reply. Reports jobs/s and the latency of one
enqueue call (p50/p99/max, ms). ``--system asyncjobs`` drives asyncjobs'
Redis store through ``_asyncjobs.AsyncJobsAdapter`` (a ``role="enqueue"``
runtime, ``await noop.enqueue(i)``); ``--system saq`` drives SAQ through
``saq_redis.SaqAdapter`` (``await queue.enqueue("noop", i=i)``), so run it with
SAQ's interpreter::

    python benchmarks/systems/asyncjobs_redis_concurrent.py --redis-url redis://127.0.0.1:6379/0
    benchmarks/.envs/saq/bin/python benchmarks/systems/asyncjobs_redis_concurrent.py \\
        --system saq --redis-url redis://127.0.0.1:6379/0

Both flush the database first. Prints one line ``BENCH_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from _common import describe, emit, latency_summary

WARMUP = 200  # enqueues before the clock starts: connections made, scripts cached


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--system", choices=("asyncjobs", "saq"), default="asyncjobs")
    p.add_argument("--n", type=int, default=10_000, help="jobs in all")
    p.add_argument("--producers", type=int, default=100, help="tasks enqueueing at once")
    p.add_argument("--concurrency", type=int, default=10, help="the queue's limit (unused here)")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    p.add_argument("--workdir", default=".")
    p.add_argument("--timeout", type=float, default=600.0)
    return p.parse_args(argv)


def make_adapter(system: str) -> Any:
    if system == "saq":
        from saq_redis import SaqAdapter

        return SaqAdapter()
    from _asyncjobs import AsyncJobsAdapter

    return AsyncJobsAdapter("redis")


async def produce(adapter: Any, n: int, producers: int) -> dict[str, Any]:
    latencies: list[float] = []
    next_item = iter(range(WARMUP, WARMUP + n))

    async def producer() -> None:
        record = latencies.append
        clock = time.perf_counter
        for i in next_item:  # one shared iterator: the producers split the jobs
            sent = clock()
            await adapter.enqueue(i)
            record(clock() - sent)

    for i in range(WARMUP):
        await adapter.enqueue(i)
    started = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - started
    return {"elapsed_s": elapsed, "throughput": n / elapsed, **latency_summary(latencies)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    adapter = make_adapter(args.system)
    setup = argparse.Namespace(**vars(args))
    await adapter.setup(setup)
    try:
        result = await asyncio.wait_for(produce(adapter, args.n, args.producers), args.timeout)
    finally:
        await adapter.teardown()
    return {
        "ok": True,
        "system": adapter.name,
        "workload": "enqueue_concurrent",
        "n": args.n,
        "producers": args.producers,
        "versions": dict(adapter.versions),
        **result,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if not args.redis_url:
        sys.exit("give --redis-url (or BENCH_REDIS_URL): the database is flushed first")
    try:
        result = asyncio.run(run(args))
    except Exception as exc:  # one result line either way, as the other scripts do
        result = {"ok": False, "error": describe(exc)}
    emit(result)


if __name__ == "__main__":
    main()
