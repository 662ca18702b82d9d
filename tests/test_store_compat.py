"""The store both ways (issue 28): a release opens an older store (its migrations run) and a newer one
whose compat allows it (a rollback after an update), and refuses a newer one that does not, naming both
schema numbers. Real SQLite files; the newer release is this one's migrations plus one the test adds."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from appliance.naming import SeriesKey
from appliance.samples import Sample
from appliance.store import MIGRATIONS, SCHEMA_VERSION, Migration, Store, StoreReader, StoreTooNew, connect
from appliance.store.schema import migrate, schema_compat, schema_version

DATA = Path(__file__).parent / "data"
K = SeriesKey("N", "channel_01_t", "K", "N")
T0 = 1_800_000_000.0


def meta(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


def _add_calibration_table(conn: sqlite3.Connection, progress) -> None:
    """The newer release's additive step: a table of its own, with a row in it."""
    conn.execute("CREATE TABLE calibration (name TEXT PRIMARY KEY, note TEXT NOT NULL)")
    conn.execute("INSERT INTO calibration VALUES ('RuOx-1', 'kept by the newer release')")


def _rewrite_events(conn: sqlite3.Connection, progress) -> None:
    """The newer release's incompatible step: older code would misread what it leaves."""
    conn.execute("ALTER TABLE event RENAME TO event_v7")


def newer_release(path: Path, step, compat: int) -> int:
    """Open ``path`` as a release one schema newer than this one would: its migrations run."""
    conn = connect(path)
    try:
        return migrate(conn, MIGRATIONS + (Migration(SCHEMA_VERSION + 1, step, compat=compat),), name=path)
    finally:
        conn.close()


def write_readings(path: Path, start: float, n: int) -> None:
    s = Store(path, commit_interval=0.05)
    try:
        s.write([Sample(K, start + i, 0.01 * i, 0) for i in range(n)])
    finally:
        s.close()


def stored_times(path: Path) -> list[float]:
    r = StoreReader(path)
    return [t for _name, t, _v, _st in r.iter_raw([K.name], 0, 4e9)]


def test_every_migration_declares_compat_no_newer_than_itself():
    assert all(1 <= m.compat <= m.version for m in MIGRATIONS)
    assert [m.compat for m in MIGRATIONS] == sorted(m.compat for m in MIGRATIONS)  # never lowered


@pytest.mark.parametrize("name, old", [("store-v1.db", 1), ("store-v2.db", 2)])
def test_an_old_store_migrates_and_records_its_compat(tmp_path, name, old):
    path = tmp_path / name
    shutil.copy(DATA / name, path)
    assert "compat" not in meta(path) and int(meta(path)["schema_version"]) == old
    Store(path).close()
    m = meta(path)
    assert int(m["schema_version"]) == SCHEMA_VERSION and int(m["compat"]) == MIGRATIONS[-1].compat


def test_a_store_of_the_release_before_gets_its_compat_row_on_open(tmp_path):
    """0.3.0 wrote schema 6 with no compat row: this release adds it, and changes nothing else."""
    path = tmp_path / "k.db"
    write_readings(path, T0, 5)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta WHERE key='compat'")
    conn.commit()
    conn.close()
    Store(path).close()
    assert meta(path)["compat"] == str(MIGRATIONS[-1].compat)
    assert len(stored_times(path)) == 5


def test_a_rollback_opens_a_newer_compatible_store_and_the_newer_release_keeps_everything(tmp_path):
    path = tmp_path / "k.db"
    write_readings(path, T0, 10)  # this release, before the update
    assert newer_release(path, _add_calibration_table, compat=SCHEMA_VERSION) == SCHEMA_VERSION + 1
    write_readings(path, T0 + 100, 10)  # ... and after the rollback: it opens the newer file
    s = Store(path)
    try:
        events = s.events(kinds=("store_newer_schema",))
        assert events and f"schema {SCHEMA_VERSION + 1}" in events[0]["detail"]
        assert f"release of schema {SCHEMA_VERSION}" in events[0]["detail"]
    finally:
        s.close()
    m = meta(path)
    assert int(m["schema_version"]) == SCHEMA_VERSION + 1 and int(m["compat"]) == SCHEMA_VERSION  # not lowered
    assert newer_release(path, _add_calibration_table, compat=SCHEMA_VERSION) == SCHEMA_VERSION + 1  # nothing reran
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT note FROM calibration").fetchall() == [("kept by the newer release",)]
    conn.close()
    assert stored_times(path) == [T0 + i for i in range(10)] + [T0 + 100 + i for i in range(10)]


