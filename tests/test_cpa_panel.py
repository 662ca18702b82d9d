"""The compressor on the front panel (a real headless Chromium): one card for the whole CPA, its
state, water temperatures and pressures, and the named bits of its alarm word once it trips."""

from __future__ import annotations

import shutil

import pytest

from .test_cpa_appliance import start, until
from .test_front_panel import page  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")


def test_one_compressor_card_shows_its_state_and_its_trip(tmp_path, page):  # noqa: F811
    emu, app, base = start(tmp_path)
    try:
        until(lambda: app.pollers[0].health.samples > 0, what="first reading")
        page.goto(base + "/")
        card = page.locator('[data-channel="ptc1"]')
        card.wait_for(timeout=15000)
        page.wait_for_function(
            "document.querySelector('[data-channel=\"ptc1\"] .kelvin').textContent === 'running'", timeout=15000
        )
        assert card.locator(".name").inner_text() == "ptc1 · compressor"
        assert (
            "in 65.6 F" in card.locator(".sensor").inner_text()
            and "HP 308.0 psi" in card.locator(".sensor").inner_text()
        )
        assert page.locator("#channels .chan").count() == 1  # one card, not one per register
        emu.control("trip pressure")
        page.wait_for_function(
            "document.querySelector('[data-channel=\"ptc1\"] .status').textContent.includes('ALARM HIGH_PRESSURE_HIGH')",
            timeout=15000,
        )
        assert card.locator(".kelvin").inner_text() == "error"
        assert "flagged" in (card.get_attribute("class") or "")
    finally:
        app.stop()
        emu.stop()
