"""The workloads on Redis and PostgreSQL: the stores a second host needs (real clock, ~1 s each)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

import anyio
import pytest

from asyncjobs import Event, JobState, ScheduleFired
from asyncjobs.backends import Backend
from examples.workloads import order_sync
from examples.workloads.order_sync import OrderSystem, create_runtime

pytestmark = pytest.mark.anyio


def store_factory(kind: str, request: pytest.FixtureRequest) -> Callable[[], Backend]:
    """New backend objects on one fresh store, as separate processes would open it."""
    name = f"w{uuid.uuid4().hex[:12]}"
    if kind == "redis":
        from asyncjobs.backends.redis import RedisBackend

        url: str = request.getfixturevalue("redis_url")
        return lambda: RedisBackend(url, prefix=name)
    from asyncjobs.backends.postgres import PostgresBackend

    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresBackend(url, schema=name)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_two_order_sync_instances_run_each_tick_once(
    kind: str, request: pytest.FixtureRequest
) -> None:
    new_store = store_factory(kind, request)
    orders = OrderSystem()
    instances = [
        create_runtime(new_store(), orders=orders, worker_id=f"instance-{n}", shutdown_grace=0.5)
        for n in (1, 2)
    ]
    fired: Counter[str] = Counter()

    def count(event: Event) -> None:
        if isinstance(event, ScheduleFired) and event.schedule == "tick":
            fired[event.job_id] += 1

    for instance in instances:
        # A tick a second stands in for the hourly schedules.
        instance.cron("* * * * * *", name="tick", args=("incremental",))(order_sync.sync_orders)
        instance.events.on(ScheduleFired, callback=count)
    async with instances[0], instances[1]:
        with anyio.fail_after(10):
            while len(fired) < 2:
                await anyio.sleep(0.05)
        runs = await instances[0].list_jobs(schedule="tick")
        with anyio.fail_after(10):
            while any(job.state is not JobState.COMPLETE for job in runs):
                await anyio.sleep(0.05)
                runs = await instances[0].list_jobs(schedule="tick")
        await instances[0].schedules.remove("tick")
    fire_times = [job.fire_at for job in runs]
    assert len(fire_times) == len(set(fire_times))  # no tick ran twice
    assert set(fired.values()) == {1}  # each fired job was fired by one instance
