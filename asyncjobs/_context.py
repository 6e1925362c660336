"""JobContext: what a running handler may know and do, and the current-job ContextVar."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

import attrs

from ._exceptions import InvalidOptionError, NotRunningError
from ._models import Job

__all__ = ["JobContext", "current_job"]

_current: ContextVar[JobContext] = ContextVar("asyncjobs_current_job")


@attrs.define(eq=False)
class JobContext:
    """Handed to a handler that has a parameter annotated ``JobContext``.

    Also reachable anywhere inside the job's task through :func:`current_job`.
    """

    job: Job
    _report_progress: Callable[[float, str | None], Awaitable[None]] = attrs.field(repr=False)
    _cancel_requested: bool = attrs.field(default=False, alias="cancel_requested")
    _state: Callable[[], object] = attrs.field(
        default=lambda: None, alias="state", repr=False, kw_only=True
    )

    @property
    def state(self) -> Any:
        """The application's resources: what ``JobRuntime(state=...)`` was given.

        A database pool, an HTTP client, settings: whatever the app shares with
        its handlers, without globals. Behind :func:`asyncjobs.lifespan.combine`
        it defaults to the state the app's own lifespan yielded. ``None`` when
        nothing was given.
        """
        return self._state()

    @property
    def job_id(self) -> str:
        """The job's id (the same as the enqueue handle's ``id``)."""
        return self.job.id

    @property
    def name(self) -> str:
        """The registered job name."""
        return self.job.name

    @property
    def queue(self) -> str:
        """The queue the job runs on."""
        return self.job.queue

    @property
    def fire_at(self) -> float | None:
        """The schedule tick this run is for, or None.

        The fire time of the tick that enqueued the job (the time of a manual
        ``schedules.trigger``), in seconds since the epoch; ``None`` for a job
        no schedule fired. Unlike ``job.due_at`` it stays the same when the job
        is retried or recovered after a crash.
        """
        return self.job.fire_at

    @property
    def attempt(self) -> int:
        """This attempt's number, starting at 1."""
        return self.job.attempts

    @property
    def tags(self) -> Mapping[str, str]:
        """The job's tags (``options(tags=...)``), e.g. a tenant or a correlation id."""
        return self.job.tags

    @property
    def max_attempts(self) -> int:
        """How many attempts the job may use in all."""
        return self.job.max_attempts

    @property
    def is_last_attempt(self) -> bool:
        """Whether a failure now makes the job dead."""
        return self.job.attempts >= self.job.max_attempts

    @property
    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel this job.

        The runtime cancels the handler's task anyway; a handler doing work
        in a thread can poll this to stop early.
        """
        return self._cancel_requested

    def request_cancel(self) -> None:
        """Mark the job as asked to cancel (used by the dispatcher)."""
        self._cancel_requested = True

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress, from 0.0 to 1.0, with an optional message.

        Stored with the job (visible from every process) and published as a
        :class:`~asyncjobs.JobProgress` event.

        :raises InvalidOptionError: when *fraction* is outside 0..1 or NaN.
        """
        if not isinstance(fraction, int | float) or math.isnan(fraction) or not 0 <= fraction <= 1:
            raise InvalidOptionError(f"progress must be a number from 0.0 to 1.0, got {fraction!r}")
        await self._report_progress(float(fraction), message)


def current_job() -> JobContext:
    """Return the context of the job whose handler is running in this task.

    :raises NotRunningError: outside a job handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise NotRunningError("current_job() was called outside a running job") from None


def set_current(context: JobContext) -> Token[JobContext]:
    """Make *context* current in this task; returns the token to reset it."""
    return _current.set(context)


def reset_current(token: Token[JobContext]) -> None:
    """Undo :func:`set_current` (a worker task runs many jobs in turn)."""
    _current.reset(token)
