"""Prometheus metrics of a runtime: job counters, run-time and queue-wait histograms, queue gauges.

Install the extra (``pip install 'asyncjobs[prometheus]'``), then::

    metrics = instrument(runtime)               # registers the metrics
    app.mount("/metrics", metrics.asgi_app())   # or: asyncjobs worker --metrics 127.0.0.1:9100

    async with runtime, metrics:                # counts events, refreshes the gauges
        ...

Counters and histograms count what *this process* did, from the runtime's
events: add them up across processes (``sum by (queue)``). The queue gauges
are read from the store, so every process reports the same cluster-wide
numbers: aggregate them with ``max``, not ``sum``.

The gauges that come from the store are read by a task in the runtime's
event loop every ``refresh`` seconds and cached; a scrape only reads the
cache. A scrape never waits on the store (an unreachable store cannot hang
it, ``asyncjobs_store_up`` says so instead), costs the store nothing however
often Prometheus scrapes, and works the same from the ASGI app (which
collects in the event loop's own thread, where waiting on the loop would
deadlock) and from the worker's HTTP thread. The price: the gauges are up
to ``refresh`` seconds old.

Labels are queue, job and schedule names only, never arguments or results.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._events import (
    Event,
    JobCompleted,
    JobDied,
    JobEnqueued,
    JobEvent,
    JobLeaseLost,
    JobReleased,
    JobRetrying,
    JobStarted,
    JobWasCancelled,
    ScheduleFired,
)
from .._exceptions import ConfigurationError
from .._models import JobState
from ._attempts import Attempts
from ._listen import listen

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client import make_asgi_app as _make_asgi_app
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigurationError(
        "asyncjobs.integrations.prometheus needs prometheus-client: "
        "pip install 'asyncjobs[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from .._runtime import JobRuntime

__all__ = ["QUEUE_STATES", "Metrics", "instrument", "serve"]

logger = logging.getLogger("asyncjobs")

#: The states of ``asyncjobs_queue_jobs``: ``waiting`` (due now), ``delayed``
#: (due later), ``claimed`` (held by a worker, handler not started yet),
#: ``running`` (handler started) and ``dead``.
QUEUE_STATES = ("waiting", "delayed", "claimed", "running", "dead")

#: Histogram buckets in seconds, from a quick handler to an hour-long one.
_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    float("inf"),
)
#: Attempts whose start is remembered for their run time; past this the oldest
#: are forgotten (an attempt whose outcome event was dropped must not leak).
_MAX_STARTS = 100_000
_JOB_LABELS = ("queue", "job_name")
#: Seconds leaving waits for a read of the store in flight before cancelling it.
_STOP_WAIT = 5.0


@attrs.frozen
class _Snapshot:
    """What the last refresh read for one runtime (replaced whole, never mutated)."""

    stats: Mapping[str, Mapping[str, int]]  # queue -> state -> count
    paused: Mapping[str, bool]
    oldest_waiting: Mapping[str, float]
    running: Mapping[str, int]
    store_up: bool


class Metrics:
    """The asyncjobs metrics in one Prometheus registry, fed by the runtimes it observes.

    Made by :func:`instrument`. Entering it (``async with metrics:``) observes
    the runtime given to :func:`instrument`; :meth:`observe` adds others. The
    runtime may be started before or after: the gauges are read while it runs.

    :ivar registry: the registry the metrics are in.
    :ivar refresh_interval: seconds between reads of the store's counts.
    :ivar port: the port :func:`serve` listens on (``None`` for a Metrics it did not make).
    """

    def __init__(
        self,
        runtime: JobRuntime | None = None,
        registry: CollectorRegistry | None = None,
        *,
        refresh: float = 5.0,
    ) -> None:
        if not refresh > 0:
            raise ConfigurationError(f"refresh must be more than 0 seconds, got {refresh!r}")
        self.registry: CollectorRegistry = registry if registry is not None else REGISTRY
        self.refresh_interval = float(refresh)
        self._runtime = runtime
        self._observed: list[JobRuntime] = []
        self._snapshots: dict[int, _Snapshot] = {}
        self._starts: Attempts[float] = Attempts(_MAX_STARTS)
        self._stack: AsyncExitStack | None = None
        self.port: int | None = None

        def counter(name: str, documentation: str, labels: Iterable[str] = _JOB_LABELS) -> Counter:
            return Counter(name, documentation, list(labels), registry=None)

        self.enqueued = counter("asyncjobs_jobs_enqueued", "Jobs enqueued by this process.")
        self.started = counter("asyncjobs_jobs_started", "Attempts this process started.")
        self.completed = counter("asyncjobs_jobs_completed", "Attempts that completed.")
        self.retried = counter(
            "asyncjobs_jobs_retried", "Failed attempts whose job will run again."
        )
        self.failed = counter(
            "asyncjobs_jobs_failed", "Attempts that failed (retried or dead after it)."
        )
        self.dead = counter("asyncjobs_jobs_dead", "Jobs that went dead (no attempts left).")
        self.released = counter(
            "asyncjobs_jobs_released", "Attempts handed back unused (shutdown, snooze)."
        )
        self.cancelled = counter("asyncjobs_jobs_cancelled", "Jobs cancelled.")
        self.lease_lost = counter(
            "asyncjobs_jobs_lease_lost", "Attempts whose lease this process lost."
        )
        self.schedule_fires = counter(
            "asyncjobs_schedule_fires", "Schedule ticks this process fired.", ("schedule",)
        )
        self.run_seconds = Histogram(
            "asyncjobs_job_run_seconds",
            "Seconds an attempt ran, by how it ended.",
            [*_JOB_LABELS, "outcome"],
            buckets=_BUCKETS,
            registry=None,
        )
        self.queue_wait_seconds = Histogram(
            "asyncjobs_job_queue_wait_seconds",
            "Seconds from an attempt's due time to its start.",
            list(_JOB_LABELS),
            buckets=_BUCKETS,
            registry=None,
        )
        self._collectors: list[Collector] = [
            self.enqueued,
            self.started,
            self.completed,
            self.retried,
            self.failed,
            self.dead,
            self.released,
            self.cancelled,
            self.lease_lost,
            self.schedule_fires,
            self.run_seconds,
            self.queue_wait_seconds,
            _GaugeCollector(self),
        ]
        registered: list[Collector] = []
        try:
            for collector in self._collectors:
                self.registry.register(collector)
                registered.append(collector)
        except ValueError as exc:
            for collector in registered:
                self.registry.unregister(collector)
            raise ConfigurationError(
                f"the asyncjobs metrics are already in this registry ({exc}); observe several "
                "runtimes with one Metrics (metrics.observe(runtime)) or pass registry="
            ) from None

    def __repr__(self) -> str:
        return f"<Metrics observing {len(self._observed)} runtime(s)>"

    # -- observing ---------------------------------------------------------------

    async def __aenter__(self) -> Metrics:
        if self._runtime is None:
            raise ConfigurationError(
                "this Metrics was made without a runtime: use `async with metrics.observe(runtime)`"
            )
        if self._stack is not None:
            raise ConfigurationError("this Metrics is already entered")
        stack = AsyncExitStack()
        await stack.enter_async_context(self.observe(self._runtime))
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    @asynccontextmanager
    async def observe(self, runtime: JobRuntime) -> AsyncIterator[None]:
        """Count *runtime*'s events and read its store's counts while the block runs.

        Events are counted from entry; the store is read every
        :attr:`refresh_interval` seconds while the runtime is started.
        """
        stop_listening = listen(runtime.events, self._on_event)
        self._observed.append(runtime)
        stop, stopped = anyio.Event(), anyio.Event()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._refresh_loop, runtime, stop, stopped)
                try:
                    yield
                finally:
                    # Let a read in flight finish rather than cancel it in the store
                    # (briefly: a store that hangs must not hold up the exit).
                    stop.set()
                    with anyio.move_on_after(_STOP_WAIT, shield=True):
                        await stopped.wait()
                    tasks.cancel_scope.cancel()
        finally:
            stop_listening()
            self._observed.remove(runtime)
            snapshots = dict(self._snapshots)
            snapshots.pop(id(runtime), None)
            self._snapshots = snapshots

    async def refresh(self) -> None:
        """Read the store's counts of every observed, started runtime now.

        The background task does this every :attr:`refresh_interval`
        seconds; call it to make a scrape show the store as it is now.
        """
        for runtime in list(self._observed):
            if runtime.started:
                await self._refresh_one(runtime)

    async def _refresh_loop(
        self, runtime: JobRuntime, stop: anyio.Event, stopped: anyio.Event
    ) -> None:
        try:
            while not stop.is_set():
                if runtime.started:
                    await self._refresh_one(runtime)
                    pause = self.refresh_interval
                else:
                    # Entered before the runtime starts: read the store soon after it does.
                    pause = min(0.1, self.refresh_interval)
                with anyio.move_on_after(pause):
                    await stop.wait()
        finally:
            stopped.set()

    async def _refresh_one(self, runtime: JobRuntime) -> None:
        key = id(runtime)
        running = Tally(job.queue for job in runtime.running_jobs.values())
        try:
            stats = await runtime.queue_stats()
            now = runtime.clock.now()
            oldest: dict[str, float] = {}
            for entry in stats:
                if entry.waiting > 0 and not entry.paused:
                    due = await runtime.backend.next_due_at([entry.queue])
                    if due is not None and due <= now:
                        oldest[entry.queue] = now - due
        except Exception as exc:
            # The store is away: keep the last counts, say so in asyncjobs_store_up.
            logger.debug("metrics: reading queue counts failed: %r", exc)
            previous = self._snapshots.get(key)
            snapshot = (
                attrs.evolve(previous, store_up=False, running=dict(running))
                if previous is not None
                else _Snapshot({}, {}, {}, dict(running), False)
            )
        else:
            counts = {name: dict.fromkeys(QUEUE_STATES, 0) for name in runtime.queues}
            paused = dict.fromkeys(runtime.queues, False)
            for entry in stats:
                counts[entry.queue] = {
                    "waiting": entry.waiting,
                    "delayed": entry.delayed,
                    "claimed": entry.claimed,
                    "running": entry.started,
                    "dead": entry.count(JobState.DEAD),
                }
                paused[entry.queue] = entry.paused
            snapshot = _Snapshot(
                counts,
                paused,
                oldest,
                dict(running),
                runtime.store_status.reachable,
            )
        # Copy on write: the scrape thread reads whichever dict is current.
        self._snapshots = {**self._snapshots, key: snapshot}

    # -- events ----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ScheduleFired):
            self.schedule_fires.labels(event.schedule).inc()
            return
        if isinstance(event, JobEnqueued):
            self.enqueued.labels(event.queue, event.job_name).inc()
        elif isinstance(event, JobStarted):
            self.started.labels(event.queue, event.job_name).inc()
            if event.due_at is not None:
                wait = max(0.0, event.timestamp - event.due_at)
                self.queue_wait_seconds.labels(event.queue, event.job_name).observe(wait)
            self._starts.add(event.job_id, event.attempt, event.timestamp)
        elif isinstance(event, JobCompleted):
            self.completed.labels(event.queue, event.job_name).inc()
            self._starts.pop(event.job_id, event.attempt)
            self.run_seconds.labels(event.queue, event.job_name, "complete").observe(event.duration)
        elif isinstance(event, JobRetrying):
            self.retried.labels(event.queue, event.job_name).inc()
            self.failed.labels(event.queue, event.job_name).inc()
            self._observe_run(event, "retry")
        elif isinstance(event, JobDied):
            self.dead.labels(event.queue, event.job_name).inc()
            self.failed.labels(event.queue, event.job_name).inc()
            self._observe_run(event, "dead")
        elif isinstance(event, JobReleased):
            self.released.labels(event.queue, event.job_name).inc()
            self._observe_run(event, "released")
        elif isinstance(event, JobWasCancelled):
            self.cancelled.labels(event.queue, event.job_name).inc()
            self._observe_run(event, "cancelled")
        elif isinstance(event, JobLeaseLost):
            self.lease_lost.labels(event.queue, event.job_name).inc()
            self._observe_run(event, "lease_lost")

    def _observe_run(self, event: JobEvent, outcome: str) -> None:
        started = self._starts.pop(event.job_id, getattr(event, "attempt", None))
        if started is not None:  # None: a job cancelled while queued, or run elsewhere
            self.run_seconds.labels(event.queue, event.job_name, outcome).observe(
                max(0.0, event.timestamp - started)
            )

    # -- exposing ----------------------------------------------------------------------

    def asgi_app(self) -> Callable[..., Any]:
        """Return an ASGI app serving this registry in the Prometheus text format.

        Mount it in the host app: ``Mount("/metrics", app=metrics.asgi_app())``.
        """
        app: Callable[..., Any] = _make_asgi_app(self.registry)
        return app

    def unregister(self) -> None:
        """Remove the metrics from the registry (so another :class:`Metrics` may use it)."""
        for collector in self._collectors:
            with suppress(KeyError):
                self.registry.unregister(collector)

    def _gauges(self) -> Iterator[Metric]:
        snapshots = list(self._snapshots.values())
        depth = GaugeMetricFamily(
            "asyncjobs_queue_jobs",
            "Jobs in the store by queue and state (every process's; read every few seconds).",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "asyncjobs_oldest_waiting_job_age_seconds",
            "Seconds the oldest due, unstarted job of a queue has waited (0 when none).",
            labels=["queue"],
        )
        paused = GaugeMetricFamily(
            "asyncjobs_queue_paused", "1 when the queue is paused.", labels=["queue"]
        )
        running = GaugeMetricFamily(
            "asyncjobs_running_jobs", "Jobs this process is running now.", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "asyncjobs_workers", "Runtimes that run jobs, observed by this exporter."
        )
        store_up = GaugeMetricFamily(
            "asyncjobs_store_up", "1 when the last read of the store's counts succeeded."
        )
        # Runtimes sharing one store report the same counts: the last one read wins.
        merged_counts: dict[str, Mapping[str, int]] = {}
        merged_oldest: dict[str, float] = {}
        merged_paused: dict[str, bool] = {}
        merged_running: Tally[str] = Tally()
        for snapshot in snapshots:
            merged_counts.update(snapshot.stats)
            merged_paused.update(snapshot.paused)
            for queue in snapshot.stats:
                merged_oldest[queue] = snapshot.oldest_waiting.get(queue, 0.0)
            merged_running.update(snapshot.running)
        for queue in sorted(merged_counts):
            for state in QUEUE_STATES:
                depth.add_metric([queue, state], merged_counts[queue].get(state, 0))
            oldest.add_metric([queue], merged_oldest.get(queue, 0.0))
            paused.add_metric([queue], 1.0 if merged_paused.get(queue) else 0.0)
        for queue in sorted(set(merged_counts) | set(merged_running)):
            running.add_metric([queue], merged_running.get(queue, 0))
        workers.add_metric(
            [],
            sum(
                1
                for runtime in list(self._observed)
                if runtime.started and runtime.role != "enqueue"
            ),
        )
        if snapshots:
            store_up.add_metric([], 1.0 if all(s.store_up for s in snapshots) else 0.0)
        yield from (depth, oldest, paused, running, workers, store_up)


class _GaugeCollector(Collector):
    """The gauges, built on each scrape from the cached snapshots."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._gauges())

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering reads no snapshot.
        return [
            GaugeMetricFamily(name, "")
            for name in (
                "asyncjobs_queue_jobs",
                "asyncjobs_oldest_waiting_job_age_seconds",
                "asyncjobs_queue_paused",
                "asyncjobs_running_jobs",
                "asyncjobs_workers",
                "asyncjobs_store_up",
            )
        ]


