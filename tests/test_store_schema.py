"""The store's schema migrations: one ordered registry, each step atomic with its version bump,
on real SQLite files (the v1 and v2 files earlier releases wrote, and a v3 file made here)."""

import shutil
import sqlite3
from pathlib import Path

import pytest

from appliance.store import MIGRATIONS, SCHEMA_VERSION, Migration, Store, connect
from appliance.store.schema import migrate, schema_version

DATA = Path(__file__).parent / "data"


def tables(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def version(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
    finally:
        conn.close()


def test_migrations_are_registered_in_order_one_version_apart():
    versions = [m.version for m in MIGRATIONS]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert versions[-1] == SCHEMA_VERSION
    assert SCHEMA_VERSION >= 4  # the alarm tables are a version of their own


def test_the_alarm_tables_are_a_schema_version_not_created_on_open(tmp_path):
    """A v3 file (alarm tables created on open, unversioned) is migrated to v4 on open."""
    path = tmp_path / "k.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE notice_sent; DROP TABLE notice; DROP TABLE alarm_state;")
    conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    assert version(path) == 3 and "notice" not in tables(path)
    s = Store(path)
    s.close()
    assert version(path) == SCHEMA_VERSION  # v4 and every step after it
    assert {"alarm_state", "notice", "notice_sent"} <= tables(path)


@pytest.mark.parametrize("name, old", [("store-v1.db", 1), ("store-v2.db", 2)])
def test_old_store_files_migrate_through_every_version(tmp_path, name, old):
    path = tmp_path / name
    shutil.copy(DATA / name, path)
    assert version(path) == old
    s = Store(path)
    try:
        assert s.fields() and s.data([s.fields()[0].name], 0, 4e9, max_points=None)
    finally:
        s.close()
    assert version(path) == SCHEMA_VERSION
    assert {"block", "fresh", "rollup_pack", "alarm_state", "notice", "notice_sent"} <= tables(path)
    assert "raw" not in tables(path)


def test_a_migration_failing_midway_leaves_the_version_before_it_and_its_schema(tmp_path):
    """Each migration commits with its own version bump: the ones before a failing one stay done,
    and the failing one leaves no trace (not the table it created before failing)."""
    path = tmp_path / "v1.db"
    shutil.copy(DATA / "store-v1.db", path)

    def half_done(conn, progress):
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        conn.execute("INSERT INTO meta(key, value) VALUES ('half', 'done')")
        raise RuntimeError("power cut in the middle of the migration")

    conn = connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    with pytest.raises(RuntimeError, match="power cut"):
        migrate(conn, MIGRATIONS[:2] + (Migration(3, half_done, compat=3),))
    assert schema_version(conn) == 2  # v1 -> v2 committed with its own bump
    assert conn.execute("SELECT value FROM meta WHERE key='half'").fetchone() is None
    conn.close()
    assert "half_done" not in tables(path) and "rollup_pack" not in tables(path)
    assert "block" in tables(path) and "raw" not in tables(path)
    s = Store(path)  # and the real migrations carry on from v2
    s.close()
    assert version(path) == SCHEMA_VERSION


def test_a_deferrable_migration_a_full_card_refuses_waits_for_the_next_start(tmp_path):
    path = tmp_path / "k.db"
    conn = connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")

    def disk_full(conn, progress):
        conn.execute("CREATE TABLE later (x INTEGER)")
        raise sqlite3.OperationalError("database or disk is full")

    assert migrate(conn, MIGRATIONS[:1] + (Migration(2, disk_full, compat=1, deferrable=True),)) == 1
    assert schema_version(conn) == 1
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name='later'").fetchone() is None
    conn.close()


def test_a_file_newer_than_this_release_is_refused_and_left_alone(tmp_path):
    """A newer file whose compat is above this release's schema (tests/test_store_compat.py has the
    newer file this release may open)."""
    path = tmp_path / "k.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.execute("UPDATE meta SET value=? WHERE key='compat'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this kelvinpi"):
        Store(path)
    assert version(path) == SCHEMA_VERSION + 1


def _rows_visited(conn: sqlite3.Connection, query) -> tuple[object, int]:
    """``query()``'s answer and how many thousand SQLite virtual-machine steps it took."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1000)
    try:
        return query(), steps[0]
    finally:
        conn.set_progress_handler(None, 0)


def test_one_nodes_events_are_found_without_walking_every_newer_event(tmp_path):
    """Red team 2122b #5: the settings view's "last changes" (one node's control and curve events)
    walked ``event_t`` backwards through every newer event of every node: with a million events
    and the node's changes oldest, 0.57 s per view (a Pi is several times slower). The index on
    event(node, t) (schema v6) finds them directly. Counted in SQLite's steps, not seconds."""
    path = tmp_path / "k.db"
    store = Store(path)
    store.close()
    conn = connect(path)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO event(t, node, kind, detail) VALUES (?,?,?,?)",
        [(float(i), "N", "control", f"change {i}") for i in range(20)]
        + [(float(i), "B", "alarm_raised", "x" * 60) for i in range(20, 60_020)],
    )
    conn.execute("COMMIT")
    conn.close()
    store = Store(path)
    try:
        found, steps = _rows_visited(
            store.reader(), lambda: store.stored.events(node="N", kinds=("control", "curve"), limit=20)
        )
        assert [e["detail"] for e in found] == [f"change {i}" for i in range(19, -1, -1)]
        assert steps < 20, f"{steps} thousand steps for 20 events: the query walks the other nodes' events"
    finally:
        store.close()


def test_a_v5_file_gets_the_event_index_on_open(tmp_path):
    path = tmp_path / "k.db"
    Store(path).close()
    conn = connect(path)
    conn.execute("DROP INDEX event_node_t")
    conn.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    conn.close()
    Store(path).close()
    conn = connect(path)
    try:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name='event_node_t'").fetchone()
        assert schema_version(conn) == SCHEMA_VERSION == 6
    finally:
        conn.close()
