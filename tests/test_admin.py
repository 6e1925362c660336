"""Inspection and operator actions (``runtime.admin`` / :class:`Admin`), on every store.

``explain`` has one test per reason; every action lands in the audit trail.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
import pytest

from asyncjobs import (
    InvalidOptionError,
    JobCompleted,
    JobContext,
    JobNotFound,
    JobRuntime,
    JobState,
    JobStateError,
    ManualClock,
    OperatorAction,
    Queue,
    QueuePaused,
    RateLimit,
    ScheduleNotFound,
    WorkerJoined,
)
from asyncjobs._admin import Admin
from asyncjobs._explain import REASONS, Explanation
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


async def wait_until(check: object, timeout: float = 10.0) -> None:
    """Poll *check* (an async callable returning bool) until true (bounded)."""
    with anyio.fail_after(timeout):
        while not await check():  # type: ignore[operator]
            await anyio.sleep(0.01)


# -- job detail, tags, listings ------------------------------------------------------


async def test_a_job_shows_its_attempt_history_and_tags(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime()
    tries = 0

    @runtime.job(max_attempts=3)
    async def flaky(ctx_tags: dict[str, str]) -> None:
        nonlocal tries
        tries += 1
        if tries < 2:
            raise ValueError("not yet")

    async with runtime:
        handle = await flaky.options(tags={"tenant": "t1", "correlation_id": "c-7"}).enqueue({})
        await wait_until(lambda: _state_is(runtime, handle.id, JobState.QUEUED, attempts=1))
        clock.advance(60)  # past the backoff
        await handle.result(timeout=10)
        detail = await runtime.admin.job(handle.id)
        listed = await runtime.list_jobs(tags={"tenant": "t1"})

    assert detail.job.tags == {"tenant": "t1", "correlation_id": "c-7"}
    assert [attempt.outcome for attempt in detail.attempts] == ["retry", "complete"]
    first, second = detail.attempts
    assert (first.number, first.error_type, first.error_message) == (1, "ValueError", "not yet")
    assert first.worker_id == runtime.worker_id
    assert second.started_at is not None
    assert [job.id for job in listed] == [handle.id]


async def _state_is(
    runtime: JobRuntime, job_id: str, state: JobState, attempts: int | None = None
) -> bool:
    job = await runtime.get_job(job_id)
    return job is not None and job.state is state and (attempts is None or job.attempts == attempts)


async def test_a_handler_reads_its_tags(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    seen: dict[str, str] = {}

    @runtime.job()
    async def work(ctx: JobContext) -> None:
        seen.update(ctx.tags)

    async with runtime:
        handle = await work.options(tags={"tenant": "t9"}).enqueue()
        await handle.result(timeout=10)
    assert seen == {"tenant": "t9"}


async def test_retention_zero_deletes_jobs_as_they_finish(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(retention={"complete": 0})

    @runtime.job()
    async def work(n: int) -> int:
        return n * 2

    with runtime.events.subscribe(JobCompleted) as events:
        async with runtime:
            handle = await work.enqueue(21)
            await events.wait_for(JobCompleted, lambda e: e.job_id == handle.id)
            await wait_until(lambda: _gone(runtime, handle.id))
            # The process that ran it still answers its handles, as the job ended.
            assert await handle.result(timeout=10) == 42
            assert (await handle.refresh()).state is JobState.COMPLETE


async def _gone(runtime: JobRuntime, job_id: str) -> bool:
    return await runtime.get_job(job_id) is None


# -- actions and the audit trail -----------------------------------------------------


async def test_actions_are_audited_with_their_actor(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime(role="enqueue")

    @runtime.job(name="mail")
    async def mail() -> None: ...

    with runtime.events.subscribe(OperatorAction, QueuePaused) as events:
        async with runtime:
            admin = runtime.admin
            job = await mail.enqueue()
            with caplog.at_level(logging.INFO, logger="asyncjobs.audit"):
                await admin.pause("default", actor="alice")
                await admin.resume("default", actor="alice")
                await admin.cancel(job.id, actor="bob")
                with pytest.raises(JobStateError):
                    await admin.retry(job.id, actor="bob")
                await admin.delete(job.id, actor="carol")
                with pytest.raises(JobNotFound):
                    await admin.delete(job.id, actor="carol")
                await mail.enqueue()
                assert await admin.purge(state="queued", actor="dave") == 1
                with pytest.raises(InvalidOptionError, match="at least one filter"):
                    await admin.purge(actor="dave")
            trail = await admin.audit()
            paused = await events.wait_for(QueuePaused)
            action = await events.wait_for(OperatorAction)

    assert [(e.actor, e.action, e.outcome) for e in reversed(trail)] == [
        ("alice", "queue.pause", "ok"),
        ("alice", "queue.resume", "ok"),
        ("bob", "job.cancel", "ok"),
        ("bob", "job.retry", "refused: cancelled"),
        ("carol", "job.delete", "ok"),
        ("carol", "job.delete", "not found"),
        ("dave", "jobs.purge", "ok: 1 deleted"),
    ]
    assert paused.queue == "default"
    assert (action.actor, action.action) == ("alice", "queue.pause")
    assert any(
        r.name == "asyncjobs.audit" and "job.delete" in r.getMessage() for r in caplog.records
    )


async def test_a_schedule_is_triggered_and_paused_without_its_job_registered(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()

    @runtime.job(name="cleanup")
    async def cleanup() -> None: ...

    runtime.cron("0 2 * * *", name="nightly")(cleanup)
    async with runtime:
        store_only = Admin(runtime.backend, clock=runtime.clock, actor="ops")
        job = await store_only.trigger("nightly")
        paused = await store_only.pause_schedule("nightly")
        [(schedule, runs)] = await store_only.schedules()
        assert await store_only.schedule("nightly") == (schedule, runs)
        with pytest.raises(ScheduleNotFound):
            await store_only.schedule("weekly")

    assert (job.name, job.schedule, job.state) == ("cleanup", "nightly", JobState.QUEUED)
    assert paused.paused
    assert schedule.name == "nightly"
    assert [run.id for run in runs] == [job.id]


# -- workers -----------------------------------------------------------------------------


async def test_runtimes_register_and_leave(make_runtime: RuntimeFactory) -> None:
    worker = make_runtime(queues={"default": 3, "mail": Queue(global_concurrency=2)})
    web = make_runtime(role="enqueue", queues={"default": 3, "mail": 1})

    @worker.job(name="send")
    async def send() -> None: ...

    with worker.events.subscribe(WorkerJoined) as joined:
        async with worker, web:
            await joined.wait_for(WorkerJoined)
            await wait_until(lambda: _count_workers(web, 2))
            workers = {info.id: info for info in await web.admin.workers()}
        after = None
    async with web:
        after = await web.admin.workers()

    info = workers[worker.worker_id]
    assert info.role == "all"
    assert info.queues == {"default": 3, "mail": 10}
    assert info.jobs == ("send",)
    assert info.limits == {"mail": {"global_concurrency": "2"}}
    assert workers[web.worker_id].role == "enqueue"
    assert workers[web.worker_id].queues == {}
    assert {w.id for w in after} == {web.worker_id}  # the worker removed itself


async def _count_workers(runtime: JobRuntime, count: int) -> bool:
    return len(await runtime.admin.workers()) >= count


# -- explain: one test per reason ---------------------------------------------------------


async def test_explain_names_every_reason(make_runtime: RuntimeFactory, clock: ManualClock) -> None:
    gate = anyio.Event()
    worker = make_runtime(
        queues={
            "default": 1,
            "partner": Queue(concurrency=2, rate_limit=RateLimit(1, per=3600)),
            "tenants": Queue(concurrency=4, partition_concurrency=1),
        },
        prefetch=1,
    )
    web = make_runtime(
        role="enqueue",
        queues={"default": 1, "partner": 1, "tenants": 1, "orphan": 1, "paused": 1},
    )

    async def block() -> None:
        await gate.wait()

    for runtime in (worker, web):
        runtime.job(name="block")(block)
        runtime.job(name="block_partner", queue="partner")(block)
        runtime.job(name="block_tenant", queue="tenants")(block)
    web.job(name="only_on_web")(block)

    seen: dict[str, Explanation] = {}
    async with worker, web:
        admin = web.admin
        call = web.function("block")
        await wait_until(lambda: _count_workers(web, 2))

        seen["not_found"] = await admin.explain("nope")
        running = await call.enqueue()
        await wait_until(lambda: _started(web, running.id))
        seen["running"] = await admin.explain(running.id)
        claimed = await call.enqueue()  # prefetched behind the running one
        await wait_until(lambda: _state_is(web, claimed.id, JobState.RUNNING))
        seen["claimed"] = await admin.explain(claimed.id)
        full = await call.enqueue()
        seen["queue_full"] = await admin.explain(full.id)
        later = await call.options(delay=timedelta(hours=1)).enqueue()
        seen["due_later"] = await admin.explain(later.id)
        later_due = later.job.due_at
        await admin.pause("paused")
        paused = await call.options(queue="paused").enqueue()
        seen["paused"] = await admin.explain(paused.id)
        orphan = await call.options(queue="orphan").enqueue()
        seen["no_worker"] = await admin.explain(orphan.id)
        unknown = await web.function("only_on_web").enqueue()
        seen["unknown_job"] = await admin.explain(unknown.id)

        partner = web.function("block_partner")
        first = await partner.enqueue()
        await wait_until(lambda: _started(web, first.id))
        second = await partner.enqueue()
        await wait_until(lambda: _held(worker, "partner"))
        clock.advance(worker.heartbeat)  # the worker's next refresh of its record
        await wait_until(lambda: _worker_reports_held(web, "partner"))
        seen["limited"] = await admin.explain(second.id)

        tenant = web.function("block_tenant")
        t1 = await tenant.options(partition="t").enqueue()
        await wait_until(lambda: _started(web, t1.id))
        t2 = await tenant.options(partition="t").enqueue()
        seen["limited_partition"] = await admin.explain(t2.id)

        waiting = await tenant.options(partition="u", key="k").enqueue()
        await wait_until(lambda: _started(web, waiting.id))
        # Due, on a served queue with room in its partition: only the key holds it.
        behind = await tenant.options(partition="v", key="k", on_conflict="replace").enqueue()
        seen["behind_key"] = await admin.explain(behind.id)

        gate.set()
        await running.result(timeout=10)
        seen["finished"] = await admin.explain(running.id)
        await admin.pause("default")
        plain = await call.enqueue()
        await admin.resume("default")
        seen["waiting_or_next"] = await admin.explain(plain.id)

    reasons = {key: value.reason for key, value in seen.items()}
    assert reasons["not_found"] == "not_found"
    assert reasons["running"] == "running"
    assert reasons["claimed"] == "claimed"
    assert reasons["queue_full"] == "queue_full"
    assert reasons["due_later"] == "due_later"
    assert seen["due_later"].until == pytest.approx(later_due)
    assert reasons["paused"] == "paused"
    assert reasons["no_worker"] == "no_worker"
    assert reasons["unknown_job"] == "unknown_job"
    assert reasons["limited"] == "limited"
    assert "rate_limit" in seen["limited"].message
    assert reasons["limited_partition"] == "limited"
    assert "partition" in seen["limited_partition"].message
    assert reasons["behind_key"] == "behind_key", seen["behind_key"]
    assert seen["behind_key"].details["holder"] == waiting.id
    assert reasons["finished"] == "finished"
    assert reasons["waiting_or_next"] in ("waiting", "queue_full", "running", "claimed", "finished")
    assert set(REASONS) >= set(reasons.values())


async def _started(runtime: JobRuntime, job_id: str) -> bool:
    job = await runtime.get_job(job_id)
    return job is not None and job.started_at is not None


async def _held(runtime: JobRuntime, queue: str) -> bool:
    dispatcher = runtime._dispatcher
    return dispatcher is not None and dispatcher.held_by.get(queue) is not None


async def _worker_reports_held(runtime: JobRuntime, queue: str) -> bool:
    return any(queue in worker.held for worker in await runtime.admin.workers())


# -- health and overview ----------------------------------------------------------------


async def test_health_reports_reasons(make_runtime: RuntimeFactory, clock: ManualClock) -> None:
    web = make_runtime(role="enqueue", queues={"default": 2})

    @web.job()
    async def work() -> None: ...

    async with web:
        healthy = await web.admin.health()
        await work.enqueue()
        clock.advance(700)
        sick = await web.admin.health()

    assert healthy.healthy
    assert not sick.healthy
    assert sick.checks["workers"] is False
    assert any("no live worker serves default" in reason for reason in sick.reasons)
    assert any("the oldest waiting job has waited" in reason for reason in sick.reasons)


async def test_queue_overview_counts_rates_and_timings(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(queues={"default": 2})

    @runtime.job(max_attempts=1)
    async def work(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    async with runtime:
        handles = [await work.enqueue(i % 4 == 0) for i in range(8)]
        for handle in handles:
            await handle.wait(timeout=10)
        [overview] = await runtime.admin.queues(window=60)

    assert overview.queue == "default"
    assert overview.counts[JobState.COMPLETE] == 6
    assert overview.counts[JobState.DEAD] == 2
    assert overview.failure_rate == pytest.approx(0.25)
    assert overview.completed_per_minute == pytest.approx(6.0)
    assert overview.run is not None
    assert overview.run.sample == 8
    assert overview.oldest_waiting is None
