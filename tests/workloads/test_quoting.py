"""Workload 3, the quoting service: its jobs, its tenants and its HTTP API."""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from asyncjobs import Admin, JobRuntime, JobStarted, JobState, ManualClock
from asyncjobs.backends import MemoryBackend
from asyncjobs.testing import Harness, advance
from asyncjobs.web import Identity
from examples.workloads import quoting
from examples.workloads.quoting import (
    QuotingResources,
    Upload,
    analyze_file,
    calculate_quote,
    create_app,
    create_runtime,
    send_quote_email,
    tenant_options,
)
from tests.workloads.conftest import ROOT, run_script

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": "Bearer ops-token-0123456789"}
VIEWER = {"Authorization": "Bearer viewer-token-0123456789"}
TOKENS = {
    "ops-token-0123456789": Identity("ops", "admin"),
    "viewer-token-0123456789": Identity("support", "viewer"),
}


def upload(tenant: str, n: int = 1, material: str = "steel", pages: int = 2) -> Upload:
    return Upload(tenant, f"{tenant}-{n}", pages, material, f"buyer@{tenant}.example")


def create(name: str, *args: Any, tenant: str, **options: Any) -> dict[str, Any]:
    encoded = [dataclasses.asdict(a) if isinstance(a, Upload) else a for a in args]
    return {"name": name, "args": encoded, "options": tenant_options(tenant, **options)}


@pytest.fixture
def resources() -> QuotingResources:
    return QuotingResources()


@pytest.fixture
async def service(
    resources: QuotingResources, asyncjobs_clock: ManualClock
) -> AsyncIterator[tuple[JobRuntime, httpx.AsyncClient, Harness]]:
    runtime = create_runtime(
        "memory://", resources=resources, clock=asyncjobs_clock, shutdown_grace=0.1
    )
    app = create_app(runtime, TOKENS)
    async with app.router.lifespan_context(app), Harness(runtime) as harness:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quoting") as client:
            yield runtime, client, harness


async def test_the_api_creates_schedules_shows_retries_and_cancels(
    service: tuple[JobRuntime, httpx.AsyncClient, Harness], resources: QuotingResources
) -> None:
    _runtime, client, harness = service
    assert (await client.get("/api/jobs")).status_code == 401
    reply = await client.post(
        "/api/jobs",
        headers=VIEWER,
        json=create("quoting.analyze_file", upload("acme"), tenant="acme"),
    )
    assert reply.status_code == 403  # a viewer only reads
    reply = await client.post(
        "/api/jobs",
        headers=ADMIN,
        json=create("quoting.analyze_file", upload("acme"), tenant="acme"),
    )
    assert reply.status_code == 201
    job_id = reply.json()["job"]["id"]
    await harness.advance(1)
    status = (await client.get(f"/api/jobs/{job_id}", headers=VIEWER)).json()
    assert status["state"] == "complete"
    assert (status["progress"], status["progress_message"]) == (1.0, "page 2 of 2")
    assert resources.quotes["acme-1"].price == Decimal("105.00")  # 25 cm3 of steel
    assert resources.outbox == [("buyer@acme.example", "acme-1")]

    # Schedule: a report due in an hour, then cancelled by the operator.
    report = await client.post(
        "/api/jobs",
        headers=ADMIN,
        json=create("quoting.build_report", "acme", "2026-01", tenant="acme", delay=3600),
    )
    report_id = report.json()["job"]["id"]
    assert report.json()["job"]["due_at"] - report.json()["job"]["enqueued_at"] == 3600
    cancelled = await client.post(f"/api/jobs/{report_id}/cancel", headers=ADMIN)
    assert cancelled.json()["state"] == "cancelled"

    # A quote that can never be priced is dead at once; the operator lists and retries it.
    await client.post(
        "/api/jobs",
        headers=ADMIN,
        json=create("quoting.analyze_file", upload("acme", 2, "unobtainium"), tenant="acme"),
    )
    await harness.advance(1)
    [dead] = (await client.get("/api/jobs?state=dead", headers=VIEWER)).json()["jobs"]
    assert dead["name"] == "quoting.calculate_quote"
    assert dead["attempts"] == 1
    assert dead["partition"] == "acme"
    quoting.MATERIALS["unobtainium"] = Decimal("99")
    try:
        retried = await client.post(f"/api/jobs/{dead['id']}/retry", headers=ADMIN)
        assert retried.json()["state"] == "queued"
        await harness.advance(1)
    finally:
        del quoting.MATERIALS["unobtainium"]
    assert resources.quotes["acme-2"].price == Decimal("2475.00")  # 2 pages: 25 cm3 at 99
    actions = [
        e["action"] for e in (await client.get("/api/audit", headers=VIEWER)).json()["entries"]
    ]
    assert {"job.enqueue", "job.cancel", "job.retry"} <= set(actions)

    health = await client.get("/healthz", headers=VIEWER)
    assert health.status_code == 200
    metrics = (await client.get("/metrics", headers=VIEWER)).text
    assert 'asyncjobs_queue_jobs{queue="quotes",state="dead"}' in metrics


