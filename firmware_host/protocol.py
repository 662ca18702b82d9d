"""The Lake Shore wire dialect, shared by both emulated instruments.

LF or CR LF ends a message; blank lines are ignored; several commands joined
with ``;`` (later ones may start with ``:``) are answered joined with ``;``;
arguments are separated by commas (empty fields kept) or, where there is no comma, by
spaces; strings may be quoted. What the
instrument does with each command lives in its command table (``ls372_commands.py``,
``ls240_commands.py``), declared with the argument specs and ``Command`` below.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

Handler = Callable[[list[str]], "str | None"]


class CommandError(Exception):
    """Unknown command (372: ESR bit 32)."""


class ExecutionError(Exception):
    """Known command with bad or out-of-range arguments (372: ESR bit 16)."""


class QueryError(Exception):
    """Query that cannot be answered (372: ESR bit 4)."""


def split_args(text: str) -> list[str]:
    """Split a command's argument text into its fields, as the Lake Shore firmware reads them.

    Where the text has a comma (outside quotes), commas alone separate: ``a,,b`` is three fields, the
    middle one empty, and ``User Curve`` between commas is one field (socs' ``Curve._set_header`` sends
    ``CRVHDR 21,USER CURVE,,3,375.0,1``, unquoted and with an empty serial, to real 336s and 372s), with
    the blanks around each field dropped (QCoDeS writes ``OUTMODE 0, 2, A``). Without a comma, blanks
    separate (socs sends ``RANGE 0 4`` and ``MOUT 0 5``). A quoted string is one field, kept as written.
    """
    fields: list[str] = []
    cur: list[str] = []
    quoted = False
    # a field's text is kept with its inner blanks; was_quoted keeps "" distinct from a missing field
    by_comma = _has_unquoted_comma(text)
    was_quoted = False

    def end_field() -> None:
        nonlocal cur, was_quoted
        fields.append("".join(cur) if was_quoted else "".join(cur).strip(" \t"))
        cur, was_quoted = [], False

    for c in text:
        if c == '"':
            quoted = not quoted
            if quoted and not was_quoted:
                cur = []  # blanks before the opening quote are not part of the string
            was_quoted = True
            continue
        if quoted:
            cur.append(c)
        elif by_comma and c == ",":
            end_field()
        elif not by_comma and c in " \t":
            if cur or was_quoted:
                end_field()
        elif was_quoted and c in " \t":
            continue  # blanks after the closing quote
        else:
            cur.append(c)
    if quoted:
        raise ExecutionError("unterminated string")
    if by_comma or cur or was_quoted:
        end_field()
    return fields


def _has_unquoted_comma(text: str) -> bool:
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            return True
    return False


def parse_message(part: str) -> tuple[str, list[str]]:
    part = part.strip()
    if part.startswith(":"):
        part = part[1:]
    if not part:
        return "", []
    head, _, rest = part.partition(" ")
    # "KRDG?5" is not valid, but "KRDG?" alone is; the mnemonic ends at the first space.
    return head.upper(), split_args(rest.strip())


def fmt_372(x: float) -> str:
    """The 372's reading format ``+nnn.nnnE+nn`` (engineering exponent)."""
    if x == 0 or not math.isfinite(x):
        return "+000.000E+00"
    exp = int(math.floor(math.log10(abs(x)) / 3) * 3)
    mant = x / 10**exp
    if abs(round(mant, 3)) >= 1000:
        exp += 3
        mant = x / 10**exp
    return f"{mant:+08.3f}E{exp:+03d}"


def fmt_240(x: float) -> str:
    """The 240's plain signed decimal with six significant digits (``+293.873``, ``+0.52042``)."""
    if not math.isfinite(x):
        x = 0.0
    ax = abs(x)
    int_digits = max(1, int(math.floor(math.log10(ax))) + 1) if ax >= 1 else 1
    decimals = max(0, 6 - int_digits)
    return f"{x:+.{decimals}f}"


def to_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise ExecutionError(f"not a number: {s!r}") from None
    if not math.isfinite(v):
        raise ExecutionError(f"not a finite number: {s!r}")
    return v


def to_int(s: str, lo: int, hi: int) -> int:
    try:
        v = int(s.strip().lstrip("+") or "x")
    except ValueError:
        raise ExecutionError(f"not an integer: {s!r}") from None
    if not lo <= v <= hi:
        raise ExecutionError(f"{v} outside {lo}-{hi}")
    return v


