"""The enqueue lane: one connection of its own, for calls made by one caller at a time.

Enqueues are where a web process spends its store time, and the lane is how
they reach the server: one ``EVALSHA`` packed here, written and read on a
connection that no other call uses (``_enqueue.py`` sends one call at a time),
which skips the connection pool's and the client's per-command work but keeps
the client's timeouts and retry policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from ..._exceptions import BackendError
from ._prelude import Script

__all__ = ["NOT_OPEN", "Lane"]

NOT_OPEN = "the Redis backend is not open: call open() first"

# A command this short fits in the transport's write buffer (64 KiB) at once, so
# writing it never waits for the server: no timeout is needed around the write.
_SHORT_COMMAND = 16 * 1024


class Lane:
    """One connection of its own, for calls made by one caller at a time.

    It is made by the client's pool (so it has the client's address, TLS,
    credentials, database and timeouts) but is not lent out by it, and it
    keeps the client's retry policy: a connection error or timeout closes it
    and the call is sent again after the backoff, as the client would.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        pool: Any = client.connection_pool
        connection = pool.make_connection()
        self._connection = connection
        self._timeout: float | None = connection.socket_timeout
        self._retry = connection.retry
        encoder = connection.encoder
        self._encoding: str = encoder.encoding
        self._errors: str = encoder.encoding_errors
        self._closed = False

    async def aclose(self) -> None:
        """Close the connection; a call still in flight fails instead of reconnecting."""
        self._closed = True
        await self._connection.disconnect()

    async def evalsha(self, script: Script, args: Sequence[str | bytes]) -> Any:
        """``EVALSHA`` *script* with *args*, loading it first when the server has lost it."""
        command = self._pack([b"EVALSHA", script.sha, b"0", *args])
        try:
            return await self._retry.call_with_retry(
                lambda: self._round_trip(command), self._disconnect
            )
        except NoScriptError:
            load = self._pack([b"SCRIPT", b"LOAD", script.source])
            await self._retry.call_with_retry(lambda: self._round_trip(load), self._disconnect)
            return await self._retry.call_with_retry(
                lambda: self._round_trip(command), self._disconnect
            )

    async def _round_trip(self, command: bytes) -> Any:
        if self._closed:
            raise BackendError(NOT_OPEN)  # not a connection error: never retried
        connection = self._connection
        # Connecting (with its handshake) and the periodic health check run with
        # the connection's timeouts, as in any redis-py call.
        if not connection.is_connected:
            await connection.connect()
        await connection.check_health()
        if len(command) <= _SHORT_COMMAND:
            # redis-py bounds a write with a task of its own when a socket timeout
            # is set, which costs more than the rest of the call; a short write
            # cannot wait, so it goes without (the read keeps the timeout).
            connection.socket_timeout = None
            try:
                await connection.send_packed_command(command, check_health=False)
            finally:
                connection.socket_timeout = self._timeout
        else:
            await connection.send_packed_command(command, check_health=False)
        return await connection.read_response()

    async def _disconnect(self, error: BaseException) -> None:
        await self._connection.disconnect()

    def _pack(self, args: Sequence[str | bytes]) -> bytes:
        """*args* as one RESP array of bulk strings."""
        parts = [b"*%d\r\n" % len(args)]
        encoding, errors = self._encoding, self._errors
        for arg in args:
            data = arg.encode(encoding, errors) if isinstance(arg, str) else arg
            parts += (b"$%d\r\n" % len(data), data, b"\r\n")
        return b"".join(parts)
