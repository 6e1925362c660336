"""What flow control costs when it does not bind, and how closely a rate limit is held.

Two measurements, on each store (memory; a SQLite file in a temp dir with the
default ``SQLiteBackend``; Redis on a throwaway ``redis-server`` started here,
AOF on with ``appendfsync everysec``; PostgreSQL on a throwaway server started
here, ``fsync`` on, on loopback, with the default ``PostgresBackend``; both
servers as ``run.py`` starts them, with its code):

1. **Drain**: ``--n`` no-op jobs (default 5,000) are enqueued beforehand by a
   ``role="enqueue"`` runtime (``enqueue_many`` in chunks of 1,000; timed
   apart, as "enqueue"), then a worker runtime (``role="all"``) is entered on
   the same backend: jobs/s from just before entering it to the last
   handler's first line. Each variant carries a control that is present but
   does not bind, and is compared with "plain" (``Queue(concurrency=10)``)
   of the same run: weighted and strict pools (two queues, jobs on one,
   ``max_concurrency=10``), ``global_concurrency=1000``,
   ``rate_limit=RateLimit(10**6, per=1)``, ``partition_concurrency=1000``
   over 100 partitions, a job-level ``rate_limit``, 100 partitions on a plain
   queue (the round-robin order alone), and a unique key per job (which
   changes the enqueue too). The issue's target: each control costs under
   10% of plain drain. Also printed: the enqueue jobs/s, and the worker
   process's CPU time per 1,000 jobs drained (``process_time``, all threads),
   which other load on the machine disturbs less than the wall clock.
2. **Rate limit**: ``Queue(concurrency=10, rate_limit=RateLimit(200, per=1))``
   and ``--rate-n`` jobs (default 1,000) drained the same way. A sliding
   window lets ``limit`` jobs start at once, then one more ``per`` after each
   earlier start, so N jobs take about ``(N / limit - 1) * per``; the
   "steady" rate leaves the first window's burst out: ``limit`` over the mean
   time from each start to the start ``limit`` later (``per`` at best),
   expected a bit under the limit. Also printed: N over the whole drain, and the busiest 1-second
   window of claims by the store's clock (the clock the limit is judged by;
   the claim time is the job's lease expiry minus the lease) and of handler
   starts timed in the worker. Both should be <= the limit; handler starts
   follow their claim by a varying fraction of a millisecond, so two claim
   batches just over 1 s apart can start just under 1 s apart, which counts
   one batch (10) more.

Every (store, variant, repetition) runs in a fresh process under this
interpreter with the repository on ``PYTHONPATH``; repetitions run
repetition-major (every run once, then every run again) so a slow spell hits
all alike. Each SQLite run gets a new file, each Redis run a flushed server,
each PostgreSQL run a database dropped and created again (``run.py``'s
``PostgresServer.fresh``), so no run sees another's jobs. Tables show the median and the min-max across repetitions; "vs
plain" is the variant's median over plain's median on the same store.

Usage (from the repository root)::

    python benchmarks/flow_control.py                   # N=5,000, 3 repetitions (2-3 min)
    python benchmarks/flow_control.py --n 1000 --repeat 1 --stores memory
    python benchmarks/flow_control.py --stores postgres  # needs initdb/postgres installed
    python benchmarks/flow_control.py --variants plain,rate_limit --no-rate
    python benchmarks/flow_control.py --src /tmp/snap   # a `git archive HEAD` snapshot

Not a timed test: numbers depend on the machine and its load; compare
variants of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT_PREFIX = "FLOW_RESULT "
STORES = ["memory", "sqlite", "redis", "postgres"]
# name -> what the table says it is
VARIANTS: dict[str, str] = {
    "plain": 'queues={"default": Queue(concurrency=10)}',
    "weighted": 'Queue(weight=6) + "other": Queue(weight=1), max_concurrency=10',
    "strict": 'the same, queue_selection="strict"',
    "global_concurrency": "Queue(concurrency=10, global_concurrency=1000)",
    "rate_limit": "Queue(concurrency=10, rate_limit=RateLimit(10**6, per=1))",
    "partition_concurrency": "Queue(concurrency=10, partition_concurrency=1000), 100 partitions",
    "job_rate_limit": "@runtime.job(rate_limit=RateLimit(10**6, per=1))",
    "partitions": "plain queue, jobs over 100 partitions (no limit)",
    "unique_keys": "plain queue, options(key=<own key>) per job",
}
RATE_LIMIT = 200
CHUNK = 1_000
PARTITIONS = 100


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=5_000, help="jobs per drain run (5,000)")
    p.add_argument("--rate-n", type=int, default=1_000, help="jobs per rate-limit run (1,000)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    p.add_argument("--stores", default=",".join(STORES), help="memory,sqlite,redis,postgres")
    p.add_argument("--variants", default=",".join(VARIANTS), help="drain variants (all)")
    p.add_argument("--no-rate", action="store_true", help="skip the rate-limit measurement")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per run (120)")
    p.add_argument("--src", default=str(ROOT), help="the asyncjobs checkout to measure (this one)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--redis-url", help=argparse.SUPPRESS)
    p.add_argument("--postgres-url", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- the child: one (store, variant) run ------------------------------------------------


def busiest_window(starts: list[float], width: float = 1.0) -> int:
    """The most starts in any half-open interval of *width* seconds."""
    best = first = 0
    for last, moment in enumerate(starts):
        while moment - starts[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best


async def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    import asyncjobs
    from asyncjobs import JobRuntime, Queue, RateLimit, current_job
    from asyncjobs.backends import Backend

    backend: Backend
    if args.store == "memory":
        from asyncjobs.backends import MemoryBackend

        backend = MemoryBackend()
    elif args.store == "sqlite":
        from asyncjobs.backends import SQLiteBackend

        backend = SQLiteBackend(args.db)
    elif args.store == "postgres":
        from asyncjobs.backends import PostgresBackend

        backend = PostgresBackend(args.postgres_url)  # a fresh database per run
    else:
        from asyncjobs.backends import RedisBackend

        backend = RedisBackend(args.redis_url)

    variant, n = args.variant, args.n
    runtime_kwargs: dict[str, Any] = {"queues": {"default": Queue(concurrency=10)}}
    if variant in ("weighted", "strict"):
        runtime_kwargs = {
            "queues": {"default": Queue(weight=6), "other": Queue(weight=1)},
            "max_concurrency": 10,
            "queue_selection": variant,
        }
    elif variant == "global_concurrency":
        runtime_kwargs["queues"] = {"default": Queue(concurrency=10, global_concurrency=1000)}
    elif variant == "rate_limit":
        runtime_kwargs["queues"] = {
            "default": Queue(concurrency=10, rate_limit=RateLimit(10**6, per=1))
        }
    elif variant == "partition_concurrency":
        runtime_kwargs["queues"] = {"default": Queue(concurrency=10, partition_concurrency=1000)}
    elif variant == "rate_200":
        runtime_kwargs["queues"] = {
            "default": Queue(concurrency=10, rate_limit=RateLimit(RATE_LIMIT, per=1))
        }
    job_rate = RateLimit(10**6, per=1) if variant == "job_rate_limit" else None

    starts: list[float] = []
    claims: list[float] = []  # store clock, from the lease (rate_200 only)
    lease = 30.0
    done = anyio.Event()

    def make_runtime(role: str) -> tuple[JobRuntime, Any]:
        runtime = JobRuntime(backend=backend, role=role, lease=lease, **runtime_kwargs)  # type: ignore[arg-type]

        @runtime.job(name="noop", rate_limit=job_rate)
        async def noop(i: int) -> None:
            starts.append(time.perf_counter())
            if variant == "rate_200":
                expires = current_job().job.lease_expires_at
                claims.append(expires - lease if expires is not None else float("nan"))
            if len(starts) == n:
                done.set()

        return runtime, noop

    def call(job: Any, i: int) -> Any:
        if variant in ("partitions", "partition_concurrency"):
            return job.options(partition=f"p{i % PARTITIONS}").call(i)
        if variant == "unique_keys":
            return job.options(key=f"k{i}").call(i)
        return job.call(i)

    enqueuer, job = make_runtime("enqueue")
    async with enqueuer:
        began = time.perf_counter()
        for low in range(0, n, CHUNK):
            await enqueuer.enqueue_many([call(job, i) for i in range(low, min(n, low + CHUNK))])
        enqueue_s = time.perf_counter() - began

    worker, _ = make_runtime("all")
    cpu_began = time.process_time()
    began = time.perf_counter()
    async with worker:
        with anyio.fail_after(args.timeout):
            await done.wait()
        drain_cpu_s = time.process_time() - cpu_began
        drain_s = starts[n - 1] - began
    result: dict[str, Any] = {
        "enqueue_s": enqueue_s,
        "drain_s": drain_s,
        "drain_cpu_s": drain_cpu_s,  # this process, all threads (aiosqlite's too)
        "runs": len(starts),  # more than n: a job ran twice
        "src": str(Path(asyncjobs.__file__).parent.parent),
    }
    if variant == "rate_200":
        result["first_start_s"] = starts[0] - began
        gaps = [starts[k] - starts[k - RATE_LIMIT] for k in range(RATE_LIMIT, n)]
        result["window_gap_s"] = statistics.fmean(gaps) if gaps else None
        result["busiest_1s"] = busiest_window(starts)
        # The store judges the window by its clock at claim time; a handler starts a
        # little later, and by a different amount for each job.
        result["busiest_claims_1s"] = busiest_window(sorted(claims))
    return result


def child(args: argparse.Namespace) -> None:
    import anyio

    result = anyio.run(run_child, args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# -- the parent -------------------------------------------------------------------------


def run_once(
    args: argparse.Namespace,
    store: str,
    variant: str,
    n: int,
    workdir: Path,
    redis: Any,
    postgres: Any,
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--store",
        store,
        "--variant",
        variant,
        "--n",
        str(n),
        "--timeout",
        str(args.timeout),
    ]
    db = workdir / f"{store}-{variant}.db"
    if store == "sqlite":
        for suffix in ("", "-wal", "-shm", "-lock"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        command += ["--db", str(db)]
    if store == "redis":
        redis.flush()
        command += ["--redis-url", redis.url]
    if store == "postgres":
        command += ["--postgres-url", postgres.fresh()]  # dropped and created again
    env = {**os.environ, "PYTHONPATH": args.src, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=args.timeout + 60
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout + 60:.0f} s"}
    finally:
        for suffix in ("", "-wal", "-shm", "-lock"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:200]}"}
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    if "Traceback" in proc.stderr:
        result["warning"] = "stderr held a traceback"
    return result


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``median (min-max)``, or the one value."""
    if not values:
        return "n/a"
    middle = fmt.format(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def drain_tables(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    stores: list[str],
    variants: list[str],
    n: int,
) -> str:
    out: list[str] = []
    tables = [
        ("Drain", "drain_s", "jobs/s", "median / plain's median"),
        ("Enqueue beforehand (not part of the drain)", "enqueue_s", "jobs/s", "median / plain's"),
        (
            "Drain CPU: the worker process's CPU time (all threads) per 1,000 jobs, less "
            "affected by other load on the machine",
            "drain_cpu_s",
            "CPU ms",
            "plain's median / median",
        ),
    ]
    for title, key, unit, ratio_is in tables:
        out.append(f"\n### {title}: N={n:,}, median (min-max); vs plain = {ratio_is}\n")
        out.append("| variant | " + " | ".join(f"{s} {unit} | vs plain" for s in stores) + " |")
        out.append("|---|" + "---:|---:|" * len(stores))

        def values(store: str, variant: str, key: str = key) -> list[float]:
            runs = [r for r in results.get((store, variant), []) if "error" not in r]
            if key == "drain_cpu_s":
                return [1000 * r[key] / (n / 1000) for r in runs]
            return [n / r[key] for r in runs]

        for variant in variants:
            cells = []
            for store in stores:
                mine, plain = values(store, variant), values(store, "plain")
                if not mine:
                    errors = {r.get("error", "") for r in results.get((store, variant), [])}
                    cells += [f"error: {'; '.join(sorted(errors))}", ""]
                    continue
                ratio = None
                if plain:
                    ratio = statistics.median(mine) / statistics.median(plain)
                    if key == "drain_cpu_s":
                        ratio = 1 / ratio  # as with jobs/s: below 1 costs more
                shown = "" if ratio is None or variant == "plain" else f"{ratio:.2f}"
                if key != "enqueue_s" and shown and ratio is not None and ratio < 0.9:
                    shown = f"**{shown}**"  # over the 10% target
                fmt = "{:,.1f}" if key == "drain_cpu_s" else "{:,.0f}"
                cells += [spread(mine, fmt), shown]
            out.append(f"| {variant} | " + " | ".join(cells) + " |")
    out.append("\nBold: a control costing more than 10% of plain's drain. Variants:\n")
    out += [f"- {name}: `{what}`" for name, what in VARIANTS.items() if name in variants]
    notes = []
    for (store, variant), runs in sorted(results.items()):
        for r in runs:
            if r.get("runs", 0) > n and variant != "rate_200":
                notes.append(f"- {store} {variant}: {r['runs'] - n} handler runs beyond N")
            if "warning" in r:
                notes.append(f"- {store} {variant}: {r['warning']}")
    return "\n".join(out + notes)


def rate_table(
    results: dict[tuple[str, str], list[dict[str, Any]]], stores: list[str], n: int
) -> str:
    out = [
        f"\n### Rate limit: `Queue(concurrency=10, rate_limit=RateLimit({RATE_LIMIT}, per=1))`, "
        f"N={n:,}, median (min-max)\n",
        "| store | drain s | N / drain, jobs/s | steady jobs/s | steady / limit "
        "| busiest 1 s of handler starts | <= limit | busiest 1 s of claims (store clock) |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for store in stores:
        runs = [r for r in results.get((store, "rate_200"), []) if "error" not in r]
        if not runs:
            errors = {r.get("error", "") for r in results.get((store, "rate_200"), [])}
            out.append(f"| {store} | error: {'; '.join(sorted(errors))} | | | | | | |")
            continue
        steady = [RATE_LIMIT / r["window_gap_s"] for r in runs if r["window_gap_s"]]
        busiest = [r["busiest_1s"] for r in runs]
        out.append(
            f"| {store} | {spread([r['drain_s'] for r in runs], '{:.2f}')} "
            f"| {spread([n / r['drain_s'] for r in runs])} | {spread(steady)} "
            f"| {spread([s / RATE_LIMIT for s in steady], '{:.3f}')} "
            f"| {spread([float(b) for b in busiest])} "
            f"| {'yes' if max(busiest) <= RATE_LIMIT else '**no**'} "
            f"| {spread([float(r['busiest_claims_1s']) for r in runs])} |"
        )
    out.append(
        f"\nsteady = {RATE_LIMIT} / the mean time from each start to the one {RATE_LIMIT} "
        "later (1 s at best): the first window's jobs start at once. Handler starts are "
        "timed in the worker (perf_counter); claims are the store's clock at claim time "
        "(the job's lease expiry minus the lease), the clock the limit is judged by."
    )
    return "\n".join(out)


def describe(src: str) -> str:
    """The commit of *src* and whether its ``asyncjobs/`` has uncommitted changes."""
    git = ["git", "-C", src]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return src
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "asyncjobs"]).returncode
    return f"{src} at {head.stdout.strip()}" + (" + uncommitted changes" if dirty else "")


