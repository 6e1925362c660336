"""The harness of the real-process tests (``test_chaos.py``, ``test_faults.py``).

A :class:`Cluster` starts ``python -m asyncjobs worker tests.chaos_app:runtime``
processes on one store (a SQLite file, or a Redis server under a key prefix of
its own), signals and kills them, reads what their handlers recorded (see
``tests/chaos_app.py``) and what they logged, and gives the test an
enqueue-only runtime on the same store to enqueue and to read the store.

Nothing here sleeps to wait for a condition: :meth:`Cluster.poll` calls a check
in a loop bounded by ``WAIT``, and process exits are waited for with a bound.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import attrs
import pytest

from asyncjobs import Job, JobRuntime, JobState
from tests import chaos_app

__all__ = [
    "LEASE",
    "POLL",
    "WAIT",
    "Cluster",
    "Run",
    "all_jobs",
    "counts",
    "lease_lost_jobs",
    "make_cluster",
    "named_jobs",
    "pid_of",
    "problems",
    "runs_by_job",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
#: Short leases keep crash recovery (and so the whole file) fast.
LEASE = 1.0
#: Bounds for one wait on the store, a log or a process: far above what a loaded
#: CI machine needs, far below the per-test timeout.
WAIT = 30.0
POLL = 0.05

#: The start of a WARNING, ERROR or CRITICAL record in a worker's log (the CLI's
#: ``%(asctime)s %(levelname)s %(name)s: %(message)s`` format); a traceback's
#: lines are part of the record before them, not records of their own.
_PROBLEM = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:WARNING|ERROR|CRITICAL) .*$", re.MULTILINE
)
_JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")
_LEASE_LOST = re.compile(r"lease lost for (?:running )?job ([0-9a-f]{32})\b")


@attrs.frozen(kw_only=True)
class Run:
    """One line a handler wrote: which job, which attempt, which process, when."""

    event: str
    job: str
    attempt: int
    pid: int
    claimed_at: float
    due_at: float
    fire_at: float | None
    at: float
    partition: str | None = None


def pid_of(job: Job) -> int:
    """The pid in a job's ``worker_id`` (``host:pid:random``)."""
    assert job.worker_id is not None, job
    return int(job.worker_id.split(":")[-2])


def problems(log: str) -> list[str]:
    """The first line of every WARNING, ERROR or CRITICAL record in a worker's *log*."""
    return _PROBLEM.findall(log)


def named_jobs(line: str) -> set[str]:
    """The job ids (32 hex digits) a log line names."""
    return set(_JOB_ID.findall(line))


def lease_lost_jobs(log: str) -> set[str]:
    """The jobs a worker's *log* says it lost the lease of."""
    return set(_LEASE_LOST.findall(log))