def instrument(
    runtime: JobRuntime, registry: CollectorRegistry | None = None, *, refresh: float = 5.0
) -> Metrics:
    """Register the asyncjobs metrics of *runtime* in *registry*; enter the result to feed them.

    ::

        metrics = instrument(runtime)
        async with runtime, metrics:
            ...

    :param registry: where the metrics go (default: prometheus-client's global
        ``REGISTRY``, which ``prometheus_client.make_asgi_app()`` serves). Tests
        pass their own ``CollectorRegistry()``.
    :param refresh: seconds between reads of the store's counts for the gauges.
    :raises ConfigurationError: when the registry holds asyncjobs metrics already.
    """
    return Metrics(runtime, registry, refresh=refresh)


def _address(text: str) -> tuple[str, int]:
    host, colon, port_text = text.rpartition(":")
    if not colon:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigurationError(
            f"a metrics address is HOST:PORT such as 127.0.0.1:9100, not {text!r}"
        )
    return host, port


@asynccontextmanager
async def serve(
    runtime: JobRuntime,
    address: str,
    *,
    registry: CollectorRegistry | None = None,
    refresh: float = 5.0,
) -> AsyncIterator[Metrics]:
    """Serve *runtime*'s metrics over HTTP at *address* while the block runs.

    What ``asyncjobs worker --metrics HOST:PORT`` runs. The server is
    prometheus-client's own, in a daemon thread; it answers on every path
    (``/metrics`` included). ``PORT`` alone listens on 127.0.0.1, ``:PORT`` on
    every interface.

    :param address: ``HOST:PORT``, ``[::1]:PORT``, ``:PORT`` or ``PORT``; port 0
        picks a free port (read it from the yielded ``metrics.port``).
    :raises ConfigurationError: for an address that is not HOST:PORT.
    :raises OSError: when the address cannot be bound.
    """
    host, port = _address(address)
    metrics = instrument(runtime, registry, refresh=refresh)
    try:
        server, thread = _start_http_server(port, host, registry=metrics.registry)
    except BaseException:
        metrics.unregister()
        raise
    metrics.port = server.server_port
    logger.info("serving metrics on http://%s:%d/metrics", host, metrics.port)
    try:
        async with metrics:
            yield metrics
    finally:
        with anyio.CancelScope(shield=True):
            # shutdown() waits for the serving loop's next poll: not on the event loop.
            await anyio.to_thread.run_sync(server.shutdown)
        server.server_close()
        thread.join(timeout=5)
        metrics.unregister()
