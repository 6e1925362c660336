"""Serving an app on a free loopback port with uvicorn, in the test's loop or in a thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp


def host_app(admin: ASGIApp, prefix: str = "/jobs") -> Starlette:
    """A host app with the admin app mounted under *prefix*, as a user would mount it."""
    return Starlette(routes=[Mount(prefix, app=admin)])


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve *app* with uvicorn on 127.0.0.1 (a free port) while the block runs; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1, access_log=False
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            server.force_exit = True


@contextmanager
def serve_in_thread(
    make: Callable[[], AbstractAsyncContextManager[Any]],
    build: Callable[[Any], ASGIApp],
) -> Iterator[tuple[str, Any, Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]]]:
    """Run ``async with make() as thing`` and serve ``build(thing)`` in a thread of its own.

    Yields the URL, the thing, and ``call(fn)`` which runs an async function in
    the server's loop and returns its result (for tests whose own calls block).
    """
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        async with make() as thing, serve(build(thing)) as url:
            stop = anyio.Event()
            state.update(url=url, thing=thing, stop=stop, token=anyio.lowlevel.current_token())
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:  # surfaced to the test below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in state:
        raise RuntimeError(f"the test server did not start: {state.get('error')!r}")

    def call(fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return anyio.from_thread.run(fn, token=state["token"])

    try:
        yield state["url"], state["thing"], call
    finally:
        anyio.from_thread.run_sync(state["stop"].set, token=state["token"])
        thread.join(15)
