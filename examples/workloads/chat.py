"""Workload 4, chat maintenance (a Bull spec), as one asyncjobs app.

What it shows, one library feature per requirement:

- Cleanup, maintenance, notification and report queues configured per
  environment (concurrency, attempts, backoff): :data:`ENVIRONMENTS` maps
  ``development`` / ``production`` to ``Queue(concurrency=, max_attempts=,
  backoff=, timeout=)`` values; ``--env`` (or ``$APP_ENV``) picks one.
- Schedules with time zones: ``runtime.cron(..., timezone="Europe/Berlin")``
  for the nightly cleanup and the weekly index maintenance,
  ``timezone="America/New_York"`` for the morning report.
- The notification queue at concurrency 10 behind a rate limit:
  ``Queue(concurrency=10, rate_limit=RateLimit(100, per=60))`` (cluster-wide).
- Pause and resume: ``runtime.admin.pause("notification", actor=...)`` stops
  every process sharing the store; ``resume`` undoes it.
- Queue stats (waiting, active, completed, failed, delayed, paused):
  :func:`queue_counts`, read from ``runtime.queue_stats()``.
- Completed jobs removed at once and failed ones kept:
  ``retention={"complete": 0, "dead": None}`` (Bull's ``removeOnComplete:
  true, removeOnFail: false``). As in Bull, the ``completed`` count then
  stays 0; the ``processed`` metric below counts them. (Finding: such a
  job's ``handle.wait()`` / ``result()`` raise ``JobNotFound`` even in the
  process that ran it, so the demo waits on ``JobCompleted`` events instead.)
- Redis with a password: ``--url redis://:PASSWORD@host:6379/0`` (the
  password never appears in a log or a repr).
- An audit log of admin actions: every pause, resume, retry and cancel goes
  to the store's audit trail (``runtime.admin.audit()``, ``asyncjobs audit``)
  and to the ``asyncjobs.audit`` logger, with the actor.
- Structured log events: ``asyncjobs.integrations.logs.log_events`` writes
  one JSON line per job change with ``job_event`` = ``started``,
  ``completed``, ``retrying`` / ``dead`` (Bull's job_failed); a pause is the
  ``asyncjobs.audit`` record with ``action`` = ``queue.pause``. (Finding: the
  logs integration does not log queue events itself, and its names are not
  prefixed ``job_``/``queue_``.)
- Metrics processed, failed, processing time, queue size and active workers:
  ``asyncjobs.integrations.prometheus``: ``asyncjobs_jobs_completed_total``,
  ``asyncjobs_jobs_failed_total``, ``asyncjobs_job_run_seconds``,
  ``asyncjobs_queue_jobs`` and ``asyncjobs_workers`` / ``asyncjobs_running_jobs``.

Run it::

    python examples/workloads/chat.py                       # a short demo on sqlite:///chat.db
    python examples/workloads/chat.py --env production --url redis://:s3cret@localhost:6379/0
    python examples/workloads/chat.py --url postgresql://user:pw@localhost/jobs
    APP_ENV=production asyncjobs worker examples.workloads.chat:runtime --log-format json

Its test is ``tests/workloads/test_chat.py`` (memory and SQLite on a
ManualClock; Redis with a password when ``redis-server`` is installed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from asyncjobs import (
    Clock,
    ExponentialBackoff,
    FixedBackoff,
    JobCompleted,
    JobContext,
    JobDied,
    JobRegistry,
    JobRuntime,
    JobState,
    Queue,
    RateLimit,
)
from asyncjobs.backends import Backend
from asyncjobs.integrations.logs import JSONFormatter, log_events

DEFAULT_URL = "sqlite:///chat.db"

#: The queues of each environment: concurrency, attempts, backoff (and timeouts).
ENVIRONMENTS: dict[str, dict[str, Queue]] = {
    "development": {
        "cleanup": Queue(concurrency=1, max_attempts=1),
        "maintenance": Queue(concurrency=1, max_attempts=1),
        "notification": Queue(
            concurrency=10,
            rate_limit=RateLimit(20, per=1),
            max_attempts=2,
            backoff=FixedBackoff(0.1),
        ),
        "report": Queue(concurrency=1, max_attempts=1, timeout=60),
    },
    "production": {
        "cleanup": Queue(
            concurrency=2, max_attempts=3, backoff=ExponentialBackoff(base=60, cap=3600)
        ),
        "maintenance": Queue(
            concurrency=1, max_attempts=5, backoff=ExponentialBackoff(base=30, cap=1800)
        ),
        "notification": Queue(
            concurrency=10,
            rate_limit=RateLimit(100, per=timedelta(minutes=1)),
            max_attempts=5,
            backoff=ExponentialBackoff(base=2, cap=300),
            timeout=30,
        ),
        "report": Queue(concurrency=2, max_attempts=2, backoff=FixedBackoff(300), timeout=600),
    },
}

#: Bull's removeOnComplete: true, removeOnFail: false.
RETENTION: Mapping[str, float | None] = {"complete": 0, "dead": None}


class ChatDB:
    """The chat service's own data (dicts here); handlers reach it as ``ctx.state``."""

    def __init__(self) -> None:
        self.messages: dict[int, float] = {}  # message id -> age in days
        self.sent: list[tuple[int, str]] = []
        self.unreachable_users: set[int] = set()
        self.reports: list[str] = []
        self.maintenance_runs = 0


