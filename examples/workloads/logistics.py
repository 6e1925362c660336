"""Workload 1, logistics pattern analysis (an Asynq service), as one asyncjobs app.

What it shows, one library feature per requirement:

- A shipment event enqueues a pattern analysis for its customer, due 30 s
  later and de-duplicated per customer: ``options(key="pattern:<customer>",
  key_scope="queued", delay=30)``. Events that arrive while the analysis waits
  join it; one that arrives while it runs queues the next one.
- A failure to enqueue never fails the shipment: every error the library
  raises (a store that is down included) is an ``AsyncJobsError``, so
  :func:`record_shipment` stores the shipment first and logs a failed enqueue.
- Queues ``critical`` / ``pattern`` / ``compliance`` / ``default`` share 10
  workers 6 : 2 : 1 : 1: ``Queue(weight=)`` with ``max_concurrency=10``.
- Retries 1, 2, 4, 8, 16 s then dead: ``ExponentialBackoff(base=1, cap=16,
  jitter=False)`` with ``max_attempts=6`` on the pattern job; each job type
  has its own maximum (``max_attempts=`` per job).
- Cron daily at 02:00, Sundays at 01:00 and every 6 hours: three
  ``runtime.cron(..., timezone=)`` schedules, each tick once per cluster.
- Processing times, success and failure rates and queue depths: in the
  console (``asyncjobs status --url URL``), the admin dashboard
  (``asyncjobs.web.admin_app``: ``--serve PORT`` serves it at ``/admin``, with
  the Prometheus metrics at ``/admin/metrics``) and Prometheus
  (``asyncjobs.integrations.prometheus``: ``--metrics HOST:PORT`` serves
  ``/metrics`` on its own); the demo prints ``runtime.admin.queues()``.
- The app's own resources (its shipment database) reach the handlers as
  ``ctx.state`` (``JobRuntime(state=...)``).

Run it::

    python examples/workloads/logistics.py                  # a short demo on sqlite:///logistics.db
    python examples/workloads/logistics.py --seconds 600 --metrics 127.0.0.1:9100
    python examples/workloads/logistics.py --serve 8000     # the dashboard at /admin
    python examples/workloads/logistics.py --url redis://localhost:6379/0
    python examples/workloads/logistics.py --url postgresql://user:pw@localhost/jobs
    asyncjobs worker examples.workloads.logistics:runtime   # a separate worker ($ASYNCJOBS_URL)
    asyncjobs status --url sqlite:///logistics.db           # the console view

Its test is ``tests/workloads/test_logistics.py``: a week of cron and the
retry ladder on a ManualClock, in milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncjobs import (
    AsyncJobsError,
    Clock,
    ExponentialBackoff,
    JobContext,
    JobHandle,
    JobRegistry,
    JobRuntime,
    Queue,
)
from asyncjobs.backends import Backend
from asyncjobs.web import Identity

logger = logging.getLogger("logistics")

DEFAULT_URL = "sqlite:///logistics.db"
#: Asynq's queue weights, sharing 10 workers.
WEIGHTS = {"critical": 6, "pattern": 2, "compliance": 1, "default": 1}
#: How long after a shipment event its customer's pattern analysis runs.
ANALYSIS_DELAY = timedelta(seconds=30)
#: 1, 2, 4, 8, 16 s between the six attempts, then dead.
RETRY_LADDER = ExponentialBackoff(base=1, factor=2, cap=16, jitter=False)


@dataclasses.dataclass
class Shipment:
    """A shipment event, as the carrier integration reports it."""

    id: str
    customer_id: str
    origin: str
    destination: str
    weight_kg: float
    hazardous: bool = False


@dataclasses.dataclass
class PatternReport:
    """What the analysis found for one customer."""

    customer_id: str
    shipments: int
    top_lane: str
    hazardous_share: float


class ShipmentDB:
    """The app's own database (a dict here); handlers reach it as ``ctx.state``."""

    def __init__(self) -> None:
        self.shipments: dict[str, Shipment] = {}
        self.reports: dict[str, PatternReport] = {}
        self.notified: list[str] = []
        self.screened: list[str] = []
        self.maintenance: Counter[str] = Counter()
        #: Customers whose analysis fails (an upstream model that is down), for the demo/tests.
        self.failing_customers: set[str] = set()

    def of_customer(self, customer_id: str) -> list[Shipment]:
        return [s for s in self.shipments.values() if s.customer_id == customer_id]


jobs = JobRegistry()


