"""The job module that the chaos tests' worker processes run.

``python -m asyncjobs worker tests.chaos_app:runtime`` builds its runtime from
environment variables, so a test starts many processes on one store without
writing a module per test:

``CHAOS_URL``
    the store: ``sqlite:////abs/path/jobs.db`` or ``redis://host:port/0``.
``CHAOS_PREFIX``
    the Redis key prefix (each test uses its own).
``CHAOS_LEASE``, ``CHAOS_GRACE``, ``CHAOS_CONCURRENCY``
    the runtime's ``lease`` and ``shutdown_grace`` (seconds) and the
    ``default`` queue's concurrency limit.
``CHAOS_RESULTS``
    a directory; every handler run appends one JSON line to
    ``<pid>.jsonl`` in it (see :func:`record_run`).
``CHAOS_TICK``
    when set, also declare the schedule ``tick`` every that many seconds.
``CHAOS_TICK_HOLD``
    how long the ``tick`` job stays in flight after recording its run (default 0).
``CHAOS_STUBBORN``
    how long the ``stubborn`` jobs ignore being cancelled (default 0: they
    return at once), so one process of a test can get a handler that will not
    stop and the next one a handler that finishes.
``CHAOS_FLOW``
    JSON of cluster-wide limits for the ``default`` queue:
    ``{"global_concurrency": 3, "rate": [5, 0.5], "partition_concurrency": 2}``
    (any of them; ``rate`` is ``RateLimit(limit, per=seconds)``).

Run records are plain ``write(2)`` calls on a file opened with ``O_APPEND``:
once ``write`` returns, the line is in the kernel's page cache and survives a
SIGKILL of the process (only a machine crash could lose it, which these tests
do not simulate), so no fsync is needed.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import anyio

from asyncjobs import JobContext, JobRegistry, JobRuntime, Queue, RateLimit
from asyncjobs.backends import Backend, from_url

__all__ = [
    "ENV_CONCURRENCY",
    "ENV_FLOW",
    "ENV_GRACE",
    "ENV_LEASE",
    "ENV_PREFIX",
    "ENV_RESULTS",
    "ENV_STUBBORN",
    "ENV_TICK",
    "ENV_TICK_HOLD",
    "ENV_URL",
    "QUEUE",
    "build_runtime",
    "crash",
    "hold",
    "hold_attempt",
    "jobs",
    "make_backend",
    "record",
    "record_run",
    "stubborn",
    "stubborn_in_thread",
    "tick",
]

ENV_URL = "CHAOS_URL"
ENV_PREFIX = "CHAOS_PREFIX"
ENV_LEASE = "CHAOS_LEASE"
ENV_GRACE = "CHAOS_GRACE"
ENV_CONCURRENCY = "CHAOS_CONCURRENCY"
ENV_RESULTS = "CHAOS_RESULTS"
ENV_TICK = "CHAOS_TICK"
ENV_TICK_HOLD = "CHAOS_TICK_HOLD"
ENV_STUBBORN = "CHAOS_STUBBORN"
ENV_FLOW = "CHAOS_FLOW"

#: The one queue every chaos job runs on.
QUEUE = "default"

jobs = JobRegistry()


@functools.cache
def _results_fd(directory: str) -> int:
    """This process's record file, opened once (the pid names it: one writer per file)."""
    path = Path(directory) / f"{os.getpid()}.jsonl"
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _claimed_at(ctx: JobContext) -> float:
    """When the store claimed the job: its claim set the lease to run from then."""
    assert ctx.job.lease_expires_at is not None
    return ctx.job.lease_expires_at - float(os.environ.get(ENV_LEASE, "1"))


def record_run(ctx: JobContext, event: str) -> None:
    """Append one line about this run of a job to this process's record file.

    The line holds the event name, the job id, the attempt, this pid, the
    claim time, due time and schedule fire time (``None`` for a job no schedule
    fired) as the store wrote them (the store's clock), and the wall time of
    the write.
    """
    line = json.dumps(
        {
            "event": event,
            "job": ctx.job_id,
            "attempt": ctx.attempt,
            "pid": os.getpid(),
            "claimed_at": _claimed_at(ctx),
            "due_at": ctx.job.due_at,
            "fire_at": ctx.fire_at,
            "partition": ctx.job.partition,
            "at": time.time(),
        }
    )
    os.write(_results_fd(os.environ[ENV_RESULTS]), (line + "\n").encode())


# Attempts to spare: a job is only retried here when its worker was killed, and the
# test decides how often that happens; running out would turn chaos into dead jobs.
@jobs.job(name="record", max_attempts=20)
async def record(ctx: JobContext, pause: float) -> int:
    """Record the start, stay in flight for *pause* seconds, record the end; return the pid."""
    record_run(ctx, "start")
    await anyio.sleep(pause)
    record_run(ctx, "done")
    return os.getpid()


