"""The appliance polling both Pfeiffer controllers: produced = stored = served, a gauge turned off
in between stored as NULL with its status and served as null (never as a number), and the sample
"P1 rising" rule raised when the vacuum goes soft."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from appliance import config as _config
from appliance.models import limit_bits, ocs_feed
from appliance.service import Appliance
from appliance.uplinks.influxdb import line_protocol
from appliance.uplinks.ocs import feed_info
from firmware_host.pfeiffer_emulator import PfeifferEmulator
from tests.conftest import wait_for
from tests.support.reconcile import reconcile

SENSOR_OFF = 8  # drivers.pfeiffer: status 4 is bit 1 << 3


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def gauge_config(tmp_path, tpg, mg) -> str:
    host, port = tpg.tcp.address
    link = mg.pty.link
    return f"""
[[instrument]]
model = "tpg366"
name = "TPG366A"
transport = "tcp"
host = "{host}"
port = {port}
timeout = 1.0
interval = 0.2

[[instrument]]
model = "maxigauge"
name = "maxigauge"
transport = "serial"
device = "{link}"
timeout = 1.0
interval = 0.2

[polling]
backoff_initial = 0.2
backoff_max = 1.0

[store]
path = "{tmp_path / "kelvinpi.db"}"
commit_interval = 0.2

[web]
bind = "127.0.0.1"
port = 0

