"""What the writer takes besides readings: typed records, each owning its SQL and its journal form.

Records are queued by any thread (``Store.event``, ``snapshot``, ``save_cursor``, ``alarm_record``),
journaled with the commit that takes them, and written into SQLite with the next flush. Their
journal form is the tagged list ``[kind, field, ...]`` older releases wrote, so a journal left by
one replays on this one. Readings are ``Row``s, the one sample-row shape (``appliance.blocks``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from ..blocks import Row
from ..journal import Frame

__all__ = [
    "AlarmRecord",
    "Cursor",
    "Event",
    "FileCursor",
    "Record",
    "Row",
    "Snapshot",
    "from_journal",
    "last_cursor_only",
    "merge_ranges",
    "snapshot_digest",
    "storable",
    "unapplied",
]


def _storable(v: object) -> object:
    """Text SQLite can take: a lone surrogate (undecodable bytes passed through as text) made every
    later flush raise UnicodeEncodeError, so one bad event detail held all readings in the journal."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-8", "backslashreplace").decode("utf-8")
    return v


@dataclass(frozen=True)
class Event:
    """Gaps, reconnects, clock steps, retention, refused points: what a 3 a.m. reader needs."""

    kind_tag: ClassVar[str] = "event"
    t: float
    node: str | None
    kind: str
    detail: str

    def write(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO event(t, node, kind, detail) VALUES (?,?,?,?)", (self.t, self.node, self.kind, self.detail)
        )

    def journal(self) -> list:
        return ["event", self.t, self.node, self.kind, self.detail]

    @property
    def flushes_now(self) -> bool:
        """An event moves the journal into SQLite at once (rare; a file reader in another process then
        sees it); an alarm event does not: a flapping rule made every commit a flush (120 flushes in
        152 commits in an alarm storm), and the ten-minute batching and its wear figures were gone."""
        return not str(self.kind).startswith("alarm_")

    def as_dict(self) -> dict:
        return dict(t=self.t, node=self.node, kind=self.kind, detail=self.detail)


@dataclass(frozen=True)
class Snapshot:
    """An instrument's configuration, stored whenever its digest changes."""

    kind_tag: ClassVar[str] = "snapshot"
    node: str
    t: float
    digest: str
    config: str  # JSON text (``snapshot_digest``)

    def write(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO snapshot(node, t, digest, config) VALUES (?,?,?,?)",
            (self.node, self.t, self.digest, self.config),
        )

    def journal(self) -> list:
        return ["snapshot", self.node, self.t, self.digest, self.config]

    flushes_now: ClassVar[bool] = True


@dataclass(frozen=True)
class Cursor:
    """An uplink's acknowledgement: everything up to ``position`` and the ranges in ``acked`` above it."""

    kind_tag: ClassVar[str] = "cursor"
    name: str
    position: int
    acked: str  # JSON list of [first, last] ranges, as stored in ``outbox.acked``
    updated: float

    def write(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO outbox(name, position, acked, updated) VALUES (?,?,?,?) ON CONFLICT(name)"
            " DO UPDATE SET position=excluded.position, acked=excluded.acked, updated=excluded.updated",
            (self.name, self.position, self.acked, self.updated),
        )

    def journal(self) -> list:
        return ["cursor", self.name, self.position, self.acked, self.updated]

    def ranges(self) -> list[list[int]]:
        return json.loads(self.acked)

    flushes_now: ClassVar[bool] = False


ALARM_SQL = {
    "state": "INSERT OR REPLACE INTO alarm_state(name, state, updated) VALUES (?,?,?)",
    "notice": "INSERT OR REPLACE INTO notice(id, t, alarm, kind, body, targets) VALUES (?,?,?,?,?,?)",
    "sent": "INSERT OR IGNORE INTO notice_sent(id, target, t) VALUES (?,?,?)",
}


@dataclass(frozen=True)
class AlarmRecord:
    """An alarm's state, a notice, or one delivery of a notice (``appliance.notify``).

    ``op`` names the table: ("state", name, json, t), ("notice", id, t, alarm, kind, body, targets_json)
    or ("sent", id, target, t) with ``args`` the rest, as ``Store.alarm_record`` takes them.
    """

    kind_tag: ClassVar[str] = "alarm"
    op: str
    args: tuple

    def __post_init__(self) -> None:
        if self.op not in ALARM_SQL:
            raise ValueError(f"alarm record {self.op!r}: not one of {sorted(ALARM_SQL)}")

    def write(self, conn: sqlite3.Connection) -> None:
        conn.execute(ALARM_SQL[self.op], self.args)

    def journal(self) -> list:
        return ["alarm", self.op, *self.args]

    flushes_now: ClassVar[bool] = False


