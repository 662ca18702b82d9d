"""The SQLite store: one writer thread appends, sealed blocks keep history, readers anywhere.

Layout (schema version in ``meta``):

* ``series``   one row per ``node::field`` ever seen (units, timeline, description).
* ``fresh``    the hot tail: small compressed blocks of each series (the same codec), one per
               series per flush (about ten minutes), in a rowid table with no other index, so a
               flush appends a page or two. Readers scan it whole: it holds about an hour.
* (lock)       ``<store>-lock``: held by the one writer process (``_claim_writer``).
* (journal)    ``<store>-log`` beside the file: each commit's readings, fsynced, until the next
               flush moves them into ``fresh`` (``appliance.journal``). A commit is then one
               small append and one fdatasync, the floor an fsynced append-only log sets.
* ``block``    older samples, one block per series per hour, compressed losslessly
               (``appliance.blocks``: times, sequence numbers, status bits, values, NULLs).
* ``rollup``   (tier, series, bucket) -> n, sum, min, max for 1 min, 10 min and 1 h buckets,
               added when a block is sealed (never rewritten per commit). The 10 s tier and
               the hot tail are aggregated when asked: they are a few blocks at most.
* ``rollup_pack`` (tier, series, day) -> the closed day's buckets of one tier as one packed
               array (``PACK_DT``), folded from ``rollup`` rows a few hours after the day ends.
               A 30-day query then reads 30 rows per series and tier, not 4,320; a late reading
               for a packed day adds a ``rollup`` row, which the query sums in and the next
               fold merges.
* ``snapshot`` instrument configuration whenever it changes (volatile state left out).
* ``event``    gaps, reconnects, clock steps, retention, refused points: what a 3 a.m. reader needs.
* ``outbox``   durable store-and-forward cursors: per uplink, the sequence number below which
               everything is acknowledged, and the acknowledged ranges above it.
* ``alarm_state``, ``notice``, ``notice_sent``: alarms (active, acknowledged) and their
               notifications, each one's delivery per target (``appliance.notify``), so a restart
               neither loses nor repeats one. Written as ``("alarm", ...)`` records, batched like
               readings: journaled with the commit that takes them (what the lanes wait for), moved
               into SQLite with the next flush (FLUSH_SECONDS, or FLUSH_RECORDS records waiting),
               never a flush of their own, so an alarm storm keeps the ten-minute batching.
               Retention: every undelivered notice (a target in ``targets`` without its
               ``notice_sent`` row) is kept; delivered ones are kept NOTICE_HISTORY_DAYS (30 days)
               and at most NOTICE_HISTORY_MAX (10,000, the newest); the rest go in bounded steps,
               each with its delivery rows. The newest notice always stays (the alarm service
               numbers on from it). Under the size cap, notices go before any reading: delivered
               ones oldest first, then alarm events, then undelivered ones (with an event saying
               how many); readings only when none is left.

Only the writer thread writes the file: samples come from the poller queue, events,
snapshots and cursor moves from ``self._records``; neither ever blocks nor raises on the
caller's side. Commits are batched (``commit_interval``) into the journal, and flushes run
in SQLite's WAL mode with ``synchronous=FULL``, so a power cut loses at most the batch not
yet committed and never corrupts the file.

Raw SQL, not sqlite-utils' table API (used here for ``enable_wal``), on each hot path, because:
a commit writes no SQL at all (the journal); a flush and a seal are a fixed INSERT of a few rows
inside the writer's own transaction (a row API would rebuild that SQL from dicts on every call);
rollups accumulate (``ON CONFLICT DO UPDATE SET n=n+excluded.n, min=min(...)``), which
``upsert`` (it replaces values) cannot say; retention deletes in bounded steps by rowid
(``delete_where`` has no limit: one statement would hold the write lock for the whole pass); the
schema and migrations are versioned scripts run in one transaction with their version bump, and
v1 -> v2 re-encodes rows into blocks, which no ``transform`` expresses; reads are GROUP BY
aggregates over rollups and decoded blocks, and the export command streams decoded blocks too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import sqlite3
import struct
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import sqlite_utils

from . import blocks
from .journal import Frame, Journal, decode_all
from .naming import SeriesKey
from .samples import FLAG_CLOCK_UNSYNCED, FLAG_INVALID, Sample, SampleQueue

log = logging.getLogger("kelvinpi.store")

SCHEMA_VERSION = 3
TIERS = (10, 60, 600, 3600)  # rollup bucket widths in seconds, as queries choose them
STORED_TIERS = (60, 600, 3600)  # kept as rows; 10 s is computed from blocks when asked
BLOCK_MS = 3600_000  # one block per series per hour
SEAL_SERIES = 32  # series sealed per transaction (one hour each)
SEAL_DELAY = 600  # an hour is sealed this many seconds after it ends (late readings still land in fresh)
HOT_MAX = 400_000  # past this many hot samples (a clock stepped back a day) the oldest hour is sealed anyway
BULK_MIN = 5000  # a batch this large (import, bench) writes its sealed hours straight into blocks
DEFAULT_MAX_POINTS = 5000
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
RECORD_QUEUE = 20_000  # events, snapshots, cursor moves waiting for the writer
FLUSH_SECONDS = 600.0  # journaled readings move into SQLite about this often (and at every non-alarm event)
FLUSH_ROWS = 20_000  # ...or when this many are waiting
FLUSH_RECORDS = 5000  # ...or when this many records (alarm notices, deliveries) are waiting
NOTICE_HISTORY_DAYS = 30.0  # delivered notices are kept this long...
NOTICE_HISTORY_MAX = 10_000  # ...and at most this many (the newest); undelivered ones are all kept
NOTICE_STEP = 500  # notices deleted per retention step (one short transaction)
MEM_MAX = 2_000_000  # journaled readings held for readers while SQLite cannot take them; then writes refuse
STEP_SECONDS = 0.1  # longest a retention or sealing step holds the write lock (about)
RETENTION_BUDGET = 1.0  # seconds of retention per round of the writer; the rest waits for the next round
SHRINK_MIN_PAGES = 1000  # free pages (4 MB) worth giving back to the card even when nothing was deleted
DAY = 86400
PACK_AFTER = SEAL_DELAY + 2 * 3600  # a day's rollup rows are folded into packs this long after it ends
# one rollup bucket in a pack: start (s), count, sum, min, max of the non-NULL values
PACK_DT = np.dtype([("b", "<i8"), ("n", "<u4"), ("s", "<f8"), ("mn", "<f8"), ("mx", "<f8")])


def resolve_time(t: float | None, now: float | None = None, default: float = 0.0) -> float:
    """sisock's convention: a time of 0 or less means that many seconds before now."""
    now = time.time() if now is None else now
    if t is None:
        t = default
    if not math.isfinite(t):
        raise ValueError(f"time {t!r} is not a finite number")
    # A query range reaching before 1970 or past 9999 means "everything": clamp, so the
    # millisecond keys handed to SQLite always fit its 64-bit integers.
    return min(MAX_TIME, max(0.0, now + t if t <= 0 else t))


@dataclass(frozen=True)
class FieldInfo:
    """A stored series: ``name`` is ``node::field``, ``field`` its short name in the node (as in SeriesKey)."""

    id: int
    name: str
    node: str
    field: str
    units: str
    timeline: str
    description: str
    ocs: str = ""


@dataclass
class SeriesData:
    t: list[float]
    value: list[float | None]
    status: list[int]
    tier: int  # 0 for raw samples, else the rollup bucket width
    min: list[float | None] | None = None
    max: list[float | None] | None = None


