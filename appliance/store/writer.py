"""The single writer: write, flush, replay, the writer thread, and the lock that makes it the only one.

A live batch is one journal frame and one fdatasync (``appliance.journal``) and is readable at
once from memory; about every FLUSH_SECONDS the journaled readings and records move into SQLite
in one transaction (``flush``), into the recent tier (``fresh``) as small blocks. A restart
replays what the journal holds above ``journal_applied``. Only the writer thread calls these
(``write``, ``flush``); the record methods (``event``, ``snapshot``, ``save_cursor``,
``alarm_record``) are for any thread and never block on SQLite nor raise.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sqlite3
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import blocks
from ..blocks import Row
from ..journal import Frame, Journal
from ..naming import SeriesKey
from ..samples import FLAG_INVALID, Sample, SampleQueue
from .records import (
    AlarmRecord,
    Cursor,
    Event,
    FileCursor,
    Record,
    Snapshot,
    from_journal,
    last_cursor_only,
    snapshot_digest,
    storable,
    unapplied,
)
from .rollup import BLOCK_MS, insert_block, insert_rows
from .schema import ALARM_TABLES, script, transaction

log = logging.getLogger("kelvinpi.store")

T = TypeVar("T")

BULK_MIN = 5000  # a batch this large (import, bench) writes its sealed hours straight into blocks
RECORD_QUEUE = 20_000  # events, snapshots, cursor moves waiting for the writer
# Alarm records (states, notices, deliveries) are never dropped for an event: past RECORD_QUEUE the
# oldest other record goes instead, and only past this many alarm records does one go.
ALARM_RECORD_QUEUE = 4 * RECORD_QUEUE
FLUSH_SECONDS = 600.0  # journaled readings move into SQLite about this often (and at every non-alarm event)
FLUSH_ROWS = 20_000  # ...or when this many are waiting
FLUSH_RECORDS = 5000  # ...or when this many records (alarm notices, deliveries) are waiting
JOURNALED_MAX = 2_000_000  # journaled readings held for readers while SQLite cannot take them; then writes refuse
SEAL_DELAY = 600  # an hour is sealed this many seconds after it ends (late readings still land in fresh)
RETENTION_BUDGET = 1.0  # seconds of retention per round of the writer; the rest waits for the next round


class StoreBusy(RuntimeError):
    """Another process is this store's writer: there is one writer per file."""


def claim_writer(path: Path) -> int:
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


def unstorable(s: Sample) -> str | None:
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


def describe(exc: BaseException) -> str:
    """A store error as the front panel and health show it ("disk full" when it is)."""
    if isinstance(exc, OSError) and exc.errno == 28:
        return f"disk full: {exc}"
    return f"{type(exc).__name__}: {exc}"


def seal_cutoff_ms(now: float | None = None) -> int:
    """Hours starting before this (ms) are past sealing: they belong in ``block``, not the recent tier."""
    now = time.time() if now is None else now
    return int((now - SEAL_DELAY) * 1000) // BLOCK_MS * BLOCK_MS


