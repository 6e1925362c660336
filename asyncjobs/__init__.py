"""asyncjobs: background jobs inside your async Python app.

Durable queues, per-queue concurrency limits, delays, cron schedules,
retries, dead jobs, progress and a live console, on memory, a SQLite file
or Redis, with no broker to run. Start with :class:`JobRuntime`.
"""

from __future__ import annotations

from ._admin import Admin
from ._clock import Clock, ManualClock, SystemClock
from ._context import JobContext, current_job
from ._events import (
    Event,
    EventStream,
    JobCompleted,
    JobDied,
    JobEnqueued,
    JobEvent,
    JobLeaseLost,
    JobProgress,
    JobReleased,
    JobRetrying,
    JobStarted,
    JobWasCancelled,
    OperatorAction,
    QueuePaused,
    QueueResumed,
    ScheduleChanged,
    ScheduleFired,
    WorkerJoined,
    WorkerLeft,
)
from ._exceptions import (
    AsyncJobsError,
    BackendError,
    ConfigurationError,
    DuplicateJobError,
    InvalidOptionError,
    InvalidScheduleError,
    JobArgumentsError,
    JobCancelled,
    JobDead,
    JobFailed,
    JobNotFound,
    JobStateError,
    JobTimeout,
    LeaseLost,
    NotRunningError,
    PayloadTooLarge,
    ScheduleNotFound,
    SchemaVersionError,
    SerializationError,
    UnknownJobError,
    UnknownQueueError,
)
from ._explain import Explanation
from ._handle import JobHandle
from ._misfire import MisfireDecision, misfire_fire_times
from ._models import (
    Attempt,
    ErrorInfo,
    Job,
    JobState,
    KeyScope,
    OnConflict,
    QueueStats,
    Schedule,
)
from ._operating import AuditEntry, Health, JobDetail, Percentiles, QueueOverview, WorkerInfo
from ._queue import Queue, RateLimit
from ._registry import JobCall, JobDefinition, JobFunction, JobOptions, JobRegistry
from ._resilience import StoreStatus
from ._retry import Backoff, ExponentialBackoff, FixedBackoff, Permanent, Retry
from ._runtime import JobRuntime
from ._schedules import ScheduleBook
from ._serialization import Codec, JSONCodec
from ._triggers import CronTrigger, IntervalTrigger

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "AsyncJobsError",
    "Attempt",
    "AuditEntry",
    "BackendError",
    "Backoff",
    "Clock",
    "Codec",
    "ConfigurationError",
    "CronTrigger",
    "DuplicateJobError",
    "ErrorInfo",
    "Event",
    "EventStream",
    "Explanation",
    "ExponentialBackoff",
    "FixedBackoff",
    "Health",
    "IntervalTrigger",
    "InvalidOptionError",
    "InvalidScheduleError",
    "JSONCodec",
    "Job",
    "JobArgumentsError",
    "JobCall",
    "JobCancelled",
    "JobCompleted",
    "JobContext",
    "JobDead",
    "JobDefinition",
    "JobDetail",
    "JobDied",
    "JobEnqueued",
    "JobEvent",
    "JobFailed",
    "JobFunction",
    "JobHandle",
    "JobLeaseLost",
    "JobNotFound",
    "JobOptions",
    "JobProgress",
    "JobRegistry",
    "JobReleased",
    "JobRetrying",
    "JobRuntime",
    "JobStarted",
    "JobState",
    "JobStateError",
    "JobTimeout",
    "JobWasCancelled",
    "KeyScope",
    "LeaseLost",
    "ManualClock",
    "MisfireDecision",
    "NotRunningError",
    "OnConflict",
    "OperatorAction",
    "PayloadTooLarge",
    "Percentiles",
    "Permanent",
    "Queue",
    "QueueOverview",
    "QueuePaused",
    "QueueResumed",
    "QueueStats",
    "RateLimit",
    "Retry",
    "Schedule",
    "ScheduleBook",
    "ScheduleChanged",
    "ScheduleFired",
    "ScheduleNotFound",
    "SchemaVersionError",
    "SerializationError",
    "StoreStatus",
    "SystemClock",
    "UnknownJobError",
    "UnknownQueueError",
    "WorkerInfo",
    "WorkerJoined",
    "WorkerLeft",
    "current_job",
    "misfire_fire_times",
]
