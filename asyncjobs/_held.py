"""The claims a worker holds: one record per claim, keyed by its lease token.

A job may be claimed by the same worker twice: a stall (SIGSTOP, a blocked
event loop) lets its lease expire, the store requeues it, and this worker
claims it again while the stale attempt is still winding down. Keyed by
token, the two never collide; the book knows which claim of a job is the
newest, and only that one is heartbeated.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import attrs

from ._context import JobContext
from ._models import Job
from ._registry import JobDefinition

__all__ = ["Claim", "ClaimBook", "StopReason"]


class StopReason:
    """Why a claim's handler is stopped (or never started)."""

    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    #: the store said the lease is gone, or this worker claimed the job again.
    LEASE_LOST = "lease lost"
    #: the lease may have run out while the store could not be reached.
    LEASE_EXPIRED = "lease expired"


@attrs.define(eq=False)
class Claim:
    """One claim of a job by this worker, from the claim until its outcome is written.

    :ivar valid_until: until when the lease surely holds, by this worker's own
        reckoning: the start of the last claim or heartbeat round trip that the
        store confirmed, plus the lease. Past it, while the store cannot be
        reached, the claim may already be another worker's.
    :ivar stop_reason: set when the handler must stop, or must not start.
    """

    job: Job
    valid_until: float
    stop_reason: str | None = None
    definition: JobDefinition | None = None
    scope: anyio.CancelScope | None = None
    context: JobContext | None = None
    #: when its handler started (``None`` until then): reported to the store.
    started_at: float | None = None
    #: the handler ignored its cancellation past the shutdown bound: no more heartbeats.
    abandoned: bool = False

    @property
    def token(self) -> str:
        """The claim's lease token (a claimed job always has one)."""
        assert self.job.lease_token is not None
        return self.job.lease_token

    def stop(self, reason: str) -> None:
        """Stop the handler (if it runs) for *reason*; the first reason given wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if reason == StopReason.CANCEL and self.context is not None:
            self.context.request_cancel()
        if self.scope is not None:
            self.scope.cancel()


class ClaimBook:
    """Every claim a worker holds (buffered, running, or waiting for its outcome to be written)."""

    def __init__(self) -> None:
        self._by_token: dict[str, Claim] = {}
        # job id -> the token of its newest claim here.
        self._newest: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def __iter__(self) -> Iterator[Claim]:
        return iter(list(self._by_token.values()))

    def add(self, claim: Claim) -> Claim | None:
        """Hold *claim*; return the older claim of the same job it supersedes, if any.

        The store hands out a new claim only once the old lease has expired, so
        the older claim is lost: the caller stops it.
        """
        older_token = self._newest.get(claim.job.id)
        self._by_token[claim.token] = claim
        self._newest[claim.job.id] = claim.token
        if older_token is None:
            return None
        return self._by_token.get(older_token)

    def get(self, token: str) -> Claim | None:
        """The claim with lease *token*, if held."""
        return self._by_token.get(token)

    def newest(self, job_id: str) -> Claim | None:
        """The newest claim of *job_id* held here, if any."""
        token = self._newest.get(job_id)
        return None if token is None else self._by_token.get(token)

    def forget(self, claim: Claim) -> None:
        """Drop *claim* (its outcome is written, or it was dropped)."""
        if self._by_token.get(claim.token) is claim:
            del self._by_token[claim.token]
        if self._newest.get(claim.job.id) == claim.token:
            del self._newest[claim.job.id]

    def leases(self) -> dict[str, str]:
        """job id -> token of every newest claim still worth heartbeating."""
        leases: dict[str, str] = {}
        for job_id, token in self._newest.items():
            claim = self._by_token.get(token)
            if claim is not None and not claim.abandoned:
                leases[job_id] = token
        return leases