@jobs.job(name="logistics.notify_customer", queue="critical", max_attempts=10, timeout=10)
async def notify_customer(ctx: JobContext, shipment: Shipment) -> None:
    """Tell the customer their shipment is booked (critical: most of the workers)."""
    db: ShipmentDB = ctx.state
    db.notified.append(shipment.id)


@jobs.job(
    name="logistics.analyze_patterns",
    queue="pattern",
    max_attempts=6,
    backoff=RETRY_LADDER,
    timeout=120,
)
async def analyze_patterns(ctx: JobContext, customer_id: str) -> PatternReport:
    """Find the customer's busiest lane and hazardous share over all its shipments."""
    db: ShipmentDB = ctx.state
    if customer_id in db.failing_customers:
        raise ConnectionError("pattern model unavailable")
    shipments = db.of_customer(customer_id)
    lanes = Counter(f"{s.origin}->{s.destination}" for s in shipments)
    report = PatternReport(
        customer_id=customer_id,
        shipments=len(shipments),
        top_lane=lanes.most_common(1)[0][0] if lanes else "",
        hazardous_share=sum(s.hazardous for s in shipments) / max(1, len(shipments)),
    )
    db.reports[customer_id] = report
    return report


@jobs.job(name="logistics.screen_compliance", queue="compliance", max_attempts=3, backoff=5)
async def screen_compliance(ctx: JobContext, shipment: Shipment) -> bool:
    """Check a hazardous shipment against the dangerous-goods rules."""
    db: ShipmentDB = ctx.state
    db.screened.append(shipment.id)
    return shipment.weight_kg < 10_000


@jobs.job(name="logistics.daily_rollup", queue="default", max_attempts=2)
async def daily_rollup(ctx: JobContext) -> int:
    """Roll yesterday's shipments up into the warehouse (cron, daily 02:00)."""
    db: ShipmentDB = ctx.state
    db.maintenance["daily_rollup"] += 1
    return len(db.shipments)


@jobs.job(name="logistics.weekly_report", queue="default", max_attempts=2)
async def weekly_report(ctx: JobContext) -> int:
    """The weekly customer report (cron, Sundays 01:00)."""
    db: ShipmentDB = ctx.state
    db.maintenance["weekly_report"] += 1
    return len(db.reports)


@jobs.job(name="logistics.refresh_carrier_rates", queue="default", max_attempts=4)
async def refresh_carrier_rates(ctx: JobContext) -> None:
    """Pull the carriers' rate cards (cron, every 6 hours)."""
    db: ShipmentDB = ctx.state
    db.maintenance["refresh_carrier_rates"] += 1


def create_runtime(
    url: str | Backend | None = None,
    *,
    db: ShipmentDB | None = None,
    clock: Clock | None = None,
    timezone: str = "UTC",
    **options: object,
) -> JobRuntime:
    """The service's runtime: its queues, jobs and schedules, on the store at *url*.

    :param url: a store URL (default ``$ASYNCJOBS_URL``, else ``sqlite:///logistics.db``).
    :param db: the app's database, handed to the handlers as ``ctx.state``.
    :param clock: a ManualClock in tests.
    :param timezone: the IANA zone the cron schedules are read in.
    """
    runtime = JobRuntime(
        url or os.environ.get("ASYNCJOBS_URL") or DEFAULT_URL,
        queues={name: Queue(weight=weight) for name, weight in WEIGHTS.items()},
        max_concurrency=10,
        queue_selection="weighted",
        state=db if db is not None else ShipmentDB(),
        clock=clock,
        **options,  # type: ignore[arg-type]
    )
    runtime.include(jobs)
    runtime.cron("0 2 * * *", timezone=timezone, name="daily_rollup")(daily_rollup)
    runtime.cron("0 1 * * sun", timezone=timezone, name="weekly_report")(weekly_report)
    runtime.cron("0 */6 * * *", timezone=timezone, name="carrier_rates")(refresh_carrier_rates)
    return runtime


async def record_shipment(db: ShipmentDB, shipment: Shipment) -> JobHandle[PatternReport] | None:
    """Handle a shipment event: store it, then enqueue its follow-up jobs.

    The shipment is stored whatever happens to the enqueues: a store that is
    down, or any other :class:`~asyncjobs.AsyncJobsError`, is logged and the
    event still succeeds (the next event of the customer enqueues its analysis).

    :returns: the customer's pending analysis, or ``None`` when it could not be enqueued.
    """
    db.shipments[shipment.id] = shipment
    try:
        await notify_customer.enqueue(shipment)
        if shipment.hazardous:
            await screen_compliance.enqueue(shipment)
        return await analyze_patterns.options(
            key=f"pattern:{shipment.customer_id}", key_scope="queued", delay=ANALYSIS_DELAY
        ).enqueue(shipment.customer_id)
    except AsyncJobsError:
        logger.warning(
            "shipment %s stored; its follow-up jobs were not enqueued", shipment.id, exc_info=True
        )
        return None


