"""The SQLite store: one writer thread, readers on their own connections.

Layout (schema version in ``meta``):

* ``series``   one row per ``node::field`` ever seen (units, timeline, description).
* ``raw``      (series, t_ms) -> value, status. WITHOUT ROWID, so the primary key *is*
               the table. A value the instrument flagged is NULL with its status bits.
* ``rollup``   (tier, series, bucket) -> n, sum, min, max for tiers of 10 s, 1 min,
               10 min and 1 h, maintained as batches arrive, so that a query over
               months reads a few thousand rows per field.
* ``latest``   the newest sample of each series (front panel, /metrics).
* ``snapshot`` instrument configuration (names, curves, scan settings) whenever it changes.
* ``event``    gaps, reconnects, clock steps, dropped samples: what a 3 a.m. reader needs.
* ``cursor``   durable positions of the store-and-forward uplinks.

Commits are batched (about once a second) with ``synchronous=FULL`` in WAL mode, so a
power cut loses at most the batch not yet committed and never corrupts the file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import sqlite_utils

from .samples import FLAG_INVALID, FLAG_TIME_NUDGED, Sample, SampleQueue, SeriesKey

log = logging.getLogger("kelvinpi.store")

SCHEMA_VERSION = 1
TIERS = (10, 60, 600, 3600)  # rollup bucket widths in seconds
DEFAULT_MAX_POINTS = 5000
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


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


MIGRATIONS: list[str] = [
    # version 1
    """
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
    """,
]


def connect(path: Path | str, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def open_db(path: Path | str) -> sqlite_utils.Database:
    """Open (creating or migrating) the store file; WAL, incremental auto-vacuum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists() or path.stat().st_size == 0
    conn = connect(path)
    if fresh:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # must precede the first table
        conn.execute("PRAGMA page_size=4096")
    db = sqlite_utils.Database(conn)
    db.enable_wal()
    conn.execute("PRAGMA synchronous=FULL")
    if not db["meta"].exists():
        db["meta"].create({"key": str, "value": str}, pk="key")
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"{path} has schema version {version}, newer than this kelvinpi ({SCHEMA_VERSION})")
    for v in range(version, SCHEMA_VERSION):
        log.info("migrating %s to schema version %d", path, v + 1)
        conn.executescript("BEGIN;" + MIGRATIONS[v] + "COMMIT;")
        db["meta"].upsert({"key": "schema_version", "value": str(v + 1)}, pk="key")
    return db


