"""The ``asyncjobs`` command: store commands in-process, ``demo`` and ``worker`` as processes."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

import asyncjobs
from asyncjobs import JobCompleted, JobDied, JobEvent, JobRuntime, JobState
from asyncjobs.cli import main

pytestmark = pytest.mark.anyio

REPO = Path(asyncjobs.__file__).resolve().parent.parent


async def run_cli(*argv: str) -> int:
    """Run ``asyncjobs *argv`` in-process (in a thread: it starts its own event loop)."""
    return await anyio.to_thread.run_sync(main, list(argv))


class Store:
    """A SQLite store holding a complete, a dead and a delayed job; no runtime has it open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.complete_id = ""
        self.dead_id = ""
        self.delayed_id = ""

    def runtime(self) -> JobRuntime:
        """A runtime on the store with the test jobs registered (they run when role allows)."""
        runtime = JobRuntime(self.url, queues={"default": 2, "mail": 1}, shutdown_grace=0.05)

        @runtime.job(name="add")
        async def add(a: int, b: int) -> int:
            return a + b

        @runtime.job(name="explode", queue="mail", max_attempts=1)
        async def explode() -> None:
            raise ValueError("boom")

        return runtime

    async def get(self, job_id: str) -> asyncjobs.Job:
        async with JobRuntime(self.url, role="enqueue") as runtime:
            job = await runtime.get_job(job_id)
        assert job is not None
        return job


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "jobs.db")
    runtime = store.runtime()
    async with runtime:
        with runtime.events.subscribe(JobCompleted, JobDied) as events:
            complete = await runtime.enqueue("add", 2, 3)
            dead = await runtime.enqueue("explode")
            finished: set[str] = set()
            while len(finished) < 2:
                event = await events.receive()
                assert isinstance(event, JobEvent)
                finished.add(event.job_id)
        assert finished == {complete.id, dead.id}
        delayed = await runtime.function("add").options(delay=3600).enqueue(1, 1)
    store.complete_id, store.dead_id, store.delayed_id = complete.id, dead.id, delayed.id
    return store


@pytest.fixture(autouse=True)
def no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCJOBS_URL", raising=False)


async def test_jobs_lists_newest_first(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("jobs", "--url", store.url) == 0
    out = capsys.readouterr().out.splitlines()
    # Not a terminal: tab-separated whole values.
    assert out[0] == "id\tname\tqueue\tstate\tattempts\twhen\tdetail"
    rows = [line.split("\t") for line in out[1:]]
    assert [row[0] for row in rows] == [store.delayed_id, store.dead_id, store.complete_id]
    delayed, dead, complete = rows
    assert delayed[1:5] == ["add", "default", "queued", "0/3"]
    assert delayed[5] in ("in 1h00m", "in 59m59s")  # an hour ahead, less the time passed
    assert dead[1:5] == ["explode", "mail", "dead", "1/1"]
    assert dead[5].endswith(" ago")
    assert dead[6] == "ValueError: boom"
    assert complete[1:5] == ["add", "default", "complete", "1/3"]


async def test_jobs_filters(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("jobs", "--url", store.url, "--state", "dead") == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        store.dead_id
    ]
    assert await run_cli("jobs", "--url", store.url, "--queue", "default", "--limit", "1") == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        store.delayed_id
    ]
    assert await run_cli("jobs", "--url", store.url, "--queue", "nope") == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "no jobs match\n")


