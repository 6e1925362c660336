"""The ``web`` workload's app: Starlette under uvicorn, one job enqueued per ``POST /jobs``.

One process: ``Starlette(lifespan=runtime.lifespan)`` runs the runtime
(role ``"all"``: the jobs run in this process too, beside the requests) and
every ``POST /jobs`` awaits ``noop.enqueue(i)`` and answers 202 with the job
id. ``--store none`` is the same app with the enqueue removed (the same
route, a counter instead of a job id, no runtime): the reference rate.
``--role enqueue`` runs the runtime as a web process that never runs jobs
(what the cost of running them beside the requests is, by difference).
``GET /count`` says how many jobs were enqueued and how many ran.

uvicorn runs with one worker, ``access_log=False`` and ``log_level="warning"``
(what a production deployment sets), and whatever HTTP parser and event loop
it picks by default (h11 and asyncio unless httptools/uvloop are installed).
``asyncjobs_web.py`` starts this script and drives it with ``wrk``::

    python benchmarks/systems/web_app.py --store sqlite --port 8000 --workdir /tmp
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

STORES = ("none", "memory", "sqlite", "redis")


def build_app(args: argparse.Namespace) -> Starlette:
    ids = itertools.count()
    counts = {"enqueued": 0, "ran": 0}

    async def count(request: Request) -> JSONResponse:
        return JSONResponse(counts)

    if args.store == "none":

        async def create_none(request: Request) -> JSONResponse:
            counts["enqueued"] += 1
            return JSONResponse({"id": str(next(ids))}, status_code=202)

        routes = [Route("/jobs", create_none, methods=["POST"]), Route("/count", count)]
        return Starlette(routes=routes)

    from asyncjobs import JobRuntime

    runtime = JobRuntime(
        backend=make_backend(args),
        queues={"default": args.concurrency},
        role=args.role,  # "all": the jobs run here too; "enqueue": a web process that only enqueues
    )

    @runtime.job(name="noop")
    async def noop(i: int) -> None:
        counts["ran"] += 1

    async def create(request: Request) -> JSONResponse:
        handle = await noop.enqueue(next(ids))
        counts["enqueued"] += 1
        return JSONResponse({"id": str(handle.id)}, status_code=202)

    routes = [Route("/jobs", create, methods=["POST"]), Route("/count", count)]
    return Starlette(routes=routes, lifespan=runtime.lifespan)


def make_backend(args: argparse.Namespace) -> Any:
    from _common import fresh_path

    if args.store == "memory":
        from asyncjobs.backends import MemoryBackend

        return MemoryBackend()
    if args.store == "sqlite":
        from asyncjobs.backends import SQLiteBackend

        return SQLiteBackend(fresh_path(args.workdir, "web.db"), synchronous="FULL")
    from asyncjobs.backends import RedisBackend

    return RedisBackend(args.redis_url)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", choices=STORES, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=10, help="the queue's limit")
    p.add_argument("--role", choices=("all", "enqueue"), default="all")
    p.add_argument("--redis-url", default="")
    p.add_argument("--workdir", default=".")
    args = p.parse_args()
    config = uvicorn.Config(
        build_app(args),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="auto" if args.store == "none" else "on",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
