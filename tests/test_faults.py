"""Faults are weather, not death: real worker processes through the faults of DESIGN.md 4.

Each test pins one promise that a fault once broke, with real
``python -m asyncjobs worker tests.chaos_app:runtime`` processes (the harness
of ``tests/chaos_cluster.py``) on a SQLite file or a real Redis server:

- a Redis server away for a minute: no worker exits, nothing is lost, and only
  jobs whose lease expired in the outage run twice; the outage is logged once,
  not once per retry;
- a worker stalled past its lease claims its own job again while the stale
  attempt still runs: it neither crashes nor lets the new attempt's lease lapse,
  and the store keeps the new attempt's outcome only;
- SIGTERM with jobs claimed ahead: no handler is entered after the signal, and
  those jobs go back to the queue with their attempt not counted;
- a handler that ignores its cancellation cannot keep a worker from exiting
  within the shutdown grace plus a small bound; its job runs again elsewhere.

Nothing sleeps to wait for a condition: the tests poll the store or the run
records in bounded loops, or wait for process exits with a bound. The only
sleep is the Redis outage itself.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from asyncjobs import Job, JobState
from tests.chaos_app import hold_attempt, record
from tests.chaos_cluster import (
    LEASE,
    WAIT,
    Cluster,
    Run,
    all_jobs,
    counts,
    make_cluster,
    named_jobs,
    pid_of,
    problems,
    runs_by_job,
)
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(params=["sqlite", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on a SQLite file or on the session Redis; its processes die with the test."""
    yield from make_cluster(request, tmp_path)


# -- 1. the Redis or PostgreSQL server is away for a minute -------------------------------

OUTAGE = 60.0
OUTAGE_JOBS = 2000
OUTAGE_WORKERS = 2
OUTAGE_CONCURRENCY = 4
OUTAGE_LEASE = 2.0
#: WARNING/ERROR records about the store one worker may log over the whole outage:
#: a few per loop at most (it went away, it is back), never one per retry (a minute
#: of retries at even a second apart would be 60 per loop). Lines about single jobs
#: (one whose lease ran out) are judged by which jobs they name instead.
MAX_PROBLEMS = 30


