"""Flow control through the runtime, on every store: the pool's selection, cluster-wide
limits, partitions, unique scopes, queue defaults and honest running counts.

The measurements across several processes are in ``test_flow_cluster.py``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest

from asyncjobs import (
    DuplicateJobError,
    FixedBackoff,
    JobRuntime,
    JobStarted,
    JobState,
    ManualClock,
    Queue,
    RateLimit,
    Retry,
)
from asyncjobs._models import KeyScope
from tests.conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


class Gate:
    """Handlers that wait until released, counting how many run at once (per label)."""

    def __init__(self) -> None:
        self.open = anyio.Event()
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.total = 0
        self.peak_total = 0
        self.changed = anyio.Event()

    async def hold(self, label: str) -> None:
        self.running[label] += 1
        self.total += 1
        self.peak[label] = max(self.peak[label], self.running[label])
        self.peak_total = max(self.peak_total, self.total)
        self._changed()
        try:
            await self.open.wait()
        finally:
            self.running[label] -= 1
            self.total -= 1
            self._changed()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def until(self, check: object, timeout: float = 20.0) -> None:
        with anyio.fail_after(timeout):
            while not check():  # type: ignore[operator]
                await self.changed.wait()


# -- the pool's selection ---------------------------------------------------------------


async def test_weighted_queues_share_the_pool_by_weight(make_runtime: RuntimeFactory) -> None:
    weights = {"critical": 6, "pattern": 2, "compliance": 1, "default": 1}
    queues = {name: Queue(weight=weight) for name, weight in weights.items()}
    producer = make_runtime(role="enqueue", queues=queues)
    runtime = make_runtime(queues=queues, max_concurrency=10)

    async def work() -> None:
        await anyio.lowlevel.checkpoint()

    producer.job(name="work")(work)
    runtime.job(name="work")(work)
    async with producer:  # every queue backlogged before the worker starts
        call = producer.function("work")
        await producer.enqueue_many(
            [call.options(queue=name).call() for name in weights for _ in range(700)]
        )

    starts: list[str] = []
    with runtime.events.subscribe() as events, anyio.fail_after(120):
        async with runtime:
            async for event in events:
                if isinstance(event, JobStarted):
                    starts.append(event.queue)
                    if len(starts) == 1000:
                        break

    shares = Counter(starts)
    for name, weight in weights.items():
        assert abs(shares[name] / 1000 - weight / 10) <= 0.05, shares


async def test_a_lone_backlogged_queue_takes_the_whole_pool(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(
        queues={"critical": Queue(weight=6), "default": Queue(weight=1)}, max_concurrency=10
    )
    gate = Gate()

    @runtime.job(queue="critical")
    async def urgent() -> None:
        await gate.hold("critical")

    async with runtime:
        await runtime.enqueue_many([urgent.call() for _ in range(30)])
        await gate.until(lambda: gate.running["critical"] == 10)
        assert gate.peak_total == 10
        gate.open.set()


async def test_strict_selection_runs_later_queues_only_on_idle_slots(
    make_runtime: RuntimeFactory,
) -> None:
    settings: dict[str, object] = {
        "queues": {"critical": Queue(), "default": Queue()},
        "max_concurrency": 4,
        "queue_selection": "strict",
        "prefetch": 0,
    }
    producer = make_runtime(role="enqueue", **settings)
    runtime = make_runtime(**settings)

    async def work() -> None:
        await anyio.lowlevel.checkpoint()

    producer.job(name="work")(work)
    runtime.job(name="work")(work)
    async with producer:  # both queues backlogged before the worker starts
        call = producer.function("work")
        await producer.enqueue_many(
            [call.options(queue="default").call() for _ in range(40)]
            + [call.options(queue="critical").call() for _ in range(40)]
        )

    starts: list[str] = []
    # Subscribed before the start: the first jobs may start before the block's first line.
    with runtime.events.subscribe() as events, anyio.fail_after(120):
        async with runtime:
            async for event in events:
                if isinstance(event, JobStarted):
                    starts.append(event.queue)
                    if len(starts) == 80:
                        break

    # Default jobs start only once critical has no due work left to claim; only the
    # critical jobs already claimed by then may still start after them.
    first_default = starts.index("default")
    assert first_default >= 40 - 4, starts
    assert starts[:first_default] == ["critical"] * first_default


# -- cluster-wide limits through the runtime ----------------------------------------------


async def test_global_concurrency_holds_across_runtimes(make_runtime: RuntimeFactory) -> None:
    gate = Gate()
    runtimes = [
        make_runtime(queues={"partner": Queue(concurrency=5, global_concurrency=3)})
        for _ in range(2)
    ]
    for runtime in runtimes:

        @runtime.job(queue="partner", name="partner.call")
        async def call() -> None:
            await gate.hold("partner")

    first, second = runtimes
    async with first, second:
        await first.enqueue_many([first.function("partner.call").call() for _ in range(12)])
        await gate.until(lambda: gate.running["partner"] == 3)
        stats = {s.queue: s for s in await first.queue_stats()}
        assert stats["partner"].count(JobState.RUNNING) == 3
        # Nine jobs wait while three run: a runtime's next claim is held by the limit.
        with anyio.fail_after(10):
            while not await _held_by_limit(runtimes, "global_concurrency"):
                await anyio.sleep(0.01)
        gate.open.set()
        await gate.until(lambda: gate.total == 0 and gate.peak["partner"] == 3)
    assert gate.peak["partner"] == 3


async def _held_by_limit(runtimes: list[JobRuntime], limit: str) -> bool:
    """Whether some runtime's last claim was held back by *limit*."""
    for runtime in runtimes:
        for entry in await runtime.queue_stats():
            if entry.held_by == limit:
                return True
    return False


