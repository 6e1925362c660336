"""The Redis backend: jobs shared by every process that reaches one Redis server.

``from asyncjobs.backends import RedisBackend`` (or ``from_url("redis://...")``)
is how users reach it; this package also exports
:class:`RedisPersistenceWarning`. Its files, each one concern:

- ``store.py``: :class:`RedisBackend`, one method per operation, in the contract's groups
- ``_connection.py``: the client (URL, TLS, ACL), checks at open, script calls, errors
- ``_lane.py``: the enqueue lane, a connection of its own for one caller at a time
- ``_keys.py``: the key layout under the prefix, for Python and for Lua
- ``_codec.py``: new jobs, outcomes and schedules to script arguments; replies to records
- ``_prelude.py``: the Lua every script shares, and how a script's source is assembled
- ``_waiting.py``: the prelude's Lua for jobs queued behind a running job with their key
- ``_enqueue.py``: the insert scripts, and the group commit that shares them between callers
- ``_lifecycle.py``: claim, heartbeat, settle, recovery, progress (scripts and callers)
- ``_wakeups.py``: pub/sub wake-ups and the next due time
- ``_control.py``: cancel, retry a dead job, pause a queue, prune, delete, purge (scripts
  and callers)
- ``_schedules.py``: stored schedules and the once-per-tick fire (scripts and callers)
- ``_inspection.py``: one job and its attempts, a filtered page, counts per queue (scripts
  and callers)
- ``_registry.py``: the live workers and the audit trail (scripts and callers)
"""

from __future__ import annotations

from ._connection import RedisPersistenceWarning
from .store import RedisBackend

__all__ = ["RedisBackend", "RedisPersistenceWarning"]

# The public names print (and pickle) under the path users import them from.
RedisBackend.__module__ = __name__
RedisPersistenceWarning.__module__ = __name__
