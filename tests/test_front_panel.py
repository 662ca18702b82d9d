"""The front panel in a real headless Chromium (Debian's), driven by Playwright."""

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed (`make ci-deps` as root installs it)"
)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 800, "height": 480})  # a 7-inch panel
        yield pg
        browser.close()


def card(page, key):
    return page.locator(f'[data-channel="{key}"]')


def test_values_appear_update_and_go_stale(running_appliance, emu372, page, tmp_path):
    page.goto(running_appliance.base_url + "/")
    mxc = card(page, "LSA23JD::mxc_control")
    mxc.wait_for(timeout=15000)
    text = mxc.locator(".kelvin").inner_text()
    assert text.endswith("mK") and 5 < float(text.split()[0]) < 50
    assert "kΩ" in mxc.locator(".sensor").inner_text()
    plate = card(page, "LSA24AZ::50k_plate")
    assert plate.locator(".kelvin").inner_text().endswith(" K")
    assert page.locator('[data-node="LSA23JD"]').inner_text().find("connected") > 0
    t0 = float(mxc.get_attribute("data-t"))
    page.wait_for_function(
        f"document.querySelector('[data-channel=\"LSA23JD::mxc_control\"]').dataset.t > {t0}", timeout=10000
    )
    page.screenshot(path=str(tmp_path / "panel.png"))
    # stop the 372: its cards go stale, the 240's stay live
    emu372.control("mute on")
    page.wait_for_selector('[data-channel="LSA23JD::mxc_control"].stale', timeout=15000)
    assert "STALE" in mxc.locator(".age").inner_text()
    # the 240's card is live at a refresh after the 372's went stale (read once, a loaded machine's
    # commit plus the 2 s refresh could cross stale_after = 3 s for a moment)
    page.wait_for_function(
        """() => !document.querySelector('[data-channel="LSA24AZ::50k_plate"]').classList.contains('stale')
                 && document.querySelector('[data-channel="LSA23JD::mxc_control"]').classList.contains('stale')""",
        timeout=10000,
    )
    page.wait_for_selector('[data-node="LSA23JD"].down', timeout=10000)
    page.wait_for_selector('.plot[data-plot="temperatures"] canvas', timeout=10000)
    # a phone-sized screen still shows the cards
    page.set_viewport_size({"width": 390, "height": 800})
    page.wait_for_function(  # the layout has followed the new width
        "document.querySelector('[data-channel=\"LSA23JD::mxc_control\"]').getBoundingClientRect().width <= 390",
        timeout=5000,
    )
    box = mxc.bounding_box()
    assert box and box["width"] <= 390
    emu372.control("clear")


def test_full_disk_shows_on_the_panel(tmp_path, small_disk, emu372, emu240, page):
    from appliance import config as _config
    from appliance.service import Appliance

    from .conftest import appliance_config, fill_disk, wait_for

    text = appliance_config(tmp_path, emu372, emu240).replace(
        str(tmp_path / "kelvinpi.db"), str(small_disk / "kelvinpi.db")
    )
    app = Appliance(_config.parse(text.replace("commit_interval = 0.2", "commit_interval = 0.2\nqueue_size = 200")))
    app.start()
    try:
        wait_for(lambda: app.store.written > 50, 20, what="writing")
        page.goto(f"http://127.0.0.1:{app.web_address[1]}/")
        page.wait_for_selector("#store.ok", timeout=15000)
        fill_disk(small_disk / "filler")
        page.wait_for_function("document.querySelector('#store').textContent.includes('NOT WRITING')", timeout=30000)
        page.wait_for_function("document.querySelector('#store').textContent.includes('DROPPED')", timeout=30000)
        shown = page.locator("#store").inner_text()
        assert "full" in shown and "bad" in page.locator("#store").get_attribute("class")
        page.screenshot(path=str(tmp_path / "disk-full.png"))
        (small_disk / "filler").unlink()
        page.wait_for_function("!document.querySelector('#store').textContent.includes('NOT WRITING')", timeout=30000)
        assert "DROPPED" in page.locator("#store").inner_text()  # drops stay visible after recovery
    finally:
        app.stop()
