"""Shared harness for the per-system benchmark scripts (standard library only).

Every ``systems/<name>.py`` script runs in a fresh process, possibly under a
peer's own virtualenv, so this module must import nothing outside the
standard library. A script builds an adapter (async or sync) for its system
and hands it to :func:`main`; the workloads below drive every adapter the same
way, so "enqueue", "until the last handler ran" and "handler start minus due
time" mean the same thing for every system.

Output: exactly one line ``BENCH_RESULT {json}`` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol

RESULT_PREFIX = "BENCH_RESULT "

WORKLOADS = (
    "enqueue",
    "enqueue_bulk",
    "drain",
    "latency",
    "delayed",
    "rss",
    "enqueue_concurrent",
)


# -- measurements -------------------------------------------------------------


def proc_status_mb(field: str) -> float:
    """Read ``VmRSS``/``VmHWM`` (kB) from ``/proc/self/status`` as MB; fall back to getrusage."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    return proc_status_mb("VmHWM")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/max (and min) in milliseconds."""
    ordered = sorted(values_s)
    return {
        "p50_ms": percentile(ordered, 50) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": ordered[-1] * 1000 if ordered else float("nan"),
        "min_ms": ordered[0] * 1000 if ordered else float("nan"),
    }


def version_of(*dists: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "?"
    return out


class Recorder:
    """What every handler calls on its first line: ``recorder.hit(i)``.

    Records a ``perf_counter`` timestamp (same-process latency and drain) and
    a ``time.time`` timestamp (delayed precision against an epoch due time)
    per job, and signals when *target* distinct hits have arrived. Thread-safe
    so thread-pool workers (huey) use the very same code path.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.target = -1
        self.perf: dict[int, float] = {}
        self.wall: dict[int, float] = {}
        self.last_perf = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._done = asyncio.Event()

    def expect(self, target: int) -> None:
        """Start counting towards *target* hits; call from the event loop that will :meth:`wait`."""
        with self._lock:
            self.count = 0
            self.target = target
            self.perf.clear()
            self.wall.clear()
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self._done = asyncio.Event()

    def hit(self, i: int) -> None:
        now = time.perf_counter()
        wall = time.time()
        with self._lock:
            if i in self.perf:  # a redelivery: keep the first start
                return
            self.perf[i] = now
            self.wall[i] = wall
            self.count += 1
            self.last_perf = now
            finished = self.count == self.target
        if finished and self._loop is not None:
            if threading.get_ident() == self._loop_thread:
                self._done.set()
            else:
                self._loop.call_soon_threadsafe(self._done.set)

    async def wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"only {self.count}/{self.target} handlers ran within {timeout:.0f}s"
            ) from None


RECORDER = Recorder()


class NotApplicable(Exception):
    """Raised by an adapter for a workload the system cannot do; the message says why."""


# -- adapters -----------------------------------------------------------------


class AsyncAdapter(Protocol):
    """One system, driven from an asyncio event loop.

    ``setup`` builds the app and registers a handler whose first line is
    ``RECORDER.hit(i)``; the worker is not running until ``start_worker``.
    ``na`` maps the workloads the system cannot do to the reason.
    """

    @property
    def name(self) -> str: ...
    @property
    def versions(self) -> Mapping[str, str]: ...
    @property
    def na(self) -> Mapping[str, str]: ...

    async def setup(self, args: argparse.Namespace) -> None: ...
    async def enqueue(self, i: int) -> None: ...
    async def enqueue_bulk(self, items: range) -> None: ...
    async def enqueue_at(self, i: int, due_epoch: float) -> None: ...
    async def start_worker(self) -> None: ...
    async def stop_worker(self) -> None: ...
    async def teardown(self) -> None: ...
    def store_mb(self) -> float | None: ...


class SyncAdapter(Protocol):
    """The same contract for a synchronous library (huey, raw sqlite3)."""

    @property
    def name(self) -> str: ...
    @property
    def versions(self) -> Mapping[str, str]: ...
    @property
    def na(self) -> Mapping[str, str]: ...

    def setup(self, args: argparse.Namespace) -> None: ...
    def enqueue(self, i: int) -> None: ...
    def enqueue_bulk(self, items: range) -> None: ...
    def enqueue_at(self, i: int, due_epoch: float) -> None: ...
    def start_worker(self) -> None: ...
    def stop_worker(self) -> None: ...
    def teardown(self) -> None: ...
    def store_mb(self) -> float | None: ...


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--n", type=int, default=10_000, help="jobs for enqueue/drain/rss")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--latency-n", type=int, default=500)
    p.add_argument("--latency-interval", type=float, default=0.005)
    p.add_argument("--delayed-n", type=int, default=200)
    p.add_argument("--delayed-min", type=float, default=0.5)
    p.add_argument("--delayed-max", type=float, default=2.0)
    p.add_argument("--idle", type=float, default=0.5, help="seconds the worker idles first")
    p.add_argument("--producers", type=int, default=100, help="enqueue_concurrent: tasks at once")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    p.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", ""))
    p.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "."))
    p.add_argument("--timeout", type=float, default=600.0)
    return p.parse_args(argv)


def describe(exc: BaseException) -> str:
    """``Type: message`` of *exc*, or of the first leaf of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def _delays(args: argparse.Namespace) -> list[float]:
    """Evenly spread offsets in [min, max], shuffled with a fixed seed."""
    n = args.delayed_n
    span = args.delayed_max - args.delayed_min
    offsets = [args.delayed_min + span * k / max(1, n - 1) for k in range(n)]
    random.Random(42).shuffle(offsets)
    return offsets


# -- driver -------------------------------------------------------------------

#: how long latency and delayed runs wait for stragglers after the last enqueue
WAIT_SLACK = 60.0


async def _run(adapter: AsyncAdapter, args: argparse.Namespace) -> dict[str, Any]:
    w = args.workload
    if w in adapter.na:
        raise NotApplicable(adapter.na[w])
    await adapter.setup(args)
    out: dict[str, Any] = {}
    settings = getattr(adapter, "store_settings", None)
    if settings:
        out["store_settings"] = settings()
    try:
        if w == "enqueue":
            t0 = time.perf_counter()
            for i in range(args.n):
                await adapter.enqueue(i)
            out["elapsed_s"] = time.perf_counter() - t0
            out["throughput"] = args.n / out["elapsed_s"]
        elif w == "enqueue_bulk":
            t0 = time.perf_counter()
            await adapter.enqueue_bulk(range(args.n))
            out["elapsed_s"] = time.perf_counter() - t0
            out["throughput"] = args.n / out["elapsed_s"]
        elif w == "drain":
            await _fill(adapter, args.n)
            hook = getattr(adapter, "before_worker", None)
            if hook is not None:
                await hook()
            RECORDER.expect(args.n)
            t0 = time.perf_counter()
            await adapter.start_worker()
            await RECORDER.wait(args.timeout)
            out["elapsed_s"] = RECORDER.last_perf - t0
            out["throughput"] = args.n / out["elapsed_s"]
            out["peak_rss_mb"] = peak_rss_mb()
            await adapter.stop_worker()
        elif w == "latency":
            RECORDER.expect(args.latency_n)
            await adapter.start_worker()
            await asyncio.sleep(args.idle)
            sent: dict[int, float] = {}
            start = time.perf_counter()
            for i in range(args.latency_n):
                target = start + i * args.latency_interval
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[i] = time.perf_counter()
                await adapter.enqueue(i)
            await RECORDER.wait(WAIT_SLACK)
            out.update(latency_summary([RECORDER.perf[i] - sent[i] for i in sent]))
            await adapter.stop_worker()
        elif w == "delayed":
            RECORDER.expect(args.delayed_n)
            await adapter.start_worker()
            await asyncio.sleep(args.idle)
            due: dict[int, float] = {}
            for i, offset in enumerate(_delays(args)):
                # Due relative to this call, so a slow enqueue never makes a job due in the past.
                due[i] = time.time() + offset
                await adapter.enqueue_at(i, due[i])
            await RECORDER.wait(args.delayed_max + WAIT_SLACK)
            lateness = [RECORDER.wall[i] - due[i] for i in due]
            out.update(latency_summary(lateness))
            out["early"] = sum(1 for x in lateness if x < 0)
            await adapter.stop_worker()
        elif w == "enqueue_concurrent":
            out.update(await _produce(adapter, args.n, args.producers))
        elif w == "rss":
            before = rss_mb()
            store_before = adapter.store_mb()
            t0 = time.perf_counter()
            await _fill(adapter, args.n)
            out["elapsed_s"] = time.perf_counter() - t0
            out["rss_mb"] = rss_mb()
            out["rss_delta_mb"] = out["rss_mb"] - before
            store_after = adapter.store_mb()
            if store_after is not None:
                out["store_mb"] = store_after - (store_before or 0.0)
    finally:
        await adapter.teardown()
    return out


FILL_CHUNK = 1_000
#: enqueue_concurrent: calls made before the clock starts (connections made, scripts cached)
PRODUCE_WARMUP = 200


async def _produce(adapter: AsyncAdapter, n: int, producers: int) -> dict[str, Any]:
    """*producers* tasks share *n* jobs, each awaiting one enqueue call at a time.

    What a web server's request handlers do: many coroutines enqueue at once,
    each waiting for its own call. The clock runs from the first timed call to
    the last reply; every call's own duration is recorded too. A synchronous
    library's enqueue (huey, the sqlite3 limit) is called directly in the
    coroutine, as an async app would, so it blocks the loop and its calls
    run one after another.
    """
    for i in range(PRODUCE_WARMUP):  # job ids above N: the timed jobs are 0..n-1
        await adapter.enqueue(n + i)
    latencies: list[float] = []
    items = iter(range(n))  # one shared iterator: the producers split the jobs

    async def producer() -> None:
        record = latencies.append
        clock = time.perf_counter
        for i in items:
            sent = clock()
            await adapter.enqueue(i)
            record(clock() - sent)

    t0 = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - t0
    return {
        "elapsed_s": elapsed,
        "throughput": n / elapsed,
        "producers": producers,
        **latency_summary(latencies),
    }


async def _fill(adapter: AsyncAdapter, n: int) -> None:
    """Enqueue *n* jobs untimed: bulk calls of ``FILL_CHUNK`` when the system has them, else one by one.

    Chunks, not one giant call, so "RSS with N queued" measures what the
    queued jobs hold, not the transient peak of building one huge batch.
    """
    if "enqueue_bulk" not in adapter.na:
        for start in range(0, n, FILL_CHUNK):
            await adapter.enqueue_bulk(range(start, min(n, start + FILL_CHUNK)))
    else:
        for i in range(n):
            await adapter.enqueue(i)


class SyncShim:
    """Drives a :class:`SyncAdapter` with the async driver: the same workload code for all.

    Its calls block the event loop, which only waits here: a sync library's
    workers are threads (huey) or run inline (the raw sqlite3 limit), and
    :class:`Recorder` wakes the loop thread-safely.
    """

    def __init__(self, inner: SyncAdapter) -> None:
        self.inner = inner
        self.name = inner.name
        self.versions = inner.versions
        self.na = inner.na
        settings = getattr(inner, "store_settings", None)
        if settings is not None:
            self.store_settings = settings

    async def setup(self, args: argparse.Namespace) -> None:
        self.inner.setup(args)

    async def enqueue(self, i: int) -> None:
        self.inner.enqueue(i)

    async def enqueue_bulk(self, items: range) -> None:
        self.inner.enqueue_bulk(items)

    async def enqueue_at(self, i: int, due_epoch: float) -> None:
        self.inner.enqueue_at(i, due_epoch)

    async def start_worker(self) -> None:
        self.inner.start_worker()

    async def stop_worker(self) -> None:
        self.inner.stop_worker()

    async def teardown(self) -> None:
        self.inner.teardown()

    def store_mb(self) -> float | None:
        return self.inner.store_mb()


# -- entry point --------------------------------------------------------------


def _finish(
    name: str, versions: Mapping[str, str], args: argparse.Namespace, body: Callable[[], Any]
) -> int:
    base: dict[str, Any] = {
        "system": name,
        "workload": args.workload,
        "n": args.n,
        "versions": dict(versions),
        "python": sys.version.split()[0],
    }
    try:
        base.update(body())
        base["ok"] = True
        base.setdefault("peak_rss_mb", peak_rss_mb())
        code = 0
    except NotApplicable as exc:
        base.update(ok=False, na=str(exc))
        code = 0
    except BaseException as exc:
        base.update(ok=False, error=describe(exc))
        traceback.print_exc(file=sys.stderr)
        code = 1
    emit(base)
    return code


def main_async(factory: Callable[[], AsyncAdapter], argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    adapter = factory()

    async def body() -> dict[str, Any]:
        return await asyncio.wait_for(_run(adapter, args), args.timeout + 30)

    def run() -> dict[str, Any]:
        return asyncio.run(body())

    code = _finish(adapter.name, adapter.versions, args, run)
    sys.stdout.flush()
    # Some libraries leave non-daemon threads behind; the result is out, so leave now.
    os._exit(code)


def main_sync(factory: Callable[[], SyncAdapter], argv: Sequence[str] | None = None) -> None:
    main_async(lambda: SyncShim(factory()), argv)


def file_mb(*paths: str) -> float:
    """Total size of the files that exist among *paths* (a SQLite db and its -wal)."""
    total = 0
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(p).st_size
    return total / (1024 * 1024)


def fresh_path(workdir: str, name: str) -> str:
    """A path in *workdir* with no leftover database files from a previous run."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, name)
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
    return path


def redis_command(url: str, *args: str) -> bytes | int | None:
    """Send one command to the Redis server at *url* over a plain socket (no client needed).

    Handles the simple, integer, error and bulk-string replies the harness uses
    (``FLUSHALL``, ``INFO memory``, ``PING``).
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        raw = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(raw), raw)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5) as s:
        s.sendall(request)
        reader = s.makefile("rb")
        head = reader.readline()
        kind, rest = head[:1], head[1:].strip()
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else reader.read(size + 2)[:-2]
        raise RuntimeError(f"unexpected reply {head!r}")


def redis_used_mb(url: str) -> float | None:
    """``used_memory`` of the Redis server at *url* in MB."""
    if not url:
        return None
    info = redis_command(url, "INFO", "memory")
    if not isinstance(info, bytes):
        return None
    for line in info.decode("latin-1").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":", 1)[1]) / (1024 * 1024)
    return None
