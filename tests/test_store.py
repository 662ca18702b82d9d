"""The SQLite store on real files: rollups, sisock query semantics, retention, clock steps, migrations."""
import math
import random
import sqlite3
import time

import pytest

from appliance.samples import FLAG_INVALID, FLAG_TIME_NUDGED, Sample, SampleQueue, SeriesKey
from appliance.store import SCHEMA_VERSION, TIERS, Store, resolve_time

K = SeriesKey("LSA23JD", "mxc_t", "K", "mxc")
R = SeriesKey("LSA23JD", "mxc_r", "Ohm", "mxc")


def fill(store, start, n, step=1.0, keys=(K, R), rng=None):
    rng = rng or random.Random(1)
    batch = []
    for i in range(n):
        t = start + i * step
        for k in keys:
            batch.append(Sample(k, t, 0.01 + rng.random() * 1e-3 if k is K else 1e5 + rng.random(), 0))
        if len(batch) > 5000:
            store.write(batch)
            batch = []
    store.write(batch)


def test_raw_round_trip_and_relative_times(tmp_path):
    s = Store(tmp_path / "k.db")
    now = time.time()
    fill(s, now - 600, 600)
    d = s.data([K.name], -600, 0, now=now)[K.name]
    d_abs = s.data([K.name], now - 600, now, now=now)[K.name]
    assert len(d.t) == 600 and d.t == d_abs.t and d.tier == 0  # sisock: <= 0 is seconds before now
    assert all(now - 600.001 <= t < now for t in d.t)
    assert s.data(["LSA23JD::nope"], -600, 0) == {}


def test_min_stride_semantics(tmp_path):
    s = Store(tmp_path / "k.db")
    now = 1_800_000_000.0
    fill(s, now - 600, 600)
    d = s.data([K.name], now - 600, now, min_stride=60, now=now)[K.name]
    assert len(d.t) in (10, 11)
    assert all(b - a >= 60 for a, b in zip(d.t, d.t[1:]))
    d5 = s.data([K.name], now - 600, now, min_stride=5, now=now)[K.name]
    assert d5.tier == 0 and all(b - a >= 5 for a, b in zip(d5.t, d5.t[1:]))


def test_rollups_equal_group_by_over_raw(tmp_path):
    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_000.0
    fill(s, t0, 20000, step=0.7)
    conn = sqlite3.connect(tmp_path / "k.db")
    sid = conn.execute("SELECT id FROM series WHERE name=?", (K.name,)).fetchone()[0]
    for tier in TIERS:
        expect = conn.execute(
            "SELECT (t/1000)/?*?, count(*), avg(value), min(value), max(value) FROM raw WHERE series=?"
            " GROUP BY 1 ORDER BY 1", (tier, tier, sid)).fetchall()
        got = conn.execute("SELECT bucket, n, sum/n, min, max FROM rollup WHERE tier=? AND series=? ORDER BY bucket",
                           (tier, sid)).fetchall()
        assert len(got) == len(expect)
        for e, g in zip(expect, got):
            assert e[0] == g[0] and e[1] == g[1] and e[3] == g[3] and e[4] == g[4]
            assert g[2] == pytest.approx(e[2], rel=1e-12)


