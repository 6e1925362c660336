"""The lifespan hook and the example web app, through a real ASGI server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from asyncjobs import JobRuntime
from asyncjobs.lifespan import combine

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Run *app* under uvicorn on a free loopback port, lifespan included."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def test_example_app_runs_jobs_through_a_real_server(tmp_path: Path) -> None:
    from examples.starlette_app import create_app

    app = create_app(f"sqlite:///{tmp_path / 'web.db'}")
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post("/reports", json={"pages": 4})
        assert response.status_code == 202
        job_id = response.json()["id"]
        with anyio.fail_after(10):
            while True:
                status = (await client.get(f"/jobs/{job_id}")).json()
                if status["state"] == "complete":
                    break
                await anyio.sleep(0.01)
        assert status == {
            "id": job_id,
            "state": "complete",
            "progress": 1.0,
            "result": {"pages": 4},
        }
        assert (await client.get("/jobs/nope")).status_code == 404


async def test_combine_runs_the_apps_own_lifespan_inside() -> None:
    runtime = JobRuntime()
    calls: list[str] = []

    @runtime.job()
    async def hello() -> str:
        return "hi"

    @asynccontextmanager
    async def app_lifespan(app: object) -> AsyncIterator[Mapping[str, Any]]:
        calls.append(f"start, runtime started={runtime.started}")
        handle = await hello.enqueue()
        yield {"greeting": await handle.result(timeout=10)}
        calls.append(f"stop, runtime started={runtime.started}")

    lifespan = combine(runtime, app_lifespan)
    async with lifespan(object()) as state:
        assert state == {"greeting": "hi", "asyncjobs": runtime}
    assert calls == ["start, runtime started=True", "stop, runtime started=True"]
    assert not runtime.started


async def test_runtime_lifespan_yields_the_runtime() -> None:
    runtime = JobRuntime()
    async with runtime.lifespan(object()) as state:
        assert state["asyncjobs"] is runtime
        assert runtime.started
    assert not runtime.started
