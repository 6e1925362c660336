"""Secrets stay put: payloads and results appear in no repr, event or log line.

Job arguments and return values may hold passwords and tokens. Records and
events show them by size only; the worker's ``--log-level`` turns up the
``asyncjobs`` logger alone, not third-party loggers (aiosqlite's debug lines
quote SQL parameters, payloads included).
"""

from __future__ import annotations

import enum
import io
import logging
import signal
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from rich.console import Console

from asyncjobs import (
    ErrorInfo,
    Event,
    Job,
    JobCompleted,
    JobContext,
    JobDied,
    JobEvent,
    JobHandle,
    JobRuntime,
    JobState,
    Permanent,
    Retry,
    _events,
    _models,
    current_job,
)
from asyncjobs._models import NewJob, Outcome, OutcomeKind, Schedule
from asyncjobs._serialization import JSONCodec
from asyncjobs.backends.memory import MemoryBackend
from asyncjobs.backends.sqlite import SQLiteBackend
from asyncjobs.cli import _configure_logging
from tests.test_cli import subprocess_env

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-7f3c9a"
PAYLOAD = JSONCodec().encode([[], {"user": "ann", "password": SECRET}])
RESULT = JSONCodec().encode({"token": SECRET})
#: Field names that hold a job's data, whatever type a future record gives them.
DATA_FIELDS = {"payload", "result", "args", "kwargs"}


def assert_hidden(value: object) -> None:
    """Neither ``repr()`` nor ``str()`` of *value* shows the secret."""
    for text in (repr(value), str(value)):
        assert SECRET not in text, text


def a_job(**changes: Any) -> Job:
    fields: dict[str, Any] = {
        "id": "0123456789ab" + "cd" * 10,
        "name": "login",
        "queue": "default",
        "payload": PAYLOAD,
        "state": JobState.COMPLETE,
        "due_at": 1.0,
        "enqueued_at": 1.0,
        "attempts": 1,
        "result": RESULT,
        "error": ErrorInfo(type="ValueError", message="bad input"),
    }
    fields.update(changes)
    return Job(**fields)


async def no_progress(fraction: float, message: str | None) -> None:
    raise AssertionError("not called")


# --------------------------------------------------------------------------- records


def new_job() -> NewJob:
    return NewJob(
        id="ab" * 16, name="login", queue="default", payload=PAYLOAD, due_at=1.0, enqueued_at=1.0
    )


def outcome() -> Outcome:
    return Outcome(job_id="ab" * 16, lease_token="t", kind=OutcomeKind.COMPLETE, result=RESULT)


def schedule() -> Schedule:
    return Schedule(
        name="nightly",
        job_name="login",
        queue="default",
        trigger='{"cron": "0 2 * * *"}',
        payload=PAYLOAD,
        next_fire_at=1.0,
    )


@pytest.mark.parametrize(
    ("build", "shown"),
    [
        (a_job, [f"payload=<{len(PAYLOAD)} bytes>", f"result=<{len(RESULT)} bytes>"]),
        (lambda: a_job(result=None), [f"payload=<{len(PAYLOAD)} bytes>", "result=None"]),
        (lambda: new_job().queued(), [f"payload=<{len(PAYLOAD)} bytes>", "result=None"]),
        (new_job, [f"payload=<{len(PAYLOAD)} bytes>"]),
        (outcome, [f"result=<{len(RESULT)} bytes>"]),
        (schedule, [f"payload=<{len(PAYLOAD)} bytes>"]),
    ],
    ids=["Job", "Job-no-result", "Job-queued", "NewJob", "Outcome", "Schedule"],
)
def test_records_show_the_size_of_payloads_and_results(
    build: Callable[[], Any], shown: list[str]
) -> None:
    record = build()
    assert_hidden(record)
    for part in shown:
        assert part in repr(record)
    # Only the repr changed: the data is still there, compared and hashed.
    twin = build()
    assert record == twin
    assert hash(record) == hash(twin)
    assert record != attrs.evolve(record, **{attrs.fields(type(record))[0].name: "other"})
    data = [field.name for field in attrs.fields(type(record)) if field.name in DATA_FIELDS]
    assert record != attrs.evolve(record, **dict.fromkeys(data, b"[]"))


def test_error_info_is_shown_whole() -> None:
    # The error's type and message are what an operator needs; they are not payload.
    job = a_job(state=JobState.DEAD)
    assert "ValueError" in repr(job)
    assert "bad input" in repr(job)