def test_long_range_reads_rollups_with_bounded_points(tmp_path):
    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_000.0
    fill(s, t0, 3 * 86400 // 30, step=30.0)
    d = s.data([K.name], t0, t0 + 3 * 86400, min_stride=600, now=t0 + 3 * 86400)[K.name]
    assert d.tier == 600 and 400 <= len(d.t) <= 433
    assert all(lo <= v <= hi for v, lo, hi in zip(d.value, d.min, d.max))
    # no stride given: max_points caps the answer
    d2 = s.data([K.name], t0, t0 + 3 * 86400, now=t0 + 3 * 86400, max_points=1000)[K.name]
    assert len(d2.t) <= 1000 and d2.tier > 0


def test_invalid_reading_is_null_and_flagged(tmp_path):
    s = Store(tmp_path / "k.db")
    now = time.time()
    s.write([Sample(K, now, None, 64), Sample(K, now + 1, float("nan"), 0), Sample(K, now + 2, 0.01, 0)])
    d = s.data([K.name], now - 1, now + 3, now=now + 3)[K.name]
    assert d.value == [None, None, 0.01]
    assert d.status[0] == 64 | FLAG_INVALID and d.status[1] & FLAG_INVALID and d.status[2] == 0
    conn = sqlite3.connect(tmp_path / "k.db")
    assert conn.execute("SELECT sum(n) FROM rollup WHERE tier=10").fetchone()[0] == 1  # only the valid one


def test_clock_step_back_loses_nothing(tmp_path):
    s = Store(tmp_path / "k.db")
    t = 1_800_000_000.0
    s.write([Sample(K, t + i, float(i), 0) for i in range(100)])
    # the clock steps back 50 s: the same timestamps come again
    s.write([Sample(K, t + 50 + i, 1000.0 + i, 0) for i in range(100)])
    # two readings in the same millisecond
    s.write([Sample(K, t + 500.0001, 1.0, 0), Sample(K, t + 500.0002, 2.0, 0)])
    conn = sqlite3.connect(tmp_path / "k.db")
    assert conn.execute("SELECT count(*) FROM raw").fetchone()[0] == 202
    assert conn.execute("SELECT count(*) FROM raw WHERE status & ?", (FLAG_TIME_NUDGED,)).fetchone()[0] == 51
    values = {r[0] for r in conn.execute("SELECT value FROM raw")}
    assert values >= {float(i) for i in range(100)} | {1000.0 + i for i in range(100)}


def test_retention_by_age(tmp_path):
    s = Store(tmp_path / "k.db", raw_retention_days=1)
    now = time.time()
    fill(s, now - 2 * 86400, 2 * 86400 // 60, step=60.0)
    out = s.enforce_retention(now)
    conn = sqlite3.connect(tmp_path / "k.db")
    oldest = conn.execute("SELECT min(t) FROM raw").fetchone()[0] / 1000
    assert oldest >= now - 86400 - 0.01 and out["raw_age"] > 0
    # rollups are kept far longer
    assert conn.execute("SELECT min(bucket) FROM rollup WHERE tier=3600").fetchone()[0] < now - 86400


def test_retention_keeps_file_under_cap(tmp_path):
    s = Store(tmp_path / "k.db", max_size_mb=2)
    t0 = time.time() - 30 * 86400
    keys = [SeriesKey("N", f"ch{i}_t", "K", f"ch{i}") for i in range(8)]
    for chunk in range(12):
        fill(s, t0 + chunk * 2000, 2000, step=1.0, keys=keys)
        s.enforce_retention()
    assert s.used_bytes() <= 2 * 1024 * 1024
    assert (tmp_path / "k.db").stat().st_size <= 2.2 * 1024 * 1024
    conn = sqlite3.connect(tmp_path / "k.db")
    newest = conn.execute("SELECT max(t) FROM raw").fetchone()[0] / 1000
    assert newest == pytest.approx(t0 + 11 * 2000 + 1999, abs=1)  # the newest data survives
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_schema_version_and_reopen(tmp_path):
    s = Store(tmp_path / "k.db")
    s.write([Sample(K, 1_800_000_000.0, 1.0, 0)])
    s.close()
    conn = sqlite3.connect(tmp_path / "k.db")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    with pytest.raises(RuntimeError, match="newer"):
        Store(tmp_path / "k.db")


def test_writer_thread_batches_and_commits_on_stop(tmp_path):
    s = Store(tmp_path / "k.db", commit_interval=0.2)
    q = SampleQueue(1000)
    s.start(q)
    t = time.time()
    for i in range(50):
        q.put(Sample(K, t + i * 0.01, float(i), 0))
    time.sleep(0.6)
    assert s.commits >= 1 and s.written == 50
    q.put_many([Sample(K, t + 10 + i, 1.0, 0) for i in range(5)])
    s.stop()
    assert sqlite3.connect(tmp_path / "k.db").execute("SELECT count(*) FROM raw").fetchone()[0] == 55


def test_queue_drops_oldest_and_counts():
    q = SampleQueue(100)
    q.put_many([Sample(K, float(i), 1.0, 0) for i in range(150)])
    assert q.dropped == 50 and len(q) == 100 and q.drain(0)[0].t == 50.0


def test_resolve_time():
    assert resolve_time(-10, now=100) == 90 and resolve_time(5, now=100) == 5
    with pytest.raises(ValueError):
        resolve_time(math.nan)