@dataclass(frozen=True)
class FileCursor:
    """How far a log follower (``appliance.bluefors``) has read one file: its ``path`` under the
    followed folder, the ``inode`` it had and the byte ``offset`` of the first line not taken yet;
    ``last_t`` is the UNIX time of the line before it (the repeated hour's fold is decided from it).
    ``head`` is the hex of the file's first bytes (up to 32, its first line's): a file cut and
    regrown past ``offset`` while nobody watched is told by them.
    ``inode`` -1 forgets the file (its folder is past following). Written only after the samples
    of the lines before ``offset`` were handed to the writer, so it is never ahead of them."""

    kind_tag: ClassVar[str] = "file_cursor"
    follower: str
    path: str
    inode: int
    offset: int
    last_t: float | None
    updated: float
    head: str = ""

    def write(self, conn: sqlite3.Connection) -> None:
        if self.inode < 0:
            conn.execute("DELETE FROM file_cursor WHERE follower=? AND path=?", (self.follower, self.path))
            return
        conn.execute(
            "INSERT INTO file_cursor(follower, path, inode, offset, last_t, updated, head) VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT(follower, path) DO UPDATE SET inode=excluded.inode, offset=excluded.offset,"
            " last_t=excluded.last_t, updated=excluded.updated, head=excluded.head",
            (self.follower, self.path, self.inode, self.offset, self.last_t, self.updated, self.head),
        )

    def journal(self) -> list:
        return ["file_cursor", self.follower, self.path, self.inode, self.offset, self.last_t, self.updated, self.head]

    flushes_now: ClassVar[bool] = False


Record = Event | Snapshot | Cursor | AlarmRecord | FileCursor


def storable(rec: Record) -> Record:
    """The record with every text field one SQLite can take (see ``_storable``)."""
    if isinstance(rec, AlarmRecord):
        return AlarmRecord(rec.op, tuple(_storable(v) for v in rec.args))
    changes: dict[str, Any] = {}
    for f in fields(rec):
        v = getattr(rec, f.name)
        w = _storable(v)
        if w is not v:
            changes[f.name] = w
    return replace(rec, **changes) if changes else rec


def from_journal(r: list) -> Record:
    """A record from its journal form (the tagged list ``journal()`` writes)."""
    tag, rest = r[0], r[1:]
    if tag == "event":
        return Event(*rest)
    if tag == "snapshot":
        return Snapshot(*rest)
    if tag == "cursor":
        return Cursor(*rest)
    if tag == "alarm":
        return AlarmRecord(rest[0], tuple(rest[1:]))
    if tag == "file_cursor":
        return FileCursor(*rest)
    raise ValueError(f"journal record of unknown kind {tag!r}: {r!r}")


def last_cursor_only(recs: list[Record]) -> list[Record]:
    """Records in order, but of an uplink's cursor moves only the last (it supersedes the others)."""
    last = {r.name: i for i, r in enumerate(recs) if isinstance(r, Cursor)}
    return [r for i, r in enumerate(recs) if not isinstance(r, Cursor) or last[r.name] == i]


def merge_ranges(position: int, ranges: list[list[int]]) -> tuple[int, list[list[int]]]:
    """Acknowledged ranges merged; those reaching ``position + 1`` move the position."""
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if b <= position:
            continue
        a = max(a, position + 1)
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    while out and out[0][0] <= position + 1:
        position = max(position, out.pop(0)[1])
    return position, out


def snapshot_digest(config: dict) -> tuple[str, str]:
    """(digest, text) of a configuration snapshot."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], text


def unapplied(frames: list[Frame], applied: int, first: int) -> tuple[list[Frame], list[Row]]:
    """The journal's frames numbered above ``applied``, and their rows from sequence ``first`` on.

    Frame and sequence numbers only rise, so a repeated frame or row (a batch retried behind one
    that could not be cut back) is taken once, by the writer's replay and by every file reader.
    """
    todo: list[Frame] = []
    rows: list[Row] = []
    last, seq = applied, first
    for f in frames:
        if f.number <= last:
            continue
        todo.append(f)
        last = f.number
        for r in f.rows:
            if r.seq >= seq:
                rows.append(r)
                seq = r.seq + 1
    return todo, rows