def main(args: argparse.Namespace) -> None:
    stores = [s for s in args.stores.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(stores) - set(STORES) | set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown store or variant: {', '.join(sorted(unknown))}")
    plan = [(store, variant, args.n) for store in stores for variant in variants]
    if not args.no_rate:
        plan += [(store, "rate_200", args.rate_n) for store in stores]
    workdir = Path(tempfile.mkdtemp(prefix="asyncjobs-flow-"))
    sys.path.insert(0, str(HERE))
    from run import PostgresServer, RedisServer

    redis = RedisServer(workdir / "redis") if "redis" in stores else None
    postgres = PostgresServer() if "postgres" in stores else None
    results: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    started = time.monotonic()
    try:
        if redis is not None:
            redis.start()
        if postgres is not None:
            postgres.start()  # initdb and start: tests/postgres_server.py
        for rep in range(args.repeat):
            for store, variant, n in plan:
                result = run_once(args, store, variant, n, workdir, redis, postgres)
                results[store, variant].append(result)
                shown = result.get("error") or f"drain {result['drain_s']:.2f} s"
                print(f"  [{rep + 1}/{args.repeat}] {store:8} {variant:22} {shown}", flush=True)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    version = sys.version.split()[0]
    servers = f", redis-server {redis.version}" if redis is not None else ""
    servers += f", PostgreSQL {postgres.version}" if postgres is not None else ""
    ran = {r["src"] for runs in results.values() for r in runs if "src" in r}
    print(
        f"\n## Flow control: {args.repeat} repetitions, Python {version}{servers}, "
        f"{os.cpu_count()} CPUs, {minutes:.1f} min\n\nasyncjobs: {describe(args.src)}"
        + ("" if ran <= {str(Path(args.src).resolve())} else f" (imported from {sorted(ran)})")
    )
    if variants:
        print(drain_tables(results, stores, variants, args.n))
    if not args.no_rate:
        print(rate_table(results, stores, args.rate_n))


if __name__ == "__main__":
    arguments = parse()
    if arguments.child:
        child(arguments)
    else:
        main(arguments)
