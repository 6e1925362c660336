"""The JSON API: one route table, from which Starlette's routes and the OpenAPI paths are built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .._admin import Admin
from .._exceptions import AsyncJobsError
from .._models import Job, JobState
from ._openapi import SCHEMAS, STATES
from ._site import ApiError, Site, as_api_error, identity_of, json_body, query_value, tag_filters
from ._validate import parse_time

__all__ = ["ENDPOINTS", "Endpoint", "api_routes", "openapi_paths"]

Handler = Callable[[Site, Request], Awaitable[Response]]

_MAX_LIST = 1000
_BULK_DEFAULT = 1000


@attrs.frozen
class Endpoint:
    """One API route: how it is called, what it answers, and who may call it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    admin: bool = False
    parameters: tuple[dict[str, Any], ...] = ()
    body: str | None = None
    body_required: bool = False
    responses: tuple[tuple[int, str | None, str], ...] = ()


def _ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_LIMIT = {"type": "integer", "minimum": 1, "maximum": _MAX_LIST}
_JOB_FILTERS = (
    _query("queue", {"type": "string", "minLength": 1}, "only jobs of this queue"),
    _query("state", {"type": "string", "enum": STATES}, "only jobs in this state"),
    _query("name", {"type": "string", "minLength": 1}, "only jobs of this job name"),
    _query("schedule", {"type": "string", "minLength": 1}, "only jobs fired by this schedule"),
    _query("partition", {"type": "string", "minLength": 1}, "only jobs of this partition"),
    {
        "name": "tag",
        "in": "query",
        "required": False,
        "description": "KEY:VALUE; repeat for several (all must match)",
        "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:"}},
        "style": "form",
        "explode": True,
    },
    _query("since", {"type": "number"}, "enqueued at or after this time"),
    _query("until", {"type": "number"}, "enqueued before this time"),
    _query("limit", _LIMIT, f"at most this many (default 50, at most {_MAX_LIST})"),
    _query("after", {"type": "string", "minLength": 1}, "the cursor from the previous page"),
)


def _param_schema(endpoint_params: tuple[dict[str, Any], ...], name: str) -> dict[str, Any]:
    for param in endpoint_params:
        if param["name"] == name:
            schema: dict[str, Any] = param["schema"]
            return schema
    raise KeyError(name)  # pragma: no cover


def _q(request: Request, name: str, default: Any = None) -> Any:
    return query_value(request, name, _param_schema(_JOB_FILTERS, name), default)


# --------------------------------------------------------------------------- jobs


async def me(site: Site, request: Request) -> Response:
    identity = identity_of(request)
    return _ok({"name": identity.name, "role": identity.role})


async def list_jobs(site: Site, request: Request) -> Response:
    limit = _q(request, "limit", 50)
    jobs = await site.admin().list_jobs(
        queue=_q(request, "queue"),
        state=_q(request, "state"),
        name=_q(request, "name"),
        schedule=_q(request, "schedule"),
        partition=_q(request, "partition"),
        tags=tag_filters(request),
        enqueued_after=_q(request, "since"),
        enqueued_before=_q(request, "until"),
        limit=limit,
        after=_q(request, "after"),
    )
    return _ok(
        {
            "jobs": [site.encoder.job(job) for job in jobs],
            "next": jobs[-1].id if len(jobs) == limit and jobs else None,
        }
    )


_OPTION_NAMES = ("priority", "key", "partition", "tags", "queue", "max_attempts")


