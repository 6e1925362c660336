"""The store commands (jobs, queues, schedules, workers, explain, health, audit) on every store.

SQLite and Redis run the real ``main()`` in a thread against a store that a
runtime of the test also has open (the CLI opens its own connection, as it
would from another process). Memory cannot be shared across processes, so
there the commands run in the test's own event loop on the runtime's
backend object.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncjobs import FixedBackoff, JobCompleted, JobDied, JobRuntime, JobState
from asyncjobs import cli as cli_module
from asyncjobs._admin import Admin
from asyncjobs._cli_admin import expand_aliases
from tests.test_cli import run_cli, subprocess_env

pytestmark = pytest.mark.anyio

KINDS = ["memory", "sqlite", "redis"]


class Shop:
    """A store with a complete job, a dead one (two attempts), a delayed tagged one, a schedule.

    While the test runs, :attr:`runtime` is running on it (so it lists as a worker).
    """

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.runtime = JobRuntime(url, queues={"default": 2, "mail": 1}, shutdown_grace=0.05)
        self.complete_id = self.dead_id = self.delayed_id = ""

        @self.runtime.job(name="add")
        async def add(a: int, b: int) -> int:
            return a + b

        @self.runtime.job(
            name="explode", queue="mail", max_attempts=2, backoff=FixedBackoff(delay=0.01)
        )
        async def explode() -> None:
            raise ValueError("boom")

        @self.runtime.every(3600, name="hourly")
        @self.runtime.job(name="tick")
        async def tick() -> None: ...

    async def cli(self, *argv: str) -> int:
        """Run ``asyncjobs *argv --url URL`` and return its exit status."""
        argv = (*argv, "--url", self.url)
        if self.kind != "memory":
            return await run_cli(*argv)
        # In this loop, on this process's memory store (see the module docstring).
        parser = cli_module._parser()
        try:
            args = parser.parse_args(expand_aliases(argv))
        except SystemExit as exc:
            return int(exc.code or 0)
        try:
            status: int = await args.command(args)
        except Exception as exc:
            error = cli_module._reportable(exc)
            if error is None:
                raise
            print(f"asyncjobs: error: {error}", file=sys.stderr)
            return 2
        return status


@pytest.fixture(params=KINDS)
async def shop(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Shop]:
    monkeypatch.delenv("ASYNCJOBS_URL", raising=False)
    kind: str = request.param
    if kind == "memory":
        shop = Shop(kind, "memory://")
        backend = shop.runtime.backend
        monkeypatch.setattr("asyncjobs._admin.from_url", lambda url, **options: backend)
    elif kind == "sqlite":
        shop = Shop(kind, f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        shop = Shop(kind, await fresh_redis_url(request, 7))
    runtime = shop.runtime
    async with runtime:
        with runtime.events.subscribe(JobCompleted, JobDied) as events:
            complete = await runtime.enqueue("add", 2, 3)
            dead = await runtime.enqueue("explode")
            finished: set[str] = set()
            with anyio.fail_after(20):
                while finished != {complete.id, dead.id}:
                    event = await events.receive()
                    if isinstance(event, JobCompleted | JobDied):
                        finished.add(event.job_id)
        delayed = (
            await runtime.function("add")
            .options(delay=3600, tags={"tenant": "t1"}, partition="p1")
            .enqueue(1, 1)
        )
        shop.complete_id, shop.dead_id, shop.delayed_id = complete.id, dead.id, delayed.id
        yield shop


def rows(out: str) -> list[list[str]]:
    """The tab-separated rows of a piped listing, without its header."""
    lines = out.splitlines()
    assert lines[0].startswith("id\tname\t")
    return [line.split("\t") for line in lines[1:]]


# --------------------------------------------------------------------------- jobs


async def test_jobs_list_and_its_filters(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [shop.delayed_id, shop.dead_id, shop.complete_id]
    for argv in (["jobs"], ["jobs", "list"]):
        assert await shop.cli(*argv) == 0
        listed = [row[0] for row in rows(capsys.readouterr().out) if row[1] != "tick"]
        assert listed == ids
    cases: list[tuple[list[str], list[str]]] = [
        (["--state", "dead"], [shop.dead_id]),
        (["--queue", "mail"], [shop.dead_id]),
        (["--name", "explode"], [shop.dead_id]),
        (["--tag", "tenant=t1"], [shop.delayed_id]),
        (["--tag", "tenant=t1", "--tag", "other=x"], []),
        (["--partition", "p1"], [shop.delayed_id]),
        (["--name", "add", "--since", "1h"], [shop.delayed_id, shop.complete_id]),
        (["--name", "add", "--until", "1h"], []),
        (["--name", "add", "--since", "2000-01-01T00:00"], [shop.delayed_id, shop.complete_id]),
    ]
    for filters, expected in cases:
        assert await shop.cli("jobs", "list", *filters) == 0, filters
        captured = capsys.readouterr()
        if expected:
            assert [row[0] for row in rows(captured.out)] == expected, filters
        else:
            assert (captured.out, captured.err) == ("", "no jobs match\n"), filters


async def test_jobs_list_pages_with_a_cursor(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await shop.cli("jobs", "list", "--name", "add", "--limit", "1") == 0
    captured = capsys.readouterr()
    assert [row[0] for row in rows(captured.out)] == [shop.delayed_id]
    assert captured.err == f"more jobs: add --after {shop.delayed_id} for the next page\n"
    assert await shop.cli("jobs", "list", "--name", "add", "--after", shop.delayed_id) == 0
    captured = capsys.readouterr()
    assert [row[0] for row in rows(captured.out)] == [shop.complete_id]
    assert captured.err == ""

    assert await shop.cli("jobs", "--name", "add", "--limit", "1", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert [job["id"] for job in document["jobs"]] == [shop.delayed_id]
    assert document["next_cursor"] == shop.delayed_id


async def test_jobs_list_json_holds_no_payload_or_result(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await shop.cli("jobs", "list", "--json", "--name", "add") == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    delayed, complete = document["jobs"]
    assert delayed["tags"] == {"tenant": "t1"}
    assert delayed["partition"] == "p1"
    assert (delayed["state"], complete["state"]) == ("queued", "complete")
    assert complete["finished_at"].endswith("Z")
    assert "payload" not in complete
    assert "result" not in complete
    assert "lease_token" not in complete
    assert document["next_cursor"] is None


async def test_jobs_show_has_the_attempt_history(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await shop.cli("jobs", "show", shop.dead_id) == 0
    out = capsys.readouterr().out
    assert shop.dead_id in out
    assert "attempts (2)" in out
    lines = out.splitlines()
    [first] = [line for line in lines if line.strip().startswith("1 ")]
    [second] = [line for line in lines if line.strip().startswith("2 ")]
    assert "retry" in first
    assert "dead" in second
    assert "ValueError: boom" in second
    assert "2 of 2" in out

    assert await shop.cli("jobs", "show", shop.dead_id, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["job"]["state"] == "dead"
    assert document["job"]["error"]["message"] == "boom"
    assert "ValueError" in document["job"]["error"]["traceback"]
    outcomes = [(a["number"], a["outcome"], a["error_message"]) for a in document["attempts"]]
    assert outcomes == [(1, "retry", "boom"), (2, "dead", "boom")]

    assert await shop.cli("jobs", "show", shop.delayed_id) == 0
    out = capsys.readouterr().out
    assert "tenant=t1" in out
    assert "no attempt has ended yet" in out


@pytest.mark.parametrize("action", ["show", "retry", "cancel", "delete"])
async def test_an_unknown_job_is_exit_2(
    shop: Shop, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    assert await shop.cli("jobs", action, "nope") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "asyncjobs: error: no job 'nope' in the store\n"


async def test_jobs_retry_cancel_delete_purge_are_audited(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await shop.cli("jobs", "cancel", shop.delayed_id) == 0
    assert capsys.readouterr().out == f"job {shop.delayed_id} (add) is cancelled\n"
    assert await shop.cli("jobs", "delete", shop.delayed_id) == 0
    assert capsys.readouterr().out == f"job {shop.delayed_id} is deleted\n"
    assert await shop.runtime.get_job(shop.delayed_id) is None

    assert await shop.cli("jobs", "retry", shop.dead_id, "--json") == 0
    assert json.loads(capsys.readouterr().out)["id"] == shop.dead_id
    with anyio.fail_after(20):  # the running runtime runs it again; it dies again
        while (job := await shop.runtime.get_job(shop.dead_id)) is None or (
            job.state is not JobState.DEAD
        ):
            await anyio.sleep(0.02)

    assert await shop.cli("jobs", "purge") == 2
    assert "purge needs at least one filter" in capsys.readouterr().err
    assert await shop.cli("jobs", "purge", "--state", "complete", "--name", "add") == 0
    assert capsys.readouterr().out == "1 job deleted\n"
    assert await shop.runtime.get_job(shop.complete_id) is None
    assert await shop.cli("jobs", "purge", "--state", "dead", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": 1}

    assert await shop.cli("audit", "--json") == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    actions = [(entry["action"], entry["outcome"]) for entry in entries]
    assert actions == [
        ("jobs.purge", "ok: 1 deleted"),
        ("jobs.purge", "ok: 1 deleted"),
        ("job.retry", "ok"),
        ("job.delete", "ok"),
        ("job.cancel", "ok"),
    ]
    assert {entry["actor"] for entry in entries} == {getpass.getuser()}
    assert await shop.cli("audit", "--limit", "2") == 0
    out = capsys.readouterr().out
    assert out.count("jobs.purge") == 2
    assert "job.retry" not in out


# --------------------------------------------------------------------------- queues


async def test_queues_list(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    assert await shop.cli("queues", "list") == 0
    out = capsys.readouterr().out
    default_counts, default_timings = [
        line.split() for line in out.splitlines() if line.startswith("default ")
    ]
    # waiting, later, running, claimed, complete, dead, cancelled
    assert default_counts[1:] == ["0", "1", "0", "0", "1", "0", "0"]
    mail_counts, mail_timings = [
        line.split() for line in out.splitlines() if line.startswith("mail ")
    ]
    assert mail_counts[6] == "1"
    # done/min, failed: one dead in the last 5 minutes
    assert mail_timings[1:3] == ["0.0", "100%"]
    assert default_timings[2] == "0%"

    assert await shop.cli("queues", "list", "--json") == 0
    queues = {queue["queue"]: queue for queue in json.loads(capsys.readouterr().out)["queues"]}
    assert queues["mail"]["counts"]["dead"] == 1
    assert queues["mail"]["failure_rate"] == 1.0
    assert queues["default"]["delayed"] == 1
    assert queues["default"]["run_seconds"]["sample"] == 1


async def test_queues_pause_refuses_an_undeclared_queue(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await shop.cli("queues", "pause", "mial") == 2
    assert capsys.readouterr().err == (
        "asyncjobs: error: no live worker runs a queue 'mial' and it has no jobs "
        "(a typo?); pass --force to pause it anyway\n"
    )
    assert await shop.cli("pause", "mial") == 2  # the old spelling too
    capsys.readouterr()
    assert not any(stats.paused for stats in await shop.runtime.queue_stats())

    assert await shop.cli("queues", "pause", "mial", "--force", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"queue": "mial", "paused": True}
    assert await shop.cli("queues", "resume", "mial") == 0
    assert capsys.readouterr().out == "queue 'mial' is resumed\n"


async def test_queues_pause_and_resume(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    assert await shop.cli("queues", "pause", "mail") == 0
    assert "queue 'mail' is paused" in capsys.readouterr().out
    assert {stats.queue for stats in await shop.runtime.queue_stats() if stats.paused} == {"mail"}
    assert await shop.cli("queues", "list") == 0
    assert any(line.startswith("mail paused") for line in capsys.readouterr().out.splitlines())
    assert await shop.cli("queues", "resume", "mail") == 0
    assert not any(stats.paused for stats in await shop.runtime.queue_stats())
    capsys.readouterr()
    assert await shop.cli("audit") == 0
    out = capsys.readouterr().out
    assert "queue.pause" in out
    assert "queue.resume" in out


# --------------------------------------------------------------------------- schedules


async def test_schedules_list_show_trigger_pause_resume(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await shop.cli("schedules", "list") == 0
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("hourly ")]
    assert "every 1h00m" in line
    assert "tick" in line

    assert await shop.cli("schedules", "trigger", "hourly") == 0
    out = capsys.readouterr().out
    assert out.startswith("schedule 'hourly' fired job ")
    fired = out.split()[4]
    assert (await shop.runtime.get_job(fired)) is not None

    assert await shop.cli("schedules", "show", "hourly") == 0
    out = capsys.readouterr().out
    assert "every 1h00m" in out
    assert fired in out
    assert "recent runs (1)" in out

    assert await shop.cli("schedules", "pause", "hourly") == 0
    assert capsys.readouterr().out == "schedule 'hourly' is paused\n"
    assert await shop.cli("schedules", "show", "hourly", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["paused"] is True
    assert [run["id"] for run in document["recent_runs"]] == [fired]
    assert await shop.cli("schedules", "resume", "hourly") == 0
    assert capsys.readouterr().out == "schedule 'hourly' is resumed\n"
    assert await shop.cli("schedules", "list", "--json") == 0
    [schedule] = json.loads(capsys.readouterr().out)["schedules"]
    assert (schedule["name"], schedule["paused"]) == ("hourly", False)

    for action in ("show", "trigger", "pause", "resume"):
        assert await shop.cli("schedules", action, "nope") == 2
        assert capsys.readouterr().err == "asyncjobs: error: no schedule 'nope' in the store\n"


# --------------------------------------------------------------------------- workers, explain


async def test_workers_lists_the_running_runtime(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    worker_id = shop.runtime.worker_id
    assert await shop.cli("workers") == 0
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith(worker_id)]
    assert " all " in line
    assert "default=2 mail=1" in line

    assert await shop.cli("workers", "--json") == 0
    [worker] = json.loads(capsys.readouterr().out)["workers"]
    assert worker["id"] == worker_id
    assert worker["pid"] == os.getpid()
    assert worker["queues"] == {"default": 2, "mail": 1}
    assert set(worker["jobs"]) == {"add", "explode", "tick"}


async def test_explain(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    assert await shop.cli("explain", shop.delayed_id) == 0
    out = capsys.readouterr().out
    assert "it is due later (its delay)" in out
    assert "due_later" in out
    assert "(in 59m" in out

    assert await shop.cli("explain", shop.dead_id, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["reason"] == "finished"
    assert document["details"]["error"] == "ValueError: boom"
    assert document["until"] is None

    assert await shop.cli("explain", "nope") == 2
    assert capsys.readouterr().err == "asyncjobs: error: no job 'nope' in the store\n"


# --------------------------------------------------------------------------- health


async def test_health(shop: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    assert await shop.cli("health") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "healthy"
    assert await shop.cli("health", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {
        "healthy": True,
        "reasons": [],
        "checks": {"store": True, "workers": True, "schedules": True, "backlog": True},
    }

    # A job waiting on a queue no live worker runs.
    store: Any = shop.runtime.backend if shop.kind == "memory" else shop.url
    web = JobRuntime(store, role="enqueue", queues={"nobody": 1})

    @web.job(name="add", queue="nobody")
    async def add(a: int, b: int) -> int:
        return a + b

    async with web:
        await add.enqueue(1, 2)
    assert await shop.cli("health") == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "unhealthy"
    assert "workers    FAIL" in out
    assert "no live worker serves nobody" in out
    assert await shop.cli("health", "--json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["healthy"] is False
    assert document["checks"]["workers"] is False


async def test_health_of_an_unreachable_store_is_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNCJOBS_URL", raising=False)
    # Port 1: nothing listens there, so connecting fails at once.
    assert await run_cli("health", "--url", "redis://:hunter2@127.0.0.1:1/0") == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("unhealthy\n")
    assert "store unreachable" in captured.out
    assert "hunter2" not in captured.out + captured.err


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "list", "--since", "soon"],
        ["jobs", "list", "--tag", "tenant"],
        ["jobs", "list", "--limit", "0"],
        ["jobs", "purge", "--state", "running"],
        ["jobs", "purge", "--older-than", "-5m"],
        ["queues"],
        ["schedules", "show"],
        ["explain"],
    ],
)
async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert await run_cli(*argv) == 2
    assert "usage: asyncjobs" in capsys.readouterr().err


def test_the_bare_jobs_command_lists() -> None:
    assert expand_aliases(["jobs"]) == ["jobs", "list"]
    assert expand_aliases(["jobs", "--state", "dead"]) == ["jobs", "list", "--state", "dead"]
    assert expand_aliases(["jobs", "show", "x"]) == ["jobs", "show", "x"]
    assert expand_aliases(["jobs", "--help"]) == ["jobs", "--help"]
    assert expand_aliases(["queues", "list"]) == ["queues", "list"]


async def test_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("--help") == 0
    out = capsys.readouterr().out
    for command in ("jobs", "queues", "schedules", "workers", "explain", "health", "audit"):
        assert command in out
    assert await run_cli("jobs", "--help") == 0
    out = capsys.readouterr().out
    for action in ("list", "show", "retry", "cancel", "delete", "purge"):
        assert action in out


# --------------------------------------------------------------------------- Admin on memory


async def test_the_views_render_from_a_memory_admin(capsys: pytest.CaptureFixture[str]) -> None:
    """The formatting on records an Admin reads, without any CLI plumbing."""
    from rich.console import Console

    from asyncjobs import _cli_format as fmt

    runtime = JobRuntime(queues={"default": 1})

    @runtime.job(name="fail", max_attempts=1)
    async def fail() -> None:
        raise RuntimeError("nope")

    async with runtime:
        with runtime.events.subscribe(JobDied) as events:
            handle = await fail.enqueue()
            await events.receive()
        admin: Admin = runtime.admin
        now = admin.clock.now()
        screen = Console(width=100, color_system=None, record=True)
        screen.print(fmt.detail_view(await admin.job(handle.id), now))
        screen.print(fmt.workers_table(await admin.workers(), now))
        screen.print(fmt.explanation_view(await admin.explain(handle.id), now))
        screen.print(fmt.queues_table(await admin.queues(), 300.0))
        screen.print(fmt.health_view(await admin.health()))
    text = screen.export_text()
    assert "RuntimeError: nope" in text
    assert runtime.worker_id in text
    assert "it has finished: dead after 1 attempt(s)" in text
    assert "healthy" in text
    capsys.readouterr()


# --------------------------------------------------------------------------- processes


async def run_asyncjobs(
    *argv: str, python_code: str | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run ``python -m asyncjobs *argv`` (or *python_code* with ``argv``) as a process."""
    command = [sys.executable, "-m", "asyncjobs", *argv]
    if python_code is not None:
        command = [sys.executable, "-c", python_code, *argv]
    with anyio.fail_after(50):
        result = await anyio.run_process(command, env=subprocess_env(), cwd=cwd, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_store_commands_as_processes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    if kind == "redis":
        url = await fresh_redis_url(request, 8)
    runtime = JobRuntime(url, queues={"default": 1})

    @runtime.job(name="fail", max_attempts=1)
    async def fail() -> None:
        raise RuntimeError("nope")

    async with runtime:
        with runtime.events.subscribe(JobDied) as events:
            handle = await fail.enqueue()
            await events.receive()
        code, out, err = await run_asyncjobs("jobs", "show", handle.id, "--json", "--url", url)
        assert code == 0, err
        document: dict[str, Any] = json.loads(out)
        assert document["job"]["state"] == "dead"
        assert [attempt["outcome"] for attempt in document["attempts"]] == ["dead"]
        code, out, err = await run_asyncjobs("workers", "--url", url)
        assert code == 0, err
        assert runtime.worker_id in out
        code, out, err = await run_asyncjobs("explain", handle.id, "--url", url)
        assert code == 0, err
        assert "it has finished: dead" in out
        code, out, err = await run_asyncjobs("jobs", "show", "nope", "--url", url)
        assert (code, out) == (2, "")
        # (After a one-line warning, on SQLite builds with the WAL-reset bug.)
        assert err.endswith("asyncjobs: error: no job 'nope' in the store\n")
        assert "Traceback" not in err


NO_REDIS = """
import sys
sys.modules["redis"] = None  # as if redis-py were not installed
from asyncjobs.cli import run
sys.argv[0] = "asyncjobs"
run()
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["status", "jobs", "workers", "health"])
async def test_redis_without_redis_py_is_one_line(command: str) -> None:
    code, out, err = await run_asyncjobs(
        command, "--url", "redis://127.0.0.1:1/0", python_code=NO_REDIS
    )
    assert (code, out) == (2, "")
    assert err == (
        "asyncjobs: error: the Redis backend needs redis-py 5 or newer: "
        "pip install 'asyncjobs[redis]'\n"
    )


async def fresh_redis_url(request: pytest.FixtureRequest, db: int) -> str:
    """The session's Redis server, database *db*, emptied (the CLI takes no key prefix)."""
    import redis.asyncio as aioredis

    server: str = request.getfixturevalue("redis_url")
    url = server.rsplit("/", 1)[0] + f"/{db}"
    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_status_watch_exits_130_on_ctrl_c(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    if kind == "redis":
        url = await fresh_redis_url(request, 9)
    async with Admin.open(url) as admin:
        command = [sys.executable, "-m", "asyncjobs", "status", "--watch", "--url", url]
        async with await anyio.open_process(command, env=subprocess_env()) as process:
            try:
                # Watching: its runtime has registered in the store (piped, the view
                # itself prints only when it stops).
                with anyio.fail_after(40):
                    while not any(worker.pid == process.pid for worker in await admin.workers()):
                        await anyio.sleep(0.05)
                process.send_signal(signal.SIGINT)
                with anyio.fail_after(30):
                    returncode = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
    assert returncode == 130


@pytest.mark.slow
async def test_the_demo_hint_is_a_command_that_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    code, out, err = await run_asyncjobs("demo", "--seconds", "1", "--url", url, cwd=tmp_path)
    assert code == 0, err
    hint = out.rstrip().splitlines()[-1].strip()
    assert hint == f"{sys.executable} -m asyncjobs status --url {url}"
    # Run as a console script not on PATH, the hint names the script's path.
    script = Path(sys.executable).parent / "asyncjobs"
    if script.exists():
        env = subprocess_env()
        env["PATH"] = "/usr/bin:/bin"
        with anyio.fail_after(50):
            result = await anyio.run_process(
                [str(script), "demo", "--seconds", "1", "--url", url], env=env, check=False
            )
        assert result.returncode == 0, result.stderr.decode()
        hint = result.stdout.decode().rstrip().splitlines()[-1].strip()
        assert hint == f"{script} status --url {url}"