jobs = JobRegistry()


@jobs.job(name="chat.cleanup_expired_messages", queue="cleanup")
async def cleanup_expired_messages(ctx: JobContext, older_than_days: int = 30) -> int:
    """Delete messages past their retention (nightly, 03:00 Berlin)."""
    db: ChatDB = ctx.state
    expired = [mid for mid, age in db.messages.items() if age > older_than_days]
    for mid in expired:
        del db.messages[mid]
    return len(expired)


@jobs.job(name="chat.rebuild_search_index", queue="maintenance")
async def rebuild_search_index(ctx: JobContext) -> None:
    """Weekly index maintenance (Sundays 04:30 Berlin)."""
    db: ChatDB = ctx.state
    db.maintenance_runs += 1


@jobs.job(name="chat.send_notification", queue="notification")
async def send_notification(ctx: JobContext, user_id: int, text: str) -> None:
    """Push one notification; an unreachable device fails the attempt (retried)."""
    db: ChatDB = ctx.state
    if user_id in db.unreachable_users:
        raise ConnectionError("push gateway refused the device")
    db.sent.append((user_id, text))


@jobs.job(name="chat.daily_activity_report", queue="report")
async def daily_activity_report(ctx: JobContext) -> str:
    """The morning activity report (08:00 New York)."""
    db: ChatDB = ctx.state
    report = f"{len(db.sent)} notifications, {len(db.messages)} messages kept"
    db.reports.append(report)
    return report


