"""The panel cannot look alive when it is not (headless Chromium): with a proxy in front of the
appliance that stops answering, the kiosk says NO CONTACT within two refreshes, greys its cards and
keeps counting their ages; missing readings are a gap in the plot, not a straight line."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .test_front_panel import (
    page,  # noqa: F401 - the Chromium fixture
    pytestmark,  # noqa: F401 - skipped without Debian's chromium
)


class Proxy:
    """A reverse proxy on loopback in front of the appliance; with ``failing`` set it closes every
    connection without an answer (the appliance gone) and counts the /api/v1/latest it refused;
    ``rewrite(path, body)`` may change a 200 answer on its way to the browser."""

    def __init__(self, upstream_port: int, rewrite: Callable[[str, bytes], bytes] | None = None) -> None:
        self.failing = False
        self.refused_latest = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _forward(self) -> None:
                if outer.failing:
                    if self.path.startswith("/api/v1/latest"):
                        outer.refused_latest += 1
                    self.close_connection = True
                    self.connection.shutdown(2)  # no status line at all: "Failed to fetch"
                    return
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                up = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                    up.request(self.command, self.path, body=body, headers=headers)
                    r = up.getresponse()
                    data = r.read()
                    if rewrite is not None and r.status == 200:
                        data = rewrite(self.path, data)
                finally:
                    up.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward  # noqa: N815 - http.server's names

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_kiosk_says_no_contact_greys_cards_and_ages_count_on(running_appliance, page, tmp_path):  # noqa: F811
    proxy = Proxy(running_appliance.web_address[1])
    try:
        page.goto(proxy.url + "/?kiosk")
        mxc = page.locator('[data-channel="LSA23JD::mxc_control"]')
        mxc.wait_for(timeout=15000)
        page.wait_for_function("document.querySelector('#updated').textContent.startsWith('updated')", timeout=10000)
        assert not page.locator("#nocontact").is_visible()
        # fresh: 0 or 1 s old at some refresh (one read could catch a loaded machine's slow commit)
        page.wait_for_function(
            """() => /^[01] s ago/.test(document.querySelector('[data-channel="LSA23JD::mxc_control"] .age')
                                          .textContent.trim())""",
            timeout=10000,
        )
        proxy.failing = True
        cut = time.time()
        page.wait_for_selector("#nocontact", state="visible", timeout=20000)
        refused = proxy.refused_latest
        assert refused <= 2, f"NO CONTACT shown only after {refused} failed refreshes of /api/v1/latest"
        banner = page.locator("#nocontact .big").inner_text()
        m = re.fullmatch(r"NO CONTACT with the appliance since (\d\d):(\d\d):(\d\d)", banner)
        assert m, banner
        shown = time.localtime(cut)  # the last answer came just before the cut (the browser's local time)
        last = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
        assert 0 <= (shown.tm_hour * 3600 + shown.tm_min * 60 + shown.tm_sec - last) % 86400 <= 5, banner
        # loud: a big line across the top of the 800x480 kiosk
        box = page.locator("#nocontact").bounding_box()
        assert box and box["y"] <= 1 and box["width"] >= 780
        assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('#nocontact .big')).fontSize)") >= 20
        # every card greyed: the last known state, not a live one
        assert page.evaluate("document.body.classList.contains('nocontact')")
        styles = page.evaluate(
            "[...document.querySelectorAll('#channels .chan')].map(c => "
            "({f: getComputedStyle(c).filter, o: parseFloat(getComputedStyle(c).opacity)}))"
        )
        assert styles and all("grayscale(1)" in s["f"] and s["o"] < 0.8 for s in styles), styles
        # the ages count on from the last answer, the refresh time says when that was
        a1 = float(mxc.get_attribute("data-age"))
        text1 = mxc.locator(".age").inner_text()
        page.wait_for_function(
            f"parseFloat(document.querySelector('[data-channel=\"LSA23JD::mxc_control\"]').dataset.age) >= {a1 + 2}",
            timeout=10000,
        )
        assert mxc.locator(".age").inner_text() != text1
        assert "STALE" in mxc.locator(".age").inner_text()  # stale_after is 3 s here
        upd = page.locator("#updated")
        assert upd.is_visible() and upd.inner_text().startswith("last answer ")
        page.screenshot(path=str(tmp_path / "kiosk-no-contact.png"))
        # the appliance answers again: the banner goes, the cards come back
        proxy.failing = False
        page.wait_for_selector("#nocontact", state="hidden", timeout=15000)
        page.wait_for_function("!document.body.classList.contains('nocontact')", timeout=5000)
        page.wait_for_function(
            "!document.querySelector('[data-channel=\"LSA23JD::mxc_control\"]').classList.contains('stale')",
            timeout=10000,
        )
    finally:
        proxy.stop()


def test_an_outage_is_a_gap_in_the_plot(running_appliance, emu372, page, tmp_path):  # noqa: F811
    """Input A (the MXC control thermometer) is read every 0.2 s; 6 s without an answer is drawn as a
    break in its line (a null in uPlot's data, spanGaps off), not a straight segment."""
    from .conftest import wait_for

    field = "LSA23JD::mxc_control_t"
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(running_appliance.base_url + "/")
    page.wait_for_selector('.plot[data-plot="temperatures"] canvas', timeout=15000)
    page.select_option("#range", "600")  # 10 minutes: one point a second
    time.sleep(3)
    emu372.control("mute on")
    wait_for(lambda: running_appliance.pollers[0].health.connected is False, 20, what="372 down")
    time.sleep(6)
    emu372.control("clear")
    t_back = time.time()
    wait_for(lambda: _newer(running_appliance, field, t_back), 20, what="372 back")
    time.sleep(3)
    page.evaluate("refreshPlots()")  # the next 30-s refresh, now
    got = page.evaluate(
        """(name) => { const u = window.kelvinpi.temperatures;
           const i = u.series.findIndex(s => s.label && s.label.startsWith('MXC Control'));
           return {i, span: u.series[i].spanGaps, x: Array.from(u.data[0]),
                   y: Array.from(u.data[i]).map(v => v === undefined ? 'u' : v)}; }""",
        field,
    )
    assert got["i"] > 0 and got["span"] is False
    x, y = got["x"], got["y"]
    own = [k for k, v in enumerate(y) if _num(v)]  # this series' readings among every series' times
    silences = [(a, b) for a, b in zip(own, own[1:], strict=False) if x[b] - x[a] > 2.6]
    assert any(x[b] - x[a] >= 5 for a, b in silences), "the outage is not in the data"
    for a, b in zip(own, own[1:], strict=False):
        between = y[a + 1 : b]
        if x[b] - x[a] > 2.6:  # a silence: blank all the way across (null), never bridged (undefined)
            assert between and all(v is None for v in between), (x[a], x[b], between)
        else:  # readings a second apart: the line goes on
            assert None not in between, (x[a], x[b], between)
    page.screenshot(path=str(tmp_path / "plot-gap.png"))


def _newer(app, field: str, t: float) -> bool:
    return any(r["field"] == field and r["t"] > t for r in app.store.latest())


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def test_unmatched_rule_is_a_warning_line(running_appliance, page):  # noqa: F811
    """The health's ``alarms.unmatched`` (a rule whose field its instrument does not have, with the
    fields it does have) is a warning line on the panel; here added to the health answer on its way."""

    def add_unmatched(path: str, body: bytes) -> bytes:
        if not path.startswith("/api/v1/health"):
            return body
        h = json.loads(body)
        h.setdefault("alarms", {"active": [], "targets": []})["unmatched"] = [
            {
                "rule": "mxc-typo",
                "field": "LSA23JD::mxc_temp",
                "instrument": "LSA23JD",
                "instrument_fields": ["LSA23JD::mxc_t", "LSA23JD::mxc_r"],
            }
        ]
        return json.dumps(h).encode()

    proxy = Proxy(running_appliance.web_address[1], add_unmatched)
    try:
        page.goto(proxy.url + "/")
        line = page.locator('#unmatched [data-rule="mxc-typo"]')
        line.wait_for(timeout=15000)
        text = line.inner_text()
        assert "mxc-typo" in text and "LSA23JD::mxc_temp" in text and "mxc_t" in text and "LSA23JD" in text
    finally:
        proxy.stop()