async def enqueue(site: Site, request: Request) -> Response:
    body = await json_body(request, SCHEMAS["EnqueueRequest"], optional=False)
    runtime = site.runtime
    if runtime is None:
        raise ApiError(
            409,
            "no_runtime",
            "this app serves a store without the app's jobs, so it cannot enqueue by name: "
            "mount admin_app(runtime, ...) in the app that defines the jobs",
        )
    admin = site.admin()
    given: dict[str, Any] = body.get("options", {})
    options: dict[str, Any] = {name: given[name] for name in _OPTION_NAMES if name in given}
    for name in ("priority", "max_attempts"):
        if name in options:
            options[name] = int(options[name])
    if "delay" in given:
        options["delay"] = timedelta(seconds=given["delay"])
    if "timeout" in given:
        options["timeout"] = timedelta(seconds=given["timeout"])
    if "at" in given:
        moment = parse_time(given["at"])
        assert moment is not None  # checked against the schema
        options["at"] = moment
    try:
        function = runtime.function(body["name"]).options(**options)
        handle = await function.enqueue(*body.get("args", []), **body.get("kwargs", {}))
    except AsyncJobsError as exc:
        error = as_api_error(exc)
        if error.code == "unknown_job":
            error.field = "name"
        raise error from None
    job = await admin.get_job(handle.id)
    identity = identity_of(request)
    outcome = "ok: deduplicated" if handle.deduplicated else "ok"
    # The Admin's own recorder: audit log, OperatorAction event and the store's trail.
    await admin._record(identity.name, "job.enqueue", handle.id, f"{outcome} ({body['name']})")
    if job is None:  # removed at once (retention 0 and a worker already finished it)
        raise ApiError(410, "gone", f"job {handle.id} was enqueued and is already gone")
    return _ok(
        {"job": site.encoder.job(job), "deduplicated": handle.deduplicated},
        200 if handle.deduplicated else 201,
    )


async def get_job(site: Site, request: Request) -> Response:
    detail = await site.admin().job(request.path_params["job_id"])
    return _ok(site.encoder.detail(detail.job, detail.attempts))


async def explain_job(site: Site, request: Request) -> Response:
    job_id = request.path_params["job_id"]
    explanation = await site.admin().explain(job_id)
    if explanation.reason == "not_found":
        raise ApiError(404, "job_not_found", explanation.message)
    return _ok(site.encoder.explanation(explanation))


async def retry_job(site: Site, request: Request) -> Response:
    job = await site.admin().retry(request.path_params["job_id"], actor=identity_of(request).name)
    return _ok(site.encoder.job(job))


async def cancel_job(site: Site, request: Request) -> Response:
    job = await site.admin().cancel(request.path_params["job_id"], actor=identity_of(request).name)
    return _ok(site.encoder.job(job))


async def delete_job(site: Site, request: Request) -> Response:
    await site.admin().delete(request.path_params["job_id"], actor=identity_of(request).name)
    return Response(status_code=204)


_BULK_STATES = {
    "retry": {JobState.DEAD},
    "cancel": {JobState.QUEUED, JobState.RUNNING},
    "delete": {JobState.QUEUED, JobState.COMPLETE, JobState.DEAD, JobState.CANCELLED},
}


async def _matching(
    admin: Admin, body: dict[str, Any], states: set[JobState], limit: int
) -> list[Job]:
    chosen = body.get("state")
    wanted = [JobState(chosen)] if chosen is not None else sorted(states)
    found: list[Job] = []
    for state in wanted:
        after: str | None = None
        while len(found) < limit:
            want = min(500, limit - len(found))
            page = await admin.list_jobs(
                queue=body.get("queue"),
                state=state,
                name=body.get("name"),
                partition=body.get("partition"),
                tags=body.get("tags") or None,
                limit=want,
                after=after,
            )
            found.extend(page)
            if len(page) < want:
                break
            after = page[-1].id
    return found[:limit]


def _bulk_handler(action: str, schema: str) -> Handler:
    async def bulk(site: Site, request: Request) -> Response:
        body = await json_body(request, SCHEMAS[schema], optional=True)
        admin = site.admin()
        actor = identity_of(request).name
        limit = int(body.get("limit", _BULK_DEFAULT))
        jobs = await _matching(admin, body, _BULK_STATES[action], limit)
        succeeded: list[str] = []
        failed: list[dict[str, str]] = []
        for job in jobs:
            try:
                if action == "retry":
                    await admin.retry(job.id, actor=actor)
                elif action == "cancel":
                    await admin.cancel(job.id, actor=actor)
                else:
                    await admin.delete(job.id, actor=actor)
            except AsyncJobsError as exc:
                failed.append({"id": job.id, "message": str(exc)})
            else:
                succeeded.append(job.id)
        return _ok(
            {"action": action, "matched": len(jobs), "succeeded": succeeded, "failed": failed}
        )

    return bulk


