"""What the Redis backend promises beyond the shared contract.

Server time with the system clock, cross-connection wake-ups, clear failures
at ``open`` that never show the password, a restricted ACL user, a server
restart with AOF, flow control that costs plain jobs nothing and races
between connections that keep one key holder, bounded keys (attempt histories,
deleted jobs, workers and the audit trail included), and encodings that keep
any text. Every test runs against a real
``redis-server`` (see ``tests/redis_server.py``); nothing sleeps to wait for
something except bounded polling where Redis itself keeps time (key expiry).
"""

from __future__ import annotations

import shutil
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import anyio
import attrs
import pytest
import redis
import redis.asyncio as aioredis

from asyncjobs._clock import ManualClock, SystemClock
from asyncjobs._exceptions import BackendError, ConfigurationError, DuplicateJobError
from asyncjobs._models import (
    AuditRecord,
    ClaimLimits,
    ErrorInfo,
    JobState,
    KeyScope,
    NewJob,
    OnConflict,
    Outcome,
    OutcomeKind,
    RateWindow,
    Schedule,
    WorkerRecord,
)
from asyncjobs.backends import Backend, from_url
from asyncjobs.backends.redis import RedisBackend, RedisPersistenceWarning
from tests.redis_server import RedisServer, free_port

# Every test asks for the session server, so a missing redis-server skips
# (or, in CI, fails) them all the same way.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("redis_url")]

PASSWORD = "pa55-Wörd:with@odd/chars"
ACL_PASSWORD = "acl-secret-42"
LEASE = 30.0


# -- helpers ------------------------------------------------------------------


def new_job(now: float, *, queue: str = "default", due_in: float = 0.0, **fields: Any) -> NewJob:
    """A valid job due *due_in* seconds after *now*."""
    return NewJob(
        id=uuid.uuid4().hex,
        name="tasks.example",
        queue=queue,
        payload=b'{"args": [], "kwargs": {}}',
        due_at=now + due_in,
        enqueued_at=now,
        **fields,
    )


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def sync_client(url: str) -> redis.Redis:
    """A plain client for inspecting the server from the test's side."""
    return redis.Redis.from_url(url)


def server_time(client: redis.Redis) -> float:
    """The server's clock, as epoch seconds."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


class SkewedClock(SystemClock):
    """The system clock, an hour fast: the backend must not use it for leases."""

    def now(self) -> float:
        return super().now() + 3600


@pytest.fixture
async def backend(redis_url: str, clock: ManualClock) -> AsyncIterator[RedisBackend]:
    """A Redis backend on the session server, on the manual clock, with its own prefix."""
    store = RedisBackend(redis_url, prefix=unique_prefix())
    await store.open(clock)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(scope="module")
def secured_server() -> Iterator[RedisServer]:
    """A server with a password, two ACL users, and no persistence."""
    server = RedisServer(
        password=PASSWORD,
        users=[
            # Only its own keys and channels, no dangerous commands (no CONFIG, no KEYS).
            f"app on >{ACL_PASSWORD} ~app:* &app:* +@all -@dangerous",
            # The smallest set of commands the backend documents.
            f"lean on >{ACL_PASSWORD} ~lean:* &lean:* "
            "+@read +@write +@scripting +@pubsub +@connection +time",
        ],
    )
    with server:
        yield server


# -- time -----------------------------------------------------------------------


async def test_the_system_clock_means_server_time(redis_url: str) -> None:
    store = RedisBackend(redis_url, prefix=unique_prefix())
    await store.open(SkewedClock())  # a SystemClock: the server's TIME wins
    inspect = sync_client(redis_url)
    try:
        server_now = server_time(inspect)
        # Due by the skewed local clock, an hour ahead of the server: not due yet.
        ahead = new_job(SkewedClock().now())
        due = new_job(server_now - 1)
        await store.enqueue([ahead, due])

        before = server_time(inspect)
        claimed = await store.claim("default", 10, "w", LEASE)
        after = server_time(inspect)

        assert [job.id for job in claimed] == [due.id]
        [job] = claimed
        assert job.started_at is None
        assert job.lease_expires_at is not None
        assert before <= job.lease_expires_at - LEASE <= after
        next_due = await store.next_due_at(["default"])
        assert next_due == ahead.due_at
    finally:
        inspect.close()
        await store.aclose()


async def test_a_manual_clock_is_passed_to_the_server(
    backend: RedisBackend, clock: ManualClock
) -> None:
    await backend.enqueue([new_job(clock.now())])
    clock.advance(1234.5)

    [job] = await backend.claim("default", 1, "w", LEASE)

    assert job.lease_expires_at == clock.now() + LEASE


# -- wake-ups -----------------------------------------------------------------


async def test_an_idle_waiter_wakes_on_an_enqueue_from_another_connection(
    redis_url: str,
) -> None:
    prefix = unique_prefix()
    waiter = RedisBackend(redis_url, prefix=prefix)
    producer = RedisBackend(redis_url, prefix=prefix)
    clock = SystemClock()
    await waiter.open(clock)
    await producer.open(clock)
    latencies: list[float] = []
    try:
        # The first wait subscribes and returns once the subscription stands.
        with anyio.fail_after(5):
            await waiter.wait_for_work(["default"], clock.now() + 30)
        for _ in range(10):
            woken = anyio.Event()

            async def wait_once(woken: anyio.Event = woken) -> None:
                await waiter.wait_for_work(["default"], clock.now() + 30)
                woken.set()

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_once)
                    await anyio.wait_all_tasks_blocked()
                    assert not woken.is_set()
                    sent = time.perf_counter()
                    await producer.enqueue([new_job(clock.now())])
                    await woken.wait()
                    latencies.append(time.perf_counter() - sent)
    finally:
        await waiter.aclose()
        await producer.aclose()
    # Generous bound for a loaded CI machine; typically a few milliseconds.
    assert statistics.median(latencies) < 0.5, latencies


async def test_a_waiter_wakes_when_another_process_retries_a_job(redis_url: str) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    waiter = RedisBackend(redis_url, prefix=prefix)
    worker = RedisBackend(redis_url, prefix=prefix)
    await waiter.open(clock)
    await worker.open(clock)
    try:
        await worker.enqueue([new_job(clock.now())])
        [job] = await worker.claim("default", 1, "w", LEASE)
        assert job.lease_token is not None
        with anyio.fail_after(5):
            await waiter.wait_for_work(["default"], None)  # subscribes, returns
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_work, ["default"], None)
                await anyio.wait_all_tasks_blocked()
                retry = Outcome(job_id=job.id, lease_token=job.lease_token, kind=OutcomeKind.RETRY)
                assert await worker.settle([retry]) == []
        assert [j.id for j in await waiter.claim("default", 1, "w2", LEASE)] == [job.id]
    finally:
        await waiter.aclose()
        await worker.aclose()


async def test_waiters_on_different_queues_share_one_subscription(redis_url: str) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    store = RedisBackend(redis_url, prefix=prefix)
    producer = RedisBackend(redis_url, prefix=prefix)
    await store.open(clock)
    await producer.open(clock)
    try:
        with anyio.fail_after(5):
            # Subscribe one channel at a time: each first wait returns on its confirmation.
            await store.wait_for_work(["a"], None)
            await store.wait_for_work(["b"], None)
            a_done, b_woken = anyio.Event(), anyio.Event()

            async def wait_a() -> None:
                await store.wait_for_work(["a"], clock.now() + 10)
                a_done.set()

            async def wait_b() -> None:
                await store.wait_for_work(["b"], None)
                b_woken.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_a)
                tg.start_soon(wait_b)
                await anyio.wait_all_tasks_blocked()
                clock.advance(10)  # a's waiter leaves; if it was listening, b's takes over
                await a_done.wait()
                await producer.enqueue([new_job(clock.now(), queue="a")])
                await anyio.wait_all_tasks_blocked()
                assert not b_woken.is_set()
                await producer.enqueue([new_job(clock.now(), queue="b")])
                await b_woken.wait()
    finally:
        await store.aclose()
        await producer.aclose()


async def test_waiting_on_a_manual_clock_ends_at_the_deadline(
    backend: RedisBackend, clock: ManualClock
) -> None:
    await backend.wait_for_work(["default"], None)  # the subscribing wait returns at once
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(backend.wait_for_work, ["default"], clock.now() + 60)
            await anyio.wait_all_tasks_blocked()
            clock.advance(60)


# -- enqueue: one round trip, shared by concurrent callers ------------------------


def command_calls(client: redis.Redis) -> dict[str, int]:
    """How often the server ran each command (script-inner commands included)."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): fields["calls"] for name, fields in stats.items()}


