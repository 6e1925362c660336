"""Shared by the workload tests: run a workload script as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
