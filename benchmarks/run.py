"""Benchmark asyncjobs against its peers in one run, on one machine, with one workload.

Usage (from the repository root)::

    python benchmarks/run.py            # full run: N=10,000, 3 repetitions, writes RESULTS.md
    python benchmarks/run.py --quick    # development: N=1,000, 1 repetition
    python benchmarks/run.py --quick --systems asyncjobs-memory,asyncio --workloads drain

Every (system, workload, repetition) runs in a fresh process
(``systems/<script>.py``), under the peer's own virtualenv in
``benchmarks/.envs/<env>`` (created here with pinned versions) or, for
asyncjobs and the two limits, under this interpreter with the repository on
``PYTHONPATH``. Redis systems share one ``redis-server`` started here on a
free loopback port and flushed before every run. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYSTEMS_DIR = HERE / "systems"
ENVS_DIR = HERE / ".envs"
WORK_DIR = HERE / ".work"
RESULTS = HERE / "RESULTS.md"

sys.path[:0] = [str(HERE), str(SYSTEMS_DIR)]
from _common import RESULT_PREFIX, redis_command  # noqa: E402
from report import Cell, Settings, System, render  # noqa: E402

# Peers' virtualenvs and their pins. Bump deliberately: RESULTS.md records what ran.
ENVS: dict[str, list[str]] = {
    "arq": ["arq==0.28.0"],
    "saq": ["saq[redis]==0.26.4", "typing_extensions"],  # saq 0.26 imports it undeclared
    "huey": ["huey==3.5.4"],
    "taskiq": ["taskiq==0.13.0"],
    # APScheduler 4 is a pre-release; its SQLAlchemy store imports sniffio undeclared.
    # PostgreSQL peers, on the run's own server (a fresh database per run).
    "procrastinate": ["procrastinate==3.10.0"],
    "pgqueuer": ["pgqueuer==1.6.0", "asyncpg==0.32.0"],
    "apscheduler": [
        "apscheduler==4.0.0a6",
        "sqlalchemy[asyncio]==2.1.9",
        "aiosqlite==0.22.1",
        "sniffio",
    ],
}

SLOW_SQLITE_ENQUEUE = "one fsync'd transaction per enqueue: 100,000 would take minutes"
SYSTEMS: list[System] = [
    System("asyncjobs-memory", "asyncjobs_memory.py", "memory", "asyncjobs"),
    System("asyncio", "asyncio_limit.py", "memory", "limit"),
    System("taskiq-memory", "taskiq_memory.py", "memory", "peer", "taskiq"),
    System("huey-memory", "huey_memory.py", "memory", "peer", "huey"),
    System("apscheduler-memory", "apscheduler_memory.py", "memory", "peer", "apscheduler"),
    System("asyncjobs-sqlite", "asyncjobs_sqlite.py", "sqlite", "asyncjobs"),
    System("sqlite3", "sqlite3_limit.py", "sqlite", "limit"),
    System(
        "huey-sqlite",
        "huey_sqlite.py",
        "sqlite",
        "peer",
        "huey",
        caps={"rss": 20_000},
        cap_reason=SLOW_SQLITE_ENQUEUE,
    ),
    System(
        "apscheduler-sqlite",
        "apscheduler_sqlite.py",
        "sqlite",
        "peer",
        "apscheduler",
        caps={"enqueue": 1_000, "enqueue_concurrent": 1_000, "drain": 1_000, "rss": 1_000},
        cap_reason="~100 add_job/s and ~60 jobs/s drained: 10,000 would take minutes per run",
    ),
    System("asyncjobs-redis", "asyncjobs_redis.py", "redis", "asyncjobs"),
    System("saq", "saq_redis.py", "redis", "peer", "saq"),
    System("arq", "arq_redis.py", "redis", "peer", "arq"),
    System("asyncjobs-postgres", "asyncjobs_postgres.py", "postgres", "asyncjobs"),
    System("postgres-skip-locked", "postgres_limit.py", "postgres", "limit"),
    System("pgqueuer", "pgqueuer_pg.py", "postgres", "peer", "pgqueuer"),
    System("procrastinate", "procrastinate_pg.py", "postgres", "peer", "procrastinate"),
]

WORKLOADS = ["enqueue", "enqueue_bulk", "drain", "latency", "delayed", "rss", "enqueue_concurrent"]


@dataclass(frozen=True)
class Extra:
    """A measurement with its own script and arguments: (f) asyncjobs alone, (h) the web app."""

    system: System
    workload: str
    args: tuple[str, ...] = ()
    n_setting: str = "n"  # which Settings field gives --n
    #: Settings fields passed on as ``--field-name value``
    settings_args: tuple[str, ...] = ()


EXTRAS: list[Extra] = [
    Extra(
        System("asyncjobs-sqlite", "asyncjobs_sqlite_procs.py", "sqlite", "asyncjobs"),
        "sqlite_procs",
        ("--procs", "3"),
    ),
    Extra(
        System("asyncjobs-memory", "asyncjobs_cron.py", "memory", "asyncjobs"),
        "cron",
        ("--store", "memory"),
        "cron_n",
    ),
    Extra(
        System("asyncjobs-sqlite", "asyncjobs_cron.py", "sqlite", "asyncjobs"),
        "cron",
        ("--store", "sqlite"),
        "cron_n",
    ),
    # (h) web: the same Starlette app without the enqueue is the reference ("limit"); the
    # "(role enqueue)" rows run no jobs in the app, which splits the cost by difference.
    *(
        Extra(
            System(name, "asyncjobs_web.py", store, kind),
            "web",
            ("--store", flag, "--role", role),
            settings_args=("web_seconds", "web_connections"),
        )
        for name, store, kind, flag, role in [
            ("starlette", "memory", "limit", "none", "all"),
            ("asyncjobs-memory", "memory", "asyncjobs", "memory", "all"),
            ("asyncjobs-memory (role enqueue)", "memory", "asyncjobs", "memory", "enqueue"),
            ("asyncjobs-sqlite", "sqlite", "asyncjobs", "sqlite", "all"),
            ("asyncjobs-sqlite (role enqueue)", "sqlite", "asyncjobs", "sqlite", "enqueue"),
            ("asyncjobs-redis", "redis", "asyncjobs", "redis", "all"),
            ("asyncjobs-redis (role enqueue)", "redis", "asyncjobs", "redis", "enqueue"),
        ]
    ),
]
ALL_WORKLOADS = WORKLOADS + sorted({e.workload for e in EXTRAS})


# -- environments -------------------------------------------------------------


def env_python(env: str | None) -> str:
    if env is None:
        return sys.executable
    return str(ENVS_DIR / env / "bin" / "python")


def ensure_env(env: str, log: Path) -> None:
    """Create ``.envs/<env>`` with its pins unless it already has exactly them."""
    pins = ENVS[env]
    target = ENVS_DIR / env
    marker = target / ".bench-pins"
    if marker.exists() and marker.read_text() == "\n".join(pins):
        return
    print(f"  creating {target.relative_to(ROOT)}: {' '.join(pins)}", flush=True)
    if target.exists():
        shutil.rmtree(target)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    with log.open("a") as out:
        subprocess.run(
            [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--pre", *pins],
            check=True,
            stdout=out,
            stderr=out,
        )
    marker.write_text("\n".join(pins))


# -- redis --------------------------------------------------------------------


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port, AOF on (``appendfsync everysec``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.version = "?"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if self.workdir.exists():
            shutil.rmtree(self.workdir)  # no AOF from an earlier run to load
        self.workdir.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--logfile", str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis_command(self.url, "PING") == b"PONG":
                    break
            except (OSError, RuntimeError):  # not listening yet, or still loading
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start; see {self.workdir / 'redis.log'}")
            time.sleep(0.05)
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        self.version = next((p[2:] for p in out.split() if p.startswith("v=")), out.strip())

    def flush(self) -> None:
        redis_command(self.url, "FLUSHALL")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


class PostgresServer:
    """A throwaway PostgreSQL server (``tests/postgres_server.py``: fsync on, loopback).

    Every run gets a fresh database (:meth:`fresh`), so no system sees another's tables.
    """

    def __init__(self) -> None:
        self.server: Any = None
        self.version = "?"

    def start(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.postgres_server import PostgresServer as Server

        self.server = Server()
        self.server.start()
        out = subprocess.run(
            [str(self.server.bindir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout
        # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        self.version = out.split()[2] if len(out.split()) > 2 else "?"

    def fresh(self) -> str:
        psql = shutil.which("psql") or str(self.server.bindir / "psql")
        for sql in ("DROP DATABASE IF EXISTS bench WITH (FORCE)", "CREATE DATABASE bench"):
            subprocess.run(
                [psql, "-q", "-X", "-d", self.server.url, "-c", sql],
                check=True,
                capture_output=True,
            )
        url: str = self.server.url_for("bench")
        return url

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


# -- running ------------------------------------------------------------------


class Runner:
    def __init__(
        self, settings: Settings, redis: RedisServer | None, log: Path, source: Path
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.log = log
        self.source = source  # the directory holding the asyncjobs package to measure
        self.postgres: PostgresServer | None = None

    def workload_args(self, system: System, workload: str) -> list[str]:
        s = self.settings
        args = [
            "--workload", workload,
            "--n", str(s.job_count(system, workload)),
            "--concurrency", str(s.concurrency),
            "--latency-n", str(s.latency_n),
            "--delayed-n", str(s.delayed_n),
            "--producers", str(s.producers),
            "--workdir", str(WORK_DIR / "db"),
            "--timeout", str(s.timeout),
        ]  # fmt: skip
        if system.store == "redis":
            assert self.redis is not None
            self.redis.flush()
            args += ["--redis-url", self.redis.url]
        if system.store == "postgres":
            assert self.postgres is not None
            args += ["--postgres-url", self.postgres.fresh()]
        return args

    def run_script(self, system: System, args: Sequence[str]) -> dict[str, Any]:
        """Run one system script in a fresh process and return its result line."""
        cmd = [env_python(system.env), str(SYSTEMS_DIR / system.script), *args]
        env = dict(os.environ)
        if system.env is None:  # this asyncjobs, whatever is installed
            path = [str(self.source), env.get("PYTHONPATH")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        timeout = self.settings.timeout + 60
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=WORK_DIR
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:.0f}s"}
        took = time.monotonic() - started
        with self.log.open("a") as out:
            out.write(f"$ {' '.join(cmd)}  [{took:.1f}s rc={proc.returncode}]\n")
            out.write(proc.stdout + proc.stderr + "\n")
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
                result["took_s"] = took
                tracebacks = proc.stderr.count("Traceback (most recent call last)")
                if tracebacks:
                    result["stderr_tracebacks"] = tracebacks
                return result
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"exit {proc.returncode}: {tail}", "took_s": took}

    def record(self, cell: Cell, label: str, rep: int, reps: int, result: dict[str, Any]) -> None:
        if result.get("na"):
            cell.na = str(result["na"])
            print(f"  {label:36} n/a", flush=True)
            return
        cell.runs.append(result)
        if not result.get("ok"):
            cell.error = str(result.get("error"))
        print(
            f"  {label:36} {rep + 1}/{reps}  {brief(result)}  ({result.get('took_s', 0):.1f}s)",
            flush=True,
        )

    def run(
        self, systems: Sequence[System], workloads: Sequence[str], extras: Sequence[Extra]
    ) -> dict[tuple[str, str], Cell]:
        cells: dict[tuple[str, str], Cell] = {}
        s = self.settings
        for workload in workloads:
            reps = s.rss_repeat if workload == "rss" else s.repeat
            # Repetition-major order: a slow spell on a shared machine hits every system alike.
            for rep in range(reps):
                for system in systems:
                    cell = cells.setdefault((system.name, workload), Cell())
                    if cell.na is None:
                        result = self.run_script(system, self.workload_args(system, workload))
                        self.record(cell, f"{workload} {system.name}", rep, reps, result)
        # Extras of one workload also run repetition-major (the web app and its reference).
        for workload in dict.fromkeys(e.workload for e in extras):
            group = [e for e in extras if e.workload == workload]
            for rep in range(s.repeat):
                for extra in group:
                    cell = cells.setdefault((extra.system.name, extra.workload), Cell())
                    result = self.run_script(extra.system, self.extra_args(extra))
                    label = f"{extra.workload} {extra.system.name}"
                    self.record(cell, label, rep, s.repeat, result)
        return cells

    def extra_args(self, extra: Extra) -> list[str]:
        s = self.settings
        n = getattr(s, extra.n_setting)
        args = ["--n", str(n), "--concurrency", str(s.concurrency), *extra.args]
        for name in extra.settings_args:
            args += [f"--{name.replace('_', '-')}", str(getattr(s, name))]
        args += ["--workdir", str(WORK_DIR / "db"), "--timeout", str(s.timeout)]
        if extra.system.store == "redis":
            assert self.redis is not None
            self.redis.flush()
            args += ["--redis-url", self.redis.url]
        return args


def load_log(log: Path) -> list[dict[str, Any]]:
    """Every result recorded in *log* (what :meth:`Runner.run_script` wrote), in order."""
    results: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    took = 0.0
    for line in log.read_text().splitlines():
        if line.startswith("$ "):
            marker = line.rsplit("[", 1)[-1]
            took = float(marker.split("s rc=")[0]) if "s rc=" in marker else 0.0
            current = None
        elif line.startswith(RESULT_PREFIX):
            current = json.loads(line[len(RESULT_PREFIX) :])
            current["took_s"] = took
            results.append(current)
        elif current is not None and line.startswith("Traceback (most recent call last)"):
            current["stderr_tracebacks"] = current.get("stderr_tracebacks", 0) + 1
    return results


def to_cells(results: Sequence[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    cells: dict[tuple[str, str], Cell] = {}
    for r in results:
        cell = cells.setdefault((r["system"], r["workload"]), Cell())
        if r.get("na"):
            cell.na = str(r["na"])
            continue
        cell.runs.append(r)
        if not r.get("ok"):
            cell.error = str(r.get("error"))
    return cells


def brief(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"ERROR {r.get('error')}"
    if "p50_ms" in r and "throughput" in r:  # enqueue_concurrent, web
        unit = "req/s" if r.get("workload") == "web" else "jobs/s"
        return (
            f"{r['throughput']:,.0f} {unit}  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
            f"  max {r['max_ms']:.2f} ms"
        )
    if "p50_ms" in r:
        return f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.2f} ms"
    if r.get("workload") == "rss":
        return f"rss {r['rss_mb']:.1f} MB (+{r['rss_delta_mb']:.1f})"
    if r.get("workload") == "cron":
        return (
            f"register {r['register_s']:.2f}s start {r['start_s']:.2f}s fire {r['fire_s']:.2f}s "
            f"idle {r['idle_cpu_pct']:.1f}% cpu"
        )
    extra = f"  duplicates {r['duplicates']}" if "duplicates" in r else ""
    return f"{r['throughput']:,.0f} jobs/s{extra}"


# -- main ---------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def checkout_revision() -> str:
    """The checkout's commit, and whether uncommitted changes to the package were measured."""
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "asyncjobs")
    except (OSError, subprocess.CalledProcessError):
        return "the working tree (commit unknown)"
    return f"the working tree at commit {head}" + (
        ", **with uncommitted changes to asyncjobs/**" if dirty else ""
    )


