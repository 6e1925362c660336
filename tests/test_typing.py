"""The enqueue API keeps handler parameter types (ParamSpec), checked by mypy --strict.

mypy runs over this file in CI with ``warn_unused_ignores``: each
``# type: ignore[...]`` below marks a call that MUST be a type error. If the
types stopped flowing through ``@runtime.job()``, the ignore would become
unused and the typing gate would fail. The test also runs the well-typed
calls for real.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import assert_type

import pytest

from asyncjobs import JobCall, JobContext, JobHandle, JobRuntime

pytestmark = pytest.mark.anyio


def make_runtime() -> tuple[JobRuntime, Callable[[], Awaitable[None]]]:
    runtime = JobRuntime()

    @runtime.job()
    async def send(to: str, subject: str) -> int:
        return len(to) + len(subject)

    @runtime.job()
    async def with_context(ctx: JobContext, report_id: int) -> str:
        return f"{ctx.attempt}:{report_id}"

    @runtime.job()
    def blocking(x: int) -> float:
        return x / 2

    async def well_typed() -> None:
        handle = await send.enqueue("a@example.com", subject="hi")
        assert_type(handle, JobHandle[int])
        assert_type(await handle.result(timeout=10), int)
        assert await handle.result(timeout=10) == 15

        context_handle = await with_context.enqueue(report_id=3)
        assert_type(context_handle, JobHandle[str])
        assert await context_handle.result(timeout=10) == "1:3"

        blocking_handle = await blocking.options(priority=1).enqueue(4)
        assert_type(blocking_handle, JobHandle[float])
        assert await blocking_handle.result(timeout=10) == 2.0

        call = send.call("b@example.com", "yo")
        assert_type(call, JobCall[int])
        handles = await runtime.enqueue_many([call])
        assert_type(handles, list[JobHandle[int]])

    async def ill_typed() -> None:
        # Never run: each line is a type error that mypy must report.
        await send.enqueue(1, subject="hi")  # type: ignore[arg-type]
        await send.enqueue("a@example.com")  # type: ignore[call-arg]
        await send.enqueue("a", "b", "c")  # type: ignore[call-arg]
        await with_context.enqueue(report_id="3")  # type: ignore[arg-type]
        await blocking.enqueue("4")  # type: ignore[arg-type]

    assert ill_typed is not None
    return runtime, well_typed


async def test_well_typed_calls_run() -> None:
    runtime, well_typed = make_runtime()
    async with runtime:
        await well_typed()
