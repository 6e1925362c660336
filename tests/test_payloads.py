"""Typed payloads: arguments and results converted by the handler's annotations."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, TypedDict

import attrs
import pydantic
import pytest

from asyncjobs import (
    ConfigurationError,
    JobArgumentsError,
    JobDead,
    JobRuntime,
    JobState,
    ManualClock,
    SerializationError,
)
from asyncjobs._serialization import JSONCodec
from asyncjobs.testing import drain

pytestmark = pytest.mark.anyio


class Mode(enum.Enum):
    ROAD = "road"
    RAIL = "rail"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Stop:
    id: uuid.UUID
    eta: datetime
    weight_kg: Decimal


@attrs.frozen
class Carrier:
    name: str
    since: date


class Window(TypedDict):
    opens: time
    length: timedelta


class Point(NamedTuple):
    lat: float
    lon: float


class Quote(pydantic.BaseModel):
    amount: Decimal
    valid_until: datetime


@dataclasses.dataclass
class Lane:
    id: int
    mode: Mode
    level: Level
    departs_at: datetime
    stops: list[Stop]
    carrier: Carrier | None
    window: Window
    start: Point
    tags: set[str]
    extras: dict[int, bytes]
    archive: Path
    quote: Quote


class Opaque:
    """Not a type payloads can carry."""


def a_lane() -> Lane:
    start = datetime(2026, 6, 1, 8, 30, tzinfo=timezone(timedelta(hours=2)))
    return Lane(
        id=9,
        mode=Mode.RAIL,
        level=Level.HIGH,
        departs_at=start,
        stops=[Stop(uuid.UUID(int=7), start + timedelta(hours=3), Decimal("12.50"))],
        carrier=Carrier("Nordbahn", date(2020, 1, 1)),
        window=Window(opens=time(6, 0), length=timedelta(hours=2, minutes=30)),
        start=Point(53.55, 9.99),
        tags={"fragile", "express"},
        extras={1: b"\x00\xff", 2: b"ok"},
        archive=Path("/var/lanes/9.json"),
        quote=Quote(amount=Decimal("1234.50"), valid_until=start + timedelta(days=1)),
    )


def make(clock: ManualClock, **kwargs: Any) -> JobRuntime:
    return JobRuntime(clock=clock, shutdown_grace=0.05, **kwargs)


async def test_every_listed_type_round_trips_into_the_handler_and_back(
    clock: ManualClock,
) -> None:
    runtime = make(clock)
    seen: list[Any] = []

    @runtime.job(name="analyze")
    async def analyze(lane: Lane, within: timedelta, *, day: date | None = None) -> Lane:
        seen.extend([lane, within, day])
        return lane

    lane = a_lane()
    async with runtime:
        handle = await analyze.enqueue(lane, timedelta(days=7), day=date(2026, 6, 1))
        await drain(runtime)
        assert seen == [lane, timedelta(days=7), date(2026, 6, 1)]
        got = seen[0]
        assert isinstance(got.stops[0], Stop)
        assert isinstance(got.carrier, Carrier)
        assert isinstance(got.start, Point)
        assert isinstance(got.quote, Quote)
        assert isinstance(got.archive, Path)
        assert got.tags == {"fragile", "express"}
        assert got.departs_at.utcoffset() == timedelta(hours=2)
        result = await handle.result(timeout=5)
        assert result == lane
        assert isinstance(result, Lane)


async def test_the_stored_form_is_plain_json(clock: ManualClock) -> None:
    runtime = make(clock)

    @runtime.job(name="ship")
    async def ship(stop: Stop, mode: Mode) -> None: ...

    async with runtime:
        handle = await ship.enqueue(
            Stop(uuid.UUID(int=1), datetime(2026, 1, 2, 3, 4, tzinfo=UTC), Decimal("1.5")),
            Mode.ROAD,
        )
        stored = json.loads(handle.job.payload)
        assert stored == {
            "a": [
                {
                    "id": "00000000-0000-0000-0000-000000000001",
                    "eta": "2026-01-02T03:04:00Z",
                    "weight_kg": "1.5",
                },
                "road",
            ],
            "k": {},
        }


async def test_unannotated_and_any_parameters_keep_plain_json(clock: ManualClock) -> None:
    runtime = make(clock)
    seen: list[Any] = []

    @runtime.job(name="mixed")
    async def mixed(when: datetime, raw, extra: Any, count: int) -> None:  # type: ignore[no-untyped-def]
        seen.extend([when, raw, extra, count])

    async with runtime:
        await mixed.enqueue(datetime(2026, 1, 1, tzinfo=UTC), {"a": [1]}, ["x"], 3)
        await drain(runtime)
    assert seen == [datetime(2026, 1, 1, tzinfo=UTC), {"a": [1]}, ["x"], 3]


def test_plain_handlers_take_no_part() -> None:
    runtime = JobRuntime()

    @runtime.job(name="plain")
    async def plain(a: int, b: str, c: list[str], d: dict[str, Any] | None, e=1) -> str:  # type: ignore[no-untyped-def]
        return a * b

    assert plain.definition.types is None


async def test_a_custom_codec_gets_plain_values(clock: ManualClock) -> None:
    class Upper(JSONCodec):
        """A codec that is not the default JSON one: typed values reach it as builtins."""

        def encode(self, value: Any) -> bytes:
            return super().encode(value)

    runtime = make(clock, codec=Upper())

    @runtime.job(name="stamp")
    async def stamp(when: datetime, ids: tuple[uuid.UUID, ...]) -> datetime:
        return when + timedelta(seconds=len(ids))

    async with runtime:
        handle = await stamp.enqueue(datetime(2026, 1, 1, tzinfo=UTC), (uuid.UUID(int=1),))
        assert await handle.result(timeout=5) == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


async def test_a_bad_argument_fails_at_enqueue_and_stores_nothing(clock: ManualClock) -> None:
    runtime = make(clock)

    @runtime.job(name="ship")
    async def ship(stop: Stop, mode: Mode = Mode.ROAD) -> None: ...

    async with runtime:
        with pytest.raises(
            SerializationError, match=r"argument 'stop' of job 'ship' does not fit"
        ) as e:
            await ship.enqueue(
                {"id": "not-a-uuid", "eta": "2026-01-01T00:00:00Z", "weight_kg": "1"}  # type: ignore[arg-type]
            )
        assert "Invalid UUID - at `stop.id`" in str(e.value)
        assert "not-a-uuid" not in str(e.value)
        with pytest.raises(
            SerializationError, match=r"argument 'mode' of job 'ship' cannot be encoded"
        ):
            await ship.enqueue(
                Stop(uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC), Decimal(1)),
                object(),  # type: ignore[arg-type]
            )
        with pytest.raises(SerializationError, match="does not fit") as e:
            await ship.enqueue(
                Stop(uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC), Decimal(1)),
                "s3cr3t-mode",  # type: ignore[arg-type]
            )
        assert "s3cr3t" not in str(e.value)
        with pytest.raises(JobArgumentsError):
            await ship.enqueue()  # type: ignore[call-arg]
        assert await runtime.list_jobs() == []


async def test_a_pydantic_error_names_the_field_not_the_value(clock: ManualClock) -> None:
    runtime = make(clock)

    @runtime.job(name="quote")
    async def quote(q: Quote) -> None: ...

    async with runtime:
        with pytest.raises(SerializationError, match="valid_until") as e:
            await quote.enqueue({"amount": "1", "valid_until": "s3cr3t"})  # type: ignore[arg-type]
        assert "s3cr3t" not in str(e.value)


async def test_a_payload_that_no_longer_fits_ends_the_job_dead_not_the_worker(
    clock: ManualClock,
) -> None:
    runtime = make(clock)
    ran: list[int] = []

    @runtime.job(name="ship", max_attempts=5)
    async def ship(stop: Stop) -> None:
        ran.append(1)

    @runtime.job(name="other")
    async def other() -> None:
        ran.append(2)

    async with runtime:
        # As a deploy that changed Stop would leave it: an old job in the store.
        handle = await runtime.function("ship").enqueue(
            Stop(uuid.UUID(int=1), datetime(2026, 1, 1, tzinfo=UTC), Decimal(1))
        )
        job = await runtime.backend.get_job(handle.id)
        assert job is not None
        broken = json.dumps({"a": [{"id": "x", "eta": 5}], "k": {}}).encode()
        await runtime.backend.enqueue([_copy_new_job(job, broken)], None)
        await drain(runtime)
        dead = await runtime.list_jobs(state=JobState.DEAD)
        assert len(dead) == 1
        assert dead[0].attempts == 1
        assert dead[0].error is not None
        assert dead[0].error.type == "asyncjobs.SerializationError"
        assert "the stored argument 'stop' of job 'ship' no longer fits" in dead[0].error.message
        assert "stop.id" in dead[0].error.message
        await other.enqueue()
        await drain(runtime)
        assert ran == [1, 2]  # the worker ran on


def _copy_new_job(job: Any, payload: bytes) -> Any:
    from asyncjobs._models import NewJob, new_job_id

    return NewJob(
        id=new_job_id(job.enqueued_at),
        name=job.name,
        queue=job.queue,
        payload=payload,
        due_at=job.due_at,
        enqueued_at=job.enqueued_at,
        priority=0,
        max_attempts=5,
        timeout=None,
    )


async def test_a_result_that_no_longer_fits_raises_at_result(clock: ManualClock) -> None:
    runtime = make(clock)

    @runtime.job(name="when")
    async def when() -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    async with runtime:
        handle = await when.enqueue()
        assert await handle.result(timeout=5) == datetime(2026, 1, 1, tzinfo=UTC)
        job = await handle.refresh()
        handle.job = job
        bad = attrs.evolve(job, result=b'"yesterday"')
        with pytest.raises(
            SerializationError, match=r"result of job 'when' does not fit .*datetime"
        ):
            handle._decoded_result(bad)


async def test_a_handler_returning_what_cannot_be_encoded_goes_dead(clock: ManualClock) -> None:
    runtime = make(clock)

    @runtime.job(name="odd")
    async def odd() -> Stop:
        return object()  # type: ignore[return-value]

    async with runtime:
        handle = await odd.enqueue()
        with pytest.raises(JobDead, match="SerializationError"):
            await handle.result(timeout=5)


async def test_typed_cron_arguments(clock: ManualClock) -> None:
    runtime = make(clock)
    seen: list[Any] = []

    @runtime.every(60, name="tick", args=(timedelta(minutes=5),), kwargs={"mode": Mode.RAIL})
    @runtime.job(name="tick")
    async def tick(window: timedelta, mode: Mode) -> None:
        seen.append((window, mode))

    async with runtime:
        clock.advance(60)
        await drain(runtime)
    assert seen == [(timedelta(minutes=5), Mode.RAIL)]


def test_types_payloads_cannot_carry_fail_at_decoration() -> None:
    runtime = JobRuntime()

    with pytest.raises(ConfigurationError, match=r"parameter 'thing' of job 'bad'.*Opaque"):

        @runtime.job(name="bad")
        async def bad(thing: Opaque) -> None: ...

    with pytest.raises(ConfigurationError, match="more than one dataclass"):

        @runtime.job(name="either")
        async def either(x: Stop | Lane) -> None: ...

    with pytest.raises(ConfigurationError, match="return value of job 'ret'"):

        @runtime.job(name="ret")
        async def ret() -> list[Opaque]:
            return []


def test_unresolvable_annotations_keep_plain_json() -> None:
    runtime = JobRuntime()

    async def handler(x: NotDefinedAnywhere) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    job = runtime.job(name="unresolved")(handler)
    assert job.definition.types is None


def test_type_names_in_messages_are_short() -> None:
    from asyncjobs._payloads import type_name

    assert type_name(Lane) == "Lane"
    assert type_name(list[Stop] | None) == "list[Stop] | None"
    assert type_name(dict[str, PurePosixPath]) == "dict[str, PurePosixPath]"
