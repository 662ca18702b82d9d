"""The SQLite store on real files: sealed blocks, rollups, sisock query semantics, retention,
clock steps, the one write path, and the migration of a file the previous release wrote."""

import json
import math
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import blocks
from appliance.naming import SeriesKey
from appliance.samples import FLAG_CLOCK_UNSYNCED, FLAG_INVALID, Sample, SampleQueue
from appliance.store import BLOCK_MS, SCHEMA_VERSION, TIERS, Row, Snapshot, Store, StoreReader, resolve_time

from .conftest import wait_for

K = SeriesKey("LSA23JD", "mxc_t", "K", "mxc")
R = SeriesKey("LSA23JD", "mxc_r", "Ohm", "mxc")
V1_FILE = Path(__file__).parent / "data" / "store-v1.db"


def fill(store, start, n, step=1.0, keys=(K, R), rng=None):
    rng = rng or random.Random(1)
    batch = []
    for i in range(n):
        t = start + i * step
        for k in keys:
            batch.append(Sample(k, t, 0.01 + rng.random() * 1e-3 if k is K else 1e5 + rng.random(), 0))
        if len(batch) >= 4000:  # under BULK_MIN: the live path, into the hot tail
            store.write(batch)
            batch = []
    store.write(batch)


def everything(store, name):
    return [(t, v, s) for _, t, v, s in store.iter_raw([name], 0, 4e9)]


def count(store, table="fresh"):
    """Blocks in ``block``, samples in the hot tail (``fresh``, after a flush of the journal)."""
    store.flush()
    if table == "block":
        return store.reader().execute("SELECT count(*) FROM block").fetchone()[0]
    return store.reader().execute("SELECT coalesce(sum(n), 0) FROM fresh").fetchone()[0]


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
    assert all(b - a >= 60 for a, b in zip(d.t, d.t[1:], strict=False))
    d5 = s.data([K.name], now - 600, now, min_stride=5, now=now)[K.name]
    assert d5.tier == 0 and all(b - a >= 5 for a, b in zip(d5.t, d5.t[1:], strict=False))


@pytest.mark.slow
def test_queries_are_the_same_before_and_after_sealing(tmp_path):
    """Hot rows and sealed blocks answer identically: raw, every tier, exports, latest."""
    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_000.0
    fill(s, t0, 4 * 3600, step=1.0)  # under BULK_MIN per batch: all of it lands in the hot tail
    end = t0 + 4 * 3600
    queries = [
        dict(min_stride=None, max_points=None),
        dict(min_stride=5),
        dict(min_stride=15),
        dict(min_stride=60),
        dict(min_stride=700),
        dict(min_stride=3600),
        dict(min_stride=None, max_points=1000),
    ]
    before = [s.data([K.name, R.name], t0 - 10, end + 10, now=end + 10, **q) for q in queries]
    exported = everything(s, R.name)
    latest = s.latest()
    assert count(s, "block") == 0
    assert (
        s.seal(now=end + 7200, budget=60) == 10 and count(s) == 0
    )  # 5 hours (t0 is mid-hour) x 2 series, none left hot
    after = [s.data([K.name, R.name], t0 - 10, end + 10, now=end + 10, **q) for q in queries]
    for q, b, a in zip(queries, before, after, strict=False):
        for name in (K.name, R.name):
            assert a[name].t == b[name].t, q
            assert a[name].value == pytest.approx(b[name].value, rel=1e-12), q
            assert a[name].min == b[name].min and a[name].max == b[name].max, q
    assert everything(s, R.name) == exported and len(exported) == 4 * 3600
    assert StoreReader(tmp_path / "k.db").latest() == latest == s.latest()


@pytest.mark.slow
def test_rollups_equal_group_by_over_samples(tmp_path):
    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_000.0
    fill(s, t0, 20000, step=0.7)
    s.seal(now=t0 + 86400, budget=60)
    samples = everything(s, K.name)
    for tier in TIERS:
        expect: dict = {}
        for t, v, _st in samples:
            b = int(t) // tier * tier
            e = expect.setdefault(b, [0, 0.0, math.inf, -math.inf])
            e[0] += 1
            e[1] += v
            e[2], e[3] = min(e[2], v), max(e[3], v)
        d = s.data([K.name], t0 - tier, t0 + 14000 + tier, min_stride=tier, now=t0 + 86400, max_points=None)[K.name]
        assert d.tier == tier
        got = dict(zip(d.t, zip(d.value, d.min, d.max, strict=False), strict=False))
        inner = {b: e for b, e in expect.items() if b >= t0 - tier}
        assert sorted(got) == sorted(float(b) for b in inner)
        for b, (n, total, lo, hi) in inner.items():
            mean, mn, mx = got[float(b)]
            assert mn == lo and mx == hi and mean == pytest.approx(total / n, rel=1e-12)


