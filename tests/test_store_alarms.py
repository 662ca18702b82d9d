"""Alarm storms against the store on real SQLite files (issue 21, item 6).

80 flapping rules made 6,400 notices in 150 s: every alarm record forced a flush (120 flushes in
152 commits), notices and their delivery rows were never pruned, and under ``max_size_mb`` the size
cap deleted readings to keep them. Here: the records are batched like readings, delivered notices
follow a stated history, and a notice never costs a reading.
"""

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from appliance.journal import decode_all
from appliance.naming import SeriesKey
from appliance.samples import Sample, SampleQueue
from appliance.store import Store

from .conftest import wait_for

pytestmark = pytest.mark.slow  # alarm storms against real SQLite files, 2-3 s each

K = SeriesKey("LSA23JD", "mxc_t", "K", "mxc")
R = SeriesKey("LSA23JD", "mxc_r", "Ohm", "mxc")
RULES = [f"flap-{i:02d}" for i in range(80)]
TARGETS = ["hook", "phone"]
HISTORY_MAX = 10_000  # delivered notices kept at most, as docs/alarms.md and the store state (with 30 days)


def body(rule: str, event: str, t: float) -> str:
    """A notice body as the alarm service writes one (about 250 bytes)."""
    return json.dumps(
        {
            "alarm": rule,
            "event": event,
            "severity": "warning",
            "rule": "above",
            "field": K.name,
            "value": 0.0123456,
            "detail": "0.0123456 > 0.012",
            "since": t,
            "t": t,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
        }
    )


def exported(store, name: str) -> int:
    return sum(1 for _ in store.iter_raw([name], 0, 4e9))


def rows(store, sql: str) -> list[tuple]:
    return store.reader().execute(sql).fetchall()


def in_journal_or_sqlite(store, notice_id: int) -> bool:
    """The notice is durable: in a whole frame of the journal file, or in SQLite (read in that order:
    a flush commits SQLite before it empties the journal)."""
    frames, _ = decode_all(Path(f"{store.path}-log").read_bytes())
    if any(r[0] == "alarm" and r[1] == "notice" and r[2] == notice_id for f in frames for r in f.records):
        return True
    return bool(rows(store, f"SELECT 1 FROM notice WHERE id={int(notice_id)}"))


def test_an_alarm_storm_is_batched_like_readings_and_still_journaled_before_delivery(tmp_path):
    """6,400 notices (80 rules x 80 flaps, each with its state and an alarm event) and 6,400
    deliveries through the writer thread: no flush per record (main flushed at every commit holding
    one), far fewer commits than records, each notice journaled before its "delivery", and a kill
    afterwards loses none of them."""
    path = tmp_path / "k.db"
    s = Store(path, commit_interval=0.02)
    q = SampleQueue(100_000)
    s.start(q)
    durable: list[tuple[int, int]] = []  # (notice id, commits it waits for), as the lanes hold them
    delivered = threading.Event()
    lane_errors: list[str] = []
    checked = 0

    def lane() -> None:  # records "sent" once the writer has journaled the notice (notify.Lane._durable)
        nonlocal checked
        i, deadline = 0, time.monotonic() + 120
        while i < len(RULES) * 80 and time.monotonic() < deadline:
            if i >= len(durable) or s.commits < durable[i][1]:
                time.sleep(0.002)
                continue
            nid = durable[i][0]
            if nid % 80 == 0:  # one per flap round: the handshake still means "journaled"
                checked += 1
                if not in_journal_or_sqlite(s, nid):
                    lane_errors.append(f"notice {nid} delivered before it was journaled")
            for target in TARGETS[:1]:
                s.alarm_record("sent", nid, target, time.time())
            i += 1
        delivered.set()

    th = threading.Thread(target=lane, daemon=True)
    th.start()
    t0 = time.time()
    nid = 0
    flushes0 = s.flushes
    try:
        for flap in range(80):
            before = s.commits
            q.put_many([Sample(K, t0 + flap, 0.012 + (flap % 2) * 1e-3, 0), Sample(R, t0 + flap, 1e5, 0)])
            for rule in RULES:
                nid += 1
                t = t0 + flap + nid * 1e-4
                event = "raised" if flap % 2 == 0 else "cleared"
                s.event(f"alarm_{event}", K.node, f"{rule} (warning): flap {flap}", t=t)
                s.alarm_record("notice", nid, t, rule, event, body(rule, event, t), json.dumps(TARGETS[:1]))
                s.alarm_record("state", rule, json.dumps({"active": flap % 2 == 0, "since": t}), t)
                durable.append((nid, s.commits + 2))
            wait_for(lambda: s.commits > before, 10, step=0.005, what="the writer committing the round")
        assert delivered.wait(120), "the lane did not deliver every notice"
        wait_for(lambda: not s.records_queued(), 10, what="the sent records journaled")
        commits, flushes = s.commits, s.flushes - flushes0
    finally:
        s._stop.set()  # stop the writer thread, but no final flush: a kill follows
        s._thread.join(timeout=30)
    records = nid * 4  # notice, state, event, sent
    assert not lane_errors and checked == 80, (lane_errors, checked)
    # main: every commit holding an alarm record flushed (flushes == commits, about 100 here)
    assert flushes <= records // 5000 + 2, (flushes, commits, records)
    assert commits < records / 50, (commits, records)
    s._journal.close()  # "killed": what was not flushed is in the journal only
    s._wconn.close()
    again = Store(path)
    try:
        states, notices = again.alarm_load()
        assert len(notices) == 6400 and all(n["sent"] == {"hook"} for n in notices)
        assert set(states) == set(RULES) and not states["flap-00"]["active"]  # the last flap cleared them
        assert len([e for e in again.events(limit=10_000) if e["kind"].startswith("alarm_")]) == 6400
    finally:
        again.close()


