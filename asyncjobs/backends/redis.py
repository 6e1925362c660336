"""The Redis backend: jobs shared by every process that reaches one Redis server.

Every operation that changes more than one key runs as one Lua script
(loaded once, called with ``EVALSHA``), so it is atomic in the server and
costs one round trip: a whole claim batch, a whole outcome batch, a whole
enqueue batch. Times are float seconds since the epoch. Opened with a
:class:`~asyncjobs.SystemClock`, the scripts read the time from the server
(``TIME``), so every host judges leases by one clock; any other clock (a
test's :class:`~asyncjobs.ManualClock`) passes its ``now()`` in.

Key layout under the prefix ``P`` (default ``asyncjobs``)::

    P:job:<id>              hash    one job; its fields are named after Job's attributes
                                    (error as error_type/error_message/error_traceback,
                                    plus seq, the enqueue order); finished jobs expire
                                    (finished_ttl, dead_ttl)
    P:jobs                  zset    every job id by seq (listing, newest first)
    P:seq                   string  the enqueue-order counter
    P:key:<key>             string  dedup key -> id of the queued or running job holding it
    P:queues                set     every queue name ever enqueued to
    P:paused                set     paused queue names
    P:q:<queue>:ready       zset    due jobs in claim order: score = priority, member =
                                    due_at (%018.6f) + seq (%016d) + id, so equal
                                    priorities sort by due time, then enqueue order
    P:q:<queue>:delayed     zset    queued jobs not yet due, by due_at (moved to ready
                                    by the claim that finds them due)
    P:q:<queue>:running     zset    running jobs by lease expiry (crash recovery)
    P:q:<queue>:complete    zset    finished jobs by finished_at (prune), one per
    P:q:<queue>:dead                final state
    P:q:<queue>:cancelled
    P:expiry                zset    finished jobs by the server time their hash expires,
                                    member = state:len(queue):queue+id; scripts sweep it to
                                    drop expired jobs from the indexes above
    P:schedule:<name>       hash    one schedule; fields named after Schedule's attributes
    P:schedules             set     schedule names
    P:wake:<queue>          channel published when a queue gets work (enqueue, retry,
                                    release, recovery, resume)

Every key is bounded: a job's keys live while it is active, and for
``finished_ttl`` (``dead_ttl`` for dead jobs) after it finished, or until
:meth:`RedisBackend.prune` deletes it. Redis Cluster is not supported (the
scripts touch keys of many jobs); a restricted ACL user needs ``~P:*`` keys,
``&P:*`` channels and the commands of ``+@read +@write +@scripting +@pubsub
+@connection +time`` (``CONFIG`` only for the persistence check, which is
skipped with a warning when refused).
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import attrs

try:
    import redis
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the Redis backend needs redis-py 5 or newer: pip install 'asyncjobs[redis]'"
    ) from None
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._clock import Clock, SystemClock
from .._exceptions import BackendError, ConfigurationError
from .._models import (
    FINISHED_STATES,
    ErrorInfo,
    Handoff,
    Job,
    JobState,
    NewJob,
    Outcome,
    OutcomeKind,
    QueueStats,
    Schedule,
)
from . import HeartbeatReply
from ._redis_scripts import _JOB_FIELDS, _SCRIPTS

__all__ = ["RedisBackend", "RedisPersistenceWarning"]

logger = logging.getLogger("asyncjobs")


class RedisPersistenceWarning(UserWarning):
    """The Redis server may lose jobs: no persistence, an evicting memory policy, or unknown."""


_EXPIRED_ERROR = ErrorInfo(
    type="LeaseExpired",
    message="the worker running this job stopped heartbeating (it crashed or hung)",
)
_REDIS_PY_MAJOR = int(redis.__version__.split(".")[0])
# Bounds on the work one script call does, so no call blocks the server for long.
_PRUNE_CHUNK = 1_000
_LIST_CHUNK = 2_000
_LISTEN_TIMEOUT = 30.0
_LISTEN_BACKOFF_CAP = 2.0


# -- encoding -----------------------------------------------------------------


def _num(value: float) -> str:
    """A float as exact text (repr round-trips; Lua's tonumber reads it back exactly)."""
    return repr(float(value))


def _seconds(value: float | timedelta | None) -> float:
    if value is None:
        return 0.0
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ConfigurationError(f"a retention must not be negative, got {seconds}s")
    return seconds


def _job_args(new: NewJob) -> list[str | bytes]:
    """The script arguments of one new job (see ``insert_jobs`` in the Lua prelude)."""
    flags = (
        ("k" if new.key is not None else "")
        + ("s" if new.schedule is not None else "")
        + ("f" if new.fire_at is not None else "")
    )
    head = (
        f"{flags}|{_num(new.due_at)}|{_num(new.enqueued_at)}|{int(new.priority)}|"
        f"{int(new.max_attempts)}|{'' if new.timeout is None else _num(new.timeout)}"
    )
    args: list[str | bytes] = [new.id, new.name, new.queue, new.payload, head]
    if new.key is not None:
        args.append(new.key)
    if new.schedule is not None:
        args.append(new.schedule)
    if new.fire_at is not None:
        args.append(_num(new.fire_at))
    return args


_KIND_CODES = {
    OutcomeKind.COMPLETE: "c",
    OutcomeKind.RETRY: "r",
    OutcomeKind.RELEASE: "l",
    OutcomeKind.DEAD: "d",
    OutcomeKind.CANCELLED: "x",
}


def _outcome_args(outcome: Outcome) -> list[str | bytes]:
    """The script arguments of one outcome (see ``_SETTLE``): only the values it has."""
    code = _KIND_CODES[OutcomeKind(outcome.kind)]
    args: list[str | bytes] = [outcome.job_id, outcome.lease_token, ""]
    if outcome.result is not None:
        code += "R"
        args.append(outcome.result)
    if outcome.due_at is not None:
        code += "D"
        args.append(_num(outcome.due_at))
    error = outcome.error
    if error is not None:
        code += "E"
        args += [error.type, error.message]
        if error.traceback is not None:
            code += "T"
            args.append(error.traceback)
    args[2] = code
    return args


def _pairs(raw: Any) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _unpack(packed: bytes) -> list[bytes | None]:
    """Split a job packed by the scripts' ``pack_job`` into its field values."""
    values: list[bytes | None] = []
    pos, end = 0, len(packed)
    while pos < end:
        if packed[pos] == 45:  # "-": the field is absent
            values.append(None)
            pos += 1
            continue
        colon = packed.index(b":", pos)
        start = colon + 1
        pos = start + int(packed[pos:colon])
        values.append(packed[start:pos])
    return values


def _decode_job(values: Sequence[bytes | None]) -> Job:
    """Turn a job's field values, in :data:`_JOB_FIELDS` order, into a :class:`Job`."""
    (
        job_id,
        name,
        queue,
        payload,
        state,
        due_at,
        enqueued_at,
        priority,
        attempts,
        max_attempts,
        timeout,
        key,
        schedule,
        lease_token,
        lease_expires_at,
        worker_id,
        started_at,
        finished_at,
        result,
        error_type,
        error_message,
        error_traceback,
        progress,
        progress_message,
        cancel_requested,
        fire_at,
    ) = values
    if (
        job_id is None
        or name is None
        or queue is None
        or payload is None
        or state is None
        or due_at is None
        or enqueued_at is None
        or priority is None
        or attempts is None
        or max_attempts is None
    ):
        raise BackendError(f"a job hash in Redis is incomplete: {values[0]!r}")
    error = None
    if error_type is not None:
        error = ErrorInfo(
            type=error_type.decode(),
            message=(error_message or b"").decode(),
            traceback=_text(error_traceback),
        )
    return Job(
        id=job_id.decode(),
        name=name.decode(),
        queue=queue.decode(),
        payload=payload,
        state=JobState(state.decode()),
        due_at=float(due_at),
        enqueued_at=float(enqueued_at),
        priority=int(priority),
        attempts=int(attempts),
        max_attempts=int(max_attempts),
        timeout=_float(timeout),
        key=_text(key),
        schedule=_text(schedule),
        fire_at=_float(fire_at),
        lease_token=_text(lease_token),
        lease_expires_at=_float(lease_expires_at),
        worker_id=_text(worker_id),
        started_at=_float(started_at),
        finished_at=_float(finished_at),
        result=result,
        error=error,
        progress=_float(progress),
        progress_message=_text(progress_message),
        cancel_requested=cancel_requested == b"1",
    )


def _decode_packed(packed: bytes) -> Job:
    return _decode_job(_unpack(packed))


def _schedule_fields(schedule: Schedule) -> list[str | bytes]:
    """A schedule as hash field/value pairs; ``None`` fields are left out."""
    fields: list[str | bytes] = [
        "name",
        schedule.name,
        "job_name",
        schedule.job_name,
        "queue",
        schedule.queue,
        "trigger",
        schedule.trigger,
        "payload",
        schedule.payload,
        "misfire",
        schedule.misfire,
        "grace",
        _num(schedule.grace),
        "overlap",
        "1" if schedule.overlap else "0",
        "paused",
        "1" if schedule.paused else "0",
        "priority",
        str(int(schedule.priority)),
        "max_attempts",
        str(int(schedule.max_attempts)),
    ]
    optional = {
        "next_fire_at": schedule.next_fire_at,
        "last_fire_at": schedule.last_fire_at,
        "timeout": schedule.timeout,
    }
    for name, value in optional.items():
        if value is not None:
            fields += [name, _num(value)]
    return fields


def _decode_schedule(raw: Any) -> Schedule:
    fields = _pairs(raw)
    get = fields.get
    return Schedule(
        name=fields[b"name"].decode(),
        job_name=fields[b"job_name"].decode(),
        queue=fields[b"queue"].decode(),
        trigger=fields[b"trigger"].decode(),
        payload=fields[b"payload"],
        next_fire_at=_float(get(b"next_fire_at")),
        last_fire_at=_float(get(b"last_fire_at")),
        misfire=fields[b"misfire"].decode(),
        grace=float(fields[b"grace"]),
        overlap=get(b"overlap") == b"1",
        paused=get(b"paused") == b"1",
        priority=int(fields[b"priority"]),
        max_attempts=int(fields[b"max_attempts"]),
        timeout=_float(get(b"timeout")),
    )


def _redact_url(url: str) -> str:
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


# -- the backend --------------------------------------------------------------


class RedisBackend:
    """Jobs in a Redis server (5.0 or newer), shared by every process that reaches it.

    :param url_or_client: a URL (``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` for TLS, ``unix:///path/to/redis.sock``; query options as
        redis-py reads them), or a ready ``redis.asyncio.Redis`` client (made
        with ``decode_responses=False``; the caller keeps ownership of it).
    :param prefix: the namespace of every key and channel (see the module docs);
        backends with different prefixes share a server without meeting.
    :param finished_ttl: how long complete and cancelled jobs are kept (seconds or
        ``timedelta``; ``None`` keeps them until :meth:`prune`).
    :param dead_ttl: the same for dead jobs, kept longer by default for inspection.
    :param check_persistence: warn (:class:`RedisPersistenceWarning`) at :meth:`open`
        when the server would lose jobs on a restart.
    :param retries: how many times a command is retried while the server is
        unreachable (e.g. restarting), with jittered exponential backoff: about
        10 s in all by default. Ignored for a client passed in, which keeps its
        own retry policy. :meth:`open` itself does not retry.
    :param retry_backoff_cap: the longest pause between two retries, in seconds.
    :param connect_timeout: seconds to wait for a connection (URL only).
    :param client_options: more keyword arguments for ``redis.asyncio.Redis.from_url``.
    :raises ConfigurationError: for an empty prefix, a negative retention, a client
        that decodes responses, or redis-py older than 5.
    """

    def __init__(
        self,
        url_or_client: str | aioredis.Redis,
        *,
        prefix: str = "asyncjobs",
        finished_ttl: float | timedelta | None = timedelta(days=7),
        dead_ttl: float | timedelta | None = timedelta(days=30),
        check_persistence: bool = True,
        retries: int = 10,
        retry_backoff_cap: float = 2.0,
        connect_timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        if _REDIS_PY_MAJOR < 5:
            # Older asyncio clients could hand a reply to the wrong caller after a
            # cancellation: wrong results, not errors.
            raise ConfigurationError(
                f"the Redis backend needs redis-py 5 or newer, found {redis.__version__}: "
                "pip install 'asyncjobs[redis]'"
            )
        if not prefix:
            raise ConfigurationError("the Redis key prefix must not be empty")
        if isinstance(url_or_client, str):
            self._url: str | None = url_or_client
            self._given_client: aioredis.Redis | None = None
            if client_options.get("decode_responses"):
                raise ConfigurationError("RedisBackend needs decode_responses=False")
        else:
            self._url = None
            self._given_client = url_or_client
            kwargs = url_or_client.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise ConfigurationError(
                    "RedisBackend needs a client made with decode_responses=False "
                    "(payloads are bytes)"
                )
        self._prefix = prefix
        self._finished_ttl_ms = round(_seconds(finished_ttl) * 1000)
        self._dead_ttl_ms = round(_seconds(dead_ttl) * 1000)
        self._check_persistence = check_persistence
        self._retries = retries
        self._retry_backoff_cap = retry_backoff_cap
        self._connect_timeout = connect_timeout
        self._client_options = client_options
        self._clock: Clock = SystemClock()
        self._server_time = True
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._pubsub: Any = None
        # Wake channels wanted by some waiter so far, and those subscribed to.
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._subscribe_lock = anyio.Lock()
        # One waiter at a time reads the subscription (the listener); the others
        # stand by and take over when it leaves (the vacancy event fires).
        self._listening = False
        self._vacancy = anyio.Event()
        # One event per waiter, with its channels: a clock may set a waiter's event
        # as its deadline timer (ManualClock does), which must not wake anyone else.
        self._waiters: dict[anyio.Event, frozenset[str]] = {}

    def __repr__(self) -> str:
        if self._url is not None:
            where = f"url={_redact_url(self._url)!r}"
        else:
            assert self._given_client is not None
            kwargs = self._given_client.connection_pool.connection_kwargs
            address = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
            where = f"client={address!r}"
        return f"RedisBackend({where}, prefix={self._prefix!r})"

    # -- lifecycle ------------------------------------------------------------

    def _make_client(self, retries: int) -> aioredis.Redis:
        assert self._url is not None
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
        if not self._url.lower().startswith("unix:"):
            options.setdefault("socket_keepalive", True)
        options["decode_responses"] = False
        return aioredis.Redis.from_url(self._url, **options)

    async def open(self, clock: Clock) -> None:
        """Connect, load the scripts, and check the server keeps jobs safely.

        :param clock: the clock; a :class:`~asyncjobs.SystemClock` means "read the
            server's time", so every host judges leases by one clock.
        :raises BackendError: when the server cannot be reached, refuses the
            credentials, fails the TLS handshake, or refuses the commands the
            backend needs (the message never contains the password).
        """
        if self._client is not None:
            await self.aclose()  # opened again: drop the old connections first
        self._clock = clock
        self._server_time = isinstance(clock, SystemClock)
        if self._given_client is not None:
            client = self._given_client
            await self._probe(client)
        else:
            # Probe without retries, so a wrong password or an unreachable host
            # fails open() at once instead of after the reconnect backoff.
            probe = self._make_client(retries=0)
            try:
                await self._probe(probe)
            finally:
                await probe.aclose()
            client = self._make_client(self._retries)
        self._client = client
        self._scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}
        self._pubsub = client.pubsub()
        self._wanted = set()
        self._subscribed = set()

    async def _probe(self, client: aioredis.Redis) -> None:
        try:
            await client.ping()
            await client.time()  # the scripts read it: refused to the user, fail now
            await self._check_version(client)
            # Touch a key and a channel of the prefix, so an ACL user limited to
            # other keys or channels fails here, not at the first claim.
            await client.exists(f"{self._prefix}:seq")
            await client.publish(f"{self._prefix}:wake:", b"")
            # Loading now turns a user without +@scripting into a clear error at open.
            for source in _SCRIPTS.values():
                await client.script_load(source)
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
        tls = (self._url or "").lower().startswith("rediss:")
        if (
            "NOAUTH" in text
            or "Authentication required" in text
            or "must be called with the client already authenticated" in text
        ):
            hint = "Redis requires a password: put it in the URL (redis://:password@host)"
        elif isinstance(exc, AuthenticationError) or "WRONGPASS" in text:
            hint = "Redis refused the credentials; check the user and password in the URL"
        elif isinstance(exc, NoPermissionError):
            hint = (
                "the Redis user lacks a permission the backend needs: it must run "
                "+@read +@write +@scripting +@pubsub +@connection +time commands on "
                f"keys ~{self._prefix}:* and channels &{self._prefix}:*"
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
        for secret in _url_secrets(self._url or ""):
            message = message.replace(secret, "***")
        return message

    def _where(self) -> str:
        if self._url is not None:
            return _redact_url(self._url)
        return repr(self)

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
                stacklevel=4,
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
                stacklevel=4,
            )
        policy = values.get("maxmemory-policy", "noeviction")
        if policy.startswith("allkeys"):
            warnings.warn(
                f"Redis at {self._where()} has maxmemory-policy {policy}: it may evict "
                "queued jobs when memory runs out; use noeviction",
                RedisPersistenceWarning,
                stacklevel=4,
            )

    async def aclose(self) -> None:
        """Close the connections (a client passed in stays open); :meth:`open` works again."""
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        self._wanted = set()
        self._subscribed = set()
        self._notify()  # waiters return; their listener stops with the subscription
        if pubsub is not None:
            await pubsub.aclose()
        if client is not None and client is not self._given_client:
            await client.aclose()

    # -- internals ------------------------------------------------------------

    def _header(self) -> list[str | bytes]:
        return [
            self._prefix,
            "" if self._server_time else _num(self._clock.now()),
            str(self._finished_ttl_ms),
            str(self._dead_ttl_ms),
        ]

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """Report a Redis failure (after the client's retries) as a :class:`BackendError`."""
        try:
            yield
        except RedisError as exc:
            raise BackendError(
                f"Redis failed ({self._where()}): {type(exc).__name__}: {exc}"
            ) from exc

    async def _run(self, name: str, args: Iterable[str | bytes]) -> Any:
        script = self._scripts.get(name)
        if script is None:
            raise BackendError("the Redis backend is not open: call open() first")
        with self._failures():
            return await script(args=[*self._header(), *args])

    def _require_client(self) -> aioredis.Redis:
        if self._client is None:
            raise BackendError("the Redis backend is not open: call open() first")
        return self._client

    def _channel(self, queue: str) -> str:
        return f"{self._prefix}:wake:{queue}"

    def _notify(self, queues: Iterable[str] | None = None) -> None:
        """Wake this object's waiters on *queues* (``None``: every waiter)."""
        if queues is None:
            for waiter in self._waiters:
                waiter.set()
            return
        self._wake_channels({self._channel(queue) for queue in queues})

    def _wake_channels(self, channels: set[str]) -> None:
        for waiter, wanted in self._waiters.items():
            if not wanted.isdisjoint(channels):
                waiter.set()

    def _decode_enqueued(self, news: Sequence[NewJob], replies: Sequence[Any]) -> list[Job]:
        # The script lists only the jobs it did not insert, as (index, packed job).
        jobs = [new.queued() for new in news]
        for i in range(0, len(replies), 2):
            jobs[int(replies[i])] = _decode_packed(replies[i + 1])
        return jobs

    # -- writing jobs ---------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], handoff: Handoff | None = None) -> list[Job]:
        """Insert *jobs* in one script; a matching active ``key`` returns the existing job."""
        if not jobs:
            return []
        args: list[str | bytes] = [str(len(jobs))]
        for new in jobs:
            args += _job_args(new)
        if handoff is None or not handoff.limits:
            replies = await self._run("enqueue", args)
            self._notify({new.queue for new in jobs})
            return self._decode_enqueued(jobs, replies)
        head: list[str | bytes] = [
            handoff.worker_id,
            _num(handoff.lease),
            uuid.uuid4().hex,
            str(len(handoff.limits)),
        ]
        for queue, limit in handoff.limits.items():
            head += [queue, str(int(limit))]
        replies, claimed, expires, now = await self._run("enqueue_claim", head + args)
        stored = self._decode_enqueued(jobs, replies)
        tokens = {claimed[i].decode(): claimed[i + 1].decode() for i in range(0, len(claimed), 2)}
        for i, job in enumerate(stored):
            token = tokens.get(job.id)
            if token is not None:
                stored[i] = attrs.evolve(
                    job,
                    state=JobState.RUNNING,
                    attempts=1,
                    lease_token=token,
                    lease_expires_at=float(expires),
                    worker_id=handoff.worker_id,
                    started_at=float(now),
                )
        self._notify({job.queue for job in stored if job.state is JobState.QUEUED})
        return stored

    async def claim(self, queue: str, limit: int, worker_id: str, lease: float) -> list[Job]:
        """Claim up to *limit* due jobs of *queue* in one script, each with a fresh token."""
        if limit <= 0:
            return []
        replies = await self._run(
            "claim", [queue, str(int(limit)), worker_id, _num(lease), uuid.uuid4().hex]
        )
        return [_decode_packed(reply) for reply in replies]

    async def heartbeat(self, leases: Mapping[str, str], lease: float) -> HeartbeatReply:
        """Extend the leases this worker still holds, in one script."""
        if not leases:
            return HeartbeatReply()
        args: list[str | bytes] = [_num(lease)]
        for job_id, token in leases.items():
            args += [job_id, token]
        lost, cancel = await self._run("heartbeat", args)
        return HeartbeatReply(
            lost=frozenset(item.decode() for item in lost),
            cancel_requested=frozenset(item.decode() for item in cancel),
        )

    async def settle(self, outcomes: Sequence[Outcome]) -> list[str]:
        """Apply a batch of outcomes in one script; return the ids whose token was stale."""
        if not outcomes:
            return []
        args: list[str | bytes] = []
        for item in outcomes:
            args += _outcome_args(item)
        refused, woken = await self._run("settle", args)
        if woken:
            self._notify(queue.decode() for queue in woken)
        return [job_id.decode() for job_id in refused]

    async def recover_expired(self) -> int:
        """Requeue (or kill, when out of attempts) running jobs whose lease ran out."""
        count, woken = await self._run("recover", [_EXPIRED_ERROR.type, _EXPIRED_ERROR.message])
        if woken:
            self._notify(queue.decode() for queue in woken)
        return int(count)

    async def set_progress(
        self, job_id: str, lease_token: str, progress: float, message: str | None
    ) -> bool:
        """Store a running job's progress; ``False`` when the lease is no longer held."""
        reply = await self._run(
            "set_progress",
            [
                job_id,
                lease_token,
                _num(progress),
                "0" if message is None else "1",
                message or "",
            ],
        )
        return bool(reply)

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job, or flag a running one; a finished job stays as it is."""
        reply = await self._run("cancel", [job_id])
        return None if reply is None else _decode_packed(reply)

    async def retry_dead(self, job_id: str, due_at: float) -> Job | None:
        """Queue a dead job again at *due_at* with its attempts reset."""
        reply = await self._run("retry_dead", [job_id, _num(due_at)])
        if reply is None:
            return None
        job = _decode_packed(reply)
        if job.state is JobState.QUEUED:
            self._notify([job.queue])
        return job

    async def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause or resume *queue* for every process; resuming wakes the waiting workers."""
        await self._run("pause_queue", [queue, "1" if paused else "0"])
        if not paused:
            self._notify([queue])

    async def prune(self, cutoffs: Mapping[JobState, float]) -> int:
        """Delete finished jobs whose ``finished_at`` is before their state's cutoff.

        Runs in chunks of a thousand jobs, each one atomic.
        """
        args: list[str | bytes] = []
        for state, cutoff in cutoffs.items():
            if JobState(state) in FINISHED_STATES:
                args += [JobState(state).value, _num(cutoff)]
        total = 0
        while True:
            deleted = int(await self._run("prune", [str(_PRUNE_CHUNK), *args]))
            total += deleted
            if deleted < _PRUNE_CHUNK or not args:
                return total

    # -- reading --------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job, or ``None`` when it does not exist (or has expired)."""
        client = self._require_client()
        with self._failures():
            values = cast(
                "list[bytes | None]",
                await client.hmget(f"{self._prefix}:job:{job_id}", _JOB_FIELDS),
            )
        return None if values[0] is None else _decode_job(values)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        name: str | None = None,
        schedule: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Return a page of jobs matching every given filter, newest enqueued first.

        Filtering scans the enqueue index in chunks on the server; a page of an
        unfiltered listing costs two round trips.
        """
        client = self._require_client()
        if limit <= 0:
            return []
        offset = max(0, offset)
        flags = (
            ("q" if queue is not None else "")
            + ("s" if state is not None else "")
            + ("n" if name is not None else "")
            + ("c" if schedule is not None else "")
        )
        if not flags:
            # decode_responses=False: members come back as bytes.
            with self._failures():
                raw_ids = cast(
                    "list[bytes]",
                    await client.zrevrange(f"{self._prefix}:jobs", offset, offset + limit - 1),
                )
            ids = [item.decode() for item in raw_ids]
        else:
            matches: list[str] = []
            rank = 0
            while len(matches) < offset + limit:
                scanned, found = await self._run(
                    "list_scan",
                    [
                        str(rank),
                        str(_LIST_CHUNK),
                        flags,
                        queue or "",
                        "" if state is None else JobState(state).value,
                        name or "",
                        schedule or "",
                    ],
                )
                matches += [item.decode() for item in found]
                if scanned < _LIST_CHUNK:
                    break
                rank += _LIST_CHUNK
            ids = matches[offset : offset + limit]
        if not ids:
            return []
        with self._failures():
            async with client.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(f"{self._prefix}:job:{job_id}", _JOB_FIELDS)
                rows = await pipe.execute()
        # A job can expire or be pruned between the two steps: leave it out.
        return [_decode_job(values) for values in rows if values[0] is not None]

    async def queue_stats(self) -> list[QueueStats]:
        """Return job counts by state for every queue that has jobs or is paused."""
        flat = await self._run("queue_stats", [])
        stats: list[QueueStats] = []
        states = (
            JobState.QUEUED,
            JobState.RUNNING,
            JobState.COMPLETE,
            JobState.DEAD,
            JobState.CANCELLED,
        )
        for i in range(0, len(flat), 7):
            counts = {
                state: int(count) for state, count in zip(states, flat[i + 2 : i + 7], strict=True)
            }
            stats.append(
                QueueStats(
                    queue=flat[i].decode(),
                    counts={state: count for state, count in counts.items() if count},
                    paused=bool(flat[i + 1]),
                )
            )
        stats.sort(key=lambda item: item.queue)
        return stats

    async def next_due_at(self, queues: Collection[str]) -> float | None:
        """Return the earliest ``due_at`` of queued jobs in unpaused *queues*."""
        if not queues:
            return None
        reply = await self._run("next_due", list(queues))
        return None if reply is None else float(reply)

    # -- waiting for work -----------------------------------------------------

    async def wait_for_work(
        self,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None = None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*.

        Enqueues through this object wake at once; every other change that
        makes work (another process's enqueue, a retry, a recovery, a resumed
        queue) arrives on the queues' ``wake`` channels. One waiter at a time
        reads the subscription for all of this object's waiters. The first wait
        on a queue returns as soon as its channel is subscribed, so a job
        enqueued between the caller's last claim and the subscription is not
        missed; later messages queue up in the connection between waits.
        """
        if self._pubsub is None:
            raise BackendError("the Redis backend is not open: call open() first")
        channels = frozenset(self._channel(queue) for queue in queues)
        wakeup = wakeup or anyio.Event()
        self._waiters[wakeup] = channels
        try:
            if not channels:
                await self._clock.wait(wakeup, deadline)
                return
            self._wanted |= channels
            if channels - self._subscribed:
                await self._subscribe()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stand_by)
                await self._clock.wait(wakeup, deadline)
                tg.cancel_scope.cancel()
        finally:
            del self._waiters[wakeup]

    async def _subscribe(self) -> None:
        async with self._subscribe_lock:
            missing = self._wanted - self._subscribed
            if not missing or self._pubsub is None:
                return
            try:
                await self._pubsub.subscribe(*sorted(missing))
            except (RedisError, OSError) as exc:
                # The listener tries again while the server is away.
                logger.debug("cannot subscribe to Redis wake-ups yet: %s", exc)
                return
            self._subscribed |= missing

    async def _stand_by(self) -> None:
        """Listen when nobody else does; otherwise wait until the listener leaves."""
        while self._pubsub is not None:
            if not self._listening:
                await self._listen()
                return
            await self._vacancy.wait()

    async def _listen(self) -> None:
        """Turn messages on the wake channels into wake-ups, until cancelled.

        A subscribe confirmation wakes that channel's waiters too: it follows a
        new subscription or a reconnect, and messages may have been missed
        before it.
        """
        self._listening = True
        backoff = 0.05
        failing = False
        try:
            while self._pubsub is not None:
                pubsub = self._pubsub
                try:
                    if self._wanted - self._subscribed:
                        await self._subscribe()
                    if not self._subscribed:
                        # The server is away (subscribing failed): nothing to read yet.
                        await anyio.sleep(backoff)
                        backoff = min(backoff * 2, _LISTEN_BACKOFF_CAP)
                        continue
                    message = await pubsub.get_message(timeout=_LISTEN_TIMEOUT)
                except (RedisError, OSError) as exc:
                    # Once per outage at warning level; the retries after it quietly.
                    log = logger.debug if failing else logger.warning
                    log("the Redis wake-up channel failed (%s); retrying", exc)
                    failing = True
                    self._notify()  # messages may be lost: let every waiter claim
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, _LISTEN_BACKOFF_CAP)
                    continue
                if failing:
                    logger.info("the Redis wake-up channel is back")
                    failing = False
                backoff = 0.05
                if message is not None and message.get("type") in ("message", "subscribe"):
                    channel = message["channel"]
                    self._wake_channels(
                        {channel.decode() if isinstance(channel, bytes) else str(channel)}
                    )
        finally:
            self._listening = False
            vacancy, self._vacancy = self._vacancy, anyio.Event()
            vacancy.set()

    # -- schedules ------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace a schedule, keeping its timing when the trigger is unchanged."""
        reply = await self._run(
            "put_schedule", [schedule.name, schedule.trigger, *_schedule_fields(schedule)]
        )
        return _decode_schedule(reply)

    async def get_schedule(self, name: str) -> Schedule | None:
        """Return one schedule, or ``None``."""
        client = self._require_client()
        with self._failures():
            fields = await client.hgetall(f"{self._prefix}:schedule:{name}")
        return _decode_schedule(fields) if fields else None

    async def list_schedules(self) -> list[Schedule]:
        """Return every stored schedule, ordered by name."""
        client = self._require_client()
        with self._failures():
            raw_names = cast("set[bytes]", await client.smembers(f"{self._prefix}:schedules"))
            names = sorted(item.decode() for item in raw_names)
            if not names:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(f"{self._prefix}:schedule:{name}")
                hashes = await pipe.execute()
        return [_decode_schedule(fields) for fields in hashes if fields]

    async def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; ``False`` when there was none."""
        return bool(await self._run("remove_schedule", [name]))

    async def pause_schedule(self, name: str, paused: bool) -> Schedule | None:
        """Pause or resume a schedule; ``None`` when there is none."""
        reply = await self._run("pause_schedule", [name, "1" if paused else "0"])
        return None if reply is None else _decode_schedule(reply)

    async def fire_schedule(
        self,
        name: str,
        expected_fire_at: float,
        next_fire_at: float | None,
        jobs: Sequence[NewJob],
    ) -> list[Job] | None:
        """Fire one tick: compare-and-set ``next_fire_at`` and enqueue *jobs* in one script.

        :returns: the enqueued jobs, or ``None`` when the tick was fired already
            (or the schedule is paused or gone); then nothing is written.
        """
        args: list[str | bytes] = [
            name,
            _num(expected_fire_at),
            "0" if next_fire_at is None else "1",
            "" if next_fire_at is None else _num(next_fire_at),
            str(len(jobs)),
        ]
        for new in jobs:
            args += _job_args(new)
        replies = await self._run("fire_schedule", args)
        if replies is None:
            return None
        if jobs:
            self._notify({new.queue for new in jobs})
        return self._decode_enqueued(jobs, replies)
