"""Records <-> Redis: script arguments from new jobs and outcomes, Job and Schedule from replies.

Floats travel as strings: Python's ``repr`` in, Lua's ``'%.17g'`` out, both
exact, so a time written by a test's clock reads back equal. Lists of values
(a job's tags, an attempt) are packed as a job is: each value as
``<len>:<bytes>``, or ``-`` when absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..._exceptions import BackendError, DuplicateJobError
from ..._models import (
    Attempt,
    ErrorInfo,
    Job,
    JobStart,
    JobState,
    KeyScope,
    NewJob,
    OnConflict,
    Outcome,
    OutcomeKind,
    Schedule,
)

__all__ = [
    "ATTEMPT_FIELDS",
    "JOB_FIELDS",
    "decode_attempt",
    "decode_enqueued",
    "decode_job",
    "decode_packed",
    "decode_schedule",
    "filter_args",
    "job_args",
    "num",
    "outcome_args",
    "start_args",
    "schedule_fields",
    "tags_arg",
]

#: The order in which the scripts pack a job's hash fields (``pack_job``) and
#: in which :func:`decode_job` reads them back.
JOB_FIELDS = (
    "id",
    "name",
    "queue",
    "payload",
    "state",
    "due_at",
    "enqueued_at",
    "priority",
    "attempts",
    "max_attempts",
    "timeout",
    "key",
    "schedule",
    "lease_token",
    "lease_expires_at",
    "worker_id",
    "started_at",
    "finished_at",
    "result",
    "error_type",
    "error_message",
    "error_traceback",
    "progress",
    "progress_message",
    "cancel_requested",
    "fire_at",
    "partition",
    "tags",
    "waits_for",
)

#: The order of an attempt's values as the scripts pack it (``record_attempt``):
#: number, outcome, finished_at, worker_id, started_at, error type and message.
ATTEMPT_FIELDS = (
    "number",
    "outcome",
    "finished_at",
    "worker_id",
    "started_at",
    "error_type",
    "error_message",
)


def num(value: float) -> str:
    """A float as exact text (repr round-trips; Lua's tonumber reads it back exactly)."""
    return repr(float(value))


def tags_arg(tags: Mapping[str, str]) -> bytes:
    """Tags as the job hash's ``tags`` field: each key, then its value, as ``<len>:<bytes>``."""
    parts: list[bytes] = []
    for key, value in tags.items():
        for text in (key.encode(), value.encode()):
            parts += (b"%d:" % len(text), text)
    return b"".join(parts)


def _decode_tags(packed: bytes | None) -> dict[str, str]:
    if not packed:
        return {}
    values = _unpack(packed)
    return {
        (key or b"").decode(): (value or b"").decode()
        for key, value in zip(values[::2], values[1::2], strict=True)
    }


def filter_args(
    *,
    queue: str | None = None,
    state: JobState | None = None,
    name: str | None = None,
    schedule: str | None = None,
    partition: str | None = None,
    enqueued_after: float | None = None,
    enqueued_before: float | None = None,
    finished_before: float | None = None,
    tags: Mapping[str, str] | None = None,
) -> list[str | bytes]:
    """The arguments of a job filter (see ``read_filter`` in the Lua prelude).

    The flags, then a value for each given filter in the flags' order: q queue,
    s state, n name, c schedule, p partition, a enqueued at or after, b enqueued
    before, f finished before, t tags (their count, then key/value pairs).
    """
    flags = ""
    values: list[str | bytes] = []
    texts = (
        ("q", queue),
        ("s", None if state is None else JobState(state).value),
        ("n", name),
        ("c", schedule),
        ("p", partition),
    )
    for flag, text in texts:
        if text is not None:
            flags += flag
            values.append(text)
    times = (("a", enqueued_after), ("b", enqueued_before), ("f", finished_before))
    for flag, time in times:
        if time is not None:
            flags += flag
            values.append(num(time))
    if tags:
        flags += "t"
        values.append(str(len(tags)))
        for key, value in tags.items():
            values += [key, value]
    return [flags, *values]


# -- new jobs and outcomes -> script arguments ----------------------------------------


_SCOPE_FLAGS = {KeyScope.QUEUED: "q", KeyScope.ACTIVE: "", KeyScope.WINDOW: "w"}
_CONFLICT_FLAGS = {OnConflict.RETURN: "", OnConflict.REPLACE: "r", OnConflict.RAISE: "x"}


def job_args(new: NewJob) -> list[str | bytes]:
    """The script arguments of one new job (see ``insert_jobs`` in the Lua prelude)."""
    key = new.key
    flags = ""
    if key is not None:
        # Scope and conflict rule only matter with a key; their defaults add nothing.
        flags = (
            "k"
            + _SCOPE_FLAGS[KeyScope(new.key_scope)]
            + _CONFLICT_FLAGS[OnConflict(new.on_conflict)]
            + ("e" if new.key_expires_at is not None else "")
        )
    if new.schedule is not None:
        flags += "s"
    if new.fire_at is not None:
        flags += "f"
    if new.partition is not None:
        flags += "p"
    if new.tags:
        flags += "t"
    head = (
        f"{flags}|{num(new.due_at)}|{num(new.enqueued_at)}|{int(new.priority)}|"
        f"{int(new.max_attempts)}|{'' if new.timeout is None else num(new.timeout)}"
    )
    args: list[str | bytes] = [new.id, new.name, new.queue, new.payload, head]
    if key is not None:
        args.append(key)
    if new.schedule is not None:
        args.append(new.schedule)
    if new.fire_at is not None:
        args.append(num(new.fire_at))
    if new.partition is not None:
        args.append(new.partition)
    if key is not None and new.key_expires_at is not None:
        args.append(num(new.key_expires_at))
    if new.tags:
        args.append(tags_arg(new.tags))
    return args


def checks_conflicts(jobs: Sequence[NewJob]) -> bool:
    """Whether an insert of *jobs* must check for ``raise`` conflicts before writing."""
    return any(new.key is not None and new.on_conflict == OnConflict.RAISE for new in jobs)


_KIND_CODES = {
    OutcomeKind.COMPLETE: "c",
    OutcomeKind.RETRY: "r",
    OutcomeKind.RELEASE: "l",
    OutcomeKind.DEAD: "d",
    OutcomeKind.CANCELLED: "x",
}


def outcome_args(outcome: Outcome) -> list[str | bytes]:
    """The script arguments of one outcome (see the settle script): only the values it has."""
    code = _KIND_CODES[OutcomeKind(outcome.kind)]
    args: list[str | bytes] = [outcome.job_id, outcome.lease_token, ""]
    if outcome.result is not None:
        code += "R"
        args.append(outcome.result)
    if outcome.due_at is not None:
        code += "D"
        args.append(num(outcome.due_at))
    error = outcome.error
    if error is not None:
        code += "E"
        args += [error.type, error.message]
        if error.traceback is not None:
            code += "T"
            args.append(error.traceback)
    if outcome.started_at is not None:
        code += "S"
        args.append(num(outcome.started_at))
    if outcome.remove:
        code += "X"
    args[2] = code
    return args


def start_args(starts: Sequence[JobStart]) -> list[str | bytes]:
    """The settle script's leading arguments: how many starts, then each as id, token, time."""
    args: list[str | bytes] = [str(len(starts))]
    for start in starts:
        args += [start.job_id, start.lease_token, num(start.started_at)]
    return args


# -- replies -> jobs ----------------------------------------------------------------


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _unpack(packed: bytes) -> list[bytes | None]:
    """Split a job packed by the scripts' ``pack_job`` into its field values."""
    values: list[bytes | None] = []
    pos, end = 0, len(packed)
    while pos < end:
        if packed[pos] == 45:  # "-": the field is absent
            values.append(None)
            pos += 1
            continue
        colon = packed.index(b":", pos)
        start = colon + 1
        pos = start + int(packed[pos:colon])
        values.append(packed[start:pos])
    return values


def decode_job(values: Sequence[bytes | None]) -> Job:
    """Turn a job's field values, in :data:`JOB_FIELDS` order, into a :class:`Job`."""
    (
        job_id,
        name,
        queue,
        payload,
        state,
        due_at,
        enqueued_at,
        priority,
        attempts,
        max_attempts,
        timeout,
        key,
        schedule,
        lease_token,
        lease_expires_at,
        worker_id,
        started_at,
        finished_at,
        result,
        error_type,
        error_message,
        error_traceback,
        progress,
        progress_message,
        cancel_requested,
        fire_at,
        partition,
        tags,
        waits_for,
    ) = values
    if (
        job_id is None
        or name is None
        or queue is None
        or payload is None
        or state is None
        or due_at is None
        or enqueued_at is None
        or priority is None
        or attempts is None
        or max_attempts is None
    ):
        raise BackendError(f"a job hash in Redis is incomplete: {values[0]!r}")
    error = None
    if error_type is not None:
        error = ErrorInfo(
            type=error_type.decode(),
            message=(error_message or b"").decode(),
            traceback=_text(error_traceback),
        )
    return Job(
        id=job_id.decode(),
        name=name.decode(),
        queue=queue.decode(),
        payload=payload,
        state=JobState(state.decode()),
        due_at=float(due_at),
        enqueued_at=float(enqueued_at),
        priority=int(priority),
        attempts=int(attempts),
        max_attempts=int(max_attempts),
        timeout=_float(timeout),
        key=_text(key),
        schedule=_text(schedule),
        fire_at=_float(fire_at),
        lease_token=_text(lease_token),
        lease_expires_at=_float(lease_expires_at),
        worker_id=_text(worker_id),
        started_at=_float(started_at),
        finished_at=_float(finished_at),
        result=result,
        error=error,
        progress=_float(progress),
        progress_message=_text(progress_message),
        cancel_requested=cancel_requested == b"1",
        partition=_text(partition),
        tags=_decode_tags(tags),
        waits_for=_text(waits_for),
    )


def decode_packed(packed: bytes) -> Job:
    """A job packed by the scripts' ``pack_job``."""
    return decode_job(_unpack(packed))


def decode_attempt(packed: bytes) -> Attempt:
    """An attempt packed by the scripts' ``record_attempt`` (see :data:`ATTEMPT_FIELDS`)."""
    number, outcome, finished_at, worker_id, started_at, error_type, error_message = _unpack(packed)
    if number is None or outcome is None or finished_at is None:
        raise BackendError(f"an attempt in Redis is incomplete: {packed!r}")
    return Attempt(
        number=int(number),
        worker_id=_text(worker_id),
        started_at=_float(started_at),
        finished_at=float(finished_at),
        outcome=outcome.decode(),
        error_type=_text(error_type),
        error_message=_text(error_message),
    )


def decode_enqueued(news: Sequence[NewJob], replies: Sequence[Any]) -> list[Job]:
    """The stored jobs of an insert, from its reply, in the order of *news*.

    The script lists only the jobs it did not store exactly as given (the
    holder of a key or an earlier job of the same id that stands in for one, or
    a new job that waits behind a running holder), as (index, packed job)
    pairs: every other new job was stored as given. A reply of
    ``(-1, key, holder id)`` says an ``on_conflict="raise"`` job met a holder
    and nothing was written.

    :raises DuplicateJobError: for that reply.
    """
    if replies and replies[0] == -1:
        raise DuplicateJobError(replies[1].decode(), replies[2].decode())
    jobs = [new.queued() for new in news]
    for i in range(0, len(replies), 2):
        jobs[int(replies[i])] = decode_packed(replies[i + 1])
    return jobs


# -- schedules ------------------------------------------------------------------------


def schedule_fields(schedule: Schedule) -> list[str | bytes]:
    """A schedule as hash field/value pairs; ``None`` fields are left out."""
    fields: list[str | bytes] = [
        "name",
        schedule.name,
        "job_name",
        schedule.job_name,
        "queue",
        schedule.queue,
        "trigger",
        schedule.trigger,
        "payload",
        schedule.payload,
        "misfire",
        schedule.misfire,
        "grace",
        num(schedule.grace),
        "overlap",
        "1" if schedule.overlap else "0",
        "paused",
        "1" if schedule.paused else "0",
        "priority",
        str(int(schedule.priority)),
        "max_attempts",
        str(int(schedule.max_attempts)),
    ]
    optional = {
        "next_fire_at": schedule.next_fire_at,
        "last_fire_at": schedule.last_fire_at,
        "timeout": schedule.timeout,
    }
    for name, value in optional.items():
        if value is not None:
            fields += [name, num(value)]
    return fields


def _pairs(raw: Any) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def decode_schedule(raw: Any) -> Schedule:
    """A schedule from its hash (a dict from HGETALL, or a flat list from a script)."""
    fields = _pairs(raw)
    get = fields.get
    return Schedule(
        name=fields[b"name"].decode(),
        job_name=fields[b"job_name"].decode(),
        queue=fields[b"queue"].decode(),
        trigger=fields[b"trigger"].decode(),
        payload=fields[b"payload"],
        next_fire_at=_float(get(b"next_fire_at")),
        last_fire_at=_float(get(b"last_fire_at")),
        misfire=fields[b"misfire"].decode(),
        grace=float(fields[b"grace"]),
        overlap=get(b"overlap") == b"1",
        paused=get(b"paused") == b"1",
        priority=int(fields[b"priority"]),
        max_attempts=int(fields[b"max_attempts"]),
        timeout=_float(get(b"timeout")),
    )