async def purge(site: Site, request: Request) -> Response:
    body = await json_body(request, SCHEMAS["PurgeRequest"], optional=False)
    deleted = await site.admin().purge(
        queue=body.get("queue"),
        state=body.get("state"),
        name=body.get("name"),
        partition=body.get("partition"),
        tags=body.get("tags") or None,
        older_than=body.get("older_than"),
        actor=identity_of(request).name,
    )
    return _ok({"deleted": deleted})


# --------------------------------------------------------------------------- queues and more


async def list_queues(site: Site, request: Request) -> Response:
    admin = site.admin()
    overviews = await admin.queues()
    workers = await admin.workers()
    configured = site.configured_queues()
    return _ok({"queues": [site.encoder.queue(o, workers, configured) for o in overviews]})


async def _known_queue(site: Site, admin: Admin, queue: str) -> None:
    if queue in site.configured_queues():
        return
    if any(stats.queue == queue for stats in await admin.queue_stats()):
        return
    if any(queue in worker.queues for worker in await admin.workers()):
        return
    raise ApiError(404, "unknown_queue", f"no queue {queue!r}: no job, worker or runtime uses it")


async def pause_queue(site: Site, request: Request) -> Response:
    admin, queue = site.admin(), request.path_params["queue"]
    await _known_queue(site, admin, queue)
    await admin.pause(queue, actor=identity_of(request).name)
    return _ok({"queue": queue, "paused": True})


async def resume_queue(site: Site, request: Request) -> Response:
    admin, queue = site.admin(), request.path_params["queue"]
    await _known_queue(site, admin, queue)
    await admin.resume(queue, actor=identity_of(request).name)
    return _ok({"queue": queue, "paused": False})


async def list_schedules(site: Site, request: Request) -> Response:
    admin = site.admin()
    now = admin.clock.now()
    schedules = await admin.schedules()
    return _ok({"schedules": [site.encoder.schedule(s, runs, now) for s, runs in schedules]})


async def _schedule_reply(site: Site, admin: Admin, name: str) -> Response:
    now = admin.clock.now()
    for schedule, runs in await admin.schedules():
        if schedule.name == name:
            return _ok(site.encoder.schedule(schedule, runs, now))
    raise ApiError(404, "schedule_not_found", f"no schedule {name!r} in the store")


async def trigger_schedule(site: Site, request: Request) -> Response:
    job = await site.admin().trigger(request.path_params["name"], actor=identity_of(request).name)
    return _ok(site.encoder.job(job), 201)


async def pause_schedule(site: Site, request: Request) -> Response:
    admin, name = site.admin(), request.path_params["name"]
    await admin.pause_schedule(name, actor=identity_of(request).name)
    return await _schedule_reply(site, admin, name)


async def resume_schedule(site: Site, request: Request) -> Response:
    admin, name = site.admin(), request.path_params["name"]
    await admin.pause_schedule(name, paused=False, actor=identity_of(request).name)
    return await _schedule_reply(site, admin, name)


async def list_workers(site: Site, request: Request) -> Response:
    workers = await site.admin().workers()
    return _ok({"workers": [site.encoder.worker(worker) for worker in workers]})


_AUDIT_PARAMS = (
    _query("limit", _LIMIT, "at most this many entries (default 100)"),
    _query("before", {"type": "number"}, "only entries older than this time"),
)


async def audit(site: Site, request: Request) -> Response:
    limit = query_value(request, "limit", _LIMIT, 100)
    before = query_value(request, "before", {"type": "number"})
    entries = await site.admin().audit(limit=limit, before=before)
    return _ok(
        {
            "entries": [site.encoder.audit(entry) for entry in entries],
            "next": entries[-1].at if len(entries) == limit and entries else None,
        }
    )


async def healthz(site: Site, request: Request) -> Response:
    try:
        admin = site.admin()
    except ApiError as exc:
        return _ok({"healthy": False, "reasons": [exc.message], "checks": {"runtime": False}}, 503)
    with anyio.move_on_after(10) as scope:
        health = await admin.health()
    if scope.cancelled_caught:
        return _ok(
            {
                "healthy": False,
                "reasons": ["the store did not answer in 10 s"],
                "checks": {"store": False},
            },
            503,
        )
    return _ok(site.encoder.health(health), 200 if health.healthy else 503)


async def metrics(site: Site, request: Request) -> Response:
    from ._metrics import render

    body, content_type = await render(site)
    return PlainTextResponse(body, media_type=content_type)


