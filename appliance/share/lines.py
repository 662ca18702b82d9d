"""A client's line, as the instrument reads it: parts joined by ``;``, each a mnemonic and arguments.

Lake Shore's dialect (the 372 and 240 manuals; ``firmware_host/protocol.py`` emulates it): a line
ends at LF (CR LF too); parts are joined by ``;`` and a later part may start with ``:``; a
mnemonic ending in ``?`` is a query, any other a setting; arguments are separated by commas or
spaces and a string may be quoted. The share parses only as far as it must: the part's text is
forwarded as the client wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 4096  # bytes without a line end before the input is dropped as garbage


@dataclass(frozen=True)
class Part:
    """One ``;``-separated part of a line: its text as sent, mnemonic (upper case) and arguments."""

    text: str
    mnemonic: str
    args: tuple[str, ...]

    @property
    def is_query(self) -> bool:
        return self.mnemonic.endswith("?")

    def key(self) -> str:
        """The part as the cache knows it: ``KRDG? 05`` and ``krdg? 5`` are one question."""
        return " ".join([self.mnemonic, ",".join(_canonical(a) for a in self.args)]).strip()


def _canonical(arg: str) -> str:
    a = arg.strip().upper()
    if a.lstrip("+").isdigit():
        return str(int(a))
    return a


def split_args(text: str) -> list[str]:
    """``1,"my name",3`` or ``0 4`` -> arguments (quotes kept off, quoted strings whole)."""
    args: list[str] = []
    cur: list[str] = []
    quoted = started = False
    for c in text:
        if c == '"':
            quoted, started = not quoted, True
            continue
        if not quoted and c in ", \t":
            if cur or started:
                args.append("".join(cur))
            cur, started = [], False
            continue
        cur.append(c)
        started = True
    if cur or started:
        args.append("".join(cur))
    return args


def parse_part(text: str) -> Part | None:
    """A part, or None for an empty one (``;;``, a lone ``:``)."""
    body = text.strip()
    if body.startswith(":"):
        body = body[1:].strip()
    if not body:
        return None
    head, _, rest = body.partition(" ")
    return Part(text.strip(), head.upper(), tuple(split_args(rest.strip())))


def parse_line(line: str) -> list[Part]:
    return [p for p in (parse_part(t) for t in line.split(";")) if p is not None]


def printable(raw: bytes) -> str | None:
    """The line as text when every byte is printable ASCII (tab allowed), else None (garbage)."""
    if all(0x20 <= b <= 0x7E or b == 0x09 for b in raw):
        return raw.decode("ascii")
    return None


def same_value(reply: str, args: tuple[str, ...]) -> bool:
    """The setting ``args`` is what ``reply`` (its query's answer) already reads, field by field."""
    fields = [f.strip() for f in reply.split(",")]
    if len(fields) != len(args):
        return False
    for got, want in zip(fields, args, strict=True):
        try:
            if abs(float(got) - float(want)) > 1e-9 * max(1.0, abs(float(want))):
                return False
        except ValueError:
            if got.strip('"').strip().upper() != want.strip().upper():
                return False
    return True
