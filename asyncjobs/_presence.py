"""A runtime's presence in the store: it registers itself, refreshes, and leaves.

Every runtime (each role) writes a :class:`~asyncjobs._operating.WorkerInfo`
when it starts and again every heartbeat, so that any process can list the
live ones (``asyncjobs workers``) and ``explain`` can tell which queues and
job names are served. At shutdown it removes itself; a runtime that died
without leaving ages out after three missed refreshes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import anyio

from ._clock import Clock
from ._events import EventBus, WorkerJoined, WorkerLeft
from ._operating import WorkerInfo
from ._resilience import LoopBackoff, StoreGuard, pause
from .backends import Backend

__all__ = ["Presence"]

logger = logging.getLogger("asyncjobs")


class Presence:
    """Keeps one runtime's worker record fresh in the store until :meth:`leave`.

    :param describe: returns the current description (running jobs, held
        queues change); ``last_seen`` and ``stale_after`` are filled in here.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        clock: Clock,
        bus: EventBus,
        guard: StoreGuard,
        worker_id: str,
        interval: float,
        describe: Callable[[], WorkerInfo],
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._bus = bus
        self._guard = guard
        self._worker_id = worker_id
        self._interval = interval
        self._describe = describe
        self._stop = anyio.Event()
        self._wake = anyio.Event()
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def _record(self) -> WorkerInfo:
        info = self._describe()
        return WorkerInfo(
            id=self._worker_id,
            host=self.host,
            pid=self.pid,
            role=info.role,
            queues=info.queues,
            pool=info.pool,
            limits=info.limits,
            jobs=info.jobs,
            held=info.held,
            running=info.running,
            started_at=info.started_at,
            last_seen=self._clock.now(),
            stale_after=3 * self._interval,
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Register (the start completes after the first attempt), then refresh every
        interval until :meth:`stop`; survives store outages."""
        backoff = LoopBackoff(cap=self._interval)
        joined = False
        started = False
        while not self._stop.is_set():
            try:
                await self._backend.register_worker(self._record().encode())
            except Exception as exc:
                self._guard.failed("worker registry", exc)
                if not started:
                    # A store that is away must not hold the runtime's start up.
                    started = True
                    task_status.started()
                await pause(backoff.next_delay(), self._stop)
                continue
            if not started:
                # Registered before the runtime's block begins: any process listing
                # workers from then on sees this one.
                started = True
                task_status.started()
            backoff.reset()
            if not joined:
                joined = True
                if self._bus.has_subscribers:
                    self._bus.publish(
                        WorkerJoined(timestamp=self._clock.now(), worker_id=self._worker_id)
                    )
            if self._stop.is_set():
                break  # stopped while the write was in flight: its wake-up is spent
            # On the runtime's clock, like heartbeats: a test that moves its clock
            # a day ahead finds this runtime refreshed, not aged out.
            self._wake = anyio.Event()
            await self._clock.wait(self._wake, self._clock.now() + self._interval)

    def stop(self) -> None:
        """End the refresh loop (then call :meth:`leave`)."""
        self._stop.set()
        self._wake.set()

    async def leave(self) -> None:
        """Remove this runtime's record (best effort: a store that is away lets it age out)."""
        try:
            with anyio.fail_after(2):
                await self._backend.remove_worker(self._worker_id)
        except Exception as exc:
            logger.info("could not remove worker %s from the store: %s", self._worker_id, exc)
            return
        if self._bus.has_subscribers:
            self._bus.publish(WorkerLeft(timestamp=self._clock.now(), worker_id=self._worker_id))
