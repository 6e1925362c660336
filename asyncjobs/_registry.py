"""Job definitions and the decorators that make them.

A :class:`JobRegistry` collects definitions without needing a runtime, so job
modules need not import the app's runtime; ``runtime.include(registry)``
binds it. Each decorated handler becomes a :class:`JobFunction`, whose
``enqueue`` keeps the handler's parameter types for type checkers.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

import attrs

from ._context import JobContext
from ._exceptions import (
    ConfigurationError,
    InvalidOptionError,
    JobArgumentsError,
    NotRunningError,
    UnknownJobError,
)
from ._models import KeyScope, OnConflict
from ._payloads import PayloadTypes, payload_types
from ._queue import RateLimit
from ._queue import check_rate_limit as _check_rate_limit
from ._retry import Backoff, BackoffLike, make_backoff, seconds

if typing.TYPE_CHECKING:
    from ._handle import JobHandle

__all__ = [
    "JobCall",
    "JobDefinition",
    "JobFunction",
    "JobOptions",
    "JobRegistry",
]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_UNSET: Any = object()


def _check_max_attempts(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidOptionError(f"max_attempts must be an int of at least 1, got {value!r}")
    return value


def _check_timeout(value: float | timedelta | None) -> float | None:
    result = seconds(value, "timeout")
    if result == 0:
        raise InvalidOptionError("timeout must be more than 0 seconds (or None for no timeout)")
    return result


def _check_priority(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOptionError(f"priority must be an int (lower runs first), got {value!r}")
    return value


def _check_at(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidOptionError(f"at must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidOptionError(
            f"at={value.isoformat()} is a naive datetime: give it a time zone, "
            "e.g. datetime(..., tzinfo=timezone.utc)"
        )
    return value


def _check_key(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidOptionError(f"key must be a non-empty str, got {value!r}")
    return value


def _check_delay(value: float | timedelta | None) -> float | None:
    return seconds(value, "delay")


#: The longest partition name: partitions are counted per name in the store.
MAX_PARTITION_LENGTH = 128


def _check_partition(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_PARTITION_LENGTH:
        raise InvalidOptionError(
            f"partition must be a non-empty str of at most {MAX_PARTITION_LENGTH} characters, "
            f"got {value!r:.60}"
        )
    return value


def _check_key_scope(value: str | timedelta | None) -> KeyScope | timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise InvalidOptionError(f"a key_scope window must be positive, got {value}")
        return value
    if isinstance(value, str) and value in ("queued", "active"):
        return KeyScope(value)
    raise InvalidOptionError(
        f"key_scope must be 'queued', 'active' or a timedelta (a throttle window), not {value!r}"
    )


#: Tags are for correlation, not data: a few short strings.
MAX_TAGS = 16
MAX_TAG_LENGTH = 200


def _check_tags(value: Mapping[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidOptionError(f"tags must be a dict of str to str, not {type(value).__name__}")
    if len(value) > MAX_TAGS:
        raise InvalidOptionError(f"at most {MAX_TAGS} tags per job, got {len(value)}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            raise InvalidOptionError(
                "tags must map non-empty str keys to str values "
                f"(got a {type(key).__name__} key with a {type(item).__name__} value)"
            )
        if len(key) > MAX_TAG_LENGTH or len(item) > MAX_TAG_LENGTH:
            raise InvalidOptionError(
                f"tag {key[:40]!r} is longer than {MAX_TAG_LENGTH} characters: tags are for "
                "correlation ids and names; pass data as arguments"
            )
    return dict(value)


def _check_on_conflict(value: str | None) -> OnConflict | None:
    if value is None:
        return None
    if isinstance(value, str) and value in ("return", "replace", "raise"):
        return OnConflict(value)
    raise InvalidOptionError(f"on_conflict must be 'return', 'replace' or 'raise', not {value!r}")


def _check_optional_priority(value: int | None) -> int | None:
    return None if value is None else _check_priority(value)


def _check_optional_attempts(value: int | None) -> int | None:
    return None if value is None else _check_max_attempts(value)


@attrs.frozen(kw_only=True)
class JobOptions:
    """Per-enqueue overrides; each ``None`` falls back to the job's definition.

    Validated when made, so a bad value fails at the ``options(...)`` call.
    """

    delay: float | None = attrs.field(default=None, converter=_check_delay)
    at: datetime | None = attrs.field(default=None, converter=_check_at)
    priority: int | None = attrs.field(default=None, converter=_check_optional_priority)
    key: str | None = attrs.field(default=None, converter=_check_key)
    max_attempts: int | None = attrs.field(default=None, converter=_check_optional_attempts)
    timeout: float | None = attrs.field(default=None, converter=_check_timeout)
    queue: str | None = None
    partition: str | None = attrs.field(default=None, converter=_check_partition)
    key_scope: KeyScope | timedelta | None = attrs.field(default=None, converter=_check_key_scope)
    on_conflict: OnConflict | None = attrs.field(default=None, converter=_check_on_conflict)
    tags: Mapping[str, str] | None = attrs.field(default=None, converter=_check_tags, repr=False)
    #: an open transaction of the caller's to enqueue in (stores with ``enqueue_on`` only).
    connection: Any = attrs.field(default=None, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.delay is not None and self.at is not None:
            raise InvalidOptionError("give either delay or at, not both")
        if self.key is None and (self.key_scope is not None or self.on_conflict is not None):
            given = "key_scope" if self.key_scope is not None else "on_conflict"
            raise InvalidOptionError(f"{given} needs a key: options(key=..., {given}=...)")


@attrs.frozen(kw_only=True)
class JobDefinition:
    """Everything the runtime knows about one job name."""

    name: str
    function: Callable[..., Any]
    queue: str
    #: ``None`` (here and for ``backoff``, ``priority``): the queue's default, else the runtime's.
    max_attempts: int | None
    backoff: Backoff | None
    timeout: float | None
    priority: int | None
    is_async: bool
    #: the name of the parameter that receives the :class:`JobContext`, if any.
    context_parameter: str | None
    #: its position when it may be passed positionally (then it is inserted there).
    context_position: int | None
    #: the handler's signature without the context parameter: what enqueue binds to.
    signature: inspect.Signature
    #: starts of this job name allowed per period, cluster-wide.
    rate_limit: RateLimit | None = None
    #: how arguments and result convert by the handler's annotations; ``None``: plain JSON.
    types: PayloadTypes | None = None

    #: for plain signatures (no ``*args``, ``**kwargs`` or positional-only
    #: parameters): the parameter names and the required ones, for a fast check.
    _plain: tuple[tuple[str, ...], frozenset[str]] | None = attrs.field(
        init=False, default=None, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        parameters = self.signature.parameters.values()
        if all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters):
            positional = tuple(p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD)
            required = frozenset(p.name for p in parameters if p.default is p.empty)
            object.__setattr__(self, "_plain", (positional, required))

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Check that *args* and *kwargs* bind to the handler.

        :raises JobArgumentsError: naming the job and what does not fit.
        """
        plain = self._plain
        if plain is not None:
            # Enqueue is a hot path: for plain signatures a set check replaces
            # inspect's general binder; anything unusual takes the general path
            # below, which also words the error.
            positional, required = plain
            if len(args) <= len(positional):
                given = set(positional[: len(args)])
                if (
                    given.isdisjoint(kwargs)
                    and required <= given.union(kwargs)
                    and all(name in self.signature.parameters for name in kwargs)
                ):
                    return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            problem = str(exc)
            takes_any = any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in self.signature.parameters.values()
            )
            unknown = [
                name
                for name in kwargs
                if not takes_any
                and (
                    name not in self.signature.parameters
                    or self.signature.parameters[name].kind is inspect.Parameter.POSITIONAL_ONLY
                )
            ]
            if unknown:
                # inspect reports the first missing parameter; the unknown name is the news.
                problem = f"unexpected keyword argument{'s' if len(unknown) > 1 else ''} " + (
                    ", ".join(repr(name) for name in unknown)
                )
            bare = self.signature.replace(
                parameters=[
                    p.replace(annotation=inspect.Parameter.empty)
                    for p in self.signature.parameters.values()
                ],
                return_annotation=inspect.Signature.empty,
            )
            raise JobArgumentsError(
                f"arguments for job {self.name!r} do not match {self.name}{bare}: {problem}"
            ) from None


