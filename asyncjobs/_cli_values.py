"""Command-line values of the store commands: counts, durations, moments, tags."""

from __future__ import annotations

import argparse
import math
import re
from datetime import UTC, datetime

import attrs

__all__ = ["Moment", "duration", "moment", "positive_int", "tag"]


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may be empty, the key not)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1h30m``, ``2d``."""
    stripped = text.strip().lower()
    try:
        value = float(stripped)
    except ValueError:
        parts = _DURATION_PART.findall(stripped)
        if not parts or "".join(number + unit for number, unit in parts) != stripped:
            raise argparse.ArgumentTypeError(
                f"not a duration: {text!r} (use e.g. 90s, 10m, 1h30m, 2d)"
            ) from None
        value = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite duration of 0 or more, not {text}")
    return value


@attrs.frozen
class Moment:
    """A point in time given as a duration before now (``ago``) or as a Unix time (``at``)."""

    ago: float | None = None
    at: float | None = None

    def resolve(self, now: float) -> float:
        """The moment as a Unix time, a duration counted back from *now*."""
        return now - self.ago if self.ago is not None else float(self.at or 0.0)


def moment(text: str) -> Moment:
    """``10m`` (that long ago) or ``2026-01-31T12:00`` (an ISO time; UTC when naive)."""
    try:
        return Moment(ago=duration(text))
    except argparse.ArgumentTypeError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration or an ISO time: {text!r} (use e.g. 10m, 2h or 2026-01-31T12:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Moment(at=when.timestamp())
