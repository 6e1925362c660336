"""The documentation cannot rot: its code runs, its examples run, and it builds.

- Every ```` ```python ```` block in ``docs/*.md`` and ``README.md`` is executed
  on its own, in a fresh namespace (``__name__ == "__main__"``) inside a
  temporary working directory. A block that defines ``async def main()`` and
  does not run it itself gets ``anyio.run(main)``. Blocks written as
  ```` ```{code-block} python ```` (those that need a Redis server, or are
  fragments) are skipped by design; keep them rare.
- Every script in ``examples/`` except ``starlette_app.py`` (covered by
  ``tests/test_lifespan.py``) runs as a subprocess and must exit 0 and print
  what it promises.
- ``sphinx-build -W`` builds the site without a warning.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import asyncjobs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"

# A fence of three or more backticks followed by exactly "python"; the closing
# fence is the same run of backticks. ```{code-block} python does not match.
_OPENING = re.compile(r"^(?P<fence>`{3,})python\s*$")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """Return ``(first line number, source)`` for each ```` ```python ```` block of *path*."""
    blocks: list[tuple[int, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _OPENING.match(lines[index])
        index += 1
        if opening is None:
            continue
        start = index
        while index < len(lines) and lines[index].rstrip() != opening["fence"]:
            index += 1
        if index == len(lines):
            raise AssertionError(f"{path}:{start}: a python block is never closed")
        blocks.append((start + 1, "\n".join(lines[start:index]) + "\n"))
        index += 1
    return blocks


def documented_files() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def all_blocks() -> list[tuple[Path, int, str]]:
    return [
        (path, line, source) for path in documented_files() for line, source in python_blocks(path)
    ]


BLOCKS = all_blocks()


def run_block(path: Path, line: int, source: str) -> None:
    """Execute one block as a script would run it; run ``main`` when the block only defines it."""
    filename = f"{path.relative_to(ROOT)}:{line}"
    # Pad with blank lines so a traceback's line numbers are the file's own.
    # dont_inherit: a block runs as a script would, without this module's __future__ imports.
    code = compile("\n" * (line - 1) + source, str(path), "exec", dont_inherit=True)
    namespace: dict[str, object] = {"__name__": "__main__", "__file__": filename}
    exec(code, namespace)
    main = namespace.get("main")
    if inspect.iscoroutinefunction(main) and "anyio.run(main" not in source:
        anyio.run(main)


@pytest.mark.parametrize(
    ("path", "line", "source"),
    BLOCKS,
    ids=[f"{path.relative_to(ROOT)}:{line}" for path, line, _ in BLOCKS],
)
def test_code_block_runs(
    path: Path, line: int, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASYNCJOBS_URL", raising=False)
    run_block(path, line, source)


def test_every_page_has_runnable_code_or_says_why() -> None:
    # Pages made of prose and tables only; every other page shows code that runs.
    prose_only = {"api.md", "benchmark-results.md", "design.md", "performance.md"}
    for path in sorted(DOCS.glob("*.md")):
        if path.name not in prose_only:
            assert python_blocks(path), f"{path.name} has no runnable python block"


def test_the_extractor_skips_code_block_directives(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n```{code-block} python\nnot run\n```\n"
        "````python\ny = '```'\n````\n",
        encoding="utf-8",
    )
    assert python_blocks(page) == [(3, "x = 1\n"), (9, "y = '```'\n")]


# --------------------------------------------------------------------------- examples

#: What each example script must print (substrings of its stdout).
EXPECTED_OUTPUT: dict[str, list[str]] = {
    "quickstart.py": ["2 + 3 = 5", "report for user 7: ready", "handle status: complete"],
    "schedules.py": [
        "tick 1",
        "tick 3",
        "Europe/Berlin 02:30 on 2026-03-29 runs at 03:00 CEST",
        "paused: True",
        "runs of 'cleanup': 1",
    ],
    "retries.py": [
        "flaky succeeded on attempt 3",
        "charge is dead: card declined",
        "retried by hand: complete",
        "snoozed 2 times, attempts used: 1",
    ],
}


def example_scripts() -> list[str]:
    return sorted(
        path.name
        for path in EXAMPLES.glob("*.py")
        if path.name not in {"__init__.py", "starlette_app.py"}
    )


def test_every_example_has_expectations() -> None:
    assert example_scripts() == sorted(EXPECTED_OUTPUT)


@pytest.mark.parametrize("script", sorted(EXPECTED_OUTPUT))
def test_example_script_runs(script: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("ASYNCJOBS_URL", None)
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for expected in EXPECTED_OUTPUT[script]:
        assert expected in result.stdout, f"{expected!r} not in:\n{result.stdout}"


# --------------------------------------------------------------------------- the site


def test_api_reference_documents_every_public_name() -> None:
    reference = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [
        name
        for name in asyncjobs.__all__
        if not re.search(rf"^\.\. auto\w+:: asyncjobs\.{name}$", reference, re.MULTILINE)
    ]
    assert not missing, f"docs/api.md does not document {missing}"


def test_performance_summary_matches_the_recorded_results() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    recorded = re.search(r"^asyncjobs: commit (\w+)", results, re.MULTILINE)
    assert recorded is not None, "benchmarks/RESULTS.md no longer names its commit"
    summary = (DOCS / "performance.md").read_text(encoding="utf-8")
    assert f"commit {recorded[1]}" in summary, (
        "benchmarks/RESULTS.md was regenerated: update the summary in docs/performance.md"
    )


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    for module in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "html" / "index.html").exists()