class LaneProbe:
    """Wraps a backend's enqueue lane: records each call's job count, can hold calls.

    With *hold_after*, a call reaches the server and then waits for :attr:`release`
    before returning (a reply that is late, or lost when the caller is cancelled).
    """

    def __init__(self, store: RedisBackend, *, hold_after: bool = False) -> None:
        self.batches: list[int] = []
        self.release = anyio.Event()
        self.arrived = anyio.Event()
        real = store._conn.run_on_lane
        self.hold_after = hold_after

        async def probe(script: Any, args: Iterable[str | bytes]) -> Any:
            args = list(args)
            self.batches.append(int(args[0]))
            reply = await real(script, args)
            self.arrived.set()
            if self.hold_after:
                await self.release.wait()
            return reply

        store._conn.run_on_lane = probe  # type: ignore[method-assign]


async def test_a_lone_enqueue_is_one_script_call_that_publishes_its_own_wake_up(
    backend: RedisBackend, clock: ManualClock, redis_url: str
) -> None:
    inspect = sync_client(redis_url)
    try:
        await backend.enqueue([new_job(clock.now())])  # connections made, scripts cached
        inspect.config_resetstat()
        for _ in range(20):
            await backend.enqueue([new_job(clock.now())])
        calls = command_calls(inspect)
    finally:
        inspect.close()
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    # One EVALSHA per enqueue; everything else ran inside it (the wake-up too).
    assert calls.pop("evalsha") == 20
    assert calls.pop("publish") == 20
    assert set(calls) <= {"time", "incrby", "exists", "hset", "zadd", "sadd"}, calls


async def test_concurrent_enqueues_share_script_calls_and_each_gets_its_own_jobs(
    backend: RedisBackend, clock: ManualClock
) -> None:
    probe = LaneProbe(backend)
    now = clock.now()
    singles = [[new_job(now)] for _ in range(60)]
    pair = [new_job(now, key="shared"), new_job(now)]
    rival = [new_job(now, key="shared")]  # arrives after the pair: gets the pair's job
    calls = [*singles, pair, rival]
    results: dict[int, list[Any]] = {}

    async def producer(index: int) -> None:
        results[index] = await backend.enqueue(calls[index])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for index in range(len(calls)):
                tg.start_soon(producer, index)

    # The first caller sent alone; everyone who arrived meanwhile went in the next call.
    assert sum(probe.batches) == 63
    assert len(probe.batches) < len(calls)
    for index, jobs in enumerate(calls[:-1]):
        assert [job.id for job in results[index]] == [new.id for new in jobs]
        assert all(job.state is JobState.QUEUED for job in results[index])
    [deduplicated] = results[len(calls) - 1]
    assert deduplicated.id == pair[0].id
    stored = await backend.list_jobs(limit=1000)
    assert len(stored) == 62
    assert {job.id for job in stored} == {new.id for jobs in calls[:-1] for new in jobs}


async def test_a_shared_call_carries_at_most_a_bounded_number_of_jobs(
    backend: RedisBackend, clock: ManualClock
) -> None:
    probe = LaneProbe(backend)
    now = clock.now()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(1_200):
                tg.start_soon(backend.enqueue, [new_job(now)])

    assert sum(probe.batches) == 1_200
    assert max(probe.batches) <= 500
    assert [stats.count(JobState.QUEUED) for stats in await backend.queue_stats()] == [1_200]


