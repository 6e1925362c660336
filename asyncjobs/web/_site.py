"""What every route of the admin app shares: the store, the encoder, the caller, the errors."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .._admin import Admin
from .._exceptions import (
    AsyncJobsError,
    BackendError,
    DuplicateJobError,
    InvalidOptionError,
    JobArgumentsError,
    JobNotFound,
    JobStateError,
    NotRunningError,
    PayloadTooLarge,
    ScheduleNotFound,
    SerializationError,
    UnknownJobError,
    UnknownQueueError,
)
from ._auth import Authenticator, Identity
from ._records import Encoder
from ._validate import InputError, check

if TYPE_CHECKING:
    from .._runtime import JobRuntime

__all__ = ["IDENTITY", "ApiError", "Site", "error_response", "identity_of"]

#: Where the authenticated identity is kept in the ASGI scope.
IDENTITY = "asyncjobs.identity"


class ApiError(Exception):
    """A request the app refuses: HTTP *status*, a short *code* and a message saying what to fix."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, str]:
    """The JSON body of an error."""
    body = {"error": code, "message": message}
    if field:
        body["field"] = field
    return body


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """An error as JSON."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


#: Library exceptions as HTTP answers: (status, code).
_STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnknownJobError, 404, "unknown_job"),
    (JobNotFound, 404, "job_not_found"),
    (ScheduleNotFound, 404, "schedule_not_found"),
    (JobStateError, 409, "wrong_state"),
    (DuplicateJobError, 409, "duplicate_key"),
    (JobArgumentsError, 422, "bad_arguments"),
    (SerializationError, 422, "bad_arguments"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (UnknownQueueError, 422, "unknown_queue"),
    (InvalidOptionError, 422, "invalid_option"),
    (NotRunningError, 503, "not_running"),
    (BackendError, 503, "store_unavailable"),
)


def as_api_error(exc: AsyncJobsError) -> ApiError:
    """The HTTP answer to a library exception."""
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return ApiError(500, "error", f"{type(exc).__name__}: {exc}")


def identity_of(request: Request) -> Identity:
    """The caller, as the authentication step found it."""
    identity = request.scope.get(IDENTITY)
    assert isinstance(identity, Identity)
    return identity


class Site:
    """The admin app's state: what it serves and how."""

    def __init__(
        self,
        target: JobRuntime | Admin,
        *,
        auth: Authenticator | None,
        encoder: Encoder,
        max_body_bytes: int,
        refresh: float,
        metrics: Any,
        title: str,
    ) -> None:
        self.target = target
        self.auth = auth
        self.encoder = encoder
        self.max_body_bytes = max_body_bytes
        self.refresh = refresh
        self.metrics = metrics
        self.title = title

    @property
    def runtime(self) -> JobRuntime | None:
        """The app's runtime, when the app was given one (it can enqueue by name)."""
        return None if isinstance(self.target, Admin) else self.target

    def admin(self) -> Admin:
        """The :class:`Admin` to read and act through.

        :raises ApiError: 503 while the runtime is not started.
        """
        if isinstance(self.target, Admin):
            return self.target
        if not self.target.started:
            raise ApiError(
                503,
                "not_running",
                "the job runtime is not running: start it in the app's lifespan "
                "(lifespan=runtime.lifespan)",
            )
        return self.target.admin

    def configured_queues(self) -> Mapping[str, int]:
        """The queues of the app's runtime (none without one)."""
        runtime = self.runtime
        return runtime.queues if runtime is not None else {}


# --------------------------------------------------------------------------- input


def query_value(request: Request, name: str, schema: Mapping[str, Any], default: Any = None) -> Any:
    """One query parameter, converted and checked against *schema* (400 when it does not fit)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    kind = schema.get("type")
    value: Any = raw
    if kind in ("integer", "number"):
        try:
            value = int(raw) if kind == "integer" else float(raw)
        except ValueError:
            noun = "an integer" if kind == "integer" else "a number"
            raise ApiError(400, "bad_query", f"{name} must be {noun}, got {raw!r}", name) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ApiError(400, "bad_query", f"{name} must be a finite number", name)
    try:
        check(dict(schema), value, name)
    except InputError as exc:
        raise ApiError(400, "bad_query", str(exc), exc.field) from None
    return value


def tag_filters(request: Request) -> dict[str, str] | None:
    """``?tag=key:value`` (repeatable) as a dict."""
    tags: dict[str, str] = {}
    for item in request.query_params.getlist("tag"):
        key, colon, value = item.partition(":")
        if not colon or not key:
            raise ApiError(
                400, "bad_query", f"tag must be KEY:VALUE such as tenant:42, got {item!r}", "tag"
            )
        tags[key] = value
    return tags or None


async def json_body(request: Request, schema: Mapping[str, Any], *, optional: bool) -> Any:
    """The request's JSON body, checked against *schema*.

    :raises ApiError: 400 for malformed JSON, 415 for another content type,
        422 for a body that does not fit.
    """
    raw = await request.body()
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "missing_body", "this request needs a JSON object as its body")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json, not {content_type!r}",
        )
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    try:
        check(dict(schema), value)
    except InputError as exc:
        raise ApiError(422, "invalid_body", str(exc), exc.field) from None
    return value
