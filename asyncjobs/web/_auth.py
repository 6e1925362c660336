"""Who is asking: identities, roles, the bearer-token check and the explicit opt-out.

An authenticator is any callable that sees the Starlette request and returns
an :class:`Identity` (or ``None`` for "no valid credentials"), directly or
as an awaitable. The app refuses every request it cannot attribute to one.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, TypeAlias

import attrs
from starlette.requests import Request

from .._exceptions import ConfigurationError

__all__ = [
    "ROLES",
    "TOKEN_COOKIE",
    "AllowAll",
    "Authenticator",
    "BearerTokens",
    "Identity",
    "allow_all_unsafe",
    "authenticate",
    "bearer_tokens",
]

logger = logging.getLogger("asyncjobs.web")

Role: TypeAlias = Literal["admin", "viewer"]
#: The roles an identity may have: ``admin`` may act, ``viewer`` only reads.
ROLES: tuple[str, ...] = ("admin", "viewer")
#: The cookie the dashboard's sign-in form stores a bearer token in (HttpOnly, SameSite=Strict).
TOKEN_COOKIE = "asyncjobs_token"


def _role(value: object) -> Role:
    if value == "admin":
        return "admin"
    if value == "viewer":
        return "viewer"
    raise ConfigurationError(f"an identity's role is 'admin' or 'viewer', not {value!r}")


@attrs.frozen
class Identity:
    """Who a request comes from: a name (written to the audit trail) and a role.

    :param name: the actor recorded for every action this identity takes.
    :param role: ``"admin"`` (reads and actions) or ``"viewer"`` (reads only).
    :raises ConfigurationError: for another role or an empty name.
    """

    name: str
    role: Role = attrs.field(default="viewer", converter=_role)

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("an identity needs a non-empty name")

    @property
    def is_admin(self) -> bool:
        """Whether this identity may take actions."""
        return self.role == "admin"


#: What ``admin_app(auth=...)`` accepts: request -> identity, or ``None`` to refuse.
Authenticator: TypeAlias = Callable[[Request], "Identity | Awaitable[Identity | None] | None"]


class BearerTokens:
    """Accept requests carrying one of a fixed set of tokens (made by :func:`bearer_tokens`).

    The token comes in an ``Authorization: Bearer <token>`` header, or in the
    ``asyncjobs_token`` cookie set by the dashboard's sign-in form. Tokens are
    compared in constant time.
    """

    def __init__(self, tokens: Mapping[str, Identity]) -> None:
        if not tokens:
            raise ConfigurationError("bearer_tokens() needs at least one token")
        for token, identity in tokens.items():
            if not isinstance(token, str) or len(token) < 16:
                raise ConfigurationError(
                    "every bearer token must be a string of 16 characters or more "
                    "(make one with: python -c 'import secrets; print(secrets.token_urlsafe())')"
                )
            if not isinstance(identity, Identity):
                raise ConfigurationError(
                    f"bearer_tokens() maps tokens to Identity(...) values, not {identity!r}"
                )
        self._tokens = [(token.encode(), identity) for token, identity in tokens.items()]

    def __repr__(self) -> str:
        return f"<BearerTokens {len(self._tokens)} token(s)>"

    def __call__(self, request: Request) -> Identity | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        offered = value.strip() if scheme.lower() == "bearer" else ""
        return self.identify(offered or request.cookies.get(TOKEN_COOKIE, ""))

    def identify(self, offered: str) -> Identity | None:
        """The identity of token *offered*, or ``None`` when it is none of the tokens."""
        if not offered:
            return None
        given = offered.encode()
        found: Identity | None = None
        for token, identity in self._tokens:
            # Compare against every token, so timing tells nothing about which matched.
            if hmac.compare_digest(token, given):
                found = identity
        return found


def bearer_tokens(tokens: Mapping[str, Identity]) -> BearerTokens:
    """An authenticator accepting the given bearer tokens, each as its identity.

    ``bearer_tokens({os.environ["JOBS_ADMIN_TOKEN"]: Identity("ops", "admin")})``

    :param tokens: token -> identity; each token at least 16 characters.
    :raises ConfigurationError: for no tokens, a short one, or a value that is no Identity.
    """
    return BearerTokens(tokens)


class AllowAll:
    """Serve every request as one identity, unauthenticated (made by :func:`allow_all_unsafe`)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def __repr__(self) -> str:
        return f"<AllowAll {self.identity.name!r} ({self.identity.role})>"

    def __call__(self, request: Request) -> Identity:
        return self.identity


def allow_all_unsafe(name: str = "anonymous", role: Role = "admin") -> AllowAll:
    """Serve every request without credentials, as *name* with *role*: for a laptop only.

    Anyone who can reach the app can then see job arguments and act on jobs;
    the app logs a warning when it is built with this.
    """
    return AllowAll(Identity(name, role))


async def authenticate(auth: Authenticator | None, request: Request) -> Identity | None:
    """Run *auth* on *request*; ``None`` when there is no authenticator or it refuses."""
    if auth is None:
        return None
    answer: object = auth(request)
    if inspect.isawaitable(answer):
        answer = await answer
    if answer is not None and not isinstance(answer, Identity):
        logger.error("the web app's auth returned %r, not an Identity or None", type(answer))
        return None
    return answer if isinstance(answer, Identity) else None
