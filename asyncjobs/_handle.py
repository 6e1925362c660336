"""JobHandle: what ``enqueue`` returns, to follow a job to its result."""

from __future__ import annotations

import typing
from typing import Any, Generic, TypeVar, cast

import anyio

from ._events import JobCompleted, JobDied, JobEvent, JobWasCancelled
from ._exceptions import InvalidOptionError, JobCancelled, JobDead, JobNotFound, JobTimeout
from ._models import FINISHED_STATES, Job, JobState

if typing.TYPE_CHECKING:
    from ._runtime import JobRuntime

__all__ = ["JobHandle"]

R = TypeVar("R")

# Polling the store is only the fallback for jobs finished by another process;
# jobs finished here wake the waiter through the event bus at once.
_POLL_START = 0.02
_POLL_MAX = 1.0


class JobHandle(Generic[R]):
    """A reference to one enqueued job.

    :ivar id: the job's id.
    :ivar job: the job as stored when it was enqueued.
    :ivar deduplicated: ``True`` when a dedup ``key`` matched an active job
        and this handle points at that job instead of a new one.
    """

    def __init__(self, runtime: JobRuntime, job: Job, *, deduplicated: bool = False) -> None:
        self._runtime = runtime
        self.id = job.id
        self.job = job
        self.deduplicated = deduplicated

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.job.name!r}>"

    async def refresh(self) -> Job:
        """Read the job from the store.

        A job that this process's worker deleted as it finished (a retention of
        0) is returned as it ended, while the process remembers it (its last
        1,000 such jobs).

        :raises JobNotFound: when it no longer exists (pruned after retention).
        """
        job = await self._runtime.get_job(self.id)
        if job is None:
            job = self._runtime._removed_here(self.id)
        if job is None:
            raise JobNotFound(
                f"job {self.id} is not in the store (pruned, removed as it finished by a "
                "retention of 0, or never stored)"
            )
        return job

    async def status(self) -> JobState:
        """Return the job's current state."""
        return (await self.refresh()).state

    async def cancel(self) -> Job:
        """Cancel the job (see :meth:`JobRuntime.cancel`)."""
        return await self._runtime.cancel(self.id)

    async def wait(self, timeout: float | None = None) -> Job:
        """Wait until the job is finished (complete, dead or cancelled) and return it.

        :param timeout: real seconds to wait; ``None`` waits as long as it takes.
        :raises JobTimeout: when the job is not finished in time.
        :raises InvalidOptionError: for a negative or NaN timeout.
        """
        if timeout is not None and not timeout >= 0:
            raise InvalidOptionError(f"timeout must be None or at least 0 seconds, got {timeout}")
        try:
            with anyio.fail_after(timeout):
                return await self._wait_finished()
        except TimeoutError:
            raise JobTimeout(f"job {self.id} did not finish within {timeout} s") from None

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job and return the handler's return value.

        The value comes back as the handler's return annotation says (a
        dataclass, a ``datetime``, ...; see typed payloads in ``docs/jobs.md``).

        :raises SerializationError: when the stored result no longer fits that annotation.
        :raises JobDead: when the job went dead (the error is attached).
        :raises JobCancelled: when it was cancelled.
        :raises JobTimeout: when it is not finished within *timeout* seconds.
        """
        job = await self.wait(timeout)
        if job.state is JobState.COMPLETE:
            return self._decoded_result(job)
        if job.state is JobState.CANCELLED:
            raise JobCancelled(job.id)
        error = job.error
        raise JobDead(
            job.id,
            None if error is None else error.type,
            None if error is None else error.message,
            None if error is None else error.traceback,
        )

    def _decoded_result(self, job: Job) -> R:
        """The stored result as the handler's return annotation says (plain JSON if none)."""
        if job.result is None:
            return cast(R, None)
        runtime = self._runtime
        definition = runtime._definitions.get(job.name)
        types = None if definition is None else definition.types
        if types is not None and types.result is not None:
            return cast(R, types.decode_result(runtime.codec, job.result))
        value: Any = runtime.codec.decode(job.result)
        return cast(R, value)

    async def _wait_finished(self) -> Job:
        poll = _POLL_START
        finals = (JobCompleted, JobDied, JobWasCancelled)
        with self._runtime.events.subscribe(
            *finals, where=lambda event: isinstance(event, JobEvent) and event.job_id == self.id
        ) as stream:
            while True:
                job = await self.refresh()
                if job.state in FINISHED_STATES:
                    return job
                with anyio.move_on_after(poll):
                    await stream.receive()
                poll = min(_POLL_MAX, poll * 2)