def add_notices(s: Store, specs: list[tuple[float, list[str], list[str]]], first_id: int = 1) -> list[int]:
    """Notices (t, targets, targets sent) through the write path, 1000 records a commit; their ids."""
    ids = []
    for i, (t, targets, sent) in enumerate(specs, start=first_id):
        s.alarm_record(
            "notice", i, t, f"rule-{i % 80}", "raised", body(f"rule-{i % 80}", "raised", t), json.dumps(targets)
        )
        for target in sent:
            s.alarm_record("sent", i, target, t + 1)
        ids.append(i)
        if s.records_queued() >= 1000:
            s.write([])
    s.write([])
    s.flush()
    return ids


def test_delivered_notices_beyond_the_history_are_pruned_and_undelivered_ones_kept(tmp_path):
    """The stated history (30 days, the newest 10,000 delivered) with the defaults: delivered notices
    older than 30 days or beyond the newest 10,000 go with their delivery rows; every undelivered one
    stays, however old. Main kept every notice."""
    s = Store(tmp_path / "k.db")
    now = time.time()
    old, recent = now - 40 * 86400, now - 86400
    both = ["hook", "phone"]
    specs = []
    for i in range(800):  # 40 days old: 500 delivered, 300 delivered to one target of two
        specs.append((old + i, both, both if i % 8 < 5 else ["hook"]))
    for i in range(10_500):  # a day old: delivered, with an undelivered one every 50
        specs.append((recent + i, both, [] if i % 50 == 49 else both))
    specs.append((recent + 20_000, [], []))  # no target at all: nothing left to deliver
    ids = add_notices(s, specs)
    s.alarm_record("sent", 99_999, "hook", now)  # a lane delivered a notice the size cap had taken
    s.write([])
    s.flush()
    delivered = [nid for nid, (_, tg, sent) in zip(ids, specs, strict=False) if set(sent) >= set(tg)]
    undelivered = [nid for nid, (_, tg, sent) in zip(ids, specs, strict=False) if not set(sent) >= set(tg)]
    assert len(undelivered) == 300 + 210 and len(rows(s, "SELECT id FROM notice")) == 11_301

    out = s.enforce_retention(now)

    kept = {i for (i,) in rows(s, "SELECT id FROM notice")}
    young = [nid for nid in delivered if specs[nid - 1][0] >= now - 30 * 86400]
    assert kept == set(undelivered) | set(young[-HISTORY_MAX:]), (len(kept), out)
    assert out["notices"] == len(delivered) - HISTORY_MAX and out["raw_size"] == 0
    sent_ids = {i for (i,) in rows(s, "SELECT DISTINCT id FROM notice_sent")}
    assert sent_ids <= kept  # the delivery rows went with their notices (and one left without its notice)
    _, notices = s.alarm_load()
    waiting = {n["id"]: n["sent"] for n in notices if set(n["targets"]) - n["sent"]}
    assert set(waiting) == set(undelivered) and waiting[undelivered[0]] == {"hook"}  # partial delivery kept
    assert s.enforce_retention(now)["notices"] == 0  # a second pass finds nothing more
    s.close()


