"""``/metrics``: a :class:`~asyncjobs.integrations.prometheus.Metrics` registry when the app was
given one, else the store's gauges read at each scrape (for an app serving a store alone)."""

from __future__ import annotations

import anyio

from .._models import JobState
from ._site import ApiError, Site

__all__ = ["render"]

#: How long a scrape waits for the store before it answers ``asyncjobs_store_up 0``.
_STORE_TIMEOUT = 5.0


async def render(site: Site) -> tuple[bytes, str]:
    """The metrics page and its content type.

    :raises ApiError: 404 when prometheus-client is not installed.
    """
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
    except ImportError:
        raise ApiError(
            404,
            "metrics_unavailable",
            "metrics need prometheus-client: pip install 'asyncjobs[prometheus]'",
        ) from None
    if site.metrics is not None:
        return generate_latest(site.metrics.registry), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    jobs = Gauge(
        "asyncjobs_queue_jobs", "Jobs per queue and state.", ["queue", "state"], registry=registry
    )
    paused = Gauge(
        "asyncjobs_queue_paused", "1 when the queue is paused.", ["queue"], registry=registry
    )
    oldest = Gauge(
        "asyncjobs_oldest_waiting_job_age_seconds",
        "How long the oldest due job of the queue has waited.",
        ["queue"],
        registry=registry,
    )
    workers = Gauge("asyncjobs_workers", "Live runtimes sharing the store.", registry=registry)
    up = Gauge("asyncjobs_store_up", "1 when the store answered this scrape.", registry=registry)
    try:
        admin = site.admin()
        with anyio.fail_after(_STORE_TIMEOUT):
            stats = await admin.queue_stats()
            now = admin.clock.now()
            for entry in stats:
                for state in JobState:
                    jobs.labels(entry.queue, state.value).set(entry.count(state))
                paused.labels(entry.queue).set(1 if entry.paused else 0)
                due = await admin.backend.next_due_at([entry.queue]) if entry.waiting else None
                oldest.labels(entry.queue).set(max(0.0, now - due) if due is not None else 0.0)
            workers.set(len(await admin.workers()))
        up.set(1)
    except (Exception, TimeoutError):
        up.set(0)
    return generate_latest(registry), CONTENT_TYPE_LATEST
