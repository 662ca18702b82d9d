"""A client's line, as the instrument reads it: parts joined by ``;``, each a mnemonic and arguments.

Lake Shore's dialect (the 372 and 240 manuals; ``firmware_host/protocol.py`` emulates it): a line
ends at LF (CR LF too; on the 336 and 350 a CR alone too: ``Dialect.cr_ends_line``); parts are joined by ``;`` and a later part may start with ``:``; a
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


_PRINTABLE = bytes([0x09, *range(0x20, 0x7F)])


def printable(raw: bytes) -> str | None:
    """The line as text when every byte is printable ASCII (tab allowed), else None (garbage)."""
    if raw.translate(None, _PRINTABLE):  # what is left once the printable bytes are deleted
        return None
    return raw.decode("ascii")


class Framer:
    """Bytes from a client -> its lines, as the instrument frames them.

    A line ends at LF (CRs at its ends are dropped, as whitespace); with ``cr_ends`` (the 336's) a CR alone ends one
    too, and the LF of a CR LF is then an empty line, ignored. A line longer than ``MAX_LINE``
    overflows the instrument's input buffer: it is one piece of garbage, and everything up to and
    including its line end is dropped with it, so its tail is never taken as a line of its own.
    """

    def __init__(self, cr_ends: bool = False) -> None:
        self.cr_ends = cr_ends
        self._buf = bytearray()
        self._overflowed = False  # inside an overlong line: dropping up to its end

    def _end(self) -> int:
        lf = self._buf.find(b"\n")
        if not self.cr_ends:
            return lf
        cr = self._buf.find(b"\r")
        return cr if cr >= 0 and (lf < 0 or cr < lf) else lf

    def _too_long(self) -> bool:
        """The line so far is past ``MAX_LINE`` without its trailing CRs (the line end may follow in
        the next segment: a line of exactly ``MAX_LINE`` whose CR came alone is still a line), or
        the buffer is past twice that whatever it holds."""
        n = len(self._buf)
        if n <= MAX_LINE:
            return False
        return n > 2 * MAX_LINE or len(self._buf.rstrip(b"\r")) > MAX_LINE

    def feed(self, data: bytes) -> list[bytes | None]:
        """The complete lines in ``data`` (with what came before), in order; None for an overlong one."""
        self._buf += data
        out: list[bytes | None] = []
        while True:
            idx = self._end()
            if idx < 0:
                if self._overflowed:
                    self._buf.clear()  # still the overlong line: dropped as it comes
                elif self._too_long():
                    self._buf.clear()
                    self._overflowed = True
                    out.append(None)
                return out
            raw = bytes(self._buf[:idx])
            del self._buf[: idx + 1]
            if self._overflowed:
                self._overflowed = False  # the overlong line's end: what follows is a new line
                continue
            # a CR that does not end the line is whitespace at its ends, as the instrument reads it
            # (``INNAME? 1\r\r\n``; LF CR endings leave the CR at the next line's start)
            raw = raw.strip(b"\r")
            if len(raw) > MAX_LINE:
                out.append(None)
            elif raw.strip():
                out.append(raw)


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
