"""The store commands of ``asyncjobs``: jobs, queues, schedules, workers, explain, health, audit.

Each opens the store at ``--url`` (or ``$ASYNCJOBS_URL``) with an
:class:`~asyncjobs._admin.Admin` alone: no runtime starts, no jobs need to be
registered, and the command is not listed among the store's workers. Actions
are recorded in the audit trail with the OS user as the actor. ``--json``
prints one JSON document instead of text (never payloads or results).
How records look is in :mod:`asyncjobs._cli_format`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from rich.console import Console

from . import _cli_format as fmt
from . import _cli_json as as_json
from ._admin import Admin
from ._cli_values import duration, moment, positive_int, tag
from ._exceptions import BackendError, JobNotFound, JobStateError
from ._models import FINISHED_STATES, JobState
from ._operating import Health

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_UNHEALTHY",
    "CLIError",
    "add_store_commands",
    "add_url",
    "expand_aliases",
    "scrub",
    "store_url",
]

EXIT_OK = 0
#: ``asyncjobs health`` found the store unhealthy (or could not reach it).
EXIT_UNHEALTHY = 1
EXIT_ERROR = 2

#: The actions of ``asyncjobs jobs``; any other first word lists jobs (``asyncjobs jobs
#: --state dead`` is ``asyncjobs jobs list --state dead``).
_JOB_ACTIONS = ("list", "show", "retry", "cancel", "delete", "purge")

Handler = Callable[[argparse.Namespace], Awaitable[int]]


class CLIError(Exception):
    """A problem the command reports in one line (exit status 2)."""


# --------------------------------------------------------------------------- arguments


def expand_aliases(argv: Sequence[str]) -> list[str]:
    """Spell the short forms out: a bare ``asyncjobs jobs [filters]`` is ``jobs list``."""
    args = list(argv)
    if (
        args
        and args[0] == "jobs"
        and (len(args) == 1 or args[1] not in (*_JOB_ACTIONS, "-h", "--help"))
    ):
        args.insert(1, "list")
    return args


def add_url(parser: argparse.ArgumentParser) -> None:
    """Add ``--url`` (the store; default ``$ASYNCJOBS_URL``)."""
    parser.add_argument(
        "--url",
        default=None,
        help="the store, e.g. sqlite:///jobs.db or redis://localhost:6379/0 "
        "(default $ASYNCJOBS_URL)",
    )


def add_store_commands(commands: Any) -> None:
    """Register the store commands on the ``asyncjobs`` parser's subcommands."""

    def command(
        parent: Any, name: str, helptext: str, handler: Handler | None = None
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=helptext)
        if handler is not None:
            add_url(parser)
            parser.add_argument(
                "--json", action="store_true", help="print one JSON document instead of text"
            )
            parser.set_defaults(command=handler)
        return parser

    def group(name: str, helptext: str) -> Any:
        parser = command(commands, name, helptext)
        return parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    jobs = group("jobs", "list, show, retry, cancel, delete and purge jobs (default: list)")
    listing = command(jobs, "list", "list jobs, newest enqueued first", _jobs_list)
    _job_filters(listing)
    listing.add_argument("--since", type=moment, help="enqueued at or after (10m, 2h, ISO time)")
    listing.add_argument("--until", type=moment, help="enqueued before (10m, 2h, ISO time)")
    listing.add_argument("--limit", type=positive_int, default=50, help="at most this many (50)")
    listing.add_argument("--after", metavar="CURSOR", help="the next page, from a previous listing")
    _job_id(command(jobs, "show", "one job's record and its attempt history", _jobs_show))
    _job_id(command(jobs, "retry", "queue a dead job again", _jobs_retry))
    _job_id(command(jobs, "cancel", "cancel a queued or running job", _jobs_cancel))
    _job_id(command(jobs, "delete", "delete a job that is not running", _jobs_delete))
    purge = command(jobs, "purge", "delete every job matching the filters", _jobs_purge)
    _job_filters(purge, running=False)
    purge.add_argument(
        "--older-than", type=duration, metavar="DURATION", help="finished more than this ago"
    )

    queues = group("queues", "list, pause and resume queues")
    queue_list = command(queues, "list", "counts, rates, timings, backlog per queue", _queues_list)
    queue_list.add_argument(
        "--window", type=duration, default=300.0, help="rates over this much time (5m)"
    )
    _queue_arg(command(queues, "pause", "stop every worker claiming a queue's jobs", _queue_pause))
    _queue_arg(command(queues, "resume", "let workers claim a queue's jobs again", _queue_resume))

    schedules = group("schedules", "list, show, trigger, pause and resume schedules")
    command(schedules, "list", "schedules with next fire times and recent runs", _sched_list)
    for name, helptext, handler in (
        ("show", "one schedule and its recent runs", _sched_show),
        ("trigger", "enqueue a schedule's job now (its timetable is kept)", _sched_trigger),
        ("pause", "stop a schedule firing, in every process", _sched_pause),
        ("resume", "let a paused schedule fire again", _sched_resume),
    ):
        command(schedules, name, helptext, handler).add_argument("schedule", metavar="NAME")

    command(commands, "workers", "the live runtimes sharing the store", _workers)
    _job_id(command(commands, "explain", "why a job is not running now", _explain))
    health = command(commands, "health", "check the store, workers, schedules, backlog", _health)
    health.add_argument(
        "--max-wait", type=duration, default=600.0, help="longest acceptable wait (10m)"
    )
    health.add_argument(
        "--max-lag", type=duration, default=120.0, help="longest acceptable schedule lag (2m)"
    )
    audit = command(commands, "audit", "operator actions, newest first", _audit)
    audit.add_argument("--limit", type=positive_int, default=50, help="at most this many (50)")
    audit.add_argument("--before", type=moment, help="only actions before (10m, ISO time)")

    # The spellings of earlier versions, kept working.
    _job_id(command(commands, "retry", "same as: jobs retry", _jobs_retry))
    _job_id(command(commands, "cancel", "same as: jobs cancel", _jobs_cancel))
    _queue_arg(command(commands, "pause", "same as: queues pause", _queue_pause))
    _queue_arg(command(commands, "resume", "same as: queues resume", _queue_resume))


