"""The Bluefors control software's log files: names, line formats and field names, without any I/O.

Evidence (firmware_host/FIDELITY.md, "Bluefors log folder"): simonsobs/socs
``socs/agents/bluefors/agent.py`` ``LogTracker._build_file_list`` (folders ``YY-MM-DD``),
``LogParser.identify_log`` (file kinds), ``timestamp_from_str`` (``%d-%m-%y,%H:%M:%S``, local time
without a zone), ``_parse_single_value_log`` (``date,time,value``), ``_parse_maxigauge_log``
(``CH<n>,<name>,<state>,<value>,...`` per gauge) and ``_parse_multi_value_log`` (``name,value``
pairs). Field names are the Bluefors names (``p1``, ``flow``, ``cpatempwi``, ``pulsetube``,
``ch6_t``) and each carries the name socs' agent publishes it under (its ``ocs`` name), so OCS
feeds and InfluxDB dashboards written for socs read ours.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DAY_FOLDER = "%y-%m-%d"  # socs LogTracker._build_file_list: date.strftime("%y-%m-%d")
LINE_TIME = "%d-%m-%y,%H:%M:%S"  # socs LogParser.timestamp_from_str

# socs LogParser.identify_log's patterns (case-insensitive, first match wins), and our kind for each
_KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("lakeshore", re.compile(r"^CH([0-9]+) ([TRP])[ _]", re.I)),
    ("flowmeter", re.compile(r"^Flowmeter[ _]", re.I)),
    ("maxigauge", re.compile(r"^maxigauge[ _]", re.I)),
    ("channels", re.compile(r"^Channels[ _]", re.I)),
    ("status", re.compile(r"^Status[ _]", re.I)),
    ("heaters", re.compile(r"^Heaters[ _]", re.I)),
]
# "Status_24-12-03.log" is quoted too (FIDELITY.md): a space or an underscore before the date
FILE_DATE = re.compile(r"[ _]([0-9]{2}-[0-9]{2}-[0-9]{2})\.log$")

# units of the fields whose units the logs imply (UNVERIFIED for Status and Heaters: left blank)
_LAKESHORE_UNITS = {"T": "K", "R": "Ohm", "P": "W"}


class BadLine(ValueError):
    """A complete line that is not in its file's format: named with the file, never guessed at."""


@dataclass(frozen=True)
class LogFile:
    """What a file name says: its kind and, for a thermometer log, the channel and quantity."""

    kind: str
    channel: int | None = None
    quantity: str | None = None  # T, R or P


@dataclass(frozen=True)
class Field:
    """One value of a line: our field name, its units, and the name socs publishes it under."""

    name: str
    units: str
    ocs: str


def identify(filename: str) -> LogFile | None:
    """The kind of a log file by its name (``CH6 T 26-12-06.log``), or None for one we do not read
    (``Errors``, anything else the folder holds)."""
    if not FILE_DATE.search(filename):
        return None
    for kind, pattern in _KINDS:
        m = pattern.search(filename)
        if m:
            if kind == "lakeshore":
                return LogFile(kind, int(m.group(1)), m.group(2).upper())
            return LogFile(kind)
    return None


def file_name(log: LogFile, day: dt.date) -> str:
    """The name the Bluefors software gives a log of ``day`` (the inverse of ``identify``)."""
    stamp = day.strftime(DAY_FOLDER)
    base = {
        "flowmeter": "Flowmeter",
        "maxigauge": "maxigauge",
        "channels": "Channels",
        "status": "Status",
        "heaters": "Heaters",
    }.get(log.kind)
    if base is None:
        base = f"CH{log.channel} {log.quantity}"
    return f"{base} {stamp}.log"


def folder_date(name: str) -> dt.date | None:
    """The day of a ``YY-MM-DD`` folder, or None for any other name."""
    if not re.fullmatch(r"[0-9]{2}-[0-9]{2}-[0-9]{2}", name):
        return None
    try:
        return dt.datetime.strptime(name, DAY_FOLDER).date()
    except ValueError:
        return None


_DATE = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{2})")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})")


def line_time(date: str, time: str) -> dt.datetime | None:
    """``LINE_TIME`` read as ``strptime`` reads it (``%y``: 69-99 are 19xx), five times faster."""
    d, t = _DATE.fullmatch(date), _TIME.fullmatch(time)
    if d is None or t is None:
        return None
    yy = int(d.group(3))
    hh, mi, ss = (int(x) for x in t.groups())
    try:
        return dt.datetime((1900 if yy >= 69 else 2000) + yy, int(d.group(2)), int(d.group(1)), hh, mi, ss)
    except ValueError:
        return None


