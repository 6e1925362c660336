"""Workload 5, the order sync scheduler: a day of ticks on two instances, and its admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from asyncjobs import JobRuntime, ManualClock
from asyncjobs.testing import Harness, advance
from asyncjobs.web import Identity
from examples.workloads.order_sync import OrderSystem, create_app, create_runtime
from tests.workloads.conftest import run_script

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
VIEWER = {"Authorization": "Bearer viewer-token-0123456789"}
TOKENS = {
    "admin-token-0123456789": Identity("ops", "admin"),
    "viewer-token-0123456789": Identity("support", "viewer"),
}
MONDAY = datetime(2026, 6, 1, tzinfo=UTC)


async def test_two_instances_run_each_tick_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    clock = ManualClock(MONDAY)
    orders = OrderSystem()
    first = create_runtime(url, orders=orders, clock=clock, worker_id="one", shutdown_grace=0.1)
    second = create_runtime(url, orders=orders, clock=clock, worker_id="two", shutdown_grace=0.1)
    async with first, second:
        await advance([first, second], timedelta(days=1))
        runs = {
            name: await first.list_jobs(schedule=name, limit=100)
            for name in ("business_hours_sync", "full_sync", "daily_cleanup")
        }
        counts = {name: len(jobs) for name, jobs in runs.items()}
        assert counts == {"business_hours_sync": 13, "full_sync": 4, "daily_cleanup": 1}
        hours = sorted(datetime.fromtimestamp(j.fire_at or 0, UTC).hour for j in runs["full_sync"])
        assert hours == [0, 6, 12, 18]  # midnight is the end of the day (the start is not a tick)
        business = sorted(
            datetime.fromtimestamp(j.fire_at or 0, UTC).hour for j in runs["business_hours_sync"]
        )
        assert business == list(range(8, 21))
        assert all(job.state == "complete" for jobs in runs.values() for job in jobs)
        workers = {job.worker_id for jobs in runs.values() for job in jobs}
        assert workers <= {"one", "two"}


async def test_the_schedules_follow_their_time_zone(asyncjobs_clock: ManualClock) -> None:
    runtime = create_runtime("memory://", clock=asyncjobs_clock, timezone="America/New_York")
    async with Harness(runtime) as harness:  # 2026-01-01 00:00 UTC is 19:00 EST
        await harness.assert_next_fire(
            "business_hours_sync", datetime(2026, 1, 1, 1, tzinfo=UTC)
        )  # 20:00 EST
        await harness.assert_next_fire("daily_cleanup", datetime(2026, 1, 1, 7, tzinfo=UTC))


@pytest.fixture
async def api(asyncjobs_clock: ManualClock) -> AsyncIterator[tuple[JobRuntime, httpx.AsyncClient]]:
    asyncjobs_clock.set(MONDAY + timedelta(hours=7, minutes=30))
    runtime = create_runtime("memory://", clock=asyncjobs_clock, shutdown_grace=0.1)
    app = create_app(runtime, TOKENS)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
            yield runtime, client


async def test_admin_api_start_stop_trigger_next_runs_and_history(
    api: tuple[JobRuntime, httpx.AsyncClient], asyncjobs_clock: ManualClock
) -> None:
    runtime, client = api
    assert (await client.get("/api/schedules")).status_code == 401
    for action in ("trigger", "pause", "resume"):
        reply = await client.post(f"/api/schedules/full_sync/{action}", headers=VIEWER)
        assert reply.status_code == 403  # admin-only

    schedules = {
        s["name"]: s
        for s in (await client.get("/api/schedules", headers=VIEWER)).json()["schedules"]
    }
    assert [
        datetime.fromtimestamp(t, UTC).hour
        for t in schedules["business_hours_sync"]["next_fire_times"]
    ] == [8, 9, 10, 11, 12]
    assert schedules["full_sync"]["next_fire_at"] == (MONDAY + timedelta(hours=12)).timestamp()

    triggered = await client.post("/api/schedules/full_sync/trigger", headers=ADMIN)
    assert triggered.status_code == 201
    stopped = await client.post("/api/schedules/business_hours_sync/pause", headers=ADMIN)
    assert stopped.json()["paused"] is True
    await advance(runtime, timedelta(hours=2))  # 08:00 and 09:00 pass while it is stopped
    assert await runtime.list_jobs(schedule="business_hours_sync") == []
    started = await client.post("/api/schedules/business_hours_sync/resume", headers=ADMIN)
    assert started.json()["paused"] is False
    await advance(runtime, timedelta(hours=1))

    schedules = {
        s["name"]: s
        for s in (await client.get("/api/schedules", headers=VIEWER)).json()["schedules"]
    }
    [last] = schedules["full_sync"]["recent_runs"]
    assert last["state"] == "complete"
    assert last["started_at"] is not None
    assert last["finished_at"] >= last["started_at"]
    assert last["result"] == {"mode": "full", "fetched": 12, "updated": 12}
    history = schedules["business_hours_sync"]["recent_runs"]
    assert history
    assert {run["state"] for run in history} == {"complete"}
    actions = [
        e["action"] for e in (await client.get("/api/audit", headers=VIEWER)).json()["entries"]
    ]
    assert actions[:3] == ["schedule.resume", "schedule.pause", "schedule.trigger"]


def test_the_script_runs(tmp_path: Path) -> None:
    out = run_script("order_sync.py", tmp_path)
    assert "without a token: 401" in out
    assert "viewer triggers: 403" in out
    assert "business_hours_sync: 0 8-20 * * * (UTC)" in out
    assert "trigger full_sync now: 201" in out
    assert "full_sync last run: complete" in out
    assert "each tick once" in out
