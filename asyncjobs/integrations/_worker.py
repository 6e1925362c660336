"""What ``asyncjobs worker --metrics ... --log-format ...`` runs around the runtime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from .logs import log_events

if TYPE_CHECKING:
    from .._runtime import JobRuntime

__all__ = ["observe_worker"]


@asynccontextmanager
async def observe_worker(
    runtime: JobRuntime, *, metrics: str | None, log_format: str
) -> AsyncIterator[None]:
    """Serve metrics at *metrics* (``HOST:PORT``) and log job state changes, around the block.

    Entered before the runtime starts, so a metrics address that cannot be
    bound stops the worker before it claims a job. Job records are logged at
    INFO in the JSON format; in the text format at DEBUG (shown by
    ``--log-level DEBUG``), retries and dead jobs at WARNING and ERROR either way.
    """
    async with AsyncExitStack() as stack:
        if metrics is not None:
            from .prometheus import serve

            await stack.enter_async_context(serve(runtime, metrics))
        level = logging.INFO if log_format == "json" else logging.DEBUG
        stack.enter_context(log_events(runtime, level=level))
        yield
