"""The store's journal on real files: what a kill or power cut leaves behind comes back once, whole."""

import os
import shutil
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import journal
from appliance.naming import SeriesKey
from appliance.samples import FLAG_INVALID, Sample
from appliance.store import Store, StoreReader

K = SeriesKey("LSA23JD", "mxc_t", "K", "mxc")
R = SeriesKey("LSA23JD", "mxc_r", "Ohm", "mxc")


def everything(reader, name):
    return [(t, v, s) for _, t, v, s in reader.iter_raw([name], 0, 4e9)]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 1 << 40),
            st.integers(1, 1 << 20),
            st.integers(-(1 << 50), 1 << 50),
            st.one_of(st.none(), st.floats(allow_nan=False)),
            st.integers(0, (1 << 31) - 1),
        ),
        max_size=50,
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["event", "cursor"]), st.text(max_size=20), st.floats(allow_nan=False, allow_infinity=False)
        ),
        max_size=5,
    ),
)
@pytest.mark.slow
def test_frames_round_trip(rows, records):
    frame = journal.Frame(7, rows, [list(r) for r in records])
    data = journal.encode(frame) * 2
    frames, used = journal.decode_all(data)
    assert used == len(data) and len(frames) == 2
    for f in frames:
        assert f.number == 7 and len(f.rows) == len(rows) and [tuple(r) for r in f.records] == records
        for a, b in zip(rows, f.rows, strict=False):
            assert a[:3] == b[:3] and a[4] == b[4]
            assert (a[3] is None and b[3] is None) or np.float64(a[3]).tobytes() == np.float64(b[3]).tobytes()


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 1 << 40),
    st.integers(-(1 << 45), 1 << 45),
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFF),
            st.integers(-(1 << 31), (1 << 31) - 1),
            st.one_of(st.none(), st.floats(allow_nan=False)),
            st.integers(0, 0xFFFF),
        ),
        min_size=1,
        max_size=50,
    ),
)
def test_a_commits_usual_shape_takes_the_compact_layout_and_round_trips(seq0, t0, cols):
    rows = [(seq0 + i, sid, t0 + (dt if i else 0), v, stat) for i, (sid, dt, v, stat) in enumerate(cols)]
    data = journal.encode(journal.Frame(3, rows, [["event", "x", 1.0]]))
    assert int.from_bytes(data[:4], "little") >> 31 == 1  # the compact layout
    frames, _ = journal.decode_all(data + journal.encode(journal.Frame(4, [], [])))
    frame = frames[0]
    assert len(frames) == 2 and frame.number == 3 and frame.records == [["event", "x", 1.0]]
    for a, b in zip(rows, frame.rows, strict=False):
        assert a[:3] == b[:3] and a[4] == b[4]
        assert (a[3] is None and b[3] is None) or np.float64(a[3]).tobytes() == np.float64(b[3]).tobytes()


def test_frames_outside_the_compact_range_are_wide_and_both_layouts_replay_in_one_file():
    base = (100, 1, 1_700_000_000_000, 1.5, 0)
    wide_cases = [
        [base, (102, 1, base[2] + 1, 2.0, 0)],  # a gap in the sequence numbers
        [base, (101, 70000, base[2] + 1, 2.0, 0)],  # a series id past 16 bits
        [base, (101, 1, base[2] + 1, 2.0, 1 << 16)],  # status past 16 bits
        [base, (101, 1, base[2] + (1 << 31), 2.0, 0)],  # times 24.9 days apart (a clock step in one batch)
    ]
    edge = [base, (101, 1, base[2] + (1 << 31) - 1, None, 0xFFFF), (102, 0xFFFF, base[2] - (1 << 31), -0.0, 0)]
    data = b"".join(journal.encode(journal.Frame(i, rows)) for i, rows in enumerate(wide_cases + [edge]))
    frames, used = journal.decode_all(data)
    assert used == len(data) and [f.rows for f in frames] == wide_cases + [edge]
    sizes = [len(journal.encode(journal.Frame(0, rows))) for rows in wide_cases]
    assert sizes == [16 + 4 + 32 * 2] * 4
    assert int.from_bytes(journal.encode(journal.Frame(0, edge))[:4], "little") >> 31 == 1