[[alarm]]
kind = "above"
name = "p1-rising"
severity = "critical"
field = "maxigauge::p1"
threshold = 1e-4
hysteresis = 2e-5
hold = 0
"""


@pytest.fixture
def emulators(tmp_path):
    tpg = PfeifferEmulator.tpg366(seed=5)
    tpg.listen_tcp("127.0.0.1", 0)
    mg = PfeifferEmulator.maxigauge(seed=6)
    mg.listen_pty(str(tmp_path / "maxigauge"))
    try:
        yield tpg, mg
    finally:
        tpg.stop()
        mg.stop()


@pytest.fixture
def gauges(tmp_path, emulators):
    tpg, mg = emulators
    app = Appliance(_config.parse(gauge_config(tmp_path, tpg, mg)))
    app.start()
    app.base_url = f"http://127.0.0.1:{app.web_address[1]}"
    try:
        yield app, tpg, mg
    finally:
        app.stop()


def stored(app, name: str) -> list[tuple[float, float | None, int]]:
    return [(t, v, st) for _, t, v, st in app.store.stored.iter_raw([name], 0, 1e12)]


@pytest.mark.slow  # the appliance polling for a few seconds
def test_gauges_reconcile_with_a_sensor_turned_off(gauges):
    app, tpg, mg = gauges
    wait_for(lambda: len(stored(app, "TPG366A::p6")) >= 3 and len(stored(app, "maxigauge::p6")) >= 3, 20, what="polls")
    assert tpg.control("sensor off 2") == "ok"
    wait_for(lambda: sum(1 for *_, st in stored(app, "TPG366A::p2") if st & SENSOR_OFF) >= 3, 20, what="off rows")
    assert mg.control("soft 5") == "ok" and mg.control("advance 120") == "ok"  # P1: 1.5e-6 * e^24 mbar
    wait_for(lambda: get(f"{app.base_url}/api/v1/alarms")["active"] == 1, 20, what="p1-rising raised")
    for emu in (tpg, mg):
        emu.stop()  # nothing more is produced: what was must all be stored
    emus = {"TPG366A": tpg, "maxigauge": mg}

    def balanced():
        t = reconcile(app.store, emus, http_base=app.base_url)
        return t if t.produced and t.produced == t.stored == t.served_http else None

    tally = wait_for(balanced, 20, 0.3, what="produced = stored = served")
    assert tally.lost == 0 and tally.foreign == 0, tally.line()
    assert set(tally.per_series) == {f"{n}::p{i}" for n in emus for i in range(1, 7)}

    # the gauge that was off: NULL with its status in the store, as many as the controller sent
    rows = stored(app, "TPG366A::p2")
    codes = tpg.ledger.status_snapshot()[("2", "pressure")]
    off = [(v, st) for _, v, st in rows if st & SENSOR_OFF]
    assert len(off) == codes.count(4) and all(v is None for v, _ in off)
    assert all(v is not None for _, v, st in rows if not st & SENSOR_OFF)

    # served as null with its status, never as a number
    t0 = rows[0][0] - 1
    data = get(f"{app.base_url}/api/v1/data?field=TPG366A::p2&start={t0}&end={rows[-1][0] + 1}")
    served = data["fields"]["TPG366A::p2"]
    assert len(served["value"]) == len(rows)
    for v, st in zip(served["value"], served["status"], strict=True):
        assert (v is None) == bool(st & SENSOR_OFF)
    latest = {r["field"]: r for r in get(f"{app.base_url}/api/v1/latest")}
    assert latest["TPG366A::p2"]["value"] is None and "SENSOR_OFF" in latest["TPG366A::p2"]["status_bits"]
    assert latest["TPG366A::p1"]["units"] == "mbar" and latest["TPG366A::p1"]["value"] > 0
    active = [a for a in get(f"{app.base_url}/api/v1/alarms")["alarms"] if a["active"]]
    assert [a["name"] for a in active] == ["p1-rising"]

    # names as socs' PfeifferAgent has them: feed "pressures", fields pressure_ch<n>; no NULL sent on
    fmap = app.store.field_map()
    assert fmap["TPG366A::p2"].ocs == "pressure_ch2" and fmap["maxigauge::p6"].ocs == "pressure_ch6"
    info = feed_info("observatory", "TPG366A", "tpg366", ocs_feed("tpg366"), "s")
    assert (info["agent_class"], info["feed_name"]) == ("PfeifferAgent", "pressures")
    # an overrange gauge is surely above any threshold: P1 past its gauge's range raised p1-rising
    assert limit_bits("tpg366") == limit_bits("maxigauge") and limit_bits("tpg366").beyond("mbar", 2) == "above"
    assert limit_bits("372").beyond("Ohm", 64) is None and limit_bits("372").beyond("K", 64) == "above"


def test_influx_lines_leave_null_readings_out_and_tag_the_feed():
    from appliance.store import FieldInfo
    from appliance.uplinks.outbox import Batch

    f = FieldInfo(1, "TPG366A::p2", "TPG366A", "p2", "mbar", "p2", "", "pressure_ch2")
    batch = Batch(rows={1: [(1000, 2.0e-2, 0), (2000, None, 8)]})
    lines = line_protocol(batch, {1: f}, feeds={"TPG366A": "pressures"})
    assert lines == ["observatory.TPG366A,feed=pressures pressure_ch2=0.02 1000"]


def test_config_checks_the_gauge_models_transports_and_gauges(tmp_path):
    def problems(extra: str) -> str:
        text = f'[[instrument]]\nname = "g"\n{extra}\n[store]\npath = "{tmp_path / "k.db"}"\n'
        with pytest.raises(_config.ConfigError) as e:
            _config.parse(text)
        return str(e.value)

    assert "TPG 256 A has no Ethernet port" in problems('model = "maxigauge"\ntransport = "tcp"\nhost = "h"')
    assert "TPG 366 is read over Ethernet" in problems('model = "tpg366"\ntransport = "serial"\ndevice = "/dev/x"')
    msg = problems('model = "tpg366"\ntransport = "tcp"\nhost = "h"\n[[instrument.channel]]\nnumber = 7')
    assert "a Pfeiffer TPG 366 gauge controller (Ethernet) has gauges 1-6, not 7" in msg
    ok = _config.parse(
        f'[[instrument]]\nname = "g"\nmodel = "tpg366"\ntransport = "tcp"\nhost = "h"\n'
        f'[store]\npath = "{tmp_path / "k.db"}"\n'
    )
    assert ok.instrument[0].port == 8000  # the TPG 366's own port when the file gives none
    unknown = problems(
        'model = "tpg366"\ntransport = "tcp"\nhost = "h"\n[[alarm]]\nkind = "above"\nname = "a"\n'
        'field = "g::P1"\nthreshold = 1'
    )
    assert "g::P1 matches no series; g has" in unknown and "p1" in unknown


def test_gauges_on_the_uplinks_as_socs_names_them(tmp_path, emulators, router, hub, consumer, wamp_loop):
    """sisock serves p1-p6 (a NULL as None), the OCS feed is socs' PfeifferAgent's "pressures" with
    pressure_ch<n>, a gauge that is off is left out of it (never sent as a number), and what was
    produced is stored and served on both paths."""
    from tests.conftest import start_appliance
    from tests.support.routers import FeedListener
    from tests.test_uplinks import node_names, uplink_config

    tpg, mg = emulators
    listener = FeedListener(wamp_loop, router, feed="pressures")
    assert listener.joined.wait(20)
    app = start_appliance(gauge_config(tmp_path, tpg, mg) + uplink_config(router, tmp_path))
    try:
        wait_for(lambda: {"TPG366A", "maxigauge"} <= node_names(consumer), 30, what="gauge data nodes")
        # a node is announced when its instrument connects; its fields once their first readings are stored
        wait_for(
            lambda: {f"p{n}" for n in range(1, 7)} <= set(consumer.get_fields("TPG366A", 1, 0)[0]), 30, what="fields"
        )
        fields, timelines = consumer.get_fields("TPG366A", 1, 0)
        assert {f"p{n}" for n in range(1, 7)} <= set(fields) and "p1" in timelines
        wait_for(lambda: listener.samples().get("observatory.TPG366A.pressure_ch2"), 30, what="OCS pressures")
        blocks, feed = listener.messages[-1]
        assert (feed["feed_name"], feed["agent_class"]) == ("pressures", "PfeifferAgent")
        assert feed["address"] == f"{feed['agent_address']}.feeds.pressures"
        tpg.control("sensor off 2")
        wait_for(lambda: sum(1 for *_, st in stored(app, "TPG366A::p2") if st & SENSOR_OFF) >= 3, 20, what="off")
        for emu in (tpg, mg):
            emu.stop()
        emus = {"TPG366A": tpg, "maxigauge": mg}

        def balanced():
            t = reconcile(app.store, emus, consumer=consumer, http_base=app.base_url)
            return t if t.produced and t.produced == t.stored == t.served_wamp == t.served_http else None

        tally = wait_for(balanced, 30, 0.5, what="produced = stored = served (sisock and HTTP)")
        assert tally.lost == 0 and tally.foreign == 0, tally.line()
        rows = stored(app, "TPG366A::p2")
        off_times = {round(t, 3) for t, v, st in rows if st & SENSOR_OFF}
        got = consumer.get_data("TPG366A", ["p2"], rows[0][0] - 1, rows[-1][0] + 1)
        served = dict(zip(got["timeline"]["p2"]["t"], got["data"]["p2"], strict=True))
        assert all(served[t] is None for t in served if round(t, 3) in off_times) and off_times
        good = [round(t, 3) for t, v, st in rows if v is not None]

        def ocs_caught_up():
            sent = [round(t, 3) for t, _ in listener.samples().get("observatory.TPG366A.pressure_ch2", [])]
            return sorted(set(sent)) == good and sent

        sent = wait_for(ocs_caught_up, 30, 0.3, what="the OCS feed carrying every good p2 reading")
        assert not off_times & set(sent)  # the readings of a gauge that was off are not on the feed
    finally:
        app.stop()


@pytest.mark.chromium
def test_panel_shows_pressures_on_a_log_axis_and_an_off_gauge_as_a_dash(gauges):
    """The front panel: a card per gauge (``p2`` off: a dash and SENSOR_OFF, never a number) and
    the pressures plot, log axis, one line per gauge."""
    import shutil

    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (`make ci-deps` as root installs it)")
    from tests.test_front_panel import ARGS, CHROMIUM

    app, tpg, _mg = gauges
    tpg.control("sensor off 2")
    wait_for(lambda: sum(1 for *_, st in stored(app, "TPG366A::p2") if st & SENSOR_OFF) >= 2, 20, what="off rows")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app.base_url + "/")
            page.wait_for_selector('.plot[data-plot="pressures"] canvas', timeout=15000)
            off = page.locator('[data-channel="TPG366A::p2"]')
            off.locator(".status").filter(has_text="SENSOR_OFF").wait_for(timeout=10000)
            assert off.locator(".kelvin").inner_text() == "—" and off.get_attribute("data-value") == ""
            on = page.locator('[data-channel="TPG366A::p1"]').locator(".kelvin").inner_text()
            assert re.fullmatch(r"\d\.\d\de-\d mbar", on), on
            plot = page.evaluate(
                """() => { const u = window.kelvinpi.pressures;
                   return {labels: u.series.slice(1).map(s => s.label), distr: u.scales.y.distr}; }"""
            )
            assert plot["distr"] == 3  # uPlot's log scale
            assert "P1 (TPG366A)" in plot["labels"] and "P6 (maxigauge)" in plot["labels"]
            assert len(plot["labels"]) == 12
        finally:
            browser.close()
