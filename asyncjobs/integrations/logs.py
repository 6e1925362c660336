"""Structured logs: one record per job state change, and a JSON formatter.

::

    with log_events(runtime):            # or `async with`
        async with runtime:
            ...

Every state change of a job becomes one record on the ``asyncjobs.jobs``
logger (a child of ``asyncjobs``: silence it alone with
``logging.getLogger("asyncjobs.jobs").setLevel(logging.WARNING)``). Each
record carries the same fields as attributes (``extra=``), ``None`` where
they do not apply:

``job_event``
    ``enqueued``, ``started``, ``completed``, ``retrying``, ``released``,
    ``dead``, ``cancelled``, ``lease_lost`` or ``schedule_fired``.
``job_id``, ``job_name``, ``queue``
    which job (``schedule`` too, for ``schedule_fired``).
``attempt``
    the attempt's number, from 1.
``duration``
    seconds the attempt ran (when it ended in this process).
``outcome``
    how the attempt ended: ``complete``, ``retry``, ``released``, ``dead``,
    ``cancelled`` or ``lease_lost``.
``error_type``
    the exception's class name of a failed attempt.

Arguments, results and error messages are never part of a record: they may
hold secrets. ``asyncjobs worker --log-format json`` prints these records
(and every other one) through :class:`JSONFormatter`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._events import (
    Event,
    JobCompleted,
    JobDied,
    JobEnqueued,
    JobEvent,
    JobLeaseLost,
    JobReleased,
    JobRetrying,
    JobStarted,
    JobWasCancelled,
    ScheduleFired,
)
from .._exceptions import ConfigurationError
from ._attempts import Attempts
from ._listen import listen

if TYPE_CHECKING:
    from .._runtime import JobRuntime

__all__ = ["FIELDS", "JSONFormatter", "JobLogger", "log_events"]

#: The attributes every job record carries.
FIELDS = (
    "job_event",
    "job_id",
    "job_name",
    "queue",
    "attempt",
    "duration",
    "outcome",
    "error_type",
)
#: Attempts whose start is remembered for their duration; past this the oldest go.
_MAX_STARTS = 100_000


class JobLogger:
    """Logs one runtime's job state changes while it is entered (``with`` or ``async with``).

    Made by :func:`log_events`.
    """

    def __init__(
        self, runtime: JobRuntime, logger: logging.Logger | None = None, level: int = logging.INFO
    ) -> None:
        self._runtime = runtime
        self.logger = logger if logger is not None else logging.getLogger("asyncjobs.jobs")
        self.level = level
        self._starts: Attempts[float] = Attempts(_MAX_STARTS)
        self._stop: Any = None

    def __repr__(self) -> str:
        return f"<JobLogger to {self.logger.name!r} at {logging.getLevelName(self.level)}>"

    def __enter__(self) -> JobLogger:
        if self._stop is not None:
            raise ConfigurationError("this JobLogger is already entered")
        self._stop = listen(self._runtime.events, self._on_event)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()
        self._starts.clear()

    async def __aenter__(self) -> JobLogger:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ScheduleFired):
            self._log(
                self.level,
                "schedule %s fired for %s: job %s",
                (event.schedule, _iso(event.fire_at), event.job_id),
                job_event="schedule_fired",
                job_id=event.job_id,
                schedule=event.schedule,
            )
            return
        if not isinstance(event, JobEvent):
            return
        base: dict[str, Any] = {
            "job_id": event.job_id,
            "job_name": event.job_name,
            "queue": event.queue,
        }
        who = (event.job_id, event.job_name)
        if isinstance(event, JobEnqueued):
            self._log(
                self.level,
                "job %s (%s) enqueued on %s",
                (*who, event.queue),
                job_event="enqueued",
                **base,
            )
        elif isinstance(event, JobStarted):
            self._starts.add(event.job_id, event.attempt, event.timestamp)
            self._log(
                self.level,
                "job %s (%s) started attempt %d",
                (*who, event.attempt),
                job_event="started",
                attempt=event.attempt,
                **base,
            )
        elif isinstance(event, JobCompleted):
            self._starts.pop(event.job_id, event.attempt)
            self._log(
                self.level,
                "job %s (%s) completed attempt %d in %.3f s",
                (*who, event.attempt, event.duration),
                job_event="completed",
                attempt=event.attempt,
                duration=event.duration,
                outcome="complete",
                **base,
            )
        elif isinstance(event, JobRetrying):
            duration = self._duration(event)
            self._log(
                max(self.level, logging.WARNING),
                "job %s (%s) attempt %d failed with %s; it runs again in %.1f s",
                (*who, event.attempt, event.error.type, max(0.0, event.due_at - event.timestamp)),
                job_event="retrying",
                attempt=event.attempt,
                duration=duration,
                outcome="retry",
                error_type=event.error.type,
                **base,
            )
        elif isinstance(event, JobDied):
            duration = self._duration(event)
            self._log(
                max(self.level, logging.ERROR),
                "job %s (%s) is dead after attempt %d failed with %s",
                (*who, event.attempt, event.error.type),
                job_event="dead",
                attempt=event.attempt,
                duration=duration,
                outcome="dead",
                error_type=event.error.type,
                **base,
            )
        elif isinstance(event, JobReleased):
            duration = self._duration(event)
            self._log(
                self.level,
                "job %s (%s) was handed back after attempt %d",
                (*who, event.attempt),
                job_event="released",
                attempt=event.attempt,
                duration=duration,
                outcome="released",
                **base,
            )
        elif isinstance(event, JobWasCancelled):
            duration = self._duration(event)
            self._log(
                self.level,
                "job %s (%s) was cancelled",
                who,
                job_event="cancelled",
                duration=duration,
                outcome="cancelled",
                **base,
            )
        elif isinstance(event, JobLeaseLost):
            duration = self._duration(event)
            self._log(
                max(self.level, logging.WARNING),
                "job %s (%s) lost its lease: another worker holds it; this attempt's outcome "
                "was not recorded",
                who,
                job_event="lease_lost",
                duration=duration,
                outcome="lease_lost",
                **base,
            )

    def _duration(self, event: JobEvent) -> float | None:
        started = self._starts.pop(event.job_id, getattr(event, "attempt", None))
        return None if started is None else max(0.0, event.timestamp - started)

    def _log(self, level: int, message: str, args: tuple[Any, ...], **fields: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        extra = dict.fromkeys(FIELDS)
        extra.update(fields)
        self.logger.log(level, message, *args, extra=extra)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def log_events(
    runtime: JobRuntime, *, logger: logging.Logger | None = None, level: int = logging.INFO
) -> JobLogger:
    """Log *runtime*'s job state changes while the result is entered.

    :param logger: where the records go (default ``asyncjobs.jobs``).
    :param level: the level of ordinary changes; a retry is logged at
        ``WARNING`` at least, a dead job at ``ERROR`` at least. A record below
        the logger's level costs no formatting.
    """
    return JobLogger(runtime, logger, level)


#: Attributes every LogRecord has: what is not among them came in through ``extra=``.
_STANDARD = frozenset(
    (
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
    )
)


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object a line: time, level, logger, message, and its extras.

    ``time`` is ISO 8601 in UTC. Every attribute given through ``extra=`` is a
    key of its own (values JSON cannot hold are written as ``str()``); an
    exception's traceback is ``exc_info``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return *record* as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
