"""Dedup keys under a real race: eight processes enqueue one key at the same moment.

Each store must leave exactly one job holding the key, whatever its scope
and conflict rule: every ``"return"`` and ``"replace"`` caller gets that job's
handle (one of them made it), and of eight ``"raise"`` callers one succeeds
and seven get :class:`DuplicateJobError` naming it. The racers are separate
processes (``tests/key_racer.py``) on a SQLite file, the session Redis, or the
session PostgreSQL, released together by one line on their stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncjobs import JobRuntime, JobState
from tests.chaos_app import make_backend
from tests.key_racer import SCENARIOS

pytestmark = pytest.mark.slow

RACERS = 8
REPO = Path(__file__).resolve().parents[1]
#: Real seconds for a racer to answer one line (start-up included): a bound, not a wait.
ANSWER_WITHIN = 60


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A store URL and a prefix (Redis key prefix / Postgres schema) of this test's own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    return url, f"race_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def racers(store: tuple[str, str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Eight racer processes on *store*, each ready (its runtime open) before the test runs."""
    url, prefix = store
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("ASYNCJOBS_URL", None)
    # The first one creates the schema alone: the race under test is the enqueue.
    processes = []
    try:
        for number in range(RACERS):
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.key_racer", url, prefix, str(number)],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            processes.append(process)
            if number == 0:
                assert _line(process) == "ready"
        for process in processes[1:]:
            assert _line(process) == "ready"
        yield processes
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in processes:
            try:
                process.wait(timeout=ANSWER_WITHIN)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with anyio.from_thread.start_blocking_portal() as portal:
        line = portal.call(_read_line, process)
    assert line, f"racer {process.pid} exited with {process.poll()}"
    return line.strip()


async def _read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with anyio.fail_after(ANSWER_WITHIN):
        return await anyio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True)


def _race(racers: list[subprocess.Popen[str]], scenario: str) -> list[dict[str, Any]]:
    for process in racers:
        assert process.stdin is not None
        process.stdin.write(scenario + "\n")
    for process in racers:
        assert process.stdin is not None
        process.stdin.flush()  # all written first, then released together
    return [json.loads(_line(process)) for process in racers]


async def _holders(url: str, prefix: str, key: str) -> list[Any]:
    runtime = JobRuntime(make_backend(url, prefix), role="enqueue")
    async with runtime:
        jobs = await runtime.list_jobs(name="race.noop", limit=1000)
    return [job for job in jobs if job.key == key]


def test_eight_processes_racing_one_key_leave_one_holder(
    store: tuple[str, str], racers: list[subprocess.Popen[str]]
) -> None:
    url, prefix = store
    for scenario in SCENARIOS:
        answers = _race(racers, scenario)
        [job] = anyio.run(_holders, url, prefix, f"key-{scenario}")
        assert job.state is JobState.QUEUED
        if scenario.endswith("raise"):
            made = [answer["id"] for answer in answers if "id" in answer]
            assert made == [job.id], (scenario, answers)
            assert [a["duplicate_of"] for a in answers if "id" not in a] == [job.id] * 7
        else:
            assert {answer["id"] for answer in answers} == {job.id}, (scenario, answers)
            fresh = [answer for answer in answers if not answer["deduplicated"]]
            assert len(fresh) == 1, (scenario, answers)
