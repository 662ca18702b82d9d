"""The front panel as the operator meets it (headless Chromium): the fridge on one log plot,
scanner-aware freshness, the alarm banner with acknowledge, the 800x480 kiosk layout."""
from __future__ import annotations

import os
import time

import pytest

from .conftest import appliance_config, start_appliance, wait_for
from .test_front_panel import page  # noqa: F401 - the Chromium fixture
from .test_front_panel import pytestmark  # noqa: F401 - skipped without Debian's chromium

TOKEN = "panel-ack-token"


def test_combined_plot_one_series_per_stage_on_a_log_axis(running_appliance, page):  # noqa: F811
    page.goto(running_appliance.base_url + "/")
    page.wait_for_selector('.plot[data-plot="temperatures"] canvas', timeout=15000)
    got = page.evaluate("""() => { const u = window.kelvinpi.temperatures, r = window.kelvinpi.resistances;
        return {labels: u.series.slice(1).map(s => s.label), distr: u.scales.y.distr,
                rdistr: r.scales.y.distr, rn: r.series.length - 1}; }""")
    import json
    import urllib.request

    with urllib.request.urlopen(running_appliance.base_url + "/api/v1/panel", timeout=10) as r:
        panel = json.loads(r.read())
    fields = {f["field"] for f in json.loads(urllib.request.urlopen(running_appliance.base_url + "/api/v1/fields",
                                                                     timeout=10).read())["fields"]}
    stages = [f"{c['name']} ({c['node']})" for c in panel["channels"] if c["kelvin"] in fields]
    assert got["labels"] == stages  # one series per stage with readings, in config order
    assert len(stages) >= 3 and got["distr"] == 3 and got["rdistr"] == 3  # log axes
    assert stages[0].endswith("(LSA23JD)") and stages[-1].endswith("(LSA24AZ)")


def test_scanned_channel_is_not_stale_between_visits(running_appliance, page):  # noqa: F811
    """stale_after is 3 s here; the 372 visits 4 inputs for 3 + 10 s each, so the 4K plate
    (input 1, scanned first) is read for 10 s, then waits about 40 s: "scanning", not STALE."""
    page.goto(running_appliance.base_url + "/")
    plate = page.locator('[data-channel="LSA23JD::4k_plate"]')
    plate.wait_for(timeout=20000)
    page.wait_for_function("document.querySelector('[data-channel=\"LSA23JD::4k_plate\"] .age')"
                           ".textContent.includes('scanning · next in')", timeout=25000)
    deadline = time.monotonic() + 8  # well past stale_after
    while time.monotonic() < deadline:
        assert "stale" not in (plate.get_attribute("class") or "")
        assert "STALE" not in plate.locator(".age").inner_text()
        time.sleep(0.5)
    assert "next in ≈" in plate.locator(".age").inner_text()


@pytest.fixture
def alarmed(tmp_path, emu372):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    os.chmod(tok, 0o600)
    extra = f'''
[control]
enabled = true
token_file = "{tok}"

[[alarm]]
kind = "below"
name = "mxc-cold"
severity = "critical"
field = "LSA23JD::mxc_control_t"
threshold = 1.0
'''
    app = start_appliance(appliance_config(tmp_path, emu372, extra=extra))
    yield app
    app.stop()


def test_active_alarm_shows_the_banner_and_acknowledges(alarmed, page):  # noqa: F811
    wait_for(lambda: alarmed.alarms.active(), 20, what="alarm raised")
    page.goto(alarmed.base_url + "/")
    row = page.locator('#alarms [data-alarm="mxc-cold"]')
    row.wait_for(timeout=15000)
    assert page.locator("#alarms").is_visible()
    assert "CRITICAL" in row.inner_text()
    page.wait_for_selector('[data-channel="LSA23JD::mxc_control"].alarm', timeout=10000)
    page.on("dialog", lambda d: d.accept(TOKEN))
    row.locator("button.ack").click()
    page.wait_for_function("document.querySelector('#alarms [data-alarm=\"mxc-cold\"]').textContent"
                           ".includes('acknowledged')", timeout=10000)
    assert alarmed.alarms.active()[0]["acked"]


def test_kiosk_800x480_has_no_horizontal_scroll(alarmed, page, tmp_path):  # noqa: F811
    page.set_viewport_size({"width": 800, "height": 480})
    page.goto(alarmed.base_url + "/?kiosk")
    page.wait_for_selector('.plot[data-plot="temperatures"] canvas', timeout=15000)
    page.locator('#alarms [data-alarm="mxc-cold"]').wait_for(timeout=15000)
    assert page.evaluate("document.body.classList.contains('kiosk')")
    sw = page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
    assert sw <= 800, sw
    size = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.chan .kelvin')).fontSize)")
    assert size >= 30  # large values, readable from beside the cryostat
    btn = page.locator("button.ack").bounding_box()
    assert btn and btn["height"] >= 40  # a finger-sized target
    page.screenshot(path=str(tmp_path / "kiosk.png"))