# --------------------------------------------------------------------------- the table

_E = Endpoint
_JOB_ID = _path("job_id", "the job's id")
_ERR = "Error"
ENDPOINTS: tuple[Endpoint, ...] = (
    _E(
        "GET",
        "/api/me",
        me,
        "whoAmI",
        "The caller's identity and role",
        responses=((200, "Me", "the identity"),),
    ),
    _E(
        "GET",
        "/api/jobs",
        list_jobs,
        "listJobs",
        "Jobs matching every filter, newest first",
        parameters=_JOB_FILTERS,
        responses=((200, "JobPage", "a page of jobs"), (400, _ERR, "a bad filter")),
    ),
    _E(
        "POST",
        "/api/jobs",
        enqueue,
        "enqueueJob",
        "Enqueue a registered job by name",
        admin=True,
        body="EnqueueRequest",
        body_required=True,
        responses=(
            (201, "Enqueued", "stored"),
            (200, "Enqueued", "a job with the key was returned"),
            (404, _ERR, "no job has that name"),
            (409, _ERR, "no runtime, or the key is held"),
            (413, _ERR, "too large"),
            (422, _ERR, "bad arguments or options"),
        ),
    ),
    *(
        _E(
            "POST",
            f"/api/bulk/{action}",
            _bulk_handler(action, schema),
            f"bulk{action.title()}",
            summary,
            admin=True,
            body=schema,
            responses=((200, "BulkResult", "what was done"), (422, _ERR, "a bad filter")),
        )
        for action, schema, summary in (
            ("retry", "BulkRetry", "Retry every dead job matching a filter (all when empty)"),
            ("cancel", "BulkCancel", "Cancel every queued or running job matching a filter"),
            ("delete", "BulkDelete", "Delete every job matching a filter (not running)"),
        )
    ),
    _E(
        "POST",
        "/api/purge",
        purge,
        "purgeJobs",
        "Delete every job matching a filter (not running)",
        admin=True,
        body="PurgeRequest",
        body_required=True,
        responses=((200, "Purged", "how many were deleted"), (422, _ERR, "a bad filter")),
    ),
    _E(
        "GET",
        "/api/jobs/{job_id}",
        get_job,
        "getJob",
        "One job with its attempt history",
        parameters=(_JOB_ID,),
        responses=((200, "JobDetail", "the job"), (404, _ERR, "no such job")),
    ),
    _E(
        "DELETE",
        "/api/jobs/{job_id}",
        delete_job,
        "deleteJob",
        "Delete a job that is not running",
        admin=True,
        parameters=(_JOB_ID,),
        responses=(
            (204, None, "deleted"),
            (404, _ERR, "no such job"),
            (409, _ERR, "it is running"),
        ),
    ),
    _E(
        "GET",
        "/api/jobs/{job_id}/explain",
        explain_job,
        "explainJob",
        "Why the job is not running now",
        parameters=(_JOB_ID,),
        responses=((200, "Explanation", "the reason"), (404, _ERR, "no such job")),
    ),
    _E(
        "POST",
        "/api/jobs/{job_id}/retry",
        retry_job,
        "retryJob",
        "Queue a dead job again, now",
        admin=True,
        parameters=(_JOB_ID,),
        responses=(
            (200, "Job", "queued again"),
            (404, _ERR, "no such job"),
            (409, _ERR, "it is not dead"),
        ),
    ),
    _E(
        "POST",
        "/api/jobs/{job_id}/cancel",
        cancel_job,
        "cancelJob",
        "Cancel a queued or running job",
        admin=True,
        parameters=(_JOB_ID,),
        responses=((200, "Job", "the job after the cancel"), (404, _ERR, "no such job")),
    ),
    _E(
        "GET",
        "/api/queues",
        list_queues,
        "listQueues",
        "Every queue: counts, rates, wait and run percentiles, backlog age, limits",
        responses=((200, "QueueList", "the queues"),),
    ),
    _E(
        "POST",
        "/api/queues/{queue}/pause",
        pause_queue,
        "pauseQueue",
        "Stop every worker claiming from a queue",
        admin=True,
        parameters=(_path("queue", "the queue"),),
        responses=((200, "QueueState", "paused"), (404, _ERR, "no such queue")),
    ),
    _E(
        "POST",
        "/api/queues/{queue}/resume",
        resume_queue,
        "resumeQueue",
        "Let workers claim from a queue again",
        admin=True,
        parameters=(_path("queue", "the queue"),),
        responses=((200, "QueueState", "resumed"), (404, _ERR, "no such queue")),
    ),
    _E(
        "GET",
        "/api/schedules",
        list_schedules,
        "listSchedules",
        "Every schedule with its next fire times and latest runs",
        responses=((200, "ScheduleList", "the schedules"),),
    ),
    _E(
        "POST",
        "/api/schedules/{name}/trigger",
        trigger_schedule,
        "triggerSchedule",
        "Enqueue a schedule's job now (its timetable is kept)",
        admin=True,
        parameters=(_path("name", "the schedule"),),
        responses=((201, "Job", "the job enqueued"), (404, _ERR, "no such schedule")),
    ),
    _E(
        "POST",
        "/api/schedules/{name}/pause",
        pause_schedule,
        "pauseSchedule",
        "Pause a schedule",
        admin=True,
        parameters=(_path("name", "the schedule"),),
        responses=((200, "Schedule", "paused"), (404, _ERR, "no such schedule")),
    ),
    _E(
        "POST",
        "/api/schedules/{name}/resume",
        resume_schedule,
        "resumeSchedule",
        "Resume a schedule",
        admin=True,
        parameters=(_path("name", "the schedule"),),
        responses=((200, "Schedule", "resumed"), (404, _ERR, "no such schedule")),
    ),
    _E(
        "GET",
        "/api/workers",
        list_workers,
        "listWorkers",
        "The live runtimes sharing the store",
        responses=((200, "WorkerList", "the workers"),),
    ),
    _E(
        "GET",
        "/api/audit",
        audit,
        "listAudit",
        "The audit trail, newest first",
        parameters=_AUDIT_PARAMS,
        responses=((200, "AuditPage", "entries"), (400, _ERR, "a bad parameter")),
    ),
    _E(
        "GET",
        "/healthz",
        healthz,
        "health",
        "Whether the store answers, workers serve the queues, schedules fire, nothing waits long",
        responses=((200, "Health", "healthy"), (503, "Health", "unhealthy, with the reasons")),
    ),
)


