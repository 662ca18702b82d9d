"""The Bluefors log folder as an instrument the poller runs: each cycle takes the new lines.

The poller's life cycle fits as it is: "connect" is finding the folder with its day folders (a
share not mounted is "disconnected", with the poller's backoff and the ``disconnected`` alarm),
a cycle is one ``Follower.poll``, and a lost share is a lost link. Readings are timed by their
log line (the Bluefors PC's clock, converted from its zone), not by when they were read.

Positions go to the store (``Store.save_file_cursor``) only once the samples of the lines before
them are written: each position waits with the (field, time) of the last sample its file gave,
and is saved (at most every ``SAVE_EVERY`` seconds, at the start of a cycle) when the store's
newest reading of that field has reached that time. A saved position is so never ahead of what
is stored, whatever the writer thread is doing; after a crash the lines read again (those after
the saved position) are below the floor and left out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from drivers.base import Instrument
from drivers.errors import ConnectionLost

from ..config import InstrumentConfig
from ..health import InstrumentHealth
from ..naming import SeriesKey
from ..samples import Sample
from .follower import Follower, Line, Position
from .formats import Field
from .localtime import zone

if TYPE_CHECKING:
    from ..store import Store

PROBLEMS_SHOWN = 3  # bad lines recorded one by one per cycle; the rest in one event
SAVE_EVERY = 10.0  # seconds between position saves (a restart re-reads at most this much, below the floor)


@dataclass(frozen=True)
class FolderIdentity:
    """What ``connect`` found, in the shape the poller shows an instrument's ``*IDN?``."""

    manufacturer: str
    model: str
    serial: str
    firmware: str


class FolderTransport:
    """Only the description the poller logs (``transport.description``)."""

    def __init__(self, path: Path, share: str | None) -> None:
        self.description = f"folder {path}" + (f" (share {share})" if share else "")


class LogFolder:
    """The "instrument": the mounted folder. Nothing is ever sent to the Bluefors PC."""

    def __init__(self, cfg: InstrumentConfig, follower: Follower, on_close: Callable[[], None]) -> None:
        self.cfg, self.follower, self.on_close = cfg, follower, on_close
        self.transport = FolderTransport(follower.root, cfg.cifs_share)

    def connect(self) -> FolderIdentity:
        days = self.follower.days()  # FolderGone (a ConnectionLost) when the share is not there
        return FolderIdentity("Bluefors", "log folder", self.cfg.name, f"newest day {days[-1][1].name}")

    def close(self) -> None:
        """The poller is stopping or lost the share: positions whose samples are written are saved now."""
        self.on_close()


def timeline(field: str) -> str:
    """Fields of one sensor share a timeline (``ch6_t``/``ch6_r`` -> ``ch6``; ``p1``/``p1_state`` -> ``p1``)."""
    m = re.fullmatch(r"(ch[0-9]+)_[trp]|(p[0-9]+)(_state)?", field)
    return (m.group(1) or m.group(2)) if m else field


