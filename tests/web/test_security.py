"""Closed by default: 401 without credentials on every route, 403 for a viewer's every action,
escaped output, CSRF-checked forms, and no open redirects."""

from __future__ import annotations

import re

import anyio
import httpx
import pytest

from asyncjobs.web import admin_app
from tests.conftest import RuntimeFactory
from tests.web.conftest import ADMIN_TOKEN, DOC, ON_SERVED_STORES, Web, tokens

pytestmark = [pytest.mark.anyio, ON_SERVED_STORES]

_ID = "0" * 32
_PATH_VALUES = {"job_id": _ID, "action": "retry", "queue": "default", "name": "nightly"}
#: Every dashboard route, with a method that reaches it.
DASHBOARD = [
    ("GET", "/"),
    ("GET", "/jobs"),
    ("GET", f"/jobs/{_ID}"),
    ("GET", "/dead"),
    ("GET", "/schedules"),
    ("GET", "/workers"),
    ("GET", "/audit"),
    ("GET", "/events"),
    ("POST", "/logout"),
    ("POST", f"/actions/jobs/{_ID}/retry"),
    ("POST", f"/actions/jobs/{_ID}/cancel"),
    ("POST", f"/actions/jobs/{_ID}/delete"),
    ("POST", "/actions/dead/retry"),
    ("POST", "/actions/queues/default/pause"),
    ("POST", "/actions/queues/default/resume"),
    ("POST", "/actions/schedules/nightly/trigger"),
    ("POST", "/actions/schedules/nightly/pause"),
]
API = [
    (method.upper(), path.format(**_PATH_VALUES))
    for path, item in DOC["paths"].items()
    for method in item
]
EVERY_ROUTE = [*API, ("GET", "/openapi.json"), ("GET", "/nowhere"), *DASHBOARD]
ACTIONS = [(method, path) for method, path in EVERY_ROUTE if method != "GET" and path != "/logout"]


async def test_every_route_is_401_without_credentials(web: Web) -> None:
    assert len(EVERY_ROUTE) >= 38
    wrong = httpx.AsyncClient(base_url=web.url, headers={"Authorization": "Bearer " + "x" * 24})
    async with wrong:
        for client in (web.anonymous, wrong):
            for method, path in EVERY_ROUTE:
                response = await client.request(method, path, json={})
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"] == "unauthorized"
    assert await web.job_count() == 0


async def test_every_action_is_403_for_a_viewer(web: Web) -> None:
    job = await web.runtime.enqueue("add", 1, 2)
    audit_before = len(await web.runtime.admin.audit())
    for method, path in ACTIONS:
        path = path.replace(_ID, job.id)
        response = await web.viewer.request(method, path, json={"name": "add", "args": [1, 2]})
        assert response.status_code == 403, (method, path, response.text)
        assert "viewer role" in response.json()["message"]
    assert await web.job_count() == 1
    assert len(await web.runtime.admin.audit()) == audit_before
    # ... and reads work, with no action buttons on any page.
    for method, path in DASHBOARD:
        if method == "GET" and path != "/events":
            page = await web.viewer.get(path.replace(_ID, job.id))
            assert page.status_code == 200, path
            assert 'method="post"' not in page.text, path


async def test_an_xss_probe_renders_inert(web: Web) -> None:
    probe = "<script>alert('pwned')</script>"
    response = await web.admin.post(
        "/api/jobs", json={"name": "fail", "args": [probe], "options": {"tags": {"t": probe}}}
    )
    job_id = response.json()["job"]["id"]
    with anyio.fail_after(10):
        while (await web.admin.get(f"/api/jobs/{job_id}")).json()["state"] != "dead":
            await anyio.sleep(0.02)
    pages = [f"/jobs/{job_id}", "/jobs", "/dead", "/", "/audit", f"/jobs?name={probe}"]
    for path in pages:
        page = await web.admin.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
        # The one script is the page's own, carrying the response's nonce.
        nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"])
        assert nonce is not None
        assert re.findall(r"<script[^>]*>", page.text) == [f'<script nonce="{nonce[1]}">']
    detail = (await web.admin.get(f"/jobs/{job_id}")).text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in detail  # the error message
    assert "ValueError" in detail


