"""Claim -> run -> settle: the worker loop.

One claim loop per queue takes as many due jobs as the queue has free slots
(one store round trip per batch) and feeds them to long-lived worker tasks,
which run each handler under its cancel scope and timeout and pass the
outcome to the settle loop (:mod:`asyncjobs._settler`). A heartbeat loop
extends the leases of held jobs, notices cancellations and lost leases, and
recovers jobs whose worker died.

Every loop here survives the store being away (:mod:`asyncjobs._resilience`):
it backs off and resumes. While the store cannot be reached no new handler
starts; a claim whose lease can no longer be trusted is stopped and left to
crash recovery. No handler is entered once shutdown, a cancel or a lost lease
has been decided for its claim.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections import deque
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._clock import Clock
from ._context import JobContext, reset_current, set_current
from ._events import EventBus, JobLeaseLost, JobProgress, JobStarted
from ._exceptions import AsyncJobsError
from ._held import Claim, ClaimBook, StopReason
from ._limits import PoolGate, Slots
from ._models import ClaimLimits, ErrorInfo, Handoff, Job, JobState, Outcome, OutcomeKind
from ._registry import JobDefinition
from ._resilience import LoopBackoff, StoreGuard, pause
from ._retry import Backoff, ExponentialBackoff, Permanent, Retry
from ._serialization import Codec
from ._settler import Settlement, Settler
from .backends import Backend

__all__ = ["SHUTDOWN_BOUND", "Dispatcher"]

logger = logging.getLogger("asyncjobs")

_MAX_TRACEBACK = 20_000

#: Seconds past ``shutdown_grace`` that shutdown may take: cancelled handlers get
#: ``_UNWIND`` of them to return, the rest goes to writing the last outcomes.
SHUTDOWN_BOUND = 5.0
_UNWIND = 2.0


class _Feed:
    """Claimed jobs waiting for a worker of their queue.

    A deque rather than a memory object stream: taking a job that is already
    there costs no trip through the event loop. It never holds more than the
    queue's capacity, so a worker running no-op jobs back to back still
    yields after a bounded run.
    """

    def __init__(self) -> None:
        self._claims: deque[Claim] = deque()
        self._idle_workers: deque[anyio.Event] = deque()
        self._closed = False

    def put(self, claim: Claim) -> None:
        """Add a claim and wake one idle worker."""
        self._claims.append(claim)
        if self._idle_workers:
            self._idle_workers.popleft().set()

    def drain(self) -> list[Claim]:
        """Take every claim no worker has started yet."""
        claims = list(self._claims)
        self._claims.clear()
        return claims

    def close(self) -> None:
        """Let workers finish the jobs already here, then stop."""
        self._closed = True
        while self._idle_workers:
            self._idle_workers.popleft().set()

    async def get(self) -> Claim | None:
        """Take the next job, waiting for one; ``None`` once closed and empty."""
        while not self._claims:
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
        return self._claims.popleft()


_DEFAULT_BACKOFF = ExponentialBackoff()


def _definition_backoff(definition: JobDefinition | None, queue: str) -> Backoff:
    if definition is not None and definition.backoff is not None:
        return definition.backoff
    return _DEFAULT_BACKOFF


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
        guard: StoreGuard | None = None,
        maintenance: Callable[[], Any] | None = None,
        heartbeat: float | None = None,
        claim_limits: Mapping[str, ClaimLimits] | None = None,
        backoff_for: Callable[[JobDefinition | None, str], Backoff] | None = None,
        remove: Collection[JobState] = (),
        state: Callable[[], object] = lambda: None,
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
        self._heartbeat = heartbeat if heartbeat is not None else lease / 3
        # Queues whose claims carry cluster-wide limits (the store enforces them).
        self._claim_limits = dict(claim_limits or {})
        #: per queue, the limit that held back due jobs at its last claim (``None``: none).
        self.held_by: dict[str, str | None] = dict.fromkeys(slots.limits)
        self._backoff_for = backoff_for or _definition_backoff
        self._state = state  # what handlers read as ctx.state
        self.guard = guard if guard is not None else StoreGuard(clock)
        # Every claim held (buffered, running, or waiting for its outcome to be
        # written): its lease is heartbeated until the outcome is recorded.
        self._claims = ClaimBook()
        self._running: dict[str, Claim] = {}  # by lease token
        self._global_limiter = PoolGate(slots.max_concurrency) if slots.global_cap_binds else None
        # Queues whose claim loop waits for work (it found none): new jobs enqueued
        # here may go straight to their workers (see offer()).
        self._waiting: set[str] = set()
        # Claim calls awaiting the store: the jobs they take are in no one's view yet
        # (stored as claimed, not yet in _claims), which the testing kit must see.
        self.claims_in_flight = 0
        self._feeds: dict[str, _Feed] = {}
        self._stopping = False
        self._stop_event = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._heartbeats_done = False
        self._beat_wake = anyio.Event()
        self._settler = Settler(
            backend=backend,
            guard=self.guard,
            clock=clock,
            bus=bus,
            forget=self._claims.forget,
            remove=remove,
        )
        self._outcomes: MemoryObjectSendStream[Settlement] | None = None

    @property
    def running_jobs(self) -> Mapping[str, Job]:
        """The jobs this worker is running now, by id."""
        return {claim.job.id: claim.job for claim in self._running.values()}

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; running jobs get the shutdown grace period to finish.

        Jobs claimed ahead that no worker has started are handed back at once,
        unstarted, so another worker can take them during the grace period.
        """
        if self._stopping:
            return
        self._stopping = True
        self._stop_event.set()
        for feed in self._feeds.values():
            for claim in feed.drain():
                self.slots.buffered[claim.job.queue] -= 1
                self._finish_unstarted(claim, StopReason.SHUTDOWN)
        self.slots.wake_all()

    def removed_job(self, job_id: str) -> Job | None:
        """A job deleted as it settled here (retention 0), as it ended; ``None`` if unknown."""
        return self._settler.removed.get(job_id)

    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping

    def _heartbeats_finished(self) -> bool:
        return self._heartbeats_done

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
        if self._stopping or not self.guard.reachable:
            return None
        wanted = {
            queue: count
            for queue, count in counts.items()
            # A cluster-limited queue's jobs go through claim_limited, never a handoff.
            if queue in self._waiting and queue not in self._claim_limits
        }
        limits = self.slots.free_for(wanted) if wanted else {}
        if not limits:
            return None
        return Handoff(worker_id=self.worker_id, lease=self._lease, limits=limits)

    def accept(self, handoff: Handoff, jobs: list[Job], offered_at: float) -> None:
        """Run the new *jobs* the store handed over; give back the unused reserved slots.

        :param offered_at: when the enqueue that carried the offer began: the
            handed-over leases surely hold until then plus the lease.
        """
        used = dict.fromkeys(handoff.limits, 0)
        for job in jobs:
            if job.state is JobState.RUNNING and job.worker_id == self.worker_id:
                used[job.queue] += 1
                self._take_claimed(job, offered_at + self._lease)
        for queue, limit in handoff.limits.items():
            self.slots.give_back(queue, limit - used[queue])
        if self.slots.total == 0:
            self._idle.set()

    def _take_claimed(self, job: Job, valid_until: float) -> None:
        """Hold a job claimed for this worker and queue it for a worker task."""
        if self._idle.is_set():
            self._idle = anyio.Event()
        self.slots.buffered[job.queue] += 1
        claim = Claim(job=job, valid_until=valid_until)
        stale = self._claims.add(claim)
        if stale is not None:
            # The store gave this job out again, so the older claim's lease is gone
            # (this worker stalled past it): stop that attempt, keep the new one.
            logger.warning(
                "job %s was claimed again by this worker after its earlier lease "
                "expired; stopping the stale attempt",
                job.id,
            )
            stale.stop(StopReason.LEASE_LOST)
        self._feeds[job.queue].put(claim)

    def cancel_local(self, job_id: str) -> bool:
        """Cancel a job held here; ``False`` when this worker does not hold it."""
        claim = self._claims.newest(job_id)
        if claim is None:
            return False
        claim.stop(StopReason.CANCEL)
        return True

    # -- the loops --------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Claim and run jobs until stopped, then shut down gracefully.

        Shutdown takes at most ``shutdown_grace`` plus :data:`SHUTDOWN_BOUND`
        seconds, unless a handler ignores its cancellation: such a job is left
        to crash recovery (its lease is no longer renewed) and logged, but its
        task can only end when its handler returns.
        """
        send, receive = anyio.create_memory_object_stream[Settlement](math.inf)
        self._outcomes = send
        async with anyio.create_task_group() as services:
            services.start_soon(self._settler.run, receive)
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
                services.start_soon(self._shutdown_deadlines, feeds)
            send.close()
            self._heartbeats_done = True
            self._beat_wake.set()

    async def _shutdown_deadlines(self, feeds: list[_Feed]) -> None:
        """Claiming has stopped: grace for running jobs, then cancel, then give up."""
        for feed in feeds:
            feed.close()
        with anyio.move_on_after(self._shutdown_grace):
            await self._idle.wait()
        # Hand the rest back: each settles as released, its attempt not counted.
        for claim in list(self._running.values()):
            claim.stop(StopReason.SHUTDOWN)
        with anyio.move_on_after(_UNWIND):
            await self._idle.wait()
        stuck = list(self._running.values())
        for claim in stuck:
            claim.abandoned = True
            logger.error(
                "job %s (%s) ignored its cancellation at shutdown; its lease is no longer "
                "renewed, so another worker runs it again once the lease expires",
                claim.job.id,
                claim.job.name,
            )
        with anyio.move_on_after(SHUTDOWN_BOUND - _UNWIND):
            while self._settler.pending or len(self._claims) > len(stuck):
                await anyio.sleep(0.01)
        self._settler.give_up()

    async def _claim_loop(self, queue: str) -> None:
        slots = self.slots
        backoff = LoopBackoff()
        limits = self._claim_limits.get(queue)
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
            failure: Exception | None = None
            started = self._clock.now()
            held_by: str | None = None
            retry_at: float | None = None
            self.claims_in_flight += 1
            try:
                if limits is None:
                    jobs = await self._backend.claim(queue, free, self.worker_id, self._lease)
                else:
                    reply = await self._backend.claim_limited(
                        queue, free, self.worker_id, self._lease, limits
                    )
                    jobs, held_by, retry_at = reply.jobs, reply.held_by, reply.retry_at
            except Exception as exc:
                failure = exc
            finally:
                self.claims_in_flight -= 1
                slots.give_back(queue, free - len(jobs))
                if slots.total == 0:
                    # The last job may have finished while this claim was in flight.
                    self._idle.set()
            if failure is not None:
                self.guard.failed(f"claim ({queue})", failure)
                await pause(backoff.next_delay(), self._stop_event)
                continue
            self.guard.succeeded()
            backoff.reset()
            if jobs:
                for job in jobs:
                    self._take_claimed(job, started + self._lease)
                if self.stopping():
                    # Claimed while shutdown began: hand them back unstarted.
                    for claim in self._feeds[queue].drain():
                        slots.buffered[queue] -= 1
                        self._finish_unstarted(claim, StopReason.SHUTDOWN)
                # Let the woken workers start these before this loop's next round
                # trip (an in-memory claim never yields on its own).
                await anyio.lowlevel.checkpoint()
                continue
            if limits is not None:
                self.held_by[queue] = held_by
            if wake.is_set() or self._stopping:
                continue
            if held_by is not None:
                # Due jobs wait for a limit: until its window opens (a rate), or until
                # a running job of the queue ends (the store wakes this queue then).
                try:
                    self._waiting.add(queue)
                    try:
                        await self._backend.wait_for_work([queue], retry_at, wake)
                    finally:
                        self._waiting.discard(queue)
                except Exception as exc:
                    self.guard.failed(f"wait ({queue})", exc)
                    await pause(backoff.next_delay(), self._stop_event)
                continue
            try:
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
            except Exception as exc:
                self.guard.failed(f"wait ({queue})", exc)
                await pause(backoff.next_delay(), self._stop_event)

    async def _worker(self, feed: _Feed) -> None:
        limiter = self._global_limiter
        while (claim := await feed.get()) is not None:
            if limiter is None:
                await self._run_claim(claim)
            else:
                await limiter.acquire()
                try:
                    await self._run_claim(claim)
                finally:
                    limiter.release()

    async def _may_start(self, claim: Claim) -> str | None:
        """Wait while the store is away; return why *claim* must not start, or ``None``."""
        while not self.guard.reachable and claim.stop_reason is None and not self._stopping:
            left = claim.valid_until - self._clock.now()
            if left <= 0:
                # The lease may be another worker's by now: leave the job to recovery.
                return StopReason.LEASE_EXPIRED
            with anyio.move_on_after(min(left, 0.5)):
                await self.guard.wait_reachable()
        if claim.stop_reason is not None:
            return claim.stop_reason
        return StopReason.SHUTDOWN if self._stopping else None

    def _finish_unstarted(self, claim: Claim, reason: str) -> None:
        """Settle a claim whose handler never started (no ``JobStarted`` for it)."""
        claim.stop_reason = claim.stop_reason or reason
        outcome = self._stopped_outcome(claim)
        self.slots.release(claim.job.queue)
        if self.slots.total == 0:
            self._idle.set()
        if outcome is None:
            self._claims.forget(claim)
        elif self._outcomes is not None:
            self._outcomes.send_nowait(Settlement(outcome, claim, 0.0))

    async def _run_claim(self, claim: Claim) -> None:
        job = claim.job
        self.slots.buffered[job.queue] -= 1
        reason = await self._may_start(claim)
        if reason is not None:
            self._finish_unstarted(claim, reason)
            return
        try:
            definition = self._definitions[job.name]
        except KeyError:
            try:
                definition = self._definitions[job.name] = self._lookup(job.name)
            except AsyncJobsError:
                # Not cached: a registry included later may still bring the name.
                definition = None
        claim.definition = definition
        context = claim.context = JobContext(
            job, partial(self._report_progress, job), state=self._state
        )
        scope = claim.scope = anyio.CancelScope()
        token = claim.token
        self._running[token] = claim
        reset = set_current(context)
        if self._bus.has_subscribers:
            self._bus.publish(
                JobStarted(
                    timestamp=self._clock.now(),
                    job_id=job.id,
                    job_name=job.name,
                    queue=job.queue,
                    attempt=job.attempts,
                    due_at=job.due_at,
                )
            )
        started = claim.started_at = self._clock.now()
        self._settler.started(claim)
        outcome: Outcome | None = None
        try:
            with scope:
                outcome = await self._call_handler(claim)
            if scope.cancelled_caught or outcome is None:
                outcome = self._stopped_outcome(claim)
        except anyio.get_cancelled_exc_class():
            # The whole runtime is being torn down: the lease will expire and
            # another worker will run the job again.
            raise
        except BaseException as exc:  # a handler's BaseException fails the job, not the runtime
            outcome = self._failure_outcome(claim, exc)
        finally:
            if claim.stop_reason == StopReason.LEASE_LOST and outcome is not None:
                # The claim was superseded or its lease lapsed while it ran: the store
                # would refuse the outcome, and must never apply it.
                outcome = self._stopped_outcome(claim)
            elif (
                outcome is not None
                and context.cancel_requested
                and outcome.kind in (OutcomeKind.RETRY, OutcomeKind.RELEASE)
            ):
                # Cancelled while it ran, and the attempt then failed: a retry
                # would silently undo the cancel.
                claim.stop_reason = StopReason.CANCEL
                outcome = self._stopped_outcome(claim)
            reset_current(reset)
            del self._running[token]
            if outcome is None:
                self._claims.forget(claim)
            # Otherwise the job stays held (and heartbeated) until its outcome is
            # written: a slow store must not let the lease lapse in between.
            self.slots.release(job.queue)
            if self.slots.total == 0:
                self._idle.set()
            if outcome is not None and self._outcomes is not None:
                self._outcomes.send_nowait(Settlement(outcome, claim, self._clock.now() - started))

    async def _call_handler(self, claim: Claim) -> Outcome | None:
        definition = claim.definition
        job = claim.job
        assert claim.scope is not None
        assert claim.context is not None
        if definition is None:
            return self._failure_outcome(
                claim,
                AsyncJobsError(f"no job is registered as {job.name!r} in this worker"),
            )
        types = definition.types
        try:
            if types is not None and types.arguments:
                args, kwargs = types.decode_arguments(self._codec, job.payload)
            else:
                payload = self._codec.decode(job.payload)
                args, kwargs = payload["a"], payload["k"]
        except Exception as exc:
            # A payload that cannot be read will not be readable on the next attempt either.
            return self._dead(claim, exc)
        position = definition.context_position
        if position is not None and len(args) >= position:
            args.insert(position, claim.context)
        elif definition.context_parameter is not None:
            kwargs[definition.context_parameter] = claim.context
        timeout = job.timeout if job.timeout is not None else definition.timeout
        if timeout is None:
            value = await self._invoke(definition, args, kwargs)
        else:
            with anyio.move_on_after(timeout) as deadline:
                value = await self._invoke(definition, args, kwargs)
            if deadline.cancelled_caught and not claim.scope.cancel_called:
                return self._failure_outcome(
                    claim,
                    TimeoutError(f"job {job.name!r} ran longer than its timeout of {timeout} s"),
                )
        if claim.scope.cancel_called:
            return None
        try:
            if types is not None and types.result is not None:
                result = types.encode_result(self._codec, value)
            else:
                result = self._encoded_none if value is None else self._codec.encode(value)
        except Exception as exc:
            return self._dead(claim, exc)
        return Outcome(
            job_id=job.id,
            lease_token=claim.token,
            kind=OutcomeKind.COMPLETE,
            result=result,
            started_at=claim.started_at,
        )

    @staticmethod
    async def _invoke(definition: JobDefinition, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if definition.is_async:
            return await definition.function(*args, **kwargs)
        return await anyio.to_thread.run_sync(
            partial(definition.function, *args, **kwargs), abandon_on_cancel=True
        )

    def _stopped_outcome(self, claim: Claim) -> Outcome | None:
        job = claim.job
        if claim.stop_reason == StopReason.CANCEL:
            return Outcome(
                job_id=job.id,
                lease_token=claim.token,
                kind=OutcomeKind.CANCELLED,
                error=ErrorInfo(type="JobCancelled", message="cancelled while running"),
                started_at=claim.started_at,
            )
        if claim.stop_reason == StopReason.SHUTDOWN:
            return Outcome(
                job_id=job.id,
                lease_token=claim.token,
                kind=OutcomeKind.RELEASE,
                due_at=self._clock.now(),
                started_at=claim.started_at,
            )
        # Lease lost (another worker owns the job now; reporting would be refused) or
        # expired while the store was away (crash recovery runs the job again).
        if self._bus.has_subscribers:
            self._bus.publish(
                JobLeaseLost(
                    timestamp=self._clock.now(), job_id=job.id, job_name=job.name, queue=job.queue
                )
            )
        return None

    def _dead(self, claim: Claim, exc: BaseException) -> Outcome:
        return Outcome(
            job_id=claim.job.id,
            lease_token=claim.token,
            kind=OutcomeKind.DEAD,
            error=error_info(exc),
            started_at=claim.started_at,
        )

    def _failure_outcome(self, claim: Claim, exc: BaseException) -> Outcome:
        """Decide what a failed attempt leads to: retry later, hand back, or dead."""
        job = claim.job
        if isinstance(exc, Permanent):
            return self._dead(claim, exc)
        out_of_attempts = job.attempts >= job.max_attempts
        if isinstance(exc, Retry):
            delay = exc.delay
            if exc.snooze:
                return Outcome(
                    job_id=job.id,
                    lease_token=claim.token,
                    kind=OutcomeKind.RELEASE,
                    due_at=self._clock.now() + (delay or 0.0),
                    started_at=claim.started_at,
                )
        else:
            delay = None
        if out_of_attempts:
            return self._dead(claim, exc)
        if delay is None:
            delay = self._backoff_for(claim.definition, job.queue).delay_for(job.attempts)
        return Outcome(
            job_id=job.id,
            lease_token=claim.token,
            kind=OutcomeKind.RETRY,
            due_at=self._clock.now() + delay,
            error=error_info(exc),
            started_at=claim.started_at,
        )

    async def _report_progress(self, job: Job, progress: float, message: str | None) -> None:
        assert job.lease_token is not None
        try:
            await self._backend.set_progress(job.id, job.lease_token, progress, message)
        except Exception as exc:
            # Progress is advice: a store that is away must not fail the job.
            self.guard.failed("progress", exc)
            return
        self.guard.succeeded()
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

    # -- heartbeats -----------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Extend leases every heartbeat (default: a third of a lease); recover dead workers' jobs.

        After a failed round the next one comes sooner (backoff, capped at the
        interval), so leases are renewed as soon as the store is back.
        """
        interval = self._heartbeat
        backoff = LoopBackoff(cap=interval)
        delay = interval
        next_beat = self._clock.now() + interval
        while not self._heartbeats_done:
            # A fresh event each round: a clock may set a waiter's event as its timer.
            self._beat_wake = anyio.Event()
            if delay >= interval:
                await self._clock.wait(self._beat_wake, next_beat)
            else:
                await pause(delay, self._beat_wake)
            if self._heartbeats_finished():
                return
            started = self._clock.now()
            if await self._beat():
                backoff.reset()
                delay = interval
                # Counted from the round's start, not its end: a slow round (or a clock
                # that jumped meanwhile) is followed by the next one at once.
                next_beat = started + interval
            else:
                delay = backoff.next_delay()

    async def _beat(self) -> bool:
        """One heartbeat round; ``False`` when the store could not be reached."""
        leases = self._claims.leases()
        if leases:
            started = self._clock.now()
            try:
                reply = await self._backend.heartbeat(leases, self._lease)
            except Exception as exc:
                self.guard.failed("heartbeat", exc)
                self._expire_untrusted(self._clock.now())
                return False
            self.guard.succeeded()
            lost, cancels = reply.lost, reply.cancel_requested
            for job_id, token in leases.items():
                claim = self._claims.get(token)
                if claim is None:
                    continue
                if job_id in lost:
                    # Only a running handler is news: a finished one's outcome may have
                    # been written while this heartbeat was in flight.
                    if token in self._running:
                        logger.warning("lease lost for running job %s; cancelling it here", job_id)
                    claim.stop(StopReason.LEASE_LOST)
                else:
                    claim.valid_until = max(claim.valid_until, started + self._lease)
                    if job_id in cancels:
                        claim.stop(StopReason.CANCEL)
        if self._stopping:
            return True
        try:
            recovered = await self._backend.recover_expired()
        except Exception as exc:
            self.guard.failed("recovery", exc)
            return False
        self.guard.succeeded()
        if recovered:
            logger.info("recovered %d jobs whose worker stopped heartbeating", recovered)
            self.slots.wake_all()
        if self._maintenance is not None:
            try:
                await self._maintenance()
            except Exception as exc:
                self.guard.failed("maintenance", exc)
                return False
        return True

    def _expire_untrusted(self, now: float) -> None:
        """Stop the claims whose lease may have run out while the store was away.

        Their jobs go back to the store's crash recovery; an outcome already
        waiting to be written is left to the store's token check.
        """
        for claim in self._claims:
            if claim.valid_until <= now and claim.stop_reason is None:
                if claim.token in self._running:
                    logger.warning(
                        "the lease of running job %s may have expired while the store was "
                        "unreachable; stopping it here (it runs again after recovery)",
                        claim.job.id,
                    )
                claim.stop(StopReason.LEASE_EXPIRED)