async def test_a_shared_call_carries_a_bounded_payload(
    backend: RedisBackend, clock: ManualClock
) -> None:
    probe = LaneProbe(backend)
    now = clock.now()
    big = b"x" * 200_000  # five of these fill a call's 1 MiB

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(backend.enqueue, [attrs.evolve(new_job(now), payload=big)])

    assert sum(probe.batches) == 30
    assert max(probe.batches) <= 5
    assert len(probe.batches) >= 6


async def test_when_the_sender_is_cancelled_mid_call_the_others_still_get_their_jobs(
    backend: RedisBackend, clock: ManualClock
) -> None:
    probe = LaneProbe(backend, hold_after=True)
    now = clock.now()
    first = new_job(now)
    others = [new_job(now) for _ in range(5)]
    results: dict[str, list[Any]] = {}

    async def producer(new: NewJob) -> None:
        results[new.id] = await backend.enqueue([new])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as sender:
                async with anyio.create_task_group() as lead:
                    lead.start_soon(producer, first)
                    await probe.arrived.wait()  # the first call is stored, its reply held
                    for new in others:
                        tg.start_soon(producer, new)
                    await anyio.wait_all_tasks_blocked()
                    probe.arrived = anyio.Event()
                    sender.cancel()  # sent, stored, reply never read
            probe.hold_after = False
            probe.release.set()

    assert first.id not in results
    assert sorted(results) == sorted(new.id for new in others)
    for new in others:
        [job] = results[new.id]
        assert job.id == new.id
        assert job == await backend.get_job(new.id)
    # Nothing went in twice, and the cancelled caller's job was stored (it had arrived).
    stored = await backend.list_jobs(limit=100)
    assert sorted(job.id for job in stored) == sorted([first.id, *(new.id for new in others)])


async def test_a_sender_cancelled_with_others_in_its_call_hands_them_on(
    backend: RedisBackend, clock: ManualClock
) -> None:
    probe = LaneProbe(backend, hold_after=True)
    now = clock.now()
    lead_job, *batch = [new_job(now) for _ in range(6)]
    results: dict[str, list[Any]] = {}

    async def producer(new: NewJob) -> None:
        results[new.id] = await backend.enqueue([new])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer, lead_job)
            await probe.arrived.wait()
            with anyio.CancelScope() as second_sender:
                async with anyio.create_task_group() as second:
                    second.start_soon(producer, batch[0])  # first in the queue: sends next
                    await anyio.wait_all_tasks_blocked()
                    for new in batch[1:]:
                        tg.start_soon(producer, new)
                    await anyio.wait_all_tasks_blocked()
                    probe.arrived = anyio.Event()
                    probe.release.set()  # the first call returns; batch goes in one call
                    await probe.arrived.wait()  # ...which is stored, its reply held
                    probe.release = anyio.Event()
                    second_sender.cancel()
            probe.hold_after = False
            probe.release.set()

    assert probe.batches[:2] == [1, 5]
    assert probe.batches[2] == 4  # the rest of the cancelled sender's call, sent again
    assert sorted(results) == sorted(new.id for new in [lead_job, *batch[1:]])
    for new in batch[1:]:
        [job] = results[new.id]
        assert job == await backend.get_job(new.id)
        assert job.state is JobState.QUEUED
    stored = await backend.list_jobs(limit=100)
    assert sorted(job.id for job in stored) == sorted(new.id for new in [lead_job, *batch])


async def test_a_waiting_caller_cancelled_before_its_call_leaves_nothing_behind(
    backend: RedisBackend, clock: ManualClock
) -> None:
    probe = LaneProbe(backend, hold_after=True)
    now = clock.now()
    sent, dropped, kept = new_job(now), new_job(now), new_job(now)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(backend.enqueue, [sent])
            await probe.arrived.wait()
            with anyio.CancelScope() as waiting:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(backend.enqueue, [dropped])
                    await anyio.wait_all_tasks_blocked()
                    waiting.cancel()
            tg.start_soon(backend.enqueue, [kept])
            await anyio.wait_all_tasks_blocked()
            probe.hold_after = False
            probe.release.set()

    assert probe.batches == [1, 1]
    assert {job.id for job in await backend.list_jobs()} == {sent.id, kept.id}


async def test_when_a_shared_call_fails_each_caller_gets_its_own_error() -> None:
    with RedisServer(appendonly=True) as server:
        clock = ManualClock()
        store = RedisBackend(server.url, prefix=unique_prefix(), retries=0)
        await store.open(clock)
        try:
            await store.enqueue([new_job(clock.now())])
            server.kill()
            errors: list[BaseException] = []

            async def producer() -> None:
                try:
                    await store.enqueue([new_job(clock.now())])
                except BackendError as exc:
                    errors.append(exc)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for _ in range(10):
                        tg.start_soon(producer)
        finally:
            await store.aclose()
    assert len(errors) == 10
    assert len({id(error) for error in errors}) == 10
    assert all("Redis failed" in str(error) for error in errors)
    assert all(isinstance(error.__cause__, redis.RedisError) for error in errors)


# -- failing at open ----------------------------------------------------------


async def test_a_wrong_password_fails_open_clearly(secured_server: RedisServer) -> None:
    url = secured_server.url.replace("pa55", "wrong")
    store = RedisBackend(url)

    with pytest.raises(BackendError, match="refused the credentials") as raised:
        await store.open(ManualClock())

    for text in (str(raised.value), repr(store)):
        assert "wrong" not in text
        assert "***" in text


async def test_a_missing_password_fails_open_clearly(secured_server: RedisServer) -> None:
    store = RedisBackend(f"redis://127.0.0.1:{secured_server.port}/0")

    with pytest.raises(BackendError, match="requires a password"):
        await store.open(ManualClock())


async def test_the_password_never_shows(secured_server: RedisServer) -> None:
    secrets = (PASSWORD, quote(PASSWORD, safe=""))
    store = RedisBackend(secured_server.url, check_persistence=False)
    assert "***" in repr(store)
    await store.open(ManualClock())
    try:
        assert not any(secret in repr(store) for secret in secrets)
    finally:
        await store.aclose()
    backend = from_url(secured_server.url, check_persistence=False)
    assert isinstance(backend, RedisBackend)
    assert not any(secret in repr(backend) for secret in secrets)
    in_query = RedisBackend(f"redis://127.0.0.1:{secured_server.port}/0?password=hunter2")
    assert "hunter2" not in repr(in_query)