def test_job_context_repr_shows_no_payload() -> None:
    context = JobContext(a_job(state=JobState.RUNNING, result=None), no_progress)
    assert_hidden(context)
    assert "login" in repr(context)


def test_job_handle_repr_shows_no_payload() -> None:
    handle: JobHandle[Any] = JobHandle(JobRuntime(MemoryBackend()), a_job())
    assert_hidden(handle)
    assert handle.id in repr(handle)


def record_types() -> list[type[Any]]:
    """Every attrs record and event the models and events modules define."""
    found: list[type[Any]] = []
    for module in (_models, _events):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and attrs.has(value)
                and value.__module__ == module.__name__
                and not value.__name__.startswith("_")  # bookkeeping, not records
            ):
                found.append(value)
    return sorted(found, key=lambda cls: cls.__name__)


RECORD_TYPES = record_types()


def sample(hint: Any, name: str) -> Any:
    """A value for a field typed *hint*: the secret wherever job data could go."""
    if name in DATA_FIELDS or hint in (bytes, Any, object):
        return SECRET if hint is str else JSONCodec().encode({"password": SECRET})
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        return sample(options[0], name)
    if origin is not None and issubclass(origin, Mapping):
        return {}
    if origin is list:
        # A list of records (a claim's jobs): one sample, which carries the secret.
        return [sample(typing.get_args(hint)[0], name)]
    if hint is str:
        return "text"
    if hint is bool:
        return False
    if hint in (int, float):
        return hint(1)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(iter(hint))
    if isinstance(hint, type) and attrs.has(hint):
        return build_sample(hint)
    raise AssertionError(f"no sample value for a field typed {hint!r}: teach sample() about it")


