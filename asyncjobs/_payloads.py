"""Typed payloads: a job's arguments and result converted by its handler's annotations.

msgspec does the converting (``benchmarks/payload_codecs.py`` shows why): a
parameter annotated with a dataclass, an attrs class, a ``TypedDict``, a
``NamedTuple``, an enum, ``datetime``, ``date``, ``time``, ``timedelta``,
``UUID``, ``Decimal``, ``bytes``, a ``Path``, a pydantic model (when pydantic
is installed) or a container or union of these is stored as the JSON those
types map to and handed back to the handler as that type. Parameters that
are unannotated, ``Any`` or plain JSON types (``str``, ``int``, ``list[str]``
...) are passed as they are, and a job with nothing else takes no part here:
its payload is encoded by the runtime's codec exactly as before.

The stored form stays JSON (``{"a": [...], "k": {...}}``), readable by any
process and never executed. Messages name the argument and the field that
does not fit, never the value (payloads may hold secrets).
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

import attrs
import msgspec

from ._exceptions import ConfigurationError, SerializationError
from ._serialization import Codec, JSONCodec

__all__ = ["PayloadTypes", "payload_types"]

_PLAIN_TYPES: frozenset[Any] = frozenset(
    {str, int, float, bool, type(None), None, Any, object, list, dict, inspect.Parameter.empty}
)
_UNIONS: tuple[Any, ...] = (typing.Union, types.UnionType)


def _is_plain(annotation: Any) -> bool:
    """Whether JSON carries *annotation*'s values unchanged (no conversion needed)."""
    if annotation in _PLAIN_TYPES or isinstance(annotation, str | typing.TypeVar):
        return True
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is list or origin in _UNIONS:
        return all(_is_plain(argument) for argument in arguments)
    if origin is dict:
        return not arguments or (arguments[0] is str and _is_plain(arguments[1]))
    return False


def _pydantic_model() -> type[Any] | None:
    # Never imported here: a handler annotated with a pydantic model imported it already.
    module = sys.modules.get("pydantic")
    return None if module is None else typing.cast(type[Any], module.BaseModel)


def _enc_hook(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    model = _pydantic_model()
    if model is not None and isinstance(value, model):
        return value.model_dump(mode="json")
    raise TypeError(f"values of type {type(value).__qualname__} cannot be encoded")


def _dec_hook(kind: Any, value: Any) -> Any:
    if isinstance(kind, type) and issubclass(kind, PurePath):
        if not isinstance(value, str):
            raise ValueError(f"Expected `str` for a {kind.__name__}, got `{type(value).__name__}`")
        return kind(value)
    model = _pydantic_model()
    if model is not None and isinstance(kind, type) and issubclass(kind, model):
        try:
            return typing.cast(Any, kind).model_validate(value)
        except ValueError as exc:
            errors = getattr(exc, "errors", None)
            if errors is None:
                raise ValueError(f"does not fit {kind.__name__}") from None
            # pydantic's own message quotes the input: name the fields and the rule only.
            described = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or '(model)'}: {error['msg']}"
                for error in errors(include_url=False, include_input=False, include_context=False)
            )
            raise ValueError(f"does not fit {kind.__name__} ({described})") from None
    raise ValueError(f"cannot decode {getattr(kind, '__qualname__', kind)}")


# msgspec quotes an enum or literal value it does not know: payloads may hold secrets.
_QUOTED_VALUE = re.compile(r"Invalid enum value .*?(?= - at `|$)")


def _describe_error(exc: Exception, name: str) -> str:
    message = _QUOTED_VALUE.sub("Invalid enum value", str(exc))
    return message.replace("`$", f"`{name}")


