"""Shared by the workload tests: run a workload script as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ROOT / "examples" / "workloads"


def run_script(name: str, cwd: Path, *args: str, timeout: float = 30) -> str:
    """Run ``examples/workloads/<name>`` with no store URL set; return its stdout.

    The scripts are not run by tests/test_docs.py (it runs the top level of
    examples/ only), so each workload's test runs its demonstration here.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("ASYNCJOBS_URL", None)
    result = subprocess.run(
        [sys.executable, "-W", "error", str(WORKLOADS / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


#: A finding for the testing kit: ``asyncjobs.testing._busy`` asks the slot pool
#: ``slots.free(queue)``, which in a binding weighted pool (``Queue(weight=)``
#: with ``max_concurrency`` below the queues' caps) registers the queue as asking
#: and hands it the pool's grants; its idle claim loop never gives them back, so
#: under ``advance()`` / ``Harness`` another queue's delayed job or retry is
#: never claimed. On the system clock the logistics app runs them (its script,
#: ``--seconds 35``). Strict: when the kit is fixed, these pass and the mark goes.
WEIGHTED_POOL_UNDER_ADVANCE = pytest.mark.xfail(
    strict=True,
    reason="testing kit: _busy() takes weighted-pool grants (see tests/workloads/conftest.py)",
)
