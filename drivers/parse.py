"""Strict reply parsing: a reply is either exactly the expected shape or a BadReply.

Lake Shore replies carry explicit ``+`` signs and leading zeros (``+293.873E+00``,
``007``). Python's ``float()`` would also accept ``nan``, ``inf``, ``1_000`` and
surrounding whitespace; none of those is a valid instrument reply, so we match a
regular expression first and never let a garbled reply become a number.
"""

from __future__ import annotations

import math
import re

from .errors import BadReply

_FLOAT = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[Ee][+-]?\d{1,3})?")
_INT = re.compile(rb"[+-]?\d{1,6}")


def decode(raw: bytes, query: str = "") -> str:
    """Decode a reply line as printable ASCII, or raise BadReply."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadReply("reply is not ASCII", raw, query) from None
    if any(not (32 <= ord(c) < 127) for c in text):
        raise BadReply("reply has control characters", raw, query)
    return text


def parse_float(raw: bytes | str, query: str = "") -> float:
    """Parse one Lake Shore number (``+293.873E+00``, ``-0.52042``, ``.1135``)."""
    b = raw.encode("ascii", "replace") if isinstance(raw, str) else raw
    b = b.strip(b" ")
    if not _FLOAT.fullmatch(b):
        raise BadReply("expected a number", b, query)
    value = float(b)
    if not math.isfinite(value):
        # ``1E999`` matches the shape but overflows to inf: no instrument reading is infinite.
        raise BadReply("number out of range", b, query)
    return value


def parse_int(raw: bytes | str, query: str = "") -> int:
    """Parse one zero-padded integer field (``007``, ``+0``)."""
    b = raw.encode("ascii", "replace") if isinstance(raw, str) else raw
    b = b.strip(b" ")
    if not _INT.fullmatch(b):
        raise BadReply("expected an integer", b, query)
    return int(b)


def split_fields(raw: bytes, count: int, query: str = "", sep: str = ",") -> list[str]:
    """Split a reply into exactly ``count`` fields, or raise BadReply."""
    text = decode(raw, query)
    parts = text.split(sep)
    if len(parts) != count:
        raise BadReply(f"expected {count} fields separated by {sep!r}", raw, query)
    return parts