V1 = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, node TEXT NOT NULL, field TEXT NOT NULL,
    units TEXT NOT NULL, timeline TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
    ocs TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS raw (
    series INTEGER NOT NULL, t INTEGER NOT NULL, value REAL, status INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (series, t)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup (
    tier INTEGER NOT NULL, series INTEGER NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
    PRIMARY KEY (tier, series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    series INTEGER PRIMARY KEY, t REAL NOT NULL, value REAL, status INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY, node TEXT NOT NULL, t REAL NOT NULL, digest TEXT NOT NULL, config TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshot_node_t ON snapshot(node, t);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY, t REAL NOT NULL, node TEXT, kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS event_t ON event(t);
CREATE TABLE IF NOT EXISTS cursor (
    name TEXT NOT NULL, series INTEGER NOT NULL, position INTEGER NOT NULL, updated REAL,
    PRIMARY KEY (name, series)
) WITHOUT ROWID;
"""

V2_TABLES = """
CREATE TABLE fresh (
    id INTEGER PRIMARY KEY, series INTEGER NOT NULL, hour INTEGER NOT NULL, t0 INTEGER NOT NULL,
    t1 INTEGER NOT NULL, seq0 INTEGER NOT NULL, seq1 INTEGER NOT NULL, n INTEGER NOT NULL,
    flags INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE TABLE block (
    id INTEGER PRIMARY KEY, series INTEGER NOT NULL, hour INTEGER NOT NULL, t0 INTEGER NOT NULL,
    t1 INTEGER NOT NULL, seq0 INTEGER NOT NULL, seq1 INTEGER NOT NULL, n INTEGER NOT NULL,
    flags INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX block_series_hour ON block(series, hour);
CREATE INDEX block_hour ON block(hour);
CREATE INDEX block_seq1 ON block(seq1);
CREATE TABLE outbox (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, acked TEXT NOT NULL DEFAULT '[]', updated REAL
);
"""
V3_TABLES = """
CREATE TABLE IF NOT EXISTS rollup_pack (
    tier INTEGER NOT NULL, series INTEGER NOT NULL, day INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (tier, series, day)
) WITHOUT ROWID;
"""
V2_FINISH = """
DROP TABLE raw;
DROP TABLE latest;
DROP TABLE cursor;
"""
# Alarm tables: new, additive and idempotent, so created on open without a schema version bump.
ALARM_TABLES = """
CREATE TABLE IF NOT EXISTS alarm_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS notice (
    id INTEGER PRIMARY KEY, t REAL NOT NULL, alarm TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL,
    targets TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notice_sent (
    id INTEGER NOT NULL, target TEXT NOT NULL, t REAL NOT NULL, PRIMARY KEY (id, target)
) WITHOUT ROWID;
"""


# A notice (``notice n``) every one of whose targets has its delivery row.
_DELIVERED = "(SELECT count(*) FROM notice_sent s WHERE s.id = n.id) >= json_array_length(n.targets)"


def connect(path: Path | str, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any failure (SQLITE_FULL may have rolled it back already)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _script(conn: sqlite3.Connection, sql: str) -> None:
    """Run a schema script statement by statement: ``executescript`` would COMMIT the open transaction."""
    for stmt in sql.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _seal_rows(
    conn: sqlite3.Connection, sid: int, rows: list[tuple], rollups: bool = True, table: str = "block"
) -> int:
    """Write (seq, t, value, status) rows of one series as blocks, one per hour; add their rollups.

    ``table="fresh"``: the hot tail's small blocks, whose rollups wait for the hour's seal.
    """
    by_hour: dict[int, list[tuple]] = {}
    for r in rows:
        by_hour.setdefault(r[1] // BLOCK_MS * BLOCK_MS, []).append(r)
    for hour, hrows in by_hour.items():
        _seal_columns(conn, sid, hour, blocks.columns(hrows), rollups, table)
    return len(by_hour)


def _seal_columns(
    conn: sqlite3.Connection, sid: int, hour: int, c: blocks.Columns, rollups: bool = True, table: str = "block"
) -> None:
    """One block of one series' samples within one hour (``hour`` in ms), and its rollups."""
    flags = int(np.bitwise_or.reduce(c.status)) if len(c) else 0
    conn.execute(
        f"INSERT INTO {table}(series, hour, t0, t1, seq0, seq1, n, flags, data) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            sid,
            hour // 1000,
            int(c.t[0]),
            int(c.t[-1]),
            int(c.seq.min()),
            int(c.seq.max()),
            len(c),
            flags,
            blocks.encode(c),
        ),
    )
    if rollups and table == "block":
        for tier in STORED_TIERS:
            conn.executemany(
                "INSERT INTO rollup(tier, series, bucket, n, sum, min, max) VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT(tier, series, bucket) DO UPDATE SET n=n+excluded.n, sum=sum+excluded.sum,"
                " min=min(min, excluded.min), max=max(max, excluded.max)",
                [(tier, sid, *s) for s in blocks.summaries(c, tier)],
            )


def _migrate_v1(conn: sqlite3.Connection, progress: Callable[[], None] | None = None) -> None:
    """v1 -> v2 inside the caller's transaction: every raw row into blocks, cursors into ranges.

    Sequence numbers are given series by series in time order, so each v1 cursor (a time per
    series) becomes exactly one acknowledged range per series: nothing resent, nothing skipped.
    v1's rollups already count every v1 row (and rows retention has deleted), so they are kept
    as they are and the sealed blocks do not add to them again.
    """
    _script(conn, V2_TABLES)
    cursors: dict[str, dict[int, int]] = {}
    for name, sid, pos in conn.execute("SELECT name, series, position FROM cursor"):
        cursors.setdefault(name, {})[sid] = pos
    acked: dict[str, list[list[int]]] = {name: [] for name in cursors}
    seq = 0
    for (sid,) in conn.execute("SELECT id FROM series ORDER BY id").fetchall():
        base = seq + 1
        cur = conn.execute("SELECT t, value, status FROM raw WHERE series=? ORDER BY t", (sid,))
        while rows := cur.fetchmany(100_000):  # streamed: a 90-day series never sits in memory whole
            _seal_rows(conn, sid, [(seq + 1 + i, t, v, st) for i, (t, v, st) in enumerate(rows)], rollups=False)
            seq += len(rows)
            if progress:
                progress()
        if seq < base:
            continue
        for name, pos in cursors.items():
            if sid in pos:
                sent = conn.execute("SELECT count(*) FROM raw WHERE series=? AND t<=?", (sid, pos[sid])).fetchone()[0]
                if sent:
                    acked[name].append([base, base + sent - 1])
    for name, ranges in acked.items():
        position, rest = _merge(0, ranges)
        conn.execute(
            "INSERT OR REPLACE INTO outbox(name, position, acked, updated) VALUES (?,?,?,?)",
            (name, position, json.dumps(rest), time.time()),
        )
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (str(seq + 1),))
    conn.execute("DELETE FROM rollup WHERE tier=10")  # v2 computes 10 s buckets from the blocks
    _script(conn, V2_FINISH)


def _merge(position: int, ranges: list[list[int]]) -> tuple[int, list[list[int]]]:
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


def open_db(path: Path | str, progress: Callable[[], None] | None = None) -> sqlite3.Connection:
    """Open (creating or migrating) the store file; WAL, incremental auto-vacuum.

    Each migration runs in one transaction with its version bump: a power cut during it
    leaves the file as it was before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists() or path.stat().st_size == 0
    conn = connect(path)
    if fresh:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # must precede the first table
        conn.execute("PRAGMA page_size=4096")
    sqlite_utils.Database(conn).enable_wal()
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA journal_size_limit=8388608")  # a WAL grown by a big retention pass shrinks back
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"{path} has schema version {version}, newer than this kelvinpi ({SCHEMA_VERSION})")
    if version < SCHEMA_VERSION:
        with transaction(conn):
            if version == 0:
                _script(conn, V1 + V2_TABLES + V2_FINISH)
            else:
                log.info("migrating %s from schema version %d to %d", path, version, SCHEMA_VERSION)
                if version == 1:
                    _migrate_v1(conn, progress)
            # v2 -> v3: the pack table; the writer folds the existing rows into it in short steps
            _script(conn, V3_TABLES)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    try:
        with transaction(conn):
            _script(conn, ALARM_TABLES)
    except sqlite3.Error as exc:  # a full card: start anyway; the first alarm record creates them
        log.error("%s: alarm tables not created yet: %s", path, exc)
    return conn


class StoreReader:
    """Queries over a store file: usable from any thread, or any process (read-only)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()

    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
        return conn

    # -- sizes ---------------------------------------------------------------------------
    def used_bytes(self) -> int:
        conn = self.reader()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm", "-log"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return total

    # -- series ------------------------------------------------------------------------------
    def fields(self) -> list[FieldInfo]:
        rows = (
            self.reader()
            .execute("SELECT id, name, node, field, units, timeline, description, ocs FROM series ORDER BY id")
            .fetchall()
        )
        return [FieldInfo(*r) for r in rows]

    def field_map(self) -> dict[str, FieldInfo]:
        return {f.name: f for f in self.fields()}

    def latest(self) -> list[dict]:
        """The newest stored sample of each series (by insertion order).

        The dicts use the JSON API's public keys, where ``field`` is the series name (node::field)
        and ``name`` its short field: the reverse of ``FieldInfo``/``SeriesKey``, kept for users.
        """
        conn = self.reader()
        out = []
        for f in self.fields():
            b = (
                conn.execute("SELECT data FROM fresh WHERE series=? ORDER BY seq1 DESC LIMIT 1", (f.id,)).fetchone()
                or conn.execute("SELECT data FROM block WHERE series=? ORDER BY seq1 DESC LIMIT 1", (f.id,)).fetchone()
            )
            if b is None:
                continue
            c = blocks.decode(b[0])
            i = int(np.argmax(c.seq))
            row = (int(c.t[i]), None if c.null[i] else float(c.value[i]), int(c.status[i]))
            out.append(
                dict(
                    field=f.name, node=f.node, name=f.field, units=f.units, t=row[0] / 1000, value=row[1], status=row[2]
                )
            )
        return out

    # -- samples --------------------------------------------------------------------------------
    def _block_rows(self, conn, sid: int, lo: int, hi: int) -> list[tuple[int, float | None, int, int]]:
        out: list = []
        for (data,) in conn.execute(
            "SELECT data FROM block WHERE series=? AND hour>=? AND hour<? ORDER BY hour, seq0",
            (sid, lo // BLOCK_MS * (BLOCK_MS // 1000), -(-hi // 1000)),
        ).fetchall():
            c = blocks.decode(data)
            keep = (c.t >= lo) & (c.t < hi)
            if not keep.all():
                c = blocks.Columns(c.t[keep], c.seq[keep], c.status[keep], c.value[keep], c.null[keep])
            out.extend(c.rows())
        return out

    def _consistent(self, conn: sqlite3.Connection, query: Callable[[list[tuple]], object]):
        """Run ``query(journaled rows)`` in one read transaction: every SELECT in it sees one snapshot.

        A file reader (``kelvinpi export`` beside the running service) reads the writer's journal
        itself: up to FLUSH_SECONDS of readings are only there. The journal is read *before* the
        snapshot is taken, so a flush in between is in the snapshot (its frames are then at or below
        ``journal_applied`` and left out): each reading is counted once. The writer's Store passes
        its own journaled rows instead.
        """
        frames = self._journal_frames()
        conn.execute("BEGIN")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('journal_applied', 'next_seq')"))
            applied, first = int(meta.get("journal_applied", 0)), int(meta.get("next_seq", 0))
            return query(unapplied(frames, applied, first)[1])
        finally:
            conn.execute("COMMIT")

    def _journal_frames(self) -> list[Frame]:
        """The whole frames of the writer's journal (read only: a torn tail is skipped, never cut)."""
        try:
            data = Path(f"{self.path}-log").read_bytes()
        except FileNotFoundError:
            return []
        return decode_all(data)[0]

    @staticmethod
    def _fresh(conn, sids: list[int], lo: int, hi: int) -> Iterator[tuple[int, blocks.Columns]]:
        """The hot tail's blocks of ``sids``, decoded and cut to lo <= t < hi."""
        marks = ",".join("?" * len(sids))
        for sid, data in conn.execute(
            f"SELECT series, data FROM fresh WHERE series IN ({marks}) AND hour>=? AND hour<? AND t1>=? AND t0<?",
            (*sids, lo // BLOCK_MS * (BLOCK_MS // 1000), -(-hi // 1000), lo, hi),
        ).fetchall():
            c = blocks.decode(data)
            keep = (c.t >= lo) & (c.t < hi)
            if not keep.all():
                c = blocks.Columns(c.t[keep], c.seq[keep], c.status[keep], c.value[keep], c.null[keep])
            yield sid, c

    def _hot_rows(self, conn, sids: list[int], lo: int, hi: int, mem: list[tuple] = ()) -> dict[int, list[tuple]]:
        """Samples of the hot tail (and the journaled ``mem`` rows): sid -> [(t, value, status, seq)]."""
        out: dict[int, list[tuple]] = {s: [] for s in sids}
        if not sids:
            return out
        for sid, c in self._fresh(conn, sids, lo, hi):
            out[sid].extend(c.rows())
        for seq, sid, t, v, st in mem:
            if sid in out and lo <= t < hi:
                out[sid].append((t, v, st, seq))
        return out

    def _samples(self, conn, sid: int, lo_ms: int, hi_ms: int, hot: list[tuple]) -> list[tuple]:
        """Every sample of one series with lo <= t < hi: (t_ms, value, status, seq), in (t, seq) order."""
        rows = self._block_rows(conn, sid, lo_ms, hi_ms) + hot
        rows.sort(key=lambda r: (r[0], r[3]))
        return rows

    def choose_tier(self, stride: float) -> int:
        tier = 0
        for w in TIERS:
            if w <= stride:
                tier = w
        return tier

    def data(
        self,
        names: Iterable[str],
        start: float,
        end: float,
        min_stride: float | None = None,
        max_points: int | None = DEFAULT_MAX_POINTS,
        now: float | None = None,
    ) -> dict[str, SeriesData]:
        """Samples of each named series in [start, end), at least ``min_stride`` seconds apart.

        Strides of 10 s or more are answered from the coarsest rollup tier no wider than
        the stride, aggregated to the stride (mean, with min and max), so the answer reads
        a bounded number of rows whatever the range. Unknown names are left out.
        """
        names = list(names)
        now = time.time() if now is None else now
        start, end = resolve_time(start, now), resolve_time(end, now)
        if min_stride is not None and (not math.isfinite(min_stride) or min_stride < 0):
            raise ValueError(f"min_stride must be a non-negative number of seconds, got {min_stride!r}")
        stride = min(float(min_stride or 0.0), MAX_TIME)  # wider than the time axis: one point per series
        if max_points and end > start and (end - start) / max_points >= 1.0:
            # Without a stride a long range would return millions of rows: cap the answer.
            stride = max(stride, (end - start) / max_points)
        fmap = self.field_map()
        known = [fmap[n] for n in names if n in fmap]
        if end <= start:
            return {f.name: SeriesData([], [], [], 0) for f in known}
        tier = self.choose_tier(stride)
        conn = self.reader()
        return self._consistent(conn, lambda mem: self._data(conn, mem, known, start, end, stride, tier))

    def _data(
        self, conn, mem, known: list[FieldInfo], start: float, end: float, stride: float, tier: int
    ) -> dict[str, SeriesData]:
        if tier == 0:
            lo, hi = int(round(start * 1000)), int(round(end * 1000))
            hot = self._hot_rows(conn, [f.id for f in known], lo, hi, mem)
            return {f.name: self._raw(self._samples(conn, f.id, lo, hi, hot[f.id]), stride) for f in known}
        group = max(tier, int(math.ceil(stride / tier)) * tier)
        g_lo, b_hi = int(math.ceil(start / group) * group), int(math.ceil(end))
        hi_ms = -(-b_hi // tier) * tier * 1000  # the tier bucket holding ceil(end) still counts, as in v1
        hot = self._hot_aggregates(conn, [f.id for f in known], g_lo * 1000, hi_ms, group, mem)
        packs: dict[int, list[bytes]] = {}
        if tier in STORED_TIERS and self._has_packs(conn):  # one read for every series' packed days
            ids = [f.id for f in known]
            for sid, data in conn.execute(
                f"SELECT series, data FROM rollup_pack WHERE tier=? AND series IN ({','.join('?' * len(ids))})"
                " AND day>=? AND day<=?",
                (tier, *ids, g_lo // DAY, (b_hi - 1) // DAY),
            ):
                packs.setdefault(sid, []).append(data)
        out = {}
        for f in known:
            parts = [_buckets([(g, *v) for g, v in hot.get(f.id, {}).items()])]
            if tier in STORED_TIERS:
                if f.id in packs:
                    p = np.frombuffer(b"".join(packs[f.id]), PACK_DT)
                    parts.append(p[(p["b"] >= g_lo) & (p["b"] < b_hi)])
                parts.append(
                    _buckets(
                        conn.execute(  # the days not packed yet: grouped in SQL, fewer rows
                            "SELECT (bucket/?)*? AS g, sum(n), sum(sum), min(min), max(max) FROM rollup"
                            " WHERE tier=? AND series=? AND bucket>=? AND bucket<? GROUP BY g",
                            (group, group, tier, f.id, g_lo, b_hi),
                        ).fetchall()
                    )
                )
            else:
                parts.append(_buckets(self._block_aggregates(conn, f.id, g_lo * 1000, hi_ms, group)))
            a = _fold(parts, group)
            keep = (a["n"] > 0) & (a["b"] >= start) & (a["b"] < end)
            n = a["n"][keep]
            out[f.name] = SeriesData(
                a["b"][keep].astype(float).tolist(),
                (a["s"][keep] / n).tolist(),
                [0] * len(n),
                tier,
                a["mn"][keep].tolist(),
                a["mx"][keep].tolist(),
            )
        return out

    def _has_packs(self, conn) -> bool:
        """Whether the file has the v3 pack table (a read-only reader may open a v2 file)."""
        if not getattr(self, "_packs_seen", False):
            self._packs_seen = (
                conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='rollup_pack'").fetchone()
                is not None
            )
        return self._packs_seen

    @staticmethod
    def _raw(rows: list[tuple], stride: float) -> SeriesData:
        if stride > 0:
            step = max(1, int(stride * 1000))
            kept, slot, last = [], None, None
            for r in rows:  # the first reading of each slot, then successive ones >= stride apart (sisock)
                s = r[0] // step
                if s == slot:
                    continue
                slot = s
                if last is None or r[0] - last >= step:
                    kept.append(r)
                    last = r[0]
            rows = kept
        return SeriesData([r[0] / 1000 for r in rows], [r[1] for r in rows], [r[2] for r in rows], 0)

    def _hot_aggregates(
        self, conn, sids: list[int], lo: int, hi: int, group: int, mem: list[tuple] = ()
    ) -> dict[int, dict]:
        out: dict[int, dict] = {}
        if not sids:
            return out
        for sid, c in self._fresh(conn, sids, lo, hi):
            for g, n, s, mn, mx in blocks.summaries(c, group):
                _add(out.setdefault(sid, {}), g, n, s, mn, mx)
        want = set(sids)
        for _seq, sid, t, v, _st in mem:
            if sid in want and v is not None and lo <= t < hi:
                _add(out.setdefault(sid, {}), t // 1000 // group * group, 1, v, v, v)
        return out

    def _block_aggregates(self, conn, sid: int, lo: int, hi: int, group: int) -> list[tuple]:
        agg: dict = {}
        for (data,) in conn.execute(
            "SELECT data FROM block WHERE series=? AND hour>=? AND hour<?",
            (sid, lo // BLOCK_MS * (BLOCK_MS // 1000), -(-hi // 1000)),
        ).fetchall():
            c = blocks.decode(data)
            keep = (c.t >= lo) & (c.t < hi)
            c = blocks.Columns(c.t[keep], c.seq[keep], c.status[keep], c.value[keep], c.null[keep])
            for g, n, s, mn, mx in blocks.summaries(c, group):
                _add(agg, g, n, s, mn, mx)
        return [(g, *v) for g, v in agg.items()]

    def iter_raw(self, names: list[str], start: float, end: float) -> Iterator[tuple[str, float, float | None, int]]:
        """Every raw sample of the named series in [start, end), time order per series (exports).

        Read block by block, each in its own short read: an export left open never pins a
        WAL checkpoint (or retention) for longer than one block's read.
        """
        fmap = self.field_map()
        conn = connect(self.path, readonly=True)
        lo, hi = int(start * 1000), int(min(end, MAX_TIME) * 1000)
        try:
            for name in names:
                info = fmap.get(name)
                if info is None:
                    continue
                hot, hours = self._consistent(
                    conn,
                    lambda mem: (
                        self._hot_rows(conn, [info.id], lo, hi, mem)[info.id],
                        [
                            h * 1000
                            for (h,) in conn.execute(
                                "SELECT DISTINCT hour FROM block WHERE series=? AND hour>=? AND hour<? ORDER BY hour",
                                (info.id, lo // BLOCK_MS * (BLOCK_MS // 1000), -(-hi // 1000)),
                            ).fetchall()
                        ],
                    ),
                )
                hot.sort(key=lambda r: (r[0], r[3]))
                seen = {r[3] for r in hot}  # an hour sealed after the hot read is in both: keep one
                i = 0
                for h in hours:
                    rows = [
                        r
                        for r in self._block_rows(conn, info.id, max(lo, h), min(hi, h + BLOCK_MS))
                        if r[3] not in seen
                    ]
                    while i < len(hot) and hot[i][0] < h + BLOCK_MS:
                        rows.append(hot[i])
                        i += 1
                    rows.sort(key=lambda r: (r[0], r[3]))
                    for t, v, st, _seq in rows:
                        yield name, t / 1000, v, st
                for t, v, st, _seq in hot[i:]:
                    yield name, t / 1000, v, st
        finally:
            conn.close()

    def by_seq(self, sids: set[int], lo: int, hi: int, limit: int, newest: bool = False) -> list[tuple]:
        """Up to ``limit`` samples of ``sids`` with lo < seq <= hi: (seq, sid, t, value, status).

        Oldest first, or the newest ``limit`` (still returned oldest first) when ``newest``.
        Reads the hot tail and, for old backlogs, the sealed blocks (store-and-forward).
        """
        if not sids or hi <= lo or limit <= 0:
            return []
        conn = self.reader()
        return self._consistent(conn, lambda mem: self._by_seq(conn, mem, sids, lo, hi, limit, newest))

    def _by_seq(self, conn, mem, sids: set[int], lo: int, hi: int, limit: int, newest: bool) -> list[tuple]:
        marks = ",".join("?" * len(sids))
        got: list[tuple] = [r for r in mem if r[1] in sids and lo < r[0] <= hi]
        cands = conn.execute(  # ordered without their blobs; a blob is read only if it is needed
            f"SELECT 'block', id, series, seq0, seq1 FROM block WHERE seq1>? AND seq0<=? AND series IN ({marks})"
            f" UNION ALL SELECT 'fresh', id, series, seq0, seq1 FROM fresh WHERE seq1>? AND seq0<=? AND series IN"
            f" ({marks}) ORDER BY {'5 DESC' if newest else '4'}",
            (lo, hi, *sids, lo, hi, *sids),
        ).fetchall()
        for table, bid, sid, seq0, seq1 in cands:
            if len(got) >= limit:
                edge = sorted(r[0] for r in got)
                bound = edge[-limit] if newest else edge[limit - 1]
                if (seq1 < bound) if newest else (seq0 > bound):
                    break
            (data,) = conn.execute(f"SELECT data FROM {table} WHERE id=?", (bid,)).fetchone()
            c = blocks.decode(data)
            for t, v, st, seq in c.rows():
                if lo < seq <= hi:
                    got.append((seq, sid, t, v, st))
        got.sort()
        return got[-limit:] if newest else got[:limit]

    def count_by_seq(self, sids: set[int], lo: int, hi: int) -> int:
        """How many samples of ``sids`` have lo < seq <= hi (uplink backlogs)."""
        if not sids or hi <= lo:
            return 0
        conn = self.reader()
        return self._consistent(conn, lambda mem: self._count_by_seq(conn, mem, sids, lo, hi))

    def _count_by_seq(self, conn, mem, sids: set[int], lo: int, hi: int) -> int:
        marks = ",".join("?" * len(sids))
        n = sum(1 for r in mem if r[1] in sids and lo < r[0] <= hi)
        for table in ("block", "fresh"):
            n += conn.execute(
                f"SELECT total(n) FROM {table} WHERE seq0>? AND seq1<=? AND series IN ({marks})", (lo, hi, *sids)
            ).fetchone()[0]
            for (data,) in conn.execute(
                f"SELECT data FROM {table} WHERE seq1>? AND seq0<=? AND NOT (seq0>? AND seq1<=?)"
                f" AND series IN ({marks})",
                (lo, hi, lo, hi, *sids),
            ).fetchall():
                seq = blocks.decode(data).seq
                n += int(((seq > lo) & (seq <= hi)).sum())
        return int(n)

    def snapshots(self, node: str) -> list[tuple[float, dict]]:
        rows = self.reader().execute("SELECT t, config FROM snapshot WHERE node=? ORDER BY t", (node,)).fetchall()
        return [(t, json.loads(c)) for t, c in rows]

    def events(self, since: float = 0, limit: int = 100) -> list[dict]:
        rows = (
            self.reader()
            .execute("SELECT t, node, kind, detail FROM event WHERE t>=? ORDER BY t DESC LIMIT ?", (since, limit))
            .fetchall()
        )
        return [dict(t=r[0], node=r[1], kind=r[2], detail=r[3]) for r in rows]


def _add(agg: dict, g: int, n: int, s: float, mn: float, mx: float) -> None:
    cur = agg.get(g)
    if cur is None:
        agg[g] = [n, s, mn, mx]
    else:
        cur[0] += n
        cur[1] += s
        cur[2] = min(cur[2], mn)
        cur[3] = max(cur[3], mx)


def _fold(parts: list[np.ndarray], group: int | None = None) -> dict[str, np.ndarray]:
    """Buckets (``PACK_DT`` arrays) merged: one per distinct start, or per ``group``-second start.

    Returns plain columns (b, n, s, mn, mx): a structured array's fields are strided views,
    several times slower to compute on.
    """
    parts = [p for p in parts if len(p)] or [np.empty(0, PACK_DT)]
    col = {k: np.concatenate([p[k] for p in parts]) for k in ("b", "n", "s", "mn", "mx")}
    b = col["b"] if group is None else col["b"] // group * group
    if len(parts) > 1 and len(b) > 1 and not bool(np.all(b[1:] >= b[:-1])):
        order = np.argsort(b, kind="stable")
        b = b[order]
        col = {k: v[order] for k, v in col.items()}
    if not len(b):
        return col
    idx = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    return {
        "b": b[idx],
        "n": np.add.reduceat(col["n"], idx),
        "s": np.add.reduceat(col["s"], idx),
        "mn": np.minimum.reduceat(col["mn"], idx),
        "mx": np.maximum.reduceat(col["mx"], idx),
    }


def _packed(col: dict[str, np.ndarray]) -> bytes:
    out = np.empty(len(col["b"]), PACK_DT)
    for k, v in col.items():
        out[k] = v
    return out.tobytes()


def _buckets(rows: list[tuple]) -> np.ndarray:
    return np.array(rows, dtype=PACK_DT) if rows else np.empty(0, PACK_DT)


def _adapt(size: int, took: float, lo: int, hi: int) -> int:
    """The next step's size, so that a step holds the write lock for about STEP_SECONDS on this disk."""
    if took > STEP_SECONDS:
        return max(lo, size // 2)
    if took < STEP_SECONDS / 3:
        return min(hi, size * 2)
    return size


class StoreBusy(RuntimeError):
    """Another process is this store's writer: there is one writer per file."""


def _claim_writer(path: Path) -> int:
    """Hold ``<store>-lock`` while this writer lives; refuse a second writer with who holds it.

    Two writers on one file each numbered readings from the same ``next_seq``, and the second's
    flush cleared the journal still holding the first's readings: they were gone after a restart
    (``kelvinpi run`` started by hand beside the service does that). A POSIX record lock, so the
    kernel drops it when the process dies, kill -9 included; per process, so a test that stands
    in for a crash by opening the file again in the same process is not refused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreBusy(
            f"{path} is being written by another process (pid {holder}); one writer per store:"
            " stop that one first (systemctl stop kelvinpi), or read the file with `kelvinpi export`"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unapplied(frames: list[Frame], applied: int, first: int) -> tuple[list[Frame], list[tuple]]:
    """The journal's frames numbered above ``applied``, and their rows from sequence ``first`` on.

    Frame and sequence numbers only rise, so a repeated frame or row (a batch retried behind one
    that could not be cut back) is taken once, by the writer's replay and by every file reader.
    """
    todo: list[Frame] = []
    rows: list[tuple] = []
    last, seq = applied, first
    for f in frames:
        if f.number <= last:
            continue
        todo.append(f)
        last = f.number
        for r in f.rows:
            if r[0] >= seq:
                rows.append(r)
                seq = r[0] + 1
    return todo, rows


def _unstorable(s: Sample) -> str | None:
    """Why the journal and the blocks cannot hold this reading (times are int64 ms, status a uint32)."""
    t, st, v = s.t, s.status, s.value
    if isinstance(st, bool) or not isinstance(st, int) or not 0 <= st < 1 << 32:
        return f"status {st!r} is not a 32-bit word"
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or abs(t) >= 9e15:
        return f"time {t!r} is not a UNIX time"
    if v is not None:
        try:
            float(v)
        except (TypeError, ValueError, OverflowError):
            return f"value {v!r} is not a number"
    return None


def _storable(v: object) -> object:
    """Text SQLite can take: a lone surrogate (undecodable bytes passed through as text) made every
    later flush raise UnicodeEncodeError, so one bad event detail held all readings in the journal."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-8", "backslashreplace").decode("utf-8")
    return v


def _describe(exc: Exception) -> str:
    """A store error as the front panel and health show it ("disk full" when it is)."""
    if isinstance(exc, OSError) and exc.errno == 28:
        return f"disk full: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _flushes_now(rec: tuple) -> bool:
    """Whether a record moves the journal into SQLite at once: an event or a snapshot does (rare;
    a file reader in another process then sees it), an alarm record or an alarm event does not.

    Alarm records used to as well: a flapping rule made every commit a flush (120 flushes in
    152 commits in an alarm storm), and the ten-minute batching and its wear figures were gone.
    They are journaled with their commit like readings, which is what the notify lanes wait for
    (``durable_at``); the writer's ``events()`` and ``alarm_load()`` read them from memory.
    """
    if rec[0] == "snapshot":
        return True
    return rec[0] == "event" and not str(rec[3]).startswith("alarm_")


def _last_cursor_only(recs: list[tuple]) -> list[tuple]:
    """Records in order, but of an uplink's cursor moves only the last (it supersedes the others)."""
    last = {r[1]: i for i, r in enumerate(recs) if r[0] == "cursor"}
    return [r for i, r in enumerate(recs) if r[0] != "cursor" or last[r[1]] == i]


def snapshot_digest(config: dict) -> tuple[str, str]:
    """(digest, text) of a configuration snapshot."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], text


class Store(StoreReader):
    """The single writer: pollers' samples and everyone's records, committed in batches."""

    def __init__(
        self,
        path: Path | str,
        raw_retention_days: float = 90,
        rollup_retention_days: float = 3650,
        max_size_mb: float = 4096,
        commit_interval: float = 1.0,
        progress: Callable[[], None] | None = None,
        notice_history_days: float = NOTICE_HISTORY_DAYS,
        notice_history_max: int = NOTICE_HISTORY_MAX,
    ) -> None:
        super().__init__(path)
        self.notice_history = notice_history_days * 86400
        self.notice_history_max = notice_history_max
        self.raw_retention = raw_retention_days * 86400
        self.rollup_retention = rollup_retention_days * 86400
        self.max_bytes = int(max_size_mb * 1024 * 1024)
        self.commit_interval = commit_interval
        self._lock_fd = _claim_writer(self.path)
        try:
            self._wconn = open_db(self.path, progress)
        except BaseException:
            os.close(self._lock_fd)
            raise
        w = self._wconn
        self._series: dict[str, int] = {name: sid for sid, name in w.execute("SELECT id, name FROM series")}
        # Never hand out a number again: not after retention emptied the tables (meta next_seq,
        # written with every flush), and never one an uplink's cursor has already passed.
        acked = [max([p] + [b for _, b in json.loads(a)]) for p, a in w.execute("SELECT position, acked FROM outbox")]
        top = max(
            [
                w.execute("SELECT coalesce(max(seq1), 0) FROM fresh").fetchone()[0],
                w.execute("SELECT coalesce(max(seq1), 0) FROM block").fetchone()[0],
                int((w.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone() or ("1",))[0]) - 1,
            ]
            + acked
        )
        self._next_seq = top + 1
        self._write_lock = threading.RLock()
        self._records: deque[tuple] = deque()
        self._records_lock = threading.Lock()
        self._snap_digest: dict[str, str] = {}
        self._latest: dict[int, tuple[float, float | None, int]] = {}
        self._latest_lock = threading.Lock()
        # journaled readings and records not yet in SQLite; readers merge them in (seqlock: _gen
        # is odd while a flush commits, so a reader never counts a row twice or misses it)
        self._mem: list[tuple] = []
        self._mem_recs: list[tuple] = []
        self._mem_lock = threading.Lock()
        self._gen = 0
        self._last_flush = self._last_write = time.monotonic()
        self._flush_retry_at = 0.0
        self.flush_failing: str | None = None
        self.flushes = 0
        self._uplinks: dict[str, object] = {}  # outboxes whose cursors retention must respect
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.queue: SampleQueue | None = None
        # health, read by web and metrics
        self.written = 0
        self.commits = 0
        self.last_commit = 0.0
        self.last_commit_seconds = 0.0
        self.write_errors = 0
        self.last_error: str | None = None
        self.last_error_t = 0.0
        self.records_dropped = 0
        self.rejected = 0  # readings no store could hold (see write), dropped with an event
        self._journal = Journal(f"{self.path}-log")
        self._replay()
        for node, config in w.execute(
            "SELECT node, config FROM snapshot s WHERE id = (SELECT max(id) FROM snapshot WHERE node = s.node)"
        ):
            self._snap_digest[node] = snapshot_digest(json.loads(config))[0]
        for rec in self._mem_recs:  # a replayed snapshot SQLite could not take yet
            if rec[0] == "snapshot":
                self._snap_digest[rec[1]] = rec[3]
        self._seed_latest()
        self.sealed_blocks = 0
        self.longest_step = 0.0  # seconds: the longest write-lock hold of a sealing or retention step
        self._last_retention = 0.0
        self._retention_more = False  # a budgeted retention pass left work for the next round
        # True while the service starts: the writer's first round came before the uplinks registered
        # their cursors, and age retention then deleted a stalled uplink's whole backlog
        self.retention_held = False
        self._vacuum_pages = 256  # pages given back per vacuum step (adapted to the disk, see _shrink)
        self._delete_batch = 50  # blocks deleted per age-retention step (adapted likewise)
        self._last_seal = 0.0

    def _seed_latest(self) -> None:
        for f in StoreReader.latest(self):
            self._latest[self._series[f["field"]]] = (f["t"], f["value"], f["status"])

    # -- the journal ---------------------------------------------------------------------
    def _replay(self) -> None:
        """Readings journaled before a power cut or kill, not yet in SQLite: into SQLite now."""
        row = self._wconn.execute("SELECT value FROM meta WHERE key='journal_applied'").fetchone()
        applied = int(row[0]) if row else 0
        frames = self._journal.read()
        self._frame = max([applied] + [f.number for f in frames]) + 1
        todo, rows = unapplied(frames, applied, self._next_seq)
        if todo:
            with self._mem_lock:
                self._mem = rows
                self._mem_recs = [tuple(r) for f in todo for r in f.records]
            log.info(
                "%s: %d readings and %d records from the journal (written before the last stop)",
                self.path,
                len(rows),
                len(self._mem_recs),
            )
            if rows:
                self._next_seq = rows[-1][0] + 1
            try:
                self.flush()
            except sqlite3.Error as exc:  # e.g. a full disk: start anyway; retention and retries free it
                self.write_errors += 1
                self.flush_failing = self.last_error = _describe(exc)
                self.last_error_t = time.time()
                log.error(
                    "store: the journal's readings stay in the journal and in memory until SQLite takes them: %s", exc
                )
        elif frames:
            self._journal.clear()

    def flush(self) -> int:
        """Move journaled readings and records into SQLite in one transaction; then empty the journal."""
        with self._write_lock:
            with self._mem_lock:
                rows, recs = list(self._mem), list(self._mem_recs)
                if not rows and not recs:
                    return 0
                self._gen += 1
            conn = self._wconn
            try:
                with transaction(conn):
                    self._insert_fresh(conn, rows)
                    self._write_records(conn, _last_cursor_only(recs))
                    conn.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('journal_applied', ?)", (str(self._frame - 1),)
                    )
                    conn.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (str(self._next_seq),)
                    )
            except BaseException:
                with self._mem_lock:
                    self._gen += 1
                raise
            with self._mem_lock:
                del self._mem[: len(rows)]
                del self._mem_recs[: len(recs)]
                self._gen += 1
            self._journal.clear()
            self._last_flush = time.monotonic()
            self.flush_failing = None
            self.flushes += 1
            return len(rows)

    def _maybe_flush(self, force: bool = False) -> None:
        if not self._mem and not self._mem_recs:
            return
        now = time.monotonic()
        due = (
            force
            or now - self._last_flush >= FLUSH_SECONDS
            or len(self._mem) >= FLUSH_ROWS
            or len(self._mem_recs) >= FLUSH_RECORDS
        )
        if not due or now < self._flush_retry_at:
            return
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - write() calls this after journaling: never let the batch look unwritten
            self._flush_retry_at = now + 5.0
            self.write_errors += 1
            self.flush_failing = self.last_error = _describe(exc)
            self.last_error_t = time.time()
            log.error(
                "store: moving %d journaled readings into SQLite failed (kept in the journal and in"
                " memory; retrying): %s",
                len(self._mem),
                exc,
            )

    def _consistent(self, conn: sqlite3.Connection, query: Callable[[list[tuple]], object]):
        """As StoreReader's, with the journaled rows: each row is seen once, in SQLite or in memory.

        A flush makes ``_gen`` odd while it commits; a query that overlapped one runs again.
        """
        for _ in range(1000):
            with self._mem_lock:
                gen, mem = self._gen, list(self._mem)
            if gen % 2 == 0:
                conn.execute("BEGIN")
                try:
                    out = query(mem)
                finally:
                    conn.execute("COMMIT")
                with self._mem_lock:
                    if self._gen == gen:
                        return out
            time.sleep(0.001)
        raise sqlite3.OperationalError("store: a flush did not finish within a second")

    # -- writer thread ------------------------------------------------------------------
    def start(self, queue: SampleQueue) -> None:
        self.queue = queue
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer after committing everything queued."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        try:
            self.write(self.queue.drain(0) if self.queue is not None else [])
            self.flush()
        except (sqlite3.Error, OSError) as exc:
            log.error(
                "final commit failed (%d samples in the queue lost, %d journaled ones kept for the next start): %s",
                len(self.queue or ()),
                len(self._mem),
                exc,
            )

    def _run(self) -> None:
        assert self.queue is not None
        while not self._stop.is_set():
            started = time.monotonic()
            batch = self.queue.drain(self.commit_interval)
            if batch or self._records:
                try:
                    self.write(batch)
                except Exception as exc:  # noqa: BLE001 - kept in memory and retried, whatever it was
                    self._write_failed(exc, batch)
                    continue
            else:  # nothing new (instruments quiet): no wear to save by waiting
                try:
                    self._maybe_flush(force=time.monotonic() - self._last_write > 2.0)
                except Exception:  # noqa: BLE001 - _maybe_flush records its own errors
                    log.exception("store: flush failed")
            try:
                if time.time() - self._last_seal > 30:
                    self.seal()
                # held: the uplinks have not said what they still need yet (Appliance.start)
                if not self.retention_held and (time.time() - self._last_retention > 60 or self._retention_more):
                    self._retention_more = self.enforce_retention(budget=RETENTION_BUDGET)["more"]
            except Exception as exc:  # noqa: BLE001 - the writer must outlive a full disk or a bug here
                self.write_errors += 1
                self.last_error, self.last_error_t = _describe(exc), time.time()
                log.error("sealing or retention failed (retrying later): %s", exc)
                self._last_seal = self._last_retention = time.time()
                self._retention_more = False  # a failing pass waits for the next minute, not the next round
            # commits about once a commit interval: wait out the rest of it
            self._stop.wait(max(0.0, self.commit_interval - (time.monotonic() - started)))

    def _write_failed(self, exc: Exception, batch: list[Sample]) -> None:
        assert self.queue is not None
        self.write_errors += 1
        self.last_error = _describe(exc)
        self.last_error_t = time.time()
        log.error(
            "store write failed (%d samples and %d records kept in memory, %d samples dropped so far; retrying): %s",
            len(self.queue) + len(batch),
            len(self._records),
            self.queue.dropped,
            exc,
        )
        self.queue.requeue_front(batch)
        if "full" in self.last_error.lower() and time.time() - self._last_retention > 10:
            try:  # free what the retention policy allows before the next attempt
                log.warning("disk full: running retention now: %s", self.enforce_retention())
            except Exception as rexc:  # noqa: BLE001 - the writer thread must not end here
                self._last_retention = time.time()
                log.error("retention on a full disk failed too: %s", rexc)
        self._stop.wait(min(5.0, self.commit_interval * 2))

    # -- records (any thread; never blocks on SQLite, never raises) ---------------------------
    def _record(self, rec: tuple) -> None:
        rec = tuple(_storable(v) for v in rec)
        with self._records_lock:
            if len(self._records) >= RECORD_QUEUE:
                self._records.popleft()
                self.records_dropped += 1
            self._records.append(rec)

    def event(self, kind: str, node: str | None = None, detail: str = "", t: float | None = None) -> None:
        self._record(("event", time.time() if t is None else t, node, kind, detail))

    def snapshot(self, node: str, config: dict) -> bool:
        """Queue an instrument's configuration if it changed; True if it is new."""
        digest, text = snapshot_digest(config)
        with self._records_lock:
            if self._snap_digest.get(node) == digest:
                return False
            self._snap_digest[node] = digest
        self._record(("snapshot", node, time.time(), digest, text))
        return True

    def save_cursor(self, name: str, position: int, acked: list[list[int]]) -> None:
        self._record(("cursor", name, position, json.dumps(acked), time.time()))

    def alarm_record(self, op: str, *args) -> None:
        """Queue an alarm record: ("state", name, json, t), ("notice", id, t, alarm, kind, body, targets_json)
        or ("sent", id, target, t). Written by the writer thread like every record."""
        self._record(("alarm", op, *args))

    def alarm_load(self) -> tuple[dict[str, dict], list[dict]]:
        """Alarm states by name and every notice with the targets it was delivered to ("sent"),
        from SQLite and from records not yet there (journaled or queued), oldest notice first.

        Alarm records now wait in memory up to a flush interval: a flush between the SQLite read
        and the memory read would hide the records it moved, so a flush in between (``_gen``,
        as in ``_consistent``) reads again.
        """
        conn = self.reader()
        for _ in range(1000):
            with self._mem_lock:
                gen = self._gen
            if gen % 2:
                time.sleep(0.001)
                continue
            try:
                conn.execute("BEGIN")
                try:
                    states = {n: json.loads(s) for n, s in conn.execute("SELECT name, state FROM alarm_state")}
                    notices = {
                        i: dict(id=i, t=t, alarm=a, kind=k, body=json.loads(b), targets=json.loads(tg), sent=set())
                        for i, t, a, k, b, tg in conn.execute("SELECT id, t, alarm, kind, body, targets FROM notice")
                    }
                    sent = conn.execute("SELECT id, target FROM notice_sent").fetchall()
                finally:
                    conn.execute("COMMIT")
            except sqlite3.OperationalError:  # the tables could not be created yet (a full card at start)
                states, notices, sent = {}, {}, []
            with self._records_lock, self._mem_lock:
                pending = [r for r in list(self._mem_recs) + list(self._records) if r[0] == "alarm"]
                if self._gen == gen:
                    break
        else:
            raise sqlite3.OperationalError("store: a flush did not finish within a second")
        for r in pending:
            if r[1] == "state":
                states[r[2]] = json.loads(r[3])
            elif r[1] == "notice":
                notices[r[2]] = dict(
                    id=r[2], t=r[3], alarm=r[4], kind=r[5], body=json.loads(r[6]), targets=json.loads(r[7]), sent=set()
                )
            elif r[1] == "sent":
                sent.append((r[2], r[3]))
        for i, target in sent:
            if i in notices:
                notices[i]["sent"].add(target)
        return states, [notices[i] for i in sorted(notices)]

    def records_queued(self) -> int:
        return len(self._records)

    def register_uplink(self, name: str, outbox) -> None:
        """Retention keeps what this uplink has not acknowledged (except under the size cap)."""
        self._uplinks[name] = outbox

    def next_seq(self) -> int:
        return self._next_seq

    def load_cursor(self, name: str) -> tuple[int, list[list[int]]] | None:
        with self._records_lock, self._mem_lock:  # a move not yet in SQLite is the newest
            for rec in reversed(list(self._mem_recs) + list(self._records)):
                if rec[0] == "cursor" and rec[1] == name:
                    return rec[2], json.loads(rec[3])
        row = self.reader().execute("SELECT position, acked FROM outbox WHERE name=?", (name,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def _taken(self, recs: list[tuple], journaled: bool) -> None:
        """Records now journaled (or in SQLite): off the queue, in one step with their new place."""
        ids = {id(r) for r in recs}
        with self._records_lock, self._mem_lock:
            while self._records and id(self._records[0]) in ids:
                self._records.popleft()
            if journaled:
                self._mem_recs.extend(recs)

    def _write_records(self, conn: sqlite3.Connection, recs: list[tuple]) -> None:
        for rec in recs:
            if rec[0] == "event":
                conn.execute("INSERT INTO event(t, node, kind, detail) VALUES (?,?,?,?)", rec[1:])
            elif rec[0] == "snapshot":
                conn.execute("INSERT INTO snapshot(node, t, digest, config) VALUES (?,?,?,?)", rec[1:])
            elif rec[0] == "cursor":
                conn.execute(
                    "INSERT INTO outbox(name, position, acked, updated) VALUES (?,?,?,?) ON CONFLICT(name)"
                    " DO UPDATE SET position=excluded.position, acked=excluded.acked,"
                    " updated=excluded.updated",
                    rec[1:],
                )
            elif rec[0] == "alarm":
                _script(conn, ALARM_TABLES)  # no-op once they exist (open_db creates them unless the disk was full)
                sql = {
                    "state": "INSERT OR REPLACE INTO alarm_state(name, state, updated) VALUES (?,?,?)",
                    "notice": "INSERT OR REPLACE INTO notice(id, t, alarm, kind, body, targets) VALUES (?,?,?,?,?,?)",
                    "sent": "INSERT OR IGNORE INTO notice_sent(id, target, t) VALUES (?,?,?)",
                }[rec[1]]
                conn.execute(sql, rec[2:])

    # -- samples ---------------------------------------------------------------------------
    def _series_id(self, conn, key: SeriesKey, added: list[str]) -> int:
        sid = self._series.get(key.name)
        if sid is None:
            cur = conn.execute(
                "INSERT INTO series(name, node, field, units, timeline, description, created, ocs)"
                " VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET units=excluded.units, ocs=excluded.ocs RETURNING id",
                (key.name, key.node, key.field, key.units, key.timeline, key.description, time.time(), key.ocs),
            )
            sid = cur.fetchone()[0]
            self._series[key.name] = sid
            added.append(key.name)
        return sid

    def write(self, samples: list[Sample]) -> int:
        """Make one batch (and every queued record) durable; returns the samples stored.

        A reading the store cannot hold at all (a time that is no UNIX time, a status that is no
        32-bit word, a value that is no number: no driver makes one) is dropped, counted in
        ``rejected`` and named in an event; it used to fail its batch forever, and every reading
        queued behind it with it.
        """
        try:
            return self._write(samples)
        except (ValueError, OverflowError, TypeError, struct.error):
            why = [_unstorable(s) for s in samples]
            bad = [(s, w) for s, w in zip(samples, why) if w]
            if not bad:
                raise
            self.rejected += len(bad)
            s, first = bad[0]
            detail = f"{len(bad)} reading(s) the store cannot hold, dropped; the first: {s.series.name}: {first}"
            log.error("store: %s", detail)
            self.event("rejected", s.series.node, detail)
            return self._write([s for s, w in zip(samples, why) if not w])

    def _write(self, samples: list[Sample]) -> int:
        """``write`` without the check of its readings.

        A live batch is one journal frame and one fdatasync, and is readable at once; it moves
        into SQLite with the next flush (about ten minutes, or at once when an event or snapshot
        is among the records; alarm records and alarm events wait, see ``_flushes_now``). A bulk
        batch (import, bench) goes straight into SQLite, its old hours straight into blocks. On
        failure nothing of the batch is kept and the records stay queued: the caller requeues the
        samples and the next attempt writes both.
        """
        t0 = time.monotonic()
        with self._write_lock:
            with self._records_lock:  # peeked, not taken: until they are journaled, events() finds them here
                recs = list(self._records)
            if not samples and not recs:
                return 0
            # on failure the records are still queued, and the caller requeues the samples
            self._ensure_series(samples)
            if len(samples) >= BULK_MIN:
                self.flush()  # sequence order: whatever is journaled goes first
                rows, seq = [], self._write_bulk(samples, recs)
                self._taken(recs, journaled=False)
            else:
                rows, seq = self._number(samples)
                if len(self._mem) > MEM_MAX:
                    raise sqlite3.OperationalError(
                        f"store cannot take more: {len(self._mem)} readings journaled but not in SQLite"
                        f" ({self.flush_failing})"
                    )
                self._journal.append(Frame(self._frame, rows, [list(r) for r in recs]))
                self._frame += 1
                with self._mem_lock:
                    self._mem.extend(rows)
                self._taken(recs, journaled=True)
            self._next_seq = seq
            self._maybe_flush(force=any(_flushes_now(r) for r in recs))
        with self._latest_lock:
            for _seq, sid, t, v, st in rows:
                self._latest[sid] = (t / 1000, v, st)
        self.written += len(rows)
        self.commits += 1
        self._last_write = time.monotonic()
        self.last_commit = time.time()
        self.last_commit_seconds = time.monotonic() - t0
        return len(rows)

    def _ensure_series(self, samples: list[Sample]) -> None:
        """A series seen for the first time gets its row (and id) in SQLite before any reading of it."""
        new = {s.series.name: s.series for s in samples if s.series.name not in self._series}
        if not new:
            return
        conn, added = self._wconn, []
        try:
            with transaction(conn):
                for key in new.values():
                    self._series_id(conn, key, added)
        except BaseException:
            for name in added:
                self._series.pop(name, None)
            raise

    def _number(self, samples: list[Sample]) -> tuple[list[tuple], int]:
        """(seq, series, t_ms, value, status) rows; a flagged or non-finite value is NULL with FLAG_INVALID."""
        rows = []
        append = rows.append
        isfinite = math.isfinite
        ids = self._series
        seq = self._next_seq
        for s in samples:
            v = s.value
            if v is None or not isfinite(v):
                append((seq, ids[s.series.name], int(s.t * 1000 + 0.5), None, s.status | FLAG_INVALID))
            else:
                append((seq, ids[s.series.name], int(s.t * 1000 + 0.5), v, s.status))
            seq += 1
        return rows, seq

    def _write_bulk(self, samples: list[Sample], recs: list[tuple]) -> int:
        """Import and backfill, in numpy: one block per series and hour, straight into ``block``
        for hours already past sealing (with their rollups), else into the hot tail. Returns the
        next sequence number."""
        n, ids = len(samples), self._series
        sid = np.fromiter((ids[x.series.name] for x in samples), np.int64, n)
        t = (np.fromiter((x.t for x in samples), np.float64, n) * 1000 + 0.5).astype(np.int64)
        val = np.fromiter((np.nan if x.value is None else x.value for x in samples), np.float64, n)
        status = np.fromiter((x.status for x in samples), np.int64, n)
        null = ~np.isfinite(val)
        status[null] |= FLAG_INVALID
        val[null] = np.nan
        seq = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        hour = t // BLOCK_MS * BLOCK_MS
        order = np.lexsort((seq, t, hour, sid))
        sid, t, val, status, null, seq, hour = (a[order] for a in (sid, t, val, status, null, seq, hour))
        edges = np.flatnonzero(np.r_[True, (sid[1:] != sid[:-1]) | (hour[1:] != hour[:-1]), True])
        cutoff = self._seal_cutoff_ms()
        conn = self._wconn
        with transaction(conn):
            for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()):
                c = blocks.Columns(t[a:b], seq[a:b], status[a:b], val[a:b], null[a:b])
                sealed = int(hour[a]) < cutoff
                _seal_columns(conn, int(sid[a]), int(hour[a]), c, table="block" if sealed else "fresh")
                self.sealed_blocks += sealed
            self._write_records(conn, recs)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (str(self._next_seq + n),))
        by_seq = np.argsort(seq)  # the newest reading of each series, in insertion order
        series, back = np.unique(sid[by_seq][::-1], return_index=True)
        with self._latest_lock:
            for k, i in zip(series.tolist(), by_seq[n - 1 - back].tolist()):
                self._latest[k] = (int(t[i]) / 1000, None if null[i] else float(val[i]), int(status[i]))
        self.written += n
        return self._next_seq + n

    @staticmethod
    def _insert_fresh(conn, rows: list[tuple]) -> None:
        """(seq, sid, t, value, status) rows into the hot tail: one small block per series and hour."""
        per: dict[int, list[tuple]] = {}
        for seq, sid, t, v, st in rows:
            per.setdefault(sid, []).append((seq, t, v, st))
        for sid, srows in per.items():
            _seal_rows(conn, sid, srows, table="fresh")

    def _seal_cutoff_ms(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return int((now - SEAL_DELAY) * 1000) // BLOCK_MS * BLOCK_MS

    def seal(self, now: float | None = None, budget: float = 0.5) -> int:
        """Move whole hours that ended over SEAL_DELAY ago from the hot tail into blocks.

        One hour (every series) per transaction, oldest first, for at most ``budget`` seconds
        per call; then closed days' rollups are packed with what is left of the budget.
        """
        self._last_seal = time.time()
        cutoff = self._seal_cutoff_ms(now)
        with self._mem_lock:
            old = any(r[2] < cutoff for r in self._mem)
        if old:
            self.flush()
        sealed = 0
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            with self._write_lock:
                conn = self._wconn
                hour, hot = conn.execute("SELECT min(hour), total(n) FROM fresh").fetchone()
                if hour is None or ((hour + 3600) * 1000 > cutoff and hot <= HOT_MAX):
                    break
                t0 = time.monotonic()
                # One hour of every series per transaction: the hot tail's pages hold every series'
                # minute side by side, so sealing series by series rewrote each page once per series
                # (28.6 B/sample of wear for 24 series, against 8.9 this way).
                # SEAL_SERIES bounds the step when there are many series.
                with transaction(conn):
                    sids = [
                        sid
                        for (sid,) in conn.execute(
                            "SELECT DISTINCT series FROM fresh WHERE hour=? ORDER BY series LIMIT ?",
                            (hour, SEAL_SERIES),
                        )
                    ]
                    marks = ",".join("?" * len(sids))
                    got: dict[int, list[bytes]] = {}
                    for sid, data in conn.execute(
                        f"SELECT series, data FROM fresh WHERE hour=? AND series IN ({marks}) ORDER BY id",
                        (hour, *sids),
                    ):
                        got.setdefault(sid, []).append(data)
                    for sid, parts in got.items():
                        _seal_columns(conn, sid, hour * 1000, blocks.concat([blocks.decode(d) for d in parts]))
                    conn.execute(f"DELETE FROM fresh WHERE hour=? AND series IN ({marks})", (hour, *sids))
                sealed += len(got)
                self.longest_step = max(self.longest_step, time.monotonic() - t0)
        self.sealed_blocks += sealed
        self.pack_rollups(now, max(0.0, deadline - time.monotonic()))
        return sealed

    def pack_rollups(self, now: float | None = None, budget: float = 0.5) -> int:
        """Fold the rollup rows of days that ended PACK_AFTER ago into one pack per tier, series and day.

        One (tier, series, day) per transaction, oldest first, for at most ``budget`` seconds:
        a v2 file's years of rows are folded over many calls. A pack already there (late
        readings arrived for its day) is merged, never replaced. Returns the packs written.
        """
        now = time.time() if now is None else now
        cut = int(min(now, MAX_TIME) - PACK_AFTER) // DAY * DAY  # rows before this are in closed days
        deadline = time.monotonic() + budget
        written = 0
        for tier in STORED_TIERS:
            for sid in sorted(set(self._series.values())):
                while time.monotonic() < deadline:
                    with self._write_lock:
                        conn = self._wconn
                        (b,) = conn.execute(
                            "SELECT min(bucket) FROM rollup WHERE tier=? AND series=? AND bucket<?", (tier, sid, cut)
                        ).fetchone()
                        if b is None:
                            break
                        t0 = time.monotonic()
                        day = b // DAY
                        with transaction(conn):
                            lo, hi = day * DAY, (day + 1) * DAY
                            rows = conn.execute(
                                "SELECT bucket, n, sum, min, max FROM rollup WHERE tier=? AND series=?"
                                " AND bucket>=? AND bucket<?",
                                (tier, sid, lo, hi),
                            ).fetchall()
                            old = conn.execute(
                                "SELECT data FROM rollup_pack WHERE tier=? AND series=? AND day=?", (tier, sid, day)
                            ).fetchone()
                            parts = [np.frombuffer(old[0], PACK_DT)] if old else []
                            packed = _packed(_fold(parts + [_buckets(rows)]))
                            conn.execute(
                                "INSERT OR REPLACE INTO rollup_pack(tier, series, day, data) VALUES (?,?,?,?)",
                                (tier, sid, day, packed),
                            )
                            conn.execute(
                                "DELETE FROM rollup WHERE tier=? AND series=? AND bucket>=? AND bucket<?",
                                (tier, sid, lo, hi),
                            )
                        written += 1
                        self.longest_step = max(self.longest_step, time.monotonic() - t0)
                if time.monotonic() >= deadline:
                    return written
        return written

    def events(self, since: float = 0, limit: int = 100) -> list[dict]:
        """Stored events and those still on their way to SQLite (queued or journaled), newest first."""
        with self._records_lock, self._mem_lock:
            pending = [r for r in list(self._mem_recs) + list(self._records) if r[0] == "event" and r[1] >= since]
        out = {(e["t"], e["node"], e["kind"], e["detail"]): e for e in StoreReader.events(self, since, limit)}
        for _, t, node, kind, detail in pending:
            out.setdefault((t, node, kind, detail), dict(t=t, node=node, kind=kind, detail=detail))
        return sorted(out.values(), key=lambda e: e["t"], reverse=True)[:limit]

    def latest(self) -> list[dict]:
        """The newest sample of each series, from memory (the store keeps no latest table)."""
        with self._latest_lock:
            snap = dict(self._latest)
        out = []
        for f in self.fields():
            if f.id in snap:
                t, v, st = snap[f.id]
                out.append(dict(field=f.name, node=f.node, name=f.field, units=f.units, t=t, value=v, status=st))
        return out

    # -- retention ---------------------------------------------------------------------
    def _needed_from(self) -> int:
        """The lowest sequence number some running uplink has not acknowledged."""
        marks = [o.first_unacked() for o in list(self._uplinks.values())]
        return min(marks) if marks else self._next_seq

    def enforce_retention(self, now: float | None = None, budget: float | None = None) -> dict:
        """Age, then size cap, in bounded steps (each a short transaction).

        Age: blocks whose hour is older than ``raw_retention_days`` go, unless an uplink still
        needs them or their times were taken on an unsynchronised clock (their age is unknown).
        Size cap: the oldest blocks go whatever needs them, and an event says how many samples
        each uplink will never get.

        ``budget`` (seconds): stop there and say ``more=True``; the writer thread calls again on
        its next round, so commits go on between passes. Without a budget a pass over a 4 GB
        file that lost its older half to a new ``raw_retention_days`` kept the writer from
        committing for over 20 minutes (most of it giving the freed pages back).
        """
        now = time.time() if now is None else now
        self._last_retention = time.time()
        deadline = math.inf if budget is None else time.monotonic() + budget
        deleted = {
            "raw_age": 0,
            "raw_size": 0,
            "rollup": 0,
            "events": 0,
            "snapshots": 0,
            "notices": 0,  # delivered notices past their history (age or count)
            "notices_size": 0,  # notices (and alarm events) the size cap took, before any reading
            "more": False,
        }

        def out_of_time() -> bool:
            if time.monotonic() >= deadline:
                deleted["more"] = True
            return deleted["more"]

        needed = self._needed_from()
        cutoff_s = int(now - self.raw_retention)
        while True:  # the kept ones (needed, unsynchronised) are filtered in SQL: they never block the rest
            ids = self._w_read(
                "SELECT id, n FROM block WHERE hour + 3600 <= ? AND seq1 < ? AND flags & ? = 0 ORDER BY hour LIMIT ?",
                (cutoff_s, needed, FLAG_CLOCK_UNSYNCED, self._delete_batch),
            )
            if not ids:
                break
            t0 = time.monotonic()
            deleted["raw_age"] += self._delete_blocks(ids)
            # blocks per step follow the card too: 200 took 982 ms on a busy disk behind a 4 GB file
            self._delete_batch = _adapt(self._delete_batch, time.monotonic() - t0, 1, 200)
            if out_of_time():  # after a step: every pass makes progress, even with no time at all
                break
        rcut = int(now - self.rollup_retention)
        for tier in STORED_TIERS:
            for sid in list(self._series.values()):
                deleted["rollup"] += self._w_exec(
                    "DELETE FROM rollup WHERE tier=? AND series=? AND bucket<?", (tier, sid, rcut)
                )
                # a pack goes with its whole day: the day holding the cut is kept (a day longer at most)
                deleted["rollup"] += self._w_exec(
                    "DELETE FROM rollup_pack WHERE tier=? AND series=? AND day<?", (tier, sid, rcut // DAY)
                )
        deleted["events"] = self._w_exec("DELETE FROM event WHERE t<?", (rcut,))
        oldest = self._w_read("SELECT min(hour) FROM block")[0][0]
        if oldest is not None:
            # snapshots before the oldest kept data describe nothing any more; keep the last one before it
            deleted["snapshots"] = self._w_exec(
                "DELETE FROM snapshot WHERE t<? AND id NOT IN (SELECT max(id) FROM snapshot WHERE t<? GROUP BY node)",
                (oldest, oldest),
            )
        alarms = self._has_alarm_tables()
        if alarms:
            deleted["notices"] = self._prune_notice_history(now, out_of_time)
        target = int(self.max_bytes * 0.85)
        lost: dict[str, int] = {}
        capped = {"delivered notices": 0, "alarm events": 0, "undelivered notices": 0}
        for step in range(100_000):
            if self._used_bytes_w() <= target or (step and out_of_time()):
                break
            if alarms and self._cap_alarm_step(capped):  # a notice never costs a reading
                continue
            rows = self._w_read("SELECT id, n, data FROM block ORDER BY hour LIMIT 20")
            if not rows:
                if self._w_read("SELECT total(n) FROM fresh")[0][0] > 1000:
                    self.seal(now=MAX_TIME, budget=STEP_SECONDS)  # the whole hot tail, so it can go too
                    continue
                b = self._w_read("SELECT min(bucket), max(bucket) FROM rollup WHERE tier=?", (STORED_TIERS[0],))[0]
                d = self._w_read("SELECT min(day), max(day) FROM rollup_pack WHERE tier=?", (STORED_TIERS[0],))[0]
                ends = [x for x in (b[0], None if d[0] is None else d[0] * DAY) if x is not None]
                if not ends:
                    break
                first = min(ends)
                last = max(x for x in (b[1], None if d[1] is None else (d[1] + 1) * DAY) if x is not None)
                cut = first + max(3600, (last - first) // 10)
                deleted["rollup"] += self._w_exec(
                    "DELETE FROM rollup WHERE tier=? AND bucket<?", (STORED_TIERS[0], cut)
                )
                deleted["rollup"] += self._w_exec(
                    "DELETE FROM rollup_pack WHERE tier=? AND day<?",
                    (STORED_TIERS[0], max(-(-cut // DAY), first // DAY + 1)),
                )
                continue
            for name, outbox in list(self._uplinks.items()):
                for _i, _n, data in rows:
                    k = outbox.unacked_among(blocks.decode(data).seq)
                    if k:
                        lost[name] = lost.get(name, 0) + k
            deleted["raw_size"] += self._delete_blocks([(i, n) for i, n, _ in rows])
        deleted["notices_size"] = sum(capped.values())
        if any(v for k, v in deleted.items() if k != "more") or self._freelist_w() > SHRINK_MIN_PAGES:
            if not self._shrink(deadline):
                deleted["more"] = True
        if deleted["raw_size"] or deleted["notices_size"]:
            parts = [f"{v} {k}" for k, v in capped.items() if v]
            if deleted["raw_size"]:
                parts.append(f"{deleted['raw_size']} oldest samples")
            detail = "size cap: deleted " + ", ".join(parts)
            if capped["undelivered notices"]:
                detail += " (the oldest undelivered notices: a notice never costs a reading)"
            if lost:
                detail += "; never to be sent: " + ", ".join(f"{k} {v}" for k, v in sorted(lost.items()))
            log.warning("store over its %d MB cap: %s", self.max_bytes >> 20, detail)
            self.event("retention", None, detail)
            self.write([])
        deleted["uplink_lost"] = lost
        return deleted

    # -- alarm notices under retention ------------------------------------------------------
    def _has_alarm_tables(self) -> bool:
        """False only when a full card kept open_db from creating them (the first alarm record does)."""
        return bool(self._w_read("SELECT 1 FROM sqlite_master WHERE type='table' AND name='notice_sent'"))

    def _prune_notice_history(self, now: float, out_of_time: Callable[[], bool]) -> int:
        """Delivered notices older than the history's age, or beyond its newest N, in bounded steps.

        Undelivered ones (a target without its ``notice_sent`` row) are all kept, and so is the
        newest notice whatever it is: the alarm service numbers new notices on from the highest
        id it loads, and a receiver deduplicating on ``X-Kelvinpi-Notice`` would drop a reused one.
        """
        cut = now - self.notice_history
        below = 1 << 62  # delivered notices with a lower id are past the count
        if self.notice_history_max > 0:
            nth = self._w_read(  # the newest N-th delivered notice
                f"SELECT id FROM notice n WHERE {_DELIVERED} ORDER BY id DESC LIMIT 1 OFFSET ?",
                (self.notice_history_max - 1,),
            )
            below = nth[0][0] if nth else -1
        # deliveries of notices no longer there (the size cap took an undelivered one its lane then sent)
        self._w_exec(
            "DELETE FROM notice_sent WHERE id IN (SELECT DISTINCT id FROM notice_sent"
            " WHERE id NOT IN (SELECT id FROM notice) LIMIT ?)",
            (NOTICE_STEP,),
        )
        gone = 0
        while True:
            ids = self._w_read(
                f"SELECT id FROM notice n WHERE (t < ? OR id < ?) AND {_DELIVERED}"
                " AND id < (SELECT max(id) FROM notice) ORDER BY id LIMIT ?",
                (cut, below, NOTICE_STEP),
            )
            if not ids:
                return gone
            gone += self._delete_notices([i for (i,) in ids])
            if out_of_time():
                return gone

    def _cap_alarm_step(self, capped: dict[str, int]) -> bool:
        """One step of the size cap on the alarm tables, before any reading: the oldest delivered
        notices, else the oldest alarm events, else the oldest undelivered notices. False when
        none is left (the newest notice stays, see ``_prune_notice_history``)."""
        newest = "id < (SELECT max(id) FROM notice)"
        ids = self._w_read(
            f"SELECT id FROM notice n WHERE {_DELIVERED} AND {newest} ORDER BY id LIMIT ?", (NOTICE_STEP,)
        )
        if ids:
            capped["delivered notices"] += self._delete_notices([i for (i,) in ids])
            return True
        n = self._w_exec(
            "DELETE FROM event WHERE id IN"
            " (SELECT id FROM event WHERE substr(kind, 1, 6) = 'alarm_' ORDER BY id LIMIT ?)",
            (NOTICE_STEP,),
        )
        if n:
            capped["alarm events"] += n
            return True
        ids = self._w_read(f"SELECT id FROM notice WHERE {newest} ORDER BY id LIMIT ?", (NOTICE_STEP,))
        if ids:
            capped["undelivered notices"] += self._delete_notices([i for (i,) in ids])
            return True
        return False

    def _delete_notices(self, ids: list[int]) -> int:
        """Notices and their delivery rows, in one short transaction."""
        with self._write_lock:
            t0 = time.monotonic()
            with transaction(self._wconn) as conn:
                conn.executemany("DELETE FROM notice_sent WHERE id=?", [(i,) for i in ids])
                conn.executemany("DELETE FROM notice WHERE id=?", [(i,) for i in ids])
            self.longest_step = max(self.longest_step, time.monotonic() - t0)
        return len(ids)

    def _freelist_w(self) -> int:
        return self._w_read("PRAGMA freelist_count")[0][0]

    def _shrink(self, deadline: float = math.inf) -> bool:
        """Give freed pages back to the card, a few MB per step, then reset the WAL if no reader holds it.

        The checkpoint waits at most 50 ms for readers (an open export): then it is left to a later pass.
        False when the deadline came first (the rest is for the next pass).
        """
        for step in range(100_000):
            if step and time.monotonic() >= deadline:
                return False
            with self._write_lock:
                t0 = time.monotonic()
                conn = self._wconn
                if conn.execute("PRAGMA freelist_count").fetchone()[0] == 0:
                    break
                conn.execute(f"PRAGMA incremental_vacuum({self._vacuum_pages})").fetchall()  # fetchall: every page
                took = time.monotonic() - t0
                self.longest_step = max(self.longest_step, took)
            # Pages moved per step follow the card's speed: 1000 pages took 1.1 s on a busy disk
            # behind a 4 GB file; the step is kept near STEP_SECONDS whatever the disk does.
            self._vacuum_pages = _adapt(self._vacuum_pages, took, 16, 4096)
        with self._write_lock:
            t0 = time.monotonic()
            conn.execute("PRAGMA busy_timeout=50")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute("PRAGMA busy_timeout=30000")
            self.longest_step = max(self.longest_step, time.monotonic() - t0)
        return True

    def _w_read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._write_lock:
            return self._wconn.execute(sql, args).fetchall()

    def _w_exec(self, sql: str, args: tuple) -> int:
        with self._write_lock:
            t0 = time.monotonic()
            before = self._wconn.total_changes
            self._wconn.execute(sql, args)
            self.longest_step = max(self.longest_step, time.monotonic() - t0)
            return self._wconn.total_changes - before

    def _delete_blocks(self, ids: list[tuple[int, int]]) -> int:
        with self._write_lock:
            t0 = time.monotonic()
            with transaction(self._wconn) as conn:
                conn.executemany("DELETE FROM block WHERE id=?", [(i,) for i, _ in ids])
            self.longest_step = max(self.longest_step, time.monotonic() - t0)
        return sum(n for _, n in ids)

    def _used_bytes_w(self) -> int:
        with self._write_lock:
            conn = self._wconn
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]

    def close(self) -> None:
        """Flush what is journaled (if it fails, the journal keeps it for the next start) and close."""
        try:
            self.write([])
            self.flush()
        except (sqlite3.Error, OSError) as exc:
            log.error("store: closing without moving the journal into SQLite (kept for the next start): %s", exc)
        self._journal.close()
        try:
            self._wconn.close()
        except sqlite3.Error:
            pass
        if self._lock_fd >= 0:  # the next writer may come
            os.close(self._lock_fd)
            self._lock_fd = -1
