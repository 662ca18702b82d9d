"""The front panel as the operator meets it (headless Chromium): the fridge on one log plot,
scanner-aware freshness, the alarm banner with acknowledge, the 800x480 kiosk layout."""

from __future__ import annotations

import os
import re
import time

import pytest

from .conftest import appliance_config, free_port, start_appliance, wait_for
from .test_front_panel import (
    page,  # noqa: F401 - the Chromium fixture
    pytestmark,  # noqa: F401 - skipped without Debian's chromium
)

TOKEN = "panel-ack-token"
PIN = "4711"


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
    fields = set(page.evaluate("Object.keys(fields)"))  # the series the page knew when it drew (scanned
    # channels appear one by one as the autoscan first reaches them)
    stages = [f"{c['name']} ({c['node']})" for c in panel["channels"] if c["kelvin"] in fields]
    assert got["labels"] == stages  # one series per stage with readings, in config order
    assert len(stages) >= 3 and got["distr"] == 3 and got["rdistr"] == 3  # log axes
    assert stages[0].endswith("(LSA23JD)") and stages[-1].endswith("(LSA24AZ)")
    # events (here the instruments' connections) are marked on the time axis
    assert "connected" in page.evaluate("window.kelvinpi.events.map(e => e.kind)")
    # the CSV is what is shown: the plotted fields over the plotted range
    csv = page.evaluate("fetch(window.kelvinpi.csvUrl()).then(r => r.text())")
    lines = csv.splitlines()
    assert lines[0].startswith("field,t_unix") and len(lines) > 10
    assert {ln.split(",")[0] for ln in lines[1:]} <= {c["kelvin"] for c in panel["channels"]} | {
        c["sensor"] for c in panel["channels"]
    }
    # the whole history (from the rollups) still draws every stage
    page.select_option("#range", "all")
    page.wait_for_function("window.kelvinpi.drawn.stride === 3600", timeout=10000)
    assert page.evaluate("window.kelvinpi.temperatures.data[0].length") >= 1
    assert page.evaluate("window.kelvinpi.temperatures.series.length - 1") == len(stages)


def test_scanned_channel_is_not_stale_between_visits(tmp_path, emu372, page):  # noqa: F811
    """stale_after is 2 s; the 372 scans inputs 1 and 5 for 3 s pause + 1 s dwell each, so the 4K
    plate (input 1) is read for 1 s, then waits about 7 s: "scanning", not STALE. (Input A, read
    every cycle, goes STALE after stale_after: tests/test_front_panel.py.)"""
    with emu372.device.lock:
        for ch in ("1", "5"):
            emu372.device.channels[ch].dwell = 1
        for ch in ("2", "3"):
            emu372.device.channels[ch].enabled = 0
    app = start_appliance(appliance_config(tmp_path, emu372, stale_after=2))
    try:
        page.goto(app.base_url + "/")
        plate = page.locator('[data-channel="LSA23JD::4k_plate"]')
        plate.wait_for(timeout=20000)
        page.wait_for_function(
            "document.querySelector('[data-channel=\"LSA23JD::4k_plate\"] .age')"
            ".textContent.includes('scanning · next in')",
            timeout=20000,
        )
        deadline = time.monotonic() + 5  # over twice stale_after
        while time.monotonic() < deadline:
            assert "stale" not in (plate.get_attribute("class") or "")
            assert "STALE" not in plate.locator(".age").inner_text()
            time.sleep(0.3)
        shown = plate.locator(".age").inner_text()  # waiting for the scanner, or the scanner on it
        assert "scanning · next in ≈" in shown or "scanner on it" in shown, shown
    finally:
        app.stop()


