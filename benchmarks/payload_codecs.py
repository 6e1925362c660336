"""Encode + decode cost per job of typed payloads: msgspec vs cattrs vs today's JSON codec.

Not a timed test: a script that prints one table (microseconds per job, lower
is better), to choose the library behind typed payloads on evidence::

    python benchmarks/payload_codecs.py            # 20,000 jobs per row, best of 5
    python benchmarks/payload_codecs.py --n 5000 --repeat 3

Each row runs what one job costs: its arguments encoded to the stored bytes
at enqueue, and those bytes decoded back to the handler's arguments at run
time. Two payloads:

- ``plain``: ``noop(i: int)``, the hot path (annotated with JSON types only);
- ``typed``: ``analyze(lane: Lane, window: timedelta, day: date)``, where
  ``Lane`` is a dataclass holding a UUID, an enum, an aware datetime, a
  Decimal, an optional int, a set and a list of nested dataclasses.

Rows: ``json (today)`` is today's codec on the plain-dict equivalent (what a
user hand-converts to; the types are lost); ``msgspec builtins`` is
``msgspec.to_builtins`` -> today's codec -> ``msgspec.convert`` (the stored form
stays whatever the runtime's codec writes); ``msgspec.json`` encodes and decodes
in one step with a typed decoder; ``asyncjobs`` is what the runtime does with
the default codec (``_payloads.PayloadTypes``: msgspec.json encode, a decode at
enqueue that checks the arguments fit, the decode at run time; a plain handler
takes today's path, so its plain column is today's codec); ``cattrs`` is cattrs' preconf JSON converter
(``unstructure`` -> today's codec -> ``structure``) with the hooks it needs for
UUID, Decimal, time and timedelta; ``pydantic`` (a reference, when installed)
is a ``TypeAdapter`` over the same argument tuple.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncjobs._serialization import JSONCodec


class Mode(enum.Enum):
    ROAD = "road"
    RAIL = "rail"


@dataclasses.dataclass
class Stop:
    id: uuid.UUID
    eta: datetime
    weight_kg: Decimal


@dataclasses.dataclass
class Lane:
    id: int
    origin: str
    destination: str
    mode: Mode
    departs_at: datetime
    rate: Decimal
    carrier_id: int | None
    tags: set[str]
    stops: list[Stop]


TYPED_ARGS = tuple[Lane, timedelta, date]


def typed_value() -> tuple[Lane, timedelta, date]:
    start = datetime(2026, 6, 1, 8, 30, tzinfo=UTC)
    stops = [
        Stop(id=uuid.UUID(int=i + 1), eta=start + timedelta(hours=i), weight_kg=Decimal("12.5"))
        for i in range(3)
    ]
    lane = Lane(
        id=9,
        origin="Hamburg",
        destination="Munich",
        mode=Mode.ROAD,
        departs_at=start,
        rate=Decimal("1234.50"),
        carrier_id=None,
        tags={"fragile", "express"},
        stops=stops,
    )
    return lane, timedelta(days=7), date(2026, 6, 1)


def plain_dict_value() -> list[Any]:
    """What a user hand-converts the typed arguments to today."""
    lane, window, day = typed_value()
    return [
        {
            "id": lane.id,
            "origin": lane.origin,
            "destination": lane.destination,
            "mode": lane.mode.value,
            "departs_at": lane.departs_at.isoformat(),
            "rate": str(lane.rate),
            "carrier_id": lane.carrier_id,
            "tags": sorted(lane.tags),
            "stops": [
                {"id": str(s.id), "eta": s.eta.isoformat(), "weight_kg": str(s.weight_kg)}
                for s in lane.stops
            ],
        },
        window.total_seconds(),
        day.isoformat(),
    ]


Roundtrip = Callable[[], Any]


def rows() -> dict[str, tuple[Roundtrip, Roundtrip]]:
    """name -> (plain round trip, typed round trip)."""
    codec = JSONCodec()
    made: dict[str, tuple[Roundtrip, Roundtrip]] = {}

    plain_args = [7]
    dicts = plain_dict_value()

    def json_plain() -> Any:
        return codec.decode(codec.encode({"a": plain_args, "k": {}}))

    def json_typed() -> Any:
        return codec.decode(codec.encode({"a": dicts, "k": {}}))

    made["json (today)"] = (json_plain, json_typed)

    import msgspec

    values = typed_value()
    types = (Lane, timedelta, date)

    def builtins_plain() -> Any:
        payload = codec.decode(codec.encode({"a": msgspec.to_builtins(plain_args), "k": {}}))
        return [msgspec.convert(payload["a"][0], int)]

    def builtins_typed() -> Any:
        stored = codec.encode({"a": [msgspec.to_builtins(v, str_keys=True) for v in values]})
        raw = codec.decode(stored)["a"]
        return [msgspec.convert(v, t, str_keys=True) for v, t in zip(raw, types, strict=True)]

    made["msgspec builtins"] = (builtins_plain, builtins_typed)

    encoder = msgspec.json.Encoder()
    plain_decoder = msgspec.json.Decoder(tuple[int])
    typed_decoder = msgspec.json.Decoder(TYPED_ARGS)

    def msgspec_json_plain() -> Any:
        return plain_decoder.decode(encoder.encode(plain_args))

    def msgspec_json_typed() -> Any:
        return typed_decoder.decode(encoder.encode(values))

    made["msgspec.json"] = (msgspec_json_plain, msgspec_json_typed)

    import inspect

    from asyncjobs._payloads import payload_types

    async def analyze(lane: Lane, window: timedelta, day: date) -> None: ...

    def noop(i: int) -> None: ...

    analyze_types = payload_types(analyze, inspect.signature(analyze), "analyze")
    assert analyze_types is not None
    assert payload_types(noop, inspect.signature(noop), "noop") is None  # the hot path

    def asyncjobs_typed() -> Any:
        stored = analyze_types.encode_arguments(codec, values, {})
        return analyze_types.decode_arguments(codec, stored)[0]

    made["asyncjobs (msgspec.json, checked at enqueue)"] = (json_plain, asyncjobs_typed)

    import cattrs.preconf.json

    converter = cattrs.preconf.json.make_converter()
    for kind in (uuid.UUID, Decimal):
        converter.register_unstructure_hook(kind, str)
        converter.register_structure_hook(kind, lambda v, t: t(v))
    converter.register_unstructure_hook(timedelta, lambda v: v.total_seconds())
    converter.register_structure_hook(timedelta, lambda v, _: timedelta(seconds=v))
    converter.register_unstructure_hook(dtime, lambda v: v.isoformat())
    converter.register_structure_hook(dtime, lambda v, _: dtime.fromisoformat(v))

    def cattrs_plain() -> Any:
        payload = codec.decode(codec.encode({"a": converter.unstructure(plain_args), "k": {}}))
        return [converter.structure(payload["a"][0], int)]

    def cattrs_typed() -> Any:
        stored = codec.encode({"a": converter.unstructure(values, unstructure_as=TYPED_ARGS)})
        return converter.structure(codec.decode(stored)["a"], TYPED_ARGS)

    made["cattrs"] = (cattrs_plain, cattrs_typed)

    try:
        import pydantic
    except ImportError:
        return made
    plain_adapter = pydantic.TypeAdapter(tuple[int])
    typed_adapter = pydantic.TypeAdapter(TYPED_ARGS)

    def pydantic_plain() -> Any:
        return plain_adapter.validate_json(plain_adapter.dump_json((7,)))

    def pydantic_typed() -> Any:
        return typed_adapter.validate_json(typed_adapter.dump_json(values))

    made["pydantic (reference)"] = (pydantic_plain, pydantic_typed)
    return made


def check(name: str, typed: Roundtrip) -> None:
    """Every typed row must give back the handler's own types."""
    if name == "json (today)":
        return
    lane, window, day = typed()
    expected = typed_value()
    assert (lane, window, day) == expected, f"{name} did not round-trip the typed payload"


def best_of(function: Roundtrip, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(n):
            function()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(module)
    except PackageNotFoundError:
        return "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    made = rows()
    print(
        f"python {sys.version.split()[0]}; msgspec {version('msgspec')}, "
        f"cattrs {version('cattrs')}, pydantic {version('pydantic')}; "
        f"N={args.n:,}, best of {args.repeat}"
    )
    print()
    print(
        "| codec | plain `noop(i: int)` µs/job | typed `analyze(lane, window, day)` µs/job | types kept |"
    )
    print("|---|---:|---:|---|")
    for name, (plain, typed) in made.items():
        check(name, typed)
        plain_us = best_of(plain, args.n, args.repeat)
        typed_us = best_of(typed, args.n, args.repeat)
        kept = "no (hand-converted dicts)" if name == "json (today)" else "yes"
        print(f"| {name} | {plain_us:.2f} | {typed_us:.2f} | {kept} |")


if __name__ == "__main__":
    main()
