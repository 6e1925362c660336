"""When to claim next: pub/sub wake-ups on the queues' channels, and the next due time.

Scripts that give a queue work publish on its ``wake`` channel (see the
prelude's ``publish_wakes``) and return the queues they woke, so this
process's own waiters wake at once and the others through the subscription.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

import anyio
from redis.exceptions import RedisError

from ..._clock import Clock
from ..._exceptions import BackendError
from ._connection import Connection
from ._keys import Keys
from ._prelude import script

__all__ = ["NEXT_DUE", "Wakeups", "next_due_at"]

logger = logging.getLogger("asyncjobs")

_LISTEN_TIMEOUT = 30.0
_LISTEN_BACKOFF_CAP = 2.0


class Wakeups:
    """This backend object's waiters, and the one subscription that wakes them.

    One waiter at a time reads the subscription (the listener); the others
    stand by and take over when it leaves.
    """

    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self._pubsub: Any = None
        # Wake channels wanted by some waiter so far, and those subscribed to.
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._subscribe_lock = anyio.Lock()
        # The vacancy event fires when the listener leaves.
        self._listening = False
        self._vacancy = anyio.Event()
        # One event per waiter, with its channels: a clock may set a waiter's event
        # as its deadline timer (ManualClock does), which must not wake anyone else.
        self._waiters: dict[anyio.Event, frozenset[str]] = {}

    def open(self, pubsub: Any) -> None:
        """Start with a fresh subscription object (nothing subscribed yet)."""
        self._pubsub = pubsub
        self._wanted = set()
        self._subscribed = set()

    async def aclose(self) -> None:
        """Wake every waiter and close the subscription; their listener stops with it."""
        pubsub, self._pubsub = self._pubsub, None
        self._wanted = set()
        self._subscribed = set()
        self.notify()
        if pubsub is not None:
            await pubsub.aclose()

    def notify(self, queues: Iterable[str] | None = None) -> None:
        """Wake this object's waiters on *queues* (``None``: every waiter)."""
        if not self._waiters:
            return  # an enqueue-only process: nobody to wake here
        if queues is None:
            for waiter in self._waiters:
                waiter.set()
            return
        self._wake_channels({self._keys.wake(queue) for queue in queues})

    def notify_woken(self, woken: Iterable[bytes]) -> None:
        """Wake the waiters on the queues a script reported woken (as bytes)."""
        if woken:
            self.notify(queue.decode() for queue in woken)

    def _wake_channels(self, channels: set[str]) -> None:
        for waiter, wanted in self._waiters.items():
            if not wanted.isdisjoint(channels):
                waiter.set()

    async def wait(
        self,
        clock: Clock,
        queues: Collection[str],
        deadline: float | None,
        wakeup: anyio.Event | None,
    ) -> None:
        """Return when work may have arrived for *queues*, *wakeup* is set, or at *deadline*.

        The first wait on a queue returns as soon as its channel is subscribed,
        so a job enqueued between the caller's last claim and the subscription
        is not missed; later messages queue up in the connection between waits.
        """
        if self._pubsub is None:
            raise BackendError("the Redis backend is not open: call open() first")
        channels = frozenset(self._keys.wake(queue) for queue in queues)
        wakeup = wakeup or anyio.Event()
        self._waiters[wakeup] = channels
        try:
            if not channels:
                await clock.wait(wakeup, deadline)
                return
            self._wanted |= channels
            if channels - self._subscribed:
                await self._subscribe()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stand_by)
                await clock.wait(wakeup, deadline)
                tg.cancel_scope.cancel()
        finally:
            del self._waiters[wakeup]

    async def _subscribe(self) -> None:
        async with self._subscribe_lock:
            missing = self._wanted - self._subscribed
            if not missing or self._pubsub is None:
                return
            try:
                await self._pubsub.subscribe(*sorted(missing))
            except (RedisError, OSError) as exc:
                # The listener tries again while the server is away.
                logger.debug("cannot subscribe to Redis wake-ups yet: %s", exc)
                return
            self._subscribed |= missing

    async def _stand_by(self) -> None:
        """Listen when nobody else does; otherwise wait until the listener leaves."""
        while self._pubsub is not None:
            if not self._listening:
                await self._listen()
                return
            await self._vacancy.wait()

    async def _listen(self) -> None:
        """Turn messages on the wake channels into wake-ups, until cancelled.

        A subscribe confirmation wakes that channel's waiters too: it follows a
        new subscription or a reconnect, and messages may have been missed
        before it.
        """
        self._listening = True
        backoff = 0.05
        failing = False
        try:
            while self._pubsub is not None:
                pubsub = self._pubsub
                try:
                    if self._wanted - self._subscribed:
                        await self._subscribe()
                    if not self._subscribed:
                        # The server is away (subscribing failed): nothing to read yet.
                        await anyio.sleep(backoff)
                        backoff = min(backoff * 2, _LISTEN_BACKOFF_CAP)
                        continue
                    message = await pubsub.get_message(timeout=_LISTEN_TIMEOUT)
                except (RedisError, OSError) as exc:
                    # Once per outage at warning level; the retries after it quietly.
                    log = logger.debug if failing else logger.warning
                    log("the Redis wake-up channel failed (%s); retrying", exc)
                    failing = True
                    self.notify()  # messages may be lost: let every waiter claim
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, _LISTEN_BACKOFF_CAP)
                    continue
                if failing:
                    logger.info("the Redis wake-up channel is back")
                    failing = False
                backoff = 0.05
                if message is not None and message.get("type") in ("message", "subscribe"):
                    channel = message["channel"]
                    self._wake_channels(
                        {channel.decode() if isinstance(channel, bytes) else str(channel)}
                    )
        finally:
            self._listening = False
            vacancy, self._vacancy = self._vacancy, anyio.Event()
            vacancy.set()


# -- the next due time ----------------------------------------------------------------

# ARGV: queues. Returns the earliest due_at of a queued job in the unpaused ones, or nil.
NEXT_DUE = script(
    "next_due",
    """
local best = nil
for i = 5, #ARGV do
  local queue = ARGV[i]
  if redis.call('SISMEMBER', PAUSED, queue) == 0 then
    local d = redis.call('ZRANGE', qkey(queue, 'delayed'), 0, 0, 'WITHSCORES')
    if d[2] and (best == nil or tonumber(d[2]) < best) then best = tonumber(d[2]) end
    -- Ready jobs sort by priority first: the earliest due time is the first
    -- member of some priority level, so visit one member per level.
    local rk = qkey(queue, 'ready')
    local first = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    while first[1] do
      local due = redis.call('HGET', job_key(string.sub(first[1], ID_AT)), 'due_at')
      if due and (best == nil or tonumber(due) < best) then best = tonumber(due) end
      first = redis.call('ZRANGEBYSCORE', rk, '(' .. first[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    end
  end
end
if best == nil then return false end
return fmt(best)
""",
    "ready",
)


async def next_due_at(conn: Connection, queues: Collection[str]) -> float | None:
    """The earliest ``due_at`` of queued jobs in unpaused *queues*."""
    if not queues:
        return None
    reply = await conn.run(NEXT_DUE, list(queues))
    return None if reply is None else float(reply)
