"""Maintenance by the writer thread: sealing the recent tier into blocks, packing closed days'
rollups, and retention in its passes (age, rollup age, alarm history, size cap), each in bounded
steps that hold the write lock about STEP_SECONDS, so commits go on between them.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import blocks
from ..blocks import Row
from ..samples import FLAG_CLOCK_UNSYNCED
from .rollup import PACK_DT, STORED_TIERS, buckets, fold, insert_block, packed
from .schema import DAY, MAX_TIME, transaction
from .writer import SEAL_DELAY, seal_cutoff_ms

log = logging.getLogger("kelvinpi.store")

SEAL_SERIES = 32  # series sealed per transaction (one hour each)
RECENT_MAX = 400_000  # past this many recent samples (a clock stepped back a day) the oldest hour is sealed anyway
NOTICE_HISTORY_DAYS = 30.0  # delivered notices are kept this long...
NOTICE_HISTORY_MAX = 10_000  # ...and at most this many (the newest); undelivered ones are all kept
NOTICE_STEP = 500  # notices deleted per retention step (one short transaction)
STEP_SECONDS = 0.1  # longest a retention or sealing step holds the write lock (about)
SHRINK_MIN_PAGES = 1000  # free pages (4 MB) worth giving back to the card even when nothing was deleted
PACK_AFTER = SEAL_DELAY + 2 * 3600  # a day's rollup rows are folded into packs this long after it ends

# A notice (``notice n``) every one of whose targets has its delivery row.
_DELIVERED = "(SELECT count(*) FROM notice_sent s WHERE s.id = n.id) >= json_array_length(n.targets)"


def adapt(size: int, took: float, lo: int, hi: int) -> int:
    """The next step's size, so that a step holds the write lock for about STEP_SECONDS on this disk."""
    if took > STEP_SECONDS:
        return max(lo, size // 2)
    if took < STEP_SECONDS / 3:
        return min(hi, size * 2)
    return size


@dataclass
class RetentionPass:
    """One ``enforce_retention`` call: what it deleted, and its deadline."""

    deadline: float
    deleted: dict = field(
        default_factory=lambda: {
            "raw_age": 0,
            "raw_size": 0,
            "rollup": 0,
            "events": 0,
            "snapshots": 0,
            "notices": 0,  # delivered notices past their history (age or count)
            "notices_size": 0,  # notices (and alarm events) the size cap took, before any reading
            "more": False,
        }
    )
    capped: dict = field(default_factory=lambda: {"delivered notices": 0, "alarm events": 0, "undelivered notices": 0})
    lost: dict = field(default_factory=dict)  # uplink -> samples the size cap took before it got them

    def out_of_time(self) -> bool:
        if time.monotonic() >= self.deadline:
            self.deleted["more"] = True
        return self.deleted["more"]


class Maintenance:
    """Sealing, packing and retention: the maintenance half of ``Store`` (state set up by ``Store``)."""

    _wconn: sqlite3.Connection
    _write_lock: threading.RLock
    _series: dict[str, int]
    _uplinks: dict[str, object]
    _next_seq: int
    _journaled: list[Row]
    _journaled_lock: threading.Lock
    raw_retention: float
    rollup_retention: float
    max_bytes: int
    notice_history: float
    notice_history_max: int
    sealed_blocks: int
    longest_step: float
    _last_seal: float
    _last_retention: float
    _vacuum_pages: int
    _delete_batch: int
    flush: Callable[[], int]
    write: Callable[..., int]
    event: Callable[..., None]

    # -- sealing and packing -----------------------------------------------------------
    def seal(self, now: float | None = None, budget: float = 0.5) -> int:
        """Move whole hours that ended over SEAL_DELAY ago from the recent tier into blocks.

        One hour (every series) per transaction, oldest first, for at most ``budget`` seconds
        per call; then closed days' rollups are packed with what is left of the budget.
        """
        self._last_seal = time.time()
        cutoff = seal_cutoff_ms(now)
        with self._journaled_lock:
            old = any(r.t < cutoff for r in self._journaled)
        if old:
            self.flush()
        sealed = 0
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            with self._write_lock:
                conn = self._wconn
                hour, recent = conn.execute("SELECT min(hour), total(n) FROM fresh").fetchone()
                if hour is None or ((hour + 3600) * 1000 > cutoff and recent <= RECENT_MAX):
                    break
                t0 = time.monotonic()
                sealed += self._seal_hour(conn, hour)
                self.longest_step = max(self.longest_step, time.monotonic() - t0)
        self.sealed_blocks += sealed
        self.pack_rollups(now, max(0.0, deadline - time.monotonic()))
        return sealed

    @staticmethod
    def _seal_hour(conn: sqlite3.Connection, hour: int) -> int:
        """One hour of up to SEAL_SERIES series from ``fresh`` into ``block``, in one transaction.

        One hour of every series per transaction: the recent tier's pages hold every series'
        minute side by side, so sealing series by series rewrote each page once per series
        (28.6 B/sample of wear for 24 series, against 8.9 this way).
        """
        with transaction(conn):
            sids = [
                sid
                for (sid,) in conn.execute(
                    "SELECT DISTINCT series FROM fresh WHERE hour=? ORDER BY series LIMIT ?", (hour, SEAL_SERIES)
                )
            ]
            marks = ",".join("?" * len(sids))
            got: dict[int, list[bytes]] = {}
            for sid, data in conn.execute(
                f"SELECT series, data FROM fresh WHERE hour=? AND series IN ({marks}) ORDER BY id", (hour, *sids)
            ):
                got.setdefault(sid, []).append(data)
            for sid, parts in got.items():
                insert_block(conn, sid, hour * 1000, blocks.concat([blocks.decode(d) for d in parts]))
            conn.execute(f"DELETE FROM fresh WHERE hour=? AND series IN ({marks})", (hour, *sids))
        return len(got)

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
                        self._pack_day(conn, tier, sid, b // DAY)
                        written += 1
                        self.longest_step = max(self.longest_step, time.monotonic() - t0)
                if time.monotonic() >= deadline:
                    return written
        return written

    @staticmethod
    def _pack_day(conn: sqlite3.Connection, tier: int, sid: int, day: int) -> None:
        """One day's rollup rows of one tier and series merged into its pack, in one transaction."""
        with transaction(conn):
            lo, hi = day * DAY, (day + 1) * DAY
            rows = conn.execute(
                "SELECT bucket, n, sum, min, max FROM rollup WHERE tier=? AND series=? AND bucket>=? AND bucket<?",
                (tier, sid, lo, hi),
            ).fetchall()
            old = conn.execute(
                "SELECT data FROM rollup_pack WHERE tier=? AND series=? AND day=?", (tier, sid, day)
            ).fetchone()
            parts = [np.frombuffer(old[0], PACK_DT)] if old else []
            conn.execute(
                "INSERT OR REPLACE INTO rollup_pack(tier, series, day, data) VALUES (?,?,?,?)",
                (tier, sid, day, packed(fold(parts + [buckets(rows)]))),
            )
            conn.execute("DELETE FROM rollup WHERE tier=? AND series=? AND bucket>=? AND bucket<?", (tier, sid, lo, hi))

    # -- retention ---------------------------------------------------------------------
    def _needed_from(self) -> int:
        """The lowest sequence number some running uplink has not acknowledged."""
        marks = [o.first_unacked() for o in list(self._uplinks.values())]  # type: ignore[attr-defined]
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
        p = RetentionPass(math.inf if budget is None else time.monotonic() + budget)
        self._age_pass(p, now)
        self._rollup_age_pass(p, now)
        alarms = self._has_alarm_tables()
        if alarms:
            p.deleted["notices"] = self._prune_notice_history(now, p.out_of_time)
        self._size_cap_pass(p, alarms)
        self._give_back(p)
        if p.deleted["raw_size"] or p.deleted["notices_size"]:
            self._report_size_cap(p)
        p.deleted["uplink_lost"] = p.lost
        return p.deleted

    def _give_back(self, p: RetentionPass) -> None:
        """Freed pages back to the card when this pass deleted anything (or many are free anyway)."""
        deleted = any(v for k, v in p.deleted.items() if k != "more")
        if (deleted or self._freelist_w() > SHRINK_MIN_PAGES) and not self._shrink(p.deadline):
            p.deleted["more"] = True

    def _age_pass(self, p: RetentionPass, now: float) -> None:
        """Blocks past ``raw_retention_days`` no uplink needs and whose clock was synchronised."""
        needed = self._needed_from()
        cutoff_s = int(now - self.raw_retention)
        while True:  # the kept ones (needed, unsynchronised) are filtered in SQL: they never block the rest
            ids = self._w_read(
                "SELECT id, n FROM block WHERE hour + 3600 <= ? AND seq1 < ? AND flags & ? = 0 ORDER BY hour LIMIT ?",
                (cutoff_s, needed, FLAG_CLOCK_UNSYNCED, self._delete_batch),
            )
            if not ids:
                return
            t0 = time.monotonic()
            p.deleted["raw_age"] += self._delete_blocks(ids)
            # blocks per step follow the card too: 200 took 982 ms on a busy disk behind a 4 GB file
            self._delete_batch = adapt(self._delete_batch, time.monotonic() - t0, 1, 200)
            if p.out_of_time():  # after a step: every pass makes progress, even with no time at all
                return

    def _rollup_age_pass(self, p: RetentionPass, now: float) -> None:
        """Rollups and events past ``rollup_retention_days``; snapshots older than the oldest block."""
        rcut = int(now - self.rollup_retention)
        for tier in STORED_TIERS:
            for sid in list(self._series.values()):
                p.deleted["rollup"] += self._w_exec(
                    "DELETE FROM rollup WHERE tier=? AND series=? AND bucket<?", (tier, sid, rcut)
                )
                # a pack goes with its whole day: the day holding the cut is kept (a day longer at most)
                p.deleted["rollup"] += self._w_exec(
                    "DELETE FROM rollup_pack WHERE tier=? AND series=? AND day<?", (tier, sid, rcut // DAY)
                )
        p.deleted["events"] = self._w_exec("DELETE FROM event WHERE t<?", (rcut,))
        oldest = self._w_read("SELECT min(hour) FROM block")[0][0]
        if oldest is not None:
            # snapshots before the oldest kept data describe nothing any more; keep the last one before it
            p.deleted["snapshots"] = self._w_exec(
                "DELETE FROM snapshot WHERE t<? AND id NOT IN (SELECT max(id) FROM snapshot WHERE t<? GROUP BY node)",
                (oldest, oldest),
            )

    def _size_cap_pass(self, p: RetentionPass, alarms: bool) -> None:
        """Over 85 % of the cap: alarm history first, then the oldest blocks, then the oldest rollups."""
        target = int(self.max_bytes * 0.85)
        for step in range(100_000):
            if self._used_bytes_w() <= target or (step and p.out_of_time()):
                break
            if alarms and self._cap_alarm_step(p.capped):  # a notice never costs a reading
                continue
            rows = self._w_read("SELECT id, n, data FROM block ORDER BY hour LIMIT 20")
            if rows:
                self._count_lost(p.lost, rows)
                p.deleted["raw_size"] += self._delete_blocks([(i, n) for i, n, _ in rows])
            elif self._w_read("SELECT total(n) FROM fresh")[0][0] > 1000:
                self.seal(now=MAX_TIME, budget=STEP_SECONDS)  # the whole recent tier, so it can go too
            elif not self._cap_rollups_step(p):
                break
        p.deleted["notices_size"] = sum(p.capped.values())

    def _count_lost(self, lost: dict[str, int], rows: list[tuple]) -> None:
        """Samples in these blocks each uplink has not acknowledged: the size cap takes them anyway."""
        for name, outbox in list(self._uplinks.items()):
            for _i, _n, data in rows:
                k = outbox.unacked_among(blocks.decode(data).seq)  # type: ignore[attr-defined]
                if k:
                    lost[name] = lost.get(name, 0) + k

    def _cap_rollups_step(self, p: RetentionPass) -> bool:
        """No block left: the oldest tenth (at least an hour) of the finest stored rollup tier goes.
        False when there is none."""
        tier = STORED_TIERS[0]
        b = self._w_read("SELECT min(bucket), max(bucket) FROM rollup WHERE tier=?", (tier,))[0]
        d = self._w_read("SELECT min(day), max(day) FROM rollup_pack WHERE tier=?", (tier,))[0]
        ends = [x for x in (b[0], None if d[0] is None else d[0] * DAY) if x is not None]
        if not ends:
            return False
        first = min(ends)
        last = max(x for x in (b[1], None if d[1] is None else (d[1] + 1) * DAY) if x is not None)
        cut = first + max(3600, (last - first) // 10)
        p.deleted["rollup"] += self._w_exec("DELETE FROM rollup WHERE tier=? AND bucket<?", (tier, cut))
        p.deleted["rollup"] += self._w_exec(
            "DELETE FROM rollup_pack WHERE tier=? AND day<?", (tier, max(-(-cut // DAY), first // DAY + 1))
        )
        return True

    def _report_size_cap(self, p: RetentionPass) -> None:
        """The event (and log line) saying what the size cap took and what no uplink will get."""
        parts = [f"{v} {k}" for k, v in p.capped.items() if v]
        if p.deleted["raw_size"]:
            parts.append(f"{p.deleted['raw_size']} oldest samples")
        detail = "size cap: deleted " + ", ".join(parts)
        if p.capped["undelivered notices"]:
            detail += " (the oldest undelivered notices: a notice never costs a reading)"
        if p.lost:
            detail += "; never to be sent: " + ", ".join(f"{k} {v}" for k, v in sorted(p.lost.items()))
        log.warning("store over its %d MB cap: %s", self.max_bytes >> 20, detail)
        self.event("retention", None, detail)
        self.write([])

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
            self._vacuum_pages = adapt(self._vacuum_pages, took, 16, 4096)
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
