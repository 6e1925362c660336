"""The client and how every call reaches the server.

Client construction from a URL (``redis://``, ``rediss://`` TLS, ``unix://``,
AUTH and ACL users in the authority) or a client passed in; the checks at
``open`` that turn a wrong password, a missing permission, a TLS failure or a
server without persistence into one clear message (never with the
password); the scripts' common header and their calls (``EVALSHA``, loading
the script again when the server lost it); the translation of a Redis
failure, after the client's own retries, into a
:class:`~asyncjobs.BackendError`.

Most calls go through the client's connection pool; enqueues go over the
lane (see ``_lane.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

try:
    import redis
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the Redis backend needs redis-py 5 or newer: pip install 'asyncjobs[redis]'"
    ) from None
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._clock import Clock, SystemClock
from ..._exceptions import BackendError, ConfigurationError
from ._codec import num
from ._keys import Keys
from ._lane import NOT_OPEN, Lane
from ._prelude import Script

__all__ = ["Connection", "RedisPersistenceWarning", "redact_url"]

_REDIS_PY_MAJOR = int(redis.__version__.split(".")[0])


class RedisPersistenceWarning(UserWarning):
    """The Redis server may lose jobs: no persistence, an evicting memory policy, or unknown."""


def redact_url(url: str) -> str:
    """*url* with any password (in the authority or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name == "password" for name, _ in pairs):
            query = urlencode(
                [(name, "***" if name == "password" else value) for name, value in pairs]
            )
    return parts._replace(netloc=netloc, query=query).geturl()


def _url_secrets(url: str) -> list[str]:
    """Every password spelled in *url*, to scrub from error messages."""
    parts = urlsplit(url)
    secrets = [parts.password] if parts.password else []
    secrets += [v for k, v in parse_qsl(parts.query) if k == "password" and v]
    return secrets


