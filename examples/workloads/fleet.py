"""Workload 2, fleet operations (a Rust dog-queue system), as one asyncjobs app.

What it shows, one library feature per requirement:

- Typed job structs: the handlers take and return dataclasses
  (``Assignment``, ``Position``, ``Dispatch``); the runtime converts them by
  their annotations, stores them as JSON, and refuses a payload that does not
  fit at the enqueue call.
- Permanent versus retryable errors: ``raise Permanent(...)`` for a vehicle
  that does not exist (dead at once), any other exception (a telematics
  timeout) is retried.
- Lease 300 s with a 30 s heartbeat: ``JobRuntime(lease=300, heartbeat=30)``;
  a route optimisation that runs 20 minutes keeps its lease.
- Backoff from 1 s capped at 3,600 s: ``default_backoff=ExponentialBackoff(base=1, cap=3600)``.
- A GPS tracking job every minute fans out one job per active assignment:
  ``runtime.cron("* * * * *")`` and ``runtime.enqueue_many(...)`` (one atomic
  store call), each with ``key=gps:<assignment>, key_scope="queued"`` so a
  slow minute never piles up a vehicle's pings.
- Configuration looked up at run time with a fallback chain (the depot's
  rules, then the app's settings, then a default) through the app's own
  resources: ``JobRuntime(state=FleetResources(...))``, read as ``ctx.state``.

Run it::

    python examples/workloads/fleet.py                      # a short demo on sqlite:///fleet.db
    python examples/workloads/fleet.py --seconds 300        # keep running: a GPS fan-out a minute
    python examples/workloads/fleet.py --url redis://localhost:6379/0
    python examples/workloads/fleet.py --url postgresql://user:pw@localhost/jobs
    asyncjobs worker examples.workloads.fleet:runtime       # a separate worker ($ASYNCJOBS_URL)

Its test is ``tests/workloads/test_fleet.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from asyncjobs import (
    Clock,
    ExponentialBackoff,
    Job,
    JobContext,
    JobDead,
    JobRegistry,
    JobRuntime,
    Permanent,
    Queue,
)
from asyncjobs.backends import Backend

DEFAULT_URL = "sqlite:///fleet.db"
#: Where the fallback chain ends.
DEFAULTS: dict[str, Any] = {"speed_limit_kmh": 90, "ping_timeout_s": 5, "max_route_stops": 40}


@dataclasses.dataclass
class Assignment:
    """A driver and vehicle on a route."""

    id: int
    vehicle_id: str
    depot: str
    active: bool = True


@dataclasses.dataclass
class Position:
    """Where a vehicle was at a moment."""

    vehicle_id: str
    lat: float
    lon: float
    at: datetime
    speeding: bool = False


@dataclasses.dataclass
class Dispatch:
    """A route optimisation request."""

    depot: str
    stops: list[str]
    deadline: timedelta


class TelematicsTimeout(Exception):
    """The vehicle's tracker did not answer in time: worth another try."""


