"""Workload 1, logistics pattern analysis: every requirement, on a ManualClock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from asyncjobs import BackendError, JobRuntime, JobStarted, JobState, ManualClock
from asyncjobs.integrations.prometheus import instrument
from asyncjobs.testing import Harness
from examples.workloads.logistics import (
    Shipment,
    ShipmentDB,
    analyze_patterns,
    create_runtime,
    notify_customer,
    record_shipment,
    refresh_carrier_rates,
    screen_compliance,
    weekly_report,
)
from tests.workloads.conftest import run_script

pytestmark = pytest.mark.anyio


def shipment(n: int, customer: str, *, hazardous: bool = False) -> Shipment:
    return Shipment(f"s-{n}", customer, "HAM", "MUC" if n % 2 else "BER", 500.0, hazardous)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"


async def test_one_delayed_analysis_per_customer(url: str, asyncjobs_clock: ManualClock) -> None:
    db = ShipmentDB()
    runtime = create_runtime(url, db=db, clock=asyncjobs_clock, shutdown_grace=0.1)
    async with Harness(runtime) as harness:
        for n in range(3):
            await record_shipment(db, shipment(n, "c-1", hazardous=n == 0))
        await record_shipment(db, shipment(3, "c-2"))
        await harness.assert_enqueued(analyze_patterns.options(delay=30), "c-1", count=1)
        await harness.assert_enqueued(analyze_patterns.options(delay=30), "c-2", count=1)
        await harness.advance(29)
        assert db.reports == {}
        assert len(db.notified) == 4
        assert db.screened == ["s-0"]
        await harness.advance(1)
        assert db.reports["c-1"].shipments == 3
        assert db.reports["c-2"].shipments == 1
        harness.assert_ran(analyze_patterns, ["complete", "complete"])
        # Once the analysis has started, the next event queues a fresh one.
        await record_shipment(db, shipment(4, "c-1"))
        await harness.assert_enqueued(analyze_patterns, "c-1", count=2)


async def test_a_failed_enqueue_never_fails_the_shipment(
    asyncjobs_clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ShipmentDB()
    runtime = create_runtime("memory://", db=db, clock=asyncjobs_clock, shutdown_grace=0.1)
    async with Harness(runtime):

        async def store_down(*args: object, **kwargs: object) -> None:
            raise BackendError("the store is unreachable")

        monkeypatch.setattr(runtime.backend, "enqueue", store_down)
        assert await record_shipment(db, shipment(1, "c-1")) is None
        assert "s-1" in db.shipments  # the shipment is stored


async def test_queues_share_ten_workers_six_two_one_one(asyncjobs_clock: ManualClock) -> None:
    runtime = create_runtime("memory://", clock=asyncjobs_clock, shutdown_grace=0.1)
    assert runtime.queue_plan.max_concurrency == 10
    starts: Counter[str] = Counter()
    with runtime.events.subscribe(JobStarted) as events:
        async with runtime:
            await runtime.enqueue_many(
                [notify_customer.call(shipment(n, "c")) for n in range(700)]
                + [analyze_patterns.call(f"c-{n}") for n in range(700)]
                + [screen_compliance.call(shipment(n, "c")) for n in range(700)]
                + [refresh_carrier_rates.call() for _ in range(700)]
            )
            async for event in events:
                assert isinstance(event, JobStarted)
                starts[event.queue] += 1
                if starts.total() == 1000:
                    break
    for queue, share in {
        "critical": 600,
        "pattern": 200,
        "compliance": 100,
        "default": 100,
    }.items():
        assert abs(starts[queue] - share) <= 20, starts


async def test_retries_at_1_2_4_8_16_seconds_then_dead(asyncjobs_clock: ManualClock) -> None:
    db = ShipmentDB()
    db.failing_customers.add("c-9")
    runtime = create_runtime("memory://", db=db, clock=asyncjobs_clock, shutdown_grace=0.1)
    async with Harness(runtime) as harness:
        start = asyncjobs_clock.now()
        await analyze_patterns.enqueue("c-9")
        await harness.advance(timedelta(minutes=5))
        runs = harness.assert_ran(analyze_patterns, ["retrying"] * 5 + ["dead"])
        assert [round(run.at.timestamp() - start) for run in runs] == [0, 1, 3, 7, 15, 31]
        assert {run.error_type for run in runs} == {"ConnectionError"}
    # Each job type has its own maximum.
    attempts = {
        name: runtime.definition(name).max_attempts
        for name in (
            "logistics.notify_customer",
            "logistics.analyze_patterns",
            "logistics.screen_compliance",
        )
    }
    assert attempts == {
        "logistics.notify_customer": 10,
        "logistics.analyze_patterns": 6,
        "logistics.screen_compliance": 3,
    }


async def test_a_week_of_cron() -> None:
    clock = ManualClock(datetime(2026, 6, 1, tzinfo=UTC))  # a Monday
    db = ShipmentDB()
    runtime = create_runtime("memory://", db=db, clock=clock, shutdown_grace=0.1)
    async with Harness(runtime) as harness:
        await harness.advance(timedelta(days=7))
        assert db.maintenance == {
            "daily_rollup": 7,
            "weekly_report": 1,
            "refresh_carrier_rates": 28,
        }
        harness.assert_ran(weekly_report, ["complete"])
        await harness.assert_next_fire("weekly_report", datetime(2026, 6, 14, 1, tzinfo=UTC))
        await harness.assert_next_fire("daily_rollup", datetime(2026, 6, 8, 2, tzinfo=UTC))


async def test_times_rates_and_depths_are_visible(asyncjobs_clock: ManualClock) -> None:
    db = ShipmentDB()
    db.failing_customers.add("c-bad")
    runtime = create_runtime("memory://", db=db, clock=asyncjobs_clock, shutdown_grace=0.1)
    metrics = instrument(runtime, CollectorRegistry())
    async with Harness(runtime) as harness, metrics:
        await record_shipment(db, shipment(1, "c-1"))
        await record_shipment(db, shipment(2, "c-bad"))
        await harness.advance(60)  # c-1's analysis done, c-bad's retrying
        await metrics.refresh()
        text = generate_latest(metrics.registry).decode()
        overviews = {o.queue: o for o in await runtime.admin.queues()}
    assert (
        'asyncjobs_jobs_completed_total{job_name="logistics.analyze_patterns",queue="pattern"} 1.0'
        in text
    )
    assert (
        'asyncjobs_jobs_failed_total{job_name="logistics.analyze_patterns",queue="pattern"}' in text
    )
    assert 'asyncjobs_job_run_seconds_count{job_name="logistics.notify_customer"' in text
    assert 'asyncjobs_queue_jobs{queue="pattern",state="delayed"} 1.0' in text
    pattern = overviews["pattern"]
    assert pattern.counts[JobState.COMPLETE] == 1
    assert pattern.delayed == 1
    assert pattern.run is not None


def test_the_script_runs(tmp_path: Path) -> None:
    out = run_script("logistics.py", tmp_path)
    assert "9 shipment events -> 2 pattern analyses (one per customer), due in 30 s" in out
    assert "schedule weekly_report: next at" in out
    assert "notified 9 customers, screened 3 hazardous shipments" in out
    assert (tmp_path / "logistics.db").exists()


def test_the_module_runtime_is_what_the_worker_runs() -> None:
    from examples.workloads import logistics

    assert isinstance(logistics.runtime, JobRuntime)
    assert set(logistics.runtime.queues) == {"critical", "pattern", "compliance", "default"}


async def test_the_dashboard_and_its_metrics_show_the_queues(asyncjobs_clock: ManualClock) -> None:
    import httpx

    from asyncjobs.web import Identity
    from examples.workloads.logistics import create_app

    db = ShipmentDB()
    runtime = create_runtime("memory://", db=db, clock=asyncjobs_clock, shutdown_grace=0.1)
    token = "ops-token-0123456789"
    app = create_app(runtime, {token: Identity("ops", "admin")})
    headers = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app), Harness(runtime) as harness:
        await record_shipment(db, shipment(1, "c-1"))
        await harness.advance(1)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            assert (await client.get("/admin/")).status_code in (302, 303, 307, 401)
            page = await client.get("/admin/", headers=headers)
            queues = (await client.get("/admin/api/queues", headers=headers)).json()["queues"]
            metrics = (await client.get("/admin/metrics", headers=headers)).text
    assert page.status_code == 200
    assert "critical" in page.text
    assert "pattern" in page.text
    assert {queue["queue"] for queue in queues} >= {"critical", "pattern"}  # the queues with jobs
    assert (
        'asyncjobs_jobs_completed_total{job_name="logistics.notify_customer",queue="critical"} 1.0'
        in metrics
    )
