"""Every statement of one schema, built once when the backend is made.

Each module keeps its SQL in a ``Statements`` class beside the code that runs
it; the catalog formats them all with the quoted schema name, so the strings
a backend sends are fixed (asyncpg prepares each once per connection).
"""

from __future__ import annotations

from . import _control, _enqueue, _flow, _inspection, _lifecycle, _operators, _schedules, _wakeups

__all__ = ["Catalog"]


class Catalog:
    """The statements of the schema *q* (quoted), one attribute per module."""

    def __init__(self, q: str) -> None:
        self.enqueue = _enqueue.Statements(q)
        self.lifecycle = _lifecycle.Statements(q)
        self.flow = _flow.Statements(q)
        self.control = _control.Statements(q)
        self.schedules = _schedules.Statements(q)
        self.inspection = _inspection.Statements(q)
        self.operators = _operators.Statements(q)
        self.wakeups = _wakeups.Statements(q)
