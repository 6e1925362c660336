"""The Prometheus exporter: real runtimes on every store, scraped over HTTP."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncjobs import ConfigurationError, JobDead, JobRuntime, ManualClock, Permanent
from asyncjobs.backends import Backend, from_url
from asyncjobs.integrations._attempts import Attempts
from asyncjobs.integrations.prometheus import instrument, serve
from asyncjobs.testing import drain
from tests.conftest import RuntimeFactory
from tests.test_cli import subprocess_env

pytestmark = pytest.mark.anyio

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(n for n, _ in samples)}"
    return samples[key]


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.get(url, timeout=10)


async def test_counters_histograms_and_gauges_over_http(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    runtime = make_runtime(queues={"default": 4, "mail": 1})
    release = anyio.Event()
    started = anyio.Event()

    @runtime.job(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @runtime.job(name="flaky", max_attempts=2, backoff=0)
    async def flaky(token: str) -> None:
        raise ValueError("boom")

    @runtime.job(name="refuse")
    async def refuse() -> None:
        raise Permanent("never")

    @runtime.job(name="hold", queue="mail")
    async def hold() -> None:
        started.set()
        await release.wait()

    async with serve(runtime, "127.0.0.1:0", registry=CollectorRegistry()) as metrics:
        assert metrics.port
        url = f"http://127.0.0.1:{metrics.port}/metrics"
        async with runtime:
            await add.enqueue(1, 2)
            await add.options(delay=30).enqueue(3, 4)
            for handle in (await flaky.enqueue("secret-token-value"), await refuse.enqueue()):
                with pytest.raises(JobDead):
                    await handle.result(timeout=10)
            await drain(runtime)
            clock.advance(45)  # the delayed add was due 15 s ago when it starts
            await drain(runtime)
            await hold.enqueue()
            with anyio.fail_after(10):
                await started.wait()
            # The store hears of a handler's start from the settle loop, soon after.
            with anyio.fail_after(10):
                while True:
                    await metrics.refresh()
                    response = await get(url)
                    labels = {"queue": "mail", "state": "running"}
                    if metrics.registry.get_sample_value("asyncjobs_queue_jobs", labels):
                        break
                    await anyio.sleep(0.01)
            release.set()
            await drain(runtime)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "secret-token-value" not in text
    samples = parse(text)
    add_labels = {"queue": "default", "job_name": "add"}
    assert value(samples, "asyncjobs_jobs_enqueued_total", **add_labels) == 2
    assert value(samples, "asyncjobs_jobs_started_total", **add_labels) == 2
    assert value(samples, "asyncjobs_jobs_completed_total", **add_labels) == 2
    flaky_labels = {"queue": "default", "job_name": "flaky"}
    assert value(samples, "asyncjobs_jobs_started_total", **flaky_labels) == 2
    assert value(samples, "asyncjobs_jobs_retried_total", **flaky_labels) == 1
    assert value(samples, "asyncjobs_jobs_failed_total", **flaky_labels) == 2
    assert value(samples, "asyncjobs_jobs_dead_total", **flaky_labels) == 1
    refuse_labels = {"queue": "default", "job_name": "refuse"}
    assert value(samples, "asyncjobs_jobs_failed_total", **refuse_labels) == 1
    assert value(samples, "asyncjobs_jobs_dead_total", **refuse_labels) == 1
    # Run times by outcome; queue waits from the due time (the manual clock makes them exact).
    assert value(samples, "asyncjobs_job_run_seconds_count", outcome="complete", **add_labels) == 2
    assert value(samples, "asyncjobs_job_run_seconds_count", outcome="retry", **flaky_labels) == 1
    assert value(samples, "asyncjobs_job_run_seconds_count", outcome="dead", **flaky_labels) == 1
    assert value(samples, "asyncjobs_job_queue_wait_seconds_count", **add_labels) == 2
    assert value(samples, "asyncjobs_job_queue_wait_seconds_sum", **add_labels) == 15
    assert value(samples, "asyncjobs_job_queue_wait_seconds_bucket", le="10.0", **add_labels) == 1
    assert value(samples, "asyncjobs_job_queue_wait_seconds_bucket", le="30.0", **add_labels) == 2
    # Gauges, read while `hold` ran: from the store, and this process's running jobs.
    assert value(samples, "asyncjobs_queue_jobs", queue="mail", state="running") == 1
    assert value(samples, "asyncjobs_queue_jobs", queue="mail", state="waiting") == 0
    assert value(samples, "asyncjobs_queue_jobs", queue="default", state="dead") == 2
    assert value(samples, "asyncjobs_queue_jobs", queue="default", state="running") == 0
    assert value(samples, "asyncjobs_running_jobs", queue="mail") == 1
    assert value(samples, "asyncjobs_running_jobs", queue="default") == 0
    assert value(samples, "asyncjobs_queue_paused", queue="mail") == 0
    assert value(samples, "asyncjobs_workers") == 1
    assert value(samples, "asyncjobs_store_up") == 1


async def test_waiting_and_delayed_depth_and_the_oldest_waiting_age(
    make_runtime: RuntimeFactory, clock: ManualClock
) -> None:
    # An enqueue-only process (a web app): jobs wait, nobody runs them.
    web = make_runtime(role="enqueue")

    @web.job(name="report")
    async def report(n: int) -> None: ...

    metrics = instrument(web, CollectorRegistry())
    async with web, metrics:
        await report.enqueue(1)
        clock.advance(12)
        await report.enqueue(2)
        await report.options(delay=300).enqueue(3)
        clock.advance(30)
        await metrics.refresh()
        transport = httpx.ASGITransport(app=metrics.asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/metrics")
    samples = parse(response.text)
    assert value(samples, "asyncjobs_queue_jobs", queue="default", state="waiting") == 2
    assert value(samples, "asyncjobs_queue_jobs", queue="default", state="delayed") == 1
    assert value(samples, "asyncjobs_oldest_waiting_job_age_seconds", queue="default") == 42
    assert value(samples, "asyncjobs_jobs_enqueued_total", queue="default", job_name="report") == 3
    assert value(samples, "asyncjobs_workers") == 0  # an enqueue-only runtime runs no jobs


async def test_mounted_in_a_starlette_app() -> None:
    runtime = JobRuntime()

    @runtime.job(name="ping")
    async def ping() -> str:
        return "pong"

    metrics = instrument(runtime, CollectorRegistry())
    app = Starlette(routes=[Mount("/metrics", app=metrics.asgi_app())])
    async with runtime, metrics:
        await (await ping.enqueue()).result(timeout=10)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.get("/metrics/")
    assert response.status_code == 200
    samples = parse(response.text)
    assert value(samples, "asyncjobs_jobs_completed_total", queue="default", job_name="ping") == 1


WAITING = {"queue": "default", "state": "waiting"}


def test_attempts_are_kept_per_attempt_and_bounded() -> None:
    attempts: Attempts[str] = Attempts(limit=3)
    assert attempts.add("a", 1, "a1") == []
    assert attempts.add("a", 2, "a2") == []  # the next attempt may start before the last ends
    assert attempts.latest("a") == "a2"
    assert attempts.pop("a", 1) == "a1"
    assert attempts.add("b", 1, "b1") == []
    assert attempts.add("c", 1, "c1") == []
    assert attempts.add("d", 1, "d1") == ["a2"]  # the oldest job goes
    assert len(attempts) == 3
    assert attempts.pop("b") == "b1"  # no attempt number: the latest
    assert attempts.pop("a") is None
    assert sorted(attempts.drain()) == ["c1", "d1"]
    assert len(attempts) == 0


async def test_the_gauges_appear_once_the_runtime_starts_and_go_when_it_is_left() -> None:
    runtime = JobRuntime()
    registry = CollectorRegistry()
    metrics = instrument(runtime, registry, refresh=0.01)
    async with metrics:
        assert registry.get_sample_value("asyncjobs_workers") == 0
        assert registry.get_sample_value("asyncjobs_queue_jobs", WAITING) is None
        async with runtime:
            assert registry.get_sample_value("asyncjobs_workers") == 1
            with anyio.fail_after(10):  # the first read follows the start
                while registry.get_sample_value("asyncjobs_queue_jobs", WAITING) is None:
                    await anyio.sleep(0.01)
            assert registry.get_sample_value("asyncjobs_queue_jobs", WAITING) == 0
            assert registry.get_sample_value("asyncjobs_store_up") == 1
    assert registry.get_sample_value("asyncjobs_workers") == 0


async def test_a_registry_holds_one_set_of_metrics() -> None:
    registry = CollectorRegistry()
    runtime = JobRuntime()
    first = instrument(runtime, registry)
    with pytest.raises(ConfigurationError, match="already in this registry"):
        instrument(JobRuntime(), registry)
    first.unregister()
    instrument(runtime, registry)  # free again


@pytest.mark.parametrize("address", ["localhost", "host:port", "127.0.0.1:70000"])
async def test_a_bad_metrics_address_is_refused(address: str) -> None:
    registry = CollectorRegistry()
    with pytest.raises(ConfigurationError, match="HOST:PORT"):
        async with serve(JobRuntime(), address, registry=registry):
            pass
    assert list(registry.collect()) == []


SERVING = re.compile(r"serving metrics on (http://\S+/metrics)")


def cli_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, Backend]:
    """For a worker process: the Python expression of its store, and one for the test."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        return repr(url), from_url(url)
    from asyncjobs.backends.redis import RedisBackend

    redis_url: str = request.getfixturevalue("redis_url")
    prefix = f"cli{abs(hash(request.node.nodeid))}"
    expression = f"RedisBackend({redis_url!r}, prefix={prefix!r})"
    return expression, RedisBackend(redis_url, prefix=prefix)