def _job_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID")


def _queue_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", metavar="QUEUE")
    if parser.get_default("command") is _queue_pause:
        parser.add_argument(
            "--force", action="store_true", help="pause a queue no worker or job knows yet"
        )


def _job_filters(parser: argparse.ArgumentParser, *, running: bool = True) -> None:
    states = [state.value for state in JobState if running or state is not JobState.RUNNING]
    parser.add_argument("--queue", help="only this queue")
    parser.add_argument("--state", choices=states, help="only this state")
    parser.add_argument("--name", help="only jobs of this name")
    parser.add_argument("--partition", help="only this partition")
    parser.add_argument(
        "--tag",
        action="append",
        type=tag,
        default=[],
        metavar="KEY=VALUE",
        help="only jobs with this tag (repeatable: all must match)",
    )


# --------------------------------------------------------------------------- plumbing


def store_url(args: argparse.Namespace) -> str:
    """The store URL the command names (``--url`` or ``$ASYNCJOBS_URL``).

    :raises CLIError: when none is given, or a SQLite file does not exist
        (reading a store must not create one: a typo would show an empty store).
    """
    url: str | None = args.url or os.environ.get("ASYNCJOBS_URL")
    if not url:
        raise CLIError("no store given: pass --url (e.g. sqlite:///jobs.db) or set ASYNCJOBS_URL")
    args.url = url  # so errors can scrub its password
    if urlsplit(url).scheme.lower() == "sqlite":
        path = unquote(url.split("://", 1)[1])
        path = path[1:] if path.startswith("/") else path
        if path and path != ":memory:" and not Path(path).exists():
            raise CLIError(f"no job database at {path} (check the --url path)")
    return url


def scrub(message: str, url: str | None) -> str:
    """Remove the URL's password from *message*, wherever it appears."""
    if not url:
        return message
    try:
        password = urlsplit(url).password
    except ValueError:
        return message
    if password:
        message = message.replace(password, "***")
        encoded = url.split("://", 1)[-1].split("@", 1)[0].rpartition(":")[2]
        if encoded:
            message = message.replace(encoded, "***")
    return message


def _actor() -> str:
    """Who acts, for the audit trail: the OS user."""
    try:
        return getpass.getuser() or "cli"
    except (OSError, KeyError, ImportError):
        return "cli"


