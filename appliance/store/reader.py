"""Queries over a store file, from any thread or any process: series, samples, rollups, events.

A ``StoreReader`` on its own (``kelvinpi export``, the web in another process) reads SQLite and
the writer's journal file. The writer's ``Store`` holds one whose ``consistent`` is its own: the
recent readings it journaled but has not flushed yet come from its memory instead.

The recent tier: readings newer than the last seal (about the last hour), as small blocks in
the ``fresh`` table plus the journaled ones not flushed yet; older ones are sealed ``block``s.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import blocks
from ..blocks import Row
from ..journal import Frame, decode_all
from .records import unapplied
from .rollup import BLOCK_MS, PACK_DT, STORED_TIERS, TIERS, add, buckets, fold
from .schema import DAY, MAX_TIME, connect

DEFAULT_MAX_POINTS = 5000

T = TypeVar("T")
# Run a query (given the journaled rows not yet in SQLite) in one read snapshot of SQLite.
Consistent = Callable[[sqlite3.Connection, Callable[[list[Row]], Any]], Any]


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


def _hours(lo: int, hi: int) -> tuple[int, int]:
    """The ``hour`` column's bounds (seconds) of blocks that may hold lo <= t < hi (ms)."""
    return lo // BLOCK_MS * (BLOCK_MS // 1000), -(-hi // 1000)


