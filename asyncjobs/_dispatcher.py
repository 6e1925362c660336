"""Claim -> run -> settle: the worker loop.

One claim loop per queue takes as many due jobs as the queue has free slots
(one store round trip per batch), starts each handler in its own task under
its cancel scope and timeout, and passes the outcome to a single settle loop
that writes every outcome that piled up meanwhile in one batch (group
commit). A heartbeat loop extends the leases of running jobs, notices
cancellations and lost leases, and recovers jobs whose worker died.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._clock import Clock
from ._context import JobContext, reset_current, set_current
from ._events import (
    EventBus,
    JobCompleted,
    JobDied,
    JobLeaseLost,
    JobProgress,
    JobReleased,
    JobRetrying,
    JobStarted,
    JobWasCancelled,
)
from ._exceptions import AsyncJobsError
from ._limits import Slots
from ._models import ErrorInfo, Handoff, Job, JobState, Outcome, OutcomeKind
from ._registry import JobDefinition
from ._retry import Permanent, Retry
from ._serialization import Codec
from .backends import Backend

__all__ = ["Dispatcher"]

logger = logging.getLogger("asyncjobs")

_MAX_TRACEBACK = 20_000


class _StopReason:
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease lost"


@attrs.define(eq=False)
class _Running:
    """A job this worker is running."""

    job: Job
    definition: JobDefinition | None
    scope: anyio.CancelScope
    context: JobContext
    stop_reason: str | None = None

    @property
    def token(self) -> str:
        assert self.job.lease_token is not None
        return self.job.lease_token


class _Feed:
    """Claimed jobs waiting for a worker of their queue.

    A deque rather than a memory object stream: taking a job that is already
    there costs no trip through the event loop. It never holds more than the
    queue's capacity, so a worker running no-op jobs back to back still
    yields after a bounded run.
    """

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self._idle_workers: deque[anyio.Event] = deque()
        self._closed = False

    def put(self, job: Job) -> None:
        """Add a job and wake one idle worker."""
        self._jobs.append(job)
        if self._idle_workers:
            self._idle_workers.popleft().set()

    def close(self) -> None:
        """Let workers finish the jobs already here, then stop."""
        self._closed = True
        while self._idle_workers:
            self._idle_workers.popleft().set()

    async def get(self) -> Job | None:
        """Take the next job, waiting for one; ``None`` once closed and empty."""
        while not self._jobs:
            if self._closed:
                return None
            wake = anyio.Event()
            self._idle_workers.append(wake)
            try:
                await wake.wait()
            finally:
                if not wake.is_set():
                    # Cancelled while idle: a later put() must wake a live worker.
                    self._idle_workers.remove(wake)
        return self._jobs.popleft()


@attrs.frozen
class _Settlement:
    outcome: Outcome
    job: Job
    duration: float


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe *exc* for the store: qualified type, message, and traceback."""
    kind = type(exc)
    module = kind.__module__
    if module.startswith("asyncjobs."):
        module = "asyncjobs"  # the public name, not the private module it lives in
    name = (
        kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
    )
    text = "".join(traceback.format_exception(exc))
    if len(text) > _MAX_TRACEBACK:
        text = "...\n" + text[-_MAX_TRACEBACK:]
    return ErrorInfo(type=name, message=str(exc), traceback=text)


