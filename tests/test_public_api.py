"""The public surface: ``asyncjobs.__all__`` is pinned, documented, and light to import."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import asyncjobs

#: Adding or removing a public name is a decision: update this list with it.
PUBLIC_NAMES = [
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


def test_all_is_pinned() -> None:
    assert sorted(asyncjobs.__all__) == PUBLIC_NAMES
    assert len(set(asyncjobs.__all__)) == len(asyncjobs.__all__), "a name is listed twice"


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_exists_and_is_documented(name: str) -> None:
    value = getattr(asyncjobs, name)
    doc = inspect.getdoc(value)
    assert doc, f"asyncjobs.{name} has no docstring"
    # Not the docstring inherited from a builtin base such as Exception or Enum.
    assert doc != inspect.getdoc(object), f"asyncjobs.{name} has no docstring of its own"


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_lives_in_asyncjobs(name: str) -> None:
    module = getattr(getattr(asyncjobs, name), "__module__", "")
    assert module.startswith("asyncjobs"), f"asyncjobs.{name} comes from {module}"


def test_every_exception_derives_from_asyncjobs_error() -> None:
    for name in PUBLIC_NAMES:
        value = getattr(asyncjobs, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, asyncjobs.AsyncJobsError), name


def test_import_asyncjobs_loads_no_heavy_optional_package() -> None:
    code = (
        "import json, sys\n"
        "import asyncjobs, asyncjobs.backends, asyncjobs.testing, asyncjobs.lifespan\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(result.stdout))
    heavy = {"rich", "aiosqlite", "redis", "asyncpg"}
    assert not {name for name in loaded if name.split(".")[0] in heavy}


def test_version_is_a_string() -> None:
    assert isinstance(asyncjobs.__version__, str)
    assert asyncjobs.__version__.count(".") >= 2
