"""The dashboard: server-rendered pages, live updates over Server-Sent Events, form actions.

Templates are Jinja2 with autoescaping on for everything; the style sheet
and script are inlined with a per-response nonce, and the Content Security
Policy allows nothing else (no inline handlers, no outside origins). Every
form post carries a token that must equal the ``asyncjobs_csrf`` cookie
(double submit; the cookie is SameSite=Strict).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

import anyio
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from .._exceptions import AsyncJobsError
from .._models import JobState
from ._auth import TOKEN_COOKIE, BearerTokens, Identity
from ._site import IDENTITY, ApiError, Site

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "Dashboard"]

CSRF_COOKIE = "asyncjobs_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: How long one event stream stays open before the browser reconnects (seconds).
_STREAM_LIFETIME = 300.0
_PAGE = 50


def _when(value: float | None) -> str:
    if value is None:
        return "—"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def _asset(name: str) -> str:
    return resources.files("asyncjobs.web").joinpath("templates", name).read_text("utf-8")


class Dashboard:
    """The HTML side of the admin app."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("asyncjobs.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=_when, seconds=_seconds, pretty=_pretty)
        self.css = _asset("app.css")
        self.js = _asset("app.js")

    # -- rendering ----------------------------------------------------------------------

    def render(
        self, request: Request, template: str, *, status: int = 200, **context: Any
    ) -> Response:
        """Render *template* with the page's common context, CSP and CSRF cookie."""
        nonce = secrets.token_urlsafe(16)
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        identity = request.scope.get(IDENTITY)
        base = request.scope.get("root_path", "")
        page = self.env.get_template(template).render(
            base=base,
            title=self.site.title,
            nonce=nonce,
            csrf=token,
            csrf_field=CSRF_FIELD,
            css=self.css,
            js=self.js,
            identity=identity,
            is_admin=isinstance(identity, Identity) and identity.is_admin,
            notice=request.query_params.get("notice"),
            signed_in_by_cookie=TOKEN_COOKIE in request.cookies,
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        response.headers["content-security-policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                path=base or "/",
                httponly=True,
                samesite="strict",
                secure=_over_https(request),
            )
        return response

    def login_page(
        self, request: Request, *, status: int = 200, next_path: str = "/", error: str | None = None
    ) -> Response:
        """The sign-in form (for bearer-token auth)."""
        return self.render(request, "login.html", status=status, next_path=next_path, error=error)

    def routes(self) -> list[Route]:
        """The dashboard's routes."""
        return [
            Route("/", self.overview, methods=["GET"]),
            Route("/jobs", self.jobs, methods=["GET"]),
            Route("/jobs/{job_id}", self.job, methods=["GET"]),
            Route("/dead", self.dead, methods=["GET"]),
            Route("/schedules", self.schedules, methods=["GET"]),
            Route("/workers", self.workers, methods=["GET"]),
            Route("/audit", self.audit, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/actions/jobs/{job_id}/{action}", self.job_action, methods=["POST"]),
            Route("/actions/dead/retry", self.retry_dead, methods=["POST"]),
            Route("/actions/queues/{queue}/{action}", self.queue_action, methods=["POST"]),
            Route("/actions/schedules/{name}/{action}", self.schedule_action, methods=["POST"]),
        ]

    # -- pages ------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        admin = self.site.admin()
        workers = await admin.workers()
        configured = self.site.configured_queues()
        queues = [self.site.encoder.queue(o, workers, configured) for o in await admin.queues()]
        running = await admin.list_jobs(state=JobState.RUNNING, limit=_PAGE)
        health = await admin.health()
        return self.render(
            request,
            "overview.html",
            page="overview",
            queues=queues,
            running=[self.site.encoder.job(job) for job in running],
            health=health,
            workers=len(workers),
        )

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        filters = {
            key: params[key].strip()
            for key in ("queue", "state", "name", "partition", "schedule")
            if params.get(key, "").strip()
        }
        tags: dict[str, str] = {}
        tag_text = params.get("tag", "").strip()
        problem = None
        if tag_text:
            key, colon, value = tag_text.partition(":")
            if colon and key:
                tags[key] = value
            else:
                problem = f"a tag filter is KEY:VALUE such as tenant:42, not {tag_text!r}"
        if filters.get("state") and filters["state"] not in {s.value for s in JobState}:
            problem = f"unknown state {filters['state']!r}"
        jobs: list[dict[str, Any]] = []
        after = params.get("after") or None
        if problem is None:
            found = await self.site.admin().list_jobs(
                queue=filters.get("queue"),
                state=filters.get("state"),
                name=filters.get("name"),
                partition=filters.get("partition"),
                schedule=filters.get("schedule"),
                tags=tags or None,
                limit=_PAGE,
                after=after,
            )
            jobs = [self.site.encoder.job(job) for job in found]
        next_query = None
        if len(jobs) == _PAGE:
            next_query = urlencode(
                {**filters, **({"tag": tag_text} if tag_text else {}), "after": jobs[-1]["id"]}
            )
        return self.render(
            request,
            "jobs.html",
            page="jobs",
            jobs=jobs,
            filters=filters,
            tag=tag_text,
            problem=problem,
            states=[s.value for s in JobState],
            next_query=next_query,
        )

    async def job(self, request: Request) -> Response:
        admin = self.site.admin()
        job_id = request.path_params["job_id"]
        try:
            detail = await admin.job(job_id)
        except AsyncJobsError:
            return self.render(
                request,
                "missing.html",
                status=404,
                page="jobs",
                what=f"no job {job_id!r} in the store",
            )
        explanation = await admin.explain(job_id)
        return self.render(
            request,
            "job.html",
            page="jobs",
            job=self.site.encoder.detail(detail.job, detail.attempts),
            explanation=self.site.encoder.explanation(explanation),
        )

    async def dead(self, request: Request) -> Response:
        queue = request.query_params.get("queue") or None
        found = await self.site.admin().list_jobs(state=JobState.DEAD, queue=queue, limit=_PAGE)
        return self.render(
            request,
            "dead.html",
            page="dead",
            jobs=[self.site.encoder.job(job) for job in found],
            queue=queue,
        )

    async def schedules(self, request: Request) -> Response:
        admin = self.site.admin()
        now = admin.clock.now()
        schedules = [
            self.site.encoder.schedule(s, runs, now) for s, runs in await admin.schedules()
        ]
        return self.render(request, "schedules.html", page="schedules", schedules=schedules)

    async def workers(self, request: Request) -> Response:
        workers = [self.site.encoder.worker(w) for w in await self.site.admin().workers()]
        return self.render(request, "workers.html", page="workers", workers=workers)

    async def audit(self, request: Request) -> Response:
        entries = [self.site.encoder.audit(e) for e in await self.site.admin().audit(limit=200)]
        return self.render(request, "audit.html", page="audit", entries=entries)

    # -- live updates -------------------------------------------------------------------------

    async def snapshot(self, job_id: str | None) -> dict[str, Any]:
        """What the pages update live: queue counts, running jobs, one job."""
        admin = self.site.admin()
        queues = [
            {
                "queue": stats.queue,
                "waiting": stats.waiting,
                "delayed": stats.delayed,
                "running": stats.started,
                "claimed": stats.claimed,
                "paused": stats.paused,
                "dead": stats.count(JobState.DEAD),
                "complete": stats.count(JobState.COMPLETE),
            }
            for stats in await admin.queue_stats()
        ]
        running = [
            {
                "id": job.id,
                "name": job.name,
                "queue": job.queue,
                "progress": job.progress,
                "progress_message": job.progress_message,
                "started_at": job.started_at,
                "attempts": job.attempts,
            }
            for job in await admin.list_jobs(state=JobState.RUNNING, limit=_PAGE)
        ]
        job = None
        if job_id:
            found = await admin.get_job(job_id)
            if found is not None:
                job = {
                    "id": found.id,
                    "state": found.state.value,
                    "progress": found.progress,
                    "progress_message": found.progress_message,
                    "attempts": found.attempts,
                }
        return {"at": admin.clock.now(), "queues": queues, "running": running, "job": job}

    async def events(self, request: Request) -> Response:
        job_id = request.query_params.get("job") or None
        self.site.admin()  # 503 now, not inside the stream, when the runtime is not running
        return StreamingResponse(
            self._stream(job_id),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _stream(self, job_id: str | None) -> AsyncIterator[str]:
        runtime = self.site.runtime
        yield f"retry: {int(self.site.refresh * 1000) + 1000}\n\n"
        with anyio.move_on_after(_STREAM_LIFETIME):
            if runtime is None:
                while True:
                    yield await self._event(job_id)
                    await anyio.sleep(self.site.refresh)
            with runtime.events.subscribe(max_buffer=1000) as stream:
                while True:
                    yield await self._event(job_id)
                    # Wake early on a local change, then let a burst settle a moment.
                    with anyio.move_on_after(self.site.refresh):
                        await stream.receive()
                        await anyio.sleep(min(0.2, self.site.refresh))

    async def _event(self, job_id: str | None) -> str:
        try:
            data = await self.snapshot(job_id)
        except (AsyncJobsError, ApiError) as exc:
            return f"event: trouble\ndata: {json.dumps({'message': str(exc)})}\n\n"
        return f"event: snapshot\ndata: {json.dumps(data)}\n\n"

    # -- forms ---------------------------------------------------------------------------------

    async def _form(self, request: Request) -> dict[str, str] | Response:
        """The posted form, or a 403 page when its CSRF token does not match the cookie."""
        body = (await request.body()).decode("utf-8", "replace")
        form = {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, form.get(CSRF_FIELD, "")):
            return self.render(
                request,
                "missing.html",
                status=403,
                page="",
                what="the form's security token does not match: reload the page and try again",
            )
        return form

    def _back(self, request: Request, form: dict[str, str], fallback: str, notice: str) -> Response:
        base = request.scope.get("root_path", "")
        target = form.get("back", "")
        # Only paths inside the app: never an open redirect.
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = fallback
        target = target.split("?")[0]
        return RedirectResponse(f"{base}{target}?{urlencode({'notice': notice})}", status_code=303)

    def _actor(self, request: Request) -> str:
        identity = request.scope[IDENTITY]
        assert isinstance(identity, Identity)
        return identity.name

    async def job_action(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        admin, actor = self.site.admin(), self._actor(request)
        try:
            if action == "retry":
                await admin.retry(job_id, actor=actor)
                notice = f"job {job_id} queued again"
            elif action == "cancel":
                await admin.cancel(job_id, actor=actor)
                notice = f"job {job_id} cancelled"
            elif action == "delete":
                await admin.delete(job_id, actor=actor)
                return self._back(request, {"back": "/jobs"}, "/jobs", f"job {job_id} deleted")
            else:
                return self.render(
                    request, "missing.html", status=404, page="", what=f"no action {action!r}"
                )
        except AsyncJobsError as exc:
            notice = str(exc)
        return self._back(request, form, f"/jobs/{job_id}", notice)

    async def retry_dead(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        admin, actor = self.site.admin(), self._actor(request)
        queue = form.get("queue") or None
        done = failed = 0
        after: str | None = None
        while True:
            page = await admin.list_jobs(state=JobState.DEAD, queue=queue, limit=200, after=after)
            for job in page:
                try:
                    await admin.retry(job.id, actor=actor)
                    done += 1
                except AsyncJobsError:
                    failed += 1
            if len(page) < 200:
                break
            after = page[-1].id
        notice = f"{done} dead job(s) queued again" + (f", {failed} could not be" if failed else "")
        return self._back(request, form, "/dead", notice)

    async def queue_action(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        queue, action = request.path_params["queue"], request.path_params["action"]
        admin, actor = self.site.admin(), self._actor(request)
        if action == "pause":
            await admin.pause(queue, actor=actor)
        elif action == "resume":
            await admin.resume(queue, actor=actor)
        else:
            return self.render(
                request, "missing.html", status=404, page="", what=f"no action {action!r}"
            )
        return self._back(request, form, "/", f"queue {queue} {action}d")

    async def schedule_action(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        name, action = request.path_params["name"], request.path_params["action"]
        admin, actor = self.site.admin(), self._actor(request)
        try:
            if action == "trigger":
                job = await admin.trigger(name, actor=actor)
                notice = f"schedule {name} triggered: job {job.id}"
            elif action in ("pause", "resume"):
                await admin.pause_schedule(name, paused=action == "pause", actor=actor)
                notice = f"schedule {name} {action}d"
            else:
                return self.render(
                    request, "missing.html", status=404, page="", what=f"no action {action!r}"
                )
        except AsyncJobsError as exc:
            notice = str(exc)
        return self._back(request, form, "/schedules", notice)

    # -- signing in -----------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        auth = self.site.auth
        if not isinstance(auth, BearerTokens):
            return self.render(
                request,
                "missing.html",
                status=404,
                page="",
                what="this app signs you in through the host application, not a token form",
            )
        if request.method == "GET":
            return self.login_page(request, next_path=request.query_params.get("next", "/"))
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        token = form.get("token", "").strip()
        next_path = form.get("next", "/")
        if auth.identify(token) is None:
            return self.login_page(
                request, status=401, next_path=next_path, error="that token is not valid"
            )
        response = self._back(request, {"back": next_path}, "/", "signed in")
        base = request.scope.get("root_path", "") or "/"
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            path=base,
            httponly=True,
            samesite="strict",
            secure=_over_https(request),
        )
        return response

    async def logout(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        base = request.scope.get("root_path", "")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path=base or "/")
        return response


def _over_https(request: Request) -> bool:
    """Whether the browser reached the app over HTTPS: its cookies are then ``Secure``.

    Behind a proxy that ends TLS, the scheme comes from the server's proxy
    headers handling (``uvicorn --proxy-headers``, on by default for trusted hosts).
    """
    return request.url.scheme == "https"