class Dispatcher:
    """Runs the jobs of the configured queues until :meth:`stop` is called."""

    def __init__(
        self,
        *,
        backend: Backend,
        lookup: Callable[[str], JobDefinition],
        codec: Codec,
        clock: Clock,
        bus: EventBus,
        slots: Slots,
        lease: float,
        worker_id: str,
        shutdown_grace: float,
        maintenance: Callable[[], Any] | None = None,
    ) -> None:
        self._backend = backend
        self._lookup = lookup
        # Definitions never change while the runtime runs: look each name up once.
        self._definitions: dict[str, JobDefinition | None] = {}
        # Most handlers return None; encode it once (with whatever codec is in use).
        self._encoded_none = codec.encode(None)
        self._codec = codec
        self._clock = clock
        self._bus = bus
        self.slots = slots
        self._lease = lease
        self.worker_id = worker_id
        self._shutdown_grace = shutdown_grace
        self._maintenance = maintenance
        self._running: dict[str, _Running] = {}
        # Every job claimed and not yet settled (running or buffered): its lease is
        # heartbeated. Buffered jobs whose lease was lost or that were cancelled are
        # noted here, so the worker that takes them skips the handler.
        self._held: dict[str, Job] = {}
        self._skip: dict[str, str] = {}
        self._global_limiter = (
            anyio.CapacityLimiter(slots.max_concurrency) if slots.global_cap_binds else None
        )
        # Queues whose claim loop waits for work (it found none): new jobs enqueued
        # here may go straight to their workers (see offer()).
        self._waiting: set[str] = set()
        self._feeds: dict[str, _Feed] = {}
        self._stopping = False
        self._stop_event = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._heartbeats_done = anyio.Event()
        self._outcomes: MemoryObjectSendStream[_Settlement] | None = None

    @property
    def running_jobs(self) -> Mapping[str, Job]:
        """The jobs this worker is running now, by id."""
        return {job_id: running.job for job_id, running in self._running.items()}

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; running jobs get the shutdown grace period to finish."""
        self._stopping = True
        self._stop_event.set()
        self.slots.wake_all()

    def kick(self, queue: str) -> None:
        """Tell *queue*'s claim loop that work arrived (an in-process enqueue)."""
        if queue in self.slots.limits:
            self.slots.wake(queue)

    def offer(self, counts: Mapping[str, int]) -> Handoff | None:
        """Reserve slots for new jobs (*counts* per queue) to be handed over at enqueue.

        Only queues whose claim loop is waiting for work take part: there, a
        handed-over job saves the wake-up and the claim's round trip. Pair every
        offer with :meth:`accept`, also when the enqueue fails.
        """
        limits: dict[str, int] = {}
        for queue, count in counts.items():
            if queue in self._waiting and not self._stopping:
                take = min(count, self.slots.free(queue))
                if take > 0:
                    self.slots.take(queue, take)
                    limits[queue] = take
        if not limits:
            return None
        return Handoff(worker_id=self.worker_id, lease=self._lease, limits=limits)

    def accept(self, handoff: Handoff, jobs: list[Job]) -> None:
        """Run the new *jobs* the store handed over; give back the unused reserved slots."""
        used = dict.fromkeys(handoff.limits, 0)
        for job in jobs:
            if job.state is JobState.RUNNING and job.worker_id == self.worker_id:
                used[job.queue] += 1
                self._take_claimed(job)
        for queue, limit in handoff.limits.items():
            self.slots.give_back(queue, limit - used[queue])
        if self.slots.total == 0:
            self._idle.set()

    def _take_claimed(self, job: Job) -> None:
        """Hold a job claimed for this worker and queue it for a worker task."""
        if self._idle.is_set():
            self._idle = anyio.Event()
        self.slots.buffered[job.queue] += 1
        self._held[job.id] = job
        self._feeds[job.queue].put(job)

    def cancel_local(self, job_id: str) -> bool:
        """Cancel a job running here; ``False`` when this worker does not run it."""
        running = self._running.get(job_id)
        if running is not None:
            self._stop_job(running, _StopReason.CANCEL)
            return True
        if job_id in self._held:
            self._skip[job_id] = _StopReason.CANCEL
            return True
        return False

    # -- the loops --------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Claim and run jobs until stopped, then shut down gracefully."""
        send, receive = anyio.create_memory_object_stream[_Settlement](math.inf)
        self._outcomes = send
        async with anyio.create_task_group() as services:
            services.start_soon(self._settle_loop, receive)
            services.start_soon(self._heartbeat_loop)
            async with anyio.create_task_group() as workers:
                # Long-lived workers fed through a buffer: no task is spawned per job.
                feeds: list[_Feed] = []
                for queue, limit in self.slots.limits.items():
                    feed = self._feeds[queue] = _Feed()
                    feeds.append(feed)
                    for _ in range(limit):
                        workers.start_soon(self._worker, feed)
                async with anyio.create_task_group() as claims:
                    for queue in self.slots.limits:
                        claims.start_soon(self._claim_loop, queue)
                    task_status.started()
                # Claiming has stopped: give running jobs the grace period, then hand
                # the rest back (each settles as released, its attempt not counted).
                for feed in feeds:
                    feed.close()
                with anyio.move_on_after(self._shutdown_grace):
                    await self._idle.wait()
                for running in list(self._running.values()):
                    self._stop_job(running, _StopReason.SHUTDOWN)
            send.close()
            self._heartbeats_done.set()

    async def _claim_loop(self, queue: str) -> None:
        slots = self.slots
        while not self._stopping:
            wake = slots.event(queue)
            free = slots.free(queue)
            if free <= 0:
                await wake.wait()
                continue
            # Reserve the slots before awaiting the store, so other queues' claim loops
            # cannot take the same global slots meanwhile; unused ones go back after.
            slots.take(queue, free)
            jobs: list[Job] = []
            try:
                jobs = await self._backend.claim(queue, free, self.worker_id, self._lease)
            finally:
                slots.give_back(queue, free - len(jobs))
                if slots.total == 0:
                    # The last job may have finished while this claim was in flight.
                    self._idle.set()
            if jobs:
                for job in jobs:
                    self._take_claimed(job)
                # Let the woken workers start these before this loop's next round
                # trip (an in-memory claim never yields on its own).
                await anyio.lowlevel.checkpoint()
                continue
            if wake.is_set() or self._stopping:
                continue
            deadline = await self._backend.next_due_at([queue])
            if wake.is_set() or self._stopping:
                continue
            if deadline is not None and deadline <= self._clock.now():
                # Due but not claimable (a race with another worker): claim again.
                await anyio.lowlevel.checkpoint()
                continue
            # The store wait ends on the queue's own wake-up too (a slot freed, an
            # in-process enqueue): one waiting task, no helper task to cancel.
            self._waiting.add(queue)
            try:
                await self._backend.wait_for_work([queue], deadline, wake)
            finally:
                self._waiting.discard(queue)

    async def _worker(self, feed: _Feed) -> None:
        limiter = self._global_limiter
        while (job := await feed.get()) is not None:
            if limiter is None:
                await self._run_job(job)
            else:
                async with limiter:
                    await self._run_job(job)

    def _stop_job(self, running: _Running, reason: str) -> None:
        if running.stop_reason is None:
            running.stop_reason = reason
        if reason == _StopReason.CANCEL:
            running.context.request_cancel()
        running.scope.cancel()

    async def _run_job(self, job: Job) -> None:
        self.slots.buffered[job.queue] -= 1
        try:
            definition = self._definitions[job.name]
        except KeyError:
            try:
                definition = self._definitions[job.name] = self._lookup(job.name)
            except AsyncJobsError:
                # Not cached: a registry included later may still bring the name.
                definition = None
        context = JobContext(job, partial(self._report_progress, job))
        running = _Running(
            job=job, definition=definition, scope=anyio.CancelScope(), context=context
        )
        skip = self._skip.pop(job.id, None)
        if skip is None and self._stopping:
            # Claimed ahead but not started when claiming stopped: hand it back.
            skip = _StopReason.SHUTDOWN
        if skip is not None:
            running.stop_reason = skip
            running.scope.cancel()
        self._running[job.id] = running
        reset = set_current(context)
        if self._bus.has_subscribers:
            self._bus.publish(
                JobStarted(
                    timestamp=self._clock.now(),
                    job_id=job.id,
                    job_name=job.name,
                    queue=job.queue,
                    attempt=job.attempts,
                )
            )
        started = self._clock.now()
        outcome: Outcome | None = None
        try:
            with running.scope:
                outcome = await self._call_handler(running)
            if running.scope.cancelled_caught or outcome is None:
                outcome = self._stopped_outcome(running)
        except anyio.get_cancelled_exc_class():
            # The whole runtime is being torn down: the lease will expire and
            # another worker will run the job again.
            raise
        except BaseException as exc:  # a handler's BaseException fails the job, not the runtime
            outcome = self._failure_outcome(running, exc)
        finally:
            if (
                outcome is not None
                and running.context.cancel_requested
                and outcome.kind in (OutcomeKind.RETRY, OutcomeKind.RELEASE)
            ):
                # Cancelled while it ran, and the attempt then failed: a retry
                # would silently undo the cancel.
                running.stop_reason = _StopReason.CANCEL
                outcome = self._stopped_outcome(running)
            reset_current(reset)
            del self._running[job.id]
            if outcome is None:
                self._forget(job.id)
            # Otherwise the job stays held (and heartbeated) until its outcome is
            # written: a slow store must not let the lease lapse in between.
            self.slots.release(job.queue)
            if self.slots.total == 0:
                self._idle.set()
            if outcome is not None and self._outcomes is not None:
                self._outcomes.send_nowait(_Settlement(outcome, job, self._clock.now() - started))

    def _forget(self, job_id: str) -> None:
        self._held.pop(job_id, None)
        self._skip.pop(job_id, None)

    async def _call_handler(self, running: _Running) -> Outcome | None:
        definition = running.definition
        job = running.job
        if definition is None:
            return self._failure_outcome(
                running,
                AsyncJobsError(f"no job is registered as {job.name!r} in this worker"),
            )
        try:
            payload = self._codec.decode(job.payload)
            args, kwargs = payload["a"], payload["k"]
        except Exception as exc:
            # A payload that cannot be read will not be readable on the next attempt either.
            return self._dead(running, exc)
        position = definition.context_position
        if position is not None and len(args) >= position:
            args.insert(position, running.context)
        elif definition.context_parameter is not None:
            kwargs[definition.context_parameter] = running.context
        timeout = job.timeout if job.timeout is not None else definition.timeout
        if timeout is None:
            value = await self._invoke(definition, args, kwargs)
        else:
            with anyio.move_on_after(timeout) as deadline:
                value = await self._invoke(definition, args, kwargs)
            if deadline.cancelled_caught and not running.scope.cancel_called:
                return self._failure_outcome(
                    running,
                    TimeoutError(f"job {job.name!r} ran longer than its timeout of {timeout} s"),
                )
        if running.scope.cancel_called:
            return None
        try:
            result = self._encoded_none if value is None else self._codec.encode(value)
        except Exception as exc:
            return self._dead(running, exc)
        return Outcome(
            job_id=job.id, lease_token=running.token, kind=OutcomeKind.COMPLETE, result=result
        )

    @staticmethod
    async def _invoke(definition: JobDefinition, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if definition.is_async:
            return await definition.function(*args, **kwargs)
        return await anyio.to_thread.run_sync(
            partial(definition.function, *args, **kwargs), abandon_on_cancel=True
        )

    def _stopped_outcome(self, running: _Running) -> Outcome | None:
        job = running.job
        if running.stop_reason == _StopReason.CANCEL:
            return Outcome(
                job_id=job.id,
                lease_token=running.token,
                kind=OutcomeKind.CANCELLED,
                error=ErrorInfo(type="JobCancelled", message="cancelled while running"),
            )
        if running.stop_reason == _StopReason.SHUTDOWN:
            return Outcome(
                job_id=job.id,
                lease_token=running.token,
                kind=OutcomeKind.RELEASE,
                due_at=self._clock.now(),
            )
        # Lease lost: another worker owns the job now; reporting would be refused.
        if self._bus.has_subscribers:
            self._bus.publish(
                JobLeaseLost(
                    timestamp=self._clock.now(), job_id=job.id, job_name=job.name, queue=job.queue
                )
            )
        return None

    def _dead(self, running: _Running, exc: BaseException) -> Outcome:
        return Outcome(
            job_id=running.job.id,
            lease_token=running.token,
            kind=OutcomeKind.DEAD,
            error=error_info(exc),
        )

    def _failure_outcome(self, running: _Running, exc: BaseException) -> Outcome:
        """Decide what a failed attempt leads to: retry later, hand back, or dead."""
        job = running.job
        if isinstance(exc, Permanent):
            return self._dead(running, exc)
        out_of_attempts = job.attempts >= job.max_attempts
        if isinstance(exc, Retry):
            delay = exc.delay
            if exc.snooze:
                return Outcome(
                    job_id=job.id,
                    lease_token=running.token,
                    kind=OutcomeKind.RELEASE,
                    due_at=self._clock.now() + (delay or 0.0),
                )
        else:
            delay = None
        if out_of_attempts:
            return self._dead(running, exc)
        if delay is None:
            backoff = running.definition.backoff if running.definition is not None else None
            delay = backoff.delay_for(job.attempts) if backoff is not None else 1.0
        return Outcome(
            job_id=job.id,
            lease_token=running.token,
            kind=OutcomeKind.RETRY,
            due_at=self._clock.now() + delay,
            error=error_info(exc),
        )

    async def _report_progress(self, job: Job, progress: float, message: str | None) -> None:
        assert job.lease_token is not None
        await self._backend.set_progress(job.id, job.lease_token, progress, message)
        if self._bus.has_subscribers:
            self._bus.publish(
                JobProgress(
                    timestamp=self._clock.now(),
                    job_id=job.id,
                    job_name=job.name,
                    queue=job.queue,
                    progress=progress,
                    message=message,
                )
            )

    # -- settling -----------------------------------------------------------------

    async def _settle_loop(self, receive: MemoryObjectReceiveStream[_Settlement]) -> None:
        async with receive:
            async for first in receive:
                batch = [first]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                refused = await self._settle_with_retries(batch)
                for settlement in batch:
                    self._forget(settlement.job.id)
                self._publish_outcomes(batch, refused)

    async def _settle_with_retries(self, batch: list[_Settlement]) -> set[str]:
        """Write outcomes, retrying while the store is unreachable, up to one lease.

        After a lease the jobs are another worker's anyway: the outcomes would
        be refused, and at-least-once delivery runs them again.
        """
        outcomes = [settlement.outcome for settlement in batch]
        delay = 0.05
        waited = 0.0
        while True:
            try:
                return set(await self._backend.settle(outcomes))
            except Exception:
                if waited >= self._lease:
                    logger.exception(
                        "could not record %d job outcomes; their leases have expired and "
                        "the jobs will run again",
                        len(outcomes),
                    )
                    return {outcome.job_id for outcome in outcomes}
                logger.warning(
                    "recording job outcomes failed; retrying in %.2f s", delay, exc_info=True
                )
                await anyio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    def _publish_outcomes(self, batch: list[_Settlement], refused: set[str]) -> None:
        now = self._clock.now()
        for settlement in batch:
            outcome, job = settlement.outcome, settlement.job
            common: dict[str, Any] = {
                "timestamp": now,
                "job_id": job.id,
                "job_name": job.name,
                "queue": job.queue,
            }
            if job.id in refused:
                logger.warning(
                    "lease lost for job %s (%s): another worker took it over; its outcome "
                    "(%s) was not recorded",
                    job.id,
                    job.name,
                    outcome.kind.value,
                )
                self._bus.publish(JobLeaseLost(**common))
                continue
            if not self._bus.has_subscribers:
                continue
            kind = outcome.kind
            if kind is OutcomeKind.COMPLETE:
                self._bus.publish(
                    JobCompleted(**common, attempt=job.attempts, duration=settlement.duration)
                )
            elif kind is OutcomeKind.RETRY:
                assert outcome.due_at is not None
                assert outcome.error is not None
                self._bus.publish(
                    JobRetrying(
                        **common, attempt=job.attempts, due_at=outcome.due_at, error=outcome.error
                    )
                )
            elif kind is OutcomeKind.RELEASE:
                assert outcome.due_at is not None
                self._bus.publish(
                    JobReleased(**common, attempt=job.attempts, due_at=outcome.due_at)
                )
            elif kind is OutcomeKind.DEAD:
                assert outcome.error is not None
                self._bus.publish(JobDied(**common, attempt=job.attempts, error=outcome.error))
            else:
                self._bus.publish(JobWasCancelled(**common))

    # -- heartbeats -----------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Extend leases every third of a lease; recover jobs of dead workers."""
        interval = self._lease / 3
        while not self._heartbeats_done.is_set():
            await self._clock.wait(self._heartbeats_done, self._clock.now() + interval)
            if self._heartbeats_done.is_set():
                return
            try:
                await self._beat()
            except Exception:
                logger.warning("heartbeat failed; will try again", exc_info=True)

    async def _beat(self) -> None:
        leases = {job_id: job.lease_token for job_id, job in self._held.items()}
        if leases:
            reply = await self._backend.heartbeat(
                {job_id: token for job_id, token in leases.items() if token is not None},
                self._lease,
            )
            for job_id, reason in [(i, _StopReason.LEASE_LOST) for i in reply.lost] + [
                (i, _StopReason.CANCEL) for i in reply.cancel_requested
            ]:
                running = self._running.get(job_id)
                if running is not None:
                    if reason == _StopReason.LEASE_LOST:
                        logger.warning("lease lost for running job %s; cancelling it here", job_id)
                    self._stop_job(running, reason)
                elif job_id in self._held:
                    self._skip.setdefault(job_id, reason)
        if not self._stopping:
            recovered = await self._backend.recover_expired()
            if recovered:
                logger.info("recovered %d jobs whose worker stopped heartbeating", recovered)
                self.slots.wake_all()
            if self._maintenance is not None:
                await self._maintenance()