async def test_an_unreachable_server_fails_open_at_once() -> None:
    store = RedisBackend(f"redis://:topsecret@127.0.0.1:{free_port()}/0")

    with anyio.fail_after(10), pytest.raises(BackendError, match="cannot connect") as raised:
        await store.open(ManualClock())

    assert "topsecret" not in str(raised.value)
    assert "topsecret" not in repr(store)


async def test_tls_against_a_plain_server_fails_open_clearly(redis_url: str) -> None:
    url = redis_url.replace("redis://", "rediss://", 1)
    store = RedisBackend(url, connect_timeout=1.0)

    with anyio.fail_after(10), pytest.raises(BackendError, match="TLS"):
        await store.open(ManualClock())


@pytest.fixture(scope="module")
def tls_server() -> Iterator[RedisServer]:
    """A server that speaks TLS only, with a throwaway CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    with RedisServer(tls=True, password=PASSWORD, appendonly=True) as server:
        yield server


async def test_tls_works_through_the_url(tls_server: RedisServer) -> None:
    store = from_url(tls_server.tls_url, prefix=unique_prefix())
    clock = ManualClock()
    await store.open(clock)
    try:
        [job] = await store.enqueue([new_job(clock.now())])
        assert [j.id for j in await store.claim("default", 1, "w", LEASE)] == [job.id]
    finally:
        await store.aclose()


async def test_a_certificate_that_does_not_verify_fails_open_clearly(
    tls_server: RedisServer,
) -> None:
    url = tls_server.tls_url.split("?", 1)[0]  # no CA given: the system's CAs refuse it
    store = RedisBackend(url, connect_timeout=5.0)

    with anyio.fail_after(10), pytest.raises(BackendError, match="TLS") as raised:
        await store.open(ManualClock())

    assert "certificate" in str(raised.value).lower()
    assert quote(PASSWORD, safe="") not in str(raised.value)


async def test_a_server_without_persistence_is_warned_about(secured_server: RedisServer) -> None:
    store = RedisBackend(secured_server.url, prefix=unique_prefix())

    with pytest.warns(RedisPersistenceWarning, match="no persistence"):
        await store.open(ManualClock())
    await store.aclose()
    # Asked not to check: silent (warnings are errors in this suite).
    quiet = RedisBackend(secured_server.url, prefix=unique_prefix(), check_persistence=False)
    await quiet.open(ManualClock())
    await quiet.aclose()


# -- a restricted ACL user ----------------------------------------------------


@pytest.mark.parametrize("user", ["app", "lean"])
async def test_a_restricted_acl_user_works_end_to_end(
    secured_server: RedisServer, user: str
) -> None:
    url = secured_server.url_for(user, ACL_PASSWORD)
    clock = ManualClock()
    worker = RedisBackend(url, prefix=user)
    producer = RedisBackend(url, prefix=user, check_persistence=False)
    with pytest.warns(RedisPersistenceWarning, match="could not check"):
        await worker.open(clock)
    await producer.open(clock)
    try:
        await worker.wait_for_work(["default"], None)  # subscribes to &user:wake:default
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.wait_for_work, ["default"], None)
                await anyio.wait_all_tasks_blocked()
                first, second = await producer.enqueue(
                    [new_job(clock.now(), key="k"), new_job(clock.now())]
                )
        claimed = await worker.claim("default", 10, "w", LEASE)
        assert {job.id for job in claimed} == {first.id, second.id}
        leases = {job.id: job.lease_token for job in claimed if job.lease_token}
        assert (await worker.heartbeat(leases, LEASE)).lost == frozenset()
        assert await worker.set_progress(first.id, leases[first.id], 0.5, "half")
        outcomes = [
            Outcome(job_id=job_id, lease_token=token, kind=OutcomeKind.COMPLETE, result=b"1")
            for job_id, token in leases.items()
        ]
        assert await worker.settle(outcomes) == []
        clock.advance(LEASE + 1)
        assert await worker.recover_expired() == 0
        assert {s.queue: s.count(JobState.COMPLETE) for s in await producer.queue_stats()} == {
            "default": 2
        }
        assert len(await producer.list_jobs(state=JobState.COMPLETE)) == 2
        schedule = Schedule(
            name="tick",
            job_name="tasks.example",
            queue="default",
            trigger='{"kind": "interval", "seconds": 60}',
            payload=b"{}",
            next_fire_at=clock.now(),
        )
        await producer.put_schedule(schedule)
        fired = await producer.fire_schedule("tick", clock.now(), clock.now() + 60, [])
        assert fired == []
        await producer.pause_queue("default", True)
        await producer.pause_queue("default", False)
        assert await producer.prune({JobState.COMPLETE: clock.now() + 1}) == 2
    finally:
        await worker.aclose()
        await producer.aclose()


async def test_an_acl_user_outside_its_prefix_fails_open_clearly(
    secured_server: RedisServer,
) -> None:
    store = RedisBackend(
        secured_server.url_for("app", ACL_PASSWORD), prefix="elsewhere", check_persistence=False
    )

    with pytest.raises(BackendError, match=r"~elsewhere:\*") as raised:
        await store.open(ManualClock())

    assert ACL_PASSWORD not in str(raised.value)


# -- restarts -----------------------------------------------------------------


@pytest.fixture
def durable_server() -> Iterator[RedisServer]:
    """A server of its own that fsyncs every write, for killing and restarting."""
    with RedisServer(appendonly=True, appendfsync="always") as server:
        yield server


async def test_a_restart_keeps_acknowledged_jobs_and_the_backend_carries_on(
    durable_server: RedisServer,
) -> None:
    clock = ManualClock()
    store = RedisBackend(durable_server.url, prefix="app", retries=20, retry_backoff_cap=0.5)
    producer = RedisBackend(durable_server.url, prefix="app", retries=20, retry_backoff_cap=0.5)
    await store.open(clock)
    await producer.open(clock)
    try:
        jobs = await store.enqueue([new_job(clock.now()) for _ in range(20)])
        running = await store.claim("default", 5, "w", LEASE)
        done = running[:2]
        outcomes = [
            Outcome(
                job_id=j.id, lease_token=j.lease_token or "", kind=OutcomeKind.COMPLETE, result=b"1"
            )
            for j in done
        ]
        assert await store.settle(outcomes) == []
        await store.wait_for_work(["default"], None)  # subscribe before the restart

        durable_server.kill()  # SIGKILL: only what reached the AOF survives
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                # A claim sent while the server is down waits for it, retrying.
                claimed_meanwhile: list[Any] = []

                async def claim_while_down() -> None:
                    claimed_meanwhile.extend(await store.claim("default", 1, "w", LEASE))

                tg.start_soon(claim_while_down)
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(durable_server.start)

        states = {job.id: (await store.get_job(job.id)) for job in jobs}
        assert all(job is not None for job in states.values())
        assert {
            job_id for job_id, job in states.items() if job and job.state is JobState.COMPLETE
        } == {j.id for j in done}
        assert len(claimed_meanwhile) == 1
        # The backend carries on: settle the leases taken before the restart...
        still_running = [*running[2:], *claimed_meanwhile]
        outcomes = [
            Outcome(job_id=j.id, lease_token=j.lease_token or "", kind=OutcomeKind.COMPLETE)
            for j in still_running
        ]
        assert await store.settle(outcomes) == []
        # ...and waiting works again: an enqueue from another connection wakes it.
        fresh: list[Any] = []

        async def worker() -> None:
            # The first wait after a reconnect may return at once (it resubscribes).
            while not fresh:
                fresh.extend(await store.claim("fresh", 1, "w", LEASE))
                if not fresh:
                    await store.wait_for_work(["fresh"], None)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker)
                await anyio.wait_all_tasks_blocked()
                [sent] = await producer.enqueue([new_job(clock.now(), queue="fresh")])
        assert [job.id for job in fresh] == [sent.id]
        remaining = await store.claim("default", 100, "w", LEASE)
        assert len(remaining) == len(jobs) - len(running) - len(claimed_meanwhile)
    finally:
        await store.aclose()
        await producer.aclose()


async def test_a_waiter_blocked_across_a_restart_wakes_and_waits_again(
    durable_server: RedisServer,
) -> None:
    clock = ManualClock()
    store = RedisBackend(durable_server.url, prefix="app", retries=20, retry_backoff_cap=0.5)
    producer = RedisBackend(durable_server.url, prefix="app", retries=20, retry_backoff_cap=0.5)
    await store.open(clock)
    await producer.open(clock)
    try:
        with anyio.fail_after(30):
            await store.wait_for_work(["default"], None)  # subscribed
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.wait_for_work, ["default"], None)
                await anyio.wait_all_tasks_blocked()
                durable_server.kill()
                # The waiter's subscription reconnects and resubscribes, and it
                # returns: messages may have been missed while the server was away.
                await anyio.to_thread.run_sync(durable_server.start)
            claimed: list[Any] = []

            async def worker() -> None:
                while not claimed:
                    claimed.extend(await store.claim("default", 1, "w", LEASE))
                    if not claimed:
                        await store.wait_for_work(["default"], None)

            async with anyio.create_task_group() as tg:
                tg.start_soon(worker)
                await anyio.wait_all_tasks_blocked()
                [sent] = await producer.enqueue([new_job(clock.now())])
        assert [job.id for job in claimed] == [sent.id]
    finally:
        await store.aclose()
        await producer.aclose()


# -- flow control: limits, rounds, key scopes ---------------------------------------


async def test_a_raise_conflict_fails_only_its_own_call(
    backend: RedisBackend, clock: ManualClock
) -> None:
    now = clock.now()
    [holder] = await backend.enqueue([new_job(now, key="k")])
    probe = LaneProbe(backend)
    plain = [[new_job(now)] for _ in range(30)]
    clash = [new_job(now), new_job(now, key="k", on_conflict=OnConflict.RAISE)]
    results: dict[int, list[Any]] = {}
    failures: list[DuplicateJobError] = []

    async def producer(index: int) -> None:
        results[index] = await backend.enqueue(plain[index])

    async def clasher() -> None:
        try:
            await backend.enqueue(clash)
        except DuplicateJobError as exc:
            failures.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for index in range(len(plain)):
                tg.start_soon(producer, index)
            tg.start_soon(clasher)

    # The clash went in a script call of its own: the shared calls carried only the others.
    assert sum(probe.batches) == len(plain)
    [failure] = failures
    assert (failure.key, failure.job_id) == ("k", holder.id)
    assert all(results[i][0].id == plain[i][0].id for i in range(len(plain)))
    assert await backend.get_job(clash[0].id) is None
    assert len(await backend.list_jobs(limit=100)) == len(plain) + 1


async def test_claims_and_settles_of_plain_jobs_touch_no_flow_control_keys(
    backend: RedisBackend, clock: ManualClock, redis_url: str
) -> None:
    await backend.enqueue([new_job(clock.now())])  # connections made, scripts cached
    inspect = sync_client(redis_url)
    try:
        inspect.config_resetstat()
        for _ in range(10):
            [job] = await backend.claim("default", 1, "w", LEASE)
            assert job.lease_token is not None
            retry = Outcome(job_id=job.id, lease_token=job.lease_token, kind=OutcomeKind.RETRY)
            assert await backend.settle([retry]) == []
        calls = command_calls(inspect)
    finally:
        inspect.close()
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    assert calls.pop("evalsha") == 20
    # No round, partition count or rate window is read or written for them; the one
    # SISMEMBER per settle call asks whether the queue is claimed under a limit.
    assert calls.pop("sismember") == 20
    calls.pop("hello", None)  # a connection the pool opened meanwhile
    calls.pop("ping", None)
    assert set(calls) <= {
        *("time", "publish"),  # the settle's sweep and the retry's wake-up
        *("zrangebyscore", "zpopmin", "hmget", "hset", "hdel", "zadd", "zrem"),
        "rpush",  # the attempt's entry in the job's history
    }, calls


async def test_key_holds_end_by_scope_and_a_window_key_has_a_ttl(
    backend: RedisBackend, clock: ManualClock, redis_url: str
) -> None:
    prefix = backend._conn.keys.prefix
    now = clock.now()
    inspect = sync_client(redis_url)
    try:
        [window] = await backend.enqueue(
            [new_job(now, key="w", key_scope=KeyScope.WINDOW, key_expires_at=now + 60)]
        )
        [queued] = await backend.enqueue(
            [new_job(now, queue="q", key="q", key_scope=KeyScope.QUEUED)]
        )
        assert inspect.get(f"{prefix}:key:w") == b"~" + window.id.encode()
        assert 0 < inspect.pttl(f"{prefix}:key:w") <= 60_000
        assert inspect.get(f"{prefix}:key:q") == queued.id.encode()

        [claimed] = await backend.claim("q", 1, "w", LEASE)

        assert claimed.id == queued.id
        assert not inspect.exists(f"{prefix}:key:q")
    finally:
        inspect.close()


async def test_a_job_ending_in_a_limited_queue_wakes_another_process(redis_url: str) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    waiter = RedisBackend(redis_url, prefix=prefix)
    worker = RedisBackend(redis_url, prefix=prefix)
    await waiter.open(clock)
    await worker.open(clock)
    limits = ClaimLimits(global_concurrency=1)
    try:
        await worker.enqueue([new_job(clock.now()), new_job(clock.now())])
        [job] = (await worker.claim_limited("default", 5, "w", LEASE, limits)).jobs
        held = await waiter.claim_limited("default", 5, "w2", LEASE, limits)
        assert held.held_by == "global_concurrency"
        assert job.lease_token is not None
        with anyio.fail_after(5):
            await waiter.wait_for_work(["default"], None)  # subscribes, returns
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter.wait_for_work, ["default"], None)
                await anyio.wait_all_tasks_blocked()
                done = Outcome(
                    job_id=job.id, lease_token=job.lease_token, kind=OutcomeKind.COMPLETE
                )
                assert await worker.settle([done]) == []
        assert len((await waiter.claim_limited("default", 5, "w2", LEASE, limits)).jobs) == 1
    finally:
        await waiter.aclose()
        await worker.aclose()


async def test_racing_enqueues_from_many_connections_leave_one_holder_per_scope(
    redis_url: str,
) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    stores = [RedisBackend(redis_url, prefix=prefix) for _ in range(4)]
    for store in stores:
        await store.open(clock)
    now = clock.now()
    variants: list[dict[str, Any]] = [
        {"key_scope": KeyScope.QUEUED},
        {"key_scope": KeyScope.ACTIVE},
        {"key_scope": KeyScope.WINDOW, "key_expires_at": now + 60},
        {"on_conflict": OnConflict.REPLACE},
    ]
    try:
        for number, fields in enumerate(variants):
            key = f"race-{number}"
            returned: list[str] = []

            async def racer(
                store: RedisBackend, fields: dict[str, Any], key: str, returned: list[str]
            ) -> None:
                for _ in range(10):
                    [job] = await store.enqueue([new_job(now, key=key, **fields)])
                    returned.append(job.id)

            async with anyio.create_task_group() as tg:
                for store in stores:
                    for _ in range(3):
                        tg.start_soon(racer, store, fields, key, returned)

            assert len(returned) == 120
            assert len(set(returned)) == 1, fields
        jobs = await stores[0].list_jobs(limit=1000)
        assert len(jobs) == len(variants)
    finally:
        for store in stores:
            await store.aclose()


async def test_partition_counts_and_rate_windows_leave_no_unbounded_keys(
    backend: RedisBackend, clock: ManualClock, redis_url: str
) -> None:
    prefix = backend._conn.keys.prefix
    now = clock.now()
    limits = ClaimLimits(
        partition_concurrency=2,
        rate=RateWindow(limit=100, per=30.0),
        job_rates={"tasks.example": RateWindow(limit=100, per=20.0)},
    )
    await backend.enqueue([new_job(now, partition=f"p{i % 3}", max_attempts=1) for i in range(9)])
    first = await backend.claim_limited("default", 9, "w", LEASE, limits)
    assert len(first.jobs) == 6
    assert first.held_by == "partition_concurrency"
    inspect = sync_client(redis_url)
    try:
        assert inspect.hgetall(f"{prefix}:q:default:prunning") == {
            b"p0": b"2",
            b"p1": b"2",
            b"p2": b"2",
        }
        outcomes = [
            Outcome(job_id=job.id, lease_token=job.lease_token or "", kind=OutcomeKind.COMPLETE)
            for job in first.jobs[:3]
        ]
        assert await backend.settle(outcomes) == []
        clock.advance(LEASE + 1)
        assert await backend.recover_expired() == 3  # the other three die (one attempt)
        rest = await backend.claim_limited("default", 9, "w", LEASE, limits)
        assert len(rest.jobs) == 3
        outcomes = [
            Outcome(job_id=job.id, lease_token=job.lease_token or "", kind=OutcomeKind.COMPLETE)
            for job in rest.jobs
        ]
        assert await backend.settle(outcomes) == []

        # Every running count went back to zero, and its hash with it.
        assert not inspect.exists(f"{prefix}:q:default:prunning")
        assert 0 < inspect.pttl(f"{prefix}:rate:queue:default") <= 30_000
        assert 0 < inspect.pttl(f"{prefix}:rate:job:tasks.example") <= 20_000
        [stats] = await backend.queue_stats(partition="p1")
        assert stats.count(JobState.COMPLETE) + stats.count(JobState.DEAD) == 3
    finally:
        inspect.close()


# -- bounded keys ---------------------------------------------------------------


async def _drive_to_every_state(store: Backend, clock: ManualClock) -> dict[JobState, str]:
    """Make one job in each final state (and return their ids)."""
    now = clock.now()
    complete, dead, cancelled = await store.enqueue(
        [new_job(now, key="a"), new_job(now, key="b"), new_job(now, key="c", due_in=60)]
    )
    await store.cancel(cancelled.id)
    claimed = {job.id: job for job in await store.claim("default", 10, "w", LEASE)}
    assert set(claimed) == {complete.id, dead.id}
    outcomes = [
        Outcome(
            job_id=complete.id,
            lease_token=claimed[complete.id].lease_token or "",
            kind=OutcomeKind.COMPLETE,
        ),
        Outcome(
            job_id=dead.id,
            lease_token=claimed[dead.id].lease_token or "",
            kind=OutcomeKind.DEAD,
        ),
    ]
    assert await store.settle(outcomes) == []
    return {
        JobState.COMPLETE: complete.id,
        JobState.DEAD: dead.id,
        JobState.CANCELLED: cancelled.id,
    }


async def test_finished_jobs_get_a_ttl_and_active_ones_none(redis_url: str) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    store = RedisBackend(redis_url, prefix=prefix, finished_ttl=60, dead_ttl=600)
    await store.open(clock)
    inspect = sync_client(redis_url)
    try:
        ids = await _drive_to_every_state(store, clock)
        queued = (await store.enqueue([new_job(clock.now())]))[0]

        def ttl(job_id: str) -> int:
            value: int = inspect.pttl(f"{prefix}:job:{job_id}")
            return value

        assert 0 < ttl(ids[JobState.COMPLETE]) <= 60_000
        assert 0 < ttl(ids[JobState.CANCELLED]) <= 60_000
        assert 60_000 < ttl(ids[JobState.DEAD]) <= 600_000
        assert ttl(queued.id) == -1  # active jobs never expire
        # A job's attempt history expires with it.
        history = f"{prefix}:attempts:{ids[JobState.DEAD]}"
        assert 60_000 < inspect.pttl(history) <= 600_000
        # Dedup keys live only while their job is active.
        assert not inspect.exists(f"{prefix}:key:a", f"{prefix}:key:b", f"{prefix}:key:c")
        # Retrying a dead job makes it permanent again.
        await store.retry_dead(ids[JobState.DEAD], clock.now())
        assert ttl(ids[JobState.DEAD]) == -1
        assert inspect.pttl(history) == -1
        assert inspect.get(f"{prefix}:key:b") == ids[JobState.DEAD].encode()
    finally:
        inspect.close()
        await store.aclose()


async def test_expired_jobs_leave_every_index(redis_url: str) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    store = RedisBackend(redis_url, prefix=prefix, finished_ttl=0.05, dead_ttl=0.05)
    await store.open(clock)
    inspect = sync_client(redis_url)
    try:
        ids = await _drive_to_every_state(store, clock)
        # Redis keeps the time here: poll until it expired the hashes (bounded).
        with anyio.fail_after(10):
            while inspect.exists(*(f"{prefix}:job:{job_id}" for job_id in ids.values())):
                await anyio.sleep(0.01)

        stats = await store.queue_stats()  # sweeps the expired entries first

        assert stats == []
        assert await store.list_jobs() == []
        keys = {key.decode() for key in inspect.scan_iter(match=f"{prefix}:*")}
        assert keys == {f"{prefix}:seq", f"{prefix}:queues"}
    finally:
        inspect.close()
        await store.aclose()


async def test_pruning_everything_leaves_only_fixed_keys(redis_url: str) -> None:
    prefix = unique_prefix()
    clock = ManualClock()
    store = RedisBackend(redis_url, prefix=prefix, finished_ttl=None, dead_ttl=None)
    await store.open(clock)
    inspect = sync_client(redis_url)
    try:
        ids = await _drive_to_every_state(store, clock)
        for job_id in ids.values():
            assert inspect.pttl(f"{prefix}:job:{job_id}") == -1  # no TTL when asked

        pruned = await store.prune({state: clock.now() + 1 for state in JobState})

        assert pruned == 3
        keys = {key.decode() for key in inspect.scan_iter(match=f"{prefix}:*")}
        assert keys == {f"{prefix}:seq", f"{prefix}:queues"}
    finally:
        inspect.close()
        await store.aclose()


async def test_deleting_and_removing_jobs_leaves_only_fixed_keys(
    backend: RedisBackend, clock: ManualClock, redis_url: str
) -> None:
    prefix = backend._conn.keys.prefix
    now = clock.now()
    window: dict[str, Any] = {"key": "w", "key_scope": KeyScope.WINDOW, "key_expires_at": now + 60}
    held, other, removed = await backend.enqueue(
        [new_job(now, max_attempts=2, **window), new_job(now, tags={"t": "1"}), new_job(now)]
    )
    claimed = {job.id: job for job in await backend.claim("default", 3, "w", LEASE)}

    def settled(job_id: str, kind: OutcomeKind, **fields: Any) -> Outcome:
        token = claimed[job_id].lease_token or ""
        return Outcome(job_id=job_id, lease_token=token, kind=kind, **fields)

    assert (
        await backend.settle(
            [
                settled(held.id, OutcomeKind.RETRY, due_at=now),
                settled(other.id, OutcomeKind.DEAD),
                settled(removed.id, OutcomeKind.COMPLETE, remove=True),
            ]
        )
        == []
    )
    inspect = sync_client(redis_url)
    try:
        assert inspect.get(f"{prefix}:key:w") == b"~" + held.id.encode()
        assert inspect.llen(f"{prefix}:attempts:{held.id}") == 1
        assert not inspect.exists(f"{prefix}:job:{removed.id}", f"{prefix}:attempts:{removed.id}")

        assert await backend.delete_job(held.id) is True  # queued, holding its window
        assert await backend.purge(tags={"t": "1"}) == 1

        keys = {key.decode() for key in inspect.scan_iter(match=f"{prefix}:*")}
        assert keys == {f"{prefix}:seq", f"{prefix}:queues"}
        assert await backend.claim("default", 3, "w", LEASE) == []
    finally:
        inspect.close()


async def test_tags_with_any_text_round_trip_and_filter(
    backend: RedisBackend, clock: ManualClock
) -> None:
    tags = {"": "empty key", "a:b": "", "3:x": "-", "ünï": "cödé 🎉", "k" * 300: "v" * 1000}
    tagged, plain = await backend.enqueue([new_job(clock.now(), tags=tags), new_job(clock.now())])

    assert (await backend.get_job(tagged.id)) == tagged
    assert (await backend.get_job(plain.id)) == plain
    for key, value in tags.items():
        assert [job.id for job in await backend.list_jobs(tags={key: value})] == [tagged.id]
    assert await backend.list_jobs(tags={"a:b": "x"}) == []
    assert await backend.list_jobs(tags={"a": "b:"}) == []


async def test_listings_and_purges_carry_on_across_scan_chunks(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncjobs.backends.redis import _control, _inspection

    monkeypatch.setattr(_inspection, "_LIST_CHUNK", 3)
    monkeypatch.setattr(_control, "_PURGE_CHUNK", 3)
    jobs = await backend.enqueue([new_job(clock.now(), tags={"n": str(i % 2)}) for i in range(10)])
    odd = [job.id for job in reversed(jobs) if job.tags["n"] == "1"]

    first = await backend.list_jobs(tags={"n": "1"}, limit=2)
    rest = await backend.list_jobs(tags={"n": "1"}, after=first[-1].id)
    skipped = await backend.list_jobs(tags={"n": "1"}, offset=3, limit=1)

    assert [job.id for job in first + rest] == odd
    assert [job.id for job in skipped] == odd[3:4]
    assert [job.id for job in await backend.list_jobs(limit=4, after=odd[0])] == [
        job.id for job in reversed(jobs)
    ][1:5]
    assert await backend.purge(tags={"n": "1"}) == 5
    assert len(await backend.list_jobs()) == 5


async def test_history_entries_keep_any_error_text(
    backend: RedisBackend, clock: ManualClock
) -> None:
    [job] = await backend.enqueue([new_job(clock.now(), max_attempts=3)])
    [claimed] = await backend.claim("default", 1, "w:1", LEASE)
    message = "2:xx-\n\x00 ünï € -"
    error = ErrorInfo(type="-", message=message, traceback="tb")
    retry = Outcome(
        job_id=job.id, lease_token=claimed.lease_token or "", kind=OutcomeKind.RETRY, error=error
    )
    assert await backend.settle([retry]) == []

    [attempt] = await backend.get_attempts(job.id)

    assert (attempt.error_type, attempt.error_message) == ("-", message)
    assert (attempt.worker_id, attempt.started_at) == ("w:1", None)


async def test_aged_out_workers_leave_both_keys(
    backend: RedisBackend, clock: ManualClock, redis_url: str
) -> None:
    prefix = backend._conn.keys.prefix
    now = clock.now()
    for i in range(3):
        await backend.register_worker(WorkerRecord(id=f"w{i}", last_seen=now - 100 * i, data=b""))

    alive = await backend.list_workers(seen_since=now - 150)

    assert [(w.id, w.last_seen) for w in alive] == [("w0", now), ("w1", now - 100)]
    inspect = sync_client(redis_url)
    try:
        assert set(inspect.hkeys(f"{prefix}:workers")) == {b"w0", b"w1"}
        assert set(inspect.zrange(f"{prefix}:workers:seen", 0, -1)) == {b"w0", b"w1"}
        await backend.remove_worker("w0")
        await backend.remove_worker("w1")
        assert not inspect.exists(f"{prefix}:workers", f"{prefix}:workers:seen")
    finally:
        inspect.close()


async def test_audit_entries_of_one_time_are_all_kept_newest_first(
    backend: RedisBackend, clock: ManualClock
) -> None:
    at = clock.now()
    records = [AuditRecord(at=at, data=b"same") for _ in range(3)]
    records += [AuditRecord(at=at, data=f"n{i}".encode()) for i in range(3)]
    for record in records:
        await backend.record_audit(record)

    listed = await backend.list_audit()

    assert [r.data for r in listed] == [b"n2", b"n1", b"n0", b"same", b"same", b"same"]
    assert await backend.list_audit(limit=0) == []
    assert await backend.prune_audit(at) == 0
    assert await backend.prune_audit(at + 0.001) == 6
    assert await backend.list_audit() == []


# -- construction -----------------------------------------------------------------


async def test_a_client_passed_in_is_used_and_left_open(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisBackend(client, prefix=unique_prefix())
    assert "client=" in repr(store)
    await store.open(ManualClock())
    [job] = await store.enqueue([new_job(ManualClock().now())])
    await store.aclose()
    assert await client.ping()
    await client.aclose()
    assert job.state is JobState.QUEUED


def test_bad_options_are_refused(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisBackend(aioredis.Redis.from_url(redis_url, decode_responses=True))
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisBackend(redis_url, prefix="")
    with pytest.raises(ConfigurationError, match="negative"):
        RedisBackend(redis_url, finished_ttl=-1)


async def test_using_a_backend_that_is_not_open_is_a_clear_error(redis_url: str) -> None:
    store = RedisBackend(redis_url)
    with pytest.raises(BackendError, match="not open"):
        await store.claim("default", 1, "w", LEASE)
    with pytest.raises(BackendError, match="not open"):
        await store.get_job("x")
    with pytest.raises(BackendError, match="not open"):
        await store.wait_for_work(["default"], None)


async def test_a_unix_socket_url_works() -> None:
    with RedisServer(unixsocket=True, appendonly=True) as server:
        store = from_url(server.unix_url, prefix=unique_prefix())
        assert isinstance(store, RedisBackend)
        clock = ManualClock()
        await store.open(clock)
        try:
            [job] = await store.enqueue([new_job(clock.now())])
            assert [j.id for j in await store.claim("default", 1, "w", LEASE)] == [job.id]
        finally:
            await store.aclose()


async def test_opening_twice_replaces_the_connections(redis_url: str) -> None:
    store = RedisBackend(redis_url, prefix=unique_prefix())
    clock = ManualClock()
    await store.open(clock)
    await store.open(clock)
    try:
        [job] = await store.enqueue([new_job(clock.now())])
        assert await store.get_job(job.id) == job
    finally:
        await store.aclose()
    await store.aclose()  # closing twice is harmless
