"""Names and scanning (issue 11): colliding instrument names made unique, and a poll interval
longer than the scanner's shortest pause shortened so no switch away and back is missed."""

from __future__ import annotations

import pytest

from appliance import config as _config
from appliance.naming import slug, unique_names
from appliance.service import Appliance
from drivers.ls372 import InputSetup, Model372
from drivers.transport import TcpTransport
from tests.conftest import appliance_config, wait_for


def test_unique_names():
    names, renamed = unique_names({"1": "4K plate", "2": "Still", "3": "4k Plate", "4": "4K-plate"})
    assert names == {"1": "4K plate", "2": "Still", "3": "4k Plate ch3", "4": "4K-plate"}
    assert renamed == [("3", "4k Plate", "4k Plate ch3")]
    assert slug("4K-plate") == "4kplate"  # a hyphen is dropped, not a space: a different series


def _setup(emu, steps):
    m = Model372(TcpTransport(*emu.tcp.address), timeout=1.0)
    m.connect()
    steps(m)
    m.close()


def test_instrument_names_that_collide_are_made_unique(tmp_path, emu372):
    def rename(m):
        m.set_input_setup(7, InputSetup(True, 5, 3, 21, 1))
        m.set_input_name(7, "4k plate")  # channel 1 is "4K Plate"

    _setup(emu372, rename)
    app = Appliance(_config.parse(appliance_config(tmp_path, emu372, None)))
    app.start()
    try:
        wait_for(lambda: app.pollers[0].health.connected, 20, what="connected")
        plans = app.pollers[0].plans
        assert plans["1"].kelvin.name == "LSA23JD::4k_plate_t"
        assert plans["7"].kelvin.name == "LSA23JD::4k_plate_ch7_t"
        events = wait_for(lambda: [e for e in app.store.events() if e["kind"] == "renamed"], 10, what="event")
        assert "input 7" in events[0]["detail"] and "4k plate ch7" in events[0]["detail"]
    finally:
        app.stop()


@pytest.mark.slow
def test_scan_cycle_faster_than_the_poll(tmp_path, emu372):
    """Two channels of 3 s pause + 1 s dwell: the scanner is back on a channel every 8 s, while the
    configured poll interval is 10 s. The poller polls every 3 s instead and sees both channels."""

    def two_channels(m):
        for ch in range(1, 17):
            m.set_input_setup(ch, InputSetup(ch in (1, 5), 1, 3, 21 if ch == 1 else 22, 1))
        m.set_scan(1, True)

    _setup(emu372, two_channels)
    app = Appliance(_config.parse(appliance_config(tmp_path, emu372, None, interval=10)))
    app.start()
    try:
        poller = app.pollers[0]
        wait_for(lambda: poller.health.connected, 20, what="connected")
        assert poller.interval == 3.0
        events = [e for e in app.store.events() if e["kind"] == "interval"]
        assert events and "shortest scanner pause (3 s)" in events[0]["detail"]
        seen = set()
        wait_for(
            lambda: seen.add(poller.health.active_channel) or {"1", "5"} <= seen,
            12,
            step=0.2,
            what="both scanned channels seen",
        )
    finally:
        app.stop()
