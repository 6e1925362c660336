"""Workload 5, an order sync scheduler (node-cron with an admin API), as an asyncjobs app.

What it shows, one library feature per requirement:

- Hourly from 08:00 to 20:00 (``"0 8-20 * * *"``), every 6 hours at
  00/06/12/18 (``"0 0,6,12,18 * * *"``) and a daily cleanup at 02:00
  (``"0 2 * * *"``): ``runtime.cron(..., timezone=)`` schedules, stored in
  the backend; the syncs skip a tick while the previous run is still going
  (``overlap=False``).
- Start and stop, trigger now, next run times, run history with last start,
  end and result: the admin app's schedule routes. ``POST
  /api/schedules/{name}/pause`` stops a schedule in every instance,
  ``.../resume`` starts it again, ``.../trigger`` runs it now; ``GET
  /api/schedules`` lists each with ``next_fire_times`` and ``recent_runs``
  (state, ``started_at``, ``finished_at``, ``result``).
- Admin-only routes: ``admin_app(runtime, auth=bearer_tokens({...}))`` with
  an ``admin`` token for the operators; a ``viewer`` token reads only (403
  on every action); no token gets 401. Every action is in the audit trail.
- Two app instances on one store running each tick once: every instance
  runs the same schedules; each fire time is claimed by one atomic
  compare-and-set in the store, so a tick runs once however many instances
  share the SQLite file, Redis or PostgreSQL. The demo runs two instances on
  one SQLite file with a per-second tick and counts the runs. (On an SQLite
  with the WAL-reset bug the store warns that several writing processes are
  unsafe; the demo, one process, silences that warning.)

Run it::

    python examples/workloads/order_sync.py      # two instances on sqlite:///orders.db, ~2 s
    python examples/workloads/order_sync.py --serve --port 8000   # serve the admin API (uvicorn)
    python examples/workloads/order_sync.py --url redis://localhost:6379/0 --serve
    asyncjobs worker examples.workloads.order_sync:runtime    # another instance, without HTTP
    curl -H "Authorization: Bearer $ORDER_SYNC_TOKEN" localhost:8000/api/schedules

Its test is ``tests/workloads/test_order_sync.py``: a day of ticks on two
instances sharing one SQLite file, on a ManualClock.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncjobs import Clock, Event, JobContext, JobRegistry, JobRuntime, ScheduleFired
from asyncjobs.backends import Backend
from asyncjobs.backends.sqlite import UnsafeSQLiteWarning
from asyncjobs.web import Identity, admin_app, bearer_tokens

DEFAULT_URL = "sqlite:///orders.db"
#: The schedules: name -> (cron expression, the sync's mode).
SYNCS = {
    "business_hours_sync": ("0 8-20 * * *", "incremental"),
    "full_sync": ("0 0,6,12,18 * * *", "full"),
}


@dataclasses.dataclass
class SyncResult:
    """What one sync run did (kept as the run's result)."""

    mode: str
    fetched: int
    updated: int


class OrderSystem:
    """The shop's and the ERP's order books (counters here), as ``ctx.state``."""

    def __init__(self) -> None:
        self.pending = 12
        self.synced = 0
        self.log_lines = 0


jobs = JobRegistry()


@jobs.job(name="orders.sync", max_attempts=3, timeout=600)
async def sync_orders(ctx: JobContext, mode: str) -> SyncResult:
    """Copy new orders from the shop to the ERP."""
    orders: OrderSystem = ctx.state
    fetched = orders.pending if mode == "full" else min(orders.pending, 5)
    orders.pending -= fetched
    orders.synced += fetched
    orders.log_lines += 1
    return SyncResult(mode, fetched, fetched)


@jobs.job(name="orders.cleanup", max_attempts=2)
async def cleanup_sync_log(ctx: JobContext) -> int:
    """Drop the day's sync log."""
    orders: OrderSystem = ctx.state
    dropped, orders.log_lines = orders.log_lines, 0
    return dropped


def create_runtime(
    url: str | Backend | None = None,
    *,
    orders: OrderSystem | None = None,
    clock: Clock | None = None,
    timezone: str | None = None,
    **options: Any,
) -> JobRuntime:
    """One instance of the scheduler on the store at *url* ($ASYNCJOBS_URL, else orders.db).

    :param timezone: the zone the cron times are read in ($ORDER_SYNC_TZ, else UTC).
    """
    zone = timezone or os.environ.get("ORDER_SYNC_TZ") or "UTC"
    options.setdefault("retention", {"complete": timedelta(days=7)})  # the run history
    runtime = JobRuntime(
        url or os.environ.get("ASYNCJOBS_URL") or DEFAULT_URL,
        queues={"default": 2},
        state=orders if orders is not None else OrderSystem(),
        clock=clock,
        **options,
    )
    runtime.include(jobs)
    for name, (expression, mode) in SYNCS.items():
        runtime.cron(expression, timezone=zone, name=name, args=(mode,), overlap=False)(sync_orders)
    runtime.cron("0 2 * * *", timezone=zone, name="daily_cleanup")(cleanup_sync_log)
    return runtime


def create_app(runtime: JobRuntime, tokens: Mapping[str, Identity]) -> Starlette:
    """The instance's HTTP side: the admin API behind *tokens*, the runtime in its lifespan."""
    api = admin_app(runtime, auth=bearer_tokens(tokens), title="order sync")
    return Starlette(lifespan=runtime.lifespan, routes=[Mount("/", app=api)])


async def demo(url: str | None, seconds: float) -> None:
    import httpx

    url = url or os.environ.get("ASYNCJOBS_URL") or DEFAULT_URL
    # Two instances sharing one SQLite file is this demo's point; on an SQLite with
    # the WAL-reset bug the store warns that several writers of a file are unsafe
    # (use Redis or PostgreSQL, or a fixed SQLite, for instances on several processes).
    warnings.filterwarnings("ignore", category=UnsafeSQLiteWarning)
    admin_token, viewer_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    tokens = {admin_token: Identity("ops", "admin"), viewer_token: Identity("support", "viewer")}
    orders = OrderSystem()
    first = create_runtime(url, orders=orders, worker_id="instance-1", shutdown_grace=1)
    second = create_runtime(url, orders=orders, worker_id="instance-2", shutdown_grace=1)
    # A per-second tick, for the demo only: the real schedules fire hours apart.
    for instance in (first, second):
        instance.cron("* * * * * *", name="demo_tick", args=("incremental",))(sync_orders)
    app = create_app(first, tokens)
    fired: Counter[str] = Counter()

    def count_ticks(who: str) -> Callable[[Event], None]:
        def count(event: Event) -> None:
            if isinstance(event, ScheduleFired) and event.schedule == "demo_tick":
                fired[who] += 1

        return count

    for instance in (first, second):
        instance.events.on(ScheduleFired, callback=count_ticks(instance.worker_id))
    admin = {"Authorization": f"Bearer {admin_token}"}
    viewer = {"Authorization": f"Bearer {viewer_token}"}
    async with app.router.lifespan_context(app), second:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
            print("without a token:", (await client.get("/api/schedules")).status_code)
            print(
                "viewer triggers:",
                (await client.post("/api/schedules/full_sync/trigger", headers=viewer)).status_code,
            )
            schedules = (await client.get("/api/schedules", headers=viewer)).json()["schedules"]
            for schedule in schedules:
                if schedule["name"] in SYNCS or schedule["name"] == "daily_cleanup":
                    trigger = schedule["trigger"]
                    print(f"{schedule['name']}: {trigger['expression']} ({trigger['timezone']})")
            reply = await client.post("/api/schedules/full_sync/trigger", headers=admin)
            print("trigger full_sync now:", reply.status_code)
            stopped = await client.post("/api/schedules/business_hours_sync/pause", headers=admin)
            print("stop business_hours_sync: paused =", stopped.json()["paused"])
            started = await client.post("/api/schedules/business_hours_sync/resume", headers=admin)
            print("start business_hours_sync: paused =", started.json()["paused"])
            await anyio.sleep(seconds)
            with anyio.fail_after(10):  # a loaded machine may still be running the sync
                while True:
                    reply = await client.get("/api/schedules", headers=viewer)
                    full = next(s for s in reply.json()["schedules"] if s["name"] == "full_sync")
                    last = full["recent_runs"][0] if full["recent_runs"] else {}
                    if last.get("finished_at") is not None:
                        break
                    await anyio.sleep(0.05)
            took = (last["finished_at"] - last["started_at"]) * 1000
            print(f"full_sync last run: {last['state']}, {took:.0f} ms, result {last['result']}")
            print("full_sync next runs:", len(full["next_fire_times"]))
        await first.schedules.remove("demo_tick")  # stored schedules outlive their decorators
    ticks = sum(fired.values())
    runs = len(await _runs(url, "demo_tick"))
    verdict = "each tick once" if ticks == runs else "TICKS AND RUNS DIFFER"
    print(f"demo_tick: {ticks} ticks fired by two instances, {runs} runs: {verdict}")
    print("fired by:", dict(sorted(fired.items())))


async def _runs(url: str, schedule: str) -> list[Any]:
    from asyncjobs import Admin

    async with Admin.open(url) as admin:
        return await admin.list_jobs(schedule=schedule, limit=1000)


def main() -> None:
    parser = argparse.ArgumentParser(description="an order sync scheduler on asyncjobs")
    parser.add_argument("--url", help=f"store URL (default $ASYNCJOBS_URL or {DEFAULT_URL})")
    parser.add_argument("--seconds", type=float, default=1.5, help="how long the demo runs")
    parser.add_argument("--serve", action="store_true", help="serve the admin API with uvicorn")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not args.serve:
        anyio.run(demo, args.url, args.seconds)
        return
    import uvicorn

    token = os.environ.get("ORDER_SYNC_TOKEN") or secrets.token_urlsafe(16)
    if "ORDER_SYNC_TOKEN" not in os.environ:
        print(f"ORDER_SYNC_TOKEN={token}")
    app = create_app(create_runtime(args.url), {token: Identity("ops", "admin")})
    uvicorn.run(app, port=args.port)


#: ``asyncjobs worker examples.workloads.order_sync:runtime`` runs an instance without HTTP.
runtime = create_runtime()

if __name__ == "__main__":
    main()
