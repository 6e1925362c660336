"""Checks of request input against the API's own schemas, with messages that say what to fix.

Only the JSON Schema words the request schemas use are understood: ``type``,
``enum``, ``minimum``, ``maximum``, ``exclusiveMinimum``, ``minLength``,
``properties``, ``required``, ``additionalProperties``, ``minProperties``,
``items``, ``anyOf`` (of ``required`` lists only) and ``format: date-time``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

__all__ = ["InputError", "check", "parse_time"]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


class InputError(Exception):
    """Input that does not fit: *field* names it, the message says what it should be."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time with an offset, or ``None`` when *text* is not one."""
    if not _RFC3339.match(text):
        return None
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        # JSON Schema counts 5.0 as an integer; the handlers convert it with int().
        if isinstance(value, float):
            return math.isfinite(value) and value.is_integer()
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    raise AssertionError(kind)  # pragma: no cover


_NAMES = {
    "null": "null",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "an array",
    "object": "an object",
}


def check(schema: dict[str, Any], value: Any, field: str = "") -> None:
    """Raise :class:`InputError` for the first way *value* does not fit *schema*."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(kind, value) for kind in kinds):
            wanted = " or ".join(_NAMES[kind] for kind in kinds)
            raise InputError(field or "body", f"must be {wanted}, got {_show(value)}")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(str(choice) for choice in schema["enum"])
        raise InputError(field, f"must be one of {choices}, got {_show(value)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise InputError(field, f"must be at least {schema['minimum']}, got {_show(value)}")
        if "maximum" in schema and value > schema["maximum"]:
            raise InputError(field, f"must be at most {schema['maximum']}, got {_show(value)}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise InputError(
                field, f"must be more than {schema['exclusiveMinimum']}, got {_show(value)}"
            )
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise InputError(field, "must not be empty")
        if schema.get("format") == "date-time" and parse_time(value) is None:
            raise InputError(
                field, f"must be an RFC 3339 time such as 2030-01-31T12:00:00Z, got {_show(value)}"
            )
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            check(schema["items"], item, f"{field}[{index}]")
    if isinstance(value, dict):
        _check_object(schema, value, field)


def _check_object(schema: dict[str, Any], value: dict[str, Any], field: str) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    prefix = f"{field}." if field else ""
    for name in schema.get("required", ()):
        if name not in value:
            raise InputError(prefix + name, "is required")
    if len(value) < schema.get("minProperties", 0):
        allowed = ", ".join(properties)
        raise InputError(field or "body", f"needs at least one of {allowed}")
    alternatives = schema.get("anyOf")
    if alternatives and not any(set(choice["required"]) <= set(value) for choice in alternatives):
        names = ", ".join(name for choice in alternatives for name in choice["required"])
        raise InputError(field or "body", f"needs at least one of {names}")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            check(properties[name], item, prefix + name)
        elif extra is False:
            allowed = ", ".join(properties)
            raise InputError(prefix + name, f"is not a known field (known: {allowed})")
        elif isinstance(extra, dict):
            check(extra, item, f"{prefix}{name}")
