"""The appliance following an emulated Bluefors log folder: produced = stored = served, across crashes.

produced: the emulated writer's ledger (every line written whole);
stored:   rows of the node's series in the store (SQLite and the writer's journal);
served:   points the Grafana JSON datasource answers over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from appliance import config
from appliance.bluefors.acquisition import BlueforsAcquisition
from appliance.health import InstrumentHealth
from appliance.naming import SeriesKey
from appliance.samples import Sample, SampleQueue
from appliance.store import MAX_TIME, Store
from firmware_host.bluefors_writer import BlueforsWriter
from tests.support.reconcile import windows

TZ = ZoneInfo("Europe/Helsinki")
LIGHT = {"CH": 300.0, "Flowmeter": 60.0, "maxigauge": 60.0, "Channels": 120.0, "Status": 120.0, "Heaters": 120.0}
NODE = "bluefors"


def section(log_dir, interval: float = 0.2) -> str:
    return (
        f'[[instrument]]\nmodel = "bluefors-logs"\nname = "{NODE}"\ntransport = "folder"\n'
        f'log_dir = "{log_dir}"\ntimezone = "Europe/Helsinki"\ninterval = {interval}\n'
    )


def produced(w: BlueforsWriter) -> Counter:
    return Counter((name, e.t, v) for e in w.ledger for name, v in e.values)


def stored(store) -> Counter:
    reader = store.stored if isinstance(store, Store) else store
    out: Counter = Counter()
    for f in reader.fields():
        if f.node == NODE:
            for _, t, v, _st in reader.iter_raw([f.name], 0, MAX_TIME):
                out[(f.ocs, t, v)] += 1
    return out


def diff(want: Counter, got: Counter) -> str:
    lost, extra = want - got, got - want
    return f"lost {sum(lost.values())} {list(lost)[:3]}, doubled/foreign {sum(extra.values())} {list(extra)[:3]}"


class Poll:
    """The poller's part, step by step: a cycle, its samples queued, the writer's commit."""

    def __init__(self, store: Store, cfg) -> None:
        self.store, self.queue = store, SampleQueue(100_000)
        self.acq = BlueforsAcquisition(cfg, InstrumentHealth(NODE, "bluefors-logs", "folder"))
        self.acq.save_every = 0.0  # every cycle: positions saved as soon as they may be
        self.acq.attach_store(store)

    def cycle(self, commit: bool = True) -> None:
        out: list = []
        self.store.queue = self.queue  # what Store.start gives the writer thread (the poller's queue)
        self.acq.cycle({}, 0, out)
        self.queue.put_many(out)
        if commit:
            self.store.write(self.queue.drain(0))


@pytest.mark.slow
def test_crashes_between_every_step_lose_and_double_nothing(tmp_path):
    logs, db = tmp_path / "logs", tmp_path / "k.db"
    logs.mkdir()
    cfg = config.parse(section(logs) + f'[store]\npath = "{db}"\n').instrument[0]
    w = BlueforsWriter(logs, TZ, dt.datetime(2026, 10, 24, 23, 30, tzinfo=TZ).timestamp(), periods=LIGHT)
    store = Store(db)
    p = Poll(store, cfg)
    crashes = 0
    for i in range(40):  # through midnight and into the repeated hour of 2026-10-25 (its second pass)
        w.advance(421)
        if i % 7 == 3:  # crash with two cycles' samples still in the queue, the writer having taken the records
            p.cycle(commit=False)
            w.advance(61)
            p.cycle(commit=False)
            store.write([])
        elif i % 7 == 5:  # crash after the samples were written, before their positions were saved
            p.cycle()
        else:
            p.cycle()
            continue
        if i % 9 == 4:
            w.replace("maxigauge")
        crashes += 1
        store = Store(db)  # the next start, on a file nobody closed (replays the journal)
        p = Poll(store, cfg)
    p.cycle()
    p.cycle()
    assert crashes >= 8
    repeated = (logs / "26-10-25" / "maxigauge 26-10-25.log").read_text().count("25-10-26,03:10:")
    assert repeated == 2  # the writer went through the repeated hour twice
    assert stored(store) == produced(w), diff(produced(w), stored(store))
    store.close()
    assert stored(Store(db)) == produced(w)  # and after a clean stop, from SQLite alone


@pytest.mark.slow
def test_appliance_follows_the_folder_produced_stored_served(tmp_path):
    from appliance.service import Appliance

    logs = tmp_path / "logs"
    logs.mkdir()
    start = time.time() - 1800
    w = BlueforsWriter(logs, TZ, start, periods=LIGHT)
    w.advance(1200)
    text = section(logs) + (
        f'[polling]\nbackoff_initial = 0.2\nbackoff_max = 0.5\n[store]\npath = "{tmp_path / "k.db"}"\n'
        'commit_interval = 0.1\n[web]\nbind = "127.0.0.1"\nport = 0\n'
        '[[alarm]]\nkind = "below"\nname = "flow-low"\nfield = "bluefors::flow"\nthreshold = 0.3\n'
        '[[alarm]]\nkind = "below"\nname = "compressor-off"\nfield = "bluefors::compressor"\nthreshold = 0.5\n'
    )
    app = Appliance(config.parse(text))
    app.start()
    try:
        base = f"http://127.0.0.1:{app.web_address[1]}"
        want = produced(w)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(stored(app.store).values()) < sum(want.values()):
            time.sleep(0.05)
        w.advance(300)
        w.replace("Flowmeter")
        w.set("compressor", 0.0)  # the compressor trips
        w.advance(300)
        want = produced(w)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(stored(app.store).values()) < sum(want.values()):
            time.sleep(0.05)
        got = stored(app.store)
        assert got == want, diff(want, got)
        names = [f.name for f in app.store.fields() if f.node == NODE]
        assert {"bluefors::p1", "bluefors::flow", "bluefors::cpatempwi", "bluefors::pulsetube"} <= set(names)
        served = 0
        lo, hi = min(t for _, t, _ in want) - 1, max(t for _, t, _ in want) + 1
        for (a, b), some in ((ab, names[i : i + 60]) for ab in windows(lo, hi, 900) for i in range(0, len(names), 60)):
            body = json.dumps(
                {
                    "range": {"from": repr(a), "to": repr(b)},
                    "maxDataPoints": 100000,
                    "intervalMs": 0,
                    "targets": [{"target": n} for n in some],
                }
            ).encode()
            req = urllib.request.Request(
                f"{base}/grafana/query", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    served += sum(len(t["datapoints"]) for t in json.load(r))
            except urllib.error.HTTPError as exc:
                raise AssertionError(exc.read().decode()) from None
        assert served == sum(want.values()), f"served {served} of {sum(want.values())}"
        deadline = time.monotonic() + 20
        active: set = set()
        while time.monotonic() < deadline and "compressor-off" not in active:
            with urllib.request.urlopen(f"{base}/api/v1/alarms", timeout=5) as r:
                active = {a["name"] for a in json.load(r)["alarms"] if a["active"]}
            time.sleep(0.05)
        assert "compressor-off" in active and "flow-low" not in active, active
    finally:
        app.stop()
    # the Pi restarts: the lines written while it was down are read once, none again
    w.advance(900)
    app = Appliance(config.parse(text))
    app.start()
    try:
        want = produced(w)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(stored(app.store).values()) < sum(want.values()):
            time.sleep(0.05)
        time.sleep(0.3)  # a few more cycles: nothing more may come
        got = stored(app.store)
        assert got == want, diff(want, got)
    finally:
        app.stop()


def test_bad_lines_become_few_events_and_the_good_lines_are_stored(tmp_path):
    logs, db = tmp_path / "logs", tmp_path / "k.db"
    logs.mkdir()
    cfg = config.parse(section(logs) + f'[store]\npath = "{db}"\n').instrument[0]
    w = BlueforsWriter(logs, TZ, dt.datetime(2026, 12, 6, 10, 0, tzinfo=TZ).timestamp(), periods=LIGHT)
    w.advance(300)
    with open(logs / "26-12-06" / "Flowmeter 26-12-06.log", "ab") as f:
        f.write(b"".join(b"06-12-26,10:0%d:30,garbage\r\n" % i for i in range(5, 10)))
    w.advance(600)
    store = Store(db)
    try:
        p = Poll(store, cfg)
        p.cycle()
        assert p.acq.problems_recorded == 5
        events = [e["detail"] for e in store.events() if e["kind"] == "bad_line"]
        assert len(events) == 4 and "and 2 more bad lines" in events
        assert any("Flowmeter 26-12-06.log at byte" in e and "garbage" in e for e in events)
        assert stored(store) == produced(w)
    finally:
        store.close()


def test_a_store_stall_loses_no_line_the_follower_waits(tmp_path):
    """The store stalls (an SD card busy) while a half-day backlog is read: the follower stops
    reading while the queue is backed up, so the queue drops nothing and every line is stored."""
    logs, db = tmp_path / "logs", tmp_path / "k.db"
    logs.mkdir()
    cfg = config.parse(section(logs) + f'[store]\npath = "{db}"\n').instrument[0]
    w = BlueforsWriter(logs, TZ, dt.datetime(2026, 12, 6, 0, 5, tzinfo=TZ).timestamp(), periods=LIGHT)
    store = Store(db)
    p = Poll(store, cfg)
    p.queue = SampleQueue(3000)  # stands for store.queue_size (200 000) at 1/66 scale
    p.acq.follower.values_per_poll = 1000  # stands for VALUES_PER_POLL (20 000)
    w.advance(6 * 3600)  # hours of backlog (a restart after an outage)
    for _ in range(6):  # the store commits nothing for six poll intervals
        p.cycle(commit=False)
    assert p.queue.dropped == 0
    for _ in range(20):
        p.cycle()
    assert stored(store) == produced(w), diff(produced(w), stored(store))
    store.close()


def test_positions_are_not_saved_past_samples_the_queue_dropped(tmp_path):
    """Samples dropped on their way to the store (the shared queue overflowing with another
    instrument's): no position is saved past them, the lines are read again and stored once."""
    logs, db = tmp_path / "logs", tmp_path / "k.db"
    logs.mkdir()
    cfg = config.parse(section(logs) + f'[store]\npath = "{db}"\n').instrument[0]
    w = BlueforsWriter(logs, TZ, dt.datetime(2026, 12, 6, 0, 5, tzinfo=TZ).timestamp(), periods=LIGHT)
    store = Store(db)
    p = Poll(store, cfg)
    p.queue = SampleQueue(3000)
    p.acq.follower.values_per_poll = 1000
    w.advance(2 * 3600)
    p.cycle(commit=False)
    p.cycle()  # a position saved, samples stored
    p.cycle(commit=False)
    other = SeriesKey("other", "t", "K", "t", "another instrument")
    p.queue.put_many([Sample(other, 1.8e9 + i, 1.0, 0) for i in range(2900)])  # floods the queue
    assert p.queue.dropped > 0  # the follower's oldest queued samples among them
    for _ in range(15):
        p.cycle()
    assert stored(store) == produced(w), diff(produced(w), stored(store))
    store.close()


@pytest.mark.parametrize(
    "text, message",
    [
        (section("/mnt/bf") + 'host = "10.0.0.9"\n', "host is not for bluefors-logs"),
        (section("/mnt/bf") + "port = 445\n", "port is not for bluefors-logs"),
        (section("/mnt/bf", interval=0.01), "interval 0.01 s: bluefors-logs polls at most every 0.1 s"),
        (
            '[[instrument]]\nmodel = "cpa"\nname = "c"\ntransport = "tcp"\nhost = "127.0.0.1"\nlog_dir = "/tmp"\n',
            "log_dir is a bluefors-logs key: model 'cpa' does not read a log folder",
        ),
        (
            '[[instrument]]\nmodel = "cpa"\nname = "c"\ntransport = "tcp"\nhost = "127.0.0.1"\ntimezone = "UTC"\n',
            "timezone is a bluefors-logs key",
        ),
    ],
)
def test_config_refuses_keys_that_do_nothing_where_written(text, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse(text)