class Cluster:
    """Worker processes on one store, and the test's own (enqueue-only) view of it.

    :param url: the store's URL.
    :param prefix: the Redis key prefix (ignored for SQLite).
    :param directory: where run records and worker logs go.
    """

    def __init__(self, url: str, prefix: str, directory: Path) -> None:
        self.url = url
        self.prefix = prefix
        self.results = directory / "runs"
        self.results.mkdir()
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.processes: list[subprocess.Popen[bytes]] = []
        self._log_paths: dict[int, Path] = {}

    @property
    def kind(self) -> str:
        """``"sqlite"`` or ``"redis"``."""
        return "redis" if self.url.startswith(("redis", "rediss", "unix")) else "sqlite"

    def env(self, **settings: object) -> dict[str, str]:
        """The environment of a worker: the store, the records, and chaos_app *settings*."""
        env = dict(os.environ)
        env.pop("ASYNCJOBS_URL", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env[chaos_app.ENV_URL] = self.url
        env[chaos_app.ENV_PREFIX] = self.prefix
        env[chaos_app.ENV_RESULTS] = str(self.results)
        names = {
            "lease": chaos_app.ENV_LEASE,
            "grace": chaos_app.ENV_GRACE,
            "concurrency": chaos_app.ENV_CONCURRENCY,
            "tick": chaos_app.ENV_TICK,
            "tick_hold": chaos_app.ENV_TICK_HOLD,
            "stubborn": chaos_app.ENV_STUBBORN,
            "flow": chaos_app.ENV_FLOW,
        }
        env.setdefault(chaos_app.ENV_LEASE, str(LEASE))
        for name, value in settings.items():
            env[names[name]] = str(value)
        return env

    def runtime(self) -> JobRuntime:
        """An enqueue-only runtime on the store: it enqueues and reads, never runs a job."""
        return chaos_app.build_runtime(self.env(), role="enqueue")

    def start_worker(self, **settings: object) -> subprocess.Popen[bytes]:
        """Start one worker process (its own session, so signals reach only it)."""
        log_path = self.logs / f"worker-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "asyncjobs", "worker", "tests.chaos_app:runtime"],
                cwd=REPO,
                env=self.env(**settings),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self.processes.append(process)
        self._log_paths[process.pid] = log_path
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> float:
        """SIGKILL *process* and reap it; return the wall time it was certainly dead.

        That is the time *after* the reap: everything the process did (a claim,
        a run record) happened before it, however slowly this test process was
        scheduled between the clock read and the signal.
        """
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=WAIT)
        return time.time()

    async def wait_exit(self, process: subprocess.Popen[bytes], timeout: float = WAIT) -> int:
        """Wait up to *timeout* seconds for *process* to exit; return its status."""
        try:
            return await anyio.to_thread.run_sync(functools.partial(process.wait, timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {process.pid} did not exit in {timeout} s\n{self.log_tails()}"
            ) from None

    async def wait_started(self, *processes: subprocess.Popen[bytes]) -> None:
        """Wait until each of *processes* has logged that it started.

        One still importing has no signal handler yet: SIGTERM would end it the
        default way.
        """
        for process in processes:
            await self.poll_log(process, "started on")

    async def stop(self, *processes: subprocess.Popen[bytes]) -> list[int]:
        """SIGTERM *processes* (graceful shutdown) and return their exit statuses."""
        await self.wait_started(*processes)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        return [await self.wait_exit(process) for process in processes]

    def close(self) -> None:
        """Kill whatever is still running (SIGKILL also ends a SIGSTOPped process)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=WAIT)

    def log(self, process: subprocess.Popen[bytes]) -> str:
        """What *process* wrote to stderr so far (the worker's log)."""
        return self._log_paths[process.pid].read_text(errors="replace")

    def log_tails(self) -> str:
        """The end of every worker's log, for failure messages."""
        return "\n".join(
            f"--- worker {process.pid} (exit {process.poll()}):\n{self.log(process)[-1500:]}"
            for process in self.processes
        )

    def runs(self) -> list[Run]:
        """Every run record written so far, by every process."""
        runs: list[Run] = []
        for path in sorted(self.results.glob("*.jsonl")):
            lines = path.read_text().split("\n")
            # The text after the last newline is empty, or (only ever after a SIGKILL
            # in the middle of a write) a torn line; either way not a record.
            runs += [Run(**json.loads(line)) for line in lines[:-1]]
        return runs

    async def poll(self, check: Callable[[], Awaitable[T | None]], what: str) -> T:
        """Call *check* until it returns something other than ``None``; return that.

        :raises AssertionError: naming *what* (with the workers' logs) after ``WAIT`` s.
        """
        try:
            with anyio.fail_after(WAIT):
                while True:
                    value = await check()
                    if value is not None:
                        return value
                    await anyio.sleep(POLL)  # the poll interval, in a bounded loop
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}\n{self.log_tails()}") from None

    async def poll_log(self, process: subprocess.Popen[bytes], text: str) -> str:
        """Wait until *process*'s log contains *text*; return the log."""

        async def check() -> str | None:
            log = self.log(process)
            return log if text in log else None

        return await self.poll(check, f"{text!r} in the log of worker {process.pid}")

    async def poll_runs(self, check: Callable[[list[Run]], T | None], what: str) -> T:
        """Wait until *check* of the run records so far returns something; return that."""

        async def runs_check() -> T | None:
            return check(self.runs())

        return await self.poll(runs_check, what)


def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """The body of a ``cluster`` fixture parametrized with ``"sqlite"``, ``"redis"`` or
    ``"postgres"``.

    SQLite: a file in *tmp_path*; Redis: the session server under a prefix of
    the test's own; PostgreSQL: the session server in a schema of the test's
    own. The cluster's processes die with the test.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = request.getfixturevalue("redis_url")
    chaos = Cluster(url, f"chaos-{uuid.uuid4().hex[:12]}", tmp_path)
    try:
        yield chaos
    finally:
        chaos.close()


async def counts(runtime: JobRuntime) -> Counter[JobState]:
    """How many jobs the store holds in each state."""
    total: Counter[JobState] = Counter()
    for stats in await runtime.queue_stats():
        total.update(stats.counts)
    return total


async def all_jobs(runtime: JobRuntime, expected: int) -> dict[str, Job]:
    """Every job in the store, by id (at most *expected* + a margin, to spot strays)."""
    jobs = await runtime.list_jobs(limit=expected + 100)
    return {job.id: job for job in jobs}


def runs_by_job(runs: list[Run], event: str) -> dict[str, list[Run]]:
    """The *event* records of each job, oldest attempt first."""
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.event == event:
            grouped[run.job].append(run)
    for job_runs in grouped.values():
        job_runs.sort(key=lambda run: run.attempt)
    return grouped