class BlueforsAcquisition:
    """``bluefors-logs``: the new lines of the Bluefors PC's log folder, as samples."""

    def __init__(self, cfg: InstrumentConfig, health: InstrumentHealth) -> None:
        if cfg.log_dir is None or cfg.timezone is None:
            raise ValueError(f"instrument {cfg.name}: bluefors-logs needs log_dir and timezone")
        self.cfg, self.health = cfg, health
        self.follower = Follower(cfg.log_dir, zone(cfg.timezone))
        # The poller calls only connect, close and transport.description on its "instrument"; the
        # Acquisition protocol types it as a driver, which a folder is not (control requests to
        # this node fail as they should: a log folder has no settings).
        self.folder = LogFolder(cfg, self.follower, lambda: self._save_queued(force=True))
        self.instrument = cast(Instrument, self.folder)
        self.store: Store | None = None
        # positions to save, each with the (field, time) of the last sample its file gave before it
        # and the queue's drop count when they were queued (a drop since: perhaps ours, not saved)
        self._queued: dict[str, tuple[Position, tuple[str, float] | None, int]] = {}
        self._last: dict[str, tuple[str, float]] = {}  # file -> (field, time) of its last sample
        self._saved = 0.0
        self.save_every = SAVE_EVERY
        self._keys: dict[str, SeriesKey] = {}
        self.problems_recorded = 0

    def attach_store(self, store: Store) -> None:
        """The poller's store: where the positions are kept, and the floor below which lines are stored."""
        self.store = store
        node = self.cfg.name
        positions = {p: Position(p, i, o, t, h) for p, (i, o, t, h) in store.load_file_cursors(node).items()}
        self.follower.restore(positions, self._stored)

    def _stored(self, name: str, t: float) -> bool:
        """Is this field's value of this line time in the store (journaled included)? Asked only
        of lines after a saved position at a start: a line stamped in the future (a PC clock
        glitch) makes no later line look stored, as a "newest stored time" floor would."""
        if self.store is None:
            return False
        return any(True for _ in self.store.iter_raw([f"{self.cfg.name}::{name}"], t, t + 0.002))

    def _room(self) -> int | None:
        """Values this cycle may take: the queue to the store is shared and drops its oldest when
        full, so a follower (which can wait: its lines stay on the share) reads nothing while
        the queue is more than half full, and never fills it past half."""
        queue = getattr(self.store, "queue", None) if self.store is not None else None
        if queue is None:
            return None
        return max(0, queue.maxlen // 2 - len(queue))

    def _dropped(self) -> int:
        queue = getattr(self.store, "queue", None) if self.store is not None else None
        return queue.dropped if queue is not None else 0

    # -- the Acquisition protocol ---------------------------------------------------
    def discover_inputs(self) -> dict:
        return {}  # no channel plans: a line names its own fields

    def poll_interval(self) -> tuple[float, str | None]:
        return self.cfg.interval, None

    def configuration(self, channels: list[str]) -> dict:
        return {
            "log_dir": str(self.follower.root),
            "cifs_share": self.cfg.cifs_share,
            "timezone": self.cfg.timezone,
            "files": sorted(self.follower.positions),
        }

    def connected(self) -> None:
        pass

    def cycle(self, plans: dict, flags: int, out: list[Sample]) -> None:
        self._save_queued()
        node = self.cfg.name

        def emit(line: Line) -> None:
            for fld, v in line.values:
                out.append(Sample(self._key(node, fld), line.t, v, flags))
            self._last[line.path] = (line.values[-1][0].name, line.t)

        room = self._room()
        if room == 0:
            return  # the store is behind: the lines wait on the share, not in a queue that drops
        try:
            self.follower.poll(emit, room)
        finally:
            self._record_problems()
            dropped = self._dropped()
            for p in self.follower.take_changed():  # saved once their samples are written
                self._queued[p.path] = (p, self._last.get(p.path), dropped)

    def _key(self, node: str, fld: Field) -> SeriesKey:
        key = self._keys.get(fld.name)
        if key is None:
            key = self._keys[fld.name] = SeriesKey(
                node, fld.name, fld.units, timeline(fld.name), f"Bluefors log {fld.ocs}", ocs=fld.ocs
            )
        return key

    def _save_queued(self, force: bool = False) -> None:
        if self.store is None or not self._queued:
            return
        now = time.monotonic()
        if not force and now - self._saved < self.save_every:
            return
        self._saved = now
        written = {d["name"]: d["t"] for d in self.store.latest() if d["node"] == self.cfg.name}
        dropped = self._dropped()
        lost = False
        for path, (p, last, drops) in list(self._queued.items()):
            if p.inode < 0:
                continue  # forgetting a day waits for the later days' positions (below)
            if drops != dropped:
                lost = True  # the queue dropped samples since: perhaps this file's
                continue
            # the queue is FIFO and dropped nothing since: the file's last sample stored means
            # every sample before it is stored too
            if last is not None and written.get(last[0], float("-inf")) < last[1]:
                continue  # its samples are still on their way to the store
            self.store.save_file_cursor(self.cfg.name, p.path, p.inode, p.offset, p.last_t, p.head)
            del self._queued[path]
        if lost:
            self._reread()
            return
        if all(p.inode < 0 for p, _, _ in self._queued.values()):
            for path, (p, _, _) in list(self._queued.items()):
                self.store.save_file_cursor(self.cfg.name, p.path, p.inode, p.offset, p.last_t, p.head)
                del self._queued[path]
                self._last.pop(path, None)

    def _reread(self) -> None:
        """Samples were dropped on their way to the store: read again from the saved positions
        once the queue is empty, the lines stored already recognised by ``_stored``."""
        queue = getattr(self.store, "queue", None)
        if self.store is None or (queue is not None and len(queue)):
            return
        self._queued.clear()
        saved = self.store.load_file_cursors(self.cfg.name)
        positions = {p: Position(p, i, o, t, h) for p, (i, o, t, h) in saved.items()}
        until = {p: pos.last_t for p, pos in self.follower.positions.items() if pos.last_t is not None}
        self.follower.positions = {}
        self.follower.recheck = {}
        self.follower.restore(positions, self._stored, until)

    def _record_problems(self) -> None:
        """Bad lines as events, the first few of a cycle each and the rest counted in one: a file in a
        format this build does not know must not flood the store with an event (a flush) per line."""
        problems, self.follower.problems = self.follower.problems, []
        self.problems_recorded += len(problems)
        if self.store is None or not problems:
            return
        for detail in problems[:PROBLEMS_SHOWN]:
            self.store.event("bad_line", self.cfg.name, detail)
        if len(problems) > PROBLEMS_SHOWN:
            self.store.event("bad_line", self.cfg.name, f"and {len(problems) - PROBLEMS_SHOWN} more bad lines")


__all__ = ["BlueforsAcquisition", "ConnectionLost", "LogFolder", "timeline"]
