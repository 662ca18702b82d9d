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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from drivers.errors import ConnectionLost

from .formats import BadLine, Field, LogFile, folder_date, identify, parse_line
from .localtime import to_unix

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


@dataclass(frozen=True)
class Line:
    """One complete line taken: its file, its UNIX time and its values not already stored."""

    path: str
    t: float
    values: list[tuple[Field, float]]


Emit = Callable[[Line], None]


class Follower:
    """Reads new lines of the followed days; ``positions`` and ``floor`` are its whole state."""

    def __init__(
        self,
        root: Path | str,
        tz: ZoneInfo,
        positions: dict[str, Position] | None = None,
        floor: dict[str, float] | None = None,
    ) -> None:
        self.root = Path(root)
        self.tz = tz
        self.positions: dict[str, Position] = dict(positions or {})
        self.floor: dict[str, float] = dict(floor or {})  # field -> newest time taken (or stored)
        # files whose next lines may have been taken already (every known file after a start)
        self.recheck: set[str] = set(self.positions)
        self.changed: dict[str, Position] = {}  # positions moved since the caller last took them
        self.problems: list[str] = []  # bad lines, each named with its file and offset
        self.last_t: float | None = max((p.last_t for p in self.positions.values() if p.last_t), default=None)
        self.files_seen = 0
        self.values_per_poll = VALUES_PER_POLL
        self._left = 0  # values this poll may still take

    def restore(self, positions: dict[str, Position], floor: dict[str, float]) -> None:
        """Where a previous run got to (the store's positions and newest stored times): every file
        known is read on from its position, its lines compared with the floor until past it."""
        self.positions.update(positions)
        self.floor.update(floor)
        self.recheck |= set(positions)
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
        """Today and yesterday (by the newest folder), and any older day a position is still open in.
        On a first start (no position at all) only the newest day: its lines are read from the start."""
        newest = days[-1][0]
        if not self.positions:
            return days[-1:]
        open_days = {p.path.split("/", 1)[0] for p in self.positions.values()}
        return [(d, p) for d, p in days if d >= newest - dt.timedelta(days=1) or p.name in open_days]

    # -- one poll -----------------------------------------------------------------------
    def poll(self, emit: Emit) -> int:
        """Take every new complete line, oldest day first; returns the lines taken. Lines are given
        to ``emit`` as they are read, so those before a failure (the share going away) are kept."""
        days = self.days()
        newest = days[-1][0]
        taken = 0
        self._left = self.values_per_poll
        for day, folder in self.followed(days):
            if self._left <= 0:
                break  # the rest next poll, in the same order
            try:
                with os.scandir(folder) as it:
                    names = sorted(e.name for e in it if e.is_file())
            except OSError as exc:
                raise FolderGone(f"day folder {folder} cannot be read: {exc}") from None
            past = day < newest - dt.timedelta(days=1)
            for name in names:
                log = identify(name)
                rel = f"{folder.name}/{name}"
                if log is None or (past and rel not in self.positions):
                    continue  # an old day's file not followed (or no longer: read to its end)
                if self._left <= 0:
                    break
                taken += self._read(rel, folder / name, log, emit)
            if past and self._left > 0:
                self._forget_read(folder)
        return taken

    def _forget_read(self, folder: Path) -> None:
        """An old day's files read to their end are not followed further (their positions go)."""
        for rel, pos in list(self.positions.items()):
            if not rel.startswith(f"{folder.name}/"):
                continue
            try:
                size = os.stat(self.root / rel).st_size
            except OSError:
                size = -1
            if size == pos.offset or size < 0:
                del self.positions[rel]
                self.changed[rel] = replace(pos, inode=-1)

    def _read(self, rel: str, path: Path, log: LogFile, emit: Emit) -> int:
        pos = self.positions.get(rel)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if pos is None:  # new to us; on a first start (or a lost position) perhaps read before
                    pos = Position(rel, st.st_ino, 0, None)
                    self.recheck.add(rel)
                    self.files_seen += 1
                elif pos.inode != st.st_ino or st.st_size < pos.offset:
                    # rotated aside (its inode under another name: its tail first), replaced under its
                    # name, or cut: from the start; lines already taken are below the floor
                    taken_before = self._read_rotated(pos, path.parent, log, emit) if pos.inode != st.st_ino else 0
                    self.recheck.add(rel)  # the file under the name may begin with lines taken before
                    pos = Position(rel, st.st_ino, 0, None)
                    return taken_before + self._read_from(pos, f, st.st_size, log, emit)
                return self._read_from(pos, f, st.st_size, log, emit)
        except FileNotFoundError:
            return 0  # gone between the listing and the open: seen again next poll, or never
        except OSError as exc:
            raise FolderGone(f"log file {path} cannot be read: {exc}") from None

    def _read_rotated(self, pos: Position, folder: Path, log: LogFile, emit: Emit) -> int:
        """The rest of a file moved aside under another name in its folder (found by its inode)."""
        try:
            with os.scandir(folder) as it:
                moved = next((Path(e.path) for e in it if e.inode() == pos.inode and e.is_file()), None)
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

    def _read_from(self, pos: Position, f: BinaryIO, size: int, log: LogFile, emit: Emit, keep: bool = True) -> int:
        """Whole lines of the open file ``f`` from ``pos``; the position moves past them (``keep``)."""
        rel = pos.path
        if size <= pos.offset:
            if keep and self.positions.get(rel) != pos:
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
        for raw in data[: end + 1].split(b"\n")[:-1]:
            if keep and self._left <= 0:
                break  # this poll's share is taken: the position stays before this line (a moved-aside tail is read whole)
            line_at = offset
            offset += len(raw) + 1
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                local, values = parse_line(log, text)
            except BadLine as exc:
                self.problems.append(f"{rel} at byte {line_at}: {exc}")
                continue
            t = to_unix(local, self.tz, last_t if last_t is not None else self.last_t)
            last_t = t
            self.last_t = t if self.last_t is None else max(self.last_t, t)
            if rel in self.recheck:
                fresh = [(fld, v) for fld, v in values if t > self.floor.get(fld.name, float("-inf"))]
                if not fresh:
                    continue  # taken before (a restart, a replaced file): stored already
                self.recheck.discard(rel)  # past what was taken: the rest of the file is new
            else:
                fresh = values
            for fld, _ in fresh:
                self.floor[fld.name] = max(t, self.floor.get(fld.name, t))
            emit(Line(rel, t, fresh))
            self._left -= len(fresh)
            taken += 1
        if keep:
            self._move(Position(rel, pos.inode, offset, last_t))
        return taken

    def _move(self, pos: Position) -> None:
        self.positions[pos.path] = pos
        self.changed[pos.path] = pos

    def take_changed(self) -> list[Position]:
        """Positions moved since the last call (inode -1: forget), for the store."""
        out, self.changed = list(self.changed.values()), {}
        return out