@jobs.job(name="hold")
async def hold(ctx: JobContext, first: float, later: float) -> int:
    """Run for *first* seconds on the first attempt and *later* seconds after; return the pid.

    The sleep is shielded, so a worker that lost the lease meanwhile still
    reaches the end of the handler and tries to report its (late) outcome.
    """
    record_run(ctx, "start")
    with anyio.CancelScope(shield=True):
        await anyio.sleep(first if ctx.attempt == 1 else later)
    record_run(ctx, "done")
    return os.getpid()


@jobs.job(name="hold_attempt")
async def hold_attempt(ctx: JobContext, first: float, later: float) -> list[int]:
    """Like :func:`hold`, but return ``[pid, attempt]``: which run's outcome the store kept."""
    record_run(ctx, "start")
    with anyio.CancelScope(shield=True):
        await anyio.sleep(first if ctx.attempt == 1 else later)
    record_run(ctx, "done")
    return [os.getpid(), ctx.attempt]


def _stubborn_for() -> float:
    return float(os.environ.get(ENV_STUBBORN, "0"))


@jobs.job(name="stubborn")
async def stubborn(ctx: JobContext) -> int:
    """Swallow every cancellation for ``CHAOS_STUBBORN`` seconds, then return the pid.

    The handler a graceful shutdown cannot end: it catches the cancellation
    (``BaseException``) around each await and keeps going.
    """
    record_run(ctx, "start")
    until = time.monotonic() + _stubborn_for()
    while time.monotonic() < until:
        try:
            await anyio.sleep(0.1)
        except BaseException:  # ignoring the cancellation is the point
            continue
    record_run(ctx, "done")
    return os.getpid()


@jobs.job(name="stubborn_in_thread")
def stubborn_in_thread(ctx: JobContext) -> int:
    """Block a worker thread in ``time.sleep`` for ``CHAOS_STUBBORN`` seconds; return the pid.

    A synchronous handler runs in a thread, which no cancellation reaches.
    """
    record_run(ctx, "start")
    until = time.monotonic() + _stubborn_for()
    while time.monotonic() < until:
        time.sleep(0.1)
    record_run(ctx, "done")
    return os.getpid()


@jobs.job(name="crash", max_attempts=2)
async def crash(ctx: JobContext) -> None:
    """Kill the worker process running it, every time: a poison job."""
    record_run(ctx, "start")
    os.kill(os.getpid(), signal.SIGKILL)
    await anyio.sleep_forever()  # SIGKILL is not delivered synchronously on every platform


@jobs.job(name="tick")
async def tick(ctx: JobContext) -> None:
    """The scheduled job: record which fire time (``fire_at``) this run belongs to."""
    record_run(ctx, "tick")
    await anyio.sleep(float(os.environ.get(ENV_TICK_HOLD, "0")))


def make_backend(url: str, prefix: str | None = None) -> Backend:
    """The backend at *url*; a Redis one keeps its keys under *prefix*, a PostgreSQL one
    its tables in a schema named after it."""
    scheme = urlsplit(url).scheme.lower()
    if scheme.startswith("redis"):
        return from_url(url, prefix=prefix or "asyncjobs")
    if scheme.startswith("postgres"):
        return from_url(url, schema=(prefix or "asyncjobs").replace("-", "_"))
    return from_url(url)


def _queue(env: Mapping[str, str]) -> Queue:
    """The ``default`` queue: its concurrency and the limits of ``CHAOS_FLOW``."""
    flow = json.loads(env.get(ENV_FLOW, "{}"))
    rate = flow.pop("rate", None)
    return Queue(
        concurrency=int(env.get(ENV_CONCURRENCY, "4")),
        rate_limit=RateLimit(rate[0], per=rate[1]) if rate else None,
        **flow,
    )


def build_runtime(
    env: Mapping[str, str], *, role: Literal["worker", "enqueue"] = "worker"
) -> JobRuntime:
    """Build the chaos runtime described by *env* (see the module docs), with the jobs above.

    :param role: ``"worker"`` for the worker processes, ``"enqueue"`` for the
        test itself (it enqueues and reads the store, and never runs a job).
    """
    runtime = JobRuntime(
        make_backend(env[ENV_URL], env.get(ENV_PREFIX)),
        role=role,
        queues={QUEUE: _queue(env)},
        lease=float(env.get(ENV_LEASE, "1")),
        shutdown_grace=float(env.get(ENV_GRACE, "0.2")),
    )
    runtime.include(jobs)
    interval = env.get(ENV_TICK)
    if interval:
        # misfire="all" with a wide grace: a tick that came due while processes were
        # being killed still runs, so a missing tick can only mean a lost fire.
        runtime.every(float(interval), name="tick", misfire="all", grace=60)(tick)
    return runtime


def __getattr__(name: str) -> JobRuntime:
    # `asyncjobs worker tests.chaos_app:runtime` looks the runtime up by attribute:
    # built from the environment on that lookup, so importing this module (as the
    # tests do, for the job functions) needs no environment.
    if name == "runtime":
        return build_runtime(os.environ)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
