"""Workload 4, chat maintenance: every requirement, on a ManualClock (and Redis with a password)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from asyncjobs import (
    BackendError,
    ExponentialBackoff,
    JobCompleted,
    JobDied,
    JobRuntime,
    ManualClock,
    Queue,
    RateLimit,
)
from asyncjobs.integrations.logs import log_events
from asyncjobs.integrations.prometheus import instrument
from asyncjobs.testing import Harness
from examples.workloads.chat import (
    ENVIRONMENTS,
    ChatDB,
    create_runtime,
    daily_activity_report,
    queue_counts,
    send_notification,
)
from tests.workloads.conftest import run_script

pytestmark = pytest.mark.anyio


def test_queues_are_configured_per_environment() -> None:
    production = create_runtime("memory://", env="production").queue_settings
    development = create_runtime("memory://", env="development").queue_settings
    assert (
        set(production) == set(development) == {"cleanup", "maintenance", "notification", "report"}
    )
    notification = production["notification"]
    assert notification.concurrency == 10
    assert notification.rate_limit == RateLimit(100, per=60)
    assert notification.max_attempts == 5
    assert notification.backoff == ExponentialBackoff(base=2, cap=300)
    assert development["notification"] != notification
    assert production == ENVIRONMENTS["production"]
    assert all(isinstance(queue, Queue) for queue in production.values())


@pytest.mark.parametrize(("env", "attempts"), [("development", 2), ("production", 5)])
async def test_attempts_follow_the_environment_and_failed_jobs_are_kept(
    env: str, attempts: int, asyncjobs_clock: ManualClock
) -> None:
    db = ChatDB()
    db.unreachable_users = {13}
    runtime = create_runtime("memory://", env=env, db=db, clock=asyncjobs_clock, shutdown_grace=0.1)
    async with Harness(runtime) as harness:
        ok = await send_notification.enqueue(1, "hi")
        failing = await send_notification.enqueue(13, "hi")
        await harness.advance(timedelta(hours=1))
        outcomes = [r.outcome for r in harness.runs if r.job_id == failing.id]
        assert outcomes == ["retrying"] * (attempts - 1) + ["dead"]
        await harness.advance(timedelta(days=30))  # dead jobs are kept: retention None
        assert await runtime.get_job(ok.id) is None  # removed as it completed
        dead = await runtime.get_job(failing.id)
        assert dead is not None
        assert dead.attempts == attempts
        counts = (await queue_counts(runtime))["notification"]
        assert counts == {
            "waiting": 0,
            "active": 0,
            "completed": 0,
            "failed": 1,
            "delayed": 0,
            "paused": False,
        }


async def test_schedules_run_in_their_time_zones() -> None:
    clock = ManualClock(datetime(2026, 1, 5, tzinfo=UTC))  # a Monday, CET/EST
    db = ChatDB()
    runtime = create_runtime("memory://", db=db, clock=clock, shutdown_grace=0.1)
    async with Harness(runtime) as harness:
        await harness.advance(timedelta(days=7))
        assert db.maintenance_runs == 1
        harness.assert_ran(daily_activity_report, ["complete"] * 7)
        fires = await harness.next_fire_times()
        assert fires == {
            "nightly_cleanup": datetime(2026, 1, 12, 2, tzinfo=UTC),  # 03:00 CET
            "weekly_index": datetime(2026, 1, 18, 3, 30, tzinfo=UTC),  # Sunday 04:30 CET
            "morning_report": datetime(2026, 1, 12, 13, tzinfo=UTC),  # 08:00 EST
        }


async def test_notifications_are_rate_limited_and_pausable(asyncjobs_clock: ManualClock) -> None:
    db = ChatDB()
    runtime = create_runtime(
        "memory://", env="production", db=db, clock=asyncjobs_clock, shutdown_grace=0.1
    )
    async with Harness(runtime) as harness:
        await runtime.admin.pause("notification", actor="ops")
        await runtime.enqueue_many([send_notification.call(n, "news") for n in range(150)])
        await harness.advance(10)
        counts = (await queue_counts(runtime))["notification"]
        assert counts["paused"] is True
        assert counts["waiting"] == 150
        assert db.sent == []
        await runtime.admin.resume("notification", actor="ops")
        await harness.advance(1)
        assert len(db.sent) == 100  # 100 a minute
        await harness.advance(60)
        assert len(db.sent) == 150
        actions = [(e.actor, e.action, e.target) for e in await runtime.admin.audit()]
        assert actions[:2] == [
            ("ops", "queue.resume", "notification"),
            ("ops", "queue.pause", "notification"),
        ]


async def test_structured_logs_and_metrics(
    asyncjobs_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    db = ChatDB()
    db.unreachable_users = {13}
    runtime = create_runtime("memory://", db=db, clock=asyncjobs_clock, shutdown_grace=0.1)
    metrics = instrument(runtime, CollectorRegistry())
    caplog.set_level(logging.INFO, logger="asyncjobs")
    with log_events(runtime):
        async with Harness(runtime) as harness, metrics:
            await runtime.admin.pause("notification", actor="ops")
            await send_notification.enqueue(1, "hi")
            await send_notification.enqueue(13, "hi")
            await runtime.admin.resume("notification", actor="ops")
            await harness.advance(10)
            await metrics.refresh()
            text = generate_latest(metrics.registry).decode()
    events = [getattr(r, "job_event", None) for r in caplog.records if r.name == "asyncjobs.jobs"]
    assert {"started", "completed", "retrying", "dead"} <= set(events)
    audit = [r for r in caplog.records if r.name == "asyncjobs.audit"]
    assert [getattr(r, "action", None) for r in audit] == ["queue.pause", "queue.resume"]
    assert all(getattr(r, "actor", None) == "ops" for r in audit)
    labels = 'job_name="chat.send_notification",queue="notification"'
    assert f"asyncjobs_jobs_completed_total{{{labels}}} 1.0" in text  # processed
    assert f"asyncjobs_jobs_failed_total{{{labels}}} 2.0" in text  # failed attempts
    assert "asyncjobs_job_run_seconds_bucket" in text  # processing time
    assert 'asyncjobs_queue_jobs{queue="notification",state="dead"} 1.0' in text  # queue size
    assert "asyncjobs_workers 1.0" in text  # active workers


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[str]:
    from tests.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        pytest.skip("redis-server is not installed")
    with RedisServer(password="s3cret pass", appendonly=True, appendfsync="no") as server:
        yield server.url


async def test_redis_with_a_password(redis_with_password: str) -> None:
    db = ChatDB()
    runtime = create_runtime(redis_with_password, db=db, shutdown_grace=0.5)
    assert "s3cret" not in repr(runtime.backend)
    async with runtime:
        with runtime.events.subscribe(JobCompleted, JobDied) as outcomes:
            await runtime.admin.pause("notification", actor="ops")
            await send_notification.enqueue(7, "over redis")
            assert (await queue_counts(runtime))["notification"]["paused"] is True
            await runtime.admin.resume("notification", actor="ops")
            with anyio.fail_after(10):
                event = await outcomes.receive()
        assert isinstance(event, JobCompleted)
        assert db.sent == [(7, "over redis")]
        assert [e.action for e in await runtime.admin.audit(limit=2)] == [
            "queue.resume",
            "queue.pause",
        ]
    wrong = redis_with_password.replace("s3cret%20pass", "wrong")
    with pytest.raises(BackendError) as failure:
        async with JobRuntime(wrong):
            pass
    assert "wrong" not in str(failure.value)


def test_the_script_runs(tmp_path: Path) -> None:
    out = run_script("chat.py", tmp_path)
    assert '"waiting": 3' in out
    assert '"paused": true' in out
    assert "audit: ops@chat queue.pause notification: ok" in out
    assert "schedule nightly_cleanup: 0 3 * * * Europe/Berlin" in out
    assert "asyncjobs_workers 1.0" in out
