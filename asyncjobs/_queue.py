"""How a queue's jobs are run: :class:`Queue` and :class:`RateLimit`, as the user writes them.

A :class:`Queue` holds a per-process cap (``concurrency``), a share of the
runtime's pool (``weight``), cluster-wide limits that the store enforces at
claim time (``global_concurrency``, ``rate_limit``, ``partition_concurrency``)
and defaults for its jobs. :meth:`Queue.claim_limits` turns the cluster-wide
part into the data a store's ``claim_limited`` takes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from ._exceptions import ConfigurationError, InvalidOptionError
from ._limits import Slots
from ._models import ClaimLimits, RateWindow
from ._retry import Backoff, BackoffLike, make_backoff, seconds

if TYPE_CHECKING:
    from ._registry import JobDefinition

__all__ = ["DEFAULT_POOL", "Queue", "QueuePlan", "RateLimit", "claim_limits"]


def _positive_int(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidOptionError(f"{what} must be an int of at least 1, got {value!r}")
    return value


def _limit(value: int) -> int:
    checked = _positive_int(value, "RateLimit limit")
    if checked is None:
        raise InvalidOptionError("RateLimit limit must be an int of at least 1, got None")
    return checked


def _concurrency(value: int | None) -> int | None:
    return _positive_int(value, "Queue concurrency")


def _global_concurrency(value: int | None) -> int | None:
    return _positive_int(value, "Queue global_concurrency")


def _partition_concurrency(value: int | None) -> int | None:
    return _positive_int(value, "Queue partition_concurrency")


def _max_attempts(value: int | None) -> int | None:
    return _positive_int(value, "Queue max_attempts")


def _period(value: float | timedelta) -> float:
    result = seconds(value, "RateLimit per")
    if not result:
        raise InvalidOptionError(f"RateLimit per must be more than 0 seconds, got {value!r}")
    return result


@attrs.frozen
class RateLimit:
    """At most *limit* job starts in any *per* (seconds or timedelta), across every process.

    A sliding window over claims, judged by the store's clock: in no
    interval of length *per* do more than *limit* jobs start. There is no
    burst beyond *limit*; a full window opens again *per* after its oldest
    start, and held jobs are claimed then (no polling).

    ``RateLimit(100, per=timedelta(minutes=1))``; ``RateLimit(10, per=1)``.
    """

    limit: int = attrs.field(converter=_limit)
    per: float = attrs.field(kw_only=True, converter=_period)

    def window(self) -> RateWindow:
        """The store's view of this limit."""
        return RateWindow(limit=self.limit, per=self.per)


def _weight(value: float) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not value > 0
        or value == float("inf")
    ):
        raise InvalidOptionError(f"Queue weight must be a number above 0, got {value!r}")
    return float(value)


def check_rate_limit(value: RateLimit | None) -> RateLimit | None:
    """Check a ``rate_limit=`` value."""
    if value is not None and not isinstance(value, RateLimit):
        raise InvalidOptionError(
            f"rate_limit must be a RateLimit(limit, per=...), not {type(value).__name__}"
        )
    return value


def _optional_backoff(value: BackoffLike | Backoff | None) -> Backoff | None:
    return None if value is None else make_backoff(value)


def _optional_timeout(value: float | timedelta | None) -> float | None:
    result = seconds(value, "Queue timeout")
    if result == 0:
        raise InvalidOptionError("Queue timeout must be more than 0 seconds (or None)")
    return result