def storm_run(path: Path, storm: bool, now: float, cap_mb: float) -> tuple[Store, int, int]:
    """Readings of two days (sealed blocks), and with ``storm`` 6,400 notices (their delivery rows and
    alarm events too; the last 50 not delivered yet) on top; then retention under the cap."""
    s = Store(path, max_size_mb=cap_mb)
    t0 = now - 2 * 86400
    readings = [Sample(k, t0 + i * 2.0, 0.01 + (i % 97) * 1e-5, 0) for i in range(86_400) for k in (K, R)]
    for i in range(0, len(readings), 40_000):  # bulk batches: straight into sealed blocks
        s.write(readings[i : i + 40_000])
    s.seal(now=now, budget=60)
    if storm:
        specs = [(now - 3600 + i * 0.5, TARGETS, [] if i >= 6350 else TARGETS) for i in range(6400)]
        for i, (t, _, _) in enumerate(specs):
            s.event("alarm_raised" if i % 2 == 0 else "alarm_cleared", K.node, f"rule-{i % 80} (warning)", t=t)
        add_notices(s, specs)
    return s, len(readings) // 2, s.used_bytes()


def test_the_size_cap_prunes_notices_before_any_reading_and_brings_the_file_under_it(tmp_path):
    """Under a cap the readings fit but the storm's notices do not: every reading stays exportable
    (as many as without the storm), the delivered notices and alarm events go, the 50 undelivered
    ones stay, and the file ends under its cap. Main deleted readings to keep every notice."""
    now = time.time()
    calm, n, calm_bytes = storm_run(tmp_path / "calm.db", False, now, 4096)
    calm.close()
    cap_mb = (calm_bytes + 400_000) / 0.85 / 2**20  # room for the readings and a little more
    calm, n, _ = storm_run(tmp_path / "calm2.db", False, now, cap_mb)
    out_calm = calm.enforce_retention(now)
    want = exported(calm, K.name)
    assert want == n and out_calm["raw_size"] == 0  # without a storm the readings fit
    calm.close()

    s, n, stormed = storm_run(tmp_path / "storm.db", True, now, cap_mb)
    assert stormed > s.max_bytes, (stormed, s.max_bytes)  # the storm alone takes the file over its cap
    out = s.enforce_retention(now)
    assert exported(s, K.name) == exported(s, R.name) == want == n, out  # no reading lost to a notice
    assert out["raw_size"] == 0 and out["notices_size"] > 0, out
    left = {i for (i,) in rows(s, "SELECT id FROM notice")}
    assert set(range(6351, 6401)) <= left and len(left) < 6400  # undelivered kept, delivered pruned
    assert s.used_bytes() <= s.max_bytes * 0.85 + 4096
    s.close()
    assert (tmp_path / "storm.db").stat().st_size <= s.max_bytes  # the file itself, freed pages given back
    conn = sqlite3.connect(tmp_path / "storm.db")
    detail = conn.execute("SELECT detail FROM event WHERE kind='retention'").fetchall()
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert detail and "delivered" in detail[-1][0] and "samples" not in detail[-1][0], detail


def test_a_full_record_queue_drops_events_never_alarm_records(tmp_path):
    """A store that cannot write keeps its records queued; past the queue's bound the oldest goes.
    An alarm storm's events on a full card used to push out the notices, states and deliveries
    queued among them (an alarm raised and cleared during a full disk was lost after a restart).
    Now an event goes first; every alarm record waits for the writer."""
    from appliance.store.writer import RECORD_QUEUE

    s = Store(tmp_path / "k.db")
    now = time.time()
    notices = 200
    per_notice = (RECORD_QUEUE * 3 // 2) // notices  # 1.5 queues of events in all, notices spread through
    for i in range(notices):
        s.alarm_record("notice", i + 1, now + i, "mxc-warm", "raised", json.dumps({"i": i}), json.dumps(["hook"]))
        s.alarm_record("state", "mxc-warm", json.dumps({"name": "mxc-warm", "active": True}), now + i)
        if i % 2:
            s.alarm_record("sent", i + 1, "hook", now + i)
        for j in range(per_notice):
            s.event("alarm_raised", "LSA23JD", f"storm {i}.{j}", t=now + i)
    assert s.records_dropped >= notices * per_notice - RECORD_QUEUE  # events did go
    s.write([])
    s.flush()
    _states, pending = s.alarm_load()
    waiting = {n["id"] for n in pending if set(n["targets"]) - set(n["sent"])}
    assert waiting == {i + 1 for i in range(notices) if not i % 2}  # every undelivered notice, none lost
    with sqlite3.connect(tmp_path / "k.db") as db:
        assert db.execute("SELECT count(*) FROM notice").fetchone()[0] == notices
        assert db.execute("SELECT count(*) FROM notice_sent").fetchone()[0] == notices // 2