class FleetResources:
    """The app's own resources, handed to every handler as ``ctx.state``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.assignments: dict[int, Assignment] = {}
        #: Per-depot rules: the first place a setting is looked up.
        self.rules: dict[str, dict[str, Any]] = {}
        #: App-wide settings (from the app's config): the second.
        self.settings: dict[str, Any] = {}
        self.positions: list[Position] = []
        #: Vehicles whose trackers time out this many more times (for the demo/tests).
        self.flaky_trackers: dict[str, int] = {}
        self.known_vehicles: set[str] = set()
        self.clock = clock
        #: When set, route optimisations wait for it (a test holds one running).
        self.route_gate: anyio.Event | None = None

    def config(self, depot: str, name: str) -> Any:
        """A setting: the depot's rule, else the app's setting, else the default."""
        rules = self.rules.get(depot, {})
        if name in rules:
            return rules[name]
        if name in self.settings:
            return self.settings[name]
        return DEFAULTS[name]

    def now(self) -> datetime:
        moment = self.clock.now() if self.clock is not None else datetime.now(UTC).timestamp()
        return datetime.fromtimestamp(moment, UTC)


jobs = JobRegistry()


@jobs.job(name="fleet.track_vehicle", queue="tracking", max_attempts=5, timeout=30)
async def track_vehicle(ctx: JobContext, assignment: Assignment) -> Position:
    """Read one vehicle's position and flag speeding by its depot's limit."""
    fleet: FleetResources = ctx.state
    if assignment.vehicle_id not in fleet.known_vehicles:
        raise Permanent(f"vehicle {assignment.vehicle_id} is not in the fleet")
    if fleet.flaky_trackers.get(assignment.vehicle_id, 0) > 0:
        fleet.flaky_trackers[assignment.vehicle_id] -= 1
        raise TelematicsTimeout(f"tracker of {assignment.vehicle_id} did not answer")
    speed = 60 + 10 * (assignment.id % 5)
    limit = fleet.config(assignment.depot, "speed_limit_kmh")
    position = Position(
        assignment.vehicle_id, 52.5 + assignment.id / 100, 13.4, fleet.now(), speed > limit
    )
    fleet.positions.append(position)
    return position


@jobs.job(name="fleet.gps_tracking", queue="tracking", max_attempts=1)
async def gps_tracking(ctx: JobContext) -> int:
    """Every minute: one tracking job per active assignment, enqueued in one store call."""
    fleet: FleetResources = ctx.state
    active = [a for a in fleet.assignments.values() if a.active]
    # The registry's runtime takes the whole fan-out in one atomic store call.
    handles = await jobs.enqueuer.enqueue_many(
        [track_vehicle.options(key=f"gps:{a.id}", key_scope="queued").call(a) for a in active]
    )
    return sum(not handle.deduplicated for handle in handles)


@jobs.job(name="fleet.optimize_route", queue="planning", max_attempts=3, timeout=3600)
async def optimize_route(ctx: JobContext, dispatch: Dispatch) -> list[str]:
    """A long job: it holds a 300 s lease, renewed every 30 s while it runs."""
    fleet: FleetResources = ctx.state
    limit = fleet.config(dispatch.depot, "max_route_stops")
    if len(dispatch.stops) > limit:
        raise Permanent(f"{len(dispatch.stops)} stops, the depot allows {limit}")
    if fleet.route_gate is not None:
        await fleet.route_gate.wait()  # a test holds the job here while time passes
    return sorted(dispatch.stops)


def create_runtime(
    url: str | Backend | None = None,
    *,
    fleet: FleetResources | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> JobRuntime:
    """The fleet app's runtime on the store at *url* ($ASYNCJOBS_URL, else ``sqlite:///fleet.db``)."""
    fleet = fleet if fleet is not None else FleetResources(clock)
    runtime = JobRuntime(
        url or os.environ.get("ASYNCJOBS_URL") or DEFAULT_URL,
        queues={"tracking": Queue(concurrency=20), "planning": Queue(concurrency=2)},
        lease=timedelta(seconds=300),
        heartbeat=timedelta(seconds=30),
        default_backoff=ExponentialBackoff(base=1, cap=3600),
        state=fleet,
        clock=clock,
        **options,
    )
    runtime.include(jobs)
    runtime.cron("* * * * *", name="gps_tracking", timezone="UTC")(gps_tracking)
    return runtime


#: ``asyncjobs worker examples.workloads.fleet:runtime`` runs this one ($ASYNCJOBS_URL).
runtime = create_runtime()


async def demo(url: str | None, seconds: float) -> None:
    fleet = FleetResources()
    fleet.known_vehicles = {"V-1", "V-2", "V-3"}
    fleet.assignments = {
        1: Assignment(1, "V-1", "berlin"),
        2: Assignment(2, "V-2", "berlin"),
        3: Assignment(3, "V-3", "hamburg"),
        4: Assignment(4, "V-4", "hamburg", active=False),
    }
    fleet.rules = {"berlin": {"speed_limit_kmh": 70}}  # Berlin's own rule comes first,
    fleet.settings = {"speed_limit_kmh": 85}  # then the app's setting, then DEFAULTS
    fleet.flaky_trackers = {"V-2": 1}  # times out once, then answers
    app = create_runtime(url, fleet=fleet, shutdown_grace=1)
    async with app:
        fired = await app.schedules.trigger("gps_tracking")  # the minute's tick, now
        print(f"gps_tracking fanned out {await fired.result(timeout=10)} tracking jobs")
        deadline = anyio.current_time() + seconds
        tracked: list[Job] = []
        # A handler records its position before its completion is settled in the
        # store, so wait for the settled records, not for the positions.
        with anyio.move_on_after(max(seconds, 10)):
            while len(tracked) < 3:
                await anyio.sleep(0.05)
                tracked = await app.list_jobs(name="fleet.track_vehicle", state="complete")
        for position in sorted(fleet.positions, key=lambda p: p.vehicle_id):
            print(f"{position.vehicle_id}: {position.lat:.2f}, {position.lon:.2f} ", end="")
            print(f"speeding={position.speeding}")
        print("attempts per tracking job:", sorted(job.attempts for job in tracked))
        ghost = await track_vehicle.enqueue(Assignment(9, "V-404", "berlin"))
        try:
            await ghost.result(timeout=10)
        except JobDead as exc:
            job = await ghost.refresh()
            print(f"V-404 is dead after {job.attempts} attempt: {exc.error_message}")
        dispatch = Dispatch("hamburg", [f"stop-{n}" for n in (3, 1, 2)], timedelta(hours=2))
        print("route:", await (await optimize_route.enqueue(dispatch)).result(timeout=10))
        await anyio.sleep_until(deadline)


def main() -> None:
    parser = argparse.ArgumentParser(description="fleet operations on asyncjobs")
    parser.add_argument("--url", help=f"store URL (default $ASYNCJOBS_URL or {DEFAULT_URL})")
    parser.add_argument("--seconds", type=float, default=0.0, help="keep running this long")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    anyio.run(demo, args.url, args.seconds)


if __name__ == "__main__":
    main()