async def sign_in(web: Web) -> httpx.AsyncClient:
    """A browser-like client signed in through the form (token in an HttpOnly cookie)."""
    browser = httpx.AsyncClient(base_url=web.url, headers={"accept": "text/html"})
    gate = await browser.get("/")
    assert gate.status_code == 401
    assert "Sign in" in gate.text
    csrf = browser.cookies["asyncjobs_csrf"]
    refused = await browser.post("/login", data={"csrf": csrf, "token": "wrong" * 5, "next": "/"})
    assert refused.status_code == 401
    assert "not valid" in refused.text
    signed = await browser.post(
        "/login", data={"csrf": csrf, "token": ADMIN_TOKEN, "next": "/dead"}
    )
    assert signed.status_code == 303
    assert signed.headers["location"].startswith("/jobs/dead")
    assert "httponly" in signed.headers["set-cookie"].lower()
    assert "samesite=strict" in signed.headers["set-cookie"].lower()
    assert "secure" not in signed.headers["set-cookie"].lower()  # plain HTTP here
    return browser


async def test_cookies_are_secure_over_https(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    app = admin_app(runtime, auth=tokens())
    async with runtime:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="https://jobs.example", headers={"accept": "text/html"}
        ) as browser:
            gate = await browser.get("/")
            assert "secure" in gate.headers["set-cookie"].lower()
            csrf = browser.cookies["asyncjobs_csrf"]
            signed = await browser.post(
                "/login", data={"csrf": csrf, "token": ADMIN_TOKEN, "next": "/"}
            )
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"].lower()
            assert cookie.startswith("asyncjobs_token=")
            assert "secure" in cookie
            assert "httponly" in cookie


async def test_forms_need_the_csrf_token(web: Web) -> None:
    job = await web.runtime.enqueue("fail", "once")
    with anyio.fail_after(10):
        while (await web.runtime.admin.job(job.id)).job.state.value != "dead":
            await anyio.sleep(0.02)
    browser = await sign_in(web)
    try:
        assert (await browser.get("/")).status_code == 200
        action = f"/actions/jobs/{job.id}/retry"
        forged = await browser.post(action, data={"back": "/dead"})
        assert forged.status_code == 403
        assert "security token" in forged.text
        wrong = await browser.post(action, data={"csrf": "x" * 32, "back": "/dead"})
        assert wrong.status_code == 403
        assert (await web.runtime.admin.job(job.id)).job.state.value == "dead"
        # A cookie-authenticated API post is refused unless it is JSON or carries the header.
        cross = await browser.post(f"/api/jobs/{job.id}/retry")
        assert cross.status_code == 403
        assert cross.json()["error"] == "cross_site"
        csrf = browser.cookies["asyncjobs_csrf"]
        done = await browser.post(action, data={"csrf": csrf, "back": "//evil.example/x"})
        assert done.status_code == 303
        assert done.headers["location"].startswith("/jobs/jobs/")  # never off-site
        assert (await web.runtime.admin.job(job.id)).job.state.value in (
            "queued",
            "running",
            "dead",
        )
        entries = await web.runtime.admin.audit()
        assert any(e.actor == "alice" and e.action == "job.retry" for e in entries)
    finally:
        await browser.aclose()


async def test_bodies_over_the_limit_are_refused_before_auth(web: Web) -> None:
    response = await web.anonymous.post("/api/jobs", content=b"x" * (2 << 20))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


async def test_pages_carry_security_headers(web: Web) -> None:
    page = await web.admin.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    api = await web.admin.get("/api/jobs")
    assert api.headers["cache-control"] == "no-store"
