"""``admin_app()``: the JSON API and the dashboard behind one gate.

The gate runs before any route: it bounds the body, finds the caller (401
without credentials), refuses every state-changing request from a viewer
(403) and, for the JSON API, any that a browser could send cross-site
without the app's say (a form post carrying a cookie), and adds security
headers to every answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._admin import Admin
from ._api import api_routes, openapi_paths
from ._auth import AllowAll, Authenticator, BearerTokens, authenticate
from ._dashboard import CSRF_COOKIE, CSRF_HEADER, Dashboard
from ._openapi import document
from ._records import Encoder
from ._site import IDENTITY, ApiError, Site, error_response

if TYPE_CHECKING:
    from .._runtime import JobRuntime

__all__ = ["admin_app"]

logger = logging.getLogger("asyncjobs.web")

#: Paths served without credentials (the sign-in form).
_PUBLIC = frozenset({"/login"})
_READS = frozenset({"GET", "HEAD"})


def route_path(scope: Scope) -> str:
    """The request path below where the app is mounted."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


class _Gate:
    """Body limit, authentication, roles, cross-site checks and headers, before any route."""

    def __init__(self, app: ASGIApp, site: Site, dashboard: Dashboard) -> None:
        self.app = app
        self.site = site
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secured = _secure(send)
        limit = self.site.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await _too_large(limit)(scope, receive, secured)
            return
        body, receive = await _buffer(receive, limit)
        if body is None:
            await _too_large(limit)(scope, receive, secured)
            return
        request = Request(scope, receive)
        path = route_path(scope)
        if path not in _PUBLIC:
            identity = await authenticate(self.site.auth, request)
            if identity is None:
                await self._unauthorized(request, path)(scope, receive, secured)
                return
            scope[IDENTITY] = identity
            if request.method not in _READS:
                refusal = self._refusal(request, path, identity.is_admin)
                if refusal is not None:
                    await refusal(scope, receive, secured)
                    return
        await self.app(scope, receive, secured)

    def _unauthorized(self, request: Request, path: str) -> Response:
        browser = "text/html" in request.headers.get("accept", "")
        if browser and request.method in _READS and isinstance(self.site.auth, BearerTokens):
            return self.dashboard.login_page(request, status=401, next_path=path)
        if self.site.auth is None:
            message = (
                "this admin app has no auth configured, so it serves no one: pass "
                "admin_app(..., auth=bearer_tokens({...})) or another check"
            )
        else:
            message = "credentials are missing or not valid: send Authorization: Bearer <token>"
        return error_response(401, "unauthorized", message)

    @staticmethod
    def _refusal(request: Request, path: str, admin: bool) -> Response | None:
        if path in ("/logout",):
            return None
        if not admin:
            return error_response(
                403, "forbidden", "this identity has the viewer role: actions need the admin role"
            )
        if path.startswith("/api/"):
            # A cross-site page can post a form (with the browser's cookies) but can
            # send neither an Authorization header nor a JSON content type nor our
            # header without a CORS preflight, which this app never grants.
            headers = request.headers
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            csrf = headers.get(CSRF_HEADER, "")
            if not (
                "authorization" in headers
                or content_type == "application/json"
                or (csrf and csrf == request.cookies.get(CSRF_COOKIE))
            ):
                return error_response(
                    403,
                    "cross_site",
                    "a state-changing API request needs an Authorization header, a JSON "
                    f"body or the {CSRF_HEADER} header",
                )
        return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> Response:
    return error_response(
        413, "body_too_large", f"the request body is over the limit of {limit} bytes"
    )


async def _buffer(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """Read the whole body (``None`` when over *limit*) and a receive that replays it."""
    chunks: list[bytes] = []
    size = 0
    more = True
    disconnect: Message | None = None
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnect = message
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, receive
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            if disconnect is not None:
                return disconnect
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
)


def _secure(send: Send) -> Send:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers.extend(item for item in _HEADERS if item[0] not in present)
            message = {**message, "headers": headers}
        await send(message)

    return secured


def admin_app(
    runtime: JobRuntime | Admin,
    *,
    auth: Authenticator | None = None,
    hide_arguments: Collection[str] | bool = (),
    max_body_bytes: int = 1 << 20,
    refresh: float = 1.0,
    metrics: Any = None,
    title: str = "asyncjobs",
) -> ASGIApp:
    """The admin HTTP API and live dashboard of *runtime*, as an ASGI app to mount.

    ``app.mount("/jobs", admin_app(runtime, auth=tokens))`` with
    ``tokens = bearer_tokens({token: Identity("ops", "admin")})``.

    Closed by default: without *auth* every request is answered 401. Actions
    (POST and DELETE) need the ``admin`` role and are audited with the
    identity's name; a ``viewer`` reads only.

    :param runtime: the app's :class:`~asyncjobs.JobRuntime` (started by the
        app's lifespan; needed to enqueue jobs by name), or an
        :class:`~asyncjobs.Admin` on a store alone (everything but enqueue).
    :param auth: who may use the app: :func:`bearer_tokens`, any callable taking
        the Starlette request and returning an :class:`Identity` or ``None``
        (sync or async), or :func:`allow_all_unsafe` to serve everyone.
    :param hide_arguments: job names whose arguments and results are never
        shown (``True``: no job's are).
    :param max_body_bytes: the largest request body accepted (413 above it).
    :param refresh: seconds between the dashboard's live updates (sooner on a
        local event when given a runtime).
    :param metrics: a :class:`~asyncjobs.integrations.prometheus.Metrics` to
        serve at ``/metrics``; without one, ``/metrics`` reads the store's gauges
        at each scrape (when prometheus-client is installed).
    :param title: the dashboard's title.
    :raises ConfigurationError: for a non-positive body limit or refresh.
    """
    from .._exceptions import ConfigurationError

    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ConfigurationError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    if not refresh > 0:
        raise ConfigurationError(f"refresh must be more than 0 seconds, got {refresh!r}")
    if isinstance(auth, AllowAll):
        logger.warning(
            "the asyncjobs admin app serves everyone without credentials, as %r with the %s "
            "role (allow_all_unsafe): do not expose it beyond this machine",
            auth.identity.name,
            auth.identity.role,
        )
    codec = runtime.codec if not isinstance(runtime, Admin) else None
    encoder = (
        Encoder(codec, hide_arguments)
        if codec is not None
        else Encoder(hide_arguments=hide_arguments)
    )
    site = Site(
        runtime,
        auth=auth,
        encoder=encoder,
        max_body_bytes=max_body_bytes,
        refresh=float(refresh),
        metrics=metrics,
        title=title,
    )
    dashboard = Dashboard(site)
    spec = document(openapi_paths(), title=f"{title} admin API", version=__version__)
    spec_body = json.dumps(spec).encode()

    async def openapi(request: Request) -> Response:
        return Response(spec_body, media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found", f"no route {route_path(request.scope)!r} here")

    async def wrong_method(request: Request, exc: Exception) -> Response:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here")

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status >= 500:
            logger.warning("admin app: %s", exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.field)

    async def crashed(request: Request, exc: Exception) -> Response:
        logger.exception("admin app: %s %s failed", request.method, route_path(request.scope))
        return JSONResponse(
            {"error": "internal", "message": "the server failed; see its log"}, status_code=500
        )

    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        *api_routes(site),
        *dashboard.routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            404: not_found,
            405: wrong_method,
            ApiError: api_error,
            Exception: crashed,
        },
    )
    return _Gate(app, site, dashboard)