async def test_jobs_are_scoped_to_tenants_and_tenants_take_turns(
    service: tuple[JobRuntime, httpx.AsyncClient, Harness], resources: QuotingResources
) -> None:
    runtime, client, harness = service
    resources.analysis_gate = anyio.Event()  # hold every analysis running
    calls = [
        analyze_file.options(partition="big", tags={"tenant": "big"}).call(upload("big", n))
        for n in range(8)
    ]
    calls += [
        analyze_file.options(partition="small", tags={"tenant": "small"}).call(upload("small"))
    ]
    await runtime.enqueue_many(calls)
    await harness.advance(1, wait_for_jobs=False)
    running = await runtime.list_jobs(state="running")
    assert sorted(job.partition or "" for job in running) == ["big", "big", "small"]  # 2 per tenant
    listing = (await client.get("/api/jobs?partition=small", headers=VIEWER)).json()["jobs"]
    assert [job["tags"] for job in listing] == [{"tenant": "small"}]
    by_tag = (await client.get("/api/jobs?tag=tenant:big", headers=VIEWER)).json()["jobs"]
    assert len(by_tag) == 8
    resources.analysis_gate.set()
    await harness.advance(5)
    follow_ups = await runtime.list_jobs(name="quoting.send_quote_email", partition="small")
    assert [dict(job.tags) for job in follow_ups] == [{"tenant": "small"}]  # passed on


async def test_priorities_and_per_type_attempts_backoff_and_timeouts(
    service: tuple[JobRuntime, httpx.AsyncClient, Harness], resources: QuotingResources
) -> None:
    runtime, _client, harness = service
    starts: list[str] = []
    runtime.events.on(JobStarted, callback=lambda e: starts.append(getattr(e, "job_id", "")))
    await runtime.pause("analysis")
    normal = await analyze_file.options(partition="acme").enqueue(upload("acme", 1))
    urgent = await analyze_file.options(partition="acme", priority=-10).enqueue(upload("acme", 2))
    await runtime.resume("analysis")
    await harness.advance(0)
    assert starts.index(urgent.id) < starts.index(normal.id)

    settings = {
        name: (d.max_attempts, d.timeout)
        for name, d in (
            (n, runtime.definition(n))
            for n in sorted(runtime.queue_settings and quoting.jobs.definitions)
        )
    }
    assert settings == {
        "quoting.analyze_file": (3, 300.0),
        "quoting.build_report": (2, 600.0),
        "quoting.calculate_quote": (5, 30.0),
        "quoting.send_quote_email": (8, 20.0),
    }
    resources.mail_down = True
    mail = await send_quote_email.enqueue("a@b.example", "x")
    await harness.advance(timedelta(hours=3))
    runs = [r for r in harness.runs if r.job_id == mail.id]
    assert [r.outcome for r in runs] == ["retrying"] * 7 + ["dead"]
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(runs)]
    assert all(gap <= min(3600, 10 * 2**n) for n, gap in enumerate(gaps)), gaps
    assert calculate_quote.definition.backoff is not None


async def test_a_crashed_workers_job_is_recovered_after_its_lease() -> None:
    clock = ManualClock(datetime(2026, 6, 1, tzinfo=UTC))
    store = MemoryBackend()
    worker = create_runtime(store, clock=clock, lease=10, shutdown_grace=0.1)
    # Made last, so the job functions enqueue through the web process.
    web = create_runtime(store, clock=clock, role="enqueue")
    async with web:
        handle = await analyze_file.enqueue(upload("acme"))
        # A worker claims it and dies mid-job: no heartbeat, no outcome.
        [claimed] = await store.claim("analysis", 1, "killed-worker", 10.0)
        assert claimed.id == handle.id
        async with Harness(worker) as harness:
            await advance([web, worker], timedelta(minutes=1))
            job = await handle.refresh()
            assert job.state is JobState.COMPLETE
            assert job.attempts == 2
            [attempt_1, _attempt_2] = (await worker.admin.job(handle.id)).attempts
            assert attempt_1.error_type == "LeaseExpired"
            harness.assert_ran(analyze_file, ["complete"])


@pytest.mark.slow
async def test_a_worker_killed_with_sigkill_mid_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'quoting.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.workloads.quoting_worker", url]
    async with await anyio.open_process(command, cwd=ROOT, env=env) as worker:
        assert worker.stdout is not None
        assert (await worker.stdout.receive()).strip() == b"ready"
        web = create_runtime(url, role="enqueue")
        async with web:
            handle = await analyze_file.enqueue(upload("acme", pages=3))
            with anyio.fail_after(10):
                while (await handle.status()) is not JobState.RUNNING:
                    await anyio.sleep(0.02)
            worker.kill()  # SIGKILL: no shutdown, no hand-back
            await worker.wait()
            resources = QuotingResources()
            async with create_runtime(url, resources=resources, lease=1.0, shutdown_grace=0.5):
                job = await handle.wait(timeout=10)
    assert job.state is JobState.COMPLETE
    assert job.attempts == 2
    async with Admin.open(url) as admin:
        attempts = (await admin.job(handle.id)).attempts
    assert attempts[0].worker_id == "doomed"
    assert attempts[0].error_type == "LeaseExpired"
    assert "acme-1" in resources.quotes


def test_the_script_runs(tmp_path: Path) -> None:
    out = run_script("quoting.py", tmp_path)
    assert "without a token: 401" in out
    assert "status: complete, progress 1.0 (page 3 of 3)" in out
    assert "dead: quoting.calculate_quote - no price list for material 'unobtainium'" in out
    assert "after the retry: quote 1237.50" in out
    assert "cancel report: cancelled" in out
    assert "health: 200 True" in out
