"""The exception classes, and driver errors turned into ones that say what to fix.

Messages name the server (host, port, database, user) but never the password,
a payload or a result: they end up in logs.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ..._exceptions import BackendError

__all__ = [
    "MIN_SERVER_VERSION",
    "PostgresAuthError",
    "PostgresDatabaseMissingError",
    "PostgresUnreachableError",
    "PostgresVersionError",
    "connect_error",
    "not_open",
    "redact_url",
    "translate",
]

#: The oldest server this store runs on: 13 (``gen_random_uuid()`` built in).
MIN_SERVER_VERSION = 13


class PostgresUnreachableError(BackendError):
    """The server did not answer: it is down, the address is wrong, or a firewall is in the way."""


class PostgresAuthError(BackendError):
    """The server refused the user or password (or ``pg_hba.conf`` has no entry for it)."""


class PostgresDatabaseMissingError(BackendError):
    """The database named in the URL does not exist on the server."""


class PostgresVersionError(BackendError):
    """The server is older than :data:`MIN_SERVER_VERSION`."""


def redact_url(url: str) -> str:
    """*url* with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def not_open(where: str) -> BackendError:
    """The error of a call made on a backend that is not open."""
    return BackendError(
        f"PostgresBackend({where}) is not open: call open() first "
        "(the runtime does this in `async with runtime`)"
    )


def connect_error(exc: BaseException, where: str) -> BackendError:
    """Turn a failure to connect into the error that says what to fix."""
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return PostgresAuthError(
            f"PostgreSQL at {where} refused the login ({exc}): check the user and password "
            "in the URL, and that pg_hba.conf lets this user in from this host"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return PostgresDatabaseMissingError(
            f"PostgreSQL at {where}: {exc}. Create it (createdb, or CREATE DATABASE) or "
            "point the URL at an existing database"
        )
    if isinstance(exc, OSError | TimeoutError | asyncpg.CannotConnectNowError):
        return PostgresUnreachableError(
            f"PostgreSQL at {where} is unreachable ({type(exc).__name__}: {exc}): check "
            "that the server is running and that the host and port in the URL are right"
        )
    return translate(exc, "connect", where)


def translate(exc: BaseException, action: str, where: str) -> BackendError:
    """Turn a driver error during *action* into a :class:`BackendError`."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError,
    ):
        return PostgresUnreachableError(
            f"{action} on PostgreSQL at {where} failed: the connection was lost "
            f"({type(exc).__name__}: {exc}); it is tried again once the server answers"
        )
    return BackendError(f"{action} on PostgreSQL at {where} failed: {type(exc).__name__}: {exc}")
