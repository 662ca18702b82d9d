"""The Lake Shore wire dialect, shared by both emulated instruments.

LF or CR LF ends a message; blank lines are ignored; several commands joined
with ``;`` (later ones may start with ``:``) are answered joined with ``;``;
arguments are separated by commas or spaces; strings may be quoted. What the
instrument does with each command lives in the device's command table.
"""
from __future__ import annotations

import math
from typing import Callable

Handler = Callable[[list[str]], "str | None"]


class CommandError(Exception):
    """Unknown command (372: ESR bit 32)."""


class ExecutionError(Exception):
    """Known command with bad or out-of-range arguments (372: ESR bit 16)."""


class QueryError(Exception):
    """Query that cannot be answered (372: ESR bit 4)."""


def split_args(text: str) -> list[str]:
    """Split ``1,"my name",3`` or ``0 4`` into arguments, keeping quoted strings whole."""
    args: list[str] = []
    cur: list[str] = []
    quoted = False
    had_any = False
    for c in text:
        if c == '"':
            quoted = not quoted
            had_any = True
            continue
        if not quoted and (c == "," or c in " \t"):
            if cur or had_any:
                args.append("".join(cur))
            cur, had_any = [], False
            if c == ",":
                had_any = False
            continue
        cur.append(c)
        had_any = True
    if quoted:
        raise ExecutionError("unterminated string")
    if cur or had_any:
        args.append("".join(cur))
    return args


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


def to_percent(s: str, what: str) -> float:
    """A 0-100 % value; the 372 refuses anything else without a reply (socs #908)."""
    v = to_float(s)
    if not 0 <= v <= 100:
        raise ExecutionError(f"{what} outside 0-100 %")
    return v


def to_int(s: str, lo: int, hi: int) -> int:
    try:
        v = int(s.strip().lstrip("+") or "x")
    except ValueError:
        raise ExecutionError(f"not an integer: {s!r}") from None
    if not lo <= v <= hi:
        raise ExecutionError(f"{v} outside {lo}-{hi}")
    return v


def nargs(args: list[str], *counts: int) -> None:
    if len(args) not in counts:
        raise ExecutionError(f"expected {counts} arguments, got {len(args)}")


class Dispatcher:
    """Runs one line against a command table; returns the reply line or None."""

    def __init__(self, table: dict[str, Handler], on_error: Callable[[Exception], None]) -> None:
        self.table = table
        self.on_error = on_error

    def handle_line(self, line: str) -> str | None:
        if not line.strip():
            return None
        answers: list[str] = []
        for part in line.split(";"):
            name, args = parse_message(part)
            if not name:
                continue
            handler = self.table.get(name)
            try:
                if handler is None:
                    raise CommandError(f"unknown command {name!r}")
                reply = handler(args)
            except (CommandError, ExecutionError, QueryError) as exc:
                self.on_error(exc)
                continue
            if reply is not None:
                answers.append(reply)
        return ";".join(answers) if answers else None
