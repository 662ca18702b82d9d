"""Bluefors log times are the PC's local wall-clock times without a zone: this makes them UNIX times.

The configured zone (an IANA name, ``Europe/Helsinki``) converts them. When daylight saving ends
the hour before the change is written twice, and a line alone cannot say which pass it is from;
a file's lines are written in time order, so a local time that would be earlier than the line
before it, or than the newest line of any log when the file was last read to its end, is from the
second pass (``fold=1``). A time that falls in the spring-forward gap has
no instant: it is read with the offset before the change, as ``zoneinfo`` does for ``fold=0``.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo:
    """The zone by its IANA name; a clear error naming it otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Helsinki'): {exc}") from None


def to_unix(local: dt.datetime, tz: ZoneInfo, previous: float | None, written_after: float | None = None) -> float:
    """``local`` (naive, the PC's wall clock) as a UNIX time. When the local time is ambiguous (the
    repeated hour) it is the second pass if it would be earlier than ``previous`` (the file's line
    before it) or than ``written_after`` (the newest time of any log when this file was last read
    to its end: a line appended since was written after it; a sparse file, written only on a
    change, says nothing itself). A ``written_after`` beyond the second pass by more than the
    hour is a stray future stamp and is not trusted."""
    first = local.replace(tzinfo=tz, fold=0).timestamp()
    second = local.replace(tzinfo=tz, fold=1).timestamp()
    if first == second or second < first:  # unambiguous (or a gap: both folds name the same wall time)
        return first
    if previous is not None and first < previous:
        return second  # written after a later-looking line: the repeated hour's second pass
    if written_after is not None and first < written_after <= second + (second - first):
        return second
    return first
