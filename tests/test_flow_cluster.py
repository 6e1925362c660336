"""Cluster-wide limits measured across real worker processes on one store.

Three worker processes share a SQLite file or a Redis server; their handlers
record when they start and end (wall clock, one host) and the store's claim
time. From those records the tests measure what the limits promise:

- ``global_concurrency``: at no moment do more handlers run than the limit;
- ``rate_limit``: in no window of ``per`` seconds are more jobs claimed (a
  claim is a start: the handler begins right after it) than the limit;
- ``partition_concurrency``: at no moment do more handlers of one partition run.

A handler runs inside its claim (from claim to the outcome's write), so counting
handler intervals can only under-count what the store held; the limit holds
for the store's own count, which is what the claim enforces.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos_cluster import Cluster, Run, make_cluster, runs_by_job

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKERS = 3
CONCURRENCY = 4  # per process: 12 slots in all, so only the cluster-wide limit binds


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on a SQLite file, the session Redis or the session PostgreSQL."""
    yield from make_cluster(request, tmp_path)


def peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at t comes before a start at t)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = best = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        open_now += step
        best = max(best, open_now)
    return best


def busiest_window(times: list[float], per: float) -> int:
    """The most *times* inside one half-open window ``[t, t + per)``."""
    times = sorted(times)
    best = 0
    right = 0
    for left, start in enumerate(times):
        while right < len(times) and times[right] < start + per - 1e-6:
            right += 1
        best = max(best, right - left)
    return best


async def run_all(
    cluster: Cluster,
    flow: dict[str, object],
    calls: list[tuple[float, str | None]],
    concurrency: int = CONCURRENCY,
) -> list[Run]:
    """Start 3 workers, enqueue ``record`` jobs (pause, partition), run until all finished."""
    workers = [
        cluster.start_worker(concurrency=concurrency, flow=json.dumps(flow)) for _ in range(WORKERS)
    ]
    await cluster.wait_started(*workers)  # every process takes part from the first job
    runtime = cluster.runtime()
    async with runtime:
        record = runtime.function("record")
        await runtime.enqueue_many(
            [record.options(partition=partition).call(pause) for pause, partition in calls]
        )
    done = await cluster.poll_runs(
        lambda runs: runs if len(runs_by_job(runs, "done")) == len(calls) else None,
        f"all {len(calls)} jobs to finish",
    )
    assert await cluster.stop(*workers) == [0] * WORKERS
    return done


def intervals(runs: list[Run], partition: str | None = None) -> list[tuple[float, float]]:
    starts = {run.job: run.at for run in runs if run.event == "start"}
    return [
        (starts[run.job], run.at)
        for run in runs
        if run.event == "done" and (partition is None or run.partition == partition)
    ]


async def test_global_concurrency_never_exceeds_its_limit_across_processes(
    cluster: Cluster,
) -> None:
    # One slot per process, three processes, a limit of two: the limit must hold
    # between processes, and two processes must share the work to reach it.
    runs = await run_all(cluster, {"global_concurrency": 2}, [(0.05, None)] * 40, concurrency=1)

    measured = peak(intervals(runs))
    print(f"global_concurrency=2 over 3 processes: peak {measured}")  # shown with -s
    assert measured <= 2
    assert len({run.pid for run in runs}) >= 2


async def test_a_rate_limit_holds_over_every_sliding_window_across_processes(
    cluster: Cluster,
) -> None:
    runs = await run_all(cluster, {"rate": [5, 0.5]}, [(0.0, None)] * 25)

    claims = [run.claimed_at for run in runs if run.event == "start"]
    print(
        f"RateLimit(5, per=0.5): busiest window {busiest_window(claims, 0.5)}, "
        f"25 claims over {max(claims) - min(claims):.2f} s"
    )
    assert busiest_window(claims, 0.5) <= 5
    # 25 claims at 5 per half second: the fifth window cannot open before 2 s.
    assert max(claims) - min(claims) >= 2.0 - 1e-3


async def test_partition_concurrency_holds_per_partition_across_processes(
    cluster: Cluster,
) -> None:
    partitions = [f"tenant-{i}" for i in range(4)]
    calls: list[tuple[float, str | None]] = [
        (0.03, partition) for partition in partitions for _ in range(10)
    ]
    runs = await run_all(cluster, {"partition_concurrency": 2}, calls)

    peaks = {partition: peak(intervals(runs, partition)) for partition in partitions}
    print(f"partition_concurrency=2: peaks {peaks}, all {peak(intervals(runs))}")
    assert max(peaks.values()) <= 2, peaks
    assert peak(intervals(runs)) > 2  # partitions ran side by side
    by_partition: dict[str | None, int] = defaultdict(int)
    for run in runs:
        if run.event == "done":
            by_partition[run.partition] += 1
    assert by_partition == dict.fromkeys(partitions, 10)
