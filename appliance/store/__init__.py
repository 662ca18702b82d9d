"""The SQLite store: one writer thread appends, sealed blocks keep history, readers anywhere.

Layout (schema version in ``meta``, migrations in ``schema``):

* ``series``   one row per ``node::field`` ever seen (units, timeline, description).
* ``fresh``    the recent tier in SQLite: small compressed blocks of each series (the same codec),
               one per series per flush (about ten minutes), in a rowid table with no other index,
               so a flush appends a page or two. Readers scan it whole: it holds about an hour.
* (lock)       ``<store>-lock``: held by the one writer process (``writer.claim_writer``).
* (journal)    ``<store>-log`` beside the file: each commit's readings, fsynced, until the next
               flush moves them into ``fresh`` (``appliance.journal``). A commit is then one
               small append and one fdatasync, the floor an fsynced append-only log sets.
               Journaled rows and ``fresh`` together are the recent tier readers merge in.
* ``block``    older samples, one block per series per hour, compressed losslessly
               (``appliance.blocks``: times, sequence numbers, status bits, values, NULLs).
* ``rollup``   (tier, series, bucket) -> n, sum, min, max for 1 min, 10 min and 1 h buckets,
               added when a block is sealed (never rewritten per commit). The 10 s tier and
               the recent tier are aggregated when asked: they are a few blocks at most.
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
               neither loses nor repeats one. Written as ``AlarmRecord``s, batched like
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

Modules: ``schema`` (tables, migrations), ``records`` (typed records, the ``Row`` shape),
``rollup`` (bucket arithmetic, blocks with their rollups), ``reader`` (``StoreReader``: queries),
``writer`` (write, flush, replay, the writer thread and lock), ``maintenance`` (seal, pack,
retention). ``Store`` here puts a writer, its maintenance and a reader together.

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

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..blocks import Row
from ..journal import Journal
from .maintenance import (
    NOTICE_HISTORY_DAYS,
    NOTICE_HISTORY_MAX,
    NOTICE_STEP,
    PACK_AFTER,
    RECENT_MAX,
    SEAL_SERIES,
    SHRINK_MIN_PAGES,
    STEP_SECONDS,
    Maintenance,
)
from .reader import DEFAULT_MAX_POINTS, FieldInfo, SeriesData, StoreReader, latest_dicts, resolve_time
from .records import AlarmRecord, Cursor, Event, Record, Snapshot, merge_ranges, snapshot_digest, unapplied
from .rollup import BLOCK_MS, PACK_DT, STORED_TIERS, TIERS
from .schema import (
    DAY,
    MAX_TIME,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    StoreTooNew,
    connect,
    open_db,
    schema_compat,
    schema_version,
    transaction,
)
from .stats import StoreStats
from .writer import (
    BULK_MIN,
    FLUSH_RECORDS,
    FLUSH_ROWS,
    FLUSH_SECONDS,
    JOURNALED_MAX,
    RECORD_QUEUE,
    RETENTION_BUDGET,
    SEAL_DELAY,
    StoreBusy,
    Writer,
    claim_writer,
)

__all__ = [
    "BLOCK_MS",
    "BULK_MIN",
    "DAY",
    "DEFAULT_MAX_POINTS",
    "FLUSH_RECORDS",
    "FLUSH_ROWS",
    "FLUSH_SECONDS",
    "JOURNALED_MAX",
    "MAX_TIME",
    "MIGRATIONS",
    "NOTICE_HISTORY_DAYS",
    "NOTICE_HISTORY_MAX",
    "NOTICE_STEP",
    "PACK_AFTER",
    "PACK_DT",
    "RECENT_MAX",
    "RECORD_QUEUE",
    "RETENTION_BUDGET",
    "SCHEMA_VERSION",
    "SEAL_DELAY",
    "SEAL_SERIES",
    "SHRINK_MIN_PAGES",
    "STEP_SECONDS",
    "STORED_TIERS",
    "TIERS",
    "AlarmRecord",
    "Cursor",
    "Event",
    "FieldInfo",
    "Migration",
    "Record",
    "Row",
    "SeriesData",
    "Snapshot",
    "Store",
    "StoreBusy",
    "StoreReader",
    "StoreStats",
    "StoreTooNew",
    "connect",
    "merge_ranges",
    "open_db",
    "resolve_time",
    "snapshot_digest",
    "transaction",
    "unapplied",
]

log = logging.getLogger("kelvinpi.store")


class Store(Writer, Maintenance):
    """The single writer (pollers' samples and everyone's records, committed in batches), its
    maintenance, and a reader over the same file that sees the writer's journaled readings too.

    The query methods (``data``, ``by_seq``, ``fields``, ...) are the reader's (``self.stored``),
    named here one by one; ``latest`` and ``events`` are the writer's own: they also answer from
    memory (the newest reading of each series as written; events not flushed yet).
    """

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
        self.path = Path(path)
        self.stored = StoreReader(self.path, consistent=self._consistent)
        self.notice_history = notice_history_days * 86400
        self.notice_history_max = notice_history_max
        self.raw_retention = raw_retention_days * 86400
        self.rollup_retention = rollup_retention_days * 86400
        self.max_bytes = int(max_size_mb * 1024 * 1024)
        self.commit_interval = commit_interval
        self._lock_fd = claim_writer(self.path)
        try:
            self._wconn = open_db(self.path, progress)
        except BaseException:
            os.close(self._lock_fd)
            raise
        w = self._wconn
        self._series = {name: sid for sid, name in w.execute("SELECT id, name FROM series")}
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
        self._records = deque()
        self._records_lock = threading.Lock()
        self._snap_digest = {}
        self._latest = {}
        self._latest_lock = threading.Lock()
        self._journaled = []
        self._journaled_records = []
        self._journaled_lock = threading.Lock()
        self._gen = 0
        self._last_flush = self._last_write = time.monotonic()
        self._flush_retry_at = 0.0
        self.flush_failing = None
        self.flushes = 0
        self._uplinks: dict[str, object] = {}  # outboxes whose cursors retention must respect
        self._thread = None
        self._stop = threading.Event()
        self.queue = None
        # health, read by web and metrics
        self.written = 0
        self.commits = 0
        self.last_commit = 0.0
        self.last_commit_seconds = 0.0
        self.write_errors = 0
        self.last_error = None
        self.last_error_t = 0.0
        self.records_dropped = 0
        self.rejected = 0  # readings no store could hold (see write), dropped with an event
        self.sealed_blocks = 0
        self._journal = Journal(f"{self.path}-log")
        self._replay()
        for node, config in w.execute(
            "SELECT node, config FROM snapshot s WHERE id = (SELECT max(id) FROM snapshot WHERE node = s.node)"
        ):
            self._snap_digest[node] = snapshot_digest(json.loads(config))[0]
        for rec in self._journaled_records:  # a replayed snapshot SQLite could not take yet
            if isinstance(rec, Snapshot):
                self._snap_digest[rec.node] = rec.digest
        self._latest = self.stored.latest_rows()
        self.longest_step = 0.0  # seconds: the longest write-lock hold of a sealing or retention step
        self._last_retention = 0.0
        self._retention_more = False  # a budgeted retention pass left work for the next round
        # True while the service starts: the writer's first round came before the uplinks registered
        # their cursors, and age retention then deleted a stalled uplink's whole backlog
        self.retention_held = False
        self._vacuum_pages = 256  # pages given back per vacuum step (adapted to the disk, see _shrink)
        self._delete_batch = 50  # blocks deleted per age-retention step (adapted likewise)
        self._last_seal = 0.0
        version = schema_version(w)
        if version > SCHEMA_VERSION:  # opened by its compat (schema.migrate): a rollback after an update
            self.event(
                "store_newer_schema",
                None,
                f"schema {version} (compat {schema_compat(w)}) opened by this release of schema {SCHEMA_VERSION}",
            )

    # -- the reader's queries, over SQLite and the writer's journaled readings -------------------
    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection to the file."""
        return self.stored.reader()

    def used_bytes(self) -> int:
        return self.stored.used_bytes()

    def file_bytes(self) -> int:
        return self.stored.file_bytes()

    def oldest_time(self) -> float | None:
        return self.stored.oldest_time()

    def fields(self) -> list[FieldInfo]:
        return self.stored.fields()

    def field_map(self) -> dict[str, FieldInfo]:
        return self.stored.field_map()

    def choose_tier(self, stride: float) -> int:
        return self.stored.choose_tier(stride)

    def data(
        self,
        names: Iterable[str],
        start: float,
        end: float,
        min_stride: float | None = None,
        max_points: int | None = DEFAULT_MAX_POINTS,
        now: float | None = None,
    ) -> dict[str, SeriesData]:
        return self.stored.data(names, start, end, min_stride, max_points, now)

    def iter_raw(self, names: list[str], start: float, end: float) -> Iterator[tuple[str, float, float | None, int]]:
        return self.stored.iter_raw(names, start, end)

    def by_seq(self, sids: set[int], lo: int, hi: int, limit: int, newest: bool = False) -> list[Row]:
        return self.stored.by_seq(sids, lo, hi, limit, newest)

    def count_by_seq(self, sids: set[int], lo: int, hi: int) -> int:
        return self.stored.count_by_seq(sids, lo, hi)

    def snapshots(self, node: str) -> list[tuple[float, dict]]:
        return self.stored.snapshots(node)

    # -- the writer's own answers, from memory too ------------------------------------------
    def events(
        self, since: float = 0, limit: int = 100, node: str | None = None, kinds: tuple[str, ...] = ()
    ) -> list[dict]:
        """Stored events and those still on their way to SQLite (queued or journaled), newest first;
        only ``node``'s and only of ``kinds`` when given."""
        kinds = (
            (kinds,) if isinstance(kinds, str) else tuple(kinds)
        )  # one kind given bare is that kind, not its letters
        pending = [
            r
            for r in self._pending(Event)
            if r.t >= since and (node is None or r.node == node) and (not kinds or r.kind in kinds)
        ]
        out = {(e["t"], e["node"], e["kind"], e["detail"]): e for e in self.stored.events(since, limit, node, kinds)}
        for r in pending:
            out.setdefault((r.t, r.node, r.kind, r.detail), r.as_dict())
        return sorted(out.values(), key=lambda e: e["t"], reverse=True)[:limit]

    def latest(self) -> list[dict]:
        """The newest sample of each series as written, journaled ones included (from memory: the
        store keeps no latest table). ``self.stored.latest()`` is what a file reader sees."""
        with self._latest_lock:
            rows = dict(self._latest)
        return latest_dicts(self.fields(), rows)

    def alarm_load(self) -> tuple[dict[str, dict], list[dict]]:
        """Alarm states by name and every notice with the targets it was delivered to ("sent"),
        from SQLite and from records not yet there (journaled or queued), oldest notice first.

        Alarm records now wait in memory up to a flush interval: a flush between the SQLite read
        and the memory read would hide the records it moved, so a flush in between (``_gen``,
        as in ``_consistent``) reads again.
        """
        conn = self.reader()
        for _ in range(1000):
            with self._journaled_lock:
                gen = self._gen
            if gen % 2:
                time.sleep(0.001)
                continue
            try:
                states, notices, sent = _alarm_tables(conn)
            except sqlite3.OperationalError:  # the tables could not be created yet (a full card at start)
                states, notices, sent = {}, {}, []
            pending: list[AlarmRecord] = self._pending(AlarmRecord)
            with self._journaled_lock:
                if self._gen == gen:
                    break
        else:
            raise sqlite3.OperationalError("store: a flush did not finish within a second")
        return _alarms_with(states, notices, sent, pending)

    def stats(self) -> StoreStats:
        """The writer's counters and the file's size, read once (health and metrics)."""
        return StoreStats(
            path=str(self.path),
            file_bytes=self.file_bytes(),
            used_bytes=self.used_bytes(),
            max_bytes=self.max_bytes,
            written=self.written,
            commits=self.commits,
            last_commit=self.last_commit,
            last_commit_seconds=self.last_commit_seconds,
            write_errors=self.write_errors,
            last_error=self.last_error,
            last_error_t=self.last_error_t,
            records_queued=self.records_queued(),
            records_dropped=self.records_dropped,
            rejected=self.rejected,
            sealed_blocks=self.sealed_blocks,
            flushes=self.flushes,
            flush_failing=self.flush_failing,
            longest_step=self.longest_step,
            commit_interval=self.commit_interval,
        )

    def register_uplink(self, name: str, outbox: object) -> None:
        """Retention keeps what this uplink has not acknowledged (except under the size cap)."""
        self._uplinks[name] = outbox

    def close(self) -> None:
        """Flush what is journaled (if it fails, the journal keeps it for the next start) and close."""
        try:
            self.write([])
            self.flush()
        except (sqlite3.Error, OSError) as exc:
            log.error("store: closing without moving the journal into SQLite (kept for the next start): %s", exc)
        self._journal.close()
        with contextlib.suppress(sqlite3.Error):
            self._wconn.close()
        if self._lock_fd >= 0:  # the next writer may come
            os.close(self._lock_fd)
            self._lock_fd = -1


