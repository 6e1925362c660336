"""End to end in headless Chromium (Debian's ``chromium``; CI installs it): the dashboard loads,
shows a job enqueued through the API, moves its progress bar live without a reload, and its
retry button revives a dead job. The screenshots it takes are the ones in docs/web.md."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.types import ASGIApp

from asyncjobs import JobContext, JobRuntime
from asyncjobs.web import admin_app
from tests.web.cdp import Browser, find_chromium
from tests.web.conftest import ADMIN_TOKEN, PREFIX, tokens
from tests.web.server import host_app, serve_in_thread

#: Where the docs' screenshots live: refreshed only when asked
#: (``ASYNCJOBS_SCREENSHOTS=1 pytest tests/web/test_dashboard_browser.py``), so a
#: test run leaves the working tree as it was.
DOCS_STATIC = Path(__file__).resolve().parents[2] / "docs" / "_static"


def wait_state(api: httpx.Client, job_id: str, state: str) -> None:
    deadline = time.monotonic() + 20
    while api.get(f"/api/jobs/{job_id}").json()["state"] != state:
        assert time.monotonic() < deadline, f"job {job_id} never became {state}"
        time.sleep(0.05)


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_dashboard_in_chromium(chromium: str, tmp_path: Path) -> None:
    screenshots = DOCS_STATIC if os.environ.get("ASYNCJOBS_SCREENSHOTS") else tmp_path
    runtime = JobRuntime(f"sqlite:///{tmp_path / 'jobs.db'}", queues={"default": 4, "reports": 2})
    broken = {"yes": True}

    @runtime.job(name="build_report", queue="reports")
    async def build_report(ctx: JobContext, pages: int) -> str:
        for page in range(1, pages + 1):
            await ctx.progress(page / pages, f"page {page} of {pages}")
            await anyio.sleep(0.25)
        return f"{pages} pages"

    @runtime.job(name="charge_card", max_attempts=2)
    async def charge_card(customer: str, cents: int) -> str:
        if broken["yes"]:
            raise ConnectionError("payment gateway <script>alert(1)</script> timed out")
        return "charged"

    @runtime.cron("0 2 * * *", name="nightly_cleanup", timezone="Europe/Berlin")
    async def nightly_cleanup() -> None: ...

    @asynccontextmanager
    async def started() -> AsyncIterator[JobRuntime]:
        async with runtime:
            yield runtime

    def build(rt: JobRuntime) -> ASGIApp:
        return host_app(admin_app(rt, auth=tokens(), refresh=0.25), PREFIX)

    with serve_in_thread(started, build) as (url, _, _call), Browser(chromium) as browser:
        base = url + PREFIX
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with api:
            # A few finished jobs, so the overview has rates and timings to show.
            for n in range(3):
                api.post(
                    "/api/jobs",
                    json={"name": "build_report", "args": [1], "options": {"tags": {"n": str(n)}}},
                )
            dead = api.post(
                "/api/jobs", json={"name": "charge_card", "args": ["cus_42", 1999]}
            ).json()["job"]["id"]

            # Signing in through the form: the token goes into an HttpOnly cookie.
            browser.navigate(base + "/")
            assert browser.evaluate("document.title").startswith("Sign in")
            browser.evaluate(
                f"document.querySelector('input[name=token]').value = {ADMIN_TOKEN!r};"
                "document.querySelector('form.login').submit()"
            )
            browser.wait_for("document.title.startsWith('Overview')")
            assert browser.evaluate("document.cookie") == ""  # nothing readable by scripts
            browser.wait_for("document.getElementById('live').textContent.includes('live')")
            browser.evaluate("window.__notReloaded = true")

            # A job enqueued through the API appears, and its bar moves without a reload.
            job = api.post("/api/jobs", json={"name": "build_report", "args": [24]}).json()["job"][
                "id"
            ]
            bar = f"document.querySelector('progress[data-progress=\"{job}\"]')"
            first = browser.wait_for(f"{bar} && {bar}.value > 0 && {bar}.value")
            later = browser.wait_for(f"{bar} && {bar}.value > {first} + 0.1 && {bar}.value")
            assert later > first
            browser.wait_for(f"{bar}.value > 0.3")
            browser.screenshot(screenshots / "web-overview.png")
            assert browser.evaluate("window.__notReloaded === true")

            # The dead job's page shows the error inert, and its retry button revives it.
            wait_state(api, dead, "dead")
            browser.navigate(f"{base}/jobs/{dead}")
            assert (
                browser.evaluate("document.querySelector('#job-state .state').textContent")
                == "dead"
            )
            assert "<script>" in browser.evaluate("document.getElementById('error').textContent")
            assert browser.evaluate("document.querySelectorAll('script').length") == 1
            browser.evaluate("document.querySelector('details#arguments').open = true")
            browser.screenshot(screenshots / "web-dead-job.png")
            broken["yes"] = False
            browser.evaluate("window.confirm = () => true")
            browser.evaluate("document.querySelector('form[action$=\"/retry\"] button').click()")
            browser.wait_for("(document.getElementById('notice') || {}).textContent")
            assert "queued again" in browser.evaluate(
                "document.getElementById('notice').textContent"
            )
            wait_state(api, dead, "complete")
            assert api.get(f"/api/jobs/{dead}").json()["result"] == "charged"
            browser.wait_for(
                "document.getElementById('job-changed').hidden === false || "
                "document.querySelector('#job-state .state').textContent === 'complete'"
            )

            browser.navigate(base + "/schedules")
            assert "nightly_cleanup" in browser.evaluate("document.body.textContent")
            browser.screenshot(screenshots / "web-schedules.png")
            browser.navigate(base + "/audit")
            assert "job.retry" in browser.evaluate("document.body.textContent")