def snapshot(rev: str) -> tuple[Path, str]:
    """Extract ``asyncjobs/`` as of commit *rev* into ``.work/src`` (``git archive``)."""
    commit = git("rev-parse", "--short", f"{rev}^{{commit}}")
    target = WORK_DIR / "src"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "asyncjobs"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target, f"commit {commit} (a clean snapshot made with `--commit`)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="N=1,000, 1 repetition, smaller runs")
    p.add_argument("--systems", help="comma-separated subset (see --list)")
    p.add_argument("--workloads", help=f"comma-separated subset of {','.join(ALL_WORKLOADS)}")
    p.add_argument("--n", type=int, help="jobs per throughput run (10,000; quick 1,000)")
    p.add_argument("--rss-n", type=int, help="jobs queued for the RSS run (100,000; quick 10,000)")
    p.add_argument("--repeat", type=int, help="repetitions (3; quick 1)")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--producers", type=int, default=100, help="enqueue_concurrent tasks (100)")
    p.add_argument("--web-seconds", type=float, help="web: seconds of wrk per run (10; quick 3)")
    p.add_argument("--web-connections", type=int, default=50, help="web: wrk connections (50)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run (900)")
    p.add_argument("--output", type=Path, help="default RESULTS.md; quick: .work/RESULTS-quick.md")
    p.add_argument("--commit", help="measure asyncjobs as of this commit (default: the checkout)")
    p.add_argument(
        "--update",
        action="store_true",
        help="re-measure only the selected systems/workloads and keep the rest of the last run "
        "(same settings and commit required; the report says which cells were re-measured)",
    )
    p.add_argument("--list", action="store_true", help="list systems and workloads, then exit")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SYSTEMS:
            print(f"{s.name:20} {s.kind:9} store={s.store:6} env={s.env or '(this interpreter)'}")
        print("workloads:", ", ".join(ALL_WORKLOADS))
        return 0
    quick = args.quick
    settings = Settings(
        n=args.n or (1_000 if quick else 10_000),
        rss_n=args.rss_n or (10_000 if quick else 100_000),
        cron_n=1_000 if quick else 10_000,
        repeat=args.repeat or (1 if quick else 3),
        rss_repeat=1,
        latency_n=100 if quick else 500,
        delayed_n=50 if quick else 200,
        concurrency=args.concurrency,
        timeout=args.timeout,
        producers=args.producers,
        web_seconds=args.web_seconds or (3.0 if quick else 10.0),
        web_connections=args.web_connections,
    )
    names = args.systems.split(",") if args.systems else [s.name for s in SYSTEMS]
    workloads = args.workloads.split(",") if args.workloads else ALL_WORKLOADS
    unknown = (set(names) - {s.name for s in SYSTEMS}) | (set(workloads) - set(ALL_WORKLOADS))
    if unknown:
        print(f"unknown systems or workloads: {', '.join(sorted(unknown))} (see --list)")
        return 2
    systems = [s for s in SYSTEMS if s.name in names]
    # A reference (kind "limit", e.g. the web app without the enqueue) comes with its workload.
    extras = [
        e
        for e in EXTRAS
        if e.workload in workloads
        and (e.system.name.split(" ")[0] in names or e.system.kind == "limit")
    ]
    output: Path = args.output or (WORK_DIR / "RESULTS-quick.md" if quick else RESULTS)

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    # Two runs at once would share .work/ (databases, log) and each other's CPU: refuse.
    lock = (WORK_DIR / "run.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        print(
            f"another benchmark run is in progress ({lock.read().strip()}); wait for it to finish"
        )
        return 2
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}, started {time.strftime('%H:%M:%S')}, {' '.join(sys.argv[1:])}")
    lock.flush()
    source, revision = snapshot(args.commit) if args.commit else (ROOT, checkout_revision())
    log = WORK_DIR / "run.log"
    meta_file = WORK_DIR / "last-run.json"
    meta: dict[str, Any] = {
        "command": "",
        "settings": asdict(settings),
        "revision": revision,
        "duration": 0.0,
        "redis_version": None,
        "updates": [],
    }
    previous: list[dict[str, Any]] = []
    if args.update:
        if not meta_file.exists() or not log.exists():
            print("--update needs a previous run (.work/last-run.json and .work/run.log)")
            return 2
        meta = json.loads(meta_file.read_text())
        if meta["settings"] != asdict(settings) or meta["revision"] != revision:
            print(
                "--update needs the previous run's settings and asyncjobs revision "
                f"(previous: {meta['revision']}, {meta['settings']})"
            )
            return 2
        selected = {(s.name, w) for s in systems for w in workloads if w in WORKLOADS}
        selected |= {(e.system.name, e.workload) for e in extras}
        previous = [r for r in load_log(log) if (r["system"], r["workload"]) not in selected]
        with log.open("a") as out:
            out.write(f"# --update at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    else:
        log.write_text("")
    started = time.monotonic()
    mode = "quick" if quick else "full"
    print(f"asyncjobs benchmarks ({mode}): N={settings.n:,}, {settings.repeat} repetition(s)")
    print(f"every run's output: {log.relative_to(ROOT)}")
    for env in sorted({s.env for s in systems if s.env}):
        ensure_env(env, log)

    redis: RedisServer | None = None
    postgres: PostgresServer | None = None
    try:
        if any(s.store == "redis" for s in [*systems, *(e.system for e in extras)]):
            redis = RedisServer(WORK_DIR / "redis")
            redis.start()
        runner = Runner(settings, redis, log, source)
        if any(s.store == "postgres" for s in systems):
            postgres = PostgresServer()
            postgres.start()
            runner.postgres = postgres
            print(f"PostgreSQL {postgres.version} on loopback (fsync on)", flush=True)
        cells = runner.run(systems, [w for w in WORKLOADS if w in workloads], extras)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
    duration = time.monotonic() - started
    command = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    if args.update:
        fresh = sorted(f"{name} {workload}" for name, workload in cells)
        meta["updates"].append(
            {"command": command, "minutes": round(duration / 60, 1), "cells": fresh}
        )
        merged = to_cells(previous)
        merged.update(cells)
        cells = merged
        names = {name for name, _ in cells}
        systems = [s for s in SYSTEMS if s.name in names]
        workloads = sorted({w for _, w in cells}, key=ALL_WORKLOADS.index)
    else:
        meta["command"], meta["duration"] = command, duration
    if redis is not None:
        meta["redis_version"] = redis.version
    meta_file.write_text(json.dumps(meta, indent=2))
    text = render(
        systems=systems,
        workloads=[w for w in WORKLOADS if w in workloads],
        cells=cells,
        settings=settings,
        redis_version=meta["redis_version"],
        revision=revision,
        command=meta["command"],
        duration=meta["duration"],
        quick=quick,
        updates=meta["updates"],
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print()
    print(text)
    shown = output.relative_to(ROOT) if output.is_relative_to(ROOT) else output
    print(f"wrote {shown} after {duration / 60:.1f} min")
    return 1 if any(c.error for c in cells.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
