"""Structured job logs: one record per state change, its fields, and nothing secret."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from asyncjobs import JobDead, JobRuntime, ManualClock
from asyncjobs.integrations.logs import FIELDS, JSONFormatter, log_events
from asyncjobs.testing import drain
from tests.conftest import RuntimeFactory
from tests.test_cli import subprocess_env
from tests.test_metrics import cli_store

pytestmark = pytest.mark.anyio

SECRETS = ("hunter2-argument", "hunter2-result", "hunter2-error")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    # On the logger itself: a CLI test in this process may have stopped propagation.
    handler = Collect()
    jobs_logger = logging.getLogger("asyncjobs.jobs")
    jobs_logger.addHandler(handler)
    previous = jobs_logger.level
    jobs_logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        jobs_logger.removeHandler(handler)
        jobs_logger.setLevel(previous)


def fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in FIELDS}


async def test_one_record_per_state_change_with_its_fields(
    make_runtime: RuntimeFactory, clock: ManualClock, records: list[logging.LogRecord]
) -> None:
    runtime = make_runtime()

    @runtime.job(name="greet")
    async def greet(password: str) -> str:
        clock.advance(2.5)
        return "hunter2-result"

    @runtime.job(name="charge", max_attempts=2, backoff=0)
    async def charge(password: str) -> None:
        raise ValueError(f"declined: {password} hunter2-error")

    with log_events(runtime):
        async with runtime:
            ok = await greet.enqueue("hunter2-argument")
            assert await ok.result(timeout=10) == "hunter2-result"
            bad = await charge.enqueue("hunter2-argument")
            with pytest.raises(JobDead):
                await bad.result(timeout=10)
            await drain(runtime)

    by_job = {
        job_id: [fields(r) for r in records if getattr(r, "job_id", None) == job_id]
        for job_id in (ok.id, bad.id)
    }
    common = {"job_name": "greet", "queue": "default", "job_id": ok.id}
    assert by_job[ok.id] == [
        {**dict.fromkeys(FIELDS), **common, "job_event": "enqueued"},
        {**dict.fromkeys(FIELDS), **common, "job_event": "started", "attempt": 1},
        {
            **dict.fromkeys(FIELDS),
            **common,
            "job_event": "completed",
            "attempt": 1,
            "duration": 2.5,
            "outcome": "complete",
        },
    ]
    events = [(f["job_event"], f["attempt"], f["outcome"], f["error_type"]) for f in by_job[bad.id]]
    assert events == [
        ("enqueued", None, None, None),
        ("started", 1, None, None),
        ("retrying", 1, "retry", "ValueError"),
        ("started", 2, None, None),
        ("dead", 2, "dead", "ValueError"),
    ]
    levels = {r.__dict__["job_event"]: r.levelno for r in records}
    assert levels["completed"] == logging.INFO
    assert levels["retrying"] == logging.WARNING
    assert levels["dead"] == logging.ERROR
    text = logging.Formatter("%(message)s").format
    for record in records:
        for rendered in (text(record), JSONFormatter().format(record)):
            assert not any(secret in rendered for secret in SECRETS), rendered
    completed = next(r for r in records if r.__dict__["job_event"] == "completed")
    assert completed.getMessage() == f"job {ok.id} (greet) completed attempt 1 in 2.500 s"


async def test_the_level_and_a_silenced_logger(records: list[logging.LogRecord]) -> None:
    runtime = JobRuntime()

    @runtime.job(name="noop")
    async def noop() -> None: ...

    logging.getLogger("asyncjobs.jobs").setLevel(logging.INFO)
    with log_events(runtime, level=logging.DEBUG):  # below the logger's level: nothing
        async with runtime:
            await (await noop.enqueue()).result(timeout=10)
            await drain(runtime)
    assert records == []


def test_the_json_formatter_writes_one_object_with_the_extras() -> None:
    record = logging.LogRecord("asyncjobs.jobs", logging.INFO, __file__, 1, "job %s", ("a1",), None)
    record.job_id = "a1"
    record.duration = 0.25
    record.odd = object()
    try:
        raise RuntimeError("inner")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = JSONFormatter().format(record)
    assert "\n" not in line.replace("\\n", "")
    entry = json.loads(line)
    assert entry["message"] == "job a1"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "asyncjobs.jobs"
    assert entry["job_id"] == "a1"
    assert entry["duration"] == 0.25
    assert entry["odd"].startswith("<object object")
    assert "RuntimeError: inner" in entry["exc_info"]
    assert entry["time"].endswith("+00:00")
    assert "args" not in entry
    assert "msg" not in entry


WORKER_MODULE = """
from asyncjobs import JobRuntime
from asyncjobs.backends.redis import RedisBackend

runtime = JobRuntime({store}, queues={{"default": 2}})


@runtime.job(name="greet")
async def greet(password: str) -> str:
    return "hunter2-result"
"""


@pytest.mark.filterwarnings("ignore::asyncjobs.backends.sqlite.UnsafeSQLiteWarning")
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_worker_logs_json_lines(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    expression, store = cli_store(kind, tmp_path, request)
    (tmp_path / "json_jobs.py").write_text(WORKER_MODULE.format(store=expression))
    enqueuer = JobRuntime(store, role="enqueue")

    @enqueuer.job(name="greet")
    async def greet(password: str) -> str:
        raise AssertionError("an enqueue runtime never runs jobs")

    command = [sys.executable, "-m", "asyncjobs", "worker", "json_jobs:runtime"]
    async with enqueuer:
        handle = await greet.enqueue("hunter2-argument")
        worker = await anyio.open_process(
            [*command, "--log-format", "json"], cwd=tmp_path, env=subprocess_env()
        )
        async with worker:
            try:
                assert await handle.result(timeout=30) == "hunter2-result"
                assert worker.stderr is not None
                output = b""
                with anyio.fail_after(30):
                    while b'"job_event": "completed"' not in output:
                        output += await worker.stderr.receive()
                worker.terminate()
                with anyio.fail_after(30):
                    returncode = await worker.wait()
                async for chunk in worker.stderr:
                    output += chunk
            finally:
                if worker.returncode is None:
                    worker.kill()
    assert returncode == 0, output.decode()
    lines = [line for line in output.decode().splitlines() if line.strip()]
    # Every record is a JSON object; Python warnings (an unsafe SQLite build) stay one line.
    assert all(line.startswith(("{", "asyncjobs: warning: ")) for line in lines), lines
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    completed = next(e for e in entries if e.get("job_event") == "completed")
    assert completed["job_id"] == handle.id
    assert completed["job_name"] == "greet"
    assert completed["outcome"] == "complete"
    assert completed["logger"] == "asyncjobs.jobs"
    assert any("started on" in e["message"] for e in entries)
    assert b"hunter2" not in output