class StoreReader:
    """Queries over a store file: usable from any thread, or any process (read-only)."""

    def __init__(self, path: Path | str, consistent: Consistent | None = None) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._consistent: Consistent = consistent or self._consistent_with_journal
        self._packs_seen = False

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
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
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def oldest_time(self) -> float | None:
        """The time (s) of the oldest sample in SQLite (sealed or recent), None when there is none."""
        conn = self.reader()
        ends = [
            r[0]
            for r in (
                conn.execute("SELECT min(t0) FROM block").fetchone(),
                conn.execute("SELECT min(t0) FROM fresh").fetchone(),
            )
            if r[0] is not None
        ]
        return min(ends) / 1000 if ends else None

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
        """The newest sample of each series in SQLite (by insertion order): what a file reader sees.

        (``Store.latest`` answers from the writer's memory, which also has the journaled readings.)
        """
        return latest_dicts(self.fields(), self.latest_rows())

    def latest_rows(self) -> dict[int, Row]:
        """The newest sample in SQLite of each series (by insertion order), by series id."""
        conn = self.reader()
        out: dict[int, Row] = {}
        for f in self.fields():
            b = (
                conn.execute("SELECT data FROM fresh WHERE series=? ORDER BY seq1 DESC LIMIT 1", (f.id,)).fetchone()
                or conn.execute("SELECT data FROM block WHERE series=? ORDER BY seq1 DESC LIMIT 1", (f.id,)).fetchone()
            )
            if b is not None:
                rows = blocks.decode(b[0]).rows(f.id)
                out[f.id] = max(rows, key=lambda r: r.seq)
        return out

    # -- samples --------------------------------------------------------------------------------
    def _block_rows(self, conn: sqlite3.Connection, sid: int, lo: int, hi: int) -> list[Row]:
        out: list[Row] = []
        for (data,) in conn.execute(
            "SELECT data FROM block WHERE series=? AND hour>=? AND hour<? ORDER BY hour, seq0", (sid, *_hours(lo, hi))
        ).fetchall():
            out.extend(blocks.decode(data).cut(lo, hi).rows(sid))
        return out

    def _consistent_with_journal(self, conn: sqlite3.Connection, query: Callable[[list[Row]], T]) -> T:
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
    def _fresh(conn: sqlite3.Connection, sids: list[int], lo: int, hi: int) -> Iterator[tuple[int, blocks.Columns]]:
        """The recent tier's blocks of ``sids`` in SQLite, decoded and cut to lo <= t < hi."""
        marks = ",".join("?" * len(sids))
        for sid, data in conn.execute(
            f"SELECT series, data FROM fresh WHERE series IN ({marks}) AND hour>=? AND hour<? AND t1>=? AND t0<?",
            (*sids, *_hours(lo, hi), lo, hi),
        ).fetchall():
            yield sid, blocks.decode(data).cut(lo, hi)

    def _recent_rows(
        self, conn: sqlite3.Connection, sids: list[int], lo: int, hi: int, journaled: Sequence[Row] = ()
    ) -> dict[int, list[Row]]:
        """Samples of the recent tier (``fresh`` and the ``journaled`` rows) by series."""
        out: dict[int, list[Row]] = {s: [] for s in sids}
        if not sids:
            return out
        for sid, c in self._fresh(conn, sids, lo, hi):
            out[sid].extend(c.rows(sid))
        for r in journaled:
            if r.sid in out and lo <= r.t < hi:
                out[r.sid].append(r)
        return out

    def _samples(self, conn: sqlite3.Connection, sid: int, lo_ms: int, hi_ms: int, recent: list[Row]) -> list[Row]:
        """Every sample of one series with lo <= t < hi, in (t, seq) order."""
        rows = self._block_rows(conn, sid, lo_ms, hi_ms) + recent
        rows.sort(key=_time_order)
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
        return self._consistent(conn, lambda journaled: self._data(conn, journaled, known, start, end, stride, tier))

    def _data(
        self,
        conn: sqlite3.Connection,
        journaled: list[Row],
        known: list[FieldInfo],
        start: float,
        end: float,
        stride: float,
        tier: int,
    ) -> dict[str, SeriesData]:
        if tier == 0:
            lo, hi = int(round(start * 1000)), int(round(end * 1000))
            rows = self._recent_rows(conn, [f.id for f in known], lo, hi, journaled)
            return {f.name: self._raw(self._samples(conn, f.id, lo, hi, rows[f.id]), stride) for f in known}
        return self._rollup_data(conn, journaled, known, start, end, stride, tier)

    def _rollup_data(
        self,
        conn: sqlite3.Connection,
        journaled: list[Row],
        known: list[FieldInfo],
        start: float,
        end: float,
        stride: float,
        tier: int,
    ) -> dict[str, SeriesData]:
        """Buckets of ``group`` seconds (a multiple of ``tier``): the recent tier's and the journaled
        rows' aggregated now, packs and rollup rows for stored tiers, sealed blocks for the 10 s tier."""
        group = max(tier, int(math.ceil(stride / tier)) * tier)
        g_lo, b_hi = int(math.ceil(start / group) * group), int(math.ceil(end))
        hi_ms = -(-b_hi // tier) * tier * 1000  # the tier bucket holding ceil(end) still counts, as in v1
        recent = self._recent_aggregates(conn, [f.id for f in known], g_lo * 1000, hi_ms, group, journaled)
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
            parts = [buckets([(g, *v) for g, v in recent.get(f.id, {}).items()])]
            if tier in STORED_TIERS:
                if f.id in packs:
                    p = np.frombuffer(b"".join(packs[f.id]), PACK_DT)
                    parts.append(p[(p["b"] >= g_lo) & (p["b"] < b_hi)])
                parts.append(
                    buckets(
                        conn.execute(  # the days not packed yet: grouped in SQL, fewer rows
                            "SELECT (bucket/?)*? AS g, sum(n), sum(sum), min(min), max(max) FROM rollup"
                            " WHERE tier=? AND series=? AND bucket>=? AND bucket<? GROUP BY g",
                            (group, group, tier, f.id, g_lo, b_hi),
                        ).fetchall()
                    )
                )
            else:
                parts.append(buckets(self._block_aggregates(conn, f.id, g_lo * 1000, hi_ms, group)))
            a = fold(parts, group)
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

    def _has_packs(self, conn: sqlite3.Connection) -> bool:
        """Whether the file has the v3 pack table (a read-only reader may open a v2 file)."""
        if not self._packs_seen:
            self._packs_seen = (
                conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='rollup_pack'").fetchone()
                is not None
            )
        return self._packs_seen

    @staticmethod
    def _raw(rows: list[Row], stride: float) -> SeriesData:
        if stride > 0:
            step = max(1, int(stride * 1000))
            kept: list[Row] = []
            slot: int | None = None
            last: int | None = None
            for r in rows:  # the first reading of each slot, then successive ones >= stride apart (sisock)
                s = r.t // step
                if s == slot:
                    continue
                slot = s
                if last is None or r.t - last >= step:
                    kept.append(r)
                    last = r.t
            rows = kept
        return SeriesData([r.t / 1000 for r in rows], [r.value for r in rows], [r.status for r in rows], 0)

    def _recent_aggregates(
        self, conn: sqlite3.Connection, sids: list[int], lo: int, hi: int, group: int, journaled: Sequence[Row] = ()
    ) -> dict[int, dict]:
        out: dict[int, dict] = {}
        if not sids:
            return out
        for sid, c in self._fresh(conn, sids, lo, hi):
            for g, n, s, mn, mx in blocks.summaries(c, group):
                add(out.setdefault(sid, {}), g, n, s, mn, mx)
        want = set(sids)
        for r in journaled:
            v = r.value
            if r.sid in want and v is not None and lo <= r.t < hi:
                add(out.setdefault(r.sid, {}), r.t // 1000 // group * group, 1, v, v, v)
        return out

    def _block_aggregates(self, conn: sqlite3.Connection, sid: int, lo: int, hi: int, group: int) -> list[tuple]:
        agg: dict = {}
        for (data,) in conn.execute(
            "SELECT data FROM block WHERE series=? AND hour>=? AND hour<?", (sid, *_hours(lo, hi))
        ).fetchall():
            for g, n, s, mn, mx in blocks.summaries(blocks.decode(data).cut(lo, hi), group):
                add(agg, g, n, s, mn, mx)
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
                yield from self._iter_series(conn, name, info.id, lo, hi)
        finally:
            conn.close()

    def _iter_series(
        self, conn: sqlite3.Connection, name: str, sid: int, lo: int, hi: int
    ) -> Iterator[tuple[str, float, float | None, int]]:
        def recent_and_hours(journaled: list[Row]) -> tuple[list[Row], list[int]]:
            hours = conn.execute(
                "SELECT DISTINCT hour FROM block WHERE series=? AND hour>=? AND hour<? ORDER BY hour",
                (sid, *_hours(lo, hi)),
            ).fetchall()
            return self._recent_rows(conn, [sid], lo, hi, journaled)[sid], [h * 1000 for (h,) in hours]

        recent, hours = self._consistent(conn, recent_and_hours)
        recent.sort(key=_time_order)
        seen = {r.seq for r in recent}  # an hour sealed after the recent read is in both: keep one
        i = 0
        for h in hours:
            rows = [r for r in self._block_rows(conn, sid, max(lo, h), min(hi, h + BLOCK_MS)) if r.seq not in seen]
            while i < len(recent) and recent[i].t < h + BLOCK_MS:
                rows.append(recent[i])
                i += 1
            rows.sort(key=_time_order)
            for r in rows:
                yield name, r.t / 1000, r.value, r.status
        for r in recent[i:]:
            yield name, r.t / 1000, r.value, r.status

    def by_seq(self, sids: set[int], lo: int, hi: int, limit: int, newest: bool = False) -> list[Row]:
        """Up to ``limit`` samples of ``sids`` with lo < seq <= hi, in sequence order.

        Oldest first, or the newest ``limit`` (still returned oldest first) when ``newest``.
        Reads the recent tier and, for old backlogs, the sealed blocks (store-and-forward).
        """
        if not sids or hi <= lo or limit <= 0:
            return []
        conn = self.reader()
        return self._consistent(conn, lambda journaled: self._by_seq(conn, journaled, sids, lo, hi, limit, newest))

    def _by_seq(
        self,
        conn: sqlite3.Connection,
        journaled: list[Row],
        sids: set[int],
        lo: int,
        hi: int,
        limit: int,
        newest: bool,
    ) -> list[Row]:
        marks = ",".join("?" * len(sids))
        got: list[Row] = [r for r in journaled if r.sid in sids and lo < r.seq <= hi]
        cands = conn.execute(  # ordered without their blobs; a blob is read only if it is needed
            f"SELECT 'block', id, series, seq0, seq1 FROM block WHERE seq1>? AND seq0<=? AND series IN ({marks})"
            f" UNION ALL SELECT 'fresh', id, series, seq0, seq1 FROM fresh WHERE seq1>? AND seq0<=? AND series IN"
            f" ({marks}) ORDER BY {'5 DESC' if newest else '4'}",
            (lo, hi, *sids, lo, hi, *sids),
        ).fetchall()
        for table, bid, sid, seq0, seq1 in cands:
            if len(got) >= limit:
                edge = sorted(r.seq for r in got)
                bound = edge[-limit] if newest else edge[limit - 1]
                if (seq1 < bound) if newest else (seq0 > bound):
                    break
            (data,) = conn.execute(f"SELECT data FROM {table} WHERE id=?", (bid,)).fetchone()
            got.extend(r for r in blocks.decode(data).rows(sid) if lo < r.seq <= hi)
        got.sort()
        return got[-limit:] if newest else got[:limit]

    def count_by_seq(self, sids: set[int], lo: int, hi: int) -> int:
        """How many samples of ``sids`` have lo < seq <= hi (uplink backlogs)."""
        if not sids or hi <= lo:
            return 0
        conn = self.reader()
        return self._consistent(conn, lambda journaled: self._count_by_seq(conn, journaled, sids, lo, hi))

    def _count_by_seq(self, conn: sqlite3.Connection, journaled: list[Row], sids: set[int], lo: int, hi: int) -> int:
        marks = ",".join("?" * len(sids))
        n = sum(1 for r in journaled if r.sid in sids and lo < r.seq <= hi)
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

    def events(
        self, since: float = 0, limit: int = 100, node: str | None = None, kinds: tuple[str, ...] = ()
    ) -> list[dict]:
        """Events in SQLite, newest first; only ``node``'s and only of ``kinds`` when given (the
        filter is in the query, so the newest ``limit`` of those are found however many others came after;
        with a node, through the ``event_node_t`` index, so without walking the other nodes' newer events)."""
        where = "t>=?"
        args: list[object] = [since]
        if node is not None:
            where += " AND node=?"
            args.append(node)
        if kinds:
            where += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        rows = (
            self.reader()
            .execute(f"SELECT t, node, kind, detail FROM event WHERE {where} ORDER BY t DESC LIMIT ?", (*args, limit))
            .fetchall()
        )
        return [dict(t=r[0], node=r[1], kind=r[2], detail=r[3]) for r in rows]


def latest_dicts(fields: list[FieldInfo], rows: dict[int, Row]) -> list[dict]:
    """The JSON API's ``latest`` entries, in series order.

    ``field`` is the series name (node::field) and ``name`` its short field: the reverse of
    ``FieldInfo``/``SeriesKey``, kept for users.
    """
    out = []
    for f in fields:
        r = rows.get(f.id)
        if r is not None:
            out.append(
                dict(
                    field=f.name, node=f.node, name=f.field, units=f.units, t=r.t / 1000, value=r.value, status=r.status
                )
            )
    return out


def _time_order(r: Row) -> tuple[int, int]:
    return r.t, r.seq