def test_a_commit_of_24_lake_shore_readings_takes_under_320_bytes():
    """What the card pays per commit beyond the page it rewrites anyway (808 bytes wide)."""
    import random

    rng = random.Random(1)
    levels = [float(f"{rng.uniform(0.01, 300):.6g}") for _ in range(24)]
    rows = [
        (
            1000 + i,
            i + 1,
            1_780_000_000_000 + rng.randint(0, 950),
            float(f"{levels[i] * (1 + rng.uniform(-1e-4, 1e-4)):.6g}"),
            0,
        )
        for i in range(24)
    ]
    data = journal.encode(journal.Frame(5, rows))
    assert len(data) < 320
    assert journal.decode_all(data)[0][0].rows == rows


def test_readings_are_readable_at_once_and_survive_a_kill(tmp_path):
    s = Store(tmp_path / "k.db")
    t = time.time()
    s.write([Sample(K, t + i, 0.01 + i, 0) for i in range(30)] + [Sample(R, t, None, 64)])
    s.event("connected", "LSA23JD", "x")
    s.write([])
    # readable through the writer's Store at once, though SQLite does not have them yet
    assert len(everything(s, K.name)) == 30 and s.data([R.name], t - 1, t + 1, now=t + 1)[R.name].status == [
        64 | FLAG_INVALID
    ]
    assert os.path.getsize(tmp_path / "k.db-log") == 0  # the event moved everything into SQLite at once
    s.write([Sample(K, t + 100 + i, 1.0, 0) for i in range(10)])  # journaled only
    assert os.path.getsize(tmp_path / "k.db-log") > 0
    assert len(everything(StoreReader(tmp_path / "k.db"), K.name)) == 40  # a file reader reads the journal too
    # kill -9: no close, no flush; the next start replays the journal
    del s
    s2 = Store(tmp_path / "k.db")
    assert len(everything(StoreReader(tmp_path / "k.db"), K.name)) == 40
    assert os.path.getsize(tmp_path / "k.db-log") == 0
    s2.write([Sample(K, t + 200, 2.0, 0)])
    seqs = [r[0] for r in s2.by_seq({1, 2}, 0, 1 << 62, 1000)]
    assert seqs == list(range(1, 43))  # numbering goes on after the replayed readings


