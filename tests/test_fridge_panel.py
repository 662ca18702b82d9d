"""The gas handling on the front panel (a real headless Chromium): one card for the Bluefors log
folder, its flow in large digits, the pumps and the pulse tube on or off, the open valves by name;
the pulse tube stopping in the Channels log flags the card."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from appliance import config
from appliance.service import Appliance
from firmware_host.bluefors_writer import BlueforsWriter

from .test_bluefors_appliance import LIGHT, TZ, section
from .test_front_panel import page  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")


def test_gas_handling_card_shows_flow_pumps_and_valves_and_flags_the_pulse_tube_off(tmp_path, page):  # noqa: F811
    logs = tmp_path / "logs"
    logs.mkdir()
    w = BlueforsWriter(logs, TZ, time.time() - 300, periods=LIGHT)
    w.advance(240)
    app = Appliance(
        config.parse(section(logs) + f'[store]\npath = "{tmp_path / "k.db"}"\n[web]\nbind = "127.0.0.1"\nport = 0\n')
    )
    app.start()
    try:
        page.goto(f"http://127.0.0.1:{app.web_address[1]}/")
        card = page.locator('[data-channel="bluefors"]')
        page.wait_for_function(
            "(document.querySelector('[data-channel=\"bluefors\"]') || {dataset: {}}).dataset.open === 'v1 v4'",
            timeout=15000,
        )
        assert card.locator(".name").inner_text() == "bluefors · gas handling"
        assert re.fullmatch(r"0\.6\d+ mmol/s", card.locator(".kelvin").inner_text())
        assert card.locator(".sensor").inner_text() == "PT on · comp on · turbo on · scroll on"
        assert card.locator(".status").inner_text() == "open v1 v4"
        assert page.locator("#channels .chan").count() == 1  # one card, not one per log value
        assert "flagged" not in (card.get_attribute("class") or "")
        # the pulse tube stops and V1 closes, as the Channels log says
        w.set("pulsetube", 0.0)
        w.set("v1", 0.0)
        w.advance(LIGHT["Channels"])  # one Channels line at least, whatever the phase
        page.wait_for_function(
            "document.querySelector('[data-channel=\"bluefors\"]').dataset.open === 'v4'", timeout=15000
        )
        assert card.locator(".status").inner_text() == "PT OFF · open v4"
        assert "PT off" in card.locator(".sensor").inner_text()
        assert "flagged" in (card.get_attribute("class") or "")
    finally:
        app.stop()
