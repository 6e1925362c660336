"""Fixtures of the web tests: a runtime with a few jobs, served by uvicorn behind the admin app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import httpx
import jsonschema
import pytest

from asyncjobs import JobContext, JobRuntime
from asyncjobs.web import Identity, admin_app, bearer_tokens, openapi_document
from tests.conftest import RuntimeFactory
from tests.web.server import host_app, serve

ADMIN_TOKEN = "admin-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789"
PREFIX = "/jobs"
DOC = openapi_document()


def tokens() -> Any:
    return bearer_tokens(
        {ADMIN_TOKEN: Identity("alice", "admin"), VIEWER_TOKEN: Identity("victor", "viewer")}
    )


def define_jobs(runtime: JobRuntime, gate: anyio.Event | None = None) -> None:
    """The jobs the web tests enqueue: add, fail (always), report (progress), wait."""

    @runtime.job(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @runtime.job(name="fail", max_attempts=1)
    async def fail(message: str) -> None:
        raise ValueError(message)

    @runtime.job(name="report")
    async def report(ctx: JobContext, steps: int) -> str:
        for step in range(1, steps + 1):
            await ctx.progress(step / steps, f"step {step}")
        return "done"

    @runtime.job(name="secret")
    async def secret(password: str) -> str:
        return password


def conforms(response: httpx.Response, path: str, method: str) -> None:
    """Check *response* against the OpenAPI document's schema for its status."""
    operation = DOC["paths"][path][method.lower()]
    entry = (
        operation["responses"].get(str(response.status_code)) or operation["responses"]["default"]
    )
    if "$ref" in entry:
        entry = DOC["components"]["responses"][entry["$ref"].rsplit("/", 1)[1]]
    content = entry.get("content")
    if content is None:
        assert not response.content, response.text
        return
    [(media_type, body)] = content.items()
    assert response.headers["content-type"].startswith(media_type), response.headers
    if media_type != "application/json":
        return
    schema = {**body["schema"], "components": DOC["components"]}
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(response.json())


@attrs.define
class Web:
    """A served admin app: its URL, the runtime, and clients for each identity."""

    url: str
    runtime: JobRuntime
    admin: httpx.AsyncClient
    viewer: httpx.AsyncClient
    anonymous: httpx.AsyncClient

    async def call(
        self, method: str, path: str, *, client: httpx.AsyncClient | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Call the API and check the answer against the document (path with {params})."""
        concrete = path.format(**kwargs.pop("path_params", {}))
        response = await (client or self.admin).request(method, concrete, **kwargs)
        conforms(response, path, method)
        return response

    async def job_count(self) -> int:
        return sum(sum(s.counts.values()) for s in await self.runtime.queue_stats())


#: Put on a test module: its ``make_runtime`` builds runtimes on SQLite and on Redis only.
ON_SERVED_STORES = pytest.mark.parametrize("make_runtime", ["sqlite", "redis"], indirect=True)


async def open_web(runtime: JobRuntime, **options: Any) -> AsyncIterator[Web]:
    options.setdefault("auth", tokens())
    async with runtime, serve(host_app(admin_app(runtime, **options), PREFIX)) as url:
        base = url + PREFIX

        def client(token: str | None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.AsyncClient(base_url=base, headers=headers, timeout=20)

        async with (
            client(ADMIN_TOKEN) as admin,
            client(VIEWER_TOKEN) as viewer,
            client(None) as anon,
        ):
            yield Web(base, runtime, admin, viewer, anon)


@pytest.fixture
async def web(make_runtime: RuntimeFactory) -> AsyncIterator[Web]:
    runtime = make_runtime()
    define_jobs(runtime)
    async for served in open_web(runtime, hide_arguments={"secret"}):
        yield served