def _server(kind: str) -> RedisServer | PostgresServer:
    """A server of its own for the outage test, restarted on the same port and files."""
    if kind == "redis":
        # appendfsync always: every write the server acknowledged is in the AOF when it
        # stops, and the restart on the same port and directory reads it back.
        return RedisServer(appendonly=True, appendfsync="always")
    return PostgresServer()  # fsync on: a commit it acknowledged survives the stop


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_workers_ride_out_a_minute_long_store_outage(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue(f"{kind}_url")  # skips (or fails in CI) without the server
    with _server(kind) as server:
        chaos = Cluster(server.url, "outage", tmp_path)
        try:
            async with chaos.runtime() as runtime:
                # 2000 jobs of 10-30 ms on 8 slots: about 5 s of work, so the outage
                # comes with most of the queue still to drain.
                pauses = [random.uniform(0.01, 0.03) for _ in range(OUTAGE_JOBS)]
                handles = await runtime.enqueue_many([record.call(pause) for pause in pauses])
                workers = [
                    chaos.start_worker(concurrency=OUTAGE_CONCURRENCY, lease=OUTAGE_LEASE)
                    for _ in range(OUTAGE_WORKERS)
                ]

                async def under_way() -> int | None:
                    done = (await counts(runtime))[JobState.COMPLETE]
                    return done if done >= OUTAGE_JOBS // 5 else None

                await chaos.poll(under_way, "a fifth of the jobs to complete")
                await anyio.to_thread.run_sync(server.stop)
                down_at = time.time()  # nothing reaches the store from here on...
                await anyio.sleep(OUTAGE)  # the fault itself: the store is away this long
                await anyio.to_thread.run_sync(server.start)
                back_at = time.time()  # ...until here
                assert [worker.poll() for worker in workers] == [None] * OUTAGE_WORKERS, (
                    f"a worker exited in the outage\n{chaos.log_tails()}"
                )

                async def drained() -> bool | None:
                    return (await counts(runtime))[JobState.COMPLETE] == OUTAGE_JOBS or None

                await chaos.poll(drained, f"all {OUTAGE_JOBS} jobs to complete")
                stored = await all_jobs(runtime, OUTAGE_JOBS)
                alive = [worker.poll() for worker in workers]
                logs = [chaos.log(worker) for worker in workers]
                statuses = await chaos.stop(*workers)
        finally:
            chaos.close()

    assert alive == [None] * OUTAGE_WORKERS, chaos.log_tails()
    assert statuses == [0] * OUTAGE_WORKERS, chaos.log_tails()
    # Nothing lost: every job is complete, and nothing appeared from nowhere.
    assert set(stored) == {handle.id for handle in handles}
    assert {job.state for job in stored.values()} == {JobState.COMPLETE}
    starts = runs_by_job(chaos.runs(), "start")
    dones = runs_by_job(chaos.runs(), "done")
    # The outage came mid-drain: jobs ran on both sides of it.
    assert any(run.at < down_at for tries in starts.values() for run in tries)
    assert any(run.at > back_at for tries in starts.values() for run in tries)
    run_again: list[Job] = []
    for job_id, job in stored.items():
        tries = starts[job_id]
        assert tries, f"job {job_id} never ran"
        # Each run is a claim the store counted, and the stored outcome is the last one's.
        assert len({run.attempt for run in tries}) == len(tries), tries
        assert tries[-1].attempt == job.attempts, (tries, job)
        assert tries[-1].pid == pid_of(job) == runtime.codec.decode(job.result or b"")
        assert tries[-1].attempt in {run.attempt for run in dones[job_id]}
        if job.attempts > 1:
            run_again.append(job)
        # A job ran again only because its lease ran out in the outage: every earlier
        # run was claimed before the store went away, and the next claim came a whole
        # lease later (no worker keeps a job's lease alive across a minute without
        # the store, and none may let a lease lapse outside it).
        for earlier in tries[:-1]:
            assert earlier.claimed_at <= down_at, (job_id, tries, down_at)
        for before, after in itertools.pairwise(tries):
            assert after.claimed_at >= before.claimed_at + OUTAGE_LEASE - 1e-3, (before, after)
    # Only jobs held when the store went away can have lost their lease: at most each
    # worker's slots, running or claimed ahead (prefetch 1).
    assert len(run_again) <= OUTAGE_WORKERS * OUTAGE_CONCURRENCY * 2, run_again
    # The outage is logged, but once per loop at most, not once per retry: the lines
    # about the store (those naming no job) are few. A line naming a job is about a
    # job the outage could cut off: one claimed before the store went away.
    held_at_outage = {
        job_id
        for job_id, job in stored.items()
        if job.attempts > 1 or starts[job_id][0].claimed_at <= down_at
    }
    for worker, log in zip(workers, logs, strict=True):
        lines = problems(log)
        about_the_store = [line for line in lines if not named_jobs(line)]
        assert about_the_store, f"worker {worker.pid} did not log the outage:\n{log[-3000:]}"
        assert len(about_the_store) < MAX_PROBLEMS, "\n".join(about_the_store)
        strays = [line for line in lines if named_jobs(line) - held_at_outage]
        assert strays == [], "\n".join(strays)
    repeated = sum(len(tries) - 1 for tries in starts.values())
    print(
        f"\n{kind} away {OUTAGE:.0f} s: {len(stored)} jobs complete, {len(run_again)} claimed "
        f"again, {repeated} handler runs repeated; warnings per worker: "
        f"{[len(problems(log)) for log in logs]}"
    )


# -- 2. a stalled worker claims its own job again -----------------------------------------

#: How long the first (stale) attempt and the second one stay in the handler: the
#: stale one is still running when its worker claims the job again (about a lease
#: after it started), and the new one runs on for several leases after the stale one
#: returns, so a worker that let the stale attempt's end take the new one's
#: heartbeat with it would see the new lease expire.
STALE_RUN = 5.0
NEW_RUN = 7.0


async def test_a_worker_that_claims_its_own_stalled_job_again_does_not_crash(
    cluster: Cluster,
) -> None:
    async with cluster.runtime() as runtime:
        handle = await hold_attempt.enqueue(STALE_RUN, NEW_RUN)
        # Two slots: the job's second claim finds one free beside the stale attempt.
        worker = cluster.start_worker(concurrency=2)

        def started(attempt: int) -> Callable[[list[Run]], Run | None]:
            def check(runs: list[Run]) -> Run | None:
                return next((r for r in runs if r.event == "start" and r.attempt == attempt), None)

            return check

        first = await cluster.poll_runs(started(1), "the first attempt to start")
        assert first.pid == worker.pid
        os.kill(worker.pid, signal.SIGSTOP)  # the worker stalls: no heartbeat from here
        try:

            async def requeued() -> Job | None:
                # What another worker's sweep would do once the lease has run out.
                await runtime.backend.recover_expired()
                job = await handle.refresh()
                return job if job.state is JobState.QUEUED else None

            job = await cluster.poll(requeued, "the stalled job's lease to expire")
            assert job.attempts == 1
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        # The same worker claims the job again while its stale attempt still runs (the
        # handler's sleep is shielded, so the stale attempt reaches its end either way).
        second = await cluster.poll_runs(started(2), "the worker to claim the job again")
        assert second.pid == worker.pid
        assert not [r for r in cluster.runs() if r.event == "done"], "no overlap: no test"

        async def settled() -> Job | None:
            # Settled, and every handler that started has returned: a worker that
            # mixes up its two attempts fails when the later one ends.
            job = await handle.refresh()
            runs = cluster.runs()
            in_flight = {r.attempt for r in runs if r.event == "start"} - {
                r.attempt for r in runs if r.event == "done"
            }
            finished = job.state not in (JobState.RUNNING, JobState.QUEUED) and not in_flight
            return job if finished or worker.poll() is not None else None

        job = await cluster.poll(settled, "both attempts to finish")
        assert worker.poll() is None, f"the worker died\n{cluster.log(worker)}"
        # Exactly one completion, the new attempt's: the stale attempt's outcome was
        # refused (or dropped), and the new attempt's lease was renewed throughout
        # (it ran several leases long, and no third claim happened).
        assert job.state is JobState.COMPLETE, job
        assert job.attempts == 2
        assert runtime.codec.decode(job.result or b"") == [worker.pid, 2]
        runs = cluster.runs()
        assert sorted((r.event, r.attempt) for r in runs) == [
            ("done", 1),
            ("done", 2),
            ("start", 1),
            ("start", 2),
        ], runs
        done = {r.attempt: r for r in runs if r.event == "done"}
        # The new attempt outlived the stale one by more than a lease: its heartbeat
        # went on after the stale attempt ended.
        assert done[2].at - done[1].at > LEASE, runs
        log = cluster.log(worker)
        assert "Traceback" not in log, log
        assert await cluster.stop(worker) == [0], cluster.log(worker)


# -- 3. SIGTERM with a job claimed ahead --------------------------------------------------


async def test_sigterm_releases_jobs_claimed_ahead_without_entering_their_handlers(
    cluster: Cluster,
) -> None:
    async with cluster.runtime() as runtime:
        # Far longer than the grace: the running job is cut short and handed back too.
        handles = await runtime.enqueue_many([record.call(30.0) for _ in range(3)])
        # One slot with prefetch 1 (the default): one job runs, one waits claimed ahead.
        worker = cluster.start_worker(concurrency=1, grace=1.0)
        await cluster.wait_started(worker)

        async def one_running_one_ahead() -> list[Job] | None:
            held = await runtime.list_jobs(state="running")
            started = [r for r in cluster.runs() if r.event == "start"]
            return held if len(held) == 2 and len(started) == 1 else None

        held = await cluster.poll(one_running_one_ahead, "a job running and one claimed ahead")
        assert {pid_of(job) for job in held} == {worker.pid}
        [running] = cluster.runs()
        [ahead] = [job for job in held if job.id != running.job]
        sigterm_at = time.time()
        worker.send_signal(signal.SIGTERM)
        status = await cluster.wait_exit(worker)
        runs = cluster.runs()
        stored = {job.id: job for job in await runtime.list_jobs()}

    log = cluster.log(worker)
    # No handler was entered after the signal: the only run is the one already running.
    assert [r for r in runs if r.at >= sigterm_at] == [], runs
    assert [(r.event, r.job) for r in runs] == [("start", running.job)], runs
    # Every job is back in the queue, its attempt not counted: the one claimed ahead
    # never started, the running one was cut short after the grace.
    assert set(stored) == {handle.id for handle in handles}
    for job in stored.values():
        assert (job.state, job.attempts, job.lease_token, job.worker_id) == (
            JobState.QUEUED,
            0,
            None,
            None,
        ), (job, ahead.id)
    assert status == 0, log
    assert "Traceback" not in log, log


# -- 4. a handler that ignores its cancellation -------------------------------------------

GRACE = 1.0
#: How long past the grace a worker may take to exit, whatever its handlers do.
#: docs/runtime.md states the bound: ``asyncjobs worker`` exits (status 70) at
#: ``shutdown_grace`` + 5 s; the other 5 s leave room for a loaded machine.
EXIT_BOUND = 10.0
#: Exit statuses of a worker whose shutdown ended: in time (0), or cut off at the
#: deadline because a handler would not stop (70, see docs/runtime.md).
EXITED = (0, 70)


@pytest.mark.parametrize("job_name", ["stubborn", "stubborn_in_thread"])
async def test_shutdown_ends_within_grace_and_a_bound_whatever_the_handler_does(
    cluster: Cluster, job_name: str
) -> None:
    async with cluster.runtime() as runtime:
        handle = await runtime.enqueue(job_name)
        # This worker's handler ignores cancellation for far longer than the test.
        first = cluster.start_worker(grace=GRACE, stubborn=600)
        await cluster.wait_started(first)

        def started(runs: list[Run]) -> Run | None:
            return next(iter(runs), None)

        await cluster.poll_runs(started, "the stubborn job to start")
        sigterm_at = time.monotonic()
        first.send_signal(signal.SIGTERM)
        status = await cluster.wait_exit(first, timeout=GRACE + EXIT_BOUND)
        took = time.monotonic() - sigterm_at
        assert took < GRACE + EXIT_BOUND, took
        log = cluster.log(first)
        assert "received SIGTERM" in log, log
        assert status in EXITED, log

        # The job is not stuck: it is queued again, or still running under a lease
        # that nobody renews; either way a second worker (whose handler gives in at
        # once) runs it to the end.
        left = await handle.refresh()
        assert left.state in (JobState.QUEUED, JobState.RUNNING), left
        second = cluster.start_worker()
        assert await handle.result(timeout=WAIT) == second.pid
        done = await handle.refresh()
        assert done.state is JobState.COMPLETE
        assert pid_of(done) == second.pid
        assert await cluster.stop(second) == [0], cluster.log(second)
    print(f"\n{job_name}: worker exited {status} {took:.1f} s after SIGTERM (grace {GRACE} s)")