# -- argument specs -----------------------------------------------------------------
# Each field of a command is declared by one of these (lewis' ``Cmd(..., argument_mappings=(int,))``
# is the model): ``parse`` returns the value or raises ExecutionError, as the firmware refuses it.


class Arg(Protocol):
    def parse(self, text: str) -> Any: ...


@dataclass(frozen=True)
class Int:
    """An integer within ``lo``-``hi`` (``+5`` reads as 5); ``only``, if given, the values allowed in it."""

    lo: int
    hi: int
    only: tuple[int, ...] | None = None

    def parse(self, text: str) -> int:
        v = to_int(text, self.lo, self.hi)
        if self.only is not None and v not in self.only:
            raise ExecutionError(f"{v} not one of {self.only}")
        return v


@dataclass(frozen=True)
class Float:
    """A finite number, within ``lo``-``hi`` when they are given."""

    lo: float | None = None
    hi: float | None = None

    def parse(self, text: str) -> float:
        v = to_float(text)
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise ExecutionError(f"{v} outside {self.lo}-{self.hi}")
        return v


PERCENT = Float(0, 100)  # the 372 refuses a percentage outside 0-100 without a reply (socs #908)


@dataclass(frozen=True)
class Text:
    """A string of at most ``max_len`` characters, kept as sent (quotes already removed)."""

    max_len: int

    def parse(self, text: str) -> str:
        if len(text) > self.max_len:
            raise ExecutionError(f"longer than {self.max_len}")
        return text


@dataclass(frozen=True)
class Choice:
    """One of a few words, case-insensitive; the value is the word upper-cased."""

    words: tuple[str, ...]

    def parse(self, text: str) -> str:
        word = text.strip().upper()
        if word not in self.words:
            raise ExecutionError(f"{word!r} not one of {self.words}")
        return word


ANY = range(sys.maxsize)  # ``Command.counts`` for a command that ignores its arguments


@dataclass(frozen=True)
class Command:
    """One mnemonic: its declared arguments and what it does with their values.

    ``run(device, *values)`` gets one parsed value per argument present (a trailing optional
    argument left out is left to ``run``'s default) and returns the reply or None.
    ``counts`` are the argument counts accepted (default: exactly one per spec); arguments
    beyond the specs are accepted and ignored. Empty trailing fields are dropped where the shorter
    count is accepted; an empty field elsewhere is parsed by its spec (a ``Text`` takes it, a number
    refuses it).
    """

    mnemonic: str
    run: Callable[..., str | None]
    args: tuple[Arg, ...] = ()
    counts: Collection[int] | None = None

    def bind(self, device: object) -> Handler:
        accepted = (len(self.args),) if self.counts is None else self.counts

        def handler(raw: list[str]) -> str | None:
            # ``DISPLAY 0,,`` leaves its last fields empty: where the command also takes the shorter
            # form, empty trailing fields are fields left out (they keep their values)
            while raw and raw[-1] == "" and len(raw) - 1 in accepted:
                raw = raw[:-1]
            if len(raw) not in accepted:
                raise ExecutionError(f"{self.mnemonic}: {len(raw)} arguments")
            return self.run(device, *(spec.parse(s) for spec, s in zip(self.args, raw, strict=False)))

        return handler


def bind_table(commands: Iterable[Command], device: object) -> dict[str, Handler]:
    """The dispatcher's table: each mnemonic bound to ``device``."""
    return {c.mnemonic: c.bind(device) for c in commands}


class Dispatcher:
    """Runs one line against a command table; returns the reply line or None."""

    def __init__(self, table: dict[str, Handler], on_error: Callable[[Exception], None]) -> None:
        self.table = table
        self.on_error = on_error
        # True: a CR alone ends a message as LF does (the 336's); the line framing reads it (wire.LineSession)
        self.cr_ends_line = False

    def handle_line(self, line: str) -> str | None:
        if not line.strip():
            return None
        answers: list[str] = []
        for part in line.split(";"):
            try:
                # a malformed message (an unterminated string) is refused like any other bad one:
                # the firmware sets its error bit and goes on answering (a raise here ended the session)
                name, args = parse_message(part)
                if not name:
                    continue
                handler = self.table.get(name)
                if handler is None:
                    raise CommandError(f"unknown command {name!r}")
                reply = handler(args)
            except (CommandError, ExecutionError, QueryError) as exc:
                self.on_error(exc)
                continue
            if reply is not None:
                answers.append(reply)
        return ";".join(answers) if answers else None
