"""The store file's schema and its ordered list of migrations, each atomic with its version bump.

A file records its version in ``meta`` (``schema_version``). Opening it runs every registered
migration above that version, oldest first, each in its own transaction together with the bump
to its version: a power cut (or any error) in one leaves the file at the version before it, whole,
and the next start carries on from there. A new schema change is one more ``Migration`` at the end
of ``MIGRATIONS``; nothing else creates or alters tables.

**Both ways (an update rolled back).** Each migration declares ``compat``: the oldest schema whose
release can still read and write a file it produced. An additive step (a new table, an index the
older code never asks for) keeps the compat of the step before; a step that changes what older code
reads (v1 -> v2 turned rows into blocks) raises it to its own version. The file records the compat
of its version in ``meta`` (``compat``, written with every version bump, and on open where a file
of an earlier release lacks it). A release opens a file newer than its own schema when that
compat is at most its own schema (logged, and the event ``store_newer_schema``), and refuses it
otherwise, naming both numbers. A file with no compat row is read as compat = its version. A
``schema_version`` or ``compat`` row that is not a whole number of at least 1 ('abc', '', '7.0', '-1')
is refused the same way (``StoreMetaInvalid``, naming the file, the row and its value).

**An older writer is recorded.** Opening a newer file writes the meta row ``older_writer`` (this
release's schema; the lowest such release where several did). "Additive" means only tables and
indexes that nothing keeps in step with existing rows; a newer release whose migration added
something that must be kept in step (a count, a summary, a copy) gives that migration a ``resync``:
a later open by a release at least as new runs it when ``older_writer`` is below its version, in the
transaction that deletes the row.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..blocks import Row
from .records import merge_ranges
from .rollup import insert_rows

log = logging.getLogger("kelvinpi.store")

DAY = 86400
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z

Progress = Callable[[], None]

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
# Alarm tables (v4): idempotent, so a flush that takes an alarm record on a file whose v4 migration
# a full card deferred creates them too (see Migration.deferrable).
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
# Log followers' cursors (v5): one row per followed file (appliance.bluefors).
FILE_CURSOR_TABLE = """
CREATE TABLE IF NOT EXISTS file_cursor (
    follower TEXT NOT NULL, path TEXT NOT NULL, inode INTEGER NOT NULL, offset INTEGER NOT NULL,
    last_t REAL, updated REAL NOT NULL, head TEXT NOT NULL DEFAULT '', PRIMARY KEY (follower, path)
) WITHOUT ROWID;
"""
# One node's events newest first (v6): the settings view's "last changes" and ``events(node=...)``
# walk only that node's rows, not back through every newer event of the others (``event_t``).
EVENT_NODE_INDEX = "CREATE INDEX IF NOT EXISTS event_node_t ON event(node, t)"


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


def script(conn: sqlite3.Connection, sql: str) -> None:
    """Run a schema script statement by statement: ``executescript`` would COMMIT the open transaction."""
    for stmt in sql.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def _create_v1(conn: sqlite3.Connection, progress: Progress | None) -> None:
    """A new file: v1's tables, which the next migrations turn into today's."""
    script(conn, V1)


def _migrate_v1(conn: sqlite3.Connection, progress: Progress | None = None) -> None:
    """v1 -> v2: every raw row into blocks, cursors into ranges.

    Sequence numbers are given series by series in time order, so each v1 cursor (a time per
    series) becomes exactly one acknowledged range per series: nothing resent, nothing skipped.
    v1's rollups already count every v1 row (and rows retention has deleted), so they are kept
    as they are and the sealed blocks do not add to them again.
    """
    script(conn, V2_TABLES)
    cursors: dict[str, dict[int, int]] = {}
    for name, sid, pos in conn.execute("SELECT name, series, position FROM cursor"):
        cursors.setdefault(name, {})[sid] = pos
    acked: dict[str, list[list[int]]] = {name: [] for name in cursors}
    seq = 0
    for (sid,) in conn.execute("SELECT id FROM series ORDER BY id").fetchall():
        base = seq + 1
        cur = conn.execute("SELECT t, value, status FROM raw WHERE series=? ORDER BY t", (sid,))
        while rows := cur.fetchmany(100_000):  # streamed: a 90-day series never sits in memory whole
            insert_rows(
                conn, sid, [Row(seq + 1 + i, sid, t, v, st) for i, (t, v, st) in enumerate(rows)], rollups=False
            )
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
        position, rest = merge_ranges(0, ranges)
        conn.execute(
            "INSERT OR REPLACE INTO outbox(name, position, acked, updated) VALUES (?,?,?,?)",
            (name, position, json.dumps(rest), time.time()),
        )
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (str(seq + 1),))
    conn.execute("DELETE FROM rollup WHERE tier=10")  # v2 computes 10 s buckets from the blocks
    script(conn, V2_FINISH)


def _add_packs(conn: sqlite3.Connection, progress: Progress | None) -> None:
    """v2 -> v3: the pack table; the writer folds the existing rollup rows into it in short steps."""
    script(conn, V3_TABLES)


def _add_alarms(conn: sqlite3.Connection, progress: Progress | None) -> None:
    """v3 -> v4: alarm states, notices and their deliveries (they were created on open, unversioned)."""
    script(conn, ALARM_TABLES)


def _add_file_cursors(conn: sqlite3.Connection, progress: Progress | None) -> None:
    """v4 -> v5: where each followed log file has been read to (the Bluefors log folder)."""
    script(conn, FILE_CURSOR_TABLE)


def _index_event_node(conn: sqlite3.Connection, progress: Progress | None) -> None:
    """v5 -> v6: events by node and time (a file with a million events is indexed in seconds)."""
    conn.execute(EVENT_NODE_INDEX)


@dataclass(frozen=True)
class Migration:
    """One schema change: ``apply`` runs inside the transaction that also sets ``version`` (and
    ``compat``: the oldest schema that still reads and writes the file it produces)."""

    version: int
    apply: Callable[[sqlite3.Connection, Progress | None], None]
    compat: int
    # A full card may put it off: the store opens at the version before and the next start retries.
    # Only for additive, idempotent steps nothing else depends on at open (the alarm tables).
    deferrable: bool = False
    # Re-sync what this step added after an older release (which knows nothing of it) wrote the file:
    # run at open when the meta row older_writer is below ``version`` (see the module's docstring).
    resync: Callable[[sqlite3.Connection], None] | None = None


# Ordered by version, one step apart: test_store_schema checks it.
# compat: v2 replaced the raw table with blocks and v3 folds rollups into packs (older code would
# misread both); v4..v6 only add tables and an index that older code never asks for.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, _create_v1, compat=1),
    Migration(2, _migrate_v1, compat=2),
    Migration(3, _add_packs, compat=3),
    Migration(4, _add_alarms, compat=3, deferrable=True),
    Migration(5, _add_file_cursors, compat=3),
    # deferrable: an index nothing needs at open; building it on a full card must not stop the appliance
    Migration(6, _index_event_node, compat=3, deferrable=True),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


class StoreTooNew(RuntimeError):
    """A file whose schema this release cannot read and write (both numbers in the message)."""


class StoreMetaInvalid(StoreTooNew):
    """A file whose ``meta`` says its schema in a way no release writes (the file, the row and its value
    in the message): refused as a too-new file is, nothing written."""


_WHOLE = re.compile(r"[0-9]+")


def _meta_number(conn: sqlite3.Connection, key: str, name: object) -> int | None:
    """The meta row ``key`` as a schema number (at least 1), None where there is no row."""
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    if row is None:
        return None
    value = row[0]
    if not (isinstance(value, str) and _WHOLE.fullmatch(value) and int(value) >= 1):
        raise StoreMetaInvalid(
            f"{name}: its meta row {key!r} is {value!r}, not a schema number (a whole number from 1): "
            "not written by any kelvinpi release; refused, nothing changed"
        )
    return int(value)


def schema_version(conn: sqlite3.Connection, name: object = "store") -> int:
    return _meta_number(conn, "schema_version", name) or 0


def schema_compat(conn: sqlite3.Connection, name: object = "store") -> int:
    """The oldest schema that reads and writes this file (its version where the file does not say)."""
    compat = _meta_number(conn, "compat", name)
    return compat if compat is not None else schema_version(conn, name)


def older_writer(conn: sqlite3.Connection, name: object = "store") -> int | None:
    """The lowest schema of a release that wrote this file while it was newer than that release, or None."""
    return _meta_number(conn, "older_writer", name)


def migrate(
    conn: sqlite3.Connection,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    progress: Progress | None = None,
    name: object = "store",
) -> int:
    """Run every migration above the file's version, each in one transaction with its version bump.

    A file newer than ``migrations`` is left as it is when its compat allows this release
    (``StoreTooNew`` otherwise)."""
    version = schema_version(conn, name)
    top = migrations[-1].version
    if version > top:
        compat = schema_compat(conn, name)
        if compat > top:
            raise StoreTooNew(
                f"{name} has schema version {version}, newer than this kelvinpi ({top}): "
                f"it needs a release of schema {compat} or newer"
            )
        log.warning(
            "%s has schema version %d, newer than this kelvinpi (%d); its compat %d allows it: opened as it is",
            name,
            version,
            top,
            compat,
        )
        writer = older_writer(conn, name)
        if writer is None or writer > top:  # a newer release's resync needs to know (the docstring)
            with transaction(conn):
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('older_writer', ?)", (str(top),))
        return version
    for m in migrations:
        if m.version <= version:
            continue
        if version:
            log.info("migrating %s from schema version %d to %d", name, version, m.version)
        try:
            with transaction(conn):
                m.apply(conn, progress)
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(m.version),))
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('compat', ?)", (str(m.compat),))
        except sqlite3.Error as exc:
            if not m.deferrable:
                raise
            log.error("%s: schema version %d deferred to the next start: %s", name, m.version, exc)
            break
        version = m.version
    _record_compat(conn, migrations, version)
    _resync(conn, migrations, version, name)
    return version


def _resync(conn: sqlite3.Connection, migrations: tuple[Migration, ...], version: int, name: object) -> None:
    """After an older release wrote the file: each step above that release's schema re-syncs what it keeps
    in step, and the ``older_writer`` row goes with them (one transaction)."""
    writer = older_writer(conn, name)
    if writer is None:
        return
    with transaction(conn):
        for m in migrations:
            if writer < m.version <= version and m.resync is not None:
                log.warning(
                    "%s: re-syncing schema %d's additions after a release of schema %d wrote it",
                    name,
                    m.version,
                    writer,
                )
                m.resync(conn)
        conn.execute("DELETE FROM meta WHERE key='older_writer'")


def _record_compat(conn: sqlite3.Connection, migrations: tuple[Migration, ...], version: int) -> None:
    """A file an earlier release wrote has no compat row: give it its version's (one small write)."""
    known = {m.version: m.compat for m in migrations}
    if version in known and conn.execute("SELECT 1 FROM meta WHERE key='compat'").fetchone() is None:
        with transaction(conn):
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('compat', ?)", (str(known[version]),))


def open_db(path: Path | str, progress: Progress | None = None) -> sqlite3.Connection:
    """Open (creating or migrating) the store file; WAL, incremental auto-vacuum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    conn = connect(path)
    if new:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # must precede the first table
        conn.execute("PRAGMA page_size=4096")
    # What sqlite_utils' Database.enable_wal() does, without importing sqlite_utils: its db module imports
    # pandas whenever pandas is installed (QCoDeS brings it), ~90 MB of the service's RSS for one PRAGMA.
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA journal_size_limit=8388608")  # a WAL grown by a big retention pass shrinks back
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    migrate(conn, progress=progress, name=path)
    return conn