def openapi_paths(endpoints: tuple[Endpoint, ...] = ENDPOINTS) -> dict[str, Any]:
    """The OpenAPI ``paths`` object of *endpoints*."""
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        responses: dict[str, Any] = {}
        for status, schema, description in endpoint.responses:
            entry: dict[str, Any] = {"description": description}
            if schema is not None:
                entry["content"] = {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
                }
            responses[str(status)] = entry
        responses.setdefault("401", {"$ref": "#/components/responses/Error"})
        if endpoint.admin:
            responses.setdefault("403", {"$ref": "#/components/responses/Error"})
        responses["default"] = {"$ref": "#/components/responses/Error"}
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary + (" (admin role; audited)" if endpoint.admin else ""),
            "responses": responses,
        }
        if endpoint.parameters:
            operation["parameters"] = list(endpoint.parameters)
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": endpoint.body_required,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{endpoint.body}"}
                    }
                },
            }
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (needs the prometheus extra)",
            "responses": {
                "200": {
                    "description": "the metrics in Prometheus' text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {"$ref": "#/components/responses/Error"},
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
    }
    return paths


def api_routes(site: Site) -> list[Route]:
    """Starlette routes for every endpoint, bound to *site*, plus ``/metrics``."""

    def bind(handler: Handler, known: frozenset[str]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                allowed = ", ".join(sorted(known)) or "none"
                raise ApiError(
                    400,
                    "bad_query",
                    f"unknown query parameter {unknown[0]!r} (known here: {allowed})",
                    unknown[0],
                )
            try:
                return await handler(site, request)
            except AsyncJobsError as exc:
                raise as_api_error(exc) from None

        return endpoint

    routes = [
        Route(
            e.path,
            bind(e.handler, frozenset(p["name"] for p in e.parameters if p["in"] == "query")),
            methods=[e.method],
        )
        for e in ENDPOINTS
    ]
    routes.append(Route("/metrics", bind(metrics, frozenset()), methods=["GET"]))
    return routes
