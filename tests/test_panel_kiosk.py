"""The demo as a new user meets it: ``make run``'s generated config (tools/devrun.py) on the whole
emulated fridge (372, 240, CPA, MaxiGauge, Bluefors log folder), a notification reaching devrun's
loopback receiver, acknowledged and cleared; and the 800x480 kiosk holding every card of the demo
(the thermometry, the gauges, the compressor and the gas handling) with an alarm banner and an
instrument down."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from firmware_host.bluefors_emulate import LiveWriter
from firmware_host.cpa_server import CpaEmulator
from firmware_host.emulator import Emulator
from firmware_host.pfeiffer_emulator import PfeifferEmulator
from tools.devrun import DEMO, Receiver, write_demo

from .conftest import wait_for
from .test_front_panel import (
    page,  # noqa: F401 - the Chromium fixture
    pytestmark,  # noqa: F401 - skipped without Debian's chromium
)


class Demo:
    """What ``make run`` starts, in-process on free ports: every emulator of the fridge (the 240 with
    the demo's two channels), devrun's receiver and the appliance on devrun's generated config."""

    def __init__(self, tmp: Path, extra: str = "") -> None:
        from appliance import config as _config
        from appliance.service import Appliance

        self.e372 = Emulator.ls372(seed=1)
        self.e372.listen_tcp("127.0.0.1", 0)
        self.e240 = Emulator.ls240(channels=2, serial="LSA24AZ", seed=3)
        self.e240.listen_pty(str(tmp / "ls240"))
        self.cpa = CpaEmulator()
        _, cpa_port = self.cpa.listen_tcp("127.0.0.1", 0)
        self.gauge = PfeifferEmulator.maxigauge(seed=6)
        self.gauge.listen_pty(str(tmp / "maxigauge"))
        # the Bluefors log writer two simulated minutes ahead: every log has lines when the appliance starts
        self.logs = LiveWriter(tmp / "bluefors", "Europe/Helsinki", start=time.time() - 120)
        self.logs.control("advance 120")
        self.logs.start()
        self.lines: list[str] = []
        self.receiver = Receiver(self.lines.append).start()
        text = (
            DEMO.read_text(encoding="utf-8")
            .replace("port = 17777", f"port = {self.e372.tcp.address[1]}")
            .replace('device = "var/run/ls240"', f'device = "{tmp / "ls240"}"')
            .replace('path = "var/demo.db"', f'path = "{tmp / "demo.db"}"')
            .replace("port = 8080", "port = 0")
            .replace("port = 15020", f"port = {cpa_port}")
            .replace('device = "var/run/maxigauge"', f'device = "{tmp / "maxigauge"}"')
            .replace('log_dir = "var/devrun/bluefors"', f'log_dir = "{tmp / "bluefors"}"')
        )
        self.files = write_demo(tmp / "devrun", self.receiver.url, text + extra)
        self.app = Appliance(_config.load(self.files.config))
        self.app.add_uplinks()
        self.app.start()
        self.base_url = f"http://127.0.0.1:{self.app.web_address[1]}"

    def events(self) -> list[str]:
        return [b.get("event", "") for b in self.receiver.got if b.get("alarm") == "mxc-warm"]

    def stop(self) -> None:
        self.app.stop()
        self.e372.stop()
        self.e240.stop()
        self.cpa.stop()
        self.gauge.stop()
        self.logs.stop()
        self.receiver.stop()


# Every card of the demo's whole fridge: the thermometry, the gauges, one card per plant instrument.
FRIDGE_CARDS = [
    *(f"LSA23JD::{c}" for c in ("mxc_control", "4k_plate", "still", "cold_plate", "mxc", "sample_heater")),
    *(f"LSA24AZ::{c}" for c in ("50k_plate", "4k_plate")),
    *(f"maxigauge::p{n}" for n in range(1, 7)),
    "ptc1",
    "bluefors",
]


@pytest.fixture
def demo(tmp_path):
    d = Demo(tmp_path)
    yield d
    d.stop()


@pytest.mark.timeout(300)  # the MXC is a scanned input: each step waits up to a scan rotation
@pytest.mark.slow  # make run's whole walkthrough: waits for the scanner to reach the MXC (about a minute)
def test_devrun_demo_config_secrets_and_walkthrough(demo):
    """The README's walkthrough on devrun's config: the emulator's mixing-chamber heater warms the
    MXC past mxc-warm's threshold, the receiver gets "raised", the API acknowledges with the printed
    token, switching the heater off cools it back in demo time and the receiver gets "cleared"."""
    import os
    import stat

    for f in (demo.files.token_file, demo.files.pin_file, demo.files.url_file):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    assert demo.files.pin.isdigit() and len(demo.files.pin) == 6
    wait_for(lambda: demo.app.store.written > 20, 30, what="readings")
    # the README: `kelvinpi emulate ctl var/run/ls372.ctl heater 0.0001` (then `advance 120` skips the wait)
    assert demo.e372.control("heater 0.0001").startswith("ok")
    assert demo.e372.control("advance 120").startswith("ok")
    wait_for(lambda: "raised" in demo.events(), 90, what="the receiver got mxc-warm raised")
    assert any("mxc-warm raised" in ln and "LSA23JD::mxc_t" in ln for ln in demo.lines), demo.lines
    req = urllib.request.Request(
        demo.base_url + "/api/v1/alarms/mxc-warm/ack",
        method="POST",
        headers={"Authorization": "Bearer " + demo.files.token_file.read_text().strip()},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["acked"] is True
    wait_for(lambda: "acknowledged" in demo.events(), 30, what="the receiver got acknowledged")
    # the README: `heater 0` hands the heater back to the 372 (off), `advance 300` lets five simulated
    # minutes of cooling pass at once: base again, cleared at the scanner's next visit of the MXC
    assert demo.e372.control("heater 0").startswith("ok")
    assert demo.e372.control("advance 300").startswith("ok")
    wait_for(lambda: "cleared" in demo.events(), 120, what="the receiver got mxc-warm cleared")
    assert not demo.app.alarms.active()
    assert any("mxc-warm cleared" in ln for ln in demo.lines), demo.lines


@pytest.mark.timeout(240)  # every scanned input has to be read once: a scan rotation or two
def test_kiosk_800x480_holds_every_demo_card_with_an_alarm_and_an_instrument_down(tmp_path, page):  # noqa: F811
    """The whole fridge's 17 cards (the 372's 5 channels and its heater, the 240's 2, the MaxiGauge's P1-P6, the
    compressor and the gas handling), an alarm banner with its acknowledge button, the 240 down
    and the refresh time: all on the one 800x480 screen."""
    # an alarm at once (the MXC is below 1 K from the start), besides the demo's own rules
    d = Demo(
        tmp_path,
        '\n[[alarm]]\nkind = "below"\nname = "mxc-cold"\nseverity = "critical"\n'
        'field = "LSA23JD::mxc_control_t"\nthreshold = 1.0\n',
    )
    try:
        wait_for(lambda: d.app.alarms.active(), 60, what="alarm raised")
        page.set_viewport_size({"width": 800, "height": 480})
        page.goto(d.base_url + "/?kiosk")
        # every channel of the demo: the 372's scanner reaches each input within a rotation
        page.wait_for_function(
            "keys => keys.every(k => document.querySelector(`#channels .chan[data-channel='${k}']`))",
            arg=FRIDGE_CARDS,
            timeout=90000,
        )
        d.e240.control("mute on")
        page.wait_for_selector('[data-node="LSA24AZ"].down', timeout=20000)
        page.wait_for_selector('#alarms [data-alarm="mxc-cold"]', timeout=10000)
        page.wait_for_timeout(2500)  # one more refresh of every part: the layout has settled
        page.screenshot(path=str(tmp_path / "kiosk-demo.png"))
        cards = page.evaluate(
            "[...document.querySelectorAll('#channels .chan')].map(c => { const r = c.getBoundingClientRect();"
            " return {k: c.dataset.channel, l: r.left, t: r.top, r: r.right, b: r.bottom}; })"
        )
        assert sorted(c["k"] for c in cards) == sorted(FRIDGE_CARDS), [c["k"] for c in cards]
        outside = [c for c in cards if c["l"] < 0 or c["t"] < 0 or c["r"] > 800 or c["b"] > 480]
        assert not outside, outside

        def on_screen(sel: str) -> None:
            # the panel redraws its cards each refresh: measure the element once it is drawn again
            page.wait_for_selector(sel, state="visible", timeout=10000)
            box = page.locator(sel).first.bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 480 and box["x"] + box["width"] <= 800, sel
            assert page.locator(sel).first.is_visible(), sel

        on_screen('#alarms [data-alarm="mxc-cold"] button.ack')
        on_screen('[data-node="LSA24AZ"].down')
        on_screen("#updated")
        assert page.locator("#updated").inner_text().startswith("updated ")
        sw = page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
        assert sw <= 800, sw
        # the values stay readable: large digits on every card
        sizes = page.evaluate(
            "[...document.querySelectorAll('.chan .kelvin')].map(e => parseFloat(getComputedStyle(e).fontSize))"
        )
        assert min(sizes) >= 28, sizes
        # the plant beside the thermometry: the compressor's state, the gas handling's flow, pumps and
        # open valves as the emulated Bluefors Channels log has them (v1 and v4 open, the pulse tube on)
        # the channel first on a narrow card: a cut title loses the instrument, not which stage it is
        assert page.locator('[data-channel="LSA23JD::cold_plate"] .name').inner_text() == "cold_plate · LSA23JD"
        assert page.locator('[data-channel="ptc1"] .name').inner_text() == "compressor · ptc1"
        assert page.locator('[data-channel="ptc1"] .kelvin').inner_text() == "running"
        gas = page.locator('[data-channel="bluefors"]')
        assert re.fullmatch(r"0\.6\d+ mmol/s", gas.locator(".kelvin").inner_text()), gas.inner_text()
        assert gas.get_attribute("data-open") == "v1 v4" and "PT on" in gas.locator(".sensor").inner_text()
    finally:
        d.stop()
