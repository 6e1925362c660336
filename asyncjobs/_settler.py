"""Writing outcomes: every outcome that piled up is written in one batch (group commit).

Handler starts ride along: each outcome carries its handler's start time, and
a job still running :data:`START_REPORT_DELAY` after its start is reported
on its own, so views count it as started (not merely claimed) soon after.

While the store is away, outcomes are kept and written once it answers
again: the store's lease-token check decides whether each still counts, so an
outcome of a lease that was lost meanwhile is refused and never applied (it
becomes a :class:`~asyncjobs.JobLeaseLost` event). Only at shutdown is there a
deadline: outcomes still unwritten then are dropped, and their jobs run again
once their leases expire.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Collection
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from ._clock import Clock
from ._events import (
    EventBus,
    JobCompleted,
    JobDied,
    JobLeaseLost,
    JobReleased,
    JobRetrying,
    JobWasCancelled,
)
from ._held import Claim
from ._models import Job, JobStart, JobState, Outcome, OutcomeKind
from ._resilience import LoopBackoff, StoreGuard, pause
from .backends import Backend

__all__ = ["START_REPORT_DELAY", "Settlement", "Settler"]

logger = logging.getLogger("asyncjobs")

_FINAL_KIND = {
    JobState.COMPLETE: OutcomeKind.COMPLETE,
    JobState.DEAD: OutcomeKind.DEAD,
    JobState.CANCELLED: OutcomeKind.CANCELLED,
}
_FINAL_STATE = {kind: state for state, kind in _FINAL_KIND.items()}
#: How many removed jobs a process remembers for its own handles.
_REMOVED_KEPT = 1000

#: Seconds a handler runs before its start is written on its own: most jobs end
#: sooner, and their outcome carries the start at no extra write.
START_REPORT_DELAY = 0.1


@attrs.frozen
class Settlement:
    """An outcome to write, with the claim it ends and how long the attempt ran."""

    outcome: Outcome
    claim: Claim
    duration: float


class Settler:
    """The settle loop: receives settlements and writes them in batches."""

    def __init__(
        self,
        *,
        backend: Backend,
        guard: StoreGuard,
        clock: Clock,
        bus: EventBus,
        forget: Callable[[Claim], None],
        remove: Collection[JobState] = (),
    ) -> None:
        self._backend = backend
        self._guard = guard
        self._clock = clock
        self._bus = bus
        self._forget = forget
        # Outcomes ending in these states delete the job as they settle it (retention 0).
        self._remove = frozenset(_FINAL_KIND[state] for state in remove)
        # The last jobs this process removed as they settled (retention 0), as
        # they ended: a handle waiting in this process still gets its result.
        self.removed: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._give_up = anyio.Event()
        self.pending = 0
        # Claims whose handler started and whose start is not written yet, by token,
        # with the event loop's time of the start (real time: the delay is a batching
        # window, not a point on the job clock, which a test may hold still).
        self._starts: dict[str, tuple[Claim, float]] = {}
        self._starts_waiting = anyio.Event()

    def started(self, claim: Claim) -> None:
        """Note that *claim*'s handler started (at ``claim.started_at``)."""
        self._starts[claim.token] = (claim, anyio.current_time())
        if not self._starts_waiting.is_set():
            self._starts_waiting.set()

    def give_up(self) -> None:
        """Stop retrying: outcomes not written by now are dropped (shutdown's deadline)."""
        self._give_up.set()

    async def run(self, receive: MemoryObjectReceiveStream[Settlement]) -> None:
        """Write everything *receive* brings until it is closed and drained."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._report_starts)
            async with receive:
                async for first in receive:
                    batch = [first]
                    while True:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    self.pending = len(batch)
                    starts = self._starts
                    for settlement in batch:
                        # The outcome carries this start: no separate report.
                        starts.pop(settlement.outcome.lease_token, None)
                    for part in _one_outcome_per_job(batch):
                        refused = await self._write(part)
                        for settlement in part:
                            self._forget(settlement.claim)
                        if self._remove:
                            self._keep_removed(part, refused)
                        self._publish(part, refused)
                    self.pending = 0
            tg.cancel_scope.cancel()

    async def _report_starts(self) -> None:
        """Write the starts of handlers that have run a while; on errors, keep them for later."""
        backoff = LoopBackoff()
        while True:
            await self._starts_waiting.wait()
            self._starts_waiting = anyio.Event()
            await anyio.sleep(START_REPORT_DELAY)
            cutoff = anyio.current_time() - START_REPORT_DELAY
            due = [claim for claim, noted in self._starts.values() if noted <= cutoff]
            if len(due) < len(self._starts):
                self._starts_waiting.set()  # the younger ones on a later round
            if not due:
                continue
            starts = [
                JobStart(job_id=claim.job.id, lease_token=claim.token, started_at=claim.started_at)
                for claim in due
                if claim.started_at is not None
            ]
            try:
                await self._backend.settle([], starts)
            except Exception as exc:
                self._guard.failed("start report", exc)
                self._starts_waiting.set()
                await pause(backoff.next_delay(), self._give_up)
                continue
            self._guard.succeeded()
            backoff.reset()
            for claim in due:
                self._starts.pop(claim.token, None)

    async def _write(self, batch: list[Settlement]) -> set[str]:
        """Write *batch*, retrying while the store is away; return the refused tokens."""
        outcomes = [settlement.outcome for settlement in batch]
        if self._remove:
            outcomes = [
                attrs.evolve(outcome, remove=True) if outcome.kind in self._remove else outcome
                for outcome in outcomes
            ]
        backoff = LoopBackoff()
        while True:
            try:
                refused_ids = set(await self._backend.settle(outcomes))
            except Exception as exc:
                self._guard.failed("settle", exc)
                if self._give_up.is_set():
                    logger.error(
                        "shutting down with %d job outcome(s) not recorded (the store is "
                        "unreachable); those jobs run again once their leases expire",
                        len(outcomes),
                    )
                    return {outcome.lease_token for outcome in outcomes}
                await pause(backoff.next_delay(), self._give_up)
                continue
            self._guard.succeeded()
            return {o.lease_token for o in outcomes if o.job_id in refused_ids}

    def _keep_removed(self, batch: list[Settlement], refused: set[str]) -> None:
        now = self._clock.now()
        for settlement in batch:
            outcome = settlement.outcome
            if outcome.kind not in self._remove or outcome.lease_token in refused:
                continue
            self.removed[outcome.job_id] = attrs.evolve(
                settlement.claim.job,
                state=_FINAL_STATE[outcome.kind],
                result=outcome.result,
                error=outcome.error,
                finished_at=now,
                lease_token=None,
                lease_expires_at=None,
            )
            if len(self.removed) > _REMOVED_KEPT:
                self.removed.popitem(last=False)

    def _publish(self, batch: list[Settlement], refused: set[str]) -> None:
        now = self._clock.now()
        for settlement in batch:
            outcome, job = settlement.outcome, settlement.claim.job
            common: dict[str, Any] = {
                "timestamp": now,
                "job_id": job.id,
                "job_name": job.name,
                "queue": job.queue,
            }
            if outcome.lease_token in refused:
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


def _one_outcome_per_job(batch: list[Settlement]) -> list[list[Settlement]]:
    """Split *batch* so no part holds two outcomes of one job.

    A store answers refusals by job id; a stale claim's outcome and the new
    claim's outcome of the same job must not share a batch.
    """
    parts: list[list[Settlement]] = []
    seen: list[set[str]] = []
    for settlement in batch:
        job_id = settlement.claim.job.id
        for part, ids in zip(parts, seen, strict=True):
            if job_id not in ids:
                part.append(settlement)
                ids.add(job_id)
                break
        else:
            parts.append([settlement])
            seen.append({job_id})
    return parts