def insert_recent(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """Rows into the recent tier (``fresh``): one small block per series and hour."""
    per: dict[int, list[Row]] = {}
    for r in rows:
        per.setdefault(r.sid, []).append(r)
    for sid, srows in per.items():
        insert_rows(conn, sid, srows, table="fresh")


def write_records(conn: sqlite3.Connection, recs: list[Record]) -> None:
    """Records into SQLite inside the caller's transaction."""
    for rec in recs:
        if isinstance(rec, AlarmRecord):
            script(conn, ALARM_TABLES)  # no-op once they exist (schema v4, unless a full card deferred it)
        rec.write(conn)


class Writer:
    """The writer's half of ``Store``: its state is set up by ``Store.__init__``."""

    path: Path
    commit_interval: float
    _wconn: sqlite3.Connection
    _series: dict[str, int]
    _next_seq: int
    _frame: int
    _write_lock: threading.RLock
    _records: deque[Record]
    _records_lock: threading.Lock
    _snap_digest: dict[str, str]
    _latest: dict[int, Row]  # the newest reading of each series as written (by insertion order)
    _latest_lock: threading.Lock
    # journaled readings and records not yet in SQLite; readers merge them in (seqlock: _gen
    # is odd while a flush commits, so a reader never counts a row twice or misses it)
    _journaled: list[Row]
    _journaled_records: list[Record]
    _journaled_lock: threading.Lock
    _gen: int
    _journal: Journal
    _last_flush: float
    _last_write: float
    _flush_retry_at: float
    flush_failing: str | None
    flushes: int
    _thread: threading.Thread | None
    _stop: threading.Event
    queue: SampleQueue | None
    written: int
    commits: int
    last_commit: float
    last_commit_seconds: float
    write_errors: int
    last_error: str | None
    last_error_t: float
    records_dropped: int
    rejected: int
    sealed_blocks: int
    retention_held: bool
    _retention_more: bool
    _last_retention: float
    _last_seal: float

    # provided by Maintenance and by Store (annotations only: a stub here would shadow them)
    seal: Callable[..., int]
    enforce_retention: Callable[..., dict]
    reader: Callable[[], sqlite3.Connection]

    # -- the journal ---------------------------------------------------------------------
    def _replay(self) -> None:
        """Readings journaled before a power cut or kill, not yet in SQLite: into SQLite now."""
        row = self._wconn.execute("SELECT value FROM meta WHERE key='journal_applied'").fetchone()
        applied = int(row[0]) if row else 0
        frames = self._journal.read()
        self._frame = max([applied] + [f.number for f in frames]) + 1
        todo, rows = unapplied(frames, applied, self._next_seq)
        if todo:
            with self._journaled_lock:
                self._journaled = rows
                self._journaled_records = [from_journal(r) for f in todo for r in f.records]
            log.info(
                "%s: %d readings and %d records from the journal (written before the last stop)",
                self.path,
                len(rows),
                len(self._journaled_records),
            )
            if rows:
                self._next_seq = rows[-1].seq + 1
            try:
                self.flush()
            except sqlite3.Error as exc:  # e.g. a full disk: start anyway; retention and retries free it
                self.write_errors += 1
                self.flush_failing = self.last_error = describe(exc)
                self.last_error_t = time.time()
                log.error(
                    "store: the journal's readings stay in the journal and in memory until SQLite takes them: %s", exc
                )
        elif frames:
            self._journal.clear()

    def flush(self) -> int:
        """Move journaled readings and records into SQLite in one transaction; then empty the journal."""
        with self._write_lock:
            with self._journaled_lock:
                rows, recs = list(self._journaled), list(self._journaled_records)
                if not rows and not recs:
                    return 0
                self._gen += 1
            conn = self._wconn
            try:
                with transaction(conn):
                    insert_recent(conn, rows)
                    write_records(conn, last_cursor_only(recs))
                    conn.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('journal_applied', ?)", (str(self._frame - 1),)
                    )
                    conn.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (str(self._next_seq),)
                    )
            except BaseException:
                with self._journaled_lock:
                    self._gen += 1
                raise
            with self._journaled_lock:
                del self._journaled[: len(rows)]
                del self._journaled_records[: len(recs)]
                self._gen += 1
            self._journal.clear()
            self._last_flush = time.monotonic()
            self.flush_failing = None
            self.flushes += 1
            return len(rows)

    def _maybe_flush(self, force: bool = False) -> None:
        if not self._journaled and not self._journaled_records:
            return
        now = time.monotonic()
        due = (
            force
            or now - self._last_flush >= FLUSH_SECONDS
            or len(self._journaled) >= FLUSH_ROWS
            or len(self._journaled_records) >= FLUSH_RECORDS
        )
        if not due or now < self._flush_retry_at:
            return
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - write() calls this after journaling: never let the batch look unwritten
            self._flush_retry_at = now + 5.0
            self.write_errors += 1
            self.flush_failing = self.last_error = describe(exc)
            self.last_error_t = time.time()
            log.error(
                "store: moving %d journaled readings into SQLite failed (kept in the journal and in"
                " memory; retrying): %s",
                len(self._journaled),
                exc,
            )

    def _consistent(self, conn: sqlite3.Connection, query: Callable[[list[Row]], T]) -> T:
        """Run ``query(journaled rows)`` in one read snapshot: each row is seen once, in SQLite or in memory.

        A flush makes ``_gen`` odd while it commits; a query that overlapped one runs again.
        """
        for _ in range(1000):
            with self._journaled_lock:
                gen, journaled = self._gen, list(self._journaled)
            if gen % 2 == 0:
                conn.execute("BEGIN")
                try:
                    out = query(journaled)
                finally:
                    conn.execute("COMMIT")
                with self._journaled_lock:
                    if self._gen == gen:
                        return out
            time.sleep(0.001)
        raise sqlite3.OperationalError("store: a flush did not finish within a second")

    def _pending(self, kind: type[Any]) -> list[Any]:
        """Records of ``kind`` on their way to SQLite: journaled, then still queued (oldest first)."""
        with self._records_lock, self._journaled_lock:
            return [r for r in list(self._journaled_records) + list(self._records) if isinstance(r, kind)]

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
                len(self._journaled),
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
                self.last_error, self.last_error_t = describe(exc), time.time()
                log.error("sealing or retention failed (retrying later): %s", exc)
                self._last_seal = self._last_retention = time.time()
                self._retention_more = False  # a failing pass waits for the next minute, not the next round
            # commits about once a commit interval: wait out the rest of it
            self._stop.wait(max(0.0, self.commit_interval - (time.monotonic() - started)))

    def _write_failed(self, exc: Exception, batch: list[Sample]) -> None:
        assert self.queue is not None
        self.write_errors += 1
        self.last_error = describe(exc)
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
    def _record(self, rec: Record) -> None:
        rec = storable(rec)
        with self._records_lock:
            if len(self._records) >= RECORD_QUEUE:
                self._drop_one_locked()
            self._records.append(rec)

    def _drop_one_locked(self) -> None:
        """The queue is full (the store has not written for a while): drop the oldest record that
        is not an alarm record, so a storm of events on a full card cannot take the notice that
        wakes a person, its state or the record that it was delivered (an alarm raised and cleared
        during a full disk was lost without trace after a restart). Scans only when full."""
        for i, old in enumerate(self._records):
            if not isinstance(old, AlarmRecord):
                del self._records[i]
                self.records_dropped += 1
                return
        if len(self._records) >= ALARM_RECORD_QUEUE:  # nothing but alarm records, and far too many
            self._records.popleft()
            self.records_dropped += 1

    def event(self, kind: str, node: str | None = None, detail: str = "", t: float | None = None) -> None:
        self._record(Event(time.time() if t is None else t, node, kind, detail))

    def snapshot(self, node: str, config: dict) -> bool:
        """Queue an instrument's configuration if it changed; True if it is new."""
        digest, text = snapshot_digest(config)
        with self._records_lock:
            if self._snap_digest.get(node) == digest:
                return False
            self._snap_digest[node] = digest
        self._record(Snapshot(node, time.time(), digest, text))
        return True

    def save_cursor(self, name: str, position: int, acked: list[list[int]]) -> None:
        self._record(Cursor(name, position, json.dumps(acked), time.time()))

    def save_file_cursor(
        self, follower: str, path: str, inode: int, offset: int, last_t: float | None, head: str = ""
    ) -> None:
        """Queue a log follower's position in one file (inode -1 forgets the file)."""
        self._record(FileCursor(follower, path, inode, offset, last_t, time.time(), head))

    def load_file_cursors(self, follower: str) -> dict[str, tuple[int, int, float | None, str]]:
        """A follower's positions, ``path -> (inode, offset, last_t, head)``: SQLite's, then the moves on their way."""
        rows = (
            self.reader()
            .execute("SELECT path, inode, offset, last_t, head FROM file_cursor WHERE follower=?", (follower,))
            .fetchall()
        )
        out = {p: (i, o, t, h) for p, i, o, t, h in rows}
        for rec in self._pending(FileCursor):
            if rec.follower == follower:
                if rec.inode < 0:
                    out.pop(rec.path, None)
                else:
                    out[rec.path] = (rec.inode, rec.offset, rec.last_t, rec.head)
        return out

    def alarm_record(self, op: str, *args: Any) -> None:
        """Queue an alarm record: ("state", name, json, t), ("notice", id, t, alarm, kind, body, targets_json)
        or ("sent", id, target, t). Written by the writer thread like every record."""
        self._record(AlarmRecord(op, args))

    def records_queued(self) -> int:
        return len(self._records)

    def next_seq(self) -> int:
        return self._next_seq

    def load_cursor(self, name: str) -> tuple[int, list[list[int]]] | None:
        for rec in reversed(self._pending(Cursor)):  # a move not yet in SQLite is the newest
            if rec.name == name:
                return rec.position, rec.ranges()
        row = self.reader().execute("SELECT position, acked FROM outbox WHERE name=?", (name,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def _taken(self, recs: list[Record], journaled: bool) -> None:
        """Records now journaled (or in SQLite): off the queue, in one step with their new place."""
        ids = {id(r) for r in recs}
        with self._records_lock, self._journaled_lock:
            while self._records and id(self._records[0]) in ids:
                self._records.popleft()
            if journaled:
                self._journaled_records.extend(recs)

    # -- samples ---------------------------------------------------------------------------
    def _series_id(self, conn: sqlite3.Connection, key: SeriesKey, added: list[str]) -> int:
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
            why = [unstorable(s) for s in samples]
            bad = [(s, w) for s, w in zip(samples, why, strict=False) if w]
            if not bad:
                raise
            self.rejected += len(bad)
            s, first = bad[0]
            detail = f"{len(bad)} reading(s) the store cannot hold, dropped; the first: {s.series.name}: {first}"
            log.error("store: %s", detail)
            self.event("rejected", s.series.node, detail)
            return self._write([s for s, w in zip(samples, why, strict=False) if not w])

    def _write(self, samples: list[Sample]) -> int:
        """``write`` without the check of its readings.

        A live batch is one journal frame and one fdatasync, and is readable at once; it moves
        into SQLite with the next flush (about ten minutes, or at once when an event or snapshot
        is among the records; alarm records and alarm events wait, see ``Event.flushes_now``). A
        bulk batch (import, bench) goes straight into SQLite, its old hours straight into blocks. On
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
            rows: list[Row]
            if len(samples) >= BULK_MIN:
                self.flush()  # sequence order: whatever is journaled goes first
                rows, seq = [], self._write_bulk(samples, recs)
                self._taken(recs, journaled=False)
            else:
                rows, seq = self._number(samples)
                if len(self._journaled) > JOURNALED_MAX:
                    raise sqlite3.OperationalError(
                        f"store cannot take more: {len(self._journaled)} readings journaled but not in SQLite"
                        f" ({self.flush_failing})"
                    )
                self._journal.append(Frame(self._frame, rows, [r.journal() for r in recs]))
                self._frame += 1
                with self._journaled_lock:
                    self._journaled.extend(rows)
                self._taken(recs, journaled=True)
            self._next_seq = seq
            self._maybe_flush(force=any(r.flushes_now for r in recs))
        with self._latest_lock:
            for r in rows:
                self._latest[r.sid] = r
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
        conn, added = self._wconn, list[str]()
        try:
            with transaction(conn):
                for key in new.values():
                    self._series_id(conn, key, added)
        except BaseException:
            for name in added:
                self._series.pop(name, None)
            raise

    def _number(self, samples: list[Sample]) -> tuple[list[Row], int]:
        """Rows numbered from ``next_seq``; a flagged or non-finite value is NULL with FLAG_INVALID."""
        rows: list[Row] = []
        append = rows.append
        isfinite = math.isfinite
        ids = self._series
        seq = self._next_seq
        make = Row._make
        for s in samples:
            v = s.value
            if v is None or not isfinite(v):
                append(make((seq, ids[s.series.name], int(s.t * 1000 + 0.5), None, s.status | FLAG_INVALID)))
            else:
                append(make((seq, ids[s.series.name], int(s.t * 1000 + 0.5), v, s.status)))
            seq += 1
        return rows, seq

    def _write_bulk(self, samples: list[Sample], recs: list[Record]) -> int:
        """Import and backfill, in numpy: one block per series and hour, straight into ``block``
        for hours already past sealing (with their rollups), else into the recent tier. Returns the
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
        sid, t, val, status, null, seq, hour = (
            sid[order],
            t[order],
            val[order],
            status[order],
            null[order],
            seq[order],
            hour[order],
        )
        edges = np.flatnonzero(np.r_[True, (sid[1:] != sid[:-1]) | (hour[1:] != hour[:-1]), True])
        cutoff = seal_cutoff_ms()
        conn = self._wconn
        with transaction(conn):
            for a, b in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=False):
                c = blocks.Columns(t[a:b], seq[a:b], status[a:b], val[a:b], null[a:b])
                sealed = int(hour[a]) < cutoff
                insert_block(conn, int(sid[a]), int(hour[a]), c, table="block" if sealed else "fresh")
                self.sealed_blocks += sealed
            write_records(conn, recs)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (str(self._next_seq + n),))
        by_seq = np.argsort(seq)  # the newest reading of each series, in insertion order
        series, back = np.unique(sid[by_seq][::-1], return_index=True)
        with self._latest_lock:
            for k, i in zip(series.tolist(), by_seq[n - 1 - back].tolist(), strict=False):
                self._latest[k] = Row(int(seq[i]), k, int(t[i]), None if null[i] else float(val[i]), int(status[i]))
        self.written += n
        return self._next_seq + n