class Connection:
    """One backend's link to the server: the client, the scripts, the clock they use.

    :param url_or_client: a URL, or a ready client (``decode_responses=False``)
        that stays the caller's to close.
    :param finished_ttl_ms: the scripts' retention of complete and cancelled jobs.
    :param dead_ttl_ms: the same for dead jobs.
    :raises ConfigurationError: for redis-py older than 5, or a client (or
        options) that decodes responses.
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        keys: Keys,
        finished_ttl_ms: int,
        dead_ttl_ms: int,
        check_persistence: bool,
        retries: int,
        retry_backoff_cap: float,
        connect_timeout: float,
        client_options: dict[str, Any],
    ) -> None:
        if isinstance(url_or_client, str):
            self.url: str | None = url_or_client
            self.given_client: aioredis.Redis | None = None
            if client_options.get("decode_responses"):
                raise ConfigurationError("RedisBackend needs decode_responses=False")
        else:
            self.url = None
            self.given_client = url_or_client
            kwargs = url_or_client.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise ConfigurationError(
                    "RedisBackend needs a client made with decode_responses=False "
                    "(payloads are bytes)"
                )
        self.keys = keys
        self._ttls = [str(finished_ttl_ms), str(dead_ttl_ms)]
        self._check_persistence = check_persistence
        self._retries = retries
        self._retry_backoff_cap = retry_backoff_cap
        self._connect_timeout = connect_timeout
        self._client_options = client_options
        self.clock: Clock = SystemClock()
        self._server_time = True
        self.client: aioredis.Redis | None = None
        self.lane: Lane | None = None

    @staticmethod
    def check_driver() -> None:
        """Refuse redis-py older than 5.

        :raises ConfigurationError: with the version found.
        """
        if _REDIS_PY_MAJOR < 5:
            # Older asyncio clients could hand a reply to the wrong caller after a
            # cancellation: wrong results, not errors.
            raise ConfigurationError(
                f"the Redis backend needs redis-py 5 or newer, found {redis.__version__}: "
                "pip install 'asyncjobs[redis]'"
            )

    def address(self) -> str:
        """Where the server is, for a repr: the URL without passwords, or the client's address."""
        if self.url is not None:
            return f"url={redact_url(self.url)!r}"
        assert self.given_client is not None
        kwargs = self.given_client.connection_pool.connection_kwargs
        address = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"client={address!r}"

    def _where(self) -> str:
        if self.url is not None:
            return redact_url(self.url)
        return f"RedisBackend({self.address()}, prefix={self.keys.prefix!r})"

    # -- opening and closing ----------------------------------------------------------

    def _make_client(self, retries: int) -> aioredis.Redis:
        assert self.url is not None
        backoff = (
            EqualJitterBackoff(cap=self._retry_backoff_cap, base=0.05) if retries else NoBackoff()
        )
        options: dict[str, Any] = {
            "socket_connect_timeout": self._connect_timeout,
            "socket_timeout": 30.0,
            # An idle connection (the wake-up subscription above all) that a NAT or
            # load balancer dropped silently is found by a PING, not left hanging.
            "health_check_interval": 15,
            "retry": Retry(backoff, retries),
            **self._client_options,
        }
        if not self.url.lower().startswith("unix:"):
            options.setdefault("socket_keepalive", True)
        options["decode_responses"] = False
        return aioredis.Redis.from_url(self.url, **options)

    async def open(self, clock: Clock, scripts: Sequence[Script]) -> aioredis.Redis:
        """Connect, check the server, and load *scripts*; :returns: the client.

        :raises BackendError: when the server cannot be used (the message never
            contains the password).
        """
        self.clock = clock
        self._server_time = isinstance(clock, SystemClock)
        if self.given_client is not None:
            client = self.given_client
            await self._probe(client, scripts)
        else:
            # Probe without retries, so a wrong password or an unreachable host
            # fails open() at once instead of after the reconnect backoff.
            probe = self._make_client(retries=0)
            try:
                await self._probe(probe, scripts)
            finally:
                await probe.aclose()
            client = self._make_client(self._retries)
        self.client = client
        self.lane = Lane(client)
        return client

    async def aclose(self) -> None:
        """Close the lane and the client (unless the client was passed in)."""
        client, self.client = self.client, None
        lane, self.lane = self.lane, None
        if lane is not None:
            await lane.aclose()
        if client is not None and client is not self.given_client:
            await client.aclose()

    async def _probe(self, client: aioredis.Redis, scripts: Sequence[Script]) -> None:
        try:
            await client.ping()
            await client.time()  # the scripts read it: refused to the user, fail now
            await self._check_version(client)
            # Touch a key and a channel of the prefix, so an ACL user limited to
            # other keys or channels fails here, not at the first claim.
            await client.exists(self.keys.seq)
            await client.publish(self.keys.wake(""), b"")
            # Loading now turns a user without +@scripting into a clear error at open.
            for item in scripts:
                await client.script_load(item.source)
            if self._check_persistence:
                await self._warn_about_persistence(client)
        except BackendError:
            raise
        except (RedisError, OSError) as exc:
            raise BackendError(self._explain(exc)) from None

    def _explain(self, exc: BaseException) -> str:
        """A clear message for a failure at open, with every password scrubbed."""
        text = str(exc)
        reason = f"{type(exc).__name__}: {text}"
        tls = (self.url or "").lower().startswith("rediss:")
        if (
            "NOAUTH" in text
            or "Authentication required" in text
            or "must be called with the client already authenticated" in text
        ):
            hint = "Redis requires a password: put it in the URL (redis://:password@host)"
        elif isinstance(exc, AuthenticationError) or "WRONGPASS" in text:
            hint = "Redis refused the credentials; check the user and password in the URL"
        elif isinstance(exc, NoPermissionError):
            prefix = self.keys.prefix
            hint = (
                "the Redis user lacks a permission the backend needs: it must run "
                "+@read +@write +@scripting +@pubsub +@connection +time commands on "
                f"keys ~{prefix}:* and channels &{prefix}:*"
            )
        elif tls and isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            hint = (
                "cannot connect to Redis over TLS (does the server speak TLS on that "
                "port, and do the certificates verify?)"
            )
        elif isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            hint = "cannot connect to Redis (is it running, and is the address right?)"
        else:
            hint = "Redis cannot be used"
        message = f"{hint}: {self._where()}: {reason}"
        for secret in _url_secrets(self.url or ""):
            message = message.replace(secret, "***")
        return message

    async def _check_version(self, client: aioredis.Redis) -> None:
        try:
            info = await client.info("server")
        except ResponseError:
            return  # INFO refused to a restricted user: the scripts will tell soon enough.
        version = str(info.get("redis_version", "0"))
        major = int(version.split(".")[0] or 0)
        if major < 5:
            raise BackendError(
                f"Redis {version} at {self._where()} is too old: asyncjobs needs 5.0 or newer"
            )

    async def _warn_about_persistence(self, client: aioredis.Redis) -> None:
        # stacklevel 5: this method, _probe, open, RedisBackend.open, its caller.
        try:
            config: dict[Any, Any] = {}
            for name in ("save", "appendonly", "maxmemory-policy"):
                config.update(await client.config_get(name))
        except ResponseError as exc:
            warnings.warn(
                f"could not check that Redis at {self._where()} persists jobs "
                f"(CONFIG GET was refused: {exc}); make sure it runs with appendonly yes "
                "or RDB snapshots, and maxmemory-policy noeviction",
                RedisPersistenceWarning,
                stacklevel=5,
            )
            return
        values = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in config.items()
        }
        if not values.get("save") and values.get("appendonly") != "yes":
            warnings.warn(
                f"Redis at {self._where()} has no persistence (save '' and appendonly no): "
                "every queued job is lost when it restarts; turn on appendonly yes",
                RedisPersistenceWarning,
                stacklevel=5,
            )
        policy = values.get("maxmemory-policy", "noeviction")
        if policy.startswith("allkeys"):
            warnings.warn(
                f"Redis at {self._where()} has maxmemory-policy {policy}: it may evict "
                "queued jobs when memory runs out; use noeviction",
                RedisPersistenceWarning,
                stacklevel=5,
            )

    # -- calls --------------------------------------------------------------------------

    @contextmanager
    def failures(self) -> Iterator[None]:
        """Report a Redis failure (after the client's retries) as a :class:`BackendError`."""
        try:
            yield
        except RedisError as exc:
            raise BackendError(
                f"Redis failed ({self._where()}): {type(exc).__name__}: {exc}"
            ) from exc

    def require_client(self) -> aioredis.Redis:
        """The open client.

        :raises BackendError: when the backend is not open.
        """
        if self.client is None:
            raise BackendError(NOT_OPEN)
        return self.client

    def header(self) -> list[str | bytes]:
        """The four arguments every script starts with (see ``_prelude.py``)."""
        return [
            self.keys.prefix,
            "" if self._server_time else num(self.clock.now()),
            *self._ttls,
        ]

    async def run(self, script: Script, args: Iterable[str | bytes]) -> Any:
        """Run *script* with the common header and *args*; :returns: its reply.

        :raises BackendError: when the backend is not open, or Redis failed.
        """
        client = self.require_client()
        argv = [*self.header(), *args]
        with self.failures():
            try:
                return await client.evalsha(script.sha, 0, *argv)
            except NoScriptError:
                # The server forgot its scripts (a restart, SCRIPT FLUSH): load it again.
                await client.script_load(script.source)
                return await client.evalsha(script.sha, 0, *argv)

    async def run_on_lane(self, script: Script, args: Iterable[str | bytes]) -> Any:
        """Run *script* as :meth:`run` does, over the :class:`Lane`.

        One caller at a time: the caller makes sure no other call is on the lane.

        :raises BackendError: when the backend is not open, or Redis failed.
        """
        lane = self.lane
        if lane is None:
            raise BackendError(NOT_OPEN)
        with self.failures():
            return await lane.evalsha(script, [*self.header(), *args])