def _alarms_with(
    states: dict[str, dict], notices: dict[int, dict], sent: list[tuple], pending: list[AlarmRecord]
) -> tuple[dict[str, dict], list[dict]]:
    """What SQLite holds with the records on their way to it applied in order, as ``alarm_load`` returns it."""
    for r in pending:
        a = r.args
        if r.op == "state":
            states[a[0]] = json.loads(a[1])
        elif r.op == "notice":
            notices[a[0]] = _notice(*a[:6])
        elif r.op == "sent":
            sent.append((a[0], a[1]))
    for i, target in sent:
        if i in notices:
            notices[i]["sent"].add(target)
    return states, [notices[i] for i in sorted(notices)]


def _notice(i: int, t: float, alarm: str, kind: str, body: str, targets: str) -> dict:
    return dict(id=i, t=t, alarm=alarm, kind=kind, body=json.loads(body), targets=json.loads(targets), sent=set())


def _alarm_tables(conn: sqlite3.Connection) -> tuple[dict[str, dict], dict[int, dict], list[tuple]]:
    """Alarm states, notices and deliveries in SQLite, in one read snapshot."""
    conn.execute("BEGIN")
    try:
        states = {n: json.loads(s) for n, s in conn.execute("SELECT name, state FROM alarm_state")}
        notices = {r[0]: _notice(*r) for r in conn.execute("SELECT id, t, alarm, kind, body, targets FROM notice")}
        sent = conn.execute("SELECT id, target FROM notice_sent").fetchall()
    finally:
        conn.execute("COMMIT")
    return states, notices, sent