WORKER_MODULE = """
from asyncjobs import JobRuntime
from asyncjobs.backends.redis import RedisBackend

runtime = JobRuntime({store}, queues={{"default": 2}})


@runtime.job(name="greet")
async def greet(who: str) -> str:
    return f"hello {{who}}"
"""


@pytest.mark.filterwarnings("ignore::asyncjobs.backends.sqlite.UnsafeSQLiteWarning")
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_worker_serves_metrics_while_it_runs(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    expression, store = cli_store(kind, tmp_path, request)
    (tmp_path / "metrics_jobs.py").write_text(WORKER_MODULE.format(store=expression))
    enqueuer = JobRuntime(store, role="enqueue")

    @enqueuer.job(name="greet")
    async def greet(who: str) -> str:
        raise AssertionError("an enqueue runtime never runs jobs")

    command = [
        sys.executable,
        "-m",
        "asyncjobs",
        "worker",
        "metrics_jobs:runtime",
        "--metrics",
        "127.0.0.1:0",
    ]
    stderr_path = tmp_path / "worker.err"
    with stderr_path.open("wb") as stderr:
        async with enqueuer:
            handles = [await greet.enqueue(f"w{n}") for n in range(3)]
            worker = await anyio.open_process(
                command, cwd=tmp_path, env=subprocess_env(), stderr=stderr
            )
            async with worker:
                try:
                    with anyio.fail_after(40):
                        while not (found := SERVING.search(stderr_path.read_text())):
                            await anyio.sleep(0.05)
                    for n, handle in enumerate(handles):
                        assert await handle.result(timeout=30) == f"hello w{n}"
                    with anyio.fail_after(30):
                        while True:
                            samples = parse((await get(found[1])).text)
                            labels = {"queue": "default", "job_name": "greet"}
                            key = ("asyncjobs_jobs_completed_total", frozenset(labels.items()))
                            if samples.get(key) == 3:
                                break
                            await anyio.sleep(0.05)
                    assert value(samples, "asyncjobs_workers") == 1
                    assert "process_cpu_seconds_total" in {name for name, _ in samples}
                    worker.send_signal(signal.SIGTERM)
                    with anyio.fail_after(30):
                        returncode = await worker.wait()
                finally:
                    if worker.returncode is None:
                        worker.kill()
    log = stderr_path.read_text()
    assert returncode == 0, log
    assert "Traceback" not in log