def test_a_torn_frame_is_dropped_and_the_whole_ones_kept(tmp_path):
    s = Store(tmp_path / "k.db")
    t = time.time()
    for i in range(5):
        s.write([Sample(K, t + i, float(i), 0)])
    log = tmp_path / "k.db-log"
    whole = log.read_bytes()
    log.write_bytes(whole + whole[:20])  # the power went while the next frame was being written
    del s
    s2 = Store(tmp_path / "k.db")
    assert [v for _, v, _ in everything(s2, K.name)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    s2.write([Sample(K, t + 9, 9.0, 0)])
    s2.close()
    assert [v for _, v, _ in everything(StoreReader(tmp_path / "k.db"), K.name)] == [0.0, 1.0, 2.0, 3.0, 4.0, 9.0]


def test_frames_already_in_sqlite_are_not_applied_twice(tmp_path):
    """A crash after the flush committed but before the journal was emptied: no duplicates."""
    s = Store(tmp_path / "k.db")
    t = time.time()
    for i in range(5):
        s.write([Sample(K, t + i, float(i), 0)])
    s.save_cursor("influx:x", 3, [])
    s.write([])
    shutil.copy(tmp_path / "k.db-log", tmp_path / "saved-log")
    s.event("connected", "LSA23JD", "once")
    s.write([])  # flushed into SQLite, journal emptied
    s.write([Sample(K, t + 10, 10.0, 0)])  # journaled after
    tail = (tmp_path / "k.db-log").read_bytes()
    del s
    (tmp_path / "k.db-log").write_bytes((tmp_path / "saved-log").read_bytes() + tail)
    s2 = Store(tmp_path / "k.db")
    assert [v for _, v, _ in everything(s2, K.name)] == [0.0, 1.0, 2.0, 3.0, 4.0, 10.0]
    assert [e["detail"] for e in s2.events()] == ["once"] and s2.load_cursor("influx:x") == (3, [])


def test_a_full_disk_refuses_the_batch_and_keeps_the_journal_whole(tmp_path, small_disk):
    from .conftest import fill_disk

    s = Store(small_disk / "k.db")
    t = time.time()
    s.write([Sample(K, t, 1.0, 0)])
    fill_disk(small_disk / "filler")
    rng = np.random.default_rng(3)  # values that do not compress away: the batch must outgrow the disk
    batch = [Sample(K, t + 1 + i * 0.001, float(v), 0) for i, v in enumerate(rng.random(4000))]
    try:
        s.write(batch)
        refused = False
    except OSError as exc:
        refused = exc.errno == 28
    assert refused  # the caller keeps the batch (the writer thread requeues it)
    (small_disk / "filler").unlink()
    s.write(batch[:10])
    del s
    again = Store(small_disk / "k.db")
    assert [v for _, v, _ in everything(again, K.name)] == [1.0] + [b.value for b in batch[:10]]


@pytest.mark.slow
def test_cli_export_reads_the_file_without_touching_the_writers_journal(tmp_path):
    import csv
    import io
    import subprocess
    import sys

    s = Store(tmp_path / "k.db")
    t = time.time() - 100
    s.write([Sample(K, t + i, 0.5 + i, 0) for i in range(20)] + [Sample(K, t + 20, None, 64)])
    s.flush()
    s.write([Sample(K, t + 50, 9.0, 0)])  # the writer (this Store) keeps running: journaled only
    journal_before = (tmp_path / "k.db-log").read_bytes()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "export",
            str(tmp_path / "k.db"),
            "--field",
            K.name,
            "--start",
            "-3600",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    # the last reading is only in the running writer's journal: the export has it too
    assert [r["value"] for r in rows] == [repr(0.5 + i) for i in range(20)] + ["", "9.0"]
    assert rows[-2]["status"] == str(64 | FLAG_INVALID)
    assert (tmp_path / "k.db-log").read_bytes() == journal_before  # the running writer's journal untouched
    bad = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "export", str(tmp_path / "k.db"), "--field", "X::y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "unknown field 'X::y'" in bad.stderr


def test_a_start_on_a_full_disk_keeps_the_journal_and_runs(tmp_path, small_disk):
    """A journal SQLite cannot take at start (the card is full): the store opens anyway, serves the
    readings from memory, and moves them into SQLite once there is room."""
    from .conftest import fill_disk

    s = Store(small_disk / "k.db")
    t = time.time()
    for i in range(50):
        s.write([Sample(K, t + i, float(i), 0)])
    del s  # killed with 50 readings journaled only
    fill_disk(small_disk / "filler")
    s2 = Store(small_disk / "k.db")  # v1 of this code raised SQLITE_FULL here, and systemd restarted it forever
    assert s2.flush_failing and "full" in s2.flush_failing
    assert [v for _, v, _ in everything(s2, K.name)] == [float(i) for i in range(50)]
    (small_disk / "filler").unlink()
    s2.flush()
    assert [v for _, v, _ in everything(StoreReader(small_disk / "k.db"), K.name)] == [float(i) for i in range(50)]


def test_a_file_reader_counts_a_journaled_reading_once_whatever_the_flush_does(tmp_path):
    """The reader reads the journal, then takes its SQLite snapshot. A flush between the two (the
    journal it read is then stale: its frames are in SQLite as well) and a torn frame being
    appended at that moment must not duplicate or drop a reading."""
    s = Store(tmp_path / "k.db")
    t = time.time() - 100
    s.write([Sample(K, t + i, float(i), 0) for i in range(5)])
    s.flush()
    for i in range(5, 8):
        s.write([Sample(K, t + i, float(i), 0)])  # three frames, journaled only
    reader = StoreReader(tmp_path / "k.db")
    want = [float(i) for i in range(8)]
    assert [v for _, v, _ in everything(reader, K.name)] == want
    stale = reader._journal_frames()
    assert len(stale) == 3
    s.flush()  # the writer moves them into SQLite and empties the journal
    reader._journal_frames = lambda: stale  # as if the journal had been read just before that flush
    assert [v for _, v, _ in everything(reader, K.name)] == want
    del reader._journal_frames
    s.write([Sample(K, t + 9, 9.0, 0)])
    log = tmp_path / "k.db-log"
    log.write_bytes(log.read_bytes() + log.read_bytes()[:11])  # a frame half-appended as the reader reads
    assert [v for _, v, _ in everything(reader, K.name)] == want + [9.0]
    assert len(log.read_bytes()) > 0 and log.read_bytes()[-11:] == log.read_bytes()[:11]  # reader cut nothing


@pytest.mark.parametrize("fault", ["sync", "partial write"])
def test_an_append_whose_cut_back_failed_is_cut_back_before_the_next_one(tmp_path, monkeypatch, fault):
    """The append fails (fdatasync EIO, or a full disk mid-write) and so does cutting it back: the
    retried batch went in behind the failed frame, stored twice (a whole unsynced frame) or lost at
    the next start (behind a torn one, where reading stops)."""
    import errno

    s = Store(tmp_path / "k.db")
    t = 1_800_000_000.0
    s.write([Sample(K, t + i, float(i), 0) for i in range(3)])
    real_sync, real_write, real_trunc = os.fdatasync, os.write, os.ftruncate

    def failing_sync(fd):
        raise OSError(errno.EIO, "injected EIO")

    def failing_write(fd, data):
        real_write(fd, bytes(data[:10]))  # part of the frame reaches the file
        raise OSError(errno.ENOSPC, "injected ENOSPC")

    def failing_truncate(fd, size):
        raise OSError(errno.EIO, "injected EIO on ftruncate")

    if fault == "sync":
        monkeypatch.setattr(journal.os, "fdatasync", failing_sync)
    else:
        monkeypatch.setattr(journal.os, "write", failing_write)
    monkeypatch.setattr(journal.os, "ftruncate", failing_truncate)
    batch = [Sample(K, t + 3 + i, float(3 + i), 0) for i in range(2)]
    with pytest.raises(OSError):
        s.write(batch)
    monkeypatch.setattr(journal.os, "write", real_write)
    monkeypatch.setattr(journal.os, "fdatasync", real_sync)
    with pytest.raises(OSError, match="ftruncate"):  # still cannot cut back: refuses to append behind it
        s.write(batch)
    monkeypatch.setattr(journal.os, "ftruncate", real_trunc)
    s.write(batch)  # the writer thread's retry
    s.write([Sample(K, t + 5 + i, float(5 + i), 0) for i in range(2)])
    want = [float(i) for i in range(7)]
    assert [v for _, v, _ in everything(StoreReader(tmp_path / "k.db"), K.name)] == want
    del s  # kill -9
    s2 = Store(tmp_path / "k.db")
    assert [v for _, v, _ in everything(s2, K.name)] == want
    assert [r[0] for r in s2.by_seq({1}, 0, 1 << 62, 100)] == list(range(1, 8))
    s2.close()


def test_a_frame_repeated_in_the_journal_is_taken_once(tmp_path):
    s = Store(tmp_path / "k.db")
    s.write([Sample(K, 1_800_000_000.0 + i, float(i), 0) for i in range(3)])
    del s  # kill -9
    log = tmp_path / "k.db-log"
    log.write_bytes(log.read_bytes() * 2)
    assert [v for _, v, _ in everything(StoreReader(tmp_path / "k.db"), K.name)] == [0.0, 1.0, 2.0]
    s2 = Store(tmp_path / "k.db")
    assert [v for _, v, _ in everything(s2, K.name)] == [0.0, 1.0, 2.0]
    s2.close()


def test_a_journal_of_tagged_record_lists_replays_into_typed_records(tmp_path):
    """Records are journaled as the tagged lists earlier releases wrote ([kind, field, ...]): a
    journal a killed older writer left replays into the event, snapshot, cursor and alarm tables."""
    path = tmp_path / "k.db"
    Store(path).close()
    t = 1_800_000_000.0
    j = journal.Journal(f"{path}-log")
    j.append(
        journal.Frame(
            1,
            [],
            [
                ["event", t, "LSA23JD", "reconnect", "after 3 s"],
                ["snapshot", "LSA23JD", t, "d1", '{"curve": 1}'],
                ["cursor", "influx", 7, "[[9, 12]]", t],
                ["alarm", "state", "mxc_hot", '{"active": true}', t],
                ["alarm", "notice", 1, t, "mxc_hot", "raised", '{"text": "hot"}', '["lab"]'],
                ["alarm", "sent", 1, "lab", t + 1],
            ],
        )
    )
    j.close()
    s = Store(path)
    try:
        assert [(e["kind"], e["detail"]) for e in s.events()] == [("reconnect", "after 3 s")]
        assert s.snapshots("LSA23JD") == [(t, {"curve": 1})]
        assert s.load_cursor("influx") == (7, [[9, 12]])
        states, notices = s.alarm_load()
        assert states == {"mxc_hot": {"active": True}}
        assert [(n["id"], n["body"], n["sent"]) for n in notices] == [(1, {"text": "hot"}, {"lab"})]
        assert s.reader().execute("SELECT count(*) FROM notice_sent").fetchone()[0] == 1  # in SQLite, not memory
    finally:
        s.close()
