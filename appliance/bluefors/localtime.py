"""Bluefors log times are the PC's local wall-clock times without a zone: this makes them UNIX times.

The configured zone (an IANA name, ``Europe/Helsinki``) converts them. When daylight saving ends
the hour before the change is written twice, and a line alone cannot say which pass it is from;
a file's lines are written in time order, so a local time that would be earlier than the line
before it is from the second pass (``fold=1``). A time that falls in the spring-forward gap has
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


def to_unix(local: dt.datetime, tz: ZoneInfo, previous: float | None) -> float:
    """``local`` (naive, the PC's wall clock) as a UNIX time, after ``previous`` (the file's line
    before it, UNIX seconds) when the local time is ambiguous."""
    first = local.replace(tzinfo=tz, fold=0).timestamp()
    second = local.replace(tzinfo=tz, fold=1).timestamp()
    if first == second or second < first:  # unambiguous (or a gap: both folds name the same wall time)
        return first
    if previous is not None and first < previous:
        return second  # written after a later-looking line: the repeated hour's second pass
    return first
