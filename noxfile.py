"""Development sessions: ``nox -s tests lint typing docs examples bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typing", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite (Redis tests need redis-server on PATH)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the examples."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def examples(session: nox.Session) -> None:
    """Run the tests that execute examples/ and the code in docs/."""
    session.install("-e", ".[dev]")
    session.run("pytest", "tests/test_lifespan.py", "tests/test_docs.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors."""
    # Autodoc imports every store and integration: install the extras they need.
    session.install("-e", ".[docs,redis,postgres,prometheus,otel]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark suite against the peers; pass --quick for a short run."""
    session.install("-e", ".[redis]")
    session.run("python", "benchmarks/run.py", *session.posargs)
