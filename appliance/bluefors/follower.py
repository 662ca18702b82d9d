"""Follow a Bluefors log folder: every new complete line of every file, once, across everything.

The folder holds one ``YY-MM-DD`` folder per day of the Bluefors PC's calendar, each with a file
per log (``formats``). The follower keeps, per file, a ``Position`` (path under the folder, inode,
byte offset of the first line not taken, time of the line before it) and only ever takes whole
lines (up to a newline: a line being written waits for its end). What it is built to survive:

* midnight: yesterday's folder is read to its end before today's lines (folders in date order);
* a file that appears late in the day (``Status`` is not always there): any new file of a
  followed day is read from its start;
* a file replaced under its name (a new inode) or cut shorter: read again from its start, and the
  lines already taken are recognised by their times (``floor``) and left out;
* a half-written line: waited for;
* the share going away (the folder missing, or an empty mount point): ``FolderGone``, positions
  kept; when it comes back every file goes on from its position;
* a restart: positions come back from the store, and the newest stored time of each field is the
  floor below which a line re-read is known to be stored already. Positions are written behind
  the samples (``Position`` saved only once its lines' samples are queued before it), never ahead,
  so a crash re-reads at most a few lines and the floor drops them: none lost, none doubled.

Lines of one file are written in time order (each log is appended by one writer). The floor is
applied only where lines may have been taken before: every file after a start, a file met for the
first time (a start whose positions were not saved yet), a file read again from its start, a
rotated file's tail; once a line of the file is past it, the file is read as new again. So a PC clock set back while the follower runs costs no line (its lines are taken with
the times they say); only lines re-read after a start or a replacement are compared, and there
two lines of one field with the same second are taken as one.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from drivers.errors import ConnectionLost

from .formats import BadLine, Field, LogFile, folder_date, identify, parse_line
from .localtime import to_unix

HEAD = 32  # bytes of a file's start kept with its position
READ_MAX = 4 << 20  # bytes read from one file per poll: a day-long backlog comes in steps
# values taken per poll: a day's backlog (a first start, a long outage) is some 300 000 of them, more
# than the queue to the store holds (store.queue_size); taken in steps, none is dropped on the way
VALUES_PER_POLL = 20_000


class FolderGone(ConnectionLost):
    """The log folder cannot be read, or holds no day folder (a share not mounted shows empty)."""


@dataclass(frozen=True)
class Position:
    """How far one file has been read; ``path`` is relative to the followed folder."""

    path: str
    inode: int
    offset: int
    last_t: float | None  # UNIX time of the last line before ``offset`` (None: at the start)
    head: str = ""  # hex of the file's first bytes (up to HEAD, its first line's): tells a file cut and regrown


@dataclass(frozen=True)
class Line:
    """One complete line taken: its file, its UNIX time and its values not already stored."""

    path: str
    t: float
    values: list[tuple[Field, float]]


Emit = Callable[[Line], None]
Seen = Callable[[str, float], bool]  # is the value of this field at this UNIX time stored already
FORGET_WITHIN = dt.timedelta(days=7)  # a day is done once a folder this close after it exists
_STAMP = re.compile(r"[0-9]{2}-[0-9]{2}-[0-9]{2},[0-9]{2}:[0-9]{2}:[0-9]{2}")


class Follower:
    """Reads new lines of the followed days; ``positions`` is its state, ``seen`` what is stored."""

    def __init__(
        self,
        root: Path | str,
        tz: ZoneInfo,
        positions: dict[str, Position] | None = None,
        seen: Seen | None = None,
    ) -> None:
        self.root = Path(root)
        self.tz = tz
        self.positions: dict[str, Position] = dict(positions or {})
        self.seen: Seen = seen or (lambda name, t: False)
        # files whose next lines may have been taken already, each with its own floor: None for
        # "ask ``seen``" (after a start: positions are saved behind the samples), a UNIX time for a
        # file replaced or cut under its name (its lines up to the old position's time were taken)
        self.recheck: dict[str, float | None] = dict.fromkeys(self.positions)
        self.started = False  # the first poll: a file without a position may have been read before
        self.ask_until: dict[str, float] = {}  # per file: ask ``seen`` of every line up to this time
        self.changed: dict[str, Position] = {}  # positions moved since the caller last took them
        self.problems: list[str] = []  # bad lines, each named with its file and offset
        self.last_t: float | None = max((p.last_t for p in self.positions.values() if p.last_t), default=None)
        # per file: the newest time taken anywhere when it was last read to its end. Its next lines
        # were written after that one, which decides the repeated autumn hour for a sparse file.
        self._caught_up: dict[str, float] = {}
        self.files_seen = 0
        self.values_per_poll = VALUES_PER_POLL
        self._left = 0  # values this poll may still take

    def restore(
        self, positions: dict[str, Position], seen: Seen | None = None, ask_until: dict[str, float] | None = None
    ) -> None:
        """Where a previous run got to (the store's positions, and ``seen``: is a field's value at a
        time stored): every file is read on from its position, its lines asked about until one is
        not, or (``ask_until``, a file's time) every line up to that time: after samples were dropped
        on their way to the store, the stored ones are not a prefix."""
        self.positions.update(positions)
        if seen is not None:
            self.seen = seen
        for rel in positions:
            self.recheck[rel] = None
        self.ask_until = dict(ask_until or {})
        self.started = False
        self.last_t = max([p.last_t for p in self.positions.values() if p.last_t] or [0.0]) or None

    # -- the folder -----------------------------------------------------------------
    def days(self) -> list[tuple[dt.date, Path]]:
        """The day folders present, oldest first; ``FolderGone`` when there are none to read."""
        try:
            with os.scandir(self.root) as it:
                found = [(d, Path(e.path)) for e in it if (d := folder_date(e.name)) is not None and e.is_dir()]
        except OSError as exc:
            raise FolderGone(f"log folder {self.root} cannot be read: {exc}") from None
        if not found:
            raise FolderGone(f"log folder {self.root} holds no YY-MM-DD day folder: is the share mounted?")
        return sorted(found)

    def followed(self, days: list[tuple[dt.date, Path]]) -> list[tuple[dt.date, Path]]:
        """Every day folder from the oldest one a position is open in, in date order (a week
        offline reads the week, a stray future-dated folder is one more day, today stays read).
        On a first start (no position at all) only the newest day not in the future by this
        computer's clock (a stray folder of a PC clock set ahead is not "today")."""
        if not self.positions:
            today = dt.datetime.fromtimestamp(self.clock(), self.tz).date()
            current = [x for x in days if x[0] <= today + dt.timedelta(days=1)]
            return (current or days)[-1:]
        oldest = min(self._date_of(rel) for rel in self.positions)
        return [(d, p) for d, p in days if d >= oldest]

    @staticmethod
    def _date_of(rel: str) -> dt.date:
        return folder_date(rel.split("/", 1)[0]) or dt.date.min

    @staticmethod
    def _day_of(rel: str) -> str:
        return rel.split("/", 1)[0]

    clock: Callable[[], float] = staticmethod(time.time)  # type: ignore[assignment]

    # -- one poll -----------------------------------------------------------------------
    def poll(self, emit: Emit, budget: int | None = None) -> int:
        """Take every new complete line, oldest day first; returns the lines taken. Lines are given
        to ``emit`` as they are read, so those before a failure (the share going away) are kept.
        ``budget`` caps the values taken (the queue to the store has that much room)."""
        days = self.days()
        taken = 0
        self._left = self.values_per_poll if budget is None else min(budget, self.values_per_poll)
        first = not self.started
        followed = self.followed(days)
        for i, (day, folder) in enumerate(followed):
            if self._left <= 0:
                break  # the rest next poll, in the same order
            try:
                with os.scandir(folder) as it:
                    names = sorted(e.name for e in it if e.is_file())
            except OSError as exc:
                raise FolderGone(f"day folder {folder} cannot be read: {exc}") from None
            for name in names:
                log = identify(name)
                if log is None:
                    continue  # not a log we read (Errors, a rotated-aside copy)
                if self._left <= 0:
                    break
                rel = f"{folder.name}/{name}"
                if first and rel not in self.positions:
                    self.recheck[rel] = None  # perhaps read before a restart, its position not saved yet
                taken += self._read(rel, folder / name, log, emit)
            later = [d for d, _ in followed[i + 1 :]]
            if self._left > 0 and later and later[0] <= day + FORGET_WITHIN:
                self._forget_read(folder, {p for p in self.positions if self._date_of(p) > day})
        self.started = True
        return taken

    def _forget_read(self, folder: Path, later_positions: set[str]) -> None:
        """A day followed by the next day's folder, its files read to their end, is not followed
        further (its positions go), once a later day holds a position (so a restart reads on from it)."""
        if not later_positions:
            return
        for rel, pos in list(self.positions.items()):
            if self._day_of(rel) != folder.name:
                continue
            try:
                size = os.stat(self.root / rel).st_size
            except OSError:
                size = -1
            if size == pos.offset or size < 0:
                del self.positions[rel]
                self.recheck.pop(rel, None)
                self._caught_up.pop(rel, None)
                self.changed[rel] = replace(pos, inode=-1)

    def _read(self, rel: str, path: Path, log: LogFile, emit: Emit) -> int:
        pos = self.positions.get(rel)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if pos is None:  # new to us (read from its start; perhaps read before a restart)
                    pos = Position(rel, st.st_ino, 0, None)
                    self.files_seen += 1
                elif pos.inode == st.st_ino and st.st_size >= pos.offset and not self._same_head(pos, f):
                    # cut and written again past the position (while nobody watched): its start differs
                    self.problems.append(
                        f"{rel}: its first bytes changed (cut and rewritten): read again from its start"
                    )
                    floor = self.recheck.get(rel)
                    self.recheck[rel] = max(x for x in (pos.last_t, floor, float("-inf")) if x is not None)
                    return self._read_from(Position(rel, st.st_ino, 0, None), f, st.st_size, log, emit)
                elif pos.inode != st.st_ino or st.st_size < pos.offset:
                    # rotated aside (its inode under its own name and a suffix: its tail first),
                    # replaced under its name, or cut: from the start; the lines up to the old
                    # position's time were taken already
                    if pos.inode == st.st_ino:
                        self.problems.append(
                            f"{rel}: cut to {st.st_size} bytes below the {pos.offset} already read: read again from its start"
                        )
                    taken_before = self._read_rotated(pos, path, log, emit) if pos.inode != st.st_ino else 0
                    floor = self.recheck.get(rel)
                    self.recheck[rel] = max(x for x in (pos.last_t, floor, float("-inf")) if x is not None)
                    pos = Position(rel, st.st_ino, 0, None)
                    return taken_before + self._read_from(pos, f, st.st_size, log, emit)
                return self._read_from(pos, f, st.st_size, log, emit)
        except FileNotFoundError:
            return 0  # gone between the listing and the open: seen again next poll, or never
        except OSError as exc:
            raise FolderGone(f"log file {path} cannot be read: {exc}") from None

    @staticmethod
    def _same_head(pos: Position, f: BinaryIO) -> bool:
        """Does the file still begin as it did when the position was taken (no head kept: yes)?"""
        if not pos.head or pos.offset == 0:
            return True
        want = bytes.fromhex(pos.head)
        f.seek(0)
        return f.read(len(want)) == want

    def _read_rotated(self, pos: Position, path: Path, log: LogFile, emit: Emit) -> int:
        """The rest of a file moved aside in its folder: found by its inode AND its name (the
        file's own name with a suffix, ``CH6 T 26-12-06.log.1``). An inode alone is not enough:
        a CIFS mount without server inode numbers, or ext4, gives an old number to another file."""
        try:
            with os.scandir(path.parent) as it:
                moved = next(
                    (
                        Path(e.path)
                        for e in it
                        if e.inode() == pos.inode
                        and e.name != path.name
                        and e.name.startswith(path.name)
                        and e.is_file()
                    ),
                    None,
                )
            if moved is None:
                return 0
            with open(moved, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_ino != pos.inode or st.st_size <= pos.offset:
                    return 0
                taken = self._read_from(pos, f, st.st_size, log, emit, keep=False)
        except OSError:
            return 0  # gone again: what it held is lost to us as it would be to any reader
        return taken

    def _parse(self, rel: str, log: LogFile, text: str, line_at: int) -> tuple[dt.datetime, list] | None:
        """A line's time and values; a bad line recorded (named by file and offset) and None. A line
        whose start is a half line left by a writer that stopped (its restart appended a whole line
        to it) gives the whole line after the fragment, the fragment recorded."""
        try:
            return parse_line(log, text)
        except BadLine as exc:
            m = _STAMP.search(text, 1)
            if m is not None:
                try:
                    got = parse_line(log, text[m.start() :])
                except BadLine:
                    pass
                else:
                    self.problems.append(f"{rel} at byte {line_at}: half line {text[: m.start()]!r} before a whole one")
                    return got
            self.problems.append(f"{rel} at byte {line_at}: {exc}")
            return None

    def _read_from(self, pos: Position, f: BinaryIO, size: int, log: LogFile, emit: Emit, keep: bool = True) -> int:
        """Whole lines of the open file ``f`` from ``pos``; the position moves past them (``keep``)."""
        rel = pos.path
        if size <= pos.offset:
            if keep:
                self._caught_up[rel] = self.last_t or 0.0
                if self.positions.get(rel) != pos:
                    self._move(pos)
            return 0
        f.seek(pos.offset)
        data = f.read(min(size - pos.offset, READ_MAX))
        end = data.rfind(b"\n")
        if end < 0:  # not one whole line yet: wait for its end
            if keep and self.positions.get(rel) != pos:
                self._move(pos)
            return 0
        taken = 0
        offset, last_t = pos.offset, pos.last_t
        ref = self._caught_up.pop(rel, None) if keep else None
        for raw in data[: end + 1].split(b"\n")[:-1]:
            if keep and self._left <= 0:
                break  # this poll's share is taken: the position stays before this line (a moved-aside tail is read whole)
            line_at = offset
            offset += len(raw) + 1
            text = raw.decode("utf-8", "replace").lstrip("\ufeff").strip()  # a BOM is not part of the line
            if not text:
                continue
            parsed = self._parse(rel, log, text, line_at)
            if parsed is None:
                continue
            local, values = parsed
            t = to_unix(local, self.tz, last_t, ref)
            last_t = t
            self.last_t = t if self.last_t is None else max(self.last_t, t)
            fresh = values
            if rel in self.recheck:
                floor = self.recheck[rel]
                if floor is None:
                    fresh = [(fld, v) for fld, v in values if not self.seen(fld.name, t)]
                else:
                    fresh = [] if t <= floor else values
                if not fresh:
                    continue  # taken before (a restart, a replaced file): stored already
                if t >= self.ask_until.get(rel, float("-inf")):
                    del self.recheck[rel]  # past what was taken: the rest of the file is new
                    self.ask_until.pop(rel, None)
            emit(Line(rel, t, fresh))
            self._left -= len(fresh)
            taken += 1
        if keep:
            head = pos.head
            if not head and pos.offset == 0 and offset > 0:
                head = data[: min(HEAD, offset)].hex()  # the first line's bytes, at most HEAD
            self._move(Position(rel, pos.inode, offset, last_t, head))
            if offset == size:
                self._caught_up[rel] = self.last_t or 0.0
        return taken

    def _move(self, pos: Position) -> None:
        self.positions[pos.path] = pos
        self.changed[pos.path] = pos

    def take_changed(self) -> list[Position]:
        """Positions moved since the last call (inode -1: forget), for the store."""
        out, self.changed = list(self.changed.values()), {}
        return out
