"""The ``web`` workload: requests/s of a Starlette app that enqueues one job per request.

Starts ``web_app.py --store STORE`` (uvicorn, one process, the jobs running in
it too) on a free loopback port, waits until it answers, drives ``POST /jobs``
with ``wrk`` (one thread, ``--connections`` connections, a short warm-up run
first, then ``--seconds`` measured), reads ``GET /count``, and stops the
server with SIGTERM (uvicorn's graceful shutdown, which leaves the runtime).
``--store none`` is the same app without the enqueue: the reference rate;
``--role enqueue`` gives the app a runtime that never runs jobs.

Reports requests/s (``throughput``) and wrk's latency p50/p99/max per
request, the non-2xx responses and socket errors, and how many of the jobs
enqueued during the whole run had run when it ended. Needs ``wrk`` on PATH
(``apt-get install wrk``). Prints one line ``BENCH_RESULT {json}``::

    python benchmarks/systems/asyncjobs_web.py --store sqlite --seconds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import describe, emit, redis_command, version_of
from web_app import STORES

HERE = Path(__file__).resolve().parent

# wrk's own summary in one parseable line: latencies in microseconds.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "{}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_WRK %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", choices=STORES, required=True)
    p.add_argument("--web-seconds", "--seconds", type=float, default=10.0, dest="seconds")
    p.add_argument("--web-connections", "--connections", type=int, default=50, dest="connections")
    p.add_argument("--n", type=int, default=0, help="unused (the runner passes it to every extra)")
    p.add_argument("--concurrency", type=int, default=10, help="the queue's limit")
    p.add_argument("--role", choices=("all", "enqueue"), default="all", help="the app's runtime")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    p.add_argument("--workdir", default=".")
    p.add_argument("--timeout", type=float, default=600.0)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        data: dict[str, Any] = json.loads(reply.read())
        return data


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get_json(base + "/count")
            return
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"the app exited with {server.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the app did not answer within {timeout:.0f}s") from None
            time.sleep(0.05)


def run_wrk(wrk: str, script: Path, url: str, connections: int, seconds: float) -> dict[str, Any]:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_WRK "):
            requests, duration_us, p50, p99, mx, status, sock = map(int, line.split()[1:])
            return {
                "requests": requests,
                "elapsed_s": duration_us / 1e6,
                "throughput": requests / (duration_us / 1e6),
                "p50_ms": p50 / 1000,
                "p99_ms": p99 / 1000,
                "max_ms": mx / 1000,
                "non_2xx": status,
                "socket_errors": sock,
            }
    raise RuntimeError(f"wrk exited {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    if args.store == "redis" and not args.redis_url:
        raise RuntimeError("give --redis-url for --store redis")
    if args.store == "redis":
        redis_command(args.redis_url, "FLUSHALL")  # as every Redis script does
    os.makedirs(args.workdir, exist_ok=True)
    script = Path(args.workdir) / "wrk-post.lua"
    script.write_text(WRK_SCRIPT)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(HERE / "web_app.py"), "--store", args.store, "--port", str(port)]
    cmd += ["--concurrency", str(args.concurrency), "--workdir", args.workdir, "--role", args.role]
    if args.redis_url:
        cmd += ["--redis-url", args.redis_url]
    server = subprocess.Popen(cmd)
    try:
        wait_ready(base, server, 30)
        run_wrk(wrk, script, base + "/jobs", args.connections, 1)  # warm-up, not measured
        out = run_wrk(wrk, script, base + "/jobs", args.connections, args.seconds)
        counts = get_json(base + "/count")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    out.update(jobs_enqueued=counts["enqueued"], jobs_ran=counts["ran"])
    out["server_exit"] = server.returncode
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    name = "starlette" if args.store == "none" else f"asyncjobs-{args.store}"
    if args.role == "enqueue" and args.store != "none":
        name += " (role enqueue)"
    deps = ["starlette", "uvicorn", "h11", "httptools", "uvloop"]
    if args.store != "none":
        deps += [
            "asyncjobs",
            "anyio",
            *{"sqlite": ["aiosqlite"], "redis": ["redis"]}.get(args.store, []),
        ]
    versions = {k: v for k, v in version_of(*deps).items() if v != "?"}
    versions["python"] = sys.version.split()[0]
    result: dict[str, Any] = {
        "system": name,
        "workload": "web",
        "connections": args.connections,
        "seconds": args.seconds,
        "versions": versions,
    }
    try:
        result.update(measure(args))
        result["ok"] = True
    except Exception as exc:  # one result line either way, as the other scripts do
        result.update(ok=False, error=describe(exc))
    emit(result)


if __name__ == "__main__":
    main()
