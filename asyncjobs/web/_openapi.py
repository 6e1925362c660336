"""The shapes of the JSON API, as OpenAPI 3.1 schemas, and the document built from the routes.

The paths come from the route table in :mod:`asyncjobs.web._api`, so a route
cannot exist without being documented; the tests check every response
against this document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._explain import REASONS
from .._models import JobState

__all__ = ["SCHEMAS", "document"]

STATES = [state.value for state in JobState]


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], *, required: Sequence[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
    }


_TAGS = {"type": "object", "additionalProperties": {"type": "string"}}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TIME = _nullable("number")

_JOB_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string"},
    "name": {"type": "string"},
    "queue": {"type": "string"},
    "state": {"type": "string", "enum": STATES},
    "priority": {"type": "integer"},
    "attempts": {"type": "integer", "minimum": 0},
    "max_attempts": {"type": "integer"},
    "timeout": _nullable("number"),
    "key": _nullable("string"),
    "waits_for": _nullable("string"),
    "partition": _nullable("string"),
    "schedule": _nullable("string"),
    "tags": _TAGS,
    "due_at": {"type": "number"},
    "enqueued_at": {"type": "number"},
    "started_at": _TIME,
    "finished_at": _TIME,
    "fire_at": _TIME,
    "lease_expires_at": _TIME,
    "worker_id": _nullable("string"),
    "progress": _nullable("number"),
    "progress_message": _nullable("string"),
    "cancel_requested": {"type": "boolean"},
    "error": {"oneOf": [{"type": "null"}, _ref("ErrorInfo")]},
    "arguments_hidden": {"type": "boolean"},
    "args": _nullable("array"),
    "kwargs": _nullable("object"),
    "result": {"description": "the decoded return value (null when hidden or none)"},
    "payload_bytes": {"type": "integer", "minimum": 0},
}
_JOB_REQUIRED = [name for name in _JOB_PROPERTIES if name != "result"]

_PERCENTILES = {
    "oneOf": [
        {"type": "null"},
        _object(
            {
                "p50": {"type": "number"},
                "p95": {"type": "number"},
                "p99": {"type": "number"},
                "sample": {"type": "integer"},
            }
        ),
    ]
}

_FILTER_PROPERTIES: dict[str, Any] = {
    "queue": {"type": "string", "minLength": 1},
    "state": {"type": "string", "enum": STATES},
    "name": {"type": "string", "minLength": 1},
    "partition": {"type": "string", "minLength": 1},
    "tags": {**_TAGS, "minProperties": 1},
}
#: At least one filter (a bulk cancel or delete of everything is refused).
_SOME_FILTER = [{"required": [name]} for name in _FILTER_PROPERTIES]
#: Ten years: the longest delay or timeout accepted.
_LONGEST = 315_360_000


def _bulk(states: list[str], *, filtered: bool, what: str) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "description": what,
        "properties": {
            **_FILTER_PROPERTIES,
            "state": {"type": "string", "enum": states},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10000,
                "description": "act on at most this many matching jobs (default 1000)",
            },
        },
    }
    if filtered:
        schema["anyOf"] = _SOME_FILTER
    return schema


SCHEMAS: dict[str, Any] = {
    "Error": {
        **_object(
            {
                "error": {"type": "string", "description": "a short code, e.g. unknown_job"},
                "message": {"type": "string", "description": "what went wrong and what to fix"},
                "field": {"type": "string", "description": "the input at fault, when one is"},
            },
            required=["error", "message"],
        ),
    },
    "ErrorInfo": _object(
        {
            "type": {"type": "string"},
            "message": {"type": "string"},
            "traceback": _nullable("string"),
        }
    ),
    "Job": {"type": "object", "properties": _JOB_PROPERTIES, "required": _JOB_REQUIRED},
    "Attempt": _object(
        {
            "number": {"type": "integer"},
            "worker_id": _nullable("string"),
            "started_at": _TIME,
            "finished_at": {"type": "number"},
            "outcome": {"type": "string"},
            "error_type": _nullable("string"),
            "error_message": _nullable("string"),
        }
    ),
    "JobDetail": {
        "type": "object",
        "properties": {
            **_JOB_PROPERTIES,
            "history": {"type": "array", "items": _ref("Attempt")},
        },
        "required": [*_JOB_REQUIRED, "history"],
    },
    "JobPage": _object(
        {
            "jobs": {"type": "array", "items": _ref("Job")},
            "next": {
                **_nullable("string"),
                "description": "pass as ?after= for the next page; null on the last page",
            },
        }
    ),
    "Enqueued": _object({"job": _ref("Job"), "deduplicated": {"type": "boolean"}}),
    "EnqueueRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "description": "a registered job name"},
            "args": {"type": "array", "description": "positional arguments"},
            "kwargs": {"type": "object", "description": "keyword arguments"},
            "options": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "delay": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": _LONGEST,
                        "description": "seconds",
                    },
                    "at": {
                        "type": "string",
                        "format": "date-time",
                        "description": "an RFC 3339 time with an offset",
                    },
                    "priority": {"type": "integer"},
                    "key": {"type": "string", "minLength": 1},
                    "partition": {"type": "string", "minLength": 1},
                    "tags": _TAGS,
                    "queue": {"type": "string", "minLength": 1},
                    "max_attempts": {"type": "integer", "minimum": 1},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": _LONGEST},
                },
            },
        },
    },
    "Explanation": _object(
        {
            "job_id": {"type": "string"},
            "reason": {"type": "string", "enum": list(REASONS)},
            "message": {"type": "string"},
            "until": _TIME,
            "details": _STR_MAP,
        }
    ),
    "BulkRetry": _bulk(["dead"], filtered=False, what="dead jobs to retry (all when empty)"),
    "BulkCancel": _bulk(["queued", "running"], filtered=True, what="jobs to cancel"),
    "BulkDelete": _bulk(
        ["queued", "complete", "dead", "cancelled"], filtered=True, what="jobs to delete"
    ),
    "PurgeRequest": {
        "type": "object",
        "additionalProperties": False,
        "anyOf": [*_SOME_FILTER, {"required": ["older_than"]}],
        "properties": {
            **_FILTER_PROPERTIES,
            "state": {"type": "string", "enum": [s for s in STATES if s != "running"]},
            "older_than": {
                "type": "number",
                "minimum": 0,
                "maximum": _LONGEST * 10,
                "description": "only jobs finished more than this many seconds ago",
            },
        },
    },
    "BulkResult": _object(
        {
            "action": {"type": "string", "enum": ["retry", "cancel", "delete"]},
            "matched": {"type": "integer", "minimum": 0},
            "succeeded": {"type": "array", "items": {"type": "string"}},
            "failed": {
                "type": "array",
                "items": _object({"id": {"type": "string"}, "message": {"type": "string"}}),
            },
        }
    ),
    "Purged": _object({"deleted": {"type": "integer", "minimum": 0}}),
    "Queue": _object(
        {
            "queue": {"type": "string"},
            "counts": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "propertyNames": {"enum": STATES},
            },
            "waiting": {"type": "integer"},
            "delayed": {"type": "integer"},
            "running": {"type": "integer"},
            "claimed": {"type": "integer"},
            "paused": {"type": "boolean"},
            "held_by": _nullable("string"),
            "completed_per_minute": {"type": "number"},
            "failed_per_minute": {"type": "number"},
            "failure_rate": _nullable("number"),
            "wait": _PERCENTILES,
            "run": _PERCENTILES,
            "oldest_waiting": _nullable("number"),
            "slots": {"type": "integer", "description": "live workers' concurrency, added up"},
            "concurrency": {
                **_nullable("integer"),
                "description": "this app's runtime's limit for the queue (null without one)",
            },
            "limits": {**_STR_MAP, "description": "cluster-wide limits the workers enforce"},
        }
    ),
    "QueueList": _object({"queues": {"type": "array", "items": _ref("Queue")}}),
    "QueueState": _object({"queue": {"type": "string"}, "paused": {"type": "boolean"}}),
    "Schedule": _object(
        {
            "name": {"type": "string"},
            "job_name": {"type": "string"},
            "queue": {"type": "string"},
            "trigger": {"type": "object"},
            "next_fire_at": _TIME,
            "next_fire_times": {"type": "array", "items": {"type": "number"}},
            "last_fire_at": _TIME,
            "misfire": {"type": "string"},
            "grace": {"type": "number"},
            "overlap": {"type": "boolean"},
            "paused": {"type": "boolean"},
            "priority": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "timeout": _nullable("number"),
            "recent_runs": {"type": "array", "items": _ref("Job")},
        }
    ),
    "ScheduleList": _object({"schedules": {"type": "array", "items": _ref("Schedule")}}),
    "Worker": _object(
        {
            "id": {"type": "string"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "role": {"type": "string"},
            "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
            "pool": {"type": "integer"},
            "limits": {"type": "object", "additionalProperties": _STR_MAP},
            "jobs": {"type": "array", "items": {"type": "string"}},
            "held": _STR_MAP,
            "running": {"type": "integer"},
            "started_at": {"type": "number"},
            "last_seen": {"type": "number"},
            "stale_after": {"type": "number"},
        }
    ),
    "WorkerList": _object({"workers": {"type": "array", "items": _ref("Worker")}}),
    "AuditEntry": _object(
        {
            "at": {"type": "number"},
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "target": {"type": "string"},
            "outcome": {"type": "string"},
        }
    ),
    "AuditPage": _object(
        {
            "entries": {"type": "array", "items": _ref("AuditEntry")},
            "next": {**_nullable("number"), "description": "pass as ?before= for older entries"},
        }
    ),
    "Health": _object(
        {
            "healthy": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        }
    ),
    "Me": _object(
        {"name": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "viewer"]}}
    ),
}


def document(paths: dict[str, Any], *, title: str, version: str) -> dict[str, Any]:
    """The whole OpenAPI document for *paths* (as built from the route table)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "The asyncjobs admin API. Every request needs credentials (a bearer "
                "token unless the app was given another check); actions need the "
                "admin role and are recorded in the audit trail. Times are seconds "
                "since the Unix epoch. Paths are relative to where the app is mounted."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {
                    "description": "an error: what went wrong and what to fix",
                    "content": {"application/json": {"schema": _ref("Error")}},
                }
            },
        },
        "security": [{"bearer": []}],
    }