def _optional_priority(value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise InvalidOptionError(f"Queue priority must be an int, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class Queue:
    """One queue's limits and job defaults.

    :param concurrency: how many of its jobs this process runs at once (a hard
        cap; default: the runtime's whole pool).
    :param weight: its share of the pool when several queues have due work
        (``queue_selection="weighted"``); ignored under ``"strict"``.
    :param global_concurrency: at most this many of its jobs running in the
        whole cluster (every process sharing the store).
    :param rate_limit: at most so many starts per period, cluster-wide.
    :param partition_concurrency: at most this many running per partition
        (``job.options(partition=...)``), cluster-wide.
    :param max_attempts: default attempts for its jobs (a job's own setting wins).
    :param backoff: default backoff between attempts for its jobs.
    :param timeout: default timeout for its jobs.
    :param priority: default priority for its jobs.
    :raises InvalidOptionError: for a value that cannot work.
    """

    concurrency: int | None = attrs.field(default=None, converter=_concurrency)
    weight: float = attrs.field(default=1.0, converter=_weight)
    global_concurrency: int | None = attrs.field(default=None, converter=_global_concurrency)
    rate_limit: RateLimit | None = attrs.field(default=None, converter=check_rate_limit)
    partition_concurrency: int | None = attrs.field(default=None, converter=_partition_concurrency)
    max_attempts: int | None = attrs.field(default=None, converter=_max_attempts)
    backoff: Backoff | None = attrs.field(default=None, converter=_optional_backoff)
    timeout: float | None = attrs.field(default=None, converter=_optional_timeout)
    priority: int | None = attrs.field(default=None, converter=_optional_priority)

    @property
    def limited(self) -> bool:
        """Whether the store must enforce a cluster-wide limit for this queue."""
        return (
            self.global_concurrency is not None
            or self.rate_limit is not None
            or self.partition_concurrency is not None
        )


def claim_limits(queue: Queue, job_rates: Mapping[str, RateLimit]) -> ClaimLimits | None:
    """The limits a claim of *queue* carries (``None`` when nothing is limited).

    :param job_rates: rate limits per job name (of every job that may run on the queue).
    """
    if not queue.limited and not job_rates:
        return None
    return ClaimLimits(
        global_concurrency=queue.global_concurrency,
        partition_concurrency=queue.partition_concurrency,
        rate=queue.rate_limit.window() if queue.rate_limit is not None else None,
        job_rates={name: rate.window() for name, rate in job_rates.items()},
    )


#: The pool shared by queues without their own ``concurrency`` when the runtime
#: is given no ``max_concurrency``.
DEFAULT_POOL = 10


@attrs.frozen
class QueuePlan:
    """The runtime's queues as configured: their settings, the pool, and how it is shared.

    Made once from ``JobRuntime(queues=..., max_concurrency=..., queue_selection=...)``;
    each start of the runtime makes fresh :class:`~asyncjobs._limits.Slots` from it.
    """

    queues: Mapping[str, Queue]
    max_concurrency: int | None
    selection: str
    prefetch: int

    @classmethod
    def make(
        cls,
        queues: Mapping[str, int | Queue] | None,
        max_concurrency: int | None,
        selection: str,
        prefetch: int,
    ) -> QueuePlan:
        """Normalise ``queues=`` (an int means ``Queue(concurrency=int)``).

        :raises ConfigurationError: for a queue value that is neither.
        """
        if queues is None:
            queues = {"default": 10}
        if not queues:
            raise ConfigurationError("queues must name at least one queue")
        settings: dict[str, Queue] = {}
        for name, value in queues.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"queue names must be non-empty str, got {name!r}")
            if isinstance(value, Queue):
                settings[name] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                if value < 1:
                    raise ConfigurationError(
                        f"queue {name!r} needs a concurrency limit of at least 1, got {value!r}"
                    )
                settings[name] = Queue(concurrency=value)
            else:
                raise ConfigurationError(
                    f"queue {name!r} must be a Queue(...) or a concurrency int, got {value!r}"
                )
        return cls(settings, max_concurrency, selection, prefetch)

    @property
    def pool(self) -> int:
        """The shared pool: ``max_concurrency``, else the caps added up (when all queues
        have one), else :data:`DEFAULT_POOL`."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        caps = [queue.concurrency for queue in self.queues.values()]
        if all(cap is not None for cap in caps):
            return sum(cap for cap in caps if cap is not None)
        return DEFAULT_POOL

    @property
    def limits(self) -> dict[str, int]:
        """Per queue, how many of its jobs this process may run at once."""
        pool = self.pool
        return {
            name: queue.concurrency if queue.concurrency is not None else pool
            for name, queue in self.queues.items()
        }

    def slots(self, only: Collection[str] | None = None) -> Slots:
        """Fresh slot counts for one run of the runtime (of the *only* queues, when given)."""
        limits = self.limits
        if only is not None:
            limits = {name: limits[name] for name in only}
        return Slots(
            limits,
            self.pool,
            self.prefetch,
            weights={name: self.queues[name].weight for name in limits},
            selection=self.selection,
            no_prefetch=[name for name in limits if not self._may_prefetch(name, limits[name])],
        )

    def _may_prefetch(self, name: str, limit: int) -> bool:
        """Whether queue *name* (running *limit* here) may claim jobs ahead of free workers."""
        queue = self.queues[name]
        if queue.rate_limit is not None:
            # A job claimed ahead counts in its rate window from its claim but starts
            # later: rate-limited queues claim only for idle workers, so starts stay
            # within the window.
            return False
        # Cluster limits count claimed jobs as running, so a job waiting in this
        # process's buffer holds a slot of the cluster (or of a partition) that another
        # process could run at once. Claim ahead only while this process's whole claim
        # is at most half of such a limit.
        claim = limit * (1 + self.prefetch)
        return all(
            cap is None or cap >= 2 * claim
            for cap in (queue.global_concurrency, queue.partition_concurrency)
        )

    def claim_limits(self, job_rates: Mapping[str, RateLimit]) -> dict[str, ClaimLimits]:
        """What each queue's claims carry: its cluster-wide limits and every job's rate."""
        limits: dict[str, ClaimLimits] = {}
        for name, queue in self.queues.items():
            made = claim_limits(queue, job_rates)
            if made is not None:
                limits[name] = made
        return limits

    def describe_limits(self) -> dict[str, dict[str, str]]:
        """Per queue, its cluster-wide limits as text (for the workers registry)."""
        described: dict[str, dict[str, str]] = {}
        for name, queue in self.queues.items():
            limits: dict[str, str] = {}
            if queue.global_concurrency is not None:
                limits["global_concurrency"] = str(queue.global_concurrency)
            if queue.partition_concurrency is not None:
                limits["partition_concurrency"] = str(queue.partition_concurrency)
            if queue.rate_limit is not None:
                rate = queue.rate_limit
                limits["rate_limit"] = f"{rate.limit} per {rate.per:g} s"
            if limits:
                described[name] = limits
        return described

    def settings(
        self,
        definition: JobDefinition,
        queue: str,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> tuple[int, int, float | None]:
        """A job's ``(priority, max_attempts, timeout)``: the given values (from options
        or a schedule), else its definition's, else its queue's, else the defaults."""
        defaults = self.queues[queue]
        return (
            _first(priority, definition.priority, defaults.priority, 0),
            _first(max_attempts, definition.max_attempts, defaults.max_attempts, 3),
            _first(timeout, definition.timeout, defaults.timeout, None),
        )

    def backoff_for(
        self, definition: JobDefinition | None, queue: str, default: Backoff
    ) -> Backoff:
        """The backoff of a job: its definition's, else its queue's, else *default*."""
        if definition is not None and definition.backoff is not None:
            return definition.backoff
        settings = self.queues.get(queue)
        if settings is not None and settings.backoff is not None:
            return settings.backoff
        return default


def _first(*values: Any) -> Any:
    """The first value that is not ``None`` (the last one is the fallback)."""
    for value in values[:-1]:
        if value is not None:
            return value
    return values[-1]
