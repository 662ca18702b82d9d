"""Declared queries: one line per instrument query, the reply grammar named once.

Both drivers used to spell every query as ``q = f"KRDG? {ch}"; return
parse_float(self.query_raw(q), q)``. Here a query is declared the way pymeasure
declares ``kelvin = Instrument.measurement("KRDG? {ch}", "...")``
(pymeasure/pymeasure ``pymeasure/instruments/common_base.py``), but as a
*method* (our channels and outputs are arguments, not sub-objects)::

    kelvin = Query("KRDG? {}", parse_float, "Measure a channel's temperature in kelvin.", _ch)

The last argument is the argument spec: a plain function whose signature is the
method's signature (``def _ch(self, channel: str | int) -> str``), which
validates the arguments and returns the field(s) for the template. Sharing one
spec between many queries keeps names, defaults and types in one place, and,
through ``ParamSpec``, mypy sees ``m.kelvin`` as ``def (channel: str | int) ->
float``, keyword calls included.

Reply parsers are the strict ones of ``drivers.parse``; ``record`` and
``fields`` compose them for multi-field replies, so every reply still either
parses exactly or raises ``BadReply`` with the same message as before.

Setters stay ordinary methods: each has its own signature and validation, and a
setter is already one statement (``self.command(f"SETP {output},{value:g}")``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .base import Instrument
from .parse import decode, parse_float, parse_int, split_fields

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
R = TypeVar("R")
I = TypeVar("I", bound=Instrument)  # noqa: E741 (the instrument type, as in typeshed's self types)

# A reply parser: (reply bytes, the query it answers) -> value, or BadReply.
ReplyParser = Callable[[bytes, str], T]
# A field parser: one field of a multi-field reply (already decoded by split_fields).
FieldParser = Callable[[str, str], T]

__all__ = [
    "FieldParser",
    "Query",
    "ReplyParser",
    "fields",
    "flag",
    "no_arguments",
    "parse_float",
    "parse_int",
    "record",
    "text",
]


def flag(raw: bytes | str, query: str = "") -> bool:
    """A 0/1 switch field: ``1`` is on, any other integer off (as the drivers always read it)."""
    return parse_int(raw, query) == 1


def text(raw: bytes | str, query: str = "") -> str:
    """A free-text reply or field (a name), printable ASCII, surrounding spaces removed."""
    return (decode(raw, query) if isinstance(raw, bytes) else raw).strip()


def record(cls: Callable[..., R], *parsers: FieldParser[Any], sep: str = ",") -> ReplyParser[R]:
    """A reply of exactly ``len(parsers)`` fields, each parsed in turn, built into ``cls``."""

    def parse(raw: bytes, query: str) -> R:
        parts = split_fields(raw, len(parsers), query, sep=sep)
        return cls(*(p(part, query) for p, part in zip(parsers, parts, strict=False)))

    return parse


def fields(first: FieldParser[A], second: FieldParser[B], sep: str = ",") -> ReplyParser[tuple[A, B]]:
    """A reply of exactly two fields, as a tuple (``WARMUP?`` -> ``(0, 0.0)``)."""

    def parse(raw: bytes, query: str) -> tuple[A, B]:
        a, b = split_fields(raw, 2, query, sep=sep)
        return first(a, query), second(b, query)

    return parse


def no_arguments(inst: Instrument) -> tuple[()]:
    """The argument spec of a query without arguments (``HTR?``)."""
    return ()


class Query(Generic[I, P, T]):
    """A query method declared in one line: template, reply parser, docstring, argument spec.

    ``args(inst, *call_args)`` validates the call's arguments and returns the template
    field (or a tuple of fields); its signature is the method's signature. A query
    without arguments leaves ``args`` out.

    Read on the class (``Model372.kelvin``) it is the declaration itself, so the
    command table can be inspected (``.template``); read on an instrument it is the
    bound method.
    """

    @overload
    def __init__(self: Query[Instrument, [], T], template: str, parser: ReplyParser[T], doc: str) -> None: ...

    @overload
    def __init__(
        self, template: str, parser: ReplyParser[T], doc: str, args: Callable[Concatenate[I, P], object]
    ) -> None: ...

    def __init__(
        self, template: str, parser: ReplyParser[T], doc: str, args: Callable[Concatenate[I, P], object] | None = None
    ) -> None:
        self.template = template
        self.parser = parser
        self.__doc__ = doc
        self.args: Callable[..., object] = args or no_arguments
        self.name = ""

        spec = self.args

        def method(inst: Any, /, *call_args: Any, **call_kwargs: Any) -> T:
            values = spec(inst, *call_args, **call_kwargs)
            q = template.format(*(values if isinstance(values, tuple) else (values,)))
            return parser(inst.query_raw(q), q)

        method.__doc__ = doc
        # help() and inspect show the spec's parameters, not *args/**kwargs
        method.__signature__ = inspect.signature  # type: ignore[attr-defined]  # functions take it; typeshed has no such field(spec).replace(return_annotation=inspect.Signature.empty)
        self._method = method

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self._method.__name__ = name
        self._method.__qualname__ = f"{owner.__qualname__}.{name}"
        self._method.__module__ = owner.__module__

    @overload
    def __get__(self, inst: None, owner: type | None = None) -> Query[I, P, T]: ...

    @overload
    def __get__(self, inst: I, owner: type | None = None) -> Callable[P, T]: ...

    def __get__(self, inst: I | None, owner: type | None = None) -> Query[I, P, T] | Callable[P, T]:
        if inst is None:
            return self
        return self._method.__get__(inst, owner)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<Query {self.name or '?'} {self.template!r}>"