def build_sample(cls: type[Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(
        **{field.alias: sample(hints[field.name], field.name) for field in attrs.fields(cls)}
    )


@pytest.mark.parametrize("cls", RECORD_TYPES, ids=[cls.__name__ for cls in RECORD_TYPES])
def test_no_record_or_event_shows_job_data(cls: type[Any]) -> None:
    # Built generically, so a field added later (an event's `result`, say) is covered
    # the day it is added.
    assert_hidden(build_sample(cls))


def test_every_event_type_is_checked() -> None:
    events = {cls for cls in RECORD_TYPES if issubclass(cls, Event)}
    assert events >= {JobCompleted, JobDied, *JobEvent.__subclasses__()}
    assert {Job, NewJob, Outcome, Schedule} <= set(RECORD_TYPES)


# --------------------------------------------------------------------------- a real run


@pytest.fixture(params=["memory", "sqlite"])
def secret_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> JobRuntime:
    backend = MemoryBackend() if request.param == "memory" else SQLiteBackend(tmp_path / "j.db")
    return JobRuntime(backend, queues={"default": 2}, shutdown_grace=0.05)


async def test_a_real_run_leaks_no_secret(
    secret_runtime: JobRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, third-party ones included
    runtime = secret_runtime
    seen: list[str] = []

    @runtime.job(name="login")
    async def login(ctx: JobContext, user: str, password: str) -> dict[str, str]:
        seen.append(repr(ctx))
        seen.append(repr(current_job()))
        await ctx.progress(0.5, "checking")
        if ctx.attempt == 1:
            raise Retry(delay=0, reason="not yet")
        return {"token": password}

    @runtime.job(name="refuse", max_attempts=2)
    async def refuse(password: str) -> None:
        raise Permanent("wrong password")

    events: list[Event] = []
    async with runtime:
        with runtime.events.subscribe() as stream:
            handle = await login.enqueue("ann", password=SECRET)
            refused = await refuse.enqueue(SECRET)
            assert await handle.result(timeout=10) == {"token": SECRET}
            with anyio.fail_after(10):
                finished: set[str] = set()
                while finished != {handle.id, refused.id}:
                    event = await stream.receive()
                    events.append(event)
                    if isinstance(event, JobCompleted | JobDied):
                        finished.add(event.job_id)
        seen += [repr(handle), repr(refused), repr(handle.job)]
        seen += [repr(await handle.refresh()), repr(await refused.refresh())]
        seen += [repr(job) for job in await runtime.list_jobs()]

    kinds = {type(event).__name__ for event in events}
    assert {"JobEnqueued", "JobStarted", "JobProgress", "JobRetrying", "JobCompleted"} <= kinds
    assert "JobDied" in kinds
    for text in [*seen, *map(repr, events), *map(str, events)]:
        assert SECRET not in text, text
    ours = [record for record in caplog.records if record.name.split(".")[0] == "asyncjobs"]
    for record in ours:
        logged = logging.Formatter("%(message)s").format(record)  # with any traceback
        assert SECRET not in logged, logged


# --------------------------------------------------------------------------- the worker's logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the logging state ``_configure_logging`` changes (the process is shared)."""
    loggers = [logging.getLogger(), logging.getLogger("asyncjobs")]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, level, handlers, propagate in saved:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("with_console", [False, True], ids=["plain", "console"])
def test_log_level_debug_sets_only_the_asyncjobs_logger(with_console: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.WARNING)  # as in a fresh process, whatever pytest was given
    console = Console(file=io.StringIO()) if with_console else None
    _configure_logging("DEBUG", console)
    _configure_logging("DEBUG", console)  # again in one process: one handler, not two
    package = logging.getLogger("asyncjobs")
    assert package.level == logging.DEBUG
    assert root.level == logging.WARNING
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("redis").isEnabledFor(logging.DEBUG)
    ours = [handler for handler in package.handlers if handler.get_name() == "asyncjobs.cli"]
    assert len(ours) == 1


WORKER_MODULE = """
import logging

from asyncjobs import JobRuntime

runtime = JobRuntime({url!r}, queues={{"default": 1}}, shutdown_grace=5)


@runtime.job(name="login")
async def login(user: str, password: str) -> dict[str, str]:
    aiosqlite = logging.getLogger("aiosqlite")
    print(
        "levels", logging.getLogger().getEffectiveLevel(), aiosqlite.getEffectiveLevel(),
        logging.getLogger("asyncjobs").getEffectiveLevel(), flush=True,
    )
    return {{"token": password}}
"""


async def read_until(
    stream: anyio.abc.ByteReceiveStream, marker: bytes, received: bytes = b""
) -> bytes:
    with anyio.fail_after(40):
        while marker not in received:
            received += await stream.receive()
    return received


@pytest.mark.slow
async def test_worker_at_debug_prints_no_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "secret_jobs.py").write_text(textwrap.dedent(WORKER_MODULE.format(url=url)))
    enqueuer = JobRuntime(url, role="enqueue")

    @enqueuer.job(name="login")
    async def login(user: str, password: str) -> dict[str, str]:
        raise AssertionError("an enqueue runtime never runs jobs")

    command = [sys.executable, "-m", "asyncjobs", "worker", "secret_jobs:runtime"]
    stderr_path = tmp_path / "worker.err"
    with stderr_path.open("wb") as stderr:
        async with enqueuer:
            handle = await login.enqueue("ann", password=SECRET)
            worker = await anyio.open_process(
                [*command, "--log-level", "DEBUG"],
                cwd=tmp_path,
                env=subprocess_env(),
                stderr=stderr,
            )
            async with worker:
                try:
                    assert worker.stdout is not None
                    output = await read_until(worker.stdout, b"levels")
                    # The outcome is stored, so its SQL (holding the result) has run too.
                    assert await handle.result(timeout=30) == {"token": SECRET}
                    worker.send_signal(signal.SIGTERM)
                    with anyio.fail_after(30):
                        async for chunk in worker.stdout:
                            output += chunk
                        returncode = await worker.wait()
                finally:
                    if worker.returncode is None:
                        worker.kill()
    log = stderr_path.read_text()
    assert SECRET not in log
    assert "aiosqlite" not in log
    assert returncode == 0, log
    root, aiosqlite, package = output.decode().split("levels", 1)[1].split()[:3]
    assert int(package) == logging.DEBUG
    assert int(root) == int(aiosqlite) == logging.WARNING
    assert "started on SQLiteBackend(" in log  # the asyncjobs logger still prints


def test_job_call_repr_shows_no_arguments() -> None:
    runtime = JobRuntime(MemoryBackend())

    @runtime.job(name="login")
    async def login(user: str, password: str) -> None: ...

    call = login.call("ada", password=SECRET)
    assert_hidden(call)
    assert "<1 value>" in repr(call)
    assert "password" in repr(call)  # the keyword's name, not its value
