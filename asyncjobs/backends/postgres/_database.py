"""The connection pool: opening it (checks and schema), the clock, and every call's errors.

- **Pool**: asyncpg, ``pool_size`` connections at most. A connection goes
  back to the pool without asyncpg's reset round trip (the store keeps no
  session state on them: no ``SET``, no session locks, no ``LISTEN``), only
  rolled back when a cancelled call left a transaction open.
- **Time**: with the :class:`~asyncjobs.SystemClock`, statements read the
  server's clock (``clock_timestamp()``), so every host judges leases by one
  clock, as the Redis store does with ``TIME``; with any other clock (a
  ``ManualClock`` in tests) its ``now()`` is passed as a parameter.
  :data:`NOW` is the CTE every time-judging statement starts with: ``$1`` is
  :meth:`Database.now_arg`, evaluated once per statement, after any lock wait.
- **Errors**: every driver error becomes a :class:`~asyncjobs.BackendError`
  (``_errors.py``), raised rather than retried: the runtime's loops back off
  and call again, and a new connection replaces a broken one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import asyncpg

from ..._clock import Clock, SystemClock
from ..._exceptions import BackendError, ConfigurationError
from . import _schema
from ._errors import (
    MIN_SERVER_VERSION,
    PostgresVersionError,
    connect_error,
    not_open,
    translate,
)

if TYPE_CHECKING:
    from ._catalog import Catalog

__all__ = ["DRIVER_ERRORS", "NOW", "Database", "check_schema_name", "describe", "rows_affected"]

logger = logging.getLogger("asyncjobs")

#: ``now`` for one statement: the parameter ``$1`` when given, else the server's clock.
NOW: Final = (
    "t AS MATERIALIZED (SELECT coalesce($1::float8,"
    " extract(epoch FROM clock_timestamp())::float8) AS now)"
)

#: What the driver raises for a failed call (anything else is a bug, and propagates).
DRIVER_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Errors after which a connection cannot be trusted: it is closed, not pooled again.
_BROKEN: Final = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    OSError,
    TimeoutError,
)

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")


async def _reset(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool: roll back only what a cancelled call left open."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def check_schema_name(schema: str) -> str:
    """*schema* quoted for SQL, once it is known to be a plain identifier.

    :raises ConfigurationError: for a name that is not ``[A-Za-z_][A-Za-z0-9_]*``.
    """
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"schema={schema!r} is not a plain identifier: use letters, digits and "
            "underscores (not starting with a digit), at most 48 characters"
        )
    return f'"{schema}"'


def describe(url: str) -> str:
    """``host:port/database as user`` of *url*, for messages (never the password)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    database = parts.path.lstrip("/") or parts.username or "(default)"
    user = f" as {parts.username}" if parts.username else ""
    return f"{host}:{port}/{database}{user}"


class Database:
    """One PostgreSQL database as one backend object uses it: a pool and the clock.

    The options are checked by :class:`~asyncjobs.backends.postgres.PostgresBackend`
    and documented there.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str,
        pool_size: int,
        connect_timeout: float,
        command_timeout: float,
        statement_cache_size: int,
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.schema = schema
        #: the schema name, quoted, to put in statements.
        self.q = check_schema_name(schema)
        #: the LISTEN/NOTIFY channel of this schema.
        self.channel = f"asyncjobs_{schema}"[:63]
        self._pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self.statement_cache_size = statement_cache_size
        #: Where every due time and lease expiry comes from (set by :meth:`open`).
        self.clock: Clock = SystemClock()
        self._server_time = True
        self.pool: asyncpg.Pool | None = None
        #: every statement, formatted for this schema (set by the backend).
        self.statements: Catalog

    def now_arg(self) -> float | None:
        """``$1`` of :data:`NOW`: the clock's time, or ``None`` for the server's."""
        return None if self._server_time else self.clock.now()

    def connect_kwargs(self) -> dict[str, Any]:
        """The options of every connection this store opens."""
        return {
            "timeout": self.connect_timeout,
            "command_timeout": self._command_timeout,
            "statement_cache_size": self.statement_cache_size,
            "server_settings": {"application_name": "asyncjobs"},
        }

    async def open(self, clock: Clock) -> bool:
        """Connect, check the server and migrate the schema; ``False`` when already open."""
        self.clock = clock
        self._server_time = isinstance(clock, SystemClock)
        if self.pool is not None:
            return False
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                reset=_reset,
                **self.connect_kwargs(),
            )
        except DRIVER_ERRORS as exc:
            raise connect_error(exc, self.where) from None
        try:
            async with pool.acquire() as conn:
                version = int(await conn.fetchval("SHOW server_version_num"))
                if version < MIN_SERVER_VERSION * 10000:
                    raise PostgresVersionError(
                        f"PostgreSQL at {self.where} is version {version // 10000}.{version % 100}"
                        f"; asyncjobs needs {MIN_SERVER_VERSION} or newer: upgrade the server"
                    )
                await _schema.migrate(conn, self.schema, self.q, self.channel)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, DRIVER_ERRORS):
                raise translate(exc, "open", self.where) from None
            raise
        self.pool = pool
        return True

    async def aclose(self) -> None:
        """Close the pool (the calls in flight finish first, for a bounded time)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                await pool.close()
            except DRIVER_ERRORS:
                pool.terminate()

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise not_open(self.where)
        return self.pool

    async def fetch(self, action: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement on a pooled connection (its own transaction); its rows."""
        pool = self._pool()
        try:
            async with pool.acquire() as conn:
                try:
                    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                except _BROKEN:
                    conn.terminate()
                    raise
        except DRIVER_ERRORS as exc:
            raise translate(exc, action, self.where) from None
        return rows

    async def fetchrow(self, action: str, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run one statement; its first row, or ``None``."""
        rows = await self.fetch(action, sql, *args)
        return rows[0] if rows else None

    async def execute(self, action: str, sql: str, *args: Any) -> str:
        """Run one statement; its status (``"DELETE 3"``)."""
        pool = self._pool()
        try:
            async with pool.acquire() as conn:
                try:
                    status: str = await conn.execute(sql, *args)
                except _BROKEN:
                    conn.terminate()
                    raise
        except DRIVER_ERRORS as exc:
            raise translate(exc, action, self.where) from None
        return status

    @asynccontextmanager
    async def transaction(self, action: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside one transaction, committed when the block ends."""
        pool = self._pool()
        try:
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        yield conn
                except _BROKEN:
                    conn.terminate()
                    raise
        except DRIVER_ERRORS as exc:
            raise translate(exc, action, self.where) from None


def rows_affected(status: str) -> int:
    """The row count of a command status such as ``"DELETE 3"``."""
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        raise BackendError(f"unexpected command status {status!r}") from None