def type_name(annotation: Any) -> str:
    """A short readable name for *annotation* (``list[Stop]``, ``Lane | None``)."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return re.sub(r"\b(?:typing|[\w.]+)\.(\w+)", r"\1", repr(annotation)).replace(
        "NoneType", "None"
    )


@attrs.frozen
class _Parameter:
    name: str
    #: ``None``: passed as it is (plain JSON).
    annotation: Any


@attrs.frozen(kw_only=True)
class PayloadTypes:
    """How one job's arguments and result are converted; made by :func:`payload_types`."""

    job_name: str
    #: whether any argument is converted (else the runtime's codec alone handles them).
    arguments: bool
    #: the parameters that may be passed by position, in order.
    positional: tuple[_Parameter, ...]
    by_name: Mapping[str, _Parameter]
    var_positional: _Parameter | None
    var_keyword: _Parameter | None
    #: the converted return annotation, or ``None`` (plain JSON).
    result: Any

    # -- arguments ------------------------------------------------------------

    def _parameter_at(self, position: int) -> _Parameter | None:
        if position < len(self.positional):
            return self.positional[position]
        return self.var_positional

    def _parameter_named(self, name: str) -> _Parameter | None:
        return self.by_name.get(name, self.var_keyword)

    def encode_arguments(
        self, codec: Codec, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> bytes:
        """Encode the arguments of one call and check they decode to the handler's types.

        :raises SerializationError: naming the argument (and field) that cannot be
            encoded or does not fit its annotation.
        """
        try:
            if type(codec) is JSONCodec:
                data = msgspec.json.encode({"a": args, "k": kwargs}, enc_hook=_enc_hook)
            else:
                data = codec.encode(
                    {
                        "a": [self._to_builtins(value) for value in args],
                        "k": {key: self._to_builtins(value) for key, value in kwargs.items()},
                    }
                )
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise SerializationError(self._encode_failure(args, kwargs, exc)) from None
        # Decoding now is what the worker will do: a value that does not fit fails
        # here, at the call, instead of making the job dead later.
        self._decode_arguments(codec, data, "argument {name!r} of job {job!r} does not fit")
        return data

    def decode_arguments(self, codec: Codec, data: bytes) -> tuple[list[Any], dict[str, Any]]:
        """Decode stored arguments to the handler's types.

        :raises SerializationError: naming the argument and field that no longer fit.
        """
        return self._decode_arguments(
            codec,
            data,
            "the stored argument {name!r} of job {job!r} no longer fits the handler",
        )

    def _decode_arguments(
        self, codec: Codec, data: bytes, wording: str
    ) -> tuple[list[Any], dict[str, Any]]:
        try:
            raw = msgspec.json.decode(data) if type(codec) is JSONCodec else codec.decode(data)
            args, kwargs = raw["a"], raw["k"]
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"stored payload of job {self.job_name!r} is unreadable"
            ) from (exc if isinstance(exc, SerializationError) else None)
        for position, value in enumerate(args):
            parameter = self._parameter_at(position)
            if parameter is not None and parameter.annotation is not None:
                args[position] = self._convert(value, parameter, wording)
        for key, value in kwargs.items():
            parameter = self._parameter_named(key)
            if parameter is not None and parameter.annotation is not None:
                kwargs[key] = self._convert(value, parameter, wording)
        return args, kwargs

    def _convert(self, value: Any, parameter: _Parameter, wording: str) -> Any:
        try:
            return msgspec.convert(value, parameter.annotation, str_keys=True, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            intro = wording.format(name=parameter.name, job=self.job_name)
            raise SerializationError(
                f"{intro} ({type_name(parameter.annotation)}): "
                f"{_describe_error(exc, parameter.name)}"
            ) from None

    @staticmethod
    def _to_builtins(value: Any) -> Any:
        return msgspec.to_builtins(value, str_keys=True, enc_hook=_enc_hook)

    def _encode_failure(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], exc: Exception
    ) -> str:
        # Encode value by value to name the argument at fault.
        named = [(self._name_at(position), value) for position, value in enumerate(args)] + list(
            kwargs.items()
        )
        for name, value in named:
            try:
                msgspec.to_builtins(value, str_keys=True, enc_hook=_enc_hook)
            except (TypeError, ValueError, OverflowError) as inner:
                return f"argument {name!r} of job {self.job_name!r} cannot be encoded: {inner}"
        return f"the arguments of job {self.job_name!r} cannot be encoded: {exc}"

    def _name_at(self, position: int) -> str:
        parameter = self._parameter_at(position)
        return f"#{position}" if parameter is None else parameter.name

    # -- the result -----------------------------------------------------------------

    def encode_result(self, codec: Codec, value: Any) -> bytes:
        """Encode a handler's return value.

        :raises SerializationError: when it cannot be encoded.
        """
        try:
            if type(codec) is JSONCodec:
                return msgspec.json.encode(value, enc_hook=_enc_hook)
            return codec.encode(self._to_builtins(value))
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise SerializationError(
                f"the result of job {self.job_name!r} cannot be encoded: {exc}"
            ) from None

    def decode_result(self, codec: Codec, data: bytes) -> Any:
        """Decode a stored result to the handler's return annotation.

        :raises SerializationError: when it does not fit.
        """
        try:
            raw = msgspec.json.decode(data) if type(codec) is JSONCodec else codec.decode(data)
        except msgspec.DecodeError:
            raise SerializationError(
                f"the stored result of job {self.job_name!r} is not valid JSON"
            ) from None
        try:
            return msgspec.convert(raw, self.result, str_keys=True, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise SerializationError(
                f"the stored result of job {self.job_name!r} does not fit its return "
                f"annotation ({type_name(self.result)}): {_describe_error(exc, 'result')}"
            ) from None


def _hints(function: Callable[..., Any]) -> tuple[dict[str, Any], Any]:
    """The parameter annotations and the return annotation, evaluated where possible."""
    try:
        signature = inspect.signature(function, eval_str=True)
    except Exception:
        # An annotation that does not resolve (a name imported only for type
        # checkers) carries plain JSON, as an unannotated one does.
        signature = inspect.signature(function)
    hints = {name: parameter.annotation for name, parameter in signature.parameters.items()}
    return hints, signature.return_annotation


def _checked(annotation: Any, where: str) -> Any:
    """*annotation* when typed payloads can carry it, else ``None`` (plain JSON).

    :raises ConfigurationError: for a type msgspec cannot convert.
    """
    if _is_plain(annotation):
        return None
    try:
        msgspec.json.Decoder(annotation, dec_hook=_dec_hook)
        info = msgspec.inspect.type_info(annotation)
    except TypeError as exc:
        raise ConfigurationError(
            f"{where} is annotated {type_name(annotation)}, which typed payloads cannot carry: "
            f"{exc}"
        ) from None
    unsupported = _custom_type(info, set())
    if unsupported is not None:
        raise ConfigurationError(
            f"{where} is annotated {type_name(annotation)}, and {unsupported.__qualname__} is "
            "not a type payloads can carry: use a dataclass, attrs class, TypedDict, "
            "NamedTuple, enum, pydantic model or a standard type (datetime, date, time, "
            "timedelta, UUID, Decimal, bytes, Path), or annotate it Any for plain JSON"
        )
    return annotation


def _custom_type(info: Any, seen: set[int]) -> type[Any] | None:
    """The first class in a msgspec type description that no hook converts."""
    if id(info) in seen:
        return None
    seen.add(id(info))
    if isinstance(info, msgspec.inspect.CustomType):
        model = _pydantic_model()
        cls = info.cls
        if issubclass(cls, PurePath) or (model is not None and issubclass(cls, model)):
            return None
        return typing.cast(type[Any], cls)
    children: list[Any] = []
    for attribute in ("item_type", "key_type", "value_type"):
        child = getattr(info, attribute, None)
        if child is not None:
            children.append(child)
    children.extend(getattr(info, "item_types", ()) or ())
    children.extend(getattr(info, "types", ()) or ())
    children.extend(field.type for field in getattr(info, "fields", ()) or ())
    for child in children:
        found = _custom_type(child, seen)
        if found is not None:
            return found
    return None


def payload_types(
    function: Callable[..., Any], signature: inspect.Signature, job_name: str
) -> PayloadTypes | None:
    """Read a handler's annotations; ``None`` when nothing needs converting.

    :param signature: the handler's signature without its context parameter.
    :raises ConfigurationError: for an annotation typed payloads cannot carry.
    """
    hints, returns = _hints(function)
    positional: list[_Parameter] = []
    by_name: dict[str, _Parameter] = {}
    var_positional = var_keyword = None
    typed = False
    for name, parameter in signature.parameters.items():
        annotation = _checked(
            hints.get(name, parameter.empty), f"parameter {name!r} of job {job_name!r}"
        )
        typed = typed or annotation is not None
        entry = _Parameter(name=name, annotation=annotation)
        if parameter.kind is parameter.VAR_POSITIONAL:
            var_positional = entry
        elif parameter.kind is parameter.VAR_KEYWORD:
            var_keyword = entry
        else:
            if parameter.kind is not parameter.KEYWORD_ONLY:
                positional.append(entry)
            if parameter.kind is not parameter.POSITIONAL_ONLY:
                by_name[name] = entry
    result = _checked(returns, f"the return value of job {job_name!r}")
    if not typed and result is None:
        return None
    return PayloadTypes(
        job_name=job_name,
        arguments=typed,
        positional=tuple(positional),
        by_name=by_name,
        var_positional=var_positional,
        var_keyword=var_keyword,
        result=result,
    )