def _number(s: str) -> float:
    return float(s.strip())


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def field_name(name: str) -> str:
    """A Bluefors value name as a field: socs replaces '-' by '_' (``hs-still`` -> ``hs_still``)."""
    return re.sub(r"[^a-z0-9_]", "_", name.strip().lower().replace("-", "_"))


def parse_line(log: LogFile, line: str) -> tuple[dt.datetime, list[tuple[Field, float]]]:
    """A complete line: its local (naive) time and its values, each with its field.

    Raises ``BadLine`` naming what is wrong; the caller records it and goes on with the next line.
    """
    text = line.strip()
    parts = text.split(",")
    if len(parts) < 3:
        raise BadLine(f"expected 'date,time,...', got {text[:80]!r}")
    when = line_time(parts[0].strip(), parts[1].strip())
    if when is None:
        raise BadLine(f"no '%d-%m-%y,%H:%M:%S' time at the start of {text[:80]!r}")
    rest = parts[2:]
    try:
        if log.kind in ("lakeshore", "flowmeter"):
            if len(rest) != 1:  # socs: date, _time, data_value = new_line.strip().split(',')
                raise BadLine(f"expected one value after the time, got {len(rest)} in {text[:80]!r}")
            if log.kind == "flowmeter":
                return when, [(Field("flow", "mmol/s", "flowmeter"), _number(rest[0]))]
            q = (log.quantity or "T").lower()
            f = Field(f"ch{log.channel}_{q}", _LAKESHORE_UNITS[q.upper()], f"lakeshore_ch{log.channel}_{q}")
            return when, [(f, _number(rest[0]))]
        if log.kind == "maxigauge":
            return when, _maxigauge(rest, text)
        return when, _pairs(log.kind, rest, text)
    except ValueError as exc:
        if isinstance(exc, BadLine):
            raise
        raise BadLine(f"not a number in {text[:80]!r}: {exc}") from None


def _maxigauge(rest: list[str], text: str) -> list[tuple[Field, float]]:
    """``CH<n>,<name>,<state>,<pressure>,<status>,<x>`` per gauge (socs: ``ch_num, _, state, value, *_``)."""
    out: list[tuple[Field, float]] = []
    i = 0
    while i < len(rest):
        tok = rest[i].strip()
        if not tok:
            i += 1
            continue
        m = re.fullmatch(r"CH([0-9]+)", tok)
        if not m or i + 3 >= len(rest):
            raise BadLine(f"expected 'CH<n>,<name>,<state>,<pressure>' at {tok!r} in {text[:80]!r}")
        n = m.group(1)
        state, value = int(rest[i + 2].strip()), _number(rest[i + 3])
        out.append((Field(f"p{n}", "mbar", f"pressure_ch{n}"), value))
        out.append((Field(f"p{n}_state", "", f"pressure_ch{n}_state"), float(state)))
        i += 4
        while i < len(rest) and not re.fullmatch(r"CH[0-9]+", rest[i].strip()):
            i += 1  # the gauge's status fields socs skips (``*_``)
    if not out:
        raise BadLine(f"no gauge in {text[:80]!r}")
    return out


def _pairs(kind: str, rest: list[str], text: str) -> list[tuple[Field, float]]:
    """``name,value`` pairs (socs' regex ``name,([0-9.+-E]+)``); Channels lines start with one
    bare number before their pairs, which is skipped as socs skips it."""
    out: list[tuple[Field, float]] = []
    i = 0
    while i < len(rest):
        tok = rest[i].strip()
        if not tok or _is_number(tok):
            i += 1
            continue
        if i + 1 >= len(rest) or not _is_number(rest[i + 1].strip()):
            raise BadLine(f"{tok!r} has no value in {text[:80]!r}")
        name = field_name(tok)
        value = _number(rest[i + 1])
        if kind == "channels":  # valve, pump, pulse tube, compressor: 0 off, 1 on (socs: int())
            out.append((Field(name, "state", name), float(int(value))))
        else:
            out.append((Field(name, "", tok.strip()), value))
        i += 2
    if not out:
        raise BadLine(f"no 'name,value' pair in {text[:80]!r}")
    return out


def format_time(local: dt.datetime) -> str:
    """A naive local time as the Bluefors software writes it (``06-12-26,23:59:59``)."""
    return local.strftime(LINE_TIME)