async def test_a_rate_limited_queue_waits_for_its_window_to_open(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime(queues={"partner": Queue(rate_limit=RateLimit(2, per=10))})
    started: list[float] = []
    changed = anyio.Event()

    @runtime.job(queue="partner")
    async def call() -> None:
        nonlocal changed
        started.append(clock.now())
        changed.set()
        changed = anyio.Event()

    async def until(count: int) -> None:
        with anyio.fail_after(20):
            while len(started) < count:
                await changed.wait()

    async with runtime:
        await runtime.enqueue_many([call.call() for _ in range(5)])
        await until(2)
        for _ in range(5):  # the held jobs stay held while the window is full
            await anyio.sleep(0.01)
        assert len(started) == 2
        clock.advance(10)
        await until(4)
        assert len(started) == 4
        clock.advance(10)
        await until(5)
    assert started == [started[0]] * 2 + [started[0] + 10] * 2 + [started[0] + 20]


async def test_a_job_rate_limit_holds_that_job_only(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime(queues={"default": 4})
    done: list[str] = []
    changed = anyio.Event()

    @runtime.job(rate_limit=RateLimit(1, per=timedelta(minutes=1)))
    async def report() -> None:
        nonlocal changed
        done.append("report")
        changed.set()
        changed = anyio.Event()

    @runtime.job()
    async def other() -> None:
        nonlocal changed
        done.append("other")
        changed.set()
        changed = anyio.Event()

    async with runtime:
        await runtime.enqueue_many([report.call(), report.call(), other.call(), other.call()])
        with anyio.fail_after(20):
            while len(done) < 3:
                await changed.wait()
        assert Counter(done) == {"report": 1, "other": 2}
        clock.advance(60)
        with anyio.fail_after(20):
            while len(done) < 4:
                await changed.wait()
    assert Counter(done) == {"report": 2, "other": 2}


async def test_partitions_are_capped_and_take_turns(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(
        queues={"reports": Queue(concurrency=6, partition_concurrency=2)}, prefetch=0
    )
    gate = Gate()

    @runtime.job(queue="reports")
    async def build(tenant: str) -> None:
        await gate.hold(tenant)

    async with runtime:
        calls = [build.options(partition="big").call("big") for _ in range(50)]
        calls += [
            build.options(partition=f"t{i}").call(f"t{i}") for i in range(4) for _ in range(2)
        ]
        await runtime.enqueue_many(calls)
        await gate.until(lambda: gate.total == 6)
        assert gate.running["big"] == 2
        [stats] = await runtime.queue_stats()
        assert stats.held_by in (None, "partition_concurrency")
        [big] = await runtime.queue_stats(partition="big")
        assert big.count(JobState.RUNNING) == 2
        gate.open.set()
    assert max(gate.peak.values()) == 2


# -- unique scopes ----------------------------------------------------------------------


async def test_key_scopes_and_conflicts_through_the_runtime(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime(role="enqueue")

    @runtime.job()
    async def analyze(customer: int) -> None: ...

    async with runtime:
        first = await analyze.options(key="customer:9").enqueue(9)
        same = await analyze.options(key="customer:9", on_conflict="return").enqueue(9)
        assert same.id == first.id
        assert same.deduplicated
        with pytest.raises(DuplicateJobError) as caught:
            await analyze.options(key="customer:9", on_conflict="raise").enqueue(9)
        assert caught.value.job_id == first.id

        replaced = await analyze.options(key="customer:9", on_conflict="replace", delay=30).enqueue(
            10
        )
        assert replaced.id == first.id
        job = await replaced.refresh()
        assert job.due_at == clock.now() + 30
        assert runtime.codec.decode(job.payload) == {"a": [10], "k": {}}

        throttle = analyze.options(key="digest", key_scope=timedelta(minutes=5))
        one = await throttle.enqueue(1)
        assert (await throttle.enqueue(2)).id == one.id
        clock.advance(301)
        assert (await throttle.enqueue(3)).id != one.id


async def test_a_replace_while_the_holder_runs_waits_for_it(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(queues={"default": 4})
    log: list[str] = []
    first_started, release = anyio.Event(), anyio.Event()

    @runtime.job()
    async def analyze(version: int) -> int:
        log.append(f"start {version}")
        if version == 1:
            first_started.set()
            await release.wait()
        log.append(f"end {version}")
        return version

    async with runtime:
        first = await analyze.options(key="customer:9").enqueue(1)
        with anyio.fail_after(10):
            await first_started.wait()
        debounce = analyze.options(key="customer:9", on_conflict="replace")
        second = await debounce.enqueue(2)
        assert (await second.refresh()).waits_for == first.id
        assert (await debounce.enqueue(3)).id == second.id  # takes the newest arguments
        explained = await runtime.admin.explain(second.id)
        assert (explained.reason, explained.details["holder"]) == ("behind_key", first.id)
        # Room in the pool, and the job is due: only the running holder keeps it back.
        for _ in range(20):
            await anyio.sleep(0.01)
        assert log == ["start 1"]
        release.set()
        assert await second.result(timeout=10) == 3
    assert log == ["start 1", "end 1", "start 3", "end 3"]


async def test_the_runtime_passes_scopes_to_the_store(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(role="enqueue")

    @runtime.job()
    async def analyze(customer: int) -> None: ...

    async with runtime:
        queued = await analyze.options(key="k", key_scope="queued").enqueue(1)
        stored = await queued.refresh()
        assert stored.key == "k"
        again = await analyze.options(key="k", key_scope="queued").enqueue(1)
        assert again.id == queued.id
    assert KeyScope("queued") is KeyScope.QUEUED


# -- queue defaults -----------------------------------------------------------------------


async def test_queue_defaults_apply_unless_the_job_sets_its_own(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(
        role="enqueue",
        queues={"reports": Queue(max_attempts=5, timeout=120, priority=3), "default": 2},
    )

    @runtime.job(queue="reports")
    async def build() -> None: ...

    @runtime.job(queue="reports", max_attempts=2, priority=-1, timeout=5)
    async def own() -> None: ...

    async with runtime:
        built = await (await build.enqueue()).refresh()
        owned = await (await own.enqueue()).refresh()
        moved = await (await own.options(queue="default").enqueue()).refresh()
        plain = await (await build.options(queue="default").enqueue()).refresh()
    assert (built.max_attempts, built.timeout, built.priority) == (5, 120, 3)
    assert (owned.max_attempts, owned.timeout, owned.priority) == (2, 5, -1)
    assert (moved.max_attempts, moved.priority) == (2, -1)
    assert (plain.max_attempts, plain.timeout, plain.priority) == (3, None, 0)


async def test_backoff_comes_from_the_job_then_the_queue_then_the_runtime(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime(
        queues={"slow": Queue(backoff=FixedBackoff(40)), "default": 2},
        default_backoff=FixedBackoff(7),
    )
    failed = anyio.Event()
    count = 0

    @runtime.job(queue="slow")
    async def flaky() -> None:
        raise ValueError("boom")

    @runtime.job()
    async def other() -> None:
        nonlocal count
        count += 1
        if count == 2:
            failed.set()
        raise Retry()

    async with runtime:
        a = await flaky.enqueue()
        b = await other.enqueue()
        with anyio.fail_after(20):
            while (await a.refresh()).attempts < 1 or (
                await a.refresh()
            ).state is not JobState.QUEUED:
                await anyio.sleep(0.01)
            while (await b.refresh()).state is not JobState.QUEUED or (
                await b.refresh()
            ).attempts < 1:
                await anyio.sleep(0.01)
        assert (await a.refresh()).due_at == pytest.approx(clock.now() + 40)
        assert (await b.refresh()).due_at == pytest.approx(clock.now() + 7)


# -- honest running counts ----------------------------------------------------------------


async def test_jobs_claimed_ahead_are_not_counted_as_running(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(queues={"reports": 2}, prefetch=1)
    gate = Gate()

    @runtime.job(queue="reports")
    async def build() -> None:
        await gate.hold("reports")

    async with runtime:
        handles = await runtime.enqueue_many([build.call() for _ in range(4)])
        await gate.until(lambda: gate.running["reports"] == 2)
        with anyio.fail_after(20):
            while True:
                [stats] = await runtime.queue_stats()
                if stats.started == 2:
                    break
                await anyio.sleep(0.02)
        assert stats.count(JobState.RUNNING) <= 4
        assert stats.started <= 2
        jobs = [await handle.refresh() for handle in handles]
        assert sum(job.started_at is not None for job in jobs) == 2
        gate.open.set()
        for handle in handles:
            await handle.result(timeout=20)
            job = await handle.refresh()
            assert job.started_at is not None
            assert job.finished_at is not None
            assert job.started_at <= job.finished_at


async def test_small_partitions_start_within_one_round_of_a_huge_one(
    make_runtime: RuntimeFactory,
) -> None:
    """The bound: with P partitions holding queued jobs, every partition's first job
    starts among the queue's first P starts (one round), whatever the others hold."""
    producer = make_runtime(role="enqueue", queues={"reports": 4})
    runtime = make_runtime(queues={"reports": 4})

    async def build(tenant: str) -> None:
        await anyio.lowlevel.checkpoint()

    producer.job(queue="reports", name="build")(build)
    runtime.job(queue="reports", name="build")(build)
    async with producer:
        call = producer.function("build")
        await producer.enqueue_many(
            [call.options(partition="big").call("big") for _ in range(5000)]
        )
        await producer.enqueue_many(
            [
                call.options(partition=f"small-{i}").call(f"small-{i}")
                for i in range(20)
                for _ in range(3)
            ]
        )

    starts: list[str] = []
    with runtime.events.subscribe() as events, anyio.fail_after(120):
        async with runtime:
            async for event in events:
                if isinstance(event, JobStarted):
                    job = await runtime.get_job(event.job_id)
                    assert job is not None
                    starts.append(job.partition or "")
                    if len(starts) == 63:
                        break

    firsts = {name: starts.index(name) for name in {f"small-{i}" for i in range(20)}}
    assert max(firsts.values()) < 21, starts
    # The second round: each small partition's second job before the 42nd start.
    seconds = {
        name: [i for i, started in enumerate(starts) if started == name][1] for name in firsts
    }
    assert max(seconds.values()) < 42, starts


def test_queues_claim_ahead_only_where_a_buffered_job_cannot_hold_a_cluster_slot() -> None:
    runtime = JobRuntime(
        queues={
            "plain": Queue(concurrency=4),
            "partner": Queue(concurrency=4, rate_limit=RateLimit(100, per=60)),
            "tight": Queue(concurrency=4, global_concurrency=5),
            "roomy": Queue(concurrency=4, global_concurrency=1000),
            "tenants": Queue(concurrency=4, partition_concurrency=2),
        },
        prefetch=1,
    )
    slots = runtime.slots
    # A full claim of "tight" (4 running + 4 ahead) could hold 5 of its 5 cluster slots.
    assert slots.no_prefetch == {"partner", "tight", "tenants"}
    assert {queue: slots.capacity[queue] for queue in ("plain", "tight", "roomy")} == {
        "plain": 8,
        "tight": 4,
        "roomy": 8,
    }
