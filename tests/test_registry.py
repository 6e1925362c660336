"""Job definitions: the fast argument check agrees with inspect's binder."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import Any

import pytest

from asyncjobs import JobArgumentsError
from asyncjobs._registry import make_definition


def plain(a: int, b: int, c: int = 1, *, d: int, e: int = 2) -> None: ...
def defaults(a: int, b: int = 2) -> None: ...
def keyword_only(*, k: int) -> None: ...
def positional_only(a: int, /, b: int) -> None: ...
def variadic(a: int, *rest: int, **options: int) -> None: ...


@pytest.mark.parametrize("handler", [plain, defaults, keyword_only, positional_only, variadic])
def test_bind_agrees_with_inspect(handler: Callable[..., Any]) -> None:
    definition = make_definition(
        handler, name=None, queue="default", max_attempts=1, backoff=None, timeout=None, priority=0
    )
    signature = inspect.signature(handler)
    rng = random.Random(7)
    names = ["a", "b", "c", "d", "e", "k", "z"]
    for _ in range(2000):
        args = tuple(range(rng.randint(0, 4)))
        kwargs = dict.fromkeys(rng.sample(names, rng.randint(0, 4)), 1)
        try:
            signature.bind(*args, **kwargs)
            expected = True
        except TypeError:
            expected = False
        try:
            definition.bind(args, kwargs)
            accepted = True
        except JobArgumentsError:
            accepted = False
        assert accepted == expected, (args, kwargs)