def create_runtime(
    url: str | Backend | None = None,
    *,
    env: str | None = None,
    db: ChatDB | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> JobRuntime:
    """The chat service's runtime for environment *env* ($APP_ENV, else development).

    :param url: a store URL ($ASYNCJOBS_URL, else ``sqlite:///chat.db``);
        ``redis://:PASSWORD@host:6379/0`` for Redis with a password.
    """
    env = env or os.environ.get("APP_ENV") or "development"
    runtime = JobRuntime(
        url or os.environ.get("ASYNCJOBS_URL") or DEFAULT_URL,
        queues=ENVIRONMENTS[env],
        retention=RETENTION,
        state=db if db is not None else ChatDB(),
        clock=clock,
        **options,
    )
    runtime.include(jobs)
    berlin, new_york = "Europe/Berlin", "America/New_York"
    runtime.cron("0 3 * * *", timezone=berlin, name="nightly_cleanup")(cleanup_expired_messages)
    runtime.cron("30 4 * * sun", timezone=berlin, name="weekly_index")(rebuild_search_index)
    runtime.cron("0 8 * * *", timezone=new_york, name="morning_report")(daily_activity_report)
    return runtime


async def queue_counts(runtime: JobRuntime) -> dict[str, dict[str, int | bool]]:
    """Bull's job counts per queue, from the store (every process's jobs)."""
    return {
        stats.queue: {
            "waiting": stats.waiting,
            "active": stats.started,
            "completed": stats.count(JobState.COMPLETE),
            "failed": stats.count(JobState.DEAD),
            "delayed": stats.delayed,
            "paused": stats.paused,
        }
        for stats in await runtime.queue_stats()
    }


def structured_logging(stream: Any = None) -> logging.Handler:
    """JSON lines for job events (``asyncjobs.jobs``) and admin actions (``asyncjobs.audit``)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JSONFormatter())
    for name in ("asyncjobs.jobs", "asyncjobs.audit"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return handler


#: ``asyncjobs worker examples.workloads.chat:runtime`` runs this one ($ASYNCJOBS_URL, $APP_ENV).
runtime = create_runtime()


async def demo(url: str | None, env: str, show_logs: bool) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from asyncjobs.integrations.prometheus import instrument

    db = ChatDB()
    db.messages = {n: float(n * 10) for n in range(6)}  # 0 .. 50 days old
    db.unreachable_users = {13}
    app = create_runtime(url, env=env, db=db, shutdown_grace=1)
    metrics = instrument(app, CollectorRegistry())
    handler = structured_logging() if show_logs else None
    try:
        with log_events(app):
            async with app, metrics:
                await app.admin.pause("notification", actor="ops@chat")
                for user in (1, 2, 13):
                    await send_notification.enqueue(user, f"hello {user}")
                print("while paused:", json.dumps((await queue_counts(app))["notification"]))
                # Completed jobs are deleted as they finish (retention 0), so their
                # handles cannot be waited on: watch the outcome events instead.
                with app.events.subscribe(JobCompleted, JobDied) as outcomes:
                    await app.admin.resume("notification", actor="ops@chat")
                    with anyio.fail_after(10):
                        for _ in range(3):
                            await outcomes.receive()
                with app.events.subscribe(JobCompleted) as completed:
                    # Run a schedule's job now, by hand (audited like every admin action).
                    cleanup = await app.admin.trigger("nightly_cleanup", actor="ops@chat")
                    await completed.wait_for(JobCompleted, lambda e: e.job_id == cleanup.id)
                print(f"cleanup ran: {len(db.messages)} messages kept")
                print("after resume:", json.dumps((await queue_counts(app))["notification"]))
                for schedule in await app.schedules.list():
                    trigger = json.loads(schedule.trigger)
                    next_fire = datetime.fromtimestamp(schedule.next_fire_at or 0, UTC)
                    print(
                        f"schedule {schedule.name}: {trigger['expression']} {trigger['timezone']}, "
                        f"next {next_fire:%Y-%m-%d %H:%M} UTC"
                    )
                for entry in reversed(await app.admin.audit(limit=10)):
                    print(f"audit: {entry.actor} {entry.action} {entry.target}: {entry.outcome}")
                await metrics.refresh()
                text = generate_latest(metrics.registry).decode()
        shown = (
            "_completed_total",
            "_failed_total",
            "_run_seconds_count",
            "_queue_jobs",
            "_workers",
        )
        for line in text.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name.endswith("_workers") or (name.endswith(shown) and "notification" in line):
                print(line)
    finally:
        if handler is not None:
            for name in ("asyncjobs.jobs", "asyncjobs.audit"):
                logging.getLogger(name).removeHandler(handler)


def main() -> None:
    parser = argparse.ArgumentParser(description="chat maintenance on asyncjobs")
    parser.add_argument("--url", help=f"store URL (default $ASYNCJOBS_URL or {DEFAULT_URL})")
    parser.add_argument("--env", default=os.environ.get("APP_ENV", "development"))
    parser.add_argument("--logs", action="store_true", help="print the JSON log lines")
    args = parser.parse_args()
    anyio.run(demo, args.url, args.env, args.logs)


if __name__ == "__main__":
    main()
