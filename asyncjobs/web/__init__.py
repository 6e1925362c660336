"""The admin HTTP API and live dashboard, to mount in the host app (extra ``[web]``).

::

    from asyncjobs.web import Identity, admin_app, bearer_tokens

    app.mount("/jobs", admin_app(runtime, auth=bearer_tokens({token: Identity("ops", "admin")})))

Closed by default: without ``auth`` every request is refused (401). The
dashboard is server-rendered (Jinja2, autoescaped) with live updates over
Server-Sent Events and nothing loaded from outside the package; the JSON
API is described by the OpenAPI document it serves at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from ._app import admin_app
from ._auth import (
    ROLES,
    AllowAll,
    Authenticator,
    BearerTokens,
    Identity,
    allow_all_unsafe,
    bearer_tokens,
)

__all__ = [
    "ROLES",
    "AllowAll",
    "Authenticator",
    "BearerTokens",
    "Identity",
    "admin_app",
    "allow_all_unsafe",
    "bearer_tokens",
    "openapi_document",
]


def openapi_document(title: str = "asyncjobs") -> dict[str, Any]:
    """The OpenAPI 3.1 document the app serves at ``/openapi.json`` (for clients and tests)."""
    from .. import __version__
    from ._api import openapi_paths
    from ._openapi import document

    return document(openapi_paths(), title=f"{title} admin API", version=__version__)
