"""asyncjobs: background jobs inside your async Python app."""

from __future__ import annotations

from ._clock import Clock, ManualClock, SystemClock
from ._exceptions import (
    AsyncJobsError,
    BackendError,
    ConfigurationError,
    InvalidOptionError,
    InvalidScheduleError,
    JobArgumentsError,
    JobCancelled,
    JobDead,
    JobFailed,
    JobNotFound,
    JobTimeout,
    LeaseLost,
    NotRunningError,
    PayloadTooLarge,
    SchemaVersionError,
    SerializationError,
    UnknownJobError,
    UnknownQueueError,
)
from ._models import ErrorInfo, Job, JobState, QueueStats, Schedule

__all__ = [
    "AsyncJobsError",
    "BackendError",
    "Clock",
    "ConfigurationError",
    "ErrorInfo",
    "InvalidOptionError",
    "InvalidScheduleError",
    "Job",
    "JobArgumentsError",
    "JobCancelled",
    "JobDead",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "LeaseLost",
    "ManualClock",
    "NotRunningError",
    "PayloadTooLarge",
    "QueueStats",
    "Schedule",
    "SchemaVersionError",
    "SerializationError",
    "SystemClock",
    "UnknownJobError",
    "UnknownQueueError",
]
