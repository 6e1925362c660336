"""A web app that enqueues jobs from request handlers and reports their status.

Run it with ``uvicorn examples.starlette_app:app`` (jobs are stored in
``$ASYNCJOBS_URL``, default ``sqlite:///example-jobs.db``), then::

    curl -X POST localhost:8000/reports -d '{"pages": 3}'
    curl localhost:8000/jobs/<id>
"""

from __future__ import annotations

import os

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asyncjobs import JobContext, JobRuntime


def create_app(backend_url: str | None = None) -> Starlette:
    """Build the app and its job runtime on *backend_url*."""
    runtime = JobRuntime(
        backend_url or os.environ.get("ASYNCJOBS_URL", "sqlite:///example-jobs.db"),
        queues={"reports": 2},
    )

    @runtime.job(queue="reports", max_attempts=3, timeout=60)
    async def build_report(ctx: JobContext, pages: int) -> dict[str, int]:
        for page in range(pages):
            await anyio.lowlevel.checkpoint()  # stands in for real work, page by page
            await ctx.progress((page + 1) / pages, f"page {page + 1} of {pages}")
        return {"pages": pages}

    async def create_report(request: Request) -> JSONResponse:
        body = await request.json()
        handle = await build_report.enqueue(pages=int(body.get("pages", 1)))
        return JSONResponse({"id": handle.id}, status_code=202)

    async def job_status(request: Request) -> JSONResponse:
        job = await runtime.get_job(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return JSONResponse(
            {
                "id": job.id,
                "state": job.state.value,
                "progress": job.progress,
                "result": None if job.result is None else runtime.codec.decode(job.result),
            }
        )

    return Starlette(
        routes=[
            Route("/reports", create_report, methods=["POST"]),
            Route("/jobs/{job_id}", job_status),
        ],
        lifespan=runtime.lifespan,
    )


app = create_app()