@pytest.fixture
def alarmed(tmp_path, emu372):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    os.chmod(tok, 0o600)
    pin = tmp_path / "ack-pin"
    pin.write_text(PIN + "\n")
    os.chmod(pin, 0o600)
    url = tmp_path / "hook-url"
    url.write_text(f"http://127.0.0.1:{free_port()}/nobody-listens\n")
    os.chmod(url, 0o600)
    extra = f'''
[control]
enabled = true
token_file = "{tok}"
ack_pin_file = "{pin}"

[[notify]]
kind = "webhook"
name = "hook"
url_file = "{url}"
backoff_initial = 0.2

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


def test_alarm_banner_acknowledge_and_kiosk_800x480(alarmed, page, tmp_path):  # noqa: F811
    wait_for(lambda: alarmed.alarms.active(), 20, what="alarm raised")
    page.set_viewport_size({"width": 800, "height": 480})
    page.goto(alarmed.base_url + "/?kiosk")
    row = page.locator('#alarms [data-alarm="mxc-cold"]')
    row.wait_for(timeout=15000)
    assert page.locator("#alarms").is_visible()
    assert "CRITICAL" in row.inner_text()
    # the time as the header gives it: 24-hour HH:MM:SS, whatever the browser's locale
    assert re.search(r"since \d\d:\d\d:\d\d", row.inner_text()) and not re.search(r"[AP]M", row.inner_text())
    page.wait_for_selector('[data-channel="LSA23JD::mxc_control"].alarm', timeout=10000)
    page.wait_for_selector('.plot[data-plot="temperatures"] canvas', timeout=15000)
    # the webhook's server is down: its card says so
    page.wait_for_selector('[data-uplink="hook"].down', timeout=10000)
    hook = page.locator('[data-uplink="hook"]')
    assert "FAILING" in hook.inner_text()
    # its failures counted and its last error named on its card (never the URL: it is a secret)
    page.wait_for_function(
        "/failures [1-9]/.test(document.querySelector('[data-uplink=\"hook\"]').textContent)", timeout=10000
    )
    assert "nobody-listens" not in hook.inner_text()
    # the kiosk: no horizontal scroll at 800x480, large values, finger-sized buttons
    assert page.evaluate("document.body.classList.contains('kiosk')")
    sw = page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
    assert sw <= 800, sw
    size = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.chan .kelvin')).fontSize)")
    assert size >= 30
    btn = row.locator("button.ack").bounding_box()
    assert btn and btn["height"] >= 40
    page.screenshot(path=str(tmp_path / "kiosk.png"))
    # acknowledge from the panel with the touch PIN pad: no keyboard, no window.prompt
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    row.locator("button.ack").click()
    pad = page.locator("#ackpad")
    pad.wait_for(state="visible", timeout=5000)
    assert not page.locator("#pad-token").is_visible()  # the kiosk has no keyboard: the pad only
    for key in pad.locator(".keys button").all():
        box = key.bounding_box()
        assert box and box["height"] >= 48 and box["y"] + box["height"] <= 480  # finger-sized, on screen

    def tap(digits: str) -> None:
        for d in digits:
            pad.locator(f'.keys button[data-key="{d}"]').click()
        pad.locator('.keys button[data-key="OK"]').click()

    tap("1234")  # wrong: refused, says so, nothing acknowledged
    page.wait_for_function("document.querySelector('#pad-msg').textContent.includes('wrong PIN')", timeout=10000)
    assert not alarmed.alarms.active()[0]["acked"]
    page.screenshot(path=str(tmp_path / "kiosk-pin-wrong.png"))
    tap(PIN)
    pad.wait_for(state="hidden", timeout=10000)
    page.wait_for_function(
        "document.querySelector('#alarms [data-alarm=\"mxc-cold\"]').textContent.includes('acknowledged')",
        timeout=10000,
    )
    a = alarmed.alarms.active()[0]
    assert a["acked"] and a["acked_by"] == "127.0.0.1 (PIN)"  # audited with the socket's peer
    assert dialogs == []


def _post_ack(app, name: str, auth: str) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{app.base_url}/api/v1/alarms/{name}/ack", method="POST", headers={"Authorization": auth}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["error"]["message"]


def test_ack_pin_is_rate_limited_and_the_token_still_works(alarmed):
    """Five wrong PINs lock the address out: the right PIN is then refused (429) too; the control
    token is not affected and acknowledges, audited with the peer."""
    wait_for(lambda: alarmed.alarms.active(), 20, what="alarm raised")
    for _ in range(5):
        assert _post_ack(alarmed, "mxc-cold", "PIN 0000")[0] == 401
    status, msg = _post_ack(alarmed, "mxc-cold", f"PIN {PIN}")
    assert status == 429 and "too many wrong PINs" in msg
    assert not alarmed.alarms.active()[0]["acked"]
    assert _post_ack(alarmed, "mxc-cold", "PIN 12")[0] == 429  # locked whatever is sent
    status, _ = _post_ack(alarmed, "mxc-cold", f"Bearer {TOKEN}")
    assert status == 200
    a = alarmed.alarms.active()[0]
    assert a["acked"] and a["acked_by"] == "127.0.0.1"


def _post_ack_from(app, source: str, auth: str) -> tuple[int, str, str | None]:
    """An acknowledge POST from a chosen loopback source address (the client socket bound to it)."""
    import http.client
    import json

    conn = http.client.HTTPConnection(*app.web_address, timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", "/api/v1/alarms/mxc-cold/ack", headers={"Authorization": auth})
        r = conn.getresponse()
        body = json.loads(r.read())
        msg = body["error"]["message"] if r.status >= 400 else "ok"
        return r.status, msg, r.getheader("Retry-After")
    finally:
        conn.close()


def test_wrong_pins_from_the_network_do_not_lock_out_the_pis_own_screen(alarmed):
    """20 wrong PINs from ten other addresses (127.0.0.20-29, two each: under the per-address limit)
    stop PIN acks for everyone else, with a Retry-After that says what the message says; the Pi's own
    display (127.0.0.1) still acknowledges with the right PIN."""
    wait_for(lambda: alarmed.alarms.active(), 20, what="alarm raised")
    for i in range(20):
        status, _, _ = _post_ack_from(alarmed, f"127.0.0.{20 + i % 10}", "PIN 0000")
        assert status == 401
    status, msg, retry = _post_ack_from(alarmed, "127.0.0.30", f"PIN {PIN}")  # another address: stopped
    assert status == 429 and "on this appliance" in msg
    m = re.search(r"try again in (\d+) s", msg)
    assert m and retry is not None and abs(int(retry) - int(m[1])) <= 1, (msg, retry)
    assert not alarmed.alarms.active()[0]["acked"]
    status, msg, _ = _post_ack_from(alarmed, "127.0.0.1", f"PIN {PIN}")
    assert status == 200, msg
    a = alarmed.alarms.active()[0]
    assert a["acked"] and a["acked_by"] == "127.0.0.1 (PIN)"
