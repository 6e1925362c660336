"""Inspection and operator actions: :class:`Admin` needs only a store.

The CLI and the web app use it with a URL and no registered jobs; a
:class:`~asyncjobs.JobRuntime` hands out one on its own store as
``runtime.admin`` (and keeps its older ``cancel``/``retry``/``pause`` methods
as shortcuts). Every action is recorded in the audit trail (the store's,
the ``asyncjobs.audit`` logger and an :class:`~asyncjobs.OperatorAction`
event) with the actor the caller names.

The records it reads and returns live in :mod:`asyncjobs._operating`; why a
job waits is worked out in :mod:`asyncjobs._explain`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from ._clock import Clock, SystemClock
from ._events import EventBus, OperatorAction, QueuePaused, QueueResumed, ScheduleChanged
from ._exceptions import InvalidOptionError, JobNotFound, JobStateError, ScheduleNotFound
from ._explain import Explanation, explain
from ._models import (
    Job,
    JobState,
    NewJob,
    QueueStats,
    Schedule,
    new_job_id,
)
from ._operating import (
    AuditEntry,
    Health,
    JobDetail,
    Percentiles,
    QueueOverview,
    WorkerInfo,
    live_workers,
)
from .backends import Backend, from_url

__all__ = ["Admin", "LocalRuntime"]

audit_logger = logging.getLogger("asyncjobs.audit")

#: How many finished jobs per queue the rates and percentiles are estimated from.
_SAMPLE = 500


class LocalRuntime(Protocol):
    """What a runtime in this process adds to an :class:`Admin` on its store."""

    def kick(self, queue: str) -> None:
        """Wake this process's claim loop of *queue* (work may have arrived)."""

    def cancel_local(self, job_id: str) -> bool:
        """Cancel a job this process runs; ``False`` when it runs no such job."""


def _state(value: JobState | str | None) -> JobState | None:
    if value is None:
        return None
    try:
        return JobState(value)
    except ValueError:
        raise InvalidOptionError(
            f"unknown job state {value!r}; use one of {', '.join(s.value for s in JobState)}"
        ) from None


def _percentiles(values: Sequence[float]) -> Percentiles | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return Percentiles(p50=at(0.5), p95=at(0.95), p99=at(0.99), sample=len(ordered))