class Store:
    """Single-writer SQLite store with sisock-style queries."""

    def __init__(self, path: Path | str, raw_retention_days: float = 90, rollup_retention_days: float = 3650,
                 max_size_mb: float = 4096, commit_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.raw_retention = raw_retention_days * 86400
        self.rollup_retention = rollup_retention_days * 86400
        self.max_bytes = int(max_size_mb * 1024 * 1024)
        self.commit_interval = commit_interval
        self.db = open_db(self.path)
        self._wconn = self.db.conn
        self._series: dict[str, int] = {
            name: sid for sid, name in self._wconn.execute("SELECT id, name FROM series")
        }
        self._local = threading.local()
        self._write_lock = threading.Lock()
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
        self.nudged = 0
        self._last_retention = 0.0
        row = self._wconn.execute("SELECT value FROM meta WHERE key='raw_floor_ms'").fetchone()
        self._raw_floor_ms = int(row[0]) if row else 0

    # -- reader connections --------------------------------------------------
    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
        return conn

    # -- writer ----------------------------------------------------------------
    def start(self, queue: SampleQueue) -> None:
        self.queue = queue
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the writer after committing everything queued."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        if self.queue is not None:
            self.write(self.queue.drain(0))

    def _run(self) -> None:
        assert self.queue is not None
        while not self._stop.is_set():
            started = time.monotonic()
            batch = self.queue.drain(self.commit_interval)
            if batch:
                try:
                    self.write(batch)
                except sqlite3.Error as exc:
                    self.write_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.last_error_t = time.time()
                    log.error("store write failed (%d samples kept in memory, %d queued, %d dropped so far; "
                              "retrying): %s", len(batch), len(self.queue) + len(batch), self.queue.dropped, exc)
                    self.queue.requeue_front(batch)
                    if "full" in str(exc).lower() and time.time() - self._last_retention > 10:
                        self._last_retention = time.time()
                        try:  # free what the retention policy allows before the next attempt
                            log.warning("disk full: running retention now: %s", self.enforce_retention())
                        except sqlite3.Error as rexc:
                            log.error("retention on a full disk failed too: %s", rexc)
                    self._stop.wait(min(5.0, self.commit_interval * 2))
                    continue
            if time.time() - self._last_retention > 60:
                try:
                    self.enforce_retention()
                except sqlite3.Error as exc:
                    log.error("retention failed: %s", exc)
            # commits about once a second: wait out the rest of the interval
            self._stop.wait(max(0.0, self.commit_interval - (time.monotonic() - started)))

    def series_id(self, key: SeriesKey) -> int:
        sid = self._series.get(key.name)
        if sid is None:
            cur = self._wconn.execute(
                "INSERT INTO series(name, node, field, units, timeline, description, created, ocs)"
                " VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET units=excluded.units, ocs=excluded.ocs RETURNING id",
                (key.name, key.node, key.field, key.units, key.timeline, key.description, time.time(), key.ocs),
            )
            sid = cur.fetchone()[0]
            self._series[key.name] = sid
        return sid

    def write(self, samples: list[Sample]) -> int:
        """Write one batch in one transaction; returns the number of samples stored."""
        if not samples:
            return 0
        t0 = time.monotonic()
        with self._write_lock:
            conn = self._wconn
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = self._series
                rows = []
                append = rows.append
                isfinite = math.isfinite
                last: dict[int, Sample] = {}
                for s in samples:
                    sid = ids.get(s.series.name) or self.series_id(s.series)
                    v = s.value
                    if v is None or not isfinite(v):
                        append((sid, int(s.t * 1000 + 0.5), None, s.status | FLAG_INVALID))
                    else:
                        append((sid, int(s.t * 1000 + 0.5), v, s.status))
                    last[sid] = s
                latest = [(sid, s.t, s.value if s.value is not None and isfinite(s.value) else None,
                           s.status | (0 if s.value is not None and isfinite(s.value) else FLAG_INVALID))
                          for sid, s in last.items()]
                rows.sort()  # (series, t) order: b-tree locality, fewer page splits
                conn.execute("SAVEPOINT batch")
                before = conn.total_changes
                conn.executemany("INSERT OR IGNORE INTO raw(series, t, value, status) VALUES (?,?,?,?)", rows)
                if conn.total_changes - before != len(rows):
                    rows = self._insert_nudging(conn, rows)
                conn.execute("RELEASE batch")
                self._rollup(conn, rows)
                conn.executemany(
                    "INSERT INTO latest(series, t, value, status) VALUES (?,?,?,?) ON CONFLICT(series) DO UPDATE"
                    " SET t=excluded.t, value=excluded.value, status=excluded.status",
                    latest,
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLITE_FULL may already have rolled it back
                    conn.execute("ROLLBACK")
                raise
        self.written += len(rows)
        self.commits += 1
        self.last_commit = time.time()
        self.last_commit_seconds = time.monotonic() - t0
        return len(rows)

    def _insert_nudging(self, conn: sqlite3.Connection, rows: list[tuple]) -> list[tuple]:
        """Some (series, t) keys were taken (the clock stepped back, or two readings fell in one ms).

        Undo the batch and insert row by row, moving each colliding sample forward in 1 ms steps
        and flagging it: a clock step never loses a reading to a duplicate key.
        """
        conn.execute("ROLLBACK TO batch")
        out = []
        for sid, t, value, status in rows:
            for _ in range(100_000):
                cur = conn.execute("INSERT OR IGNORE INTO raw(series, t, value, status) VALUES (?,?,?,?)",
                                   (sid, t, value, status))
                if cur.rowcount == 1:
                    break
                t += 1
                status |= FLAG_TIME_NUDGED
            else:
                raise sqlite3.IntegrityError(f"no free time slot near {t} for series {sid}")
            if status & FLAG_TIME_NUDGED:
                self.nudged += 1
            out.append((sid, t, value, status))
        return out

    def _rollup(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        """Recompute the rollup buckets this batch touched, in SQL.

        The finest tier is recomputed from raw rows, each coarser tier from the tier below,
        so a bucket is always the exact aggregate of what is stored, however late or
        out of order its samples arrived (backfill, clock steps), and per-sample Python
        work stays out of the hot path.
        """
        ts = [r[1] for r in rows]
        lo, hi = min(ts), max(ts)  # one span for the batch (may redo a few untouched buckets: idempotent)
        floor_ms = self._raw_floor_ms
        fine = TIERS[0]
        for sid in {r[0] for r in rows}:
            lo_s, hi_s = lo // 1000, hi // 1000
            b_lo = lo_s - lo_s % fine
            if floor_ms and b_lo * 1000 < floor_ms:
                # raw before the retention floor is gone: never rebuild a bucket from part of its rows
                b_lo = -(-floor_ms // (fine * 1000)) * fine
            b_hi = hi_s - hi_s % fine + fine
            if b_lo >= b_hi:
                continue
            conn.execute(
                "INSERT OR REPLACE INTO rollup(tier, series, bucket, n, sum, min, max)"
                " SELECT ?, series, (t/1000)/?*? AS b, count(value), total(value), min(value), max(value)"
                " FROM raw WHERE series=? AND t>=? AND t<? AND value IS NOT NULL GROUP BY b",
                (fine, fine, fine, sid, b_lo * 1000, b_hi * 1000))
            for lower, tier in zip(TIERS, TIERS[1:]):
                t_lo, t_hi = b_lo - b_lo % tier, hi_s - hi_s % tier + tier
                conn.execute(
                    "INSERT OR REPLACE INTO rollup(tier, series, bucket, n, sum, min, max)"
                    " SELECT ?, series, bucket/?*? AS b, sum(n), sum(sum), min(min), max(max)"
                    " FROM rollup WHERE tier=? AND series=? AND bucket>=? AND bucket<? GROUP BY b",
                    (tier, tier, tier, lower, sid, t_lo, t_hi))
                b_lo = t_lo

    # -- events, snapshots -----------------------------------------------------------
    def event(self, kind: str, node: str | None = None, detail: str = "", t: float | None = None) -> None:
        with self._write_lock:
            self._wconn.execute("INSERT INTO event(t, node, kind, detail) VALUES (?,?,?,?)",
                                (time.time() if t is None else t, node, kind, detail))

    def snapshot(self, node: str, config: dict) -> bool:
        """Record an instrument's configuration if it changed; True if a new snapshot was stored."""
        text = json.dumps(config, sort_keys=True, default=str)
        import hashlib

        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        with self._write_lock:
            row = self._wconn.execute("SELECT digest FROM snapshot WHERE node=? ORDER BY t DESC, id DESC LIMIT 1",
                                      (node,)).fetchone()
            if row and row[0] == digest:
                return False
            self._wconn.execute("INSERT INTO snapshot(node, t, digest, config) VALUES (?,?,?,?)",
                                (node, time.time(), digest, text))
        return True

    # -- retention ---------------------------------------------------------------------
    def used_bytes(self) -> int:
        conn = self.reader()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return total

    def enforce_retention(self, now: float | None = None) -> dict:
        """Delete raw data past its age, then the oldest raw (then 10 s rollups) until under the size cap."""
        now = time.time() if now is None else now
        self._last_retention = time.time()
        deleted = {"raw_age": 0, "raw_size": 0, "rollup": 0}
        ids = list(self._series.values())
        with self._write_lock:
            conn = self._wconn
            cutoff_ms = int((now - self.raw_retention) * 1000)
            before = conn.total_changes
            conn.executemany("DELETE FROM raw WHERE series=? AND t<?", [(i, cutoff_ms) for i in ids])
            deleted["raw_age"] = conn.total_changes - before
            if deleted["raw_age"]:
                self._set_floor(conn, cutoff_ms)
            before = conn.total_changes
            conn.execute("DELETE FROM rollup WHERE bucket<?", (int(now - self.rollup_retention),))
            deleted["rollup"] = conn.total_changes - before
            target = int(self.max_bytes * 0.85)
            for _ in range(200):  # bounded: each pass removes the oldest slice
                if self._used_bytes_w(conn) <= target:
                    break
                row = conn.execute("SELECT min(t), max(t) FROM raw").fetchone()
                if row[0] is None:
                    # no raw left: thin the finest rollup tier
                    b = conn.execute("SELECT min(bucket), max(bucket) FROM rollup WHERE tier=?", (TIERS[0],)).fetchone()
                    if b[0] is None:
                        break
                    cut = b[0] + max(3600, (b[1] - b[0]) // 10)
                    conn.execute("DELETE FROM rollup WHERE tier=? AND bucket<?", (TIERS[0], cut))
                    continue
                span = max(60_000, (row[1] - row[0]) // 20)
                cut = row[0] + span
                before = conn.total_changes
                conn.executemany("DELETE FROM raw WHERE series=? AND t<?", [(i, cut) for i in ids])
                deleted["raw_size"] += conn.total_changes - before
                self._set_floor(conn, cut)
                conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free only one page
            conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free only one page
            if any(deleted.values()):
                # In WAL mode the main file only shrinks when the WAL is checkpointed.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if deleted["raw_size"]:
            log.warning("store over its %d MB cap: deleted %d oldest raw samples", self.max_bytes >> 20,
                        deleted["raw_size"])
            self.event("retention", None, f"size cap: deleted {deleted['raw_size']} oldest raw samples")
        return deleted

    def _set_floor(self, conn: sqlite3.Connection, floor_ms: int) -> None:
        """Raw data before ``floor_ms`` has been deleted: rollups there must not be rebuilt from raw."""
        if floor_ms > self._raw_floor_ms:
            self._raw_floor_ms = floor_ms
            conn.execute("INSERT INTO meta(key, value) VALUES ('raw_floor_ms', ?) ON CONFLICT(key) DO UPDATE"
                         " SET value=excluded.value", (str(floor_ms),))

    @staticmethod
    def _used_bytes_w(conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * conn.execute("PRAGMA page_size").fetchone()[0]

    # -- queries (any thread) -------------------------------------------------------------
    def fields(self) -> list[FieldInfo]:
        rows = self.reader().execute(
            "SELECT id, name, node, field, units, timeline, description, ocs FROM series ORDER BY id").fetchall()
        return [FieldInfo(*r) for r in rows]

    def field_map(self) -> dict[str, FieldInfo]:
        return {f.name: f for f in self.fields()}

    def latest(self) -> list[dict]:
        rows = self.reader().execute(
            "SELECT s.name, s.node, s.field, s.units, l.t, l.value, l.status FROM latest l"
            " JOIN series s ON s.id = l.series ORDER BY s.id").fetchall()
        return [dict(field=r[0], node=r[1], name=r[2], units=r[3], t=r[4], value=r[5], status=r[6]) for r in rows]

    def choose_tier(self, stride: float) -> int:
        tier = 0
        for w in TIERS:
            if w <= stride:
                tier = w
        return tier

    def data(self, names: Iterable[str], start: float, end: float, min_stride: float | None = None,
             max_points: int | None = DEFAULT_MAX_POINTS, now: float | None = None) -> dict[str, SeriesData]:
        """Samples of each named series in [start, end), at least ``min_stride`` seconds apart.

        Strides of 10 s or more are answered from the coarsest rollup tier no wider than
        the stride, aggregated to the stride (mean, with min and max), so the answer reads
        a bounded number of rows whatever the range. Unknown names are left out.
        """
        now = time.time() if now is None else now
        start, end = resolve_time(start, now), resolve_time(end, now)
        if min_stride is not None and (not math.isfinite(min_stride) or min_stride < 0):
            raise ValueError(f"min_stride must be a non-negative number of seconds, got {min_stride!r}")
        stride = min(float(min_stride or 0.0), MAX_TIME)  # wider than the time axis: one point per series
        if max_points and end > start and (end - start) / max_points >= 1.0:
            # Without a stride a long range would return millions of rows: cap the answer.
            stride = max(stride, (end - start) / max_points)
        fmap = self.field_map()
        conn = self.reader()
        out: dict[str, SeriesData] = {}
        if end <= start:
            return {n: SeriesData([], [], [], 0) for n in names if n in fmap}
        tier = self.choose_tier(stride)
        for name in names:
            info = fmap.get(name)
            if info is None:
                continue
            if tier == 0:
                out[name] = self._raw(conn, info.id, start, end, stride)
            else:
                out[name] = self._tiered(conn, info.id, tier, start, end, stride)
        return out

    @staticmethod
    def _raw(conn, sid: int, start: float, end: float, stride: float) -> SeriesData:
        lo, hi = int(round(start * 1000)), int(round(end * 1000))
        if stride > 0:
            step = max(1, int(stride * 1000))
            # SQLite returns the other columns of the row holding min(t): the first reading of each slot.
            rows = conn.execute(
                "SELECT min(t), value, status FROM raw WHERE series=? AND t>=? AND t<? GROUP BY t/? ORDER BY 1",
                (sid, lo, hi, step)).fetchall()
            kept, last = [], None
            for r in rows:  # successive samples at least `stride` apart, as sisock defines min_stride
                if last is None or r[0] - last >= step:
                    kept.append(r)
                    last = r[0]
            rows = kept
        else:
            rows = conn.execute("SELECT t, value, status FROM raw WHERE series=? AND t>=? AND t<? ORDER BY t",
                                (sid, lo, hi)).fetchall()
        return SeriesData([r[0] / 1000 for r in rows], [r[1] for r in rows], [r[2] for r in rows], 0)

    @staticmethod
    def _tiered(conn, sid: int, tier: int, start: float, end: float, stride: float) -> SeriesData:
        group = max(tier, int(math.ceil(stride / tier)) * tier)
        rows = conn.execute(
            "SELECT (bucket/?)*? AS g, sum(sum)/sum(n), min(min), max(max) FROM rollup"
            " WHERE tier=? AND series=? AND bucket>=? AND bucket<? GROUP BY g ORDER BY g",
            (group, group, tier, sid, int(math.ceil(start / group) * group), int(math.ceil(end))),
        ).fetchall()
        # Whole groups inside [start, end) only: times stay in range and exactly `group` apart.
        rows = [r for r in rows if start <= r[0] < end]
        return SeriesData([float(r[0]) for r in rows], [r[1] for r in rows], [0] * len(rows), tier,
                          [r[2] for r in rows], [r[3] for r in rows])

    def iter_raw(self, names: list[str], start: float, end: float) -> Iterator[tuple[str, float, float | None, int]]:
        """Every raw sample of the named series in [start, end), time order per series (exports)."""
        fmap = self.field_map()
        conn = connect(self.path, readonly=True)
        try:
            for name in names:
                info = fmap.get(name)
                if info is None:
                    continue
                cur = conn.execute("SELECT t, value, status FROM raw WHERE series=? AND t>=? AND t<? ORDER BY t",
                                   (info.id, int(start * 1000), int(end * 1000)))
                for t, v, st in cur:
                    yield name, t / 1000, v, st
        finally:
            conn.close()

    def snapshots(self, node: str) -> list[tuple[float, dict]]:
        rows = self.reader().execute("SELECT t, config FROM snapshot WHERE node=? ORDER BY t", (node,)).fetchall()
        return [(t, json.loads(c)) for t, c in rows]

    def events(self, since: float = 0, limit: int = 100) -> list[dict]:
        rows = self.reader().execute("SELECT t, node, kind, detail FROM event WHERE t>=? ORDER BY t DESC LIMIT ?",
                                     (since, limit)).fetchall()
        return [dict(t=r[0], node=r[1], kind=r[2], detail=r[3]) for r in rows]

    def close(self) -> None:
        try:
            self._wconn.close()
        except sqlite3.Error:
            pass
