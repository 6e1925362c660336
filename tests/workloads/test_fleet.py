"""Workload 2, fleet operations: every requirement, on a ManualClock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from asyncjobs import ExponentialBackoff, JobState, ManualClock, SerializationError
from asyncjobs.testing import Harness
from examples.workloads.fleet import (
    Assignment,
    Dispatch,
    FleetResources,
    Position,
    create_runtime,
    gps_tracking,
    optimize_route,
    track_vehicle,
)
from tests.workloads.conftest import run_script

pytestmark = pytest.mark.anyio


def make_fleet(clock: ManualClock) -> FleetResources:
    fleet = FleetResources(clock)
    fleet.known_vehicles = {"V-1", "V-2", "V-3"}
    fleet.assignments = {
        1: Assignment(1, "V-1", "berlin"),
        2: Assignment(2, "V-2", "berlin"),
        3: Assignment(3, "V-3", "hamburg", active=False),
    }
    return fleet


async def test_gps_tracking_fans_out_every_minute(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 6, 1, 8, 0, 30, tzinfo=UTC))
    fleet = make_fleet(clock)
    runtime = create_runtime(
        f"sqlite:///{tmp_path / 'fleet.db'}", fleet=fleet, clock=clock, shutdown_grace=0.1
    )
    async with Harness(runtime) as harness:
        await harness.advance(timedelta(minutes=5))
        harness.assert_ran(gps_tracking, ["complete"] * 5)
        assert len(harness.runs_of(track_vehicle)) == 10  # 2 active assignments x 5 minutes
        fleet.assignments[3].active = True
        await harness.advance(timedelta(minutes=1))
        assert len(harness.runs_of(track_vehicle)) == 13
        await harness.assert_next_fire("gps_tracking", datetime(2026, 6, 1, 8, 7, tzinfo=UTC))
    assert {p.vehicle_id for p in fleet.positions} == {"V-1", "V-2", "V-3"}
    assert all(isinstance(p, Position) and isinstance(p.at, datetime) for p in fleet.positions)


async def test_typed_structs_are_checked_at_the_call(asyncjobs_clock: ManualClock) -> None:
    runtime = create_runtime("memory://", fleet=make_fleet(asyncjobs_clock), clock=asyncjobs_clock)
    async with Harness(runtime, mode="eager"):
        handle = await optimize_route.enqueue(Dispatch("berlin", ["b", "a"], timedelta(hours=1)))
        assert await handle.result(timeout=1) == ["a", "b"]
        with pytest.raises(SerializationError, match="dispatch"):
            await optimize_route.enqueue({"depot": 3})  # type: ignore[arg-type]
        assert len(await runtime.list_jobs(name="fleet.optimize_route")) == 1


async def test_permanent_errors_die_at_once_retryable_ones_back_off(
    asyncjobs_clock: ManualClock,
) -> None:
    fleet = make_fleet(asyncjobs_clock)
    fleet.flaky_trackers = {"V-2": 3}
    runtime = create_runtime("memory://", fleet=fleet, clock=asyncjobs_clock, shutdown_grace=0.1)
    assert runtime.default_backoff == ExponentialBackoff(base=1, cap=3600)
    async with Harness(runtime) as harness:
        ghost = await track_vehicle.enqueue(Assignment(9, "V-404", "berlin"))
        flaky = await track_vehicle.enqueue(fleet.assignments[2])
        await harness.advance(timedelta(seconds=30))  # the backoffs: <= 1 s, <= 2 s, <= 4 s
        assert (await ghost.refresh()).state is JobState.DEAD
        assert (await ghost.refresh()).attempts == 1
        runs = [r for r in harness.runs_of(track_vehicle) if r.job_id == flaky.id]
        assert [r.outcome for r in runs] == ["retrying"] * 3 + ["complete"]
        assert runs[0].error_type == "examples.workloads.fleet.TelematicsTimeout"
        gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(runs)]
        assert all(gap <= 2**n for n, gap in enumerate(gaps)), gaps


async def test_a_long_job_keeps_its_300_s_lease_by_heartbeat(asyncjobs_clock: ManualClock) -> None:
    fleet = make_fleet(asyncjobs_clock)
    fleet.route_gate = anyio.Event()
    runtime = create_runtime("memory://", fleet=fleet, clock=asyncjobs_clock, shutdown_grace=0.1)
    assert (runtime.lease, runtime.heartbeat) == (300.0, 30.0)
    async with Harness(runtime) as harness:
        handle = await optimize_route.enqueue(Dispatch("berlin", ["x"], timedelta(hours=1)))
        await harness.advance(timedelta(minutes=20), wait_for_jobs=False)
        job = await handle.refresh()
        assert job.state is JobState.RUNNING
        assert job.attempts == 1
        assert job.lease_expires_at is not None
        assert job.lease_expires_at - asyncjobs_clock.now() > 240  # renewed every 30 s
        fleet.route_gate.set()
        assert await handle.result(timeout=5) == ["x"]


async def test_config_falls_back_from_rules_to_settings_to_default(
    asyncjobs_clock: ManualClock,
) -> None:
    fleet = make_fleet(asyncjobs_clock)
    fleet.rules = {"berlin": {"speed_limit_kmh": 65}}
    fleet.settings = {"speed_limit_kmh": 75}
    runtime = create_runtime("memory://", fleet=fleet, clock=asyncjobs_clock)
    async with Harness(runtime, mode="eager"):
        berlin = await track_vehicle.enqueue(Assignment(1, "V-1", "berlin"))  # 70 km/h
        hamburg = await track_vehicle.enqueue(Assignment(6, "V-3", "hamburg"))  # 70 km/h
        assert (await berlin.result(timeout=1)).speeding  # the depot's rule: 65
        assert not (await hamburg.result(timeout=1)).speeding  # the app's setting: 75
        fleet.settings = {}
        assert fleet.config("hamburg", "speed_limit_kmh") == 90  # the default
        too_many = Dispatch("hamburg", [str(n) for n in range(41)], timedelta(hours=1))
        dead = await optimize_route.enqueue(too_many)  # max_route_stops: default 40
        assert (await dead.refresh()).state is JobState.DEAD


def test_the_script_runs(tmp_path: Path) -> None:
    out = run_script("fleet.py", tmp_path)
    assert "gps_tracking fanned out 3 tracking jobs" in out
    assert "V-2: 52.52, 13.40 speeding=True" in out
    assert "attempts per tracking job: [1, 1, 2]" in out
    assert "V-404 is dead after 1 attempt: vehicle V-404 is not in the fleet" in out
