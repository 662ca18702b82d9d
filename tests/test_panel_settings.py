"""The panel shows what was changed (issue 22), in headless Chromium: each instrument's card links to
its "instrument settings" view, which loads without the token and lists a change made through the
control API with who made it; a curve slot an upload left part written is a warning on the card."""

from __future__ import annotations

from appliance.curve_api import CurveService
from tests.conftest import wait_for
from tests.test_front_panel import (
    page,  # noqa: F401 - the Chromium fixture
    pytestmark,  # noqa: F401 - skipped without Debian's chromium
)
from tests.test_settings import app, put  # noqa: F401 - the appliance with control on, and its PUT


def test_card_links_to_the_settings_view_which_lists_a_change_and_who_made_it(app, page):  # noqa: F811
    assert put(app, "LSA23JD", "pid", "0", {"p": 47.5})[0] == 200
    page.goto(app.base_url + "/")
    link = page.locator('#instruments [data-node="LSA23JD"] a.settings-link')
    link.wait_for(timeout=15000)
    assert link.get_attribute("href") == "/instruments/LSA23JD/settings"
    assert page.locator('#instruments [data-node="LSA24AZ"] a.settings-link').count() == 1
    link.click()  # this browser has no token: the view is read-only and still loads
    page.wait_for_url("**/instruments/LSA23JD/settings", timeout=10000)
    text = page.locator("body").inner_text()
    assert "instrument settings" in text and "Heater outputs" in text and "Inputs" in text
    assert "requested by 127.0.0.1: pid (PID) output 0" in text, text
    assert "applied: pid (PID) output 0" in text, text
    assert " UTC" in text  # when
    # every input's setup and its curve, the heater output as last snapshotted
    wait_for(lambda: app.store.snapshots("LSA23JD"), 20, what="a snapshot")
    page.reload()
    text = page.locator("body").inner_text()
    assert "RX-102A-CAL" in text and "inset:" in text, text


def test_an_incomplete_curve_slot_is_a_warning_on_the_card_and_in_the_view(app, page):  # noqa: F811
    page.goto(app.base_url + "/")
    card = page.locator('#instruments [data-node="LSA23JD"]')
    card.wait_for(timeout=15000)
    assert card.locator(".incomplete-curve").count() == 0
    # what curve_api does when an upload fails part way and the old curve cannot be put back
    CurveService(app.control)._incomplete(app.pollers[0], 27, "the link dropped after point 5 of 30")
    warning = card.locator('.incomplete-curve[data-slot="27"]')
    warning.wait_for(timeout=15000)
    assert "curve 27 INCOMPLETE" in warning.inner_text() and "after point 5" in warning.inner_text()
    assert "incomplete" in (card.get_attribute("class") or "")
    page.goto(app.base_url + "/?kiosk")  # the kiosk hides healthy cards, not this one
    warning = page.locator('#instruments [data-node="LSA23JD"] .incomplete-curve[data-slot="27"]')
    warning.wait_for(state="visible", timeout=15000)
    page.goto(app.base_url + "/instruments/LSA23JD/settings")
    assert "curve 27 is incomplete" in page.locator("body").inner_text()
    # mended: the warning goes
    CurveService(app.control)._complete(app.pollers[0], 27, "verified")

    def mended() -> bool:
        # the mark is cleared through the store's writer: a loaded machine may serve one page first
        page.goto(app.base_url + "/")
        page.locator('#instruments [data-node="LSA23JD"] a.settings-link').wait_for(timeout=15000)
        return page.locator(".incomplete-curve").count() == 0

    wait_for(mended, 30, step=0.5, what="the incomplete-curve warning gone once the curve is mended")
