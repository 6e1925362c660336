"""Optional integrations that read the runtime's events and the store's counts.

Each is a module behind an extra, imported on its own, so ``import asyncjobs``
never loads prometheus-client or OpenTelemetry:

- :mod:`asyncjobs.integrations.prometheus`: counters, histograms and gauges
  for Prometheus, an ASGI ``/metrics`` app (``pip install 'asyncjobs[prometheus]'``);
- :mod:`asyncjobs.integrations.otel`: OpenTelemetry spans per enqueue and per
  attempt (``pip install 'asyncjobs[otel]'``);
- :mod:`asyncjobs.integrations.logs`: one structured log record per state
  change, and a JSON formatter (no extra needed).
"""

from __future__ import annotations

__all__: list[str] = []