@asynccontextmanager
async def _admin(args: argparse.Namespace) -> AsyncIterator[Admin]:
    async with Admin.open(store_url(args), actor=_actor()) as admin:
        yield admin


def _stdout() -> Console:
    return Console(highlight=False)


def _dump(document: object) -> int:
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return EXIT_OK


def _tags(args: argparse.Namespace) -> dict[str, str] | None:
    return dict(args.tag) if args.tag else None


# --------------------------------------------------------------------------- jobs


async def _jobs_list(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        now = admin.clock.now()
        # One more than asked: whether a next page exists.
        jobs = await admin.list_jobs(
            queue=args.queue,
            state=args.state,
            name=args.name,
            partition=args.partition,
            tags=_tags(args),
            enqueued_after=None if args.since is None else args.since.resolve(now),
            enqueued_before=None if args.until is None else args.until.resolve(now),
            limit=args.limit + 1,
            after=args.after,
        )
    cursor = jobs[args.limit - 1].id if len(jobs) > args.limit else None
    jobs = jobs[: args.limit]
    if args.json:
        return _dump({"jobs": [as_json.job_json(job) for job in jobs], "next_cursor": cursor})
    if not jobs:
        print("no jobs match", file=sys.stderr)
        return EXIT_OK
    rows = [fmt._job_row(job, now) for job in jobs]
    console = _stdout()
    if console.is_terminal:
        console.print(fmt._jobs_table(rows))
    else:
        # Piped: whole values, tab-separated, for grep and cut; a table would truncate.
        print("\t".join(fmt._JOB_COLUMNS))
        for row in rows:
            print("\t".join(row))
    if cursor is not None:
        # On stderr, so a pipe reads rows only.
        print(f"more jobs: add --after {cursor} for the next page", file=sys.stderr)
    return EXIT_OK


async def _jobs_show(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        now = admin.clock.now()
        detail = await admin.job(args.job_id)
    if args.json:
        return _dump(as_json.detail_json(detail))
    _stdout().print(fmt.detail_view(detail, now))
    return EXIT_OK


async def _jobs_retry(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        job = await admin.retry(args.job_id)
    if args.json:
        return _dump(as_json.job_json(job))
    print(f"job {job.id} ({job.name}) is queued again on {job.queue!r}")
    return EXIT_OK


async def _jobs_cancel(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        current = await admin.get_job(args.job_id)
        if current is None:
            raise JobNotFound(f"no job {args.job_id!r} in the store")
        if current.state in FINISHED_STATES:
            raise JobStateError(
                f"job {current.id} is already {current.state.value}: "
                "only queued or running jobs can be cancelled"
            )
        job = await admin.cancel(args.job_id)
    if args.json:
        return _dump(as_json.job_json(job))
    if job.state is JobState.RUNNING:
        print(
            f"job {job.id} ({job.name}) is running on {job.worker_id}: cancellation requested; "
            "its worker stops it at its next heartbeat"
        )
    else:
        print(f"job {job.id} ({job.name}) is {job.state.value}")
    return EXIT_OK


async def _jobs_delete(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        await admin.delete(args.job_id)
    if args.json:
        return _dump({"deleted": args.job_id})
    print(f"job {args.job_id} is deleted")
    return EXIT_OK


async def _jobs_purge(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        deleted = await admin.purge(
            queue=args.queue,
            state=args.state,
            name=args.name,
            partition=args.partition,
            tags=_tags(args),
            older_than=args.older_than,
        )
    if args.json:
        return _dump({"deleted": deleted})
    print(f"{deleted} job{'' if deleted == 1 else 's'} deleted")
    return EXIT_OK


# --------------------------------------------------------------------------- queues


async def _queues_list(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        overviews = await admin.queues(window=args.window)
    if args.json:
        return _dump({"queues": [as_json.queue_json(queue) for queue in overviews]})
    if not overviews:
        print("no queues yet (no jobs in the store)", file=sys.stderr)
        return EXIT_OK
    _stdout().print(fmt.queues_table(overviews, args.window))
    return EXIT_OK


async def _queue_pause(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        if not args.force:
            # A typo would pause a queue nobody uses and leave the real one running.
            served = any(args.queue in worker.queues for worker in await admin.workers())
            known = any(
                entry.queue == args.queue and (entry.paused or any(entry.counts.values()))
                for entry in await admin.queue_stats()
            )
            if not served and not known:
                raise CLIError(
                    f"no live worker runs a queue {args.queue!r} and it has no jobs "
                    "(a typo?); pass --force to pause it anyway"
                )
        await admin.pause(args.queue)
    if args.json:
        return _dump({"queue": args.queue, "paused": True})
    print(f"queue {args.queue!r} is paused: no worker sharing the store claims its jobs")
    return EXIT_OK


async def _queue_resume(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        await admin.resume(args.queue)
    if args.json:
        return _dump({"queue": args.queue, "paused": False})
    print(f"queue {args.queue!r} is resumed")
    return EXIT_OK


# --------------------------------------------------------------------------- schedules


async def _sched_list(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        now = admin.clock.now()
        schedules = await admin.schedules()
    if args.json:
        return _dump({"schedules": [as_json.schedule_json(s, runs) for s, runs in schedules]})
    if not schedules:
        print("no schedules in the store", file=sys.stderr)
        return EXIT_OK
    _stdout().print(fmt.schedules_table(schedules, now))
    return EXIT_OK


async def _sched_show(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        now = admin.clock.now()
        schedule, runs = await admin.schedule(args.schedule)
    if args.json:
        return _dump(as_json.schedule_json(schedule, runs))
    _stdout().print(fmt.schedule_view(schedule, runs, now))
    return EXIT_OK


async def _sched_trigger(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        job = await admin.trigger(args.schedule)
    if args.json:
        return _dump(as_json.job_json(job))
    print(f"schedule {args.schedule!r} fired job {job.id} ({job.name}) on {job.queue!r}")
    return EXIT_OK


async def _sched_pause(args: argparse.Namespace) -> int:
    return await _sched_set_paused(args, paused=True)


async def _sched_resume(args: argparse.Namespace) -> int:
    return await _sched_set_paused(args, paused=False)


async def _sched_set_paused(args: argparse.Namespace, *, paused: bool) -> int:
    async with _admin(args) as admin:
        schedule = await admin.pause_schedule(args.schedule, paused=paused)
    if args.json:
        return _dump(as_json.schedule_json(schedule, []))
    print(f"schedule {schedule.name!r} is {'paused' if paused else 'resumed'}")
    return EXIT_OK


# --------------------------------------------------------------------------- the rest


async def _workers(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        now = admin.clock.now()
        workers = await admin.workers()
    if args.json:
        return _dump({"workers": [as_json.worker_json(worker) for worker in workers]})
    if not workers:
        print("no live workers", file=sys.stderr)
        return EXIT_OK
    _stdout().print(fmt.workers_table(workers, now))
    return EXIT_OK


async def _explain(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        now = admin.clock.now()
        explanation = await admin.explain(args.job_id)
    if explanation.reason == "not_found":
        raise JobNotFound(f"no job {args.job_id!r} in the store")
    if args.json:
        return _dump(as_json.explanation_json(explanation))
    _stdout().print(fmt.explanation_view(explanation, now))
    return EXIT_OK


async def _health(args: argparse.Namespace) -> int:
    url = store_url(args)
    try:
        async with Admin.open(url, actor=_actor()) as admin:
            health = await admin.health(max_wait=args.max_wait, max_lag=args.max_lag)
    except (OSError, BackendError) as exc:
        # A store that cannot be reached is an unhealthy answer, not a usage error.
        reason = scrub(f"store unreachable: {type(exc).__name__}: {exc}", url)
        health = Health(healthy=False, reasons=(reason,), checks={"store": False})
    if args.json:
        _dump(as_json.health_json(health))
    else:
        _stdout().print(fmt.health_view(health))
    return EXIT_OK if health.healthy else EXIT_UNHEALTHY


async def _audit(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        now = admin.clock.now()
        entries = await admin.audit(
            limit=args.limit, before=None if args.before is None else args.before.resolve(now)
        )
    if args.json:
        return _dump({"entries": [as_json.audit_json(entry) for entry in entries]})
    if not entries:
        print("no operator actions recorded", file=sys.stderr)
        return EXIT_OK
    _stdout().print(fmt.audit_lines(entries), soft_wrap=True)
    return EXIT_OK
