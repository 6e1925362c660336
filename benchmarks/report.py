"""The benchmark's records and its Markdown report (printed and written to RESULTS.md)."""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Stat = tuple[float, float, float]  # median, min, max


@dataclass(frozen=True)
class System:
    name: str
    script: str
    store: str  # memory | sqlite | redis | postgres: the asyncjobs backend it is compared with
    kind: str  # asyncjobs | limit | peer
    env: str | None = None  # a peer's virtualenv under .envs/; None: this interpreter
    #: per-workload caps on the job count, with the reason (shown as a footnote).
    caps: dict[str, int] = field(default_factory=dict)
    cap_reason: str = ""


@dataclass(frozen=True)
class Settings:
    n: int
    rss_n: int
    cron_n: int
    repeat: int
    rss_repeat: int
    latency_n: int
    delayed_n: int
    concurrency: int
    timeout: float
    producers: int = 100  # enqueue_concurrent: tasks enqueueing at once
    web_seconds: float = 10.0  # web: measured seconds of wrk per run
    web_connections: int = 50  # web: wrk's connections

    def job_count(self, system: System, workload: str) -> int:
        base = self.rss_n if workload == "rss" else self.n
        cap = system.caps.get(workload)
        return min(base, cap) if cap else base


@dataclass
class Cell:
    """Every repetition of one (system, workload)."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    na: str | None = None
    error: str | None = None

    def stat(self, key: str) -> Stat | None:
        values = [
            float(r[key])
            for r in self.runs
            if r.get("ok") and isinstance(r.get(key), int | float) and not isinstance(r[key], bool)
        ]
        if not values:
            return None
        return statistics.median(values), min(values), max(values)

    def median(self, key: str) -> float | None:
        st = self.stat(key)
        return st[0] if st else None

    def tracebacks(self) -> int:
        return sum(int(r.get("stderr_tracebacks", 0)) for r in self.runs)


Cells = dict[tuple[str, str], Cell]

TITLES = {
    "enqueue": "(a) Enqueue throughput, one awaited call per job (jobs/s, higher is better)",
    "enqueue_bulk": "(a) Enqueue throughput, bulk (jobs/s, higher is better)",
    "drain": "(b) Drain throughput: N jobs enqueued beforehand, worker started, until the last handler ran (jobs/s, higher is better)",
    "latency": "(c) Start latency with an idle worker, one job every 5 ms: enqueue call to the handler's first line (ms, lower is better)",
    "delayed": "(d) Delayed precision, jobs due 0.5-2 s ahead: handler start minus due time (ms, lower is better)",
    "rss": "(e) Memory (MB, lower is better)",
    "enqueue_concurrent": "(g) Concurrent enqueue: 100 producers at once, each awaiting one enqueue call at a time, no worker (jobs/s higher is better; per-call ms)",
}

# The performance issue's targets: (label, workload, asyncjobs system, peers, factor);
# asyncjobs' median drain throughput must be >= factor x the best peer median.
TARGETS: list[tuple[str, str, str, tuple[str, ...], float]] = [
    ("memory drain >= 50% of plain asyncio", "drain", "asyncjobs-memory", ("asyncio",), 0.5),
    ("memory drain >= 2x taskiq in-memory", "drain", "asyncjobs-memory", ("taskiq-memory",), 2.0),
    ("SQLite drain >= 3x SqliteHuey", "drain", "asyncjobs-sqlite", ("huey-sqlite",), 3.0),
    ("Redis drain >= 2x fastest Redis peer", "drain", "asyncjobs-redis", ("saq", "arq"), 2.0),
    ("Redis drain >= 20x arq", "drain", "asyncjobs-redis", ("arq",), 20.0),
    (
        "memory concurrent enqueue >= 3x huey-memory",
        "enqueue_concurrent",
        "asyncjobs-memory",
        ("huey-memory",),
        3.0,
    ),
    (
        "SQLite concurrent enqueue >= 3x huey-sqlite",
        "enqueue_concurrent",
        "asyncjobs-sqlite",
        ("huey-sqlite",),
        3.0,
    ),
    ("Redis concurrent enqueue >= 3x SAQ", "enqueue_concurrent", "asyncjobs-redis", ("saq",), 3.0),
    (
        "web, memory: >= 0.6x the app without enqueue",
        "web",
        "asyncjobs-memory",
        ("starlette",),
        0.6,
    ),
    (
        "web, SQLite: >= 0.6x the app without enqueue",
        "web",
        "asyncjobs-sqlite",
        ("starlette",),
        0.6,
    ),
    ("web, Redis: >= 0.6x the app without enqueue", "web", "asyncjobs-redis", ("starlette",), 0.6),
]
# Latency and precision ceilings per backend (p99, ms); the README gives the reasoning.
P99_TARGETS: dict[str, dict[str, float]] = {
    "asyncjobs-memory": {"latency": 5.0, "delayed": 10.0},
    "asyncjobs-sqlite": {"latency": 50.0, "delayed": 100.0},
    "asyncjobs-redis": {"latency": 20.0, "delayed": 50.0},
}


# -- formatting ---------------------------------------------------------------


def fmt_num(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_stat(st: Stat | None, reps: int) -> str:
    if st is None:
        return "-"
    med, lo, hi = st
    if reps <= 1 or lo == hi:
        return fmt_num(med)
    return f"{fmt_num(med)} ({fmt_num(lo)}-{fmt_num(hi)})"


def times_better(aj: float | None, other: float | None, higher_is_better: bool) -> str:
    """How many times better asyncjobs is than *other* (>1: asyncjobs is better)."""
    if aj is None or other is None or aj <= 0 or other <= 0:
        return "-"
    return f"{(aj / other if higher_is_better else other / aj):.2f}x"


def ordered(systems: Iterable[System]) -> list[System]:
    store = {"memory": 0, "sqlite": 1, "redis": 2, "postgres": 3}
    kind = {"asyncjobs": 0, "limit": 1, "peer": 2}
    return sorted(systems, key=lambda s: (store[s.store], kind[s.kind]))


def label(system: System) -> str:
    if system.kind == "asyncjobs":
        return f"**{system.name}**"
    return f"{system.name} (limit)" if system.kind == "limit" else system.name


# -- tables -------------------------------------------------------------------


def workload_table(
    workload: str, systems: Sequence[System], cells: Cells, settings: Settings
) -> list[str]:
    reps = settings.rss_repeat if workload == "rss" else settings.repeat
    asyncjobs_of = {s.store: s.name for s in systems if s.kind == "asyncjobs"}
    footnotes: dict[str, None] = {}
    rows: list[str] = []

    def note(system: System, cell: Cell) -> str:
        if cell.na:
            return f"n/a: {cell.na}"
        if cell.error:
            return f"error: {cell.error}"
        parts = []
        n = settings.job_count(system, workload)
        if n != (settings.rss_n if workload == "rss" else settings.n):
            parts.append(f"N={n:,}")
            footnotes[f"{system.name}: N={n:,}, {system.cap_reason}"] = None
        if cell.tracebacks():
            parts.append(f"{cell.tracebacks()} traceback(s) on stderr (.work/run.log)")
        return "; ".join(parts)

    for system in ordered(systems):
        cell = cells.get((system.name, workload))
        if cell is None:
            continue
        ref = cells.get((asyncjobs_of.get(system.store, ""), workload), Cell())
        is_aj = system.kind == "asyncjobs"
        if workload in ("latency", "delayed"):
            p50, p99, mx = (cell.stat(k) for k in ("p50_ms", "p99_ms", "max_ms"))
            vs = "" if is_aj else times_better(ref.median("p99_ms"), cell.median("p99_ms"), False)
            rows.append(
                f"| {label(system)} | {system.store} | {fmt_stat(p50, reps)} | {fmt_stat(p99, reps)} "
                f"| {fmt_stat(mx, reps)} | {vs} | {note(system, cell)} |"
            )
        elif workload == "enqueue_concurrent":
            p50, p99, mx = (cell.stat(k) for k in ("p50_ms", "p99_ms", "max_ms"))
            vs = (
                ""
                if is_aj
                else times_better(ref.median("throughput"), cell.median("throughput"), True)
            )
            rows.append(
                f"| {label(system)} | {system.store} | {fmt_stat(cell.stat('throughput'), reps)} "
                f"| {fmt_stat(p50, reps)} | {fmt_stat(p99, reps)} | {fmt_stat(mx, reps)} | {vs} "
                f"| {_store_note(cell, note(system, cell))} |"
            )
        elif workload == "rss":
            drain = cells.get((system.name, "drain"), Cell())
            growth = _growth(cell)
            vs = "" if is_aj else times_better(_growth(ref), growth, False)
            rows.append(
                f"| {label(system)} | {system.store} "
                f"| {fmt_stat(drain.stat('peak_rss_mb'), settings.repeat)} "
                f"| {fmt_stat(cell.stat('rss_mb'), reps)} | {fmt_stat(cell.stat('rss_delta_mb'), reps)} "
                f"| {fmt_stat(cell.stat('store_mb'), reps)} | {vs} | {note(system, cell)} |"
            )
        else:
            vs = (
                ""
                if is_aj
                else times_better(ref.median("throughput"), cell.median("throughput"), True)
            )
            rows.append(
                f"| {label(system)} | {system.store} | {fmt_stat(cell.stat('throughput'), reps)} "
                f"| {vs} | {note(system, cell)} |"
            )
    if not rows:
        return []

    lines = [f"### {TITLES[workload]}", ""]
    if workload in ("latency", "delayed"):
        lines += [
            "| system | store | p50 | p99 | max | asyncjobs p99 is | note |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        after = "Medians over repetitions (min-max across them). 'asyncjobs p99 is' = this row's p99 / asyncjobs' p99 on the same store (>1: asyncjobs better)."
    elif workload == "enqueue_concurrent":
        lines += [
            "| system | store | jobs/s | call p50 | call p99 | call max | asyncjobs is | note |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        after = (
            f"{settings.producers} producer tasks share N jobs, each awaiting its own enqueue call, "
            "then the next (200 untimed calls first); jobs/s from the first timed call to the last "
            "reply, and each call's own duration in ms. huey's enqueue is synchronous and is called "
            "directly in the coroutine, as an async app would: it blocks the event loop, so its calls "
            "run one after another (as does the sqlite3 limit's). Medians over repetitions (min-max); "
            "'asyncjobs is' = asyncjobs' jobs/s on the same store / this row's."
        )
    elif workload == "rss":
        lines += [
            f"| system | store | peak RSS draining N={settings.n:,} | RSS with {settings.rss_n:,} queued "
            "| RSS growth | store growth | asyncjobs growth is | note |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        after = (
            "RSS of the benchmark process (`/proc/self/status` VmHWM for the peak, VmRSS otherwise); "
            "RSS growth = RSS after enqueueing minus before; store growth = SQLite file + WAL, or "
            "Redis `used_memory`. 'asyncjobs growth is' compares RSS + store growth (>1: asyncjobs smaller)."
        )
    else:
        lines += [
            "| system | store | jobs/s | asyncjobs is | note |",
            "|---|---|---:|---:|---|",
        ]
        after = "Median over repetitions (min-max). 'asyncjobs is' = asyncjobs on the same store / this row (>1: asyncjobs faster)."
    lines += rows
    lines += ["", after, ""]
    if footnotes:
        lines += [f"- {f}" for f in footnotes] + [""]
    return lines


def _store_note(cell: Cell, note: str) -> str:
    """The note, plus the store settings a run reported (SQLite journal mode, synchronous)."""
    settings = sorted({str(r["store_settings"]) for r in cell.runs if r.get("store_settings")})
    return "; ".join(p for p in [*settings, note] if p)


def paired_ratio(mine: Cell, ref: Cell, key: str = "throughput") -> Stat | None:
    """*mine* / *ref* per repetition (the n-th run of each, adjacent in time), as a Stat.

    Repetitions run repetition-major, so the n-th runs of two systems saw the
    same spell of the shared machine: their ratio is steadier than the ratio of
    two medians taken over different spells.
    """
    ratios = [
        float(a[key]) / float(b[key])
        for a, b in zip(mine.runs, ref.runs, strict=False)
        if a.get("ok") and b.get("ok") and a.get(key) and b.get(key)
    ]
    if not ratios:
        return None
    return statistics.median(ratios), min(ratios), max(ratios)


def fmt_ratio(st: Stat | None) -> str:
    if st is None:
        return "-"
    med, lo, hi = st
    return f"{med:.2f}x" if lo == hi else f"{med:.2f}x ({lo:.2f}-{hi:.2f})"


WEB_APPS = [("starlette", "none (no enqueue)")] + [
    (f"asyncjobs-{store}{role}", store + role.replace(" (role enqueue)", ", role enqueue"))
    for store in ("memory", "sqlite", "redis")
    for role in ("", " (role enqueue)")
]


def web_table(cells: Cells, settings: Settings) -> list[str]:
    """(h) the web workload: the Starlette app per store against the app without the enqueue."""
    present = [(n, store) for n, store in WEB_APPS if (n, "web") in cells]
    if not present:
        return []
    r = settings.repeat
    ref = cells.get(("starlette", "web"), Cell())
    lines = [
        f"### (h) Web app: Starlette under uvicorn, one job enqueued per POST, wrk with "
        f"{settings.web_connections} connections for {settings.web_seconds:g} s "
        "(requests/s higher is better; ms per request)",
        "",
        "| app | store | requests/s | p50 | p99 | max | vs no enqueue | jobs ran / enqueued | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, store in present:
        c = cells[(name, "web")]
        is_ref = name == "starlette"
        vs = "" if is_ref else fmt_ratio(paired_ratio(c, ref))
        ran, enq = c.median("jobs_ran"), c.median("jobs_enqueued")
        jobs = "" if is_ref or ran is None or not enq else f"{ran:,.0f} / {enq:,.0f}"
        errors = sum(int(x.get("non_2xx", 0)) + int(x.get("socket_errors", 0)) for x in c.runs)
        parts = [
            f"error: {c.error}" if c.error else "",
            f"{errors} non-2xx/socket errors" if errors else "",
            f"{c.tracebacks()} traceback(s) on stderr (.work/run.log)" if c.tracebacks() else "",
        ]
        lines.append(
            f"| {'Starlette alone' if is_ref else '**asyncjobs**'} | {store} "
            f"| {fmt_stat(c.stat('throughput'), r)} "
            f"| {fmt_stat(c.stat('p50_ms'), r)} | {fmt_stat(c.stat('p99_ms'), r)} "
            f"| {fmt_stat(c.stat('max_ms'), r)} | {vs} | {jobs} | {'; '.join(p for p in parts if p)} |"
        )
    lines += [
        "",
        "One uvicorn process (one worker, access log off); the runtime runs in it with "
        "`lifespan=runtime.lifespan`, role `all`: the jobs run there too, beside the requests "
        "(role `enqueue`: the app only enqueues, as a web process with separate workers would). "
        "`POST /jobs` awaits `noop.enqueue(i)` and answers 202 with the job id; the reference is "
        "the same app with the enqueue removed. wrk: one thread, a 1 s warm-up first; latency is "
        "per request as wrk measures it. SQLite: `synchronous=FULL`, WAL. 'vs no enqueue' = this "
        "row's requests/s / the reference's, per repetition (the two ran one after the other), "
        "median (min-max). 'jobs ran / enqueued' counts the whole run (warm-up included) when wrk "
        "ended. Other columns: medians over repetitions (min-max).",
        "",
    ]
    return lines


def _fmt_count(st: Stat | None) -> str:
    if st is None:
        return "-"
    med, lo, hi = (int(v) for v in st)
    return str(med) if lo == hi else f"{med} ({lo}-{hi})"


def _growth(cell: Cell) -> float | None:
    delta = cell.median("rss_delta_mb")
    if delta is None:
        return None
    return delta + (cell.median("store_mb") or 0.0)


def extras_table(cells: Cells, settings: Settings) -> list[str]:
    lines: list[str] = []
    procs = cells.get(("asyncjobs-sqlite", "sqlite_procs"))
    if procs is not None:
        one = cells.get(("asyncjobs-sqlite", "drain"), Cell()).median("throughput")
        many = procs.median("throughput")
        lines += [
            "### (f) asyncjobs alone: SQLite drain with 3 worker processes on one file",
            "",
            "| N | jobs/s | vs one process (b) | handler runs beyond N | note |",
            "|---:|---:|---:|---:|---|",
            f"| {settings.n:,} | {fmt_stat(procs.stat('throughput'), settings.repeat)} "
            f"| {times_better(many, one, True) if one and many else '-'} "
            f"| {_fmt_count(procs.stat('duplicates'))} | {procs.error or ''} |",
            "",
            "Timed from 'go' (all three processes started and imported) to the last handler start; "
            "the jobs were enqueued beforehand.",
            "",
        ]
    crons = [(store, cells.get((f"asyncjobs-{store}", "cron"))) for store in ("memory", "sqlite")]
    if any(c is not None for _, c in crons):
        r = settings.repeat
        lines += [
            f"### (f) asyncjobs alone: cron scheduling cost with {settings.cron_n:,} schedules",
            "",
            "| store | declare (s) | start (s) | fire all (s) | fires/s | idle CPU (% of a core) | RSS (MB) | note |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for store, c in crons:
            if c is None:
                continue
            lines.append(
                f"| {store} | {fmt_stat(c.stat('register_s'), r)} | {fmt_stat(c.stat('start_s'), r)} "
                f"| {fmt_stat(c.stat('fire_s'), r)} | {fmt_stat(c.stat('fire_throughput'), r)} "
                f"| {fmt_stat(c.stat('idle_cpu_pct'), r)} | {fmt_stat(c.stat('rss_mb'), r)} | {c.error or ''} |"
            )
        lines += [
            "",
            "All schedules share one expression that fires once a few seconds after start; "
            "'fire all' runs from that due time (or the end of start-up, if later) to the last "
            "handler start; idle CPU is measured over 3 s afterwards with nothing due.",
            "",
        ]
    return lines


def targets_table(cells: Cells) -> list[str]:
    lines = [
        "### Targets",
        "",
        "| target | asyncjobs | reference | ratio | met |",
        "|---|---:|---:|---:|---|",
    ]
    ran = {w for _, w in cells}
    for text, workload, aj, peers, factor in TARGETS:
        if workload not in ran:  # a run of other workloads (--workloads)
            continue
        mine = cells.get((aj, workload), Cell()).median("throughput")
        theirs = [(p, cells.get((p, workload), Cell()).median("throughput")) for p in peers]
        known = [(p, v) for p, v in theirs if v is not None]
        if mine is None or not known:
            lines.append(f"| {text} | - | - | - | not measured |")
            continue
        best, value = max(known, key=lambda pv: pv[1])
        ratio = mine / value
        if workload == "web":  # per repetition, as the web table does
            paired = paired_ratio(cells[(aj, workload)], cells[(best, workload)])
            ratio = paired[0] if paired else ratio
        met = "yes" if ratio >= factor else "**no**"
        unit = "req/s" if workload == "web" else "jobs/s"
        lines.append(
            f"| {text} | {fmt_num(mine)} {unit} | {best}: {fmt_num(value)} {unit} "
            f"| {ratio:.2f}x{' per repetition' if workload == 'web' else ''} (need {factor:g}x) "
            f"| {met} |"
        )
    for aj, ceilings in P99_TARGETS.items():
        for workload, ceiling in ceilings.items():
            if workload not in ran:
                continue
            what = "start latency" if workload == "latency" else "delayed precision"
            p99 = cells.get((aj, workload), Cell()).median("p99_ms")
            if p99 is None:
                lines.append(f"| {aj} {what} p99 <= {ceiling:g} ms | - | - | - | not measured |")
                continue
            met = "yes" if p99 <= ceiling else "**no**"
            lines.append(
                f"| {aj} {what} p99 <= {ceiling:g} ms | {fmt_num(p99)} ms | {ceiling:g} ms | | {met} |"
            )
    return [*lines, ""]


def machine_section(cells: Cells, redis_version: str | None) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        mem = "?"
    versions: dict[str, dict[str, str]] = {}
    for (name, _), cell in sorted(cells.items()):
        for run in cell.runs:
            versions.setdefault(name, {}).update(run.get("versions") or {})
    lines = [
        "## Machine",
        "",
        f"- CPU: {cpu}; {os.cpu_count()} cores; memory {mem}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()} ({sys.executable}) for asyncjobs and the limits; "
        "each peer in its own virtualenv (`benchmarks/.envs/`) on the same Python",
        f"- SQLite {sqlite3.sqlite_version}; redis-server {redis_version or '(not used)'} on loopback, "
        "AOF on with `appendfsync everysec`, flushed before every run",
        "- The machine is shared: absolute numbers move with its load; the ratios, measured in one run "
        "with interleaved repetitions, are the result.",
        "",
        "## Versions",
        "",
        "| system | versions |",
        "|---|---|",
    ]
    for name, v in sorted(versions.items()):
        lines.append(f"| {name} | {', '.join(f'{k} {v[k]}' for k in sorted(v))} |")
    return [*lines, ""]


def render(
    *,
    systems: Sequence[System],
    workloads: Sequence[str],
    cells: Cells,
    settings: Settings,
    redis_version: str | None,
    revision: str,
    command: str,
    duration: float,
    quick: bool,
    updates: Sequence[dict[str, Any]] = (),
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# asyncjobs benchmark results",
        "",
        f"Generated by `{command}` on {stamp}; the run took {duration / 60:.1f} min."
        + (" **Quick mode: for development, not for comparison.**" if quick else ""),
        *[
            f"Re-measured later with `{u['command']}` ({u['minutes']} min): {', '.join(u['cells'])}."
            for u in updates
        ],
        "Do not edit by hand: rerun the command (see README.md).",
        "",
        f"asyncjobs: {revision}.",
        "",
        f"N = {settings.n:,} no-op jobs, concurrency {settings.concurrency}. "
        f"Each (system, workload) ran {settings.repeat} time(s) (memory with jobs queued: "
        f"{settings.rss_repeat}), each in a fresh process. Start latency: {settings.latency_n} jobs; "
        f"delayed precision: {settings.delayed_n} jobs; RSS with {settings.rss_n:,} jobs queued.",
        "",
        *machine_section(cells, redis_version),
        "## Results",
        "",
        *targets_table(cells),
    ]
    for workload in workloads:
        lines += workload_table(workload, systems, cells, settings)
    lines += extras_table(cells, settings)
    lines += web_table(cells, settings)
    return "\n".join(lines).rstrip() + "\n"
