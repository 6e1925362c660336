"""Every exception asyncjobs raises, in one hierarchy rooted at :class:`AsyncJobsError`.

Errors caused by a bad argument also derive from :class:`ValueError` or
:class:`TypeError`, so callers can catch them the way Python users expect.
"""

from __future__ import annotations

__all__ = [
    "AsyncJobsError",
    "BackendError",
    "ConfigurationError",
    "DuplicateJobError",
    "InvalidScheduleError",
    "JobArgumentsError",
    "JobCancelled",
    "JobDead",
    "JobFailed",
    "JobNotFound",
    "JobStateError",
    "JobTimeout",
    "LeaseLost",
    "NotRunningError",
    "PayloadTooLarge",
    "ScheduleNotFound",
    "SchemaVersionError",
    "SerializationError",
    "UnknownJobError",
    "UnknownQueueError",
    "InvalidOptionError",
]


class AsyncJobsError(Exception):
    """Base class of every exception raised by asyncjobs."""


class ConfigurationError(AsyncJobsError, ValueError):
    """The runtime or a backend was configured with values that cannot work."""


class UnknownQueueError(AsyncJobsError, ValueError):
    """A job or schedule names a queue the runtime was not configured with."""


class UnknownJobError(AsyncJobsError, LookupError):
    """A job name is not registered with the runtime."""


class InvalidOptionError(AsyncJobsError, ValueError):
    """An enqueue option (delay, ``at``, ``max_attempts``, timeout, ...) is invalid."""


class JobArgumentsError(AsyncJobsError, TypeError):
    """The arguments given to ``enqueue`` do not bind to the handler's signature."""


class SerializationError(AsyncJobsError, TypeError):
    """A payload or result cannot be encoded or decoded by the codec."""


class PayloadTooLarge(AsyncJobsError, ValueError):
    """The encoded arguments are larger than the runtime's ``max_payload_bytes``."""


class InvalidScheduleError(AsyncJobsError, ValueError):
    """A cron expression, interval, or time zone is malformed or can never fire."""


class NotRunningError(AsyncJobsError, RuntimeError):
    """An operation needs a started runtime (``async with runtime``) or a bound registry."""


class JobNotFound(AsyncJobsError, LookupError):
    """No job with the given id exists in the store (it may have been pruned)."""


class LeaseLost(AsyncJobsError):
    """A worker reported on a job whose lease it no longer holds.

    The runtime never lets this escape: when a heartbeat or an outcome
    carries a lease token that is not the job's current one (another worker
    took the job over after the lease expired), it logs a warning and
    publishes a :class:`~asyncjobs.JobLeaseLost` event. Tooling that drives a
    backend directly may raise it for the same condition.
    """


class BackendError(AsyncJobsError):
    """The store failed or is unusable (connection, permissions, corruption)."""


class SchemaVersionError(BackendError):
    """The store was written by a newer version of asyncjobs than this one."""


class ScheduleNotFound(AsyncJobsError, LookupError):
    """No schedule with the given name exists in the store."""


class JobStateError(AsyncJobsError, ValueError):
    """The job's state does not allow the operation (e.g. retrying a job that is not dead)."""


class DuplicateJobError(AsyncJobsError):
    """An enqueue with ``on_conflict="raise"`` met a job holding its ``key``.

    Nothing was stored (for ``enqueue_many``: none of the calls).

    :ivar job_id: the id of the job that holds the key.
    :ivar key: the key.
    """

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(f"job {job_id} already holds the key {key!r}")
        self.key = key
        self.job_id = job_id

    def __reduce__(self) -> tuple[type[DuplicateJobError], tuple[str, str]]:
        return (type(self), (self.key, self.job_id))


class JobTimeout(AsyncJobsError, TimeoutError):
    """``handle.result(timeout=)`` or ``handle.wait(timeout=)`` ran out of time.

    (An attempt that runs past the job's own ``timeout`` fails with a
    ``TimeoutError`` recorded as the job's error, then retries or goes dead.)
    """


class JobFailed(AsyncJobsError):
    """The job ended without a result: see :attr:`error_type` and :attr:`error_message`.

    Raised by :meth:`JobHandle.result` when the job went dead (its attempts ran
    out, or the handler raised :class:`~asyncjobs.Permanent`).
    """

    def __init__(
        self, job_id: str, error_type: str | None, error_message: str | None, traceback: str | None
    ) -> None:
        super().__init__(f"job {job_id} failed: {error_type}: {error_message}")
        self.job_id = job_id
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class JobDead(JobFailed):
    """The job is dead: every attempt failed or it failed permanently."""


class JobCancelled(AsyncJobsError):
    """The job was cancelled before it produced a result."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id
