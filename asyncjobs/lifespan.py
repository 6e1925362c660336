"""Run a :class:`~asyncjobs.JobRuntime` for the lifetime of an ASGI app.

``JobRuntime.lifespan`` is enough for most apps::

    app = Starlette(routes=..., lifespan=runtime.lifespan)

When the app has a lifespan of its own, :func:`combine` runs both: the
runtime starts first and stops last, so the app's own start-up and shutdown
code can enqueue jobs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._runtime import JobRuntime

__all__ = ["combine"]

AppT = TypeVar("AppT")
AppLifespan = Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def combine(
    runtime: JobRuntime, app_lifespan: AppLifespan[AppT]
) -> Callable[[AppT], AbstractAsyncContextManager[dict[str, Any]]]:
    """Wrap the app's own lifespan so the runtime runs around it.

    The state the app's lifespan yields is kept, with the runtime added as
    ``"asyncjobs"`` (``request.state.asyncjobs`` in Starlette). Unless the
    runtime was given ``state=``, handlers read that same state as
    ``ctx.state`` (a dict), from when the app's lifespan has yielded it.

    :param runtime: the runtime to start before the app and stop after it.
    :param app_lifespan: the app's lifespan function, as given to ``lifespan=``.
    :returns: a lifespan function to give to the framework instead.
    """

    @asynccontextmanager
    async def lifespan(app: AppT) -> AsyncIterator[dict[str, Any]]:
        async with runtime, app_lifespan(app) as state:
            shared = {**(state or {}), "asyncjobs": runtime}
            if runtime.state is None:
                runtime.state = shared
            yield shared

    return lifespan