@pytest.mark.slow
def test_long_range_reads_rollups_with_bounded_points(tmp_path):
    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_000.0
    fill(s, t0, 3 * 86400 // 30, step=30.0)
    s.seal(now=t0 + 4 * 86400, budget=60)
    d = s.data([K.name], t0, t0 + 3 * 86400, min_stride=600, now=t0 + 3 * 86400)[K.name]
    assert d.tier == 600 and 400 <= len(d.t) <= 433
    assert all(lo <= v <= hi for v, lo, hi in zip(d.value, d.min, d.max, strict=False))
    # no stride given: max_points caps the answer
    d2 = s.data([K.name], t0, t0 + 3 * 86400, now=t0 + 3 * 86400, max_points=1000)[K.name]
    assert len(d2.t) <= 1000 and d2.tier > 0


def test_invalid_reading_is_null_and_flagged(tmp_path):
    s = Store(tmp_path / "k.db")
    now = time.time()
    s.write([Sample(K, now, None, 64), Sample(K, now + 1, float("nan"), 0), Sample(K, now + 2, 0.01, 0)])
    for _sealed in (False, True):  # read before the seal, then after it
        d = s.data([K.name], now - 1, now + 3, now=now + 3)[K.name]
        assert d.value == [None, None, 0.01]
        assert d.status[0] == 64 | FLAG_INVALID and d.status[1] & FLAG_INVALID and d.status[2] == 0
        agg = s.data([K.name], now - 3600, now + 3600, min_stride=60, now=now + 3600)[K.name]
        assert agg.value == [0.01]  # only the valid one counts
        s.seal(now=now + 86400, budget=60)
    assert count(s) == 0 and count(s, "block") == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, BLOCK_MS - 1),
            st.one_of(st.none(), st.floats(allow_nan=False)),
            st.integers(0, (1 << 11) - 1),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_block_codec_is_lossless(rows):
    """Every time, value (NULL, -0.0, subnormals, infinities) and status bit round-trips exactly."""
    numbered = [Row(i * 3 + 1, 7, t, v, s) for i, (t, v, s) in enumerate(rows)]
    c = blocks.columns(numbered)
    back = blocks.decode(blocks.encode(c)).rows(7)
    expect = sorted(numbered, key=lambda r: (r.t, r.seq))
    assert len(back) == len(expect)
    for (q, _, t, v, s), (q2, sid2, t2, v2, s2) in zip(expect, back, strict=False):
        assert (t, s, q, 7) == (t2, s2, q2, sid2)
        assert (v is None and v2 is None) or (np.float64(v).tobytes() == np.float64(v2).tobytes())


def test_block_of_lake_shore_readings_is_small():
    rng = np.random.default_rng(3)
    n = 3600
    t = 1_780_000_000_000 + np.arange(n) * 1000 + rng.integers(-3, 4, n)
    walk = 0.0123 * (1 + np.cumsum(rng.normal(0, 2e-5, n)))
    rows = [Row(i * 24 + 5, 1, int(t[i]), float(f"{walk[i]:.6g}"), 0) for i in range(n)]
    size = len(blocks.encode(blocks.columns(rows)))
    assert size / n < 3.0, f"{size / n:.2f} bytes per sample"


def test_clock_step_back_loses_nothing(tmp_path):
    s = Store(tmp_path / "k.db")
    t = 1_800_000_000.0
    s.write([Sample(K, t + i, float(i), 0) for i in range(100)])
    # the clock steps back 50 s: the same timestamps come again
    s.write([Sample(K, t + 50 + i, 1000.0 + i, 0) for i in range(100)])
    # two readings in the same millisecond
    s.write([Sample(K, t + 500.0001, 1.0, 0), Sample(K, t + 500.0002, 2.0, 0)])
    for _ in range(2):  # hot, then sealed
        got = everything(s, K.name)
        assert len(got) == 202
        assert sorted(v for _, v, _ in got) == sorted(
            [float(i) for i in range(100)] + [1000.0 + i for i in range(100)] + [1.0, 2.0]
        )
        assert [t for t, _, _ in got] == sorted(t for t, _, _ in got)  # time order for readers
        s.seal(now=t + 86400, budget=60)
    assert count(s) == 0


def test_late_readings_in_a_sealed_hour_add_to_its_rollups(tmp_path):
    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_400.0 // 3600 * 3600
    s.write([Sample(K, t0 + i, 1.0, 0) for i in range(60)])
    s.seal(now=t0 + 86400, budget=60)
    s.write([Sample(K, t0 + i + 0.5, 3.0, 0) for i in range(60)])  # the clock stepped back into that hour
    for _ in range(2):
        d = s.data([K.name], t0, t0 + 3600, min_stride=60, now=t0 + 86400)[K.name]
        assert d.t == [t0] and d.value == [2.0] and d.min == [1.0] and d.max == [3.0]
        s.seal(now=t0 + 86400, budget=60)
    assert count(s, "block") == 2 and len(everything(s, K.name)) == 120