def create_app(runtime: JobRuntime, tokens: Mapping[str, Identity]) -> Starlette:
    """The service's operator view: the admin dashboard and API (with ``/metrics``) at
    ``/admin`` behind bearer *tokens*, the runtime and its Prometheus metrics in the lifespan."""
    from asyncjobs.integrations.prometheus import instrument
    from asyncjobs.web import admin_app, bearer_tokens

    metrics = instrument(runtime)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with runtime, metrics:
            yield {"asyncjobs": runtime}

    dashboard = admin_app(runtime, auth=bearer_tokens(tokens), metrics=metrics, title="logistics")
    return Starlette(lifespan=lifespan, routes=[Mount("/admin", app=dashboard)])


#: ``asyncjobs worker examples.workloads.logistics:runtime`` runs this one ($ASYNCJOBS_URL).
runtime = create_runtime()


def _print_next_fires(fires: dict[str, datetime | None]) -> None:
    for name, fire in sorted(fires.items()):
        print(f"schedule {name}: next at {fire:%Y-%m-%d %H:%M %Z}" if fire else f"{name}: never")


async def demo(url: str | None, seconds: float, metrics_address: str | None) -> None:
    """Feed shipment events for *seconds* and show what the operators see."""
    db = ShipmentDB()
    app = create_runtime(url, db=db, shutdown_grace=1)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app)
        if metrics_address is not None:
            from asyncjobs.integrations.prometheus import serve

            metrics = await stack.enter_async_context(serve(app, metrics_address))
            host = metrics_address.rpartition(":")[0] or "0.0.0.0"
            print(f"metrics on http://{host}:{metrics.port}/metrics")
        handles = []
        lanes = [("HAM", "MUC"), ("HAM", "BER"), ("RTM", "HAM")]
        for n in range(9):
            origin, destination = lanes[n % 3]
            shipment = Shipment(f"s-{n}", f"c-{n % 2}", origin, destination, 100.0 * n, n % 4 == 0)
            handles.append(await record_shipment(db, shipment))
        pending = {h.id for h in handles if h is not None}
        print(
            f"9 shipment events -> {len(pending)} pattern analyses (one per customer), due in 30 s"
        )
        for job_id in sorted(pending):
            print("  ", (await app.admin.explain(job_id)).message)
        _print_next_fires({s.name: _utc(s.next_fire_at) for s in await app.schedules.list()})
        deadline = anyio.current_time() + seconds
        with anyio.move_on_after(seconds):
            while len(db.notified) < 9 or len(db.screened) < 3:
                await anyio.sleep(0.05)
        await anyio.sleep_until(deadline)  # a longer --seconds keeps serving (analyses at 30 s)
        print(f"notified {len(db.notified)} customers, ", end="")
        print(f"screened {len(db.screened)} hazardous shipments")
        for overview in await app.admin.queues():
            run = f"{overview.run.p50 * 1000:.1f} ms" if overview.run else "-"
            print(
                f"queue {overview.queue:10} waiting={overview.waiting} delayed={overview.delayed} "
                f"completed/min={overview.completed_per_minute:.1f} "
                f"failure rate={'-' if overview.failure_rate is None else overview.failure_rate} "
                f"p50 run={run}"
            )


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help=f"store URL (default $ASYNCJOBS_URL or {DEFAULT_URL})")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long to run (default 1)")
    parser.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics there")
    parser.add_argument(
        "--serve", type=int, metavar="PORT", help="serve the dashboard at /admin (uvicorn)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.serve is None:
        anyio.run(demo, args.url, args.seconds, args.metrics)
        return
    import secrets

    import uvicorn

    token = os.environ.get("LOGISTICS_TOKEN") or secrets.token_urlsafe(16)
    print(f"dashboard: http://127.0.0.1:{args.serve}/admin/login with token {token}")
    app = create_app(create_runtime(args.url), {token: Identity("ops", "admin")})
    uvicorn.run(app, port=args.serve)


if __name__ == "__main__":
    main()