def test_a_newer_store_this_release_cannot_write_is_refused_by_number_and_left_alone(tmp_path):
    path = tmp_path / "k.db"
    write_readings(path, T0, 3)
    newer_release(path, _rewrite_events, compat=SCHEMA_VERSION + 1)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreTooNew) as err:
        Store(path)
    text = str(err.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in text and f"this kelvinpi ({SCHEMA_VERSION})" in text
    assert f"schema {SCHEMA_VERSION + 1} or newer" in text
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    conn = sqlite3.connect(path)
    try:
        assert schema_version(conn) == SCHEMA_VERSION + 1 and schema_compat(conn) == SCHEMA_VERSION + 1
    finally:
        conn.close()


def test_a_newer_store_without_a_compat_row_is_refused(tmp_path):
    """A file that does not say its compat is read as needing its own version (the old rule)."""
    path = tmp_path / "k.db"
    write_readings(path, T0, 1)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.execute("DELETE FROM meta WHERE key='compat'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreTooNew, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(path)


def _set_meta(path: Path, **rows: str) -> None:
    conn = sqlite3.connect(path)
    for key, value in rows.items():
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "rows, bad",
    [
        ({"compat": "abc"}, ("compat", "abc")),
        ({"compat": ""}, ("compat", "")),
        ({"compat": "7.0"}, ("compat", "7.0")),
        ({"compat": "-1"}, ("compat", "-1")),  # would have opened any newer file
        ({"compat": "0"}, ("compat", "0")),
        ({"schema_version": "seven"}, ("schema_version", "seven")),
    ],
)
def test_a_meta_row_that_is_not_a_schema_number_is_refused_by_name_and_left_alone(tmp_path, rows, bad):
    path = tmp_path / "k.db"
    write_readings(path, T0, 2)
    _set_meta(path, schema_version=str(SCHEMA_VERSION + 1))  # a newer file: its compat decides
    _set_meta(path, **rows)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreTooNew) as err:  # StoreMetaInvalid: refused as a too-new file is
        Store(path)
    key, value = bad
    assert str(err.value).startswith(f"{path}: its meta row {key!r} is {value!r}, not a schema number")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


READINGS = "(SELECT coalesce(sum(n), 0) FROM fresh) + (SELECT coalesce(sum(n), 0) FROM block)"


def _add_series_count(conn: sqlite3.Connection, progress) -> None:
    """A newer release's step that is additive on disk but kept in step with rows by its writer."""
    conn.execute("CREATE TABLE series_count (n INTEGER NOT NULL)")
    _recount(conn)


def _recount(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM series_count")
    conn.execute(f"INSERT INTO series_count SELECT {READINGS}")


def test_an_older_writer_is_recorded_and_the_newer_release_resyncs_after_it(tmp_path):
    path = tmp_path / "k.db"
    write_readings(path, T0, 10)
    newer = MIGRATIONS + (Migration(SCHEMA_VERSION + 1, _add_series_count, compat=SCHEMA_VERSION, resync=_recount),)
    conn = connect(path)
    assert migrate(conn, newer, name=path) == SCHEMA_VERSION + 1
    conn.close()
    assert "older_writer" not in meta(path)
    Store(path).close()  # rolled back: this release opens the newer file ...
    assert meta(path)["older_writer"] == str(SCHEMA_VERSION)
    _set_meta(path, older_writer=str(SCHEMA_VERSION - 1))  # an even older one wrote it before
    write_readings(path, T0 + 100, 10)  # ... and writes: the lowest writer is kept
    assert meta(path)["older_writer"] == str(SCHEMA_VERSION - 1)
    conn = sqlite3.connect(path)
    stale = conn.execute("SELECT n FROM series_count").fetchone()[0]
    blocks = conn.execute(f"SELECT {READINGS}").fetchone()[0]
    conn.close()
    assert (stale, blocks) == (10, 20)  # the older writer knew nothing of series_count
    conn = connect(path)  # updated again: the newer release re-syncs and the row goes
    assert migrate(conn, newer, name=path) == SCHEMA_VERSION + 1
    assert conn.execute("SELECT n FROM series_count").fetchone()[0] == blocks
    conn.close()
    assert "older_writer" not in meta(path)
