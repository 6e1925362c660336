# ruff: noqa: PT018
"""The JSON API through uvicorn on SQLite and Redis: every route, checked against the document."""

from __future__ import annotations

import json
import logging

import anyio
import httpx
import pytest

from asyncjobs import Admin, JobRuntime
from asyncjobs.web import Identity, admin_app, allow_all_unsafe
from tests.conftest import RuntimeFactory
from tests.web.conftest import (
    ON_SERVED_STORES,
    Web,
    conforms,
    define_jobs,
    open_web,
)
from tests.web.server import host_app, serve

pytestmark = [pytest.mark.anyio, ON_SERVED_STORES]


async def settle(web: Web, job_id: str, *states: str) -> dict[str, object]:
    """Wait for the job to reach one of *states* (the runtime runs it in the background)."""
    with anyio.fail_after(10):
        while True:
            body: dict[str, object] = (await web.admin.get(f"/api/jobs/{job_id}")).json()
            if body["state"] in states:
                return body
            await anyio.sleep(0.02)


async def enqueue(web: Web, name: str, *args: object, **options: object) -> str:
    response = await web.call(
        "POST", "/api/jobs", json={"name": name, "args": list(args), "options": options}
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job"]["id"]
    return job_id


async def test_enqueue_run_and_read_a_job(web: Web) -> None:
    response = await web.call(
        "POST",
        "/api/jobs",
        json={
            "name": "add",
            "kwargs": {"a": 2, "b": 3},
            "options": {"priority": 1, "tags": {"tenant": "42"}, "partition": "p1"},
        },
    )
    assert response.status_code == 201
    job_id = response.json()["job"]["id"]
    done = await settle(web, job_id, "complete")
    assert done["result"] == 5
    assert done["tags"] == {"tenant": "42"} and done["partition"] == "p1"
    detail = await web.call("GET", "/api/jobs/{job_id}", path_params={"job_id": job_id})
    assert [a["outcome"] for a in detail.json()["history"]] == ["complete"]
    explained = await web.call("GET", "/api/jobs/{job_id}/explain", path_params={"job_id": job_id})
    assert explained.json()["reason"] == "finished"
    audit = await web.call("GET", "/api/audit")
    assert any(
        e["actor"] == "alice" and e["action"] == "job.enqueue" and e["target"] == job_id
        for e in audit.json()["entries"]
    )


async def test_delayed_and_keyed_enqueue(web: Web) -> None:
    later = await enqueue(web, "add", 1, 1, delay=3600, key="k1")
    again = await web.call(
        "POST", "/api/jobs", json={"name": "add", "args": [1, 1], "options": {"key": "k1"}}
    )
    assert again.status_code == 200 and again.json()["deduplicated"] is True
    assert again.json()["job"]["id"] == later
    at = await enqueue(web, "add", 1, 2, at="2100-01-01T00:00:00Z")
    body = (await web.admin.get(f"/api/jobs/{at}")).json()
    assert body["due_at"] == 4102444800.0 and body["state"] == "queued"


async def test_listing_filters_and_cursor(web: Web) -> None:
    ids = [await enqueue(web, "add", n, n, delay=600, tags={"batch": "b"}) for n in range(5)]
    page = await web.admin.get("/api/jobs", params={"tag": "batch:b", "limit": 2})
    conforms(page, "/api/jobs", "GET")
    seen = [job["id"] for job in page.json()["jobs"]]
    cursor = page.json()["next"]
    while cursor:
        page = await web.admin.get(
            "/api/jobs", params={"tag": "batch:b", "limit": 2, "after": cursor}
        )
        seen += [job["id"] for job in page.json()["jobs"]]
        cursor = page.json()["next"]
    assert sorted(seen) == sorted(ids)
    queued = await web.admin.get("/api/jobs", params={"state": "queued", "name": "add"})
    assert {job["id"] for job in queued.json()["jobs"]} >= set(ids)


async def test_retry_cancel_delete_and_bulk(web: Web) -> None:
    dead = [await enqueue(web, "fail", f"boom {n}") for n in range(3)]
    for job_id in dead:
        await settle(web, job_id, "dead")
    retried = await web.call("POST", "/api/jobs/{job_id}/retry", path_params={"job_id": dead[0]})
    assert retried.status_code == 200 and retried.json()["state"] in ("queued", "running", "dead")
    not_dead = await enqueue(web, "add", 1, 2, delay=600)
    refused = await web.call("POST", "/api/jobs/{job_id}/retry", path_params={"job_id": not_dead})
    assert refused.status_code == 409 and "not dead" in refused.json()["message"]
    cancelled = await web.call(
        "POST", "/api/jobs/{job_id}/cancel", path_params={"job_id": not_dead}
    )
    assert cancelled.json()["state"] == "cancelled"
    deleted = await web.call("DELETE", "/api/jobs/{job_id}", path_params={"job_id": not_dead})
    assert deleted.status_code == 204
    gone = await web.call("GET", "/api/jobs/{job_id}", path_params={"job_id": not_dead})
    assert gone.status_code == 404 and gone.json()["error"] == "job_not_found"
    for job_id in dead:
        await settle(web, job_id, "dead")
    bulk = await web.call("POST", "/api/bulk/retry", json={"name": "fail"})
    assert bulk.json()["matched"] == 3 and len(bulk.json()["succeeded"]) == 3
    for job_id in dead:
        await settle(web, job_id, "dead")
    needs_filter = await web.call("POST", "/api/bulk/delete", json={})
    assert (
        needs_filter.status_code == 422
        and "needs at least one of" in needs_filter.json()["message"]
    )
    removed = await web.call("POST", "/api/bulk/delete", json={"state": "dead"})
    assert sorted(removed.json()["succeeded"]) == sorted(dead)
    await enqueue(web, "add", 1, 1, delay=600, tags={"purge": "me"})
    purged = await web.call("POST", "/api/purge", json={"tags": {"purge": "me"}})
    assert purged.json() == {"deleted": 1}
    actions = {e["action"] for e in (await web.admin.get("/api/audit")).json()["entries"]}
    assert {"job.retry", "job.cancel", "job.delete", "jobs.purge"} <= actions


async def test_queues_pause_resume_workers_health_metrics(web: Web) -> None:
    await enqueue(web, "add", 1, 1)
    queues = await web.call("GET", "/api/queues")
    [default] = [q for q in queues.json()["queues"] if q["queue"] == "default"]
    assert default["concurrency"] == 4 and default["slots"] == 4
    paused = await web.call("POST", "/api/queues/{queue}/pause", path_params={"queue": "default"})
    assert paused.json() == {"queue": "default", "paused": True}
    unknown = await web.call("POST", "/api/queues/{queue}/pause", path_params={"queue": "nope"})
    assert unknown.status_code == 404
    await web.call("POST", "/api/queues/{queue}/resume", path_params={"queue": "default"})
    workers = await web.call("GET", "/api/workers")
    assert [w["id"] for w in workers.json()["workers"]] == [web.runtime.worker_id]
    health = await web.call("GET", "/healthz")
    assert health.status_code == 200 and health.json()["healthy"] is True
    metrics = await web.call("GET", "/metrics")
    assert 'asyncjobs_queue_jobs{queue="default",state="complete"}' in metrics.text
    assert (await web.call("GET", "/api/me")).json() == {"name": "alice", "role": "admin"}


async def test_schedules_list_trigger_pause(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    define_jobs(runtime)

    @runtime.cron("0 3 * * *", name="nightly")
    async def nightly() -> None: ...

    async for web in open_web(runtime):
        listed = await web.call("GET", "/api/schedules")
        [schedule] = listed.json()["schedules"]
        assert schedule["name"] == "nightly" and len(schedule["next_fire_times"]) == 5
        assert schedule["trigger"]["expression"] == "0 3 * * *"
        fired = await web.call(
            "POST", "/api/schedules/{name}/trigger", path_params={"name": "nightly"}
        )
        assert fired.status_code == 201 and fired.json()["schedule"] == "nightly"
        paused = await web.call(
            "POST", "/api/schedules/{name}/pause", path_params={"name": "nightly"}
        )
        assert paused.json()["paused"] is True and len(paused.json()["recent_runs"]) == 1
        resumed = await web.call(
            "POST", "/api/schedules/{name}/resume", path_params={"name": "nightly"}
        )
        assert resumed.json()["paused"] is False
        missing = await web.call("POST", "/api/schedules/{name}/trigger", path_params={"name": "x"})
        assert missing.status_code == 404


BAD_ENQUEUES = [
    ({"name": "nope"}, 404, "unknown_job", "no job is registered as 'nope'"),
    ({"name": "add", "args": [1]}, 422, "bad_arguments", "missing a required argument: 'b'"),
    ({"name": "add", "args": [1, 2], "kwargs": {"c": 3}}, 422, "bad_arguments", "'c'"),
    ({"name": "add", "args": [1, 2], "options": {"delay": -1}}, 422, "invalid_body", "at least 0"),
    (
        {"name": "add", "args": [1, 2], "options": {"priority": "high"}},
        422,
        "invalid_body",
        "an integer",
    ),
    ({"name": "add", "options": {"at": "tomorrow"}}, 422, "invalid_body", "RFC 3339"),
    ({"name": "add", "args": [1, 2], "options": {"queue": "nope"}}, 422, "unknown_queue", "nope"),
    ({"name": "add", "options": {"colour": "red"}}, 422, "invalid_body", "not a known field"),
    ({"args": [1, 2]}, 422, "invalid_body", "name: is required"),
    ([1, 2], 422, "invalid_body", "must be an object"),
]


@pytest.mark.parametrize(("body", "status", "code", "says"), BAD_ENQUEUES)
async def test_bad_enqueues_are_refused_and_store_nothing(
    web: Web, body: object, status: int, code: str, says: str
) -> None:
    before = await web.job_count()
    response = await web.call("POST", "/api/jobs", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert says in response.json()["message"]
    assert await web.job_count() == before


async def test_malformed_json_large_bodies_and_bad_queries(web: Web) -> None:
    before = await web.job_count()
    malformed = await web.call(
        "POST", "/api/jobs", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_json"
    form = await web.call(
        "POST", "/api/jobs", content=b"name=add", headers={"content-type": "text/plain"}
    )
    assert form.status_code == 415
    huge = await web.call("POST", "/api/jobs", json={"name": "add", "args": ["x" * (1 << 20), 1]})
    assert huge.status_code == 413 and "limit of 1048576 bytes" in huge.json()["message"]
    assert await web.job_count() == before
    for query, says in [
        ({"state": "zombie"}, "state: must be one of queued"),
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": "0"}, "limit: must be at least 1"),
        ({"since": "yesterday"}, "since must be a number"),
        ({"tag": "nocolon"}, "tag must be KEY:VALUE"),
    ]:
        response = await web.call("GET", "/api/jobs", params=query)
        assert response.status_code == 400, (query, response.text)
        assert says in response.json()["message"]
    unknown = await web.call("GET", "/api/jobs/{job_id}", path_params={"job_id": "0" * 32})
    assert unknown.status_code == 404 and "no job" in unknown.json()["message"]


async def test_arguments_can_be_hidden_per_job(web: Web) -> None:
    job_id = await enqueue(web, "secret", "hunter2")
    body = await settle(web, job_id, "complete")
    assert body["arguments_hidden"] is True and body["args"] is None and body["result"] is None
    page = await web.admin.get(f"/jobs/{job_id}")
    assert "hunter2" not in page.text and "hidden for this job" in page.text


async def test_a_store_only_admin_serves_everything_but_enqueue(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    define_jobs(runtime)
    async with runtime:
        await runtime.enqueue("add", 1, 2)
        admin = Admin(runtime.backend, clock=runtime.clock)
        app = admin_app(admin, auth=lambda request: Identity("ops", "admin"))
        async with serve(host_app(app)) as url, httpx.AsyncClient(base_url=url + "/jobs") as client:
            listed = await client.get("/api/jobs")
            conforms(listed, "/api/jobs", "GET")
            assert len(listed.json()["jobs"]) == 1
            refused = await client.post("/api/jobs", json={"name": "add", "args": [1, 2]})
            conforms(refused, "/api/jobs", "POST")
            assert refused.status_code == 409 and "admin_app(runtime" in refused.json()["message"]
            assert len((await client.get("/api/jobs")).json()["jobs"]) == 1


async def test_without_auth_nothing_is_served(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    async with (
        runtime,
        serve(host_app(admin_app(runtime))) as url,
        httpx.AsyncClient(base_url=url + "/jobs") as client,
    ):
        for path in ("/", "/api/jobs", "/healthz", "/openapi.json"):
            response = await client.get(path)
            assert response.status_code == 401
            assert "no auth configured" in response.json()["message"]


async def test_allow_all_unsafe_warns_and_serves(
    make_runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = make_runtime()
    with caplog.at_level(logging.WARNING, "asyncjobs.web"):
        app = admin_app(runtime, auth=allow_all_unsafe())
    assert "without credentials" in caplog.text
    async with (
        runtime,
        serve(host_app(app)) as url,
        httpx.AsyncClient(base_url=url + "/jobs") as client,
    ):
        assert (await client.get("/api/me")).json() == {"name": "anonymous", "role": "admin"}


async def test_health_is_503_with_reasons(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(role="enqueue")
    define_jobs(runtime)
    async for web in open_web(runtime):
        await web.runtime.enqueue("add", 1, 2)
        response = await web.call("GET", "/healthz")
        assert response.status_code == 503
        assert "no live worker serves default" in response.json()["reasons"][0]


async def test_the_event_stream_sends_snapshots(web: Web) -> None:
    job_id = await enqueue(web, "add", 1, 1, delay=600)
    async with web.admin.stream("GET", "/events", params={"job": job_id}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        with anyio.fail_after(10):
            async for line in lines:
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    break
    assert data["job"]["state"] == "queued"
    assert {q["queue"] for q in data["queues"]} == {"default"}


async def test_a_runtime_not_started_answers_503(make_runtime: RuntimeFactory) -> None:
    runtime: JobRuntime = make_runtime()
    app = admin_app(runtime, auth=lambda request: Identity("ops", "admin"))
    async with serve(host_app(app)) as url, httpx.AsyncClient(base_url=url + "/jobs") as client:
        response = await client.get("/api/jobs")
        assert response.status_code == 503 and "not running" in response.json()["message"]
        health = await client.get("/healthz")
        assert health.status_code == 503 and health.json()["healthy"] is False