@attrs.frozen(kw_only=True)
class JobCall(Generic[R_co]):
    """One job to enqueue: a definition, its arguments, and options.

    Made by :meth:`JobFunction.call`; pass several to ``runtime.enqueue_many``.
    """

    definition: JobDefinition
    # Arguments may hold secrets: a repr names how many there are, never what they say.
    args: tuple[Any, ...] = attrs.field(
        repr=lambda args: f"<{len(args)} value{'' if len(args) == 1 else 's'}>"
    )
    kwargs: Mapping[str, Any] = attrs.field(
        repr=lambda kwargs: f"<{', '.join(sorted(kwargs)) or 'no keywords'}>"
    )
    options: JobOptions


class _Enqueuer(Protocol):
    async def enqueue_many(self, calls: list[JobCall[R]]) -> list[JobHandle[R]]: ...


class JobFunction(Generic[P, R]):
    """A registered job: call :meth:`enqueue` to run it in the background.

    The handler stays reachable as :attr:`function` (for direct calls in tests).
    """

    def __init__(
        self, definition: JobDefinition, registry: JobRegistry, options: JobOptions | None = None
    ) -> None:
        self.definition = definition
        self._registry = registry
        self._options = options or JobOptions()

    @property
    def name(self) -> str:
        """The registered job name."""
        return self.definition.name

    @property
    def function(self) -> Callable[..., Any]:
        """The undecorated handler."""
        return self.definition.function

    def __repr__(self) -> str:
        return f"<JobFunction {self.definition.name!r} queue={self.definition.queue!r}>"

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        priority: int | None = None,
        key: str | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
        partition: str | None = None,
        key_scope: str | timedelta | None = None,
        on_conflict: str | None = None,
        tags: Mapping[str, str] | None = None,
        connection: Any = None,
    ) -> JobFunction[P, R]:
        """Return this job with enqueue options set.

        :param delay: run no earlier than this long after enqueueing.
        :param at: run no earlier than this aware datetime.
        :param priority: lower runs first (default: the job's priority).
        :param key: a dedup key: while a job holds it (see *key_scope*),
            enqueueing another with it meets *on_conflict*.
        :param max_attempts: attempts before the job goes dead.
        :param timeout: seconds (or timedelta) an attempt may run.
        :param queue: run on this queue instead of the job's own (checked at enqueue).
        :param partition: a short string (a tenant, a customer): partitions of a
            queue take turns, and ``Queue(partition_concurrency=)`` caps each.
        :param key_scope: how long the job holds its key: ``"queued"`` (until it
            starts), ``"active"`` (until it finishes; the default) or a
            timedelta (that long after enqueue, whatever happens: a throttle).
        :param on_conflict: when the key is held: ``"return"`` the holder (the
            default), ``"replace"`` its arguments and due time (debounce; a
            running holder is left alone and this job queues behind it, starting
            once the holder is finished: ``Job.waits_for``), or
            ``"raise"`` :class:`~asyncjobs.DuplicateJobError`.
        :param tags: a small str -> str map (tenant, correlation id) stored with
            the job, read as ``ctx.tags``, filterable in listings, never logged
            (merged with tags given before).
        :param connection: enqueue inside the caller's open transaction on this
            connection of the app's own database (``PostgresBackend``: an asyncpg
            connection): the job exists if and only if that transaction commits,
            and workers wake at the commit. Other stores refuse it at enqueue.
        :raises InvalidOptionError: for a negative or NaN delay, a naive ``at``,
            ``max_attempts < 1``, a non-positive timeout, both delay and at, a
            partition that is not a short string, an unknown *key_scope* or
            *on_conflict*, or either of those without a key.
        """
        given: dict[str, Any] = {
            "delay": delay,
            "at": at,
            "priority": priority,
            "key": key,
            "max_attempts": max_attempts,
            "timeout": timeout,
            "queue": queue,
            "partition": partition,
            "key_scope": key_scope,
            "on_conflict": on_conflict,
            "tags": {**(self._options.tags or {}), **tags} if tags is not None else None,
            "connection": connection,
        }
        merged = attrs.evolve(
            self._options, **{name: value for name, value in given.items() if value is not None}
        )
        return JobFunction(self.definition, self._registry, merged)

    def call(self, *args: P.args, **kwargs: P.kwargs) -> JobCall[R]:
        """Describe one run of this job without enqueueing it (for ``enqueue_many``).

        :raises JobArgumentsError: when the arguments do not bind to the handler.
        """
        self.definition.bind(args, kwargs)
        return JobCall(definition=self.definition, args=args, kwargs=kwargs, options=self._options)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Store the job for a worker to run; return its handle.

        Arguments are bound to the handler's signature and encoded before
        anything is stored, so a bad call changes nothing.

        :raises JobArgumentsError: arguments that do not bind.
        :raises SerializationError: arguments the codec cannot encode.
        :raises PayloadTooLarge: encoded arguments over the runtime's limit.
        :raises NotRunningError: when the registry is not bound to a started runtime.
        """
        call = self.call(*args, **kwargs)
        handles = await self._registry.enqueuer.enqueue_many([call])
        return handles[0]


class _JobDecorator:
    """The decorator ``registry.job(...)`` returns; overloads keep parameter types."""

    def __init__(self, registry: JobRegistry, settings: dict[str, Any]) -> None:
        self._registry = registry
        self._settings = settings

    @overload
    def __call__(
        self, function: Callable[typing.Concatenate[JobContext, P], Awaitable[R]]
    ) -> JobFunction[P, R]: ...

    @overload
    def __call__(self, function: Callable[P, Awaitable[R]]) -> JobFunction[P, R]: ...

    @overload
    def __call__(self, function: Callable[P, R]) -> JobFunction[P, R]: ...

    def __call__(self, function: Callable[..., Any]) -> JobFunction[Any, Any]:
        definition = make_definition(function, **self._settings)
        return self._registry.add(definition)


def _context_parameter(function: Callable[..., Any], signature: inspect.Signature) -> str | None:
    try:
        hints = typing.get_type_hints(function)
    except Exception:
        # Unresolvable forward references: fall back to the raw annotations.
        hints = {name: p.annotation for name, p in signature.parameters.items()}
    for name in signature.parameters:
        hint = hints.get(name)
        if hint is JobContext or hint == "JobContext":
            return name
    return None


def make_definition(
    function: Callable[..., Any],
    *,
    name: str | None,
    queue: str,
    max_attempts: int | None,
    backoff: BackoffLike,
    timeout: float | timedelta | None,
    priority: int | None,
    rate_limit: RateLimit | None = None,
) -> JobDefinition:
    """Validate a handler and its settings into a :class:`JobDefinition`.

    :raises ConfigurationError: for a handler that is not callable, or annotated
        with a type payloads cannot carry.
    :raises InvalidOptionError: for invalid settings.
    """
    if not callable(function):
        raise ConfigurationError(f"a job handler must be callable, got {function!r}")
    signature = inspect.signature(function)
    context_parameter = _context_parameter(function, signature)
    context_position = None
    if context_parameter is not None:
        parameter = signature.parameters[context_parameter]
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            context_position = list(signature.parameters).index(context_parameter)
        signature = signature.replace(
            parameters=[p for n, p in signature.parameters.items() if n != context_parameter]
        )
    job_name = name if name is not None else _default_name(function)
    if not isinstance(job_name, str) or not job_name:
        raise InvalidOptionError(f"a job name must be a non-empty str, got {job_name!r}")
    if not isinstance(queue, str) or not queue:
        raise InvalidOptionError(f"queue must be a non-empty str, got {queue!r}")
    is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - async callable objects count too
    )
    return JobDefinition(
        name=job_name,
        function=function,
        queue=queue,
        max_attempts=_check_optional_attempts(max_attempts),
        backoff=None if backoff is None else make_backoff(backoff),
        timeout=_check_timeout(timeout),
        priority=_check_optional_priority(priority),
        rate_limit=_check_rate_limit(rate_limit),
        is_async=is_async,
        context_parameter=context_parameter,
        context_position=context_position,
        signature=signature,
        types=payload_types(function, signature, job_name),
    )


def _default_name(function: Callable[..., Any]) -> str:
    qualname = getattr(function, "__qualname__", None) or type(function).__name__
    return f"{getattr(function, '__module__', '?')}:{qualname}"


class JobRegistry:
    """A set of job definitions, independent of any runtime.

    Define jobs in a module with ``jobs = JobRegistry()`` and ``@jobs.job()``,
    then ``runtime.include(jobs)`` where the runtime is made.
    """

    def __init__(self) -> None:
        self._definitions: dict[str, JobDefinition] = {}
        self._enqueuer: _Enqueuer | None = None
        self._on_add: Callable[[JobDefinition], None] | None = None

    def __repr__(self) -> str:
        return f"JobRegistry({sorted(self._definitions)})"

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __len__(self) -> int:
        return len(self._definitions)

    @property
    def definitions(self) -> Mapping[str, JobDefinition]:
        """The registered definitions by name (read-only view)."""
        return dict(self._definitions)

    @property
    def enqueuer(self) -> _Enqueuer:
        """The runtime jobs of this registry are enqueued through.

        :raises NotRunningError: when the registry was not included in a runtime.
        """
        if self._enqueuer is None:
            raise NotRunningError(
                "this job registry is not included in a runtime: call runtime.include(registry)"
            )
        return self._enqueuer

    def bind(self, enqueuer: _Enqueuer, on_add: Callable[[JobDefinition], None]) -> None:
        """Route this registry's enqueues through *enqueuer*; *on_add* vets new definitions."""
        for definition in self._definitions.values():
            on_add(definition)
        self._enqueuer = enqueuer
        self._on_add = on_add

    def job(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        max_attempts: int | None = None,
        backoff: BackoffLike = None,
        timeout: float | timedelta | None = None,
        priority: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> _JobDecorator:
        """Register the decorated function as a job.

        :param name: the stored job name (default: ``module:qualname``). Keep it
            stable: queued jobs find their handler by it.
        :param queue: the queue it runs on.
        :param max_attempts: attempts before it goes dead (at least 1; default:
            its queue's ``Queue(max_attempts=)``, else 3).
        :param backoff: delay between attempts: a policy, seconds, a timedelta,
            or a function of the attempt number (default: its queue's, else the
            runtime's ``default_backoff``, else exponential with full jitter).
        :param timeout: seconds an attempt may run before it fails (default: its queue's).
        :param priority: lower runs first (default: its queue's, else 0).
        :param rate_limit: at most so many starts of this job per period, across
            every process and queue (:class:`~asyncjobs.RateLimit`).
        :raises InvalidOptionError: for invalid settings.
        :raises UnknownQueueError: (on a runtime) for a queue it was not configured with.
        """
        settings = {
            "name": name,
            "queue": queue,
            "max_attempts": _check_optional_attempts(max_attempts),
            "backoff": None if backoff is None else make_backoff(backoff),
            "timeout": _check_timeout(timeout),
            "priority": _check_optional_priority(priority),
            "rate_limit": _check_rate_limit(rate_limit),
        }
        return _JobDecorator(self, settings)

    def add(self, definition: JobDefinition) -> JobFunction[Any, Any]:
        """Register a ready-made definition and return its job function.

        :raises ConfigurationError: when another handler already has the name.
        """
        existing = self._definitions.get(definition.name)
        if existing is not None and existing.function is not definition.function:
            raise ConfigurationError(
                f"job name {definition.name!r} is already registered for "
                f"{existing.function!r}; pass name= to tell them apart"
            )
        if self._on_add is not None:
            self._on_add(definition)
        self._definitions[definition.name] = definition
        return JobFunction(definition, self)

    def get(self, name: str) -> JobDefinition:
        """Return the definition registered as *name*.

        :raises UnknownJobError: when no job has that name.
        """
        try:
            return self._definitions[name]
        except KeyError:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise UnknownJobError(
                f"no job is registered as {name!r} (registered: {known})"
            ) from None