class Admin:
    """Reads and operator actions on one store, from any process that shares it.

    :param backend: an opened store (see :meth:`open` to open one from a URL).
    :param clock: the time source (default: the system clock).
    :param actor: who acts when an action names no actor (the CLI passes the OS user).
    :param bus: where :class:`~asyncjobs.OperatorAction` and queue/schedule events go.
    :param local: the runtime of this process, if any (to wake and cancel locally).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        actor: str = "unknown",
        bus: EventBus | None = None,
        local: LocalRuntime | None = None,
    ) -> None:
        self.backend = backend
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.actor = actor
        self.bus = bus
        self._local = local

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str | Backend, *, actor: str = "unknown", **options: Any
    ) -> AsyncIterator[Admin]:
        """Open the store at *url* (or a backend object) for the block: ``async with
        Admin.open("sqlite:///jobs.db") as admin: ...``."""
        backend = from_url(url, **options) if isinstance(url, str) else url
        clock = SystemClock()
        await backend.open(clock)
        try:
            yield cls(backend, clock=clock, actor=actor)
        finally:
            await backend.aclose()

    # -- reading jobs ---------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """Return one job, or ``None``."""
        return await self.backend.get_job(job_id)

    async def job(self, job_id: str) -> JobDetail:
        """Return one job with its attempt history.

        :raises JobNotFound: when there is no such job.
        """
        job = await self.backend.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} in the store")
        attempts = await self.backend.get_attempts(job_id)
        return JobDetail(job=job, attempts=tuple(attempts))

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = None,
        name: str | None = None,
        schedule: str | None = None,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        enqueued_after: float | None = None,
        enqueued_before: float | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
    ) -> list[Job]:
        """Return a page of jobs matching every filter given, newest enqueued first.

        Page with ``limit`` and ``offset``, or with ``after`` (the last id of
        the previous page), which stays stable while jobs are added.
        :raises InvalidOptionError: for an unknown state or a negative limit/offset.
        """
        if limit < 0 or offset < 0:
            raise InvalidOptionError("limit and offset must not be negative")
        return await self.backend.list_jobs(
            queue=queue,
            state=_state(state),
            name=name,
            schedule=schedule,
            partition=partition,
            tags=tags,
            enqueued_after=enqueued_after,
            enqueued_before=enqueued_before,
            limit=limit,
            offset=offset,
            after=after,
        )

    async def queue_stats(self, *, partition: str | None = None) -> list[QueueStats]:
        """Counts per queue and state (of one partition, when given)."""
        return await self.backend.queue_stats(partition=partition)

    async def queues(self, *, window: float = 300.0) -> list[QueueOverview]:
        """Every queue's counts, rates over the last *window* seconds, timings and backlog age.

        Rates and percentiles are estimated from the latest finished jobs of
        each queue (up to 500): completed and dead per minute, the share that
        died, the queue wait (start minus due time) and the run time.
        """
        now = self.clock.now()
        workers = await self.workers()
        overviews: list[QueueOverview] = []
        for stats in await self.backend.queue_stats():
            name = stats.queue
            finished = [
                job
                for state in (JobState.COMPLETE, JobState.DEAD)
                for job in await self.backend.list_jobs(queue=name, state=state, limit=_SAMPLE)
            ]
            recent = [
                job
                for job in finished
                if job.finished_at is not None and job.finished_at >= now - window
            ]
            completed = sum(job.state is JobState.COMPLETE for job in recent)
            dead = len(recent) - completed
            started = [job for job in finished if job.started_at is not None]
            next_due = await self.backend.next_due_at([name])
            held = sorted({worker.held[name] for worker in workers if name in worker.held})
            overviews.append(
                QueueOverview(
                    queue=name,
                    counts=stats.counts,
                    waiting=stats.waiting,
                    delayed=stats.delayed,
                    running=stats.started,
                    claimed=stats.claimed,
                    paused=stats.paused,
                    held_by=held[0] if held else None,
                    completed_per_minute=completed * 60.0 / window,
                    failed_per_minute=dead * 60.0 / window,
                    failure_rate=dead / len(recent) if recent else None,
                    wait=_percentiles(
                        [max(0.0, job.started_at - job.due_at) for job in started if job.started_at]
                    ),
                    run=_percentiles(
                        [
                            max(0.0, job.finished_at - job.started_at)
                            for job in started
                            if job.finished_at is not None and job.started_at is not None
                        ]
                    ),
                    oldest_waiting=(
                        max(0.0, now - next_due)
                        if next_due is not None and next_due <= now and stats.waiting
                        else None
                    ),
                )
            )
        return overviews

    async def schedules(self, *, runs: int = 5) -> list[tuple[Schedule, list[Job]]]:
        """Every stored schedule with its latest *runs* jobs (newest first)."""
        result: list[tuple[Schedule, list[Job]]] = []
        for schedule in await self.backend.list_schedules():
            fired = await self.backend.list_jobs(schedule=schedule.name, limit=runs)
            result.append((schedule, fired))
        return result

    async def schedule(self, name: str, *, runs: int = 20) -> tuple[Schedule, list[Job]]:
        """One stored schedule with its latest *runs* jobs (newest first).

        :raises ScheduleNotFound: when there is no such schedule.
        """
        schedule = await self.backend.get_schedule(name)
        if schedule is None:
            raise ScheduleNotFound(f"no schedule {name!r} in the store")
        return schedule, await self.backend.list_jobs(schedule=name, limit=runs)

    async def workers(self) -> list[WorkerInfo]:
        """The live runtimes sharing the store (dead ones have aged out)."""
        return await live_workers(self.backend, self.clock.now())

    async def explain(self, job_id: str) -> Explanation:
        """Why the job is not running now, in words (``message``) and as data (``reason``)."""
        return await explain(self.backend, job_id, self.clock.now(), await self.workers())

    async def health(self, *, max_wait: float = 600.0, max_lag: float = 120.0) -> Health:
        """Whether the store answers, workers are alive, schedules fire on time and
        no job waits longer than *max_wait* seconds; with the reasons when not."""
        now = self.clock.now()
        checks: dict[str, bool] = {}
        reasons: list[str] = []
        try:
            stats = await self.backend.queue_stats()
        except Exception as exc:
            return Health(
                healthy=False,
                reasons=(f"store unreachable: {type(exc).__name__}: {exc}",),
                checks={"store": False},
            )
        checks["store"] = True
        workers = [worker for worker in await self.workers() if worker.role != "enqueue"]
        waiting = {entry.queue for entry in stats if entry.waiting and not entry.paused}
        served = {queue for worker in workers for queue in worker.queues}
        unserved = sorted(waiting - served)
        checks["workers"] = not unserved
        if unserved:
            reasons.append(
                f"no live worker serves {', '.join(unserved)}, which "
                f"{'has' if len(unserved) == 1 else 'have'} jobs waiting"
            )
        late = [
            schedule
            for schedule in await self.backend.list_schedules()
            if not schedule.paused
            and schedule.next_fire_at is not None
            and schedule.next_fire_at < now - max(max_lag, schedule.grace)
        ]
        checks["schedules"] = not late
        for schedule in late:
            assert schedule.next_fire_at is not None
            reasons.append(
                f"schedule {schedule.name} is {now - schedule.next_fire_at:.0f} s late "
                "(is a worker running the scheduler?)"
            )
        oldest = await self.backend.next_due_at(sorted(waiting))
        too_old = oldest is not None and now - oldest > max_wait
        checks["backlog"] = not too_old
        if too_old:
            assert oldest is not None
            reasons.append(f"the oldest waiting job has waited {now - oldest:.0f} s")
        return Health(healthy=not reasons, reasons=tuple(reasons), checks=checks)

    async def audit(self, *, limit: int = 100, before: float | None = None) -> list[AuditEntry]:
        """The audit trail, newest first."""
        return [
            AuditEntry.decode(record) for record in await self.backend.list_audit(limit, before)
        ]

    # -- operator actions ---------------------------------------------------------------

    async def _record(self, actor: str | None, action: str, target: str, outcome: str) -> None:
        entry = AuditEntry(
            at=self.clock.now(),
            actor=actor or self.actor,
            action=action,
            target=target,
            outcome=outcome,
        )
        audit_logger.info(
            "%s %s %s: %s",
            entry.actor,
            action,
            target,
            outcome,
            extra={"actor": entry.actor, "action": action, "target": target, "outcome": outcome},
        )
        if self.bus is not None and self.bus.has_subscribers:
            self.bus.publish(
                OperatorAction(
                    timestamp=entry.at,
                    actor=entry.actor,
                    action=action,
                    target=target,
                    outcome=outcome,
                )
            )
        try:
            await self.backend.record_audit(entry.encode())
        except Exception:
            # The action happened; a lost audit row must not turn it into an error.
            audit_logger.exception("could not store the audit entry for %s %s", action, target)

    async def cancel(self, job_id: str, *, actor: str | None = None) -> Job:
        """Cancel a job: a queued one at once, a running one at its worker's next heartbeat.

        :raises JobNotFound: when no such job exists.
        """
        job = await self.backend.cancel(job_id)
        if job is None:
            await self._record(actor, "job.cancel", job_id, "not found")
            raise JobNotFound(f"no job {job_id!r} in the store")
        if job.state is JobState.RUNNING and self._local is not None:
            self._local.cancel_local(job_id)
        result = "ok" if job.state in (JobState.CANCELLED, JobState.RUNNING) else job.state.value
        await self._record(actor, "job.cancel", job_id, result)
        return job

    async def retry(self, job_id: str, *, actor: str | None = None) -> Job:
        """Queue a dead job again, now, with its attempts reset.

        :raises JobNotFound: when no such job exists.
        :raises JobStateError: when the job is not dead, or another job holds its key.
        """
        current = await self.backend.get_job(job_id)
        if current is None:
            await self._record(actor, "job.retry", job_id, "not found")
            raise JobNotFound(f"no job {job_id!r} in the store")
        if current.state is not JobState.DEAD:
            await self._record(actor, "job.retry", job_id, f"refused: {current.state.value}")
            raise JobStateError(
                f"job {job_id} is {current.state.value}, not dead: only dead jobs can be retried"
            )
        job = await self.backend.retry_dead(job_id, self.clock.now())
        if job is None:
            raise JobNotFound(f"no job {job_id!r} in the store")
        if job.state is JobState.DEAD:
            await self._record(actor, "job.retry", job_id, "refused: key held")
            raise JobStateError(
                f"job {job_id} stays dead: an active job holds its dedup key {job.key!r}"
            )
        if self._local is not None:
            self._local.kick(job.queue)
        await self._record(actor, "job.retry", job_id, "ok")
        return job

    async def delete(self, job_id: str, *, actor: str | None = None) -> None:
        """Delete a job that is not running (its history and key go with it).

        :raises JobNotFound: when no such job exists.
        :raises JobStateError: when it is running (cancel it first).
        """
        if await self.backend.delete_job(job_id):
            await self._record(actor, "job.delete", job_id, "ok")
            return
        job = await self.backend.get_job(job_id)
        if job is None:
            await self._record(actor, "job.delete", job_id, "not found")
            raise JobNotFound(f"no job {job_id!r} in the store")
        await self._record(actor, "job.delete", job_id, f"refused: {job.state.value}")
        raise JobStateError(f"job {job_id} is {job.state.value}: cancel it before deleting it")

    async def purge(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = None,
        name: str | None = None,
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        older_than: float | None = None,
        actor: str | None = None,
    ) -> int:
        """Delete every job matching all filters given, except running ones.

        :param older_than: only finished jobs that ended more than this many seconds ago.
        :returns: how many were deleted.
        :raises InvalidOptionError: for no filter at all (that would be everything:
            pass ``state=`` per state instead), or an unknown state.
        """
        job_state = _state(state)
        if job_state is JobState.RUNNING:
            raise InvalidOptionError("running jobs are never purged: cancel them first")
        given = {
            key: value
            for key, value in {
                "queue": queue,
                "state": job_state.value if job_state is not None else None,
                "name": name,
                "partition": partition,
                "older_than": older_than,
            }.items()
            if value is not None
        }
        if tags:
            given.update({f"tag:{key}": value for key, value in tags.items()})
        if not given:
            raise InvalidOptionError("purge needs at least one filter (queue, state, name, ...)")
        if older_than is not None and older_than < 0:
            raise InvalidOptionError("older_than must not be negative")
        deleted = await self.backend.purge(
            queue=queue,
            state=job_state,
            name=name,
            partition=partition,
            tags=tags,
            finished_before=None if older_than is None else self.clock.now() - older_than,
        )
        target = " ".join(f"{key}={value}" for key, value in sorted(given.items()))
        await self._record(actor, "jobs.purge", target, f"ok: {deleted} deleted")
        return deleted

    async def pause(self, queue: str, *, actor: str | None = None) -> None:
        """Stop every process sharing the store from claiming jobs of *queue*."""
        await self.backend.pause_queue(queue, True)
        if self.bus is not None and self.bus.has_subscribers:
            self.bus.publish(QueuePaused(timestamp=self.clock.now(), queue=queue))
        await self._record(actor, "queue.pause", queue, "ok")

    async def resume(self, queue: str, *, actor: str | None = None) -> None:
        """Let workers claim jobs of *queue* again."""
        await self.backend.pause_queue(queue, False)
        if self._local is not None:
            self._local.kick(queue)
        if self.bus is not None and self.bus.has_subscribers:
            self.bus.publish(QueueResumed(timestamp=self.clock.now(), queue=queue))
        await self._record(actor, "queue.resume", queue, "ok")

    async def _schedule(self, name: str, action: str, actor: str | None) -> Schedule:
        schedule = await self.backend.get_schedule(name)
        if schedule is None:
            await self._record(actor, action, name, "not found")
            raise ScheduleNotFound(f"no schedule {name!r} in the store")
        return schedule

    def _schedule_changed(self, name: str, change: str) -> None:
        if self.bus is not None and self.bus.has_subscribers:
            self.bus.publish(
                ScheduleChanged(timestamp=self.clock.now(), schedule=name, change=change)
            )

    async def pause_schedule(
        self, name: str, *, paused: bool = True, actor: str | None = None
    ) -> Schedule:
        """Pause (or, with ``paused=False``, resume) a schedule in every process.

        :raises ScheduleNotFound: when there is no such schedule.
        """
        action = "schedule.pause" if paused else "schedule.resume"
        await self._schedule(name, action, actor)
        updated = await self.backend.pause_schedule(name, paused)
        if updated is None:
            raise ScheduleNotFound(f"no schedule {name!r} in the store")
        self._schedule_changed(name, "paused" if paused else "resumed")
        await self._record(actor, action, name, "ok")
        return updated

    async def trigger(self, name: str, *, actor: str | None = None) -> Job:
        """Enqueue a schedule's job now, outside its timetable (its next fire is kept).

        Works without the job registered here: the stored schedule holds the
        job's name, queue, arguments and settings.
        :raises ScheduleNotFound: when there is no such schedule.
        """
        schedule = await self._schedule(name, "schedule.trigger", actor)
        now = self.clock.now()
        new = NewJob(
            id=new_job_id(now),
            name=schedule.job_name,
            queue=schedule.queue,
            payload=schedule.payload,
            due_at=now,
            enqueued_at=now,
            priority=schedule.priority,
            max_attempts=schedule.max_attempts,
            timeout=schedule.timeout,
            schedule=schedule.name,
            fire_at=now,
        )
        [job] = await self.backend.enqueue([new])
        if self._local is not None:
            self._local.kick(job.queue)
        self._schedule_changed(name, "triggered")
        await self._record(actor, "schedule.trigger", name, f"ok: job {job.id}")
        return job
