"""The payload codec: job arguments and results as bytes. JSON by default; never pickle.

Nothing decoded from the store is executed or imported: a payload is data,
and the job it belongs to is looked up by a name the runtime registered.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from ._exceptions import SerializationError

__all__ = ["Codec", "JSONCodec"]


@runtime_checkable
class Codec(Protocol):
    """Turns plain values into bytes and back."""

    def encode(self, value: Any) -> bytes:
        """Encode *value*. :raises SerializationError: when it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`encode`. :raises SerializationError: when corrupt."""
        ...


class JSONCodec:
    """Compact JSON: str, int, float, bool, None, lists and str-keyed dicts."""

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def encode(self, value: Any) -> bytes:
        """Encode *value* as UTF-8 JSON."""
        try:
            return self._encoder.encode(value).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot encode {_describe(value)} as JSON ({exc}); pass plain values "
                "(str, int, float, bool, None, lists, dicts with str keys) or set a codec "
                "on the runtime"
            ) from exc

    def decode(self, data: bytes) -> Any:
        """Decode UTF-8 JSON."""
        try:
            return json.loads(data.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise SerializationError(f"stored payload is not valid JSON: {exc}") from exc

    def __repr__(self) -> str:
        return "JSONCodec()"


def _describe(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return f"a {type(value).__name__} holding a value that is not JSON"
    return f"a value of type {type(value).__name__}"