def test_retention_by_age(tmp_path):
    s = Store(tmp_path / "k.db", raw_retention_days=1)
    now = time.time()
    fill(s, now - 2 * 86400, 2 * 86400 // 60, step=60.0)
    s.seal(now=now, budget=60)  # 48 hours, one fsynced transaction each: not within the default budget
    out = s.enforce_retention(now)
    oldest = everything(s, K.name)[0][0]
    assert now - 86400 - 3600 <= oldest and out["raw_age"] > 0  # whole hours past the age are gone
    # rollups are kept far longer
    d = s.data([K.name], now - 3 * 86400, now, min_stride=3600, now=now)[K.name]
    assert d.t[0] < now - 1.9 * 86400


def test_age_retention_keeps_what_an_uplink_needs_and_unsynchronised_readings(tmp_path):
    from appliance.uplinks.outbox import Outbox

    s = Store(tmp_path / "k.db", raw_retention_days=1)
    now = time.time()
    # readings taken before NTP sync, stamped from the build date a year back
    s.write([Sample(K, now - 365 * 86400 + i, 1.0, FLAG_CLOCK_UNSYNCED) for i in range(100)])
    box = Outbox(s, "influx:test", {"LSA23JD"})
    box.start_from_now()  # configured now: needs everything stored from here on
    box.position = 0  # ...and, as after an outage, has acknowledged nothing at all
    fill(s, now - 3 * 86400, 3 * 86400 // 60, step=60.0, keys=(R,))
    s.seal(now=now, budget=60)
    assert s.enforce_retention(now)["raw_age"] == 0  # the uplink has not sent any of it
    assert len(everything(s, R.name)) == 3 * 86400 // 60
    box.ack(box.take())  # some of it sent
    box.position = box.store.next_seq() - 1  # then all of it
    box.acked = []
    out = s.enforce_retention(now)
    assert out["raw_age"] > 0 and len(everything(s, R.name)) < 1500
    assert len(everything(s, K.name)) == 100  # the unsynchronised readings' age is unknown: kept


@pytest.mark.slow
def test_age_retention_is_not_stopped_by_the_blocks_it_keeps(tmp_path):
    """Hundreds of kept blocks (unsynchronised clock) older than everything else never hold back
    the deletion of the rest."""
    s = Store(tmp_path / "k.db", raw_retention_days=90)
    now = time.time()
    keys = [SeriesKey("N", f"ch{i}_t", "K", f"ch{i}") for i in range(24)]
    y2000 = 946_684_800.0
    s.write(
        [Sample(k, y2000 + h * 3600 + i, 1.0, FLAG_CLOCK_UNSYNCED) for h in range(9) for k in keys for i in range(25)]
    )  # 216 blocks from a Pi that booted without a clock
    s.write([Sample(k, now - 100 * 86400 + h * 3600 + i, 2.0, 0) for h in range(48) for k in keys for i in range(5)])
    assert count(s, "block") == 216 + 48 * 24
    out = s.enforce_retention(now)
    assert out["raw_age"] == 48 * 24 * 5 and count(s, "block") == 216


@pytest.mark.slow
def test_retention_keeps_file_under_cap_in_short_steps(tmp_path):
    s = Store(tmp_path / "k.db", max_size_mb=2)
    t0 = time.time() - 30 * 86400
    keys = [SeriesKey("N", f"ch{i}_t", "K", f"ch{i}") for i in range(8)]
    rng = random.Random(5)
    for chunk in range(12):
        batch = [Sample(k, t0 + chunk * 7200 + i, rng.random(), 0) for i in range(7200) for k in keys]
        s.write(batch)
        s.enforce_retention()
    assert s.used_bytes() <= 2 * 1024 * 1024
    assert (tmp_path / "k.db").stat().st_size <= 2.2 * 1024 * 1024
    assert s.file_bytes() <= 2.4 * 1024 * 1024  # the WAL too: reset once no reader holds it
    newest = everything(s, keys[0].name)[-1][0]
    assert newest == pytest.approx(t0 + 11 * 7200 + 7199, abs=1)  # the newest data survives
    kinds = [e["detail"] for e in s.events() if e["kind"] == "retention"]
    assert kinds and "size cap" in kinds[0]
    assert s.reader().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert s.longest_step < 2.0  # one bounded step at a time, never a whole-table scan


@pytest.mark.slow
def test_size_cap_says_what_each_uplink_will_never_get(tmp_path):
    from appliance.uplinks.outbox import Outbox

    s = Store(tmp_path / "k.db", max_size_mb=1)
    box = Outbox(s, "influx:down", {"N"})
    box.start_from_now()
    keys = [SeriesKey("N", f"ch{i}_t", "K", f"ch{i}") for i in range(8)]
    rng = random.Random(5)
    t0 = time.time() - 30 * 86400
    for chunk in range(30):
        s.write([Sample(k, t0 + chunk * 7200 + i, rng.random(), 0) for i in range(7200) for k in keys])
    out = s.enforce_retention()
    assert out["raw_size"] > 0 and out["uplink_lost"]["influx:down"] == out["raw_size"]
    detail = next(e["detail"] for e in s.events() if e["kind"] == "retention")
    assert f"influx:down {out['raw_size']}" in detail
    assert box.backlog() == 30 * 7200 * 8 - out["raw_size"]


@pytest.mark.slow
def test_export_open_during_retention_does_not_hold_the_writer(tmp_path):
    s = Store(tmp_path / "k.db", raw_retention_days=1)
    now = time.time()
    fill(s, now - 3 * 86400, 3 * 86400 // 10, step=10.0)
    s.seal(now=now, budget=60)
    export = s.iter_raw([K.name, R.name], 0, now)
    first = [next(export) for _ in range(10)]  # an export left open mid-way (a slow HTTP client)
    t = time.monotonic()
    out = s.enforce_retention(now)
    assert out["raw_age"] > 0 and time.monotonic() - t < 10  # v1 waited out the 30 s busy timeout here
    s.write([Sample(K, now, 1.0, 0)])  # and the writer goes on at once
    rest = list(export)
    assert first[0][1] < now - 2 * 86400 and len(first) + len(rest) > 0


def test_schema_version_and_reopen(tmp_path):
    s = Store(tmp_path / "k.db")
    s.write([Sample(K, 1_800_000_000.0, 1.0, 0)])
    s.close()
    conn = sqlite3.connect(tmp_path / "k.db")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.execute("UPDATE meta SET value='99' WHERE key='compat'")  # a newer schema this release cannot write
    conn.commit()
    with pytest.raises(RuntimeError, match="newer"):
        Store(tmp_path / "k.db")


def test_sequence_numbers_never_repeat_after_everything_is_sealed(tmp_path):
    s = Store(tmp_path / "k.db")
    s.write([Sample(K, 1_700_000_000.0 + i, 1.0, 0) for i in range(10)])
    s.seal(now=1_800_000_000.0, budget=60)
    s.close()
    s = Store(tmp_path / "k.db")  # the hot table is empty: the next number must not start again at 1
    s.write([Sample(K, 1_700_100_000.0, 2.0, 0)])
    seqs = [r[0] for r in s.by_seq({1}, 0, 1 << 62, 100)]
    assert seqs == list(range(1, 12))


def v1_copy(tmp_path) -> Path:
    dst = tmp_path / "v1.db"
    shutil.copy(V1_FILE, dst)
    return dst


def test_v1_store_is_migrated_in_place_losing_nothing(tmp_path):
    path = v1_copy(tmp_path)
    old = sqlite3.connect(path)
    assert old.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    series = dict(old.execute("SELECT name, id FROM series"))
    expect = {
        name: old.execute("SELECT t, value, status FROM raw WHERE series=? ORDER BY t", (sid,)).fetchall()
        for name, sid in series.items()
    }
    rollup60 = old.execute("SELECT series, bucket, n, sum, min, max FROM rollup WHERE tier=60 ORDER BY 1, 2").fetchall()
    cursors = old.execute("SELECT name, series, position FROM cursor").fetchall()
    old.close()
    s = Store(path)
    assert s.reader().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    for name, rows in expect.items():
        got = [(round(t * 1000), v, st) for _, t, v, st in s.iter_raw([name], 0, 4e9)]
        assert got == rows, name
    assert (
        s.reader().execute("SELECT series, bucket, n, sum, min, max FROM rollup WHERE tier=60 ORDER BY 1, 2").fetchall()
        == rollup60
    )
    assert [e["kind"] for e in s.events()] == ["connected"] and len(s.snapshots("LSA23JD")) == 1
    # cursors: exactly the rows each uplink had not sent are its backlog
    from appliance.uplinks.outbox import Outbox

    for name in {c[0] for c in cursors}:
        box = Outbox(s, name, None)
        sent = {sid: pos for n, sid, pos in cursors if n == name}
        want = sum(sum(1 for t, _, _ in rows if t > sent.get(series[sname], 0)) for sname, rows in expect.items())
        assert box.backlog() == want, name
        got = []
        while True:
            b = box.take()
            if not len(b):
                break
            got += [(sid, t) for sid, rows in b.rows.items() for t, _, _ in rows]
            box.ack(b)
        assert len(got) == want and all(t > sent.get(sid, 0) for sid, t in got), name
    s.write([Sample(K, 1_790_000_000.0, 1.0, 0)])  # and the migrated file takes new samples
    assert s.reader().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_v1_migration_is_atomic_with_its_version_bump(tmp_path):
    path = v1_copy(tmp_path)
    before = sqlite3.connect(path).execute("SELECT count(*) FROM raw").fetchone()[0]
    calls = []

    def power_cut():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        Store(path, progress=power_cut)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    assert conn.execute("SELECT count(*) FROM raw").fetchone()[0] == before
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name='block'").fetchone()[0] == 0
    conn.close()
    assert len(everything(Store(path), "LSA23JD::mxc_t")) == 3 * 3600  # and a later start migrates it


def test_writer_thread_batches_and_commits_on_stop(tmp_path):
    s = Store(tmp_path / "k.db", commit_interval=0.2)
    q = SampleQueue(1000)
    s.start(q)
    t = time.time()
    for i in range(50):
        q.put(Sample(K, t + i * 0.01, float(i), 0))
    wait_for(lambda: s.commits >= 1 and s.written == 50, 10, what="the writer thread committing all 50 samples")
    q.put_many([Sample(K, t + 10 + i, 1.0, 0) for i in range(5)])
    s.event("connected", "LSA23JD", "late event")
    s.stop()
    r = StoreReader(tmp_path / "k.db")
    assert len(everything(r, K.name)) == 55 and r.events()[0]["detail"] == "late event"


def test_events_and_snapshots_never_block_or_raise_while_the_store_cannot_write(tmp_path):
    """Only the writer writes: a caller's event() returns at once even while the writer holds the file."""
    s = Store(tmp_path / "k.db")
    other = sqlite3.connect(tmp_path / "k.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # someone holds the write lock: every write would wait or fail
    done = threading.Event()

    def caller():
        for i in range(1000):
            s.event("connected", "LSA23JD", f"#{i}")
        assert s.snapshot("LSA23JD", {"scan": {"autoscan": True}}) is True
        assert s.snapshot("LSA23JD", {"scan": {"autoscan": True}}) is False
        done.set()

    th = threading.Thread(target=caller)
    th.start()
    assert done.wait(5)
    other.execute("ROLLBACK")
    other.close()
    s.write([])
    assert len(s.events(limit=2000)) == 1000 and len(s.snapshots("LSA23JD")) == 1


def test_queue_drops_oldest_and_counts():
    q = SampleQueue(100)
    q.put_many([Sample(K, float(i), 1.0, 0) for i in range(150)])
    assert q.dropped == 50 and len(q) == 100 and q.drain(0)[0].t == 50.0


def test_resolve_time():
    assert resolve_time(-10, now=100) == 90 and resolve_time(5, now=100) == 5
    with pytest.raises(ValueError):
        resolve_time(math.nan)


def test_sequence_numbers_never_repeat_after_retention_emptied_the_store(tmp_path):
    """Everything sent and aged out, then a restart: new readings must get numbers above the
    uplink's cursor, or it would never send them."""
    from appliance.uplinks.outbox import Outbox

    s = Store(tmp_path / "k.db", raw_retention_days=1)
    now = time.time()
    box = Outbox(s, "influx:x", {"LSA23JD"})
    box.start_from_now()
    s.write([Sample(K, now - 3 * 86400 + i, 1.0, 0) for i in range(100)])
    box.ack(box.take())
    assert box.position == 100 and box.backlog() == 0
    s.seal(now=now, budget=60)
    assert s.enforce_retention(now)["raw_age"] == 100 and count(s, "block") == 0
    s.close()
    s = Store(tmp_path / "k.db", raw_retention_days=1)
    box = Outbox(s, "influx:x", {"LSA23JD"})
    box.start_from_now()
    s.write([Sample(K, now + i, 2.0, 0) for i in range(50)])
    assert box.backlog() == 50 and len(box.take()) == 50


class SeriesAppearsMidTake(Store):
    """The writer thread creating a series between an uplink's look at the series and its reads."""

    trigger = False

    def fields(self):
        out = super().fields()
        if self.trigger:
            self.trigger = False
            self.write(
                [Sample(SeriesKey("LSA23JD", "new_t", "K", "new"), time.time(), 7.0, 0), Sample(K, time.time(), 1.5, 0)]
            )  # numbered after the new series' reading
        return out


def test_a_series_created_while_an_uplink_reads_is_sent(tmp_path):
    from appliance.uplinks.outbox import Outbox

    s = SeriesAppearsMidTake(tmp_path / "k.db")
    box = Outbox(s, "ocs:x", {"LSA23JD"})
    box.start_from_now()
    s.write([Sample(K, time.time(), 1.0, 0)])
    s.trigger = True
    sent = []
    for _ in range(5):
        batch = box.take()
        sent += [v for rows in batch.rows.values() for _, v, _ in rows]
        box.ack(batch)
    assert sorted(sent) == [1.0, 1.5, 7.0] and box.backlog() == 0


def test_snapshots_follow_retention_keeping_the_one_in_force(tmp_path):
    s = Store(tmp_path / "k.db", raw_retention_days=1)
    now = time.time()
    fill(s, now - 3 * 86400, 3 * 86400 // 600, step=600.0)
    s.seal(now=now, budget=60)
    for i, t in enumerate((now - 3 * 86400, now - 2.5 * 86400, now - 2 * 86400, now - 3600)):
        s._record(Snapshot("LSA23JD", t, f"d{i}", json.dumps({"curve": i})))  # as the writer got them
    s.write([])
    s.enforce_retention(now)
    kept = [c["curve"] for _, c in s.snapshots("LSA23JD")]
    # the data left starts about a day back: the snapshot in force then (#2) and the newer one stay
    assert kept == [2, 3]


V2_FILE = Path(__file__).parent / "data" / "store-v2.db"


def _rollup_rows(s) -> int:
    return s.reader().execute("SELECT count(*) FROM rollup").fetchone()[0]


def _packs(s) -> int:
    return s.reader().execute("SELECT count(*) FROM rollup_pack").fetchone()[0]


@pytest.mark.slow
def test_closed_days_are_packed_and_served_exactly_late_readings_merged(tmp_path):
    from tests.support.reconcile import rollup_mismatches

    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_000.0 // 86400 * 86400 + 777.25
    fill(s, t0, 3 * 86400 // 30, step=30.0)
    s.seal(now=t0 + 3 * 86400 + 3600, budget=60)  # days 0 and 1 closed long enough; day 2 not yet
    assert _packs(s) == 2 * 2 * 3  # 2 series x 2 days x 3 tiers, each day one row per tier
    assert s.reader().execute("SELECT min(bucket) FROM rollup").fetchone()[0] >= t0 // 86400 * 86400 + 2 * 86400
    assert rollup_mismatches(s) == []
    # a reading arriving late for a packed day (a clock stepped back): served at once, then folded in
    late = t0 + 3600 + 0.5
    s.write([Sample(K, late, 5.0, 0)])
    s.seal(now=t0 + 3 * 86400 + 3600, budget=60)  # its hour re-sealed: a rollup row beside the pack
    d = s.data([K.name], late // 3600 * 3600, late // 3600 * 3600 + 3600, min_stride=3600)[K.name]
    assert d.max == [5.0]
    assert rollup_mismatches(s) == []
    s.pack_rollups(now=t0 + 3 * 86400 + 3600)
    assert _packs(s) == 12 and rollup_mismatches(s) == []
    assert s.data([K.name], late // 3600 * 3600, late // 3600 * 3600 + 3600, min_stride=3600)[K.name].max == [5.0]
    # retention by age takes packs whole days at a time, never a day still inside the window
    s.rollup_retention = 1.5 * 86400
    s.enforce_retention(now=t0 + 3 * 86400)
    days = [d for (d,) in s.reader().execute("SELECT DISTINCT day FROM rollup_pack")]
    assert days == [int(t0 // 86400) + 1]


@pytest.mark.slow
def test_v2_store_is_migrated_in_place_and_its_rollups_packed_in_steps(tmp_path):
    from tests.support.reconcile import rollup_mismatches

    path = tmp_path / "v2.db"
    shutil.copy(V2_FILE, path)
    old = sqlite3.connect(path)
    assert old.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    samples = old.execute("SELECT sum(n) FROM block").fetchone()[0]
    rows = old.execute("SELECT count(*) FROM rollup").fetchone()[0]
    old.close()
    s = Store(path)
    assert s.reader().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert _rollup_rows(s) == rows and _packs(s) == 0  # the version bump alone: folding is the writer's job
    before = rollup_mismatches(s)
    assert before == []
    # a tiny budget folds a few (tier, series, day) at a time; repeated, every closed day is packed
    for _ in range(200):
        s.pack_rollups(budget=0.0005)
    s.pack_rollups(budget=30)
    assert _packs(s) == 2 * 3 * 5  # 2 series x 3 tiers x 5 UTC days the four days of readings touch
    assert _rollup_rows(s) == 0 and rollup_mismatches(s) == []
    assert sum(len(everything(s, k.name)) for k in (K, R)) == samples
    assert [e["kind"] for e in s.events()] == ["connected"]


def _old_blocks_store(tmp_path, days=20):
    s = Store(tmp_path / "k.db", raw_retention_days=1)
    now = time.time()
    t0 = now - (days + 1) * 86400
    s.write([Sample(k, t0 + i * 60, 1.0 + i % 7, 0) for i in range(days * 1440) for k in (K, R)])  # bulk: blocks
    s.seal(now=now, budget=60)
    return s, now


@pytest.mark.slow
def test_retention_with_a_budget_takes_bounded_passes_that_add_up_to_the_whole(tmp_path):
    s, now = _old_blocks_store(tmp_path)
    assert count(s, "block") >= 960
    passes, deleted = 0, 0
    while True:  # no time at all: each pass still makes one step of progress and says there is more
        out = s.enforce_retention(now, budget=0.0)
        passes += 1
        deleted += out["raw_age"]
        assert out["raw_age"] <= 200 * 60  # at most one step of 200 hourly blocks
        if not out["more"]:
            break
        assert passes < 200
    assert passes >= 5 and deleted > 0
    kept = everything(s, K.name)
    assert kept and kept[0][0] >= now - 86400 - 3600  # the same result as one unbounded pass
    assert s.enforce_retention(now, budget=0.0) == {
        "raw_age": 0,
        "raw_size": 0,
        "rollup": 0,
        "events": 0,
        "snapshots": 0,
        "notices": 0,
        "notices_size": 0,
        "more": False,
        "uplink_lost": {},
    }


@pytest.mark.slow
def test_the_writer_commits_between_the_passes_of_a_long_retention(tmp_path, monkeypatch):
    from appliance.store import writer

    monkeypatch.setattr(writer, "RETENTION_BUDGET", 0.0)  # one step per round of the writer
    s, now = _old_blocks_store(tmp_path)
    q = SampleQueue(10_000)
    s.start(q)
    try:
        s._last_retention = 0.0  # due now
        written_while_pending, deadline = set(), time.monotonic() + 60
        while time.monotonic() < deadline:
            q.put(Sample(K, time.time(), 2.0, 0))
            time.sleep(0.05)
            if s._retention_more:
                written_while_pending.add(s.written)
            elif written_while_pending and count(s, "block") < 100:
                break
        # several commits landed while retention still had work left: it never held the writer
        assert len(written_while_pending) >= 3
        assert everything(s, K.name)[0][0] >= now - 86400 - 3600
    finally:
        s.stop()


@pytest.mark.slow
def test_size_cap_takes_the_finest_rollup_packs_oldest_first_once_raw_data_is_gone(tmp_path):
    """Under a cap smaller than the rollups alone, the raw blocks go first, then the 60 s tier's
    packs and rows from the oldest day on; the coarser tiers keep the whole history."""
    s = Store(tmp_path / "k.db")
    t0 = 1_700_000_000.0 // 86400 * 86400
    days = 30
    fill(s, t0, days * 86400 // 60, step=60.0)
    end = t0 + days * 86400
    s.seal(now=end + 4 * 3600, budget=120)
    s.pack_rollups(now=end + 4 * 3600, budget=120)
    fine = "SELECT min(day), count(*) FROM rollup_pack WHERE tier=60"
    first_day, packs = s.reader().execute(fine).fetchone()
    assert first_day == t0 // 86400 and packs >= 2 * (days - 1)
    s.max_bytes = int(s.used_bytes() * 0.4)  # below the 60 s packs alone: raw blocks are not enough
    out = s.enforce_retention(now=end + 4 * 3600)
    assert out["raw_size"] == 2 * days * 86400 // 60 and everything(s, K.name) == []  # every raw sample first
    assert count(s, "block") == 0 and out["rollup"] > 0
    assert s.used_bytes() <= s.max_bytes * 0.85 + 4096
    day_after, packs_after = s.reader().execute(fine).fetchone()
    assert day_after > first_day and 0 < packs_after < packs  # oldest days first, newest kept
    coarse = s.data([K.name], t0, end, min_stride=3600, now=end + 4 * 3600)[K.name]
    assert coarse.t[0] < t0 + 3600 and len(coarse.t) >= days * 24 - 2  # the hourly history is whole
    assert any("size cap" in e["detail"] for e in s.events() if e["kind"] == "retention")
    assert s.reader().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_event_sqlite_cannot_encode_neither_duplicates_readings_nor_blocks_the_flush(tmp_path):
    """A lone surrogate in an event's text (undecodable bytes passed through) raised UnicodeEncodeError
    in the flush, after the batch was journaled: the writer requeued it and stored each reading twice,
    and every later flush failed the same way."""
    s = Store(tmp_path / "k.db", commit_interval=0.05)
    q = SampleQueue(1000)
    s.start(q)
    try:
        s.event("control", "LSA23JD", "curve 21 uploaded: \udcff (by x)")
        t0 = time.time()
        q.put_many([Sample(K, t0 + i * 0.01, float(i), 0) for i in range(3)])
        wait_for(lambda: s.written >= 3 and not s.records_queued(), 10, what="readings and event written")
        s.flush()
    finally:
        s.stop()
    vals = [v for _n, _t, v, _st in s.iter_raw([K.name], t0 - 1, t0 + 10)]
    assert vals == [0.0, 1.0, 2.0] and s.write_errors == 0, (vals, s.write_errors, s.last_error)
    (ev,) = [e for e in s.events() if e["kind"] == "control"]
    assert ev["detail"] == "curve 21 uploaded: \\udcff (by x)"
    s.close()
    reopened = StoreReader(tmp_path / "k.db")
    assert [v for _n, _t, v, _st in reopened.iter_raw([K.name], t0 - 1, t0 + 10)] == [0.0, 1.0, 2.0]


@pytest.mark.slow
def test_a_second_writer_on_a_store_is_refused_with_who_holds_it(tmp_path):
    """Two writers on one file numbered readings from the same next_seq, and the second's flush cleared
    the journal still holding the first's: gone after a restart. Now the second is refused; a kill -9
    of the first frees the file and its readings are all there."""
    import os
    import signal
    import subprocess
    import sys

    from appliance.store import StoreBusy

    from .conftest import ROOT

    db = tmp_path / "k.db"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from appliance.naming import SeriesKey\nfrom appliance.samples import Sample\n"
            "from appliance.store import Store\n"
            f"s = Store({str(db)!r})\n"
            "k = SeriesKey('LSA23JD', 'mxc_t', 'K', 'mxc')\n"
            "s.write([Sample(k, 1.7e9 + i, float(i), 0) for i in range(5)])\n"
            "print('ready', flush=True)\ntime.sleep(60)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(StoreBusy, match=rf"being written by another process \(pid {child.pid}\)"):
            Store(db)
        cfg = tmp_path / "k.toml"
        cfg.write_text(
            '[[instrument]]\nmodel = "240"\nname = "LSA24AZ"\ntransport = "serial"\ndevice = "/dev/null"\n'
            f'[store]\npath = "{db}"\n[web]\nbind = "127.0.0.1"\nport = 0\n'
        )
        run = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1 and f"pid {child.pid}" in run.stderr and "Traceback" not in run.stderr, run.stderr
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    s = Store(db)  # the kernel dropped the dead writer's lock
    assert [v for _n, _t, v, _st in s.iter_raw([K.name], 0, 4e9)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    s.close()


@pytest.mark.slow
def test_the_writer_runs_no_retention_while_it_is_held_for_the_uplinks(tmp_path):
    """Appliance.start holds retention until every uplink has registered its cursor: the writer's
    first round used to come first, with no uplink known, and deleted a stalled uplink's backlog."""
    s = Store(tmp_path / "k.db", raw_retention_days=1, commit_interval=0.05)
    now = time.time()
    fill(s, now - 3 * 86400, 3 * 86400 // 60, step=60.0, keys=(R,))
    s.seal(now=now, budget=60)
    stored = len(everything(s, R.name))
    q = SampleQueue(1000)
    s.retention_held = True
    s.start(q)
    try:
        for i in range(5):  # writer rounds, each of which would have run retention (it never ran yet)
            q.put_many([Sample(K, now + i, 1.0, 0)])
            wait_for(lambda: s.written >= stored + i + 1, 10, what=f"round {i}")
        assert len(everything(s, R.name)) == stored
        s.retention_held = False
        wait_for(lambda: len(everything(s, R.name)) < stored, 10, what="retention once released")
    finally:
        s.stop()
        s.close()


@pytest.mark.parametrize(
    "bad, why",
    [
        (Sample(K, 1.8e9, 1.0, -1), "status -1 is not a 32-bit word"),
        (Sample(K, 1.8e9, 1.0, 1 << 32), "is not a 32-bit word"),
        (Sample(K, float("nan"), 1.0, 0), "time nan is not a UNIX time"),
        (Sample(K, 1e17, 1.0, 0), "is not a UNIX time"),
        (Sample(K, 1.8e9, 10**400, 0), "is not a number"),
    ],
)
def test_a_reading_no_store_can_hold_is_dropped_and_named_not_blocking_the_rest(tmp_path, bad, why):
    """It failed its batch forever: the writer requeued it at the front, and nothing behind it was stored."""
    s = Store(tmp_path / "k.db", commit_interval=0.05)
    q = SampleQueue(1000)
    s.start(q)
    try:
        q.put_many([Sample(K, 1.8e9 + i, float(i), 0) for i in range(5)] + [bad])
        q.put_many([Sample(K, 1.8e9 + 5 + i, float(5 + i), 0) for i in range(5)])
        wait_for(lambda: s.written >= 10, 10, what="the good readings stored")
    finally:
        s.stop()
    assert [v for _n, _t, v, _st in s.iter_raw([K.name], 0, 4e9)] == [float(i) for i in range(10)]
    assert s.rejected == 1 and s.write_errors == 0
    (ev,) = [e for e in s.events() if e["kind"] == "rejected"]
    assert "1 reading(s) the store cannot hold, dropped" in ev["detail"] and why in ev["detail"], ev
    s.close()


def test_store_holds_a_reader_and_says_which_latest_it_answers(tmp_path):
    """``store.latest()`` is the writer's (journaled readings included); ``store.stored.latest()``
    what the file holds: a reading journaled but not flushed yet is only in the first."""
    s = Store(tmp_path / "k.db")
    assert not isinstance(s, StoreReader) and isinstance(s.stored, StoreReader)
    s.write([Sample(K, 1_800_000_000.0, 1.0, 0)])
    s.flush()
    s.write([Sample(K, 1_800_000_001.0, 2.0, 0)])  # journaled, not in SQLite yet
    assert [(x["t"], x["value"]) for x in s.latest()] == [(1_800_000_001.0, 2.0)]
    assert [(x["t"], x["value"]) for x in s.stored.latest()] == [(1_800_000_000.0, 1.0)]
    assert [(x["t"], x["value"]) for x in StoreReader(s.path).latest()] == [(1_800_000_000.0, 1.0)]
    assert s.oldest_time() == 1_800_000_000.0  # the panel's "how far back", now reader API
    s.close()


def test_store_stats_are_one_snapshot_of_the_writer(tmp_path):
    s = Store(tmp_path / "k.db", max_size_mb=64)
    s.event("reconnect", "LSA23JD", "after 3 s")
    s.write([Sample(K, 1_800_000_000.0 + i, float(i), 0) for i in range(10)])
    st = s.stats()
    assert (st.written, st.commits, st.records_queued, st.rejected) == (10, 1, 0, 0)
    assert st.flushes == 1  # the event moved the journal into SQLite at once
    assert st.max_bytes == 64 << 20 and 0 < st.used_bytes <= st.file_bytes
    assert st.writing and st.committed_recently() and st.last_error is None
    assert st.as_dict()["path"] == str(tmp_path / "k.db")
    s.close()