async def test_url_from_the_environment(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCJOBS_URL", store.url)
    assert await run_cli("jobs", "--state", "complete") == 0
    assert store.complete_id in capsys.readouterr().out


async def test_status_shows_one_snapshot(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("status", "--url", store.url) == 0
    out = capsys.readouterr().out
    assert "0 running   1 queued   1 complete   1 dead   0 cancelled" in out
    lines = out.splitlines()
    [default_row] = [line for line in lines if line.startswith("default ")]
    # An enqueue-role view knows no limits: the running count stands alone.
    assert default_row.split() == ["default", "0", "1", "1", "1", "0", "0", "-", "-"]
    assert any(line.startswith("mail ") for line in lines)
    assert f"explode  {store.dead_id}  mail  1 attempt" in out
    assert "ValueError: boom" in out


async def test_retry_queues_a_dead_job_again(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("retry", "--url", store.url, store.dead_id) == 0
    assert capsys.readouterr().out == f"job {store.dead_id} (explode) is queued again on 'mail'\n"
    job = await store.get(store.dead_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)

    assert await run_cli("retry", "--url", store.url, store.dead_id) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"asyncjobs: error: job {store.dead_id} is queued, not dead: "
        "only dead jobs can be retried\n"
    )


async def test_cancel_a_queued_job(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("cancel", "--url", store.url, store.delayed_id) == 0
    assert capsys.readouterr().out == f"job {store.delayed_id} (add) is cancelled\n"
    assert (await store.get(store.delayed_id)).state is JobState.CANCELLED

    assert await run_cli("cancel", "--url", store.url, store.delayed_id) == 2
    assert capsys.readouterr().err == (
        f"asyncjobs: error: job {store.delayed_id} is already cancelled: "
        "only queued or running jobs can be cancelled\n"
    )


async def test_pause_and_resume_a_queue(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    async def paused() -> set[str]:
        async with JobRuntime(store.url, role="enqueue") as runtime:
            return {stats.queue for stats in await runtime.queue_stats() if stats.paused}

    assert await run_cli("pause", "--url", store.url, "default") == 0
    assert "queue 'default' is paused" in capsys.readouterr().out
    assert await paused() == {"default"}
    assert await run_cli("status", "--url", store.url) == 0
    assert any(line.startswith("default paused") for line in capsys.readouterr().out.splitlines())
    assert await run_cli("resume", "--url", store.url, "default") == 0
    assert capsys.readouterr().out == "queue 'default' is resumed\n"
    assert await paused() == set()


@pytest.mark.parametrize("command", ["retry", "cancel"])
async def test_unknown_job_id(
    store: Store, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert await run_cli(command, "--url", store.url, "nope") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "asyncjobs: error: no job 'nope' in the store\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["status", "--url", "ftp://example.com/jobs"],
            "asyncjobs: error: unknown backend URL scheme 'ftp'",
        ),
        (["jobs"], "asyncjobs: error: no store given: pass --url"),
        (["worker", "myapp"], "asyncjobs: error: expected MODULE:ATTRIBUTE"),
        (
            ["worker", "no_such_module_here:runtime"],
            "asyncjobs: error: cannot import 'no_such_module_here'",
        ),
        (["worker", "asyncjobs:nope"], "asyncjobs: error: module 'asyncjobs' has no attribute"),
        (["worker", "asyncjobs:__version__"], "asyncjobs: error: asyncjobs:__version__ is a str"),
    ],
)
async def test_errors_are_one_line_with_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert await run_cli(*argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message)
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


async def test_worker_refuses_queues_its_runtime_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "queues_jobs.py").write_text(textwrap.dedent(JOB_MODULE.format(url=url)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the worker adds the cwd to it
    assert await run_cli("worker", "queues_jobs:runtime", "--queues", "default,nope") == 2
    assert capsys.readouterr().err == (
        "asyncjobs: error: --queues names 'nope', not configured in the runtime "
        "(configured: default, other)\n"
    )
    assert not (tmp_path / "jobs.db").exists()


async def test_a_bad_sqlite_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'demo.db'}"
    assert await run_cli("demo", "--seconds", "1", "--url", url) == 2
    err = capsys.readouterr().err
    assert err.startswith("asyncjobs: error: cannot create the job database")
    assert err.count("\n") == 1


async def test_a_missing_sqlite_file_is_an_error_not_a_new_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    assert await run_cli("status", "--url", f"sqlite:///{path}") == 2
    assert capsys.readouterr().err == (
        f"asyncjobs: error: no job database at {path} (check the --url path)\n"
    )
    assert not path.exists()


async def test_a_password_in_the_url_is_never_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Port 1: nothing listens there, so connecting fails at once.
    assert await run_cli("status", "--url", "redis://:hunter2@127.0.0.1:1/0") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("asyncjobs: error: ")
    assert "hunter2" not in captured.err + captured.out
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    "argv",
    [[], ["jobs", "--state", "bogus"], ["jobs", "--limit", "0"], ["demo", "--seconds", "-1"]],
)
async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert await run_cli(*argv) == 2
    assert "usage: asyncjobs" in capsys.readouterr().err


async def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("--help") == 0
    out = capsys.readouterr().out
    for command in ("demo", "worker", "status", "jobs", "retry", "cancel", "pause", "resume"):
        assert command in out


# --------------------------------------------------------------------------- processes


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ASYNCJOBS_URL", None)
    # The checkout under test, whatever the child's working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.slow
async def test_demo_runs_for_its_seconds_and_exits_cleanly(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    command = [sys.executable, "-m", "asyncjobs", "demo", "--seconds", "2"]
    with anyio.fail_after(50):
        result = await anyio.run_process(
            [*command, "--url", f"sqlite:///{database}"],
            cwd=tmp_path,
            env=subprocess_env(),
            check=False,
        )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr
    lines = stdout.splitlines()
    for queue in ("default", "emails", "reports"):
        assert any(line.startswith(f"{queue} ") for line in lines), stdout
    assert "demo stopped" in stdout
    # The jobs outlive the demo, in the store it was given.
    async with JobRuntime(f"sqlite:///{database}", role="enqueue") as runtime:
        stats = {queue.queue: queue for queue in await runtime.queue_stats()}
    assert stats["emails"].count(JobState.COMPLETE) > 0
    assert sum(queue.count(JobState.RUNNING) for queue in stats.values()) == 0


JOB_MODULE = """
import anyio

from asyncjobs import JobRuntime

runtime = JobRuntime({url!r}, queues={{"default": 2, "other": 1}}, shutdown_grace=20)


@runtime.job(name="greet")
async def greet(who: str) -> str:
    print(f"greeting {{who}}", flush=True)
    await anyio.sleep(0.5)  # stands in for work that SIGTERM must not cut short
    return f"hello {{who}}"
"""


# The test and the worker both have the file open, which warns on SQLite builds with
# the WAL-reset bug; here both only write in turn.
@pytest.mark.filterwarnings("ignore::asyncjobs.backends.sqlite.UnsafeSQLiteWarning")
@pytest.mark.slow
async def test_worker_runs_jobs_and_finishes_them_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "worker_jobs.py").write_text(textwrap.dedent(JOB_MODULE.format(url=url)))
    enqueuer = JobRuntime(url, role="enqueue")

    @enqueuer.job(name="greet")
    async def greet(who: str) -> str:
        raise AssertionError("an enqueue runtime never runs jobs")

    command = [sys.executable, "-m", "asyncjobs", "worker", "worker_jobs:runtime"]
    stderr_path = tmp_path / "worker.err"
    with stderr_path.open("wb") as stderr:
        async with enqueuer:
            handle = await greet.enqueue("world")
            worker = await anyio.open_process(
                [*command, "--queues", "default"],
                cwd=tmp_path,
                env=subprocess_env(),
                stderr=stderr,
            )
            async with worker:
                try:
                    assert worker.stdout is not None
                    output = b""
                    with anyio.fail_after(40):
                        while b"greeting world" not in output:
                            output += await worker.stdout.receive()
                    # The job is running in the worker: stop the worker now.
                    worker.send_signal(signal.SIGTERM)
                    # Graceful: the job still finishes, on its first attempt.
                    assert await handle.result(timeout=30) == "hello world"
                    job = await handle.refresh()
                    assert job.attempts == 1
                    assert job.worker_id is not None
                    assert str(worker.pid) in job.worker_id.split(":")
                    with anyio.fail_after(30):
                        returncode = await worker.wait()
                finally:
                    if worker.returncode is None:
                        worker.kill()
    log = stderr_path.read_text()
    assert returncode == 0, log
    assert "Traceback" not in log
    assert "started on SQLiteBackend(" in log
    assert "queues default=2" in log
    assert "received SIGTERM, shutting down" in log
    assert log.rstrip().endswith("stopped")


SLOW_MODULE = """
import anyio

from asyncjobs import JobRuntime

runtime = JobRuntime({url!r}, shutdown_grace=60)


@runtime.job(name="slow")
async def slow() -> None:
    print("slow started", flush=True)
    await anyio.sleep(120)
"""


async def read_until(stream: anyio.abc.ByteReceiveStream, marker: bytes) -> bytes:
    """Read *stream* until *marker* has appeared; return everything read."""
    output = b""
    with anyio.fail_after(40):
        while marker not in output:
            output += await stream.receive()
    return output


@pytest.mark.filterwarnings("ignore::asyncjobs.backends.sqlite.UnsafeSQLiteWarning")
@pytest.mark.slow
async def test_a_second_signal_stops_the_worker_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    (tmp_path / "slow_jobs.py").write_text(textwrap.dedent(SLOW_MODULE.format(url=url)))
    enqueuer = JobRuntime(url, role="enqueue")

    @enqueuer.job(name="slow")
    async def slow() -> None:
        raise AssertionError("an enqueue runtime never runs jobs")

    async with enqueuer:
        handle = await slow.enqueue()
        command = [sys.executable, "-m", "asyncjobs", "worker", "slow_jobs:runtime"]
        async with await anyio.open_process(command, cwd=tmp_path, env=subprocess_env()) as worker:
            try:
                assert worker.stdout is not None
                assert worker.stderr is not None
                await read_until(worker.stdout, b"slow started")
                worker.send_signal(signal.SIGTERM)
                log = await read_until(worker.stderr, b"send it again to stop now")
                worker.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    returncode = await worker.wait()
                async for chunk in worker.stderr:
                    log += chunk
            finally:
                if worker.returncode is None:
                    worker.kill()
        assert returncode == 130, log
        assert b"received SIGTERM again: exiting without waiting for running jobs" in log
        assert b"Traceback" not in log
        # Left as a crash leaves it: a worker runs it again once its lease expires.
        assert (await handle.refresh()).state is JobState.RUNNING
